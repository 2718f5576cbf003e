//! TFTP: RFC 1350 with option negotiation (RFC 2347), `blksize` (RFC 2348),
//! `timeout` and `tsize` (RFC 2349) and `windowsize` (RFC 7440).
//!
//! [`Packet::parse`] is strict: anything a conforming peer would not send is a
//! [`TftpError`] carrying the byte offset of the offending field, and values
//! outside their RFC ranges are errors, not clamps, so the caller decides.
//! Packets borrow from the input; only RRQ/WRQ/OACK allocate (their option list).
//!
//! [`Packet::emit`] writes back exactly what [`Packet::parse`] accepted, byte for
//! byte: the mode and option names keep their case, option values their
//! spelling (e.g. leading zeros), and options their order.
//!
//! The fast path reads DATA headers with [`parse_data_header`], which checks
//! only the opcode and length and never allocates.

mod name;
pub use name::{normalize_name, NameError};

use core::fmt;

use nom::bytes::complete::{tag, take_till};
use nom::error::{ErrorKind, ParseError};
use nom::number::complete::be_u16;
use nom::IResult;

/// Largest request (RRQ, WRQ) or OACK packet, in bytes (RFC 2347: "the maximum
/// size of a request packet is 512 octets"; OACKs are held to the same limit).
pub const MAX_REQUEST_LEN: usize = 512;
/// Smallest `blksize` an option may ask for (RFC 2348).
pub const MIN_BLKSIZE: u16 = 8;
/// Largest `blksize` an option may ask for (RFC 2348).
pub const MAX_BLKSIZE: u16 = 65464;
/// Block size without a `blksize` option (RFC 1350).
pub const DEFAULT_BLKSIZE: u16 = 512;
/// Length of the opcode plus block number that start DATA and ACK packets.
pub const HEADER_LEN: usize = 4;
/// Largest packet of any kind: a DATA packet with a [`MAX_BLKSIZE`] payload.
pub const MAX_PACKET_LEN: usize = HEADER_LEN + MAX_BLKSIZE as usize;

/// A TFTP opcode (the first two bytes of every packet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Opcode {
    /// Read request.
    Rrq = 1,
    /// Write request.
    Wrq = 2,
    /// A block of file data.
    Data = 3,
    /// Acknowledgement of a block (or of an OACK, as block 0).
    Ack = 4,
    /// Error, ends the transfer.
    Error = 5,
    /// Option acknowledgement (RFC 2347).
    Oack = 6,
}

impl Opcode {
    /// The opcode for a wire value, if it is one of the six defined.
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::Rrq,
            2 => Self::Wrq,
            3 => Self::Data,
            4 => Self::Ack,
            5 => Self::Error,
            6 => Self::Oack,
            _ => return None,
        })
    }
}

/// Reads the opcode of a packet without parsing the rest.
#[inline]
pub fn opcode(packet: &[u8]) -> Option<Opcode> {
    match packet {
        [hi, lo, ..] => Opcode::from_u16(u16::from_be_bytes([*hi, *lo])),
        _ => None,
    }
}

/// The fast-path DATA reader: returns the block number and the borrowed payload
/// if `packet` is a DATA packet of legal length, `None` otherwise.
///
/// Unlike [`Packet::parse`] it does not say why a packet was refused.
#[inline]
pub fn parse_data_header(packet: &[u8]) -> Option<(u16, &[u8])> {
    match packet {
        [0, 3, hi, lo, payload @ ..] if payload.len() <= MAX_BLKSIZE as usize => {
            Some((u16::from_be_bytes([*hi, *lo]), payload))
        }
        _ => None,
    }
}

/// An error code carried by an ERROR packet (RFC 1350, 2347).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 0: not defined, see the message.
    NotDefined,
    /// 1: file not found.
    FileNotFound,
    /// 2: access violation.
    AccessViolation,
    /// 3: disk full or allocation exceeded.
    DiskFull,
    /// 4: illegal TFTP operation.
    IllegalOperation,
    /// 5: unknown transfer ID.
    UnknownTid,
    /// 6: file already exists.
    FileExists,
    /// 7: no such user.
    NoSuchUser,
    /// 8: the transfer is ended by option negotiation (RFC 2347).
    OptionNegotiation,
    /// Any other code (always above 8 when produced by the parser).
    Unknown(u16),
}

impl From<u16> for ErrorCode {
    fn from(v: u16) -> Self {
        match v {
            0 => Self::NotDefined,
            1 => Self::FileNotFound,
            2 => Self::AccessViolation,
            3 => Self::DiskFull,
            4 => Self::IllegalOperation,
            5 => Self::UnknownTid,
            6 => Self::FileExists,
            7 => Self::NoSuchUser,
            8 => Self::OptionNegotiation,
            n => Self::Unknown(n),
        }
    }
}

impl From<ErrorCode> for u16 {
    fn from(c: ErrorCode) -> u16 {
        match c {
            ErrorCode::NotDefined => 0,
            ErrorCode::FileNotFound => 1,
            ErrorCode::AccessViolation => 2,
            ErrorCode::DiskFull => 3,
            ErrorCode::IllegalOperation => 4,
            ErrorCode::UnknownTid => 5,
            ErrorCode::FileExists => 6,
            ErrorCode::NoSuchUser => 7,
            ErrorCode::OptionNegotiation => 8,
            ErrorCode::Unknown(n) => n,
        }
    }
}

/// A transfer mode (RFC 1350), case-insensitive on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransferMode {
    /// `netascii`: 8-bit ASCII with CR LF line ends.
    Netascii,
    /// `octet`: raw bytes; what boot clients use.
    Octet,
    /// `mail`: obsolete, kept so that such requests parse.
    Mail,
}

/// The mode of a request: its meaning plus its spelling on the wire, kept so
/// that a request re-emits byte for byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mode<'a> {
    kind: TransferMode,
    text: &'a [u8],
}

impl<'a> Mode<'a> {
    /// `netascii`, spelled in lower case.
    pub const NETASCII: Mode<'static> = Mode {
        kind: TransferMode::Netascii,
        text: b"netascii",
    };
    /// `octet`, spelled in lower case.
    pub const OCTET: Mode<'static> = Mode {
        kind: TransferMode::Octet,
        text: b"octet",
    };
    /// `mail`, spelled in lower case.
    pub const MAIL: Mode<'static> = Mode {
        kind: TransferMode::Mail,
        text: b"mail",
    };

    /// The mode spelled `text` (any case), or `None` if it names no mode.
    pub fn from_bytes(text: &'a [u8]) -> Option<Self> {
        let kind = if text.eq_ignore_ascii_case(b"octet") {
            TransferMode::Octet
        } else if text.eq_ignore_ascii_case(b"netascii") {
            TransferMode::Netascii
        } else if text.eq_ignore_ascii_case(b"mail") {
            TransferMode::Mail
        } else {
            return None;
        };
        Some(Mode { kind, text })
    }

    /// What the mode means.
    pub fn kind(&self) -> TransferMode {
        self.kind
    }

    /// The mode as spelled on the wire (without the NUL).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.text
    }
}

/// One of the options this crate types (RFC 2348, 2349, 7440).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OptionName {
    /// `blksize` (RFC 2348), 8–65464.
    Blksize,
    /// `timeout` in seconds (RFC 2349), 1–255.
    Timeout,
    /// `tsize`, transfer size in bytes (RFC 2349).
    Tsize,
    /// `windowsize` in blocks (RFC 7440), 1–65535.
    Windowsize,
}

impl OptionName {
    const ALL: [OptionName; 4] = [
        OptionName::Blksize,
        OptionName::Timeout,
        OptionName::Tsize,
        OptionName::Windowsize,
    ];

    /// The canonical (lower-case) name.
    pub fn as_str(self) -> &'static str {
        match self {
            OptionName::Blksize => "blksize",
            OptionName::Timeout => "timeout",
            OptionName::Tsize => "tsize",
            OptionName::Windowsize => "windowsize",
        }
    }

    /// The option named `name`, compared without case.
    pub fn from_bytes(name: &[u8]) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|o| name.eq_ignore_ascii_case(o.as_str().as_bytes()))
    }

    /// The legal values of the option.
    pub fn range(self) -> core::ops::RangeInclusive<u64> {
        match self {
            OptionName::Blksize => u64::from(MIN_BLKSIZE)..=u64::from(MAX_BLKSIZE),
            OptionName::Timeout => 1..=255,
            OptionName::Tsize => 0..=u64::MAX,
            OptionName::Windowsize => 1..=65535,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for OptionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An option this crate does not type, kept as it was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnknownOption<'a> {
    /// The name as spelled on the wire, without the NUL.
    pub name: &'a [u8],
    /// The value as spelled on the wire, without the NUL (may be empty).
    pub value: &'a [u8],
}

/// How an option appeared on the wire, so that emit can reproduce it.
#[derive(Clone, Copy, Debug)]
enum Spelling<'a> {
    Known {
        which: OptionName,
        name: &'a [u8],
        value: &'a [u8],
    },
    /// The next entry of `Options::unknown`.
    Unknown,
}

/// The options of an RRQ, WRQ or OACK (RFC 2347), typed.
///
/// The typed fields are the truth; a parsed `Options` also remembers how each
/// option was spelled and in which order they came, and [`Packet::emit`]
/// reproduces that spelling for every option whose value is unchanged.
/// Options set by hand are emitted after those, with lower-case names, in the
/// order blksize, timeout, tsize, windowsize, then unknown ones.
///
/// Equality compares the typed fields and the unknown options (in order), not
/// the spelling: names are case-insensitive (RFC 2347).
#[derive(Clone, Debug, Default)]
pub struct Options<'a> {
    /// `blksize` (RFC 2348), 8–65464.
    pub blksize: Option<u16>,
    /// `timeout` in seconds (RFC 2349), 1–255.
    pub timeout: Option<u8>,
    /// `tsize` in bytes (RFC 2349): 0 in a read request, the size in an OACK.
    pub tsize: Option<u64>,
    /// `windowsize` in blocks (RFC 7440), 1–65535.
    pub windowsize: Option<u16>,
    /// Options not typed above, in wire order.
    pub unknown: Vec<UnknownOption<'a>>,
    spelling: Vec<Spelling<'a>>,
}

impl PartialEq for Options<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.blksize == other.blksize
            && self.timeout == other.timeout
            && self.tsize == other.tsize
            && self.windowsize == other.windowsize
            && self.unknown == other.unknown
    }
}

impl Eq for Options<'_> {}

impl<'a> Options<'a> {
    /// The value of a typed option, widened to `u64`.
    pub fn get(&self, which: OptionName) -> Option<u64> {
        match which {
            OptionName::Blksize => self.blksize.map(u64::from),
            OptionName::Timeout => self.timeout.map(u64::from),
            OptionName::Tsize => self.tsize,
            OptionName::Windowsize => self.windowsize.map(u64::from),
        }
    }

    /// Whether no option is set.
    pub fn is_empty(&self) -> bool {
        OptionName::ALL.iter().all(|o| self.get(*o).is_none()) && self.unknown.is_empty()
    }

    /// Number of options (typed and unknown).
    pub fn len(&self) -> usize {
        OptionName::ALL
            .iter()
            .filter(|o| self.get(**o).is_some())
            .count()
            + self.unknown.len()
    }

    /// Sets a typed option from a `u64`; `false` (and nothing set) if the
    /// value is outside the option's range.
    fn set(&mut self, which: OptionName, v: u64) -> bool {
        if !which.range().contains(&v) {
            return false;
        }
        // The range check above makes these conversions lossless.
        match which {
            OptionName::Blksize => self.blksize = u16::try_from(v).ok(),
            OptionName::Timeout => self.timeout = u8::try_from(v).ok(),
            OptionName::Tsize => self.tsize = Some(v),
            OptionName::Windowsize => self.windowsize = u16::try_from(v).ok(),
        }
        true
    }

    /// Calls `f(name, value)` for each option in emit order (see the type docs).
    fn for_each(&self, mut f: impl FnMut(&[u8], &[u8])) {
        let mut done = [false; 4];
        let mut next_unknown = self.unknown.iter();
        let mut digits = [0u8; 20];
        for s in &self.spelling {
            match *s {
                Spelling::Known { which, name, value } => {
                    if done[which.index()] {
                        continue;
                    }
                    if let Some(v) = self.get(which) {
                        done[which.index()] = true;
                        if parse_decimal(value) == Some(v) {
                            f(name, value);
                        } else {
                            f(name, decimal(v, &mut digits));
                        }
                    }
                }
                Spelling::Unknown => {
                    if let Some(u) = next_unknown.next() {
                        f(u.name, u.value);
                    }
                }
            }
        }
        for which in OptionName::ALL {
            if let (false, Some(v)) = (done[which.index()], self.get(which)) {
                f(which.as_str().as_bytes(), decimal(v, &mut digits));
            }
        }
        for u in next_unknown {
            f(u.name, u.value);
        }
    }

    fn wire_len(&self) -> usize {
        let mut n = 0;
        self.for_each(|name, value| n += name.len() + value.len() + 2);
        n
    }

    fn check(&self) -> Result<(), EmitError> {
        for (i, u) in self.unknown.iter().enumerate() {
            if u.name.is_empty() || u.name.contains(&0) || u.value.contains(&0) {
                return Err(EmitError::Unencodable("unknown option name or value"));
            }
            let clash = OptionName::from_bytes(u.name).is_some()
                || self.unknown[..i]
                    .iter()
                    .any(|p| p.name.eq_ignore_ascii_case(u.name));
            if clash {
                return Err(EmitError::Unencodable("duplicate option"));
            }
        }
        for which in OptionName::ALL {
            if let Some(v) = self.get(which) {
                if !which.range().contains(&v) {
                    return Err(EmitError::Unencodable("option value out of range"));
                }
            }
        }
        Ok(())
    }

    fn write(&self, w: &mut Writer<'_>) {
        self.for_each(|name, value| {
            w.cstr(name);
            w.cstr(value);
        });
    }
}

/// A read or write request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The file name as sent (non-empty, no NUL); often a path.
    pub filename: &'a [u8],
    /// The transfer mode.
    pub mode: Mode<'a>,
    /// Options (RFC 2347); empty for an RFC 1350 request.
    pub options: Options<'a>,
}

/// A TFTP packet, borrowing its variable fields from the bytes it was parsed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Read request (opcode 1).
    Rrq(Request<'a>),
    /// Write request (opcode 2).
    Wrq(Request<'a>),
    /// A block of data (opcode 3); a payload shorter than the block size ends
    /// the transfer.
    Data {
        /// Block number, from 1, wrapping after 65535.
        block: u16,
        /// The data, borrowed; at most [`MAX_BLKSIZE`] bytes.
        payload: &'a [u8],
    },
    /// Acknowledgement (opcode 4).
    Ack {
        /// The block acknowledged (0 acknowledges an OACK or a WRQ).
        block: u16,
    },
    /// Error (opcode 5).
    Error {
        /// The error code.
        code: ErrorCode,
        /// The message, without the NUL (may be empty).
        message: &'a [u8],
    },
    /// Option acknowledgement (opcode 6, RFC 2347), at least one option.
    Oack(Options<'a>),
}

/// Why a packet did not parse. Every offset is the index, in the packet, of
/// the first byte of the offending field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TftpError {
    /// The packet ends inside a fixed-size field.
    #[error("truncated at byte {offset}")]
    Truncated {
        /// Where the missing field starts.
        offset: usize,
    },
    /// The opcode is not 1–6.
    #[error("unknown opcode {opcode}")]
    UnknownOpcode {
        /// The opcode read (at offset 0).
        opcode: u16,
    },
    /// A string (file name, mode, option, message) has no terminating NUL.
    #[error("string at byte {offset} has no NUL terminator")]
    MissingNul {
        /// Where the string starts.
        offset: usize,
    },
    /// A request names an empty file.
    #[error("empty file name at byte {offset}")]
    EmptyFilename {
        /// Where the file name would start.
        offset: usize,
    },
    /// The mode is not netascii, octet or mail.
    #[error("unknown transfer mode at byte {offset}")]
    UnknownMode {
        /// Where the mode starts.
        offset: usize,
    },
    /// An option has an empty name (e.g. a stray NUL after the options).
    #[error("empty option name at byte {offset}")]
    EmptyOptionName {
        /// Where the name would start.
        offset: usize,
    },
    /// An option name is not followed by a value.
    #[error("option at byte {offset} has no value")]
    MissingOptionValue {
        /// Where the value would start.
        offset: usize,
    },
    /// An option appears twice (names compare without case).
    #[error("duplicate option at byte {offset}")]
    DuplicateOption {
        /// Where the second occurrence's name starts.
        offset: usize,
    },
    /// A typed option's value is not a decimal number.
    #[error("{option} value at byte {offset} is not a decimal number")]
    NonNumericValue {
        /// The option.
        option: OptionName,
        /// Where the value starts.
        offset: usize,
    },
    /// A typed option's value is outside its RFC range.
    #[error("{option} value at byte {offset} is out of range")]
    ValueOutOfRange {
        /// The option.
        option: OptionName,
        /// Where the value starts.
        offset: usize,
    },
    /// An OACK carries no option.
    #[error("OACK without options")]
    EmptyOack,
    /// An RRQ, WRQ or OACK is longer than [`MAX_REQUEST_LEN`].
    #[error("{len}-byte request exceeds {MAX_REQUEST_LEN}")]
    RequestTooLong {
        /// The packet's length; the excess starts at offset [`MAX_REQUEST_LEN`].
        len: usize,
    },
    /// A packet is longer than [`MAX_PACKET_LEN`] (a DATA payload over [`MAX_BLKSIZE`]).
    #[error("{len}-byte packet exceeds {MAX_PACKET_LEN}")]
    PacketTooLong {
        /// The packet's length; the excess starts at offset [`MAX_PACKET_LEN`].
        len: usize,
    },
    /// Bytes follow a complete ACK or ERROR.
    #[error("trailing bytes at byte {offset}")]
    TrailingBytes {
        /// Where the extra bytes start.
        offset: usize,
    },
}

/// Why a packet could not be emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// The buffer is shorter than [`Packet::buffer_len`].
    #[error("buffer of {got} bytes, {needed} needed")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// A field cannot be written so that it parses back the same (an embedded
    /// NUL, an empty file name, a value out of range, a duplicate option, a
    /// packet over its length limit).
    #[error("cannot encode: {0}")]
    Unencodable(&'static str),
}

impl<'a> Packet<'a> {
    /// Parses one packet (a whole UDP payload).
    pub fn parse(packet: &'a [u8]) -> Result<Self, TftpError> {
        if packet.len() > MAX_PACKET_LEN {
            return Err(TftpError::PacketTooLong { len: packet.len() });
        }
        if matches!(
            opcode(packet),
            Some(Opcode::Rrq | Opcode::Wrq | Opcode::Oack)
        ) && packet.len() > MAX_REQUEST_LEN
        {
            return Err(TftpError::RequestTooLong { len: packet.len() });
        }
        match parse_packet(packet) {
            Ok(([], p)) => Ok(p),
            Ok((rest, _)) => Err(TftpError::TrailingBytes {
                offset: packet.len() - rest.len(),
            }),
            Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Err(e.into_error(packet)),
            // Only the `complete` parsers are used, which never ask for more.
            Err(nom::Err::Incomplete(_)) => Err(TftpError::Truncated {
                offset: packet.len(),
            }),
        }
    }

    /// The packet's opcode.
    pub fn opcode(&self) -> Opcode {
        match self {
            Packet::Rrq(_) => Opcode::Rrq,
            Packet::Wrq(_) => Opcode::Wrq,
            Packet::Data { .. } => Opcode::Data,
            Packet::Ack { .. } => Opcode::Ack,
            Packet::Error { .. } => Opcode::Error,
            Packet::Oack(_) => Opcode::Oack,
        }
    }

    /// Length of the packet on the wire.
    pub fn buffer_len(&self) -> usize {
        // 2 bytes of opcode, then per type; strings take a NUL each.
        2 + match self {
            Packet::Rrq(r) | Packet::Wrq(r) => {
                r.filename.len() + 1 + r.mode.text.len() + 1 + r.options.wire_len()
            }
            Packet::Data { payload, .. } => 2 + payload.len(),
            Packet::Ack { .. } => 2,
            Packet::Error { message, .. } => 2 + message.len() + 1,
            Packet::Oack(o) => o.wire_len(),
        }
    }

    /// Checks that the packet can be emitted so that it parses back equal.
    pub fn check(&self) -> Result<(), EmitError> {
        let ok = match self {
            Packet::Rrq(r) | Packet::Wrq(r) => {
                if r.filename.is_empty() || r.filename.contains(&0) {
                    return Err(EmitError::Unencodable("file name empty or with NUL"));
                }
                if Mode::from_bytes(r.mode.text).map(|m| m.kind) != Some(r.mode.kind) {
                    return Err(EmitError::Unencodable("mode spelling"));
                }
                r.options.check()?;
                self.buffer_len() <= MAX_REQUEST_LEN
            }
            Packet::Data { payload, .. } => payload.len() <= MAX_BLKSIZE as usize,
            Packet::Ack { .. } => true,
            Packet::Error { code, message } => {
                if message.contains(&0) {
                    return Err(EmitError::Unencodable("NUL in error message"));
                }
                if matches!(code, ErrorCode::Unknown(n) if *n <= 8) {
                    return Err(EmitError::Unencodable("named error code as Unknown"));
                }
                self.buffer_len() <= MAX_PACKET_LEN
            }
            Packet::Oack(o) => {
                if o.is_empty() {
                    return Err(EmitError::Unencodable("OACK without options"));
                }
                o.check()?;
                self.buffer_len() <= MAX_REQUEST_LEN
            }
        };
        if ok {
            Ok(())
        } else {
            Err(EmitError::Unencodable("packet too long"))
        }
    }

    /// Writes the packet to the start of `buf` and returns its length
    /// ([`Packet::buffer_len`]). Fails, writing nothing, if the packet would not
    /// parse back equal or `buf` is too short.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, EmitError> {
        self.check()?;
        let needed = self.buffer_len();
        let Some(buf) = buf.get_mut(..needed) else {
            return Err(EmitError::BufferTooSmall {
                needed,
                got: buf.len(),
            });
        };
        let mut w = Writer { buf, at: 0 };
        w.u16(self.opcode() as u16);
        match self {
            Packet::Rrq(r) | Packet::Wrq(r) => {
                w.cstr(r.filename);
                w.cstr(r.mode.text);
                r.options.write(&mut w);
            }
            Packet::Data { block, payload } => {
                w.u16(*block);
                w.bytes(payload);
            }
            Packet::Ack { block } => w.u16(*block),
            Packet::Error { code, message } => {
                w.u16((*code).into());
                w.cstr(message);
            }
            Packet::Oack(o) => o.write(&mut w),
        }
        debug_assert_eq!(w.at, needed);
        Ok(needed)
    }

    /// Emits the packet into a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, EmitError> {
        let mut v = vec![0; self.buffer_len()];
        self.emit(&mut v)?;
        Ok(v)
    }
}

/// Writes into a buffer already cut to the packet's exact length.
struct Writer<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        // Lengths were computed by `buffer_len`; a short buffer is a bug here.
        if let Some(dst) = self.buf.get_mut(self.at..self.at + b.len()) {
            dst.copy_from_slice(b);
        }
        self.at += b.len();
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }
    fn cstr(&mut self, s: &[u8]) {
        self.bytes(s);
        self.bytes(&[0]);
    }
}

/// Formats `v` in decimal into `buf`, returning the digits.
fn decimal(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Reads a non-empty run of ASCII digits; `None` if empty, not all digits, or
/// over `u64::MAX`.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        let d = b.checked_sub(b'0').filter(|d| *d < 10)?;
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

// ---- nom parsers ----------------------------------------------------------

/// What went wrong, before it is turned into a [`TftpError`] with an offset.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Truncated,
    UnknownOpcode(u16),
    MissingNul,
    EmptyFilename,
    UnknownMode,
    EmptyOptionName,
    MissingOptionValue,
    DuplicateOption,
    NonNumeric(OptionName),
    OutOfRange(OptionName),
    EmptyOack,
}

/// A nom error: the input remaining where the error was found, and why.
#[derive(Debug)]
struct PErr<'a> {
    at: &'a [u8],
    kind: Kind,
}

impl<'a> PErr<'a> {
    fn fail<T>(at: &'a [u8], kind: Kind) -> IResult<&'a [u8], T, PErr<'a>> {
        Err(nom::Err::Failure(PErr { at, kind }))
    }

    fn into_error(self, packet: &[u8]) -> TftpError {
        let offset = packet.len() - self.at.len();
        match self.kind {
            Kind::Truncated => TftpError::Truncated { offset },
            Kind::UnknownOpcode(opcode) => TftpError::UnknownOpcode { opcode },
            Kind::MissingNul => TftpError::MissingNul { offset },
            Kind::EmptyFilename => TftpError::EmptyFilename { offset },
            Kind::UnknownMode => TftpError::UnknownMode { offset },
            Kind::EmptyOptionName => TftpError::EmptyOptionName { offset },
            Kind::MissingOptionValue => TftpError::MissingOptionValue { offset },
            Kind::DuplicateOption => TftpError::DuplicateOption { offset },
            Kind::NonNumeric(option) => TftpError::NonNumericValue { option, offset },
            Kind::OutOfRange(option) => TftpError::ValueOutOfRange { option, offset },
            Kind::EmptyOack => TftpError::EmptyOack,
        }
    }
}

impl<'a> ParseError<&'a [u8]> for PErr<'a> {
    // nom's own parsers (be_u16, tag) only fail for lack of bytes here.
    fn from_error_kind(at: &'a [u8], _: ErrorKind) -> Self {
        PErr {
            at,
            kind: Kind::Truncated,
        }
    }
    fn append(_: &'a [u8], _: ErrorKind, other: Self) -> Self {
        other
    }
}

type PResult<'a, T> = IResult<&'a [u8], T, PErr<'a>>;

/// A NUL-terminated string; the error points at the string's start.
fn cstr(input: &[u8]) -> PResult<'_, &[u8]> {
    let (rest, s) = take_till(|b| b == 0)(input)?;
    match tag::<_, _, PErr<'_>>(&b"\0"[..])(rest) {
        Ok((rest, _)) => Ok((rest, s)),
        Err(_) => PErr::fail(input, Kind::MissingNul),
    }
}

fn parse_packet(input: &[u8]) -> PResult<'_, Packet<'_>> {
    let (rest, op) = be_u16(input)?;
    match Opcode::from_u16(op) {
        Some(Opcode::Rrq) => request(rest).map(|(r, q)| (r, Packet::Rrq(q))),
        Some(Opcode::Wrq) => request(rest).map(|(r, q)| (r, Packet::Wrq(q))),
        Some(Opcode::Data) => {
            let (payload, block) = be_u16(rest)?;
            // `parse` already bounded the whole packet to MAX_PACKET_LEN.
            Ok((&[], Packet::Data { block, payload }))
        }
        Some(Opcode::Ack) => {
            let (rest, block) = be_u16(rest)?;
            Ok((rest, Packet::Ack { block }))
        }
        Some(Opcode::Error) => {
            let (rest, code) = be_u16(rest)?;
            let (rest, message) = cstr(rest)?;
            let code = ErrorCode::from(code);
            Ok((rest, Packet::Error { code, message }))
        }
        Some(Opcode::Oack) => {
            if rest.is_empty() {
                return PErr::fail(rest, Kind::EmptyOack);
            }
            let (rest, o) = options(rest)?;
            Ok((rest, Packet::Oack(o)))
        }
        None => PErr::fail(input, Kind::UnknownOpcode(op)),
    }
}

fn request(input: &[u8]) -> PResult<'_, Request<'_>> {
    let (rest, filename) = cstr(input)?;
    if filename.is_empty() {
        return PErr::fail(input, Kind::EmptyFilename);
    }
    let (rest2, text) = cstr(rest)?;
    let Some(mode) = Mode::from_bytes(text) else {
        return PErr::fail(rest, Kind::UnknownMode);
    };
    let (rest, options) = options(rest2)?;
    Ok((
        rest,
        Request {
            filename,
            mode,
            options,
        },
    ))
}

/// Name/value pairs up to the end of the packet.
fn options(mut input: &[u8]) -> PResult<'_, Options<'_>> {
    let mut o = Options::default();
    // Names seen so far, for the case-insensitive duplicate check.
    let mut names: Vec<&[u8]> = Vec::new();
    while !input.is_empty() {
        let (rest, name) = cstr(input)?;
        if name.is_empty() {
            return PErr::fail(input, Kind::EmptyOptionName);
        }
        if names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            return PErr::fail(input, Kind::DuplicateOption);
        }
        if rest.is_empty() {
            return PErr::fail(rest, Kind::MissingOptionValue);
        }
        let (after, value) = cstr(rest)?;
        match OptionName::from_bytes(name) {
            Some(which) => {
                let Some(v) = parse_decimal(value) else {
                    // Distinguish "too many digits" from "not digits".
                    let kind = if !value.is_empty() && value.iter().all(u8::is_ascii_digit) {
                        Kind::OutOfRange(which)
                    } else {
                        Kind::NonNumeric(which)
                    };
                    return PErr::fail(rest, kind);
                };
                if !o.set(which, v) {
                    return PErr::fail(rest, Kind::OutOfRange(which));
                }
                o.spelling.push(Spelling::Known { which, name, value });
            }
            None => {
                o.unknown.push(UnknownOption { name, value });
                o.spelling.push(Spelling::Unknown);
            }
        }
        names.push(name);
        input = after;
    }
    Ok((input, o))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    mod pcap {
        include!(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/pcap.rs"));
    }

    /// The file `capture.sh` serves: 3000 bytes of a fixed pattern.
    fn served_file() -> Vec<u8> {
        (0..3000u32).map(|i| ((i * 7 + 3) % 251) as u8).collect()
    }

    /// Parses every datagram of a capture, checks byte-exact re-emission and
    /// that the fast-path reader agrees with the full parser.
    fn parse_all(pcap: &'static [u8]) -> Vec<Packet<'static>> {
        let datagrams = pcap::datagrams(pcap);
        // Requests go to the well-known port, the rest between the two TIDs.
        assert_eq!(datagrams[0].dst_port, 69);
        assert!(datagrams[1..]
            .iter()
            .all(|d| d.src_port != 69 && d.dst_port != 69));
        datagrams
            .into_iter()
            .map(|d| {
                let p =
                    Packet::parse(d.payload).unwrap_or_else(|e| panic!("{e}: {:02x?}", d.payload));
                assert_eq!(p.buffer_len(), d.payload.len());
                assert_eq!(p.to_vec().unwrap(), d.payload, "re-emit of {p:?}");
                let fast = parse_data_header(d.payload);
                match p {
                    Packet::Data { block, payload } => assert_eq!(fast, Some((block, payload))),
                    _ => assert_eq!(fast, None),
                }
                p
            })
            .collect()
    }

    /// The file reassembled from DATA packets (blocks in order, no repeats).
    fn reassemble(packets: &[Packet<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut next = 1u16;
        for p in packets {
            if let Packet::Data { block, payload } = p {
                assert_eq!(*block, next);
                next += 1;
                out.extend_from_slice(payload);
            }
        }
        out
    }

    fn rrq<'a>(p: &'a Packet<'a>) -> &'a Request<'a> {
        match p {
            Packet::Rrq(r) => r,
            other => panic!("not an RRQ: {other:?}"),
        }
    }

    fn oack<'a>(packets: &'a [Packet<'a>]) -> &'a Options<'a> {
        packets
            .iter()
            .find_map(|p| match p {
                Packet::Oack(o) => Some(o),
                _ => None,
            })
            .expect("an OACK")
    }

    #[test]
    fn tftpd_hpa_without_options() {
        let p = parse_all(include_bytes!("../testdata/tftp-hpa-plain.pcap"));
        let r = rrq(&p[0]);
        assert_eq!(r.filename, b"pxelinux.0");
        assert_eq!(r.mode.kind(), TransferMode::Octet);
        assert!(r.options.is_empty());
        assert_eq!(reassemble(&p), served_file());
        // 5 full blocks and a short one, each acknowledged.
        let acks: Vec<u16> = p
            .iter()
            .filter_map(|p| match p {
                Packet::Ack { block } => Some(*block),
                _ => None,
            })
            .collect();
        assert_eq!(acks, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn tftpd_hpa_curl_blksize_tsize() {
        let p = parse_all(include_bytes!("../testdata/tftp-hpa-curl-blksize.pcap"));
        let o = &rrq(&p[0]).options;
        assert_eq!(
            (o.tsize, o.blksize, o.timeout),
            (Some(0), Some(1024), Some(6))
        );
        let a = oack(&p);
        assert_eq!(
            (a.tsize, a.blksize, a.timeout),
            (Some(3000), Some(1024), Some(6))
        );
        assert_eq!(p[2], Packet::Ack { block: 0 });
        assert_eq!(reassemble(&p), served_file());
    }

    #[test]
    fn tftpd_hpa_atftp_windowsize_not_acknowledged() {
        let p = parse_all(include_bytes!("../testdata/tftp-hpa-atftp-options.pcap"));
        let o = &rrq(&p[0]).options;
        assert_eq!(o.blksize, Some(1428));
        assert_eq!(o.windowsize, Some(4));
        assert_eq!(o.timeout, Some(3));
        // tftpd-hpa does not implement RFC 7440.
        let a = oack(&p);
        assert_eq!(
            (a.blksize, a.windowsize, a.tsize),
            (Some(1428), None, Some(3000))
        );
        assert_eq!(reassemble(&p), served_file());
    }

    #[test]
    fn tftpd_hpa_file_not_found() {
        let p = parse_all(include_bytes!("../testdata/tftp-hpa-notfound.pcap"));
        assert_eq!(rrq(&p[0]).filename, b"missing.img");
        assert_eq!(
            p[1],
            Packet::Error {
                code: ErrorCode::FileNotFound,
                message: b"File not found",
            }
        );
    }

    #[test]
    fn tftpd_hpa_write_request() {
        let p = parse_all(include_bytes!("../testdata/tftp-hpa-wrq.pcap"));
        match &p[0] {
            Packet::Wrq(r) => {
                assert_eq!(r.filename, b"kernel");
                assert_eq!(r.mode, Mode::OCTET);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p[1], Packet::Ack { block: 0 });
        assert_eq!(reassemble(&p), served_file());
    }

    #[test]
    fn dnsmasq_netascii() {
        let p = parse_all(include_bytes!("../testdata/dnsmasq-tftp-plain.pcap"));
        assert_eq!(rrq(&p[0]).mode.kind(), TransferMode::Netascii);
        // netascii turns each LF (10) of the file into CR LF.
        let lf = served_file().iter().filter(|b| **b == b'\n').count();
        assert!(lf > 0);
        assert_eq!(reassemble(&p).len(), 3000 + lf);
    }

    #[test]
    fn dnsmasq_curl_and_atftp_options() {
        let p = parse_all(include_bytes!("../testdata/dnsmasq-tftp-curl-blksize.pcap"));
        assert_eq!(rrq(&p[0]).options.blksize, Some(1432));
        let a = oack(&p);
        assert_eq!(
            (a.blksize, a.tsize, a.timeout),
            (Some(1432), Some(3000), None)
        );
        assert_eq!(reassemble(&p), served_file());

        let p = parse_all(include_bytes!(
            "../testdata/dnsmasq-tftp-atftp-options.pcap"
        ));
        assert_eq!(rrq(&p[0]).options.windowsize, Some(4));
        assert_eq!(oack(&p).len(), 2);
        assert_eq!(reassemble(&p), served_file());
    }

    #[test]
    fn spelling_and_order_round_trip() {
        let wire =
            b"\x00\x01Boot/X.efi\x00OcTeT\x00BLKSIZE\x0001428\x00x-vendor\x00\x00TSize\x000\x00";
        let p = Packet::parse(wire).unwrap();
        let r = rrq(&p);
        assert_eq!(r.mode.as_bytes(), b"OcTeT");
        assert_eq!(r.options.blksize, Some(1428));
        assert_eq!(r.options.tsize, Some(0));
        assert_eq!(
            r.options.unknown,
            [UnknownOption {
                name: b"x-vendor",
                value: b""
            }]
        );
        assert_eq!(p.to_vec().unwrap(), wire);

        // A changed value keeps the name's spelling and place; a new option goes last.
        let mut r = r.clone();
        r.options.blksize = Some(512);
        r.options.windowsize = Some(8);
        r.options.tsize = None;
        let out = Packet::Rrq(r).to_vec().unwrap();
        assert_eq!(
            out,
            b"\x00\x01Boot/X.efi\x00OcTeT\x00BLKSIZE\x00512\x00x-vendor\x00\x00windowsize\x008\x00"
        );
    }

    #[test]
    fn fast_path_data_header() {
        assert_eq!(
            parse_data_header(b"\x00\x03\x01\x02abc"),
            Some((0x0102, &b"abc"[..]))
        );
        assert_eq!(
            parse_data_header(b"\x00\x03\xff\xff"),
            Some((0xffff, &b""[..]))
        );
        assert_eq!(parse_data_header(b"\x00\x03\x00"), None);
        assert_eq!(parse_data_header(b"\x00\x04\x00\x01"), None);
        assert_eq!(parse_data_header(b"\x01\x03\x00\x01"), None);
        let mut big = vec![0u8; MAX_PACKET_LEN];
        big[1] = 3;
        assert!(parse_data_header(&big).is_some());
        big.push(0);
        assert_eq!(parse_data_header(&big), None);
        assert_eq!(opcode(b"\x00\x06"), Some(Opcode::Oack));
        assert_eq!(opcode(b"\x00\x07"), None);
        assert_eq!(opcode(b"\x00"), None);
    }

    #[test]
    fn malformed_inputs() {
        use OptionName::*;
        use TftpError::*;
        let long_rrq = {
            let mut v = b"\x00\x01".to_vec();
            v.extend(std::iter::repeat_n(b'a', 504));
            v.extend_from_slice(b"\x00octet\x00");
            v
        };
        assert_eq!(long_rrq.len(), 513);
        let long_data = [&[0, 3, 0, 1][..], &[0; MAX_BLKSIZE as usize + 1]].concat();
        let cases: &[(&[u8], TftpError)] = &[
            (b"", Truncated { offset: 0 }),
            (b"\x00", Truncated { offset: 0 }),
            (b"\x00\x00", UnknownOpcode { opcode: 0 }),
            (b"\x00\x07abc", UnknownOpcode { opcode: 7 }),
            (b"\x01\x01", UnknownOpcode { opcode: 257 }),
            (b"\x00\x01", MissingNul { offset: 2 }),
            (b"\x00\x01file", MissingNul { offset: 2 }),
            (b"\x00\x01file\x00octet", MissingNul { offset: 7 }),
            (b"\x00\x01\x00octet\x00", EmptyFilename { offset: 2 }),
            (b"\x00\x01f\x00binary\x00", UnknownMode { offset: 4 }),
            (b"\x00\x01f\x00\x00", UnknownMode { offset: 4 }),
            (
                b"\x00\x01f\x00octet\x00\x00",
                EmptyOptionName { offset: 10 },
            ),
            (b"\x00\x01f\x00octet\x00blksize", MissingNul { offset: 10 }),
            (
                b"\x00\x01f\x00octet\x00blksize\x00",
                MissingOptionValue { offset: 18 },
            ),
            (
                b"\x00\x01f\x00octet\x00blksize\x00512",
                MissingNul { offset: 18 },
            ),
            (
                b"\x00\x02f\x00octet\x00blksize\x00\x00",
                NonNumericValue {
                    option: Blksize,
                    offset: 18,
                },
            ),
            (
                b"\x00\x01f\x00octet\x00blksize\x00 512\x00",
                NonNumericValue {
                    option: Blksize,
                    offset: 18,
                },
            ),
            (
                b"\x00\x01f\x00octet\x00blksize\x00+512\x00",
                NonNumericValue {
                    option: Blksize,
                    offset: 18,
                },
            ),
            (
                b"\x00\x01f\x00octet\x00tsize\x00-1\x00",
                NonNumericValue {
                    option: Tsize,
                    offset: 16,
                },
            ),
            (
                b"\x00\x01f\x00octet\x00blksize\x007\x00",
                ValueOutOfRange {
                    option: Blksize,
                    offset: 18,
                },
            ),
            (
                b"\x00\x01f\x00octet\x00blksize\x0065465\x00",
                ValueOutOfRange {
                    option: Blksize,
                    offset: 18,
                },
            ),
            (
                b"\x00\x01f\x00octet\x00timeout\x000\x00",
                ValueOutOfRange {
                    option: Timeout,
                    offset: 18,
                },
            ),
            (
                b"\x00\x01f\x00octet\x00timeout\x00256\x00",
                ValueOutOfRange {
                    option: Timeout,
                    offset: 18,
                },
            ),
            (
                b"\x00\x01f\x00octet\x00windowsize\x000\x00",
                ValueOutOfRange {
                    option: Windowsize,
                    offset: 21,
                },
            ),
            (
                b"\x00\x01f\x00octet\x00windowsize\x0065536\x00",
                ValueOutOfRange {
                    option: Windowsize,
                    offset: 21,
                },
            ),
            (
                b"\x00\x01f\x00octet\x00tsize\x0018446744073709551616\x00",
                ValueOutOfRange {
                    option: Tsize,
                    offset: 16,
                },
            ),
            (
                b"\x00\x01f\x00octet\x00tsize\x000\x00TSIZE\x000\x00",
                DuplicateOption { offset: 18 },
            ),
            (
                b"\x00\x01f\x00octet\x00foo\x00a\x00FOO\x00b\x00",
                DuplicateOption { offset: 16 },
            ),
            (&long_rrq, RequestTooLong { len: 513 }),
            (b"\x00\x03\x00", Truncated { offset: 2 }),
            (
                &long_data,
                PacketTooLong {
                    len: MAX_PACKET_LEN + 1,
                },
            ),
            (b"\x00\x04\x00", Truncated { offset: 2 }),
            (b"\x00\x04\x00\x01\x00", TrailingBytes { offset: 4 }),
            (b"\x00\x05\x00", Truncated { offset: 2 }),
            (b"\x00\x05\x00\x01", MissingNul { offset: 4 }),
            (b"\x00\x05\x00\x01oops", MissingNul { offset: 4 }),
            (b"\x00\x05\x00\x01oops\x00\x00", TrailingBytes { offset: 9 }),
            (b"\x00\x06", EmptyOack),
            (b"\x00\x06blksize\x00", MissingOptionValue { offset: 10 }),
            (
                b"\x00\x06blksize\x0099999\x00",
                ValueOutOfRange {
                    option: Blksize,
                    offset: 10,
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(Packet::parse(input), Err(*want), "input {input:02x?}");
        }
    }

    #[test]
    fn emit_refuses_what_would_not_parse_back() {
        let bad = |p: Packet<'_>| assert!(p.check().is_err() && p.to_vec().is_err(), "{p:?}");
        let req = |filename| Request {
            filename,
            mode: Mode::OCTET,
            options: Options::default(),
        };
        bad(Packet::Rrq(req(b"")));
        bad(Packet::Rrq(req(b"a\0b")));
        bad(Packet::Rrq(req(&[b'a'; 510])));
        let mut r = req(b"f");
        r.options.blksize = Some(4);
        bad(Packet::Rrq(r));
        let mut r = req(b"f");
        r.options.unknown.push(UnknownOption {
            name: b"BlkSize",
            value: b"1",
        });
        bad(Packet::Wrq(r));
        bad(Packet::Oack(Options::default()));
        bad(Packet::Error {
            code: ErrorCode::Unknown(3),
            message: b"",
        });
        bad(Packet::Data {
            block: 1,
            payload: &[0; MAX_BLKSIZE as usize + 1],
        });
        let ok = Packet::Ack { block: 7 };
        assert_eq!(
            ok.emit(&mut [0; 3]),
            Err(EmitError::BufferTooSmall { needed: 4, got: 3 })
        );
        let mut buf = [0xaa; 6];
        assert_eq!(ok.emit(&mut buf), Ok(4));
        assert_eq!(buf, [0, 4, 0, 7, 0xaa, 0xaa]);
    }

    // ---- property tests: parse(emit(x)) == x --------------------------------

    fn text(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(1u8..=255, 0..max)
    }

    fn mode() -> impl Strategy<Value = Mode<'static>> {
        prop_oneof![
            Just(Mode::OCTET),
            Just(Mode::NETASCII),
            Just(Mode::MAIL),
            Just(Mode::from_bytes(b"OCTET").unwrap()),
            Just(Mode::from_bytes(b"NetAscii").unwrap()),
        ]
    }

    /// Owned option values: blksize, timeout, tsize, windowsize, unknown.
    type OptionValues = (
        Option<u16>,
        Option<u8>,
        Option<u64>,
        Option<u16>,
        Vec<(Vec<u8>, Vec<u8>)>,
    );

    /// Options whose unknown names cannot clash with each other or known ones.
    fn options() -> impl Strategy<Value = OptionValues> {
        (
            proptest::option::of(MIN_BLKSIZE..=MAX_BLKSIZE),
            proptest::option::of(1u8..=255),
            proptest::option::of(any::<u64>()),
            proptest::option::of(1u16..=65535),
            proptest::collection::btree_map("x-[a-z0-9]{1,8}", text(12), 0..4)
                .prop_map(|m| m.into_iter().map(|(k, v)| (k.into_bytes(), v)).collect()),
        )
    }

    fn build<'a>((blksize, timeout, tsize, windowsize, unknown): &'a OptionValues) -> Options<'a> {
        Options {
            blksize: *blksize,
            timeout: *timeout,
            tsize: *tsize,
            windowsize: *windowsize,
            unknown: unknown
                .iter()
                .map(|(n, v)| UnknownOption { name: n, value: v })
                .collect(),
            ..Options::default()
        }
    }

    fn round_trip(p: &Packet<'_>) {
        let bytes = p.to_vec().unwrap();
        assert_eq!(bytes.len(), p.buffer_len());
        let back = Packet::parse(&bytes).unwrap();
        assert_eq!(&back, p);
        // And the parsed form re-emits the same bytes.
        assert_eq!(back.to_vec().unwrap(), bytes);
    }

    proptest! {
        #[test]
        fn request_round_trips(name in text(64).prop_filter("non-empty", |n| !n.is_empty()),
                               mode in mode(), opts in options(), write in any::<bool>()) {
            let r = Request { filename: &name, mode, options: build(&opts) };
            round_trip(&if write { Packet::Wrq(r) } else { Packet::Rrq(r) });
        }

        #[test]
        fn oack_round_trips(opts in options()) {
            let o = build(&opts);
            prop_assume!(!o.is_empty());
            round_trip(&Packet::Oack(o));
        }

        #[test]
        fn data_round_trips(block in any::<u16>(),
                            payload in proptest::collection::vec(any::<u8>(), 0..1500)) {
            round_trip(&Packet::Data { block, payload: &payload });
            let wire = Packet::Data { block, payload: &payload }.to_vec().unwrap();
            prop_assert_eq!(parse_data_header(&wire), Some((block, &payload[..])));
        }

        #[test]
        fn ack_and_error_round_trip(block in any::<u16>(), code in any::<u16>(),
                                    message in text(100)) {
            round_trip(&Packet::Ack { block });
            round_trip(&Packet::Error { code: ErrorCode::from(code), message: &message });
        }

        #[test]
        fn parse_never_panics_and_accepted_input_re_emits(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            if let Ok(p) = Packet::parse(&bytes) {
                prop_assert_eq!(p.to_vec().unwrap(), bytes);
            }
        }
    }
}
