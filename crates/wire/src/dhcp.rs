//! DHCP/BOOTP (RFC 951, 2131, 2132) with the options PXE uses (PXE 2.1,
//! RFC 4578): the fixed BOOTP header, the magic cookie, options as TLVs with
//! pad and end, option overload (52), and the PXE vendor sub-options (43).
//!
//! The same format serves PXE boot server discovery on UDP 4011
//! ([`PXE_PORT`]): a client sends a DHCPREQUEST there carrying option 43 with a
//! boot item (sub-option 71), and the boot server ACKs with the NBP's file
//! name; [`Repr::parse`] reads both like any other DHCP message.
//!
//! Parsing is strict: a malformed packet is a [`DhcpError`] with the byte
//! offset of the offending field. Options are kept in wire order, pads
//! included, each typed where this crate knows the option and raw otherwise,
//! so that [`Repr::emit`] reproduces a parsed packet byte for byte. The one
//! normalisation: a `sname`/`file` field that holds text is kept up to its
//! last non-zero byte (the rest of the field is zero on the wire).
//!
//! Option 43 is read as PXE sub-options when the message carries a PXE
//! vendor class (option 60 `PXEClient` or `PXEClient:Arch:…`), and kept raw
//! otherwise. Long options split over several instances (RFC 3396) are kept
//! as the separate instances they are on the wire, not concatenated.

use core::net::Ipv4Addr;

/// UDP port of DHCP servers (and proxyDHCP).
pub const SERVER_PORT: u16 = 67;
/// UDP port of DHCP clients.
pub const CLIENT_PORT: u16 = 68;
/// UDP port of PXE boot server discovery (PXE 2.1).
pub const PXE_PORT: u16 = 4011;
/// The DHCP magic cookie (RFC 2131) that follows the BOOTP header.
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Length of the fixed BOOTP header, up to the cookie.
pub const HEADER_LEN: usize = 236;
/// Offset of the first option, after the header and cookie. The shortest
/// message [`Repr::parse`] accepts is one byte longer: an End option.
pub const OPTIONS_OFFSET: usize = HEADER_LEN + 4;

/// Byte ranges of the fixed header (RFC 2131 figure 1).
mod field {
    use core::ops::Range;
    pub(super) const OP: usize = 0;
    pub(super) const HTYPE: usize = 1;
    pub(super) const HLEN: usize = 2;
    pub(super) const HOPS: usize = 3;
    pub(super) const XID: Range<usize> = 4..8;
    pub(super) const SECS: Range<usize> = 8..10;
    pub(super) const FLAGS: Range<usize> = 10..12;
    pub(super) const CIADDR: Range<usize> = 12..16;
    pub(super) const YIADDR: Range<usize> = 16..20;
    pub(super) const SIADDR: Range<usize> = 20..24;
    pub(super) const GIADDR: Range<usize> = 24..28;
    pub(super) const CHADDR: Range<usize> = 28..44;
    pub(super) const SNAME: Range<usize> = 44..108;
    pub(super) const FILE: Range<usize> = 108..236;
    pub(super) const COOKIE: Range<usize> = 236..240;
}

/// Option codes this module types (RFC 2132, 4578, 3004, PXE 2.1).
pub mod code {
    /// Pad: one byte, no length.
    pub const PAD: u8 = 0;
    /// Vendor-specific information; PXE sub-options for PXE clients.
    pub const VENDOR_SPECIFIC: u8 = 43;
    /// Option overload: more options in `file` and/or `sname`.
    pub const OVERLOAD: u8 = 52;
    /// DHCP message type.
    pub const MESSAGE_TYPE: u8 = 53;
    /// Server identifier.
    pub const SERVER_IDENTIFIER: u8 = 54;
    /// Vendor class identifier.
    pub const VENDOR_CLASS: u8 = 60;
    /// TFTP server name.
    pub const TFTP_SERVER_NAME: u8 = 66;
    /// Bootfile name.
    pub const BOOTFILE_NAME: u8 = 67;
    /// User class (iPXE sends its name here).
    pub const USER_CLASS: u8 = 77;
    /// Client system architecture (RFC 4578).
    pub const CLIENT_ARCH: u8 = 93;
    /// Client network interface identifier: UNDI version (RFC 4578).
    pub const UNDI_VERSION: u8 = 94;
    /// Client machine identifier: UUID/GUID (RFC 4578).
    pub const CLIENT_UUID: u8 = 97;
    /// End: the last option of an area.
    pub const END: u8 = 255;

    /// Every code that [`super::DhcpOption`] has a typed variant for.
    pub(super) const TYPED: [u8; 12] = [
        PAD,
        VENDOR_SPECIFIC,
        OVERLOAD,
        MESSAGE_TYPE,
        SERVER_IDENTIFIER,
        VENDOR_CLASS,
        TFTP_SERVER_NAME,
        BOOTFILE_NAME,
        USER_CLASS,
        CLIENT_ARCH,
        UNDI_VERSION,
        CLIENT_UUID,
    ];
}

/// PXE vendor sub-option codes (inside option 43, PXE 2.1 table 2-1).
pub mod pxe_code {
    /// Pad.
    pub const PAD: u8 = 0;
    /// Discovery control bits.
    pub const DISCOVERY_CONTROL: u8 = 6;
    /// Boot servers: type, count, addresses.
    pub const BOOT_SERVERS: u8 = 8;
    /// Boot menu: type, description.
    pub const BOOT_MENU: u8 = 9;
    /// Menu prompt: timeout, prompt text.
    pub const MENU_PROMPT: u8 = 10;
    /// Boot item: server type and layer.
    pub const BOOT_ITEM: u8 = 71;
    /// End.
    pub const END: u8 = 255;

    pub(super) const TYPED: [u8; 6] = [
        PAD,
        DISCOVERY_CONTROL,
        BOOT_SERVERS,
        BOOT_MENU,
        MENU_PROMPT,
        BOOT_ITEM,
    ];
}

/// Why a packet did not parse. Offsets index the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DhcpError {
    /// The packet is shorter than the header and cookie.
    #[error("truncated: {len} bytes, {OPTIONS_OFFSET} needed")]
    Truncated {
        /// The packet's length (where the missing bytes start).
        len: usize,
    },
    /// `op` is neither BOOTREQUEST (1) nor BOOTREPLY (2).
    #[error("bad op {op} at byte 0")]
    BadOp {
        /// The value found.
        op: u8,
    },
    /// The four bytes after the header are not the DHCP magic cookie.
    #[error("bad magic cookie at byte {HEADER_LEN}")]
    BadCookie,
    /// An option's length byte, or its data, runs past the end of its area.
    #[error("option {code} at byte {offset} overruns its area")]
    OptionOverrun {
        /// The option code.
        code: u8,
        /// Where the option starts.
        offset: usize,
    },
    /// An options area has no End option.
    #[error("options area ending at byte {offset} has no End")]
    MissingEnd {
        /// The end of the area.
        offset: usize,
    },
    /// A non-zero byte follows the End option.
    #[error("non-zero byte after End at byte {offset}")]
    NonZeroPadding {
        /// Where the byte is.
        offset: usize,
    },
    /// An option's length does not fit its type (e.g. message type not 1 byte).
    #[error("option {code} at byte {offset} has bad length {len}")]
    BadLength {
        /// The option code.
        code: u8,
        /// Where the option starts.
        offset: usize,
        /// The length found.
        len: u8,
    },
    /// An option's value is not one it may take (e.g. message type 0).
    #[error("option {code} at byte {offset} has a bad value")]
    BadValue {
        /// The option code.
        code: u8,
        /// Where the option starts.
        offset: usize,
    },
    /// An overload option (52) appears twice or inside `sname`/`file`.
    #[error("misplaced overload option at byte {offset}")]
    MisplacedOverload {
        /// Where the option starts.
        offset: usize,
    },
    /// A vendor class starts `PXEClient:` but is not `PXEClient:Arch:xxxxx:UNDI:yyyzzz`.
    #[error("malformed PXEClient vendor class at byte {offset}")]
    BadVendorClass {
        /// Where the option starts.
        offset: usize,
    },
    /// A PXE sub-option (in option 43) overruns or has a bad length.
    #[error("PXE sub-option {code} at byte {offset} is malformed")]
    BadPxeOption {
        /// The sub-option code.
        code: u8,
        /// Where the sub-option starts.
        offset: usize,
    },
}

/// Why a [`Repr`] could not be emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// The buffer is shorter than [`Repr::buffer_len`].
    #[error("buffer of {got} bytes, {needed} needed")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// A field cannot be written so that it parses back the same: an option
    /// over 255 bytes, an area that overflows its field, a raw option with a
    /// typed code, overloaded areas without a matching option 52, ...
    #[error("cannot encode: {0}")]
    Unencodable(&'static str),
}

/// BOOTP `op`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// BOOTREQUEST (1), from clients.
    Request,
    /// BOOTREPLY (2), from servers.
    Reply,
}

/// DHCP message type (option 53).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// 1: client looks for servers.
    Discover,
    /// 2: server offers an address (or, from proxyDHCP, boot information).
    Offer,
    /// 3: client asks for the offered address (or, on UDP 4011, a boot file).
    Request,
    /// 4: client declines an address.
    Decline,
    /// 5: server acknowledges.
    Ack,
    /// 6: server refuses.
    Nak,
    /// 7: client releases its address.
    Release,
    /// 8: client asks for configuration only.
    Inform,
    /// Any other non-zero type (RFC 3203, 4388, ...).
    Other(u8),
}

impl MessageType {
    /// The type for a wire value; `None` for 0, which no RFC assigns.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => return None,
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            n => Self::Other(n),
        })
    }

    /// The wire value.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Discover => 1,
            Self::Offer => 2,
            Self::Request => 3,
            Self::Decline => 4,
            Self::Ack => 5,
            Self::Nak => 6,
            Self::Release => 7,
            Self::Inform => 8,
            Self::Other(n) => n,
        }
    }
}

/// Which of `file` and `sname` carry options (option 52).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Overload {
    /// 1: `file` holds options.
    File,
    /// 2: `sname` holds options.
    Sname,
    /// 3: both do (read `file` first).
    Both,
}

impl Overload {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::File,
            2 => Self::Sname,
            3 => Self::Both,
            _ => return None,
        })
    }
    fn to_u8(self) -> u8 {
        match self {
            Self::File => 1,
            Self::Sname => 2,
            Self::Both => 3,
        }
    }
    fn file(self) -> bool {
        matches!(self, Self::File | Self::Both)
    }
    fn sname(self) -> bool {
        matches!(self, Self::Sname | Self::Both)
    }
}

/// The parsed form of `PXEClient:Arch:xxxxx:UNDI:yyyzzz` (option 60).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PxeClientClass {
    /// Client architecture (RFC 4578: 0 x86 BIOS, 7 x64 UEFI, ...).
    pub arch: u16,
    /// UNDI major version.
    pub undi_major: u8,
    /// UNDI minor version.
    pub undi_minor: u8,
}

/// Vendor class identifier (option 60).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VendorClass<'a> {
    /// A PXE client: `PXEClient:Arch:xxxxx:UNDI:yyyzzz`.
    PxeClient(PxeClientClass),
    /// Exactly `PXEClient`: what PXE servers and proxyDHCP send back.
    PxeServer,
    /// Anything else, as sent (never starts with `PXEClient:`).
    Other(&'a [u8]),
}

const PXE_CLIENT: &[u8] = b"PXEClient";

impl<'a> VendorClass<'a> {
    /// Reads the option's data; `None` if it starts `PXEClient:` without
    /// being the full PXE form.
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        if data == PXE_CLIENT {
            return Some(Self::PxeServer);
        }
        let Some(rest) = data.strip_prefix(b"PXEClient:") else {
            return Some(Self::Other(data));
        };
        // `Arch:` 5 digits `:UNDI:` 3 + 3 digits, nothing after.
        let rest = rest.strip_prefix(b"Arch:")?;
        let (arch, rest) = split_digits(rest, 5)?;
        let rest = rest.strip_prefix(b":UNDI:")?;
        let (major, rest) = split_digits(rest, 3)?;
        let (minor, rest) = split_digits(rest, 3)?;
        if !rest.is_empty() {
            return None;
        }
        Some(Self::PxeClient(PxeClientClass {
            arch: u16::try_from(arch).ok()?,
            undi_major: u8::try_from(major).ok()?,
            undi_minor: u8::try_from(minor).ok()?,
        }))
    }

    fn is_pxe(&self) -> bool {
        !matches!(self, Self::Other(_))
    }

    fn data_len(&self) -> usize {
        match self {
            Self::PxeClient(_) => 32,
            Self::PxeServer => PXE_CLIENT.len(),
            Self::Other(d) => d.len(),
        }
    }

    fn write(&self, w: &mut Writer<'_>) {
        match self {
            Self::PxeClient(c) => {
                w.bytes(b"PXEClient:Arch:");
                w.digits(u32::from(c.arch), 5);
                w.bytes(b":UNDI:");
                w.digits(u32::from(c.undi_major), 3);
                w.digits(u32::from(c.undi_minor), 3);
            }
            Self::PxeServer => w.bytes(PXE_CLIENT),
            Self::Other(d) => w.bytes(d),
        }
    }
}

/// `n` ASCII digits as a number, and what follows.
fn split_digits(s: &[u8], n: usize) -> Option<(u32, &[u8])> {
    let digits = s.get(..n)?;
    let v = digits.iter().try_fold(0u32, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })?;
    Some((v, s.get(n..)?))
}

/// Client network interface identifier (option 94, RFC 4578).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UndiVersion {
    /// Interface type (1 = UNDI).
    pub kind: u8,
    /// UNDI major version.
    pub major: u8,
    /// UNDI minor version.
    pub minor: u8,
}

/// Client machine identifier (option 97, RFC 4578).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientUuid {
    /// Identifier type (0 = a 16-byte UUID/GUID).
    pub kind: u8,
    /// The identifier, as sent.
    pub uuid: [u8; 16],
}

/// One entry of the PXE boot servers sub-option (8).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BootServer {
    /// Boot server type (0 = PXE bootstrap server, 0x8000+ vendor).
    pub server_type: u16,
    /// The servers' addresses (at most 255).
    pub addrs: Vec<Ipv4Addr>,
}

/// One entry of the PXE boot menu sub-option (9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MenuItem<'a> {
    /// Boot server type this item selects.
    pub server_type: u16,
    /// The text shown (at most 255 bytes).
    pub description: &'a [u8],
}

/// A PXE vendor sub-option (inside option 43).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PxeOption<'a> {
    /// 0: pad.
    Pad,
    /// 6: discovery control bits (bit 3: download the boot file without a
    /// prompt or menu; bits 0–2 restrict discovery).
    DiscoveryControl(u8),
    /// 8: boot servers by type.
    BootServers(Vec<BootServer>),
    /// 9: boot menu.
    BootMenu(Vec<MenuItem<'a>>),
    /// 10: menu prompt.
    MenuPrompt {
        /// Seconds to wait (0 boots the first item, 255 waits forever).
        timeout: u8,
        /// The prompt text.
        prompt: &'a [u8],
    },
    /// 71: boot item (what a 4011 request asks for, and what its ACK names).
    BootItem {
        /// Boot server type.
        server_type: u16,
        /// Layer (bit 15 asks for credentials).
        layer: u16,
    },
    /// Any other sub-option, as sent (never one of the codes above).
    Other {
        /// The sub-option code.
        code: u8,
        /// Its data.
        data: &'a [u8],
    },
}

/// The PXE sub-options of an option 43.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PxeOptions<'a> {
    /// Sub-options in wire order, pads included.
    pub options: Vec<PxeOption<'a>>,
    /// Whether the list ends with an End sub-option (PXE 2.1 requires it;
    /// nothing may follow it).
    pub end: bool,
}

impl<'a> PxeOptions<'a> {
    /// The first boot item (71), if any.
    pub fn boot_item(&self) -> Option<(u16, u16)> {
        self.options.iter().find_map(|o| match o {
            PxeOption::BootItem { server_type, layer } => Some((*server_type, *layer)),
            _ => None,
        })
    }

    /// The first boot menu (9), if any.
    pub fn boot_menu(&self) -> Option<&[MenuItem<'a>]> {
        self.options.iter().find_map(|o| match o {
            PxeOption::BootMenu(m) => Some(&m[..]),
            _ => None,
        })
    }

    /// The first discovery control (6), if any.
    pub fn discovery_control(&self) -> Option<u8> {
        self.options.iter().find_map(|o| match o {
            PxeOption::DiscoveryControl(c) => Some(*c),
            _ => None,
        })
    }

    /// Parses the data of an option 43; the error offsets are relative to
    /// `base`, the offset of `data` in the packet.
    fn parse(data: &'a [u8], base: usize) -> Result<Self, DhcpError> {
        let mut out = PxeOptions::default();
        let mut i = 0;
        while let Some(&c) = data.get(i) {
            let at = base + i;
            let bad = DhcpError::BadPxeOption {
                code: c,
                offset: at,
            };
            match c {
                pxe_code::PAD => {
                    out.options.push(PxeOption::Pad);
                    i += 1;
                    continue;
                }
                pxe_code::END => {
                    if i + 1 != data.len() {
                        return Err(bad);
                    }
                    out.end = true;
                    break;
                }
                _ => {}
            }
            let len = usize::from(*data.get(i + 1).ok_or(bad)?);
            let d = data.get(i + 2..i + 2 + len).ok_or(bad)?;
            out.options.push(PxeOption::parse(c, d).ok_or(bad)?);
            i += 2 + len;
        }
        Ok(out)
    }

    fn data_len(&self) -> usize {
        self.options.iter().map(PxeOption::wire_len).sum::<usize>() + usize::from(self.end)
    }

    fn check(&self) -> Result<(), EmitError> {
        self.options.iter().try_for_each(PxeOption::check)
    }

    fn write(&self, w: &mut Writer<'_>) {
        for o in &self.options {
            o.write(w);
        }
        if self.end {
            w.u8(pxe_code::END);
        }
    }
}

impl<'a> PxeOption<'a> {
    /// Types one sub-option; `None` if its data does not fit its type.
    fn parse(code: u8, d: &'a [u8]) -> Option<Self> {
        Some(match code {
            pxe_code::DISCOVERY_CONTROL => match d {
                [c] => Self::DiscoveryControl(*c),
                _ => return None,
            },
            pxe_code::BOOT_SERVERS => {
                let mut servers = Vec::new();
                let mut rest = d;
                while let [t0, t1, n, tail @ ..] = rest {
                    let n = usize::from(*n);
                    let addrs = tail.get(..4 * n)?;
                    servers.push(BootServer {
                        server_type: u16::from_be_bytes([*t0, *t1]),
                        addrs: addrs.chunks_exact(4).map(ipv4).collect(),
                    });
                    rest = tail.get(4 * n..)?;
                }
                if !rest.is_empty() || servers.is_empty() {
                    return None;
                }
                Self::BootServers(servers)
            }
            pxe_code::BOOT_MENU => {
                let mut items = Vec::new();
                let mut rest = d;
                while let [t0, t1, n, tail @ ..] = rest {
                    let n = usize::from(*n);
                    items.push(MenuItem {
                        server_type: u16::from_be_bytes([*t0, *t1]),
                        description: tail.get(..n)?,
                    });
                    rest = tail.get(n..)?;
                }
                if !rest.is_empty() || items.is_empty() {
                    return None;
                }
                Self::BootMenu(items)
            }
            pxe_code::MENU_PROMPT => match d {
                [timeout, prompt @ ..] => Self::MenuPrompt {
                    timeout: *timeout,
                    prompt,
                },
                [] => return None,
            },
            pxe_code::BOOT_ITEM => match d {
                [a, b, c, e] => Self::BootItem {
                    server_type: u16::from_be_bytes([*a, *b]),
                    layer: u16::from_be_bytes([*c, *e]),
                },
                _ => return None,
            },
            _ => Self::Other { code, data: d },
        })
    }

    fn data_len(&self) -> usize {
        match self {
            Self::Pad => 0,
            Self::DiscoveryControl(_) => 1,
            Self::BootServers(s) => s.iter().map(|s| 3 + 4 * s.addrs.len()).sum(),
            Self::BootMenu(m) => m.iter().map(|m| 3 + m.description.len()).sum(),
            Self::MenuPrompt { prompt, .. } => 1 + prompt.len(),
            Self::BootItem { .. } => 4,
            Self::Other { data, .. } => data.len(),
        }
    }

    fn wire_len(&self) -> usize {
        match self {
            Self::Pad => 1,
            o => 2 + o.data_len(),
        }
    }

    fn check(&self) -> Result<(), EmitError> {
        let ok = match self {
            Self::BootServers(s) => !s.is_empty() && s.iter().all(|s| s.addrs.len() <= 255),
            Self::BootMenu(m) => !m.is_empty() && m.iter().all(|m| m.description.len() <= 255),
            Self::Other { code, .. } => !pxe_code::TYPED.contains(code) && *code != pxe_code::END,
            _ => true,
        };
        if ok && self.data_len() <= 255 {
            Ok(())
        } else {
            Err(EmitError::Unencodable("PXE sub-option"))
        }
    }

    fn code(&self) -> u8 {
        match self {
            Self::Pad => pxe_code::PAD,
            Self::DiscoveryControl(_) => pxe_code::DISCOVERY_CONTROL,
            Self::BootServers(_) => pxe_code::BOOT_SERVERS,
            Self::BootMenu(_) => pxe_code::BOOT_MENU,
            Self::MenuPrompt { .. } => pxe_code::MENU_PROMPT,
            Self::BootItem { .. } => pxe_code::BOOT_ITEM,
            Self::Other { code, .. } => *code,
        }
    }

    fn write(&self, w: &mut Writer<'_>) {
        w.u8(self.code());
        if let Self::Pad = self {
            return;
        }
        w.len8(self.data_len());
        match self {
            Self::Pad => {}
            Self::DiscoveryControl(c) => w.u8(*c),
            Self::BootServers(servers) => {
                for s in servers {
                    w.u16(s.server_type);
                    w.len8(s.addrs.len());
                    for a in &s.addrs {
                        w.bytes(&a.octets());
                    }
                }
            }
            Self::BootMenu(items) => {
                for m in items {
                    w.u16(m.server_type);
                    w.len8(m.description.len());
                    w.bytes(m.description);
                }
            }
            Self::MenuPrompt { timeout, prompt } => {
                w.u8(*timeout);
                w.bytes(prompt);
            }
            Self::BootItem { server_type, layer } => {
                w.u16(*server_type);
                w.u16(*layer);
            }
            Self::Other { data, .. } => w.bytes(data),
        }
    }
}

/// A DHCP option, typed where this module knows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DhcpOption<'a> {
    /// 0: pad (one byte).
    Pad,
    /// 43 in a PXE message: PXE vendor sub-options.
    PxeVendor(PxeOptions<'a>),
    /// 52: option overload.
    Overload(Overload),
    /// 53: DHCP message type.
    MessageType(MessageType),
    /// 54: server identifier.
    ServerIdentifier(Ipv4Addr),
    /// 60: vendor class identifier.
    VendorClass(VendorClass<'a>),
    /// 66: TFTP server name, as sent (some servers append a NUL).
    TftpServerName(&'a [u8]),
    /// 67: bootfile name, as sent (some servers append a NUL).
    BootfileName(&'a [u8]),
    /// 77: user class, raw (iPXE sends the bare string `iPXE`, not RFC 3004 form).
    UserClass(&'a [u8]),
    /// 93: client system architectures (RFC 4578), at least one.
    ClientArch(Vec<u16>),
    /// 94: UNDI version.
    UndiVersion(UndiVersion),
    /// 97: client UUID/GUID.
    ClientUuid(ClientUuid),
    /// Any other option (and 43 outside PXE messages), as sent.
    Other {
        /// The option code (not 0, 255, nor a typed code other than 43).
        code: u8,
        /// Its data (at most 255 bytes).
        data: &'a [u8],
    },
}

fn ipv4(b: &[u8]) -> Ipv4Addr {
    match b {
        [a, b, c, d] => Ipv4Addr::new(*a, *b, *c, *d),
        _ => Ipv4Addr::UNSPECIFIED,
    }
}

/// One option as cut from an area, before typing.
#[derive(Clone, Copy)]
enum RawOption<'a> {
    Pad,
    Tlv {
        code: u8,
        /// Offset of the code byte in the packet.
        at: usize,
        data: &'a [u8],
    },
}

impl<'a> DhcpOption<'a> {
    /// Types one TLV; `pxe` says whether option 43 holds PXE sub-options.
    fn parse(code: u8, at: usize, data: &'a [u8], pxe: bool) -> Result<Self, DhcpError> {
        // At most 255: the length came from a length byte.
        let len = u8::try_from(data.len()).unwrap_or(u8::MAX);
        let bad_len = DhcpError::BadLength {
            code,
            offset: at,
            len,
        };
        let bad_value = DhcpError::BadValue { code, offset: at };
        Ok(match code {
            code::VENDOR_SPECIFIC if pxe => Self::PxeVendor(PxeOptions::parse(data, at + 2)?),
            code::OVERLOAD => match data {
                [v] => Self::Overload(Overload::from_u8(*v).ok_or(bad_value)?),
                _ => return Err(bad_len),
            },
            code::MESSAGE_TYPE => match data {
                [v] => Self::MessageType(MessageType::from_u8(*v).ok_or(bad_value)?),
                _ => return Err(bad_len),
            },
            code::SERVER_IDENTIFIER => match data {
                [_, _, _, _] => Self::ServerIdentifier(ipv4(data)),
                _ => return Err(bad_len),
            },
            code::VENDOR_CLASS => {
                if data.is_empty() {
                    return Err(bad_len);
                }
                Self::VendorClass(
                    VendorClass::parse(data).ok_or(DhcpError::BadVendorClass { offset: at })?,
                )
            }
            code::TFTP_SERVER_NAME | code::BOOTFILE_NAME | code::USER_CLASS => {
                if data.is_empty() {
                    return Err(bad_len);
                }
                match code {
                    code::TFTP_SERVER_NAME => Self::TftpServerName(data),
                    code::BOOTFILE_NAME => Self::BootfileName(data),
                    _ => Self::UserClass(data),
                }
            }
            code::CLIENT_ARCH => {
                if data.is_empty() || !data.len().is_multiple_of(2) {
                    return Err(bad_len);
                }
                Self::ClientArch(
                    data.chunks_exact(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .collect(),
                )
            }
            code::UNDI_VERSION => match data {
                [kind, major, minor] => Self::UndiVersion(UndiVersion {
                    kind: *kind,
                    major: *major,
                    minor: *minor,
                }),
                _ => return Err(bad_len),
            },
            code::CLIENT_UUID => match data {
                [kind, rest @ ..] => Self::ClientUuid(ClientUuid {
                    kind: *kind,
                    uuid: rest.try_into().map_err(|_| bad_len)?,
                }),
                [] => return Err(bad_len),
            },
            _ => Self::Other { code, data },
        })
    }

    /// The option code (0 for [`DhcpOption::Pad`]).
    pub fn code(&self) -> u8 {
        match self {
            Self::Pad => code::PAD,
            Self::PxeVendor(_) => code::VENDOR_SPECIFIC,
            Self::Overload(_) => code::OVERLOAD,
            Self::MessageType(_) => code::MESSAGE_TYPE,
            Self::ServerIdentifier(_) => code::SERVER_IDENTIFIER,
            Self::VendorClass(_) => code::VENDOR_CLASS,
            Self::TftpServerName(_) => code::TFTP_SERVER_NAME,
            Self::BootfileName(_) => code::BOOTFILE_NAME,
            Self::UserClass(_) => code::USER_CLASS,
            Self::ClientArch(_) => code::CLIENT_ARCH,
            Self::UndiVersion(_) => code::UNDI_VERSION,
            Self::ClientUuid(_) => code::CLIENT_UUID,
            Self::Other { code, .. } => *code,
        }
    }

    fn data_len(&self) -> usize {
        match self {
            Self::Pad => 0,
            Self::PxeVendor(p) => p.data_len(),
            Self::Overload(_) | Self::MessageType(_) => 1,
            Self::ServerIdentifier(_) => 4,
            Self::VendorClass(v) => v.data_len(),
            Self::TftpServerName(d) | Self::BootfileName(d) | Self::UserClass(d) => d.len(),
            Self::ClientArch(a) => 2 * a.len(),
            Self::UndiVersion(_) => 3,
            Self::ClientUuid(_) => 17,
            Self::Other { data, .. } => data.len(),
        }
    }

    fn wire_len(&self) -> usize {
        match self {
            Self::Pad => 1,
            o => 2 + o.data_len(),
        }
    }

    /// Whether the option parses back as itself; `pxe` as in [`Self::parse`].
    fn check(&self, pxe: bool) -> Result<(), EmitError> {
        let ok = match self {
            Self::PxeVendor(p) => {
                p.check()?;
                pxe
            }
            Self::MessageType(t) => t.to_u8() != 0,
            Self::VendorClass(VendorClass::Other(d)) => {
                matches!(VendorClass::parse(d), Some(VendorClass::Other(_)))
            }
            Self::TftpServerName(d) | Self::BootfileName(d) | Self::UserClass(d) => !d.is_empty(),
            Self::ClientArch(a) => !a.is_empty(),
            Self::Other { code, .. } => {
                *code != code::END
                    && (!code::TYPED.contains(code) || (*code == code::VENDOR_SPECIFIC && !pxe))
            }
            _ => true,
        };
        if ok && self.data_len() <= 255 {
            Ok(())
        } else {
            Err(EmitError::Unencodable("DHCP option"))
        }
    }

    fn write(&self, w: &mut Writer<'_>) {
        w.u8(self.code());
        if let Self::Pad = self {
            return;
        }
        w.len8(self.data_len());
        match self {
            Self::Pad => {}
            Self::PxeVendor(p) => p.write(w),
            Self::Overload(o) => w.u8(o.to_u8()),
            Self::MessageType(t) => w.u8(t.to_u8()),
            Self::ServerIdentifier(a) => w.bytes(&a.octets()),
            Self::VendorClass(v) => v.write(w),
            Self::TftpServerName(d) | Self::BootfileName(d) | Self::UserClass(d) => w.bytes(d),
            Self::ClientArch(a) => a.iter().for_each(|a| w.u16(*a)),
            Self::UndiVersion(u) => {
                w.u8(u.kind);
                w.u8(u.major);
                w.u8(u.minor);
            }
            Self::ClientUuid(u) => {
                w.u8(u.kind);
                w.bytes(&u.uuid);
            }
            Self::Other { data, .. } => w.bytes(data),
        }
    }
}

/// The `sname` or `file` field: text, or options when overloaded (option 52).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Area<'a> {
    /// Text (a server name or boot file name, NUL-terminated on the wire),
    /// kept up to the field's last non-zero byte.
    Text(&'a [u8]),
    /// Options, in wire order, ended by an End option; the rest of the field
    /// is zero.
    Options(Vec<DhcpOption<'a>>),
}

impl<'a> Area<'a> {
    /// The text up to its first NUL; `None` if empty or if the field holds options.
    pub fn text(&self) -> Option<&'a [u8]> {
        match self {
            Area::Text(t) => {
                let t = t.split(|b| *b == 0).next().unwrap_or(&[]);
                (!t.is_empty()).then_some(t)
            }
            Area::Options(_) => None,
        }
    }

    fn options(&self) -> &[DhcpOption<'a>] {
        match self {
            Area::Text(_) => &[],
            Area::Options(o) => o,
        }
    }
}

/// A DHCP/BOOTP message (also a PXE boot server request or ACK on UDP 4011).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Repr<'a> {
    /// BOOTREQUEST or BOOTREPLY.
    pub op: Op,
    /// Hardware address type (1 = Ethernet).
    pub htype: u8,
    /// Hardware address length (6 for Ethernet).
    pub hlen: u8,
    /// Relay hops.
    pub hops: u8,
    /// Transaction ID, chosen by the client.
    pub xid: u32,
    /// Seconds since the client began.
    pub secs: u16,
    /// Flags (bit 15: broadcast the reply).
    pub flags: u16,
    /// Client address, if it has one.
    pub ciaddr: Ipv4Addr,
    /// "Your" address: what the server gives the client.
    pub yiaddr: Ipv4Addr,
    /// Next server (the TFTP server, for PXE).
    pub siaddr: Ipv4Addr,
    /// Relay agent address.
    pub giaddr: Ipv4Addr,
    /// Client hardware address, padded to 16 bytes as on the wire.
    pub chaddr: [u8; 16],
    /// Server host name field (64 bytes).
    pub sname: Area<'a>,
    /// Boot file name field (128 bytes).
    pub file: Area<'a>,
    /// The options after the magic cookie, in wire order, pads included; the
    /// End option is implied.
    pub options: Vec<DhcpOption<'a>>,
    /// Zero bytes after the End option (BOOTP pads messages to 300 bytes).
    pub padding: usize,
}

impl<'a> Repr<'a> {
    /// Parses one message (a whole UDP payload, on port 67, 68 or 4011).
    pub fn parse(packet: &'a [u8]) -> Result<Self, DhcpError> {
        let Some(h) = packet.first_chunk::<OPTIONS_OFFSET>() else {
            return Err(DhcpError::Truncated { len: packet.len() });
        };
        let op = match h[field::OP] {
            1 => Op::Request,
            2 => Op::Reply,
            op => return Err(DhcpError::BadOp { op }),
        };
        if h[field::COOKIE] != MAGIC_COOKIE {
            return Err(DhcpError::BadCookie);
        }
        let (main, padding) = cut_area(packet, OPTIONS_OFFSET, packet.len())?;

        // Option 52 must be in the main area, once; it says where else to look.
        let mut overload = None;
        for o in &main {
            if let RawOption::Tlv {
                code: code::OVERLOAD,
                at,
                data,
            } = *o
            {
                if overload.is_some() {
                    return Err(DhcpError::MisplacedOverload { offset: at });
                }
                overload = Some(match DhcpOption::parse(code::OVERLOAD, at, data, false)? {
                    DhcpOption::Overload(v) => v,
                    _ => {
                        return Err(DhcpError::BadValue {
                            code: 52,
                            offset: at,
                        })
                    }
                });
            }
        }
        let overloaded = |on: bool, range: core::ops::Range<usize>| -> Result<_, DhcpError> {
            if !on {
                return Ok(None);
            }
            let (raw, _) = cut_area(packet, range.start, range.end)?;
            for o in &raw {
                if let RawOption::Tlv {
                    code: code::OVERLOAD,
                    at,
                    ..
                } = *o
                {
                    return Err(DhcpError::MisplacedOverload { offset: at });
                }
            }
            Ok(Some(raw))
        };
        let file_raw = overloaded(overload.is_some_and(Overload::file), field::FILE)?;
        let sname_raw = overloaded(overload.is_some_and(Overload::sname), field::SNAME)?;

        // Option 43 holds PXE sub-options when any area names a PXE vendor class.
        let pxe = [Some(&main), file_raw.as_ref(), sname_raw.as_ref()]
            .into_iter()
            .flatten()
            .flatten()
            .any(|o| match *o {
                RawOption::Tlv {
                    code: code::VENDOR_CLASS,
                    data,
                    ..
                } => data == PXE_CLIENT || data.starts_with(b"PXEClient:"),
                _ => false,
            });
        let ty = |raw: Vec<RawOption<'a>>| -> Result<Vec<DhcpOption<'a>>, DhcpError> {
            raw.into_iter()
                .map(|o| match o {
                    RawOption::Pad => Ok(DhcpOption::Pad),
                    RawOption::Tlv { code, at, data } => DhcpOption::parse(code, at, data, pxe),
                })
                .collect()
        };
        let area = |raw: Option<Vec<RawOption<'a>>>, range: core::ops::Range<usize>| {
            Ok::<_, DhcpError>(match raw {
                Some(raw) => Area::Options(ty(raw)?),
                None => Area::Text(trim_zeros(packet.get(range).unwrap_or(&[]))),
            })
        };
        let file = area(file_raw, field::FILE)?;
        let sname = area(sname_raw, field::SNAME)?;
        let be32 = |r: core::ops::Range<usize>| match h.get(r) {
            Some(&[a, b, c, d]) => [a, b, c, d],
            _ => [0; 4],
        };
        Ok(Repr {
            op,
            htype: h[field::HTYPE],
            hlen: h[field::HLEN],
            hops: h[field::HOPS],
            xid: u32::from_be_bytes(be32(field::XID)),
            secs: u16::from_be_bytes([h[field::SECS.start], h[field::SECS.start + 1]]),
            flags: u16::from_be_bytes([h[field::FLAGS.start], h[field::FLAGS.start + 1]]),
            ciaddr: be32(field::CIADDR).into(),
            yiaddr: be32(field::YIADDR).into(),
            siaddr: be32(field::SIADDR).into(),
            giaddr: be32(field::GIADDR).into(),
            chaddr: match h.get(field::CHADDR).map(<[u8; 16]>::try_from) {
                Some(Ok(c)) => c,
                _ => [0; 16],
            },
            sname,
            file,
            options: ty(main)?,
            padding,
        })
    }

    /// Length of the message on the wire.
    pub fn buffer_len(&self) -> usize {
        OPTIONS_OFFSET + options_len(&self.options) + 1 + self.padding
    }

    /// The overload option's value, if any.
    pub fn overload(&self) -> Option<Overload> {
        self.options.iter().find_map(|o| match o {
            DhcpOption::Overload(v) => Some(*v),
            _ => None,
        })
    }

    /// Every option in RFC 2131 order: the options field, then `file`, then
    /// `sname` when they are overloaded.
    pub fn all_options(&self) -> impl Iterator<Item = &DhcpOption<'a>> {
        self.options
            .iter()
            .chain(self.file.options())
            .chain(self.sname.options())
    }

    fn find<'s, T>(&'s self, f: impl FnMut(&'s DhcpOption<'a>) -> Option<T>) -> Option<T> {
        self.all_options().find_map(f)
    }

    /// The DHCP message type (53); `None` for plain BOOTP.
    pub fn message_type(&self) -> Option<MessageType> {
        self.find(|o| match o {
            DhcpOption::MessageType(t) => Some(*t),
            _ => None,
        })
    }

    /// The server identifier (54).
    pub fn server_identifier(&self) -> Option<Ipv4Addr> {
        self.find(|o| match o {
            DhcpOption::ServerIdentifier(a) => Some(*a),
            _ => None,
        })
    }

    /// The vendor class (60).
    pub fn vendor_class(&self) -> Option<VendorClass<'a>> {
        self.find(|o| match o {
            DhcpOption::VendorClass(v) => Some(*v),
            _ => None,
        })
    }

    /// Whether the message is PXE: an option 60 names a PXE vendor class (this
    /// is what makes option 43 PXE sub-options).
    pub fn is_pxe(&self) -> bool {
        self.all_options()
            .any(|o| matches!(o, DhcpOption::VendorClass(v) if v.is_pxe()))
    }

    /// The PXE client's class, from `PXEClient:Arch:xxxxx:UNDI:yyyzzz`.
    pub fn pxe_client(&self) -> Option<PxeClientClass> {
        match self.vendor_class()? {
            VendorClass::PxeClient(c) => Some(c),
            _ => None,
        }
    }

    /// The user class (77), raw.
    pub fn user_class(&self) -> Option<&'a [u8]> {
        self.find(|o| match o {
            DhcpOption::UserClass(u) => Some(*u),
            _ => None,
        })
    }

    /// The client's architectures (93).
    pub fn client_arch(&self) -> Option<&[u16]> {
        self.find(|o| match o {
            DhcpOption::ClientArch(a) => Some(&a[..]),
            _ => None,
        })
    }

    /// The UNDI version (94).
    pub fn undi_version(&self) -> Option<UndiVersion> {
        self.find(|o| match o {
            DhcpOption::UndiVersion(u) => Some(*u),
            _ => None,
        })
    }

    /// The client UUID/GUID (97).
    pub fn client_uuid(&self) -> Option<ClientUuid> {
        self.find(|o| match o {
            DhcpOption::ClientUuid(u) => Some(*u),
            _ => None,
        })
    }

    /// The PXE sub-options (43), in a PXE message.
    pub fn pxe_options(&self) -> Option<&PxeOptions<'a>> {
        self.find(|o| match o {
            DhcpOption::PxeVendor(p) => Some(p),
            _ => None,
        })
    }

    /// The TFTP server name: option 66 if present, else the `sname` text; up to
    /// the first NUL.
    pub fn tftp_server_name(&self) -> Option<&'a [u8]> {
        self.find(|o| match o {
            DhcpOption::TftpServerName(n) => Some(until_nul(n)),
            _ => None,
        })
        .or_else(|| self.sname.text())
    }

    /// The boot file name: option 67 if present, else the `file` text; up to
    /// the first NUL.
    pub fn bootfile(&self) -> Option<&'a [u8]> {
        self.find(|o| match o {
            DhcpOption::BootfileName(n) => Some(until_nul(n)),
            _ => None,
        })
        .or_else(|| self.file.text())
    }

    /// Checks that the message can be emitted so that it parses back equal.
    pub fn check(&self) -> Result<(), EmitError> {
        let unencodable = |what| Err(EmitError::Unencodable(what));
        let overload = self.overload();
        if self
            .options
            .iter()
            .filter(|o| matches!(o, DhcpOption::Overload(_)))
            .count()
            > 1
        {
            return unencodable("two overload options");
        }
        let pxe = self.is_pxe();
        for (area, on, len) in [
            (
                &self.file,
                overload.is_some_and(Overload::file),
                field::FILE.len(),
            ),
            (
                &self.sname,
                overload.is_some_and(Overload::sname),
                field::SNAME.len(),
            ),
        ] {
            match area {
                Area::Text(t) if !on => {
                    if t.len() > len || t.last() == Some(&0) {
                        return unencodable("sname/file text");
                    }
                }
                Area::Options(o) if on => {
                    if options_len(o) + 1 > len {
                        return unencodable("sname/file options overflow");
                    }
                    if o.iter().any(|o| matches!(o, DhcpOption::Overload(_))) {
                        return unencodable("overload inside sname/file");
                    }
                }
                _ => return unencodable("sname/file kind does not match option 52"),
            }
        }
        self.all_options().try_for_each(|o| o.check(pxe))
    }

    /// Writes the message to the start of `buf` and returns its length
    /// ([`Repr::buffer_len`]). Fails, writing nothing, if it would not parse
    /// back equal or `buf` is too short.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, EmitError> {
        self.check()?;
        let needed = self.buffer_len();
        let Some(buf) = buf.get_mut(..needed) else {
            return Err(EmitError::BufferTooSmall {
                needed,
                got: buf.len(),
            });
        };
        buf.fill(0);
        let mut w = Writer { buf, at: 0 };
        w.u8(match self.op {
            Op::Request => 1,
            Op::Reply => 2,
        });
        w.u8(self.htype);
        w.u8(self.hlen);
        w.u8(self.hops);
        w.bytes(&self.xid.to_be_bytes());
        w.u16(self.secs);
        w.u16(self.flags);
        for a in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            w.bytes(&a.octets());
        }
        w.bytes(&self.chaddr);
        for (area, range) in [(&self.sname, field::SNAME), (&self.file, field::FILE)] {
            w.at = range.start;
            match area {
                Area::Text(t) => w.bytes(t),
                Area::Options(o) => {
                    o.iter().for_each(|o| o.write(&mut w));
                    w.u8(code::END);
                }
            }
        }
        w.at = field::COOKIE.start;
        w.bytes(&MAGIC_COOKIE);
        self.options.iter().for_each(|o| o.write(&mut w));
        w.u8(code::END);
        // The padding is already zero.
        Ok(needed)
    }

    /// Emits the message into a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, EmitError> {
        let mut v = vec![0; self.buffer_len()];
        self.emit(&mut v)?;
        Ok(v)
    }
}

fn options_len(o: &[DhcpOption<'_>]) -> usize {
    o.iter().map(DhcpOption::wire_len).sum()
}

fn until_nul(s: &[u8]) -> &[u8] {
    s.split(|b| *b == 0).next().unwrap_or(&[])
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let end = s.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    s.get(..end).unwrap_or(&[])
}

/// Cuts `packet[start..end]` into options up to End; returns them and the
/// number of (zero) bytes after End.
fn cut_area(
    packet: &[u8],
    start: usize,
    end: usize,
) -> Result<(Vec<RawOption<'_>>, usize), DhcpError> {
    let area = packet.get(start..end).unwrap_or(&[]);
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let at = start + i;
        match area.get(i) {
            None => return Err(DhcpError::MissingEnd { offset: end }),
            Some(&code::PAD) => {
                out.push(RawOption::Pad);
                i += 1;
            }
            Some(&code::END) => {
                let rest = area.get(i + 1..).unwrap_or(&[]);
                if let Some(p) = rest.iter().position(|b| *b != 0) {
                    return Err(DhcpError::NonZeroPadding { offset: at + 1 + p });
                }
                return Ok((out, rest.len()));
            }
            Some(&code) => {
                let overrun = DhcpError::OptionOverrun { code, offset: at };
                let len = usize::from(*area.get(i + 1).ok_or(overrun)?);
                let data = area.get(i + 2..i + 2 + len).ok_or(overrun)?;
                out.push(RawOption::Tlv { code, at, data });
                i += 2 + len;
            }
        }
    }
}

/// Writes into a buffer already cut to the message's exact length.
struct Writer<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        // Lengths were checked by `check` and `buffer_len`.
        if let Some(dst) = self.buf.get_mut(self.at..self.at + b.len()) {
            dst.copy_from_slice(b);
        }
        self.at += b.len();
    }
    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    fn len8(&mut self, v: usize) {
        self.u8(u8::try_from(v).unwrap_or(u8::MAX));
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }
    /// `v` as exactly `n` decimal digits (callers keep `v` below 10^n).
    fn digits(&mut self, v: u32, n: u32) {
        for p in (0..n).rev() {
            self.u8(b'0' + ((v / 10u32.pow(p)) % 10) as u8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    mod pcap {
        include!(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/pcap.rs"));
    }

    /// Every datagram of a capture, parsed, each re-emitted byte for byte.
    fn parse_all(pcap: &'static [u8]) -> Vec<(u16, u16, Repr<'static>)> {
        pcap::datagrams(pcap)
            .into_iter()
            .map(|d| {
                let r =
                    Repr::parse(d.payload).unwrap_or_else(|e| panic!("{e}: {:02x?}", d.payload));
                assert_eq!(r.buffer_len(), d.payload.len());
                assert_eq!(r.to_vec().unwrap(), d.payload, "re-emit of {r:#?}");
                (d.src_port, d.dst_port, r)
            })
            .collect()
    }

    const CLIENT_MAC: [u8; 6] = [2, 0x77, 0, 0, 0, 2];
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

    fn uuid() -> ClientUuid {
        let mut uuid = [0; 16];
        uuid.iter_mut().zip(0x10..).for_each(|(u, v)| *u = v);
        ClientUuid { kind: 0, uuid }
    }

    /// The PXE client side of every capture: what `capture.sh` made it send.
    fn check_pxe_client(r: &Repr<'_>, arch: u16, undi: (u8, u8)) {
        assert_eq!(r.op, Op::Request);
        assert_eq!((r.htype, r.hlen), (1, 6));
        assert_eq!(&r.chaddr[..6], CLIENT_MAC);
        let c = r.pxe_client().expect("PXEClient:Arch:...");
        assert_eq!((c.arch, c.undi_major, c.undi_minor), (arch, undi.0, undi.1));
        assert_eq!(r.client_arch(), Some(&[arch][..]));
    }

    #[test]
    fn dnsmasq_dhcp_with_pxe_options() {
        let p = parse_all(include_bytes!("../testdata/dhcp-pxe.pcap"));
        let kinds: Vec<_> = p
            .iter()
            .map(|(_, _, r)| r.message_type().unwrap())
            .collect();
        use MessageType::*;
        assert_eq!(kinds, [Discover, Offer, Request, Ack]);
        for (src, dst, r) in &p {
            let from_client = r.op == Op::Request;
            assert_eq!((*src, *dst), if from_client { (68, 67) } else { (67, 68) });
            assert_eq!(r.xid, p[0].2.xid);
            if from_client {
                // busybox udhcpc with -V, -x 93/94/97/77.
                check_pxe_client(r, 0, (2, 1));
                assert_eq!(
                    r.undi_version(),
                    Some(UndiVersion {
                        kind: 1,
                        major: 2,
                        minor: 1
                    })
                );
                assert_eq!(r.client_uuid(), Some(uuid()));
                assert_eq!(r.user_class(), Some(&b"iPXE"[..]));
                assert_eq!(r.pxe_options(), None);
                continue;
            }
            assert_eq!(r.server_identifier(), Some(SERVER));
            assert_eq!(r.siaddr, SERVER);
            assert_eq!(r.yiaddr.octets()[..3], [10, 77, 0]);
            assert_eq!(r.vendor_class(), Some(VendorClass::PxeServer));
            // dnsmasq sends sname/file as options 66/67 (with a NUL) when asked.
            assert_eq!(r.tftp_server_name(), Some(&b"bootsrv"[..]));
            assert_eq!(r.bootfile(), Some(&b"pxelinux.0"[..]));
            assert!(r
                .options
                .contains(&DhcpOption::BootfileName(b"pxelinux.0\0")));
            assert_eq!(r.client_uuid(), Some(uuid()));
        }
        // The OFFER and the ACK carry the PXE menu.
        assert_eq!(p[1].2.pxe_options(), p[3].2.pxe_options());
        let pxe = p[1].2.pxe_options().expect("option 43 in the OFFER");
        assert!(pxe.end);
        assert_eq!(pxe.discovery_control(), Some(3));
        assert_eq!(
            pxe.options[1],
            PxeOption::BootServers(vec![BootServer {
                server_type: 0x8000,
                addrs: vec![SERVER]
            }])
        );
        assert_eq!(
            pxe.boot_menu().unwrap(),
            [
                MenuItem {
                    server_type: 0x8000,
                    description: b"Boot from network"
                },
                MenuItem {
                    server_type: 0,
                    description: b"Boot from local disk"
                },
            ]
        );
        assert_eq!(
            pxe.options[3],
            PxeOption::MenuPrompt {
                timeout: 5,
                prompt: b"Press F8 for menu"
            }
        );
    }

    #[test]
    fn dnsmasq_proxy_dhcp_and_boot_server_discovery_on_4011() {
        let p = parse_all(include_bytes!("../testdata/dhcp-proxy-4011.pcap"));
        let ports: Vec<_> = p.iter().map(|(s, d, _)| (*s, *d)).collect();
        assert_eq!(ports, [(68, 67), (67, 68), (68, PXE_PORT), (PXE_PORT, 68)]);
        for (_, _, r) in &p {
            assert!(r.is_pxe());
            if r.op == Op::Request {
                check_pxe_client(r, 0, (2, 1));
                assert_eq!(r.client_uuid(), Some(uuid()));
            } else {
                assert_eq!(r.server_identifier(), Some(SERVER));
            }
        }
        // proxyDHCP: no address, only boot information.
        let offer = &p[1].2;
        assert_eq!(offer.message_type(), Some(MessageType::Offer));
        assert_eq!(offer.yiaddr, Ipv4Addr::UNSPECIFIED);
        let menu = offer.pxe_options().unwrap().boot_menu().unwrap();
        assert_eq!(menu.len(), 2, "only the x86PC entries for an arch-0 client");
        // The 4011 request names the first menu item; the ACK names the NBP.
        let req = &p[2].2;
        assert_eq!(req.message_type(), Some(MessageType::Request));
        assert_eq!(req.ciaddr, Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(
            req.pxe_options().unwrap().boot_item(),
            Some((menu[0].server_type, 0))
        );
        let ack = &p[3].2;
        assert_eq!(ack.message_type(), Some(MessageType::Ack));
        assert_eq!(ack.bootfile(), Some(&b"pxelinux.0"[..]));
        assert_eq!(ack.file.text(), Some(&b"pxelinux.0"[..]));
        assert_eq!(ack.siaddr, SERVER);
        assert_eq!(
            ack.pxe_options().unwrap().boot_item(),
            Some((menu[0].server_type, 0))
        );
    }

    #[test]
    fn dnsmasq_option_overload() {
        let p = parse_all(include_bytes!("../testdata/dhcp-overload.pcap"));
        check_pxe_client(&p[0].2, 7, (3, 16));
        for (_, _, reply) in p.iter().filter(|(_, _, r)| r.op == Op::Reply) {
            assert_eq!(reply.overload(), Some(Overload::Both));
            // dnsmasq marks both fields overloaded even when nothing spilled there.
            assert_eq!(reply.file, Area::Options(vec![]));
            assert_eq!(reply.sname, Area::Options(vec![]));
            assert_eq!(reply.bootfile(), None);
            let big: Vec<_> = reply
                .all_options()
                .filter(|o| {
                    matches!(
                        o,
                        DhcpOption::Other {
                            code: 224..=227,
                            ..
                        }
                    )
                })
                .collect();
            assert!(!big.is_empty());
        }
    }

    /// A BOOTREQUEST with a zero header, the cookie, then `options`.
    fn packet(options: &[u8]) -> Vec<u8> {
        let mut v = vec![0; HEADER_LEN];
        v[0] = 1;
        v.extend_from_slice(&MAGIC_COOKIE);
        v.extend_from_slice(options);
        v
    }

    #[test]
    fn overloaded_fields_hold_options() {
        let mut v = packet(&[53, 1, 1, 52, 1, 3, 255, 0, 0]);
        // file: a boot file name option; sname: a pad, then the TFTP server name.
        v[108..108 + 9].copy_from_slice(&[67, 6, b'b', b'o', b'o', b't', b'.', b'0', 255]);
        v[44..44 + 7].copy_from_slice(&[0, 66, 3, b's', b'r', b'v', 255]);
        let r = Repr::parse(&v).unwrap();
        assert_eq!(r.padding, 2);
        assert_eq!(r.bootfile(), Some(&b"boot.0"[..]));
        assert_eq!(r.tftp_server_name(), Some(&b"srv"[..]));
        assert_eq!(
            r.sname,
            Area::Options(vec![DhcpOption::Pad, DhcpOption::TftpServerName(b"srv")])
        );
        let codes: Vec<u8> = r.all_options().map(DhcpOption::code).collect();
        assert_eq!(codes, [53, 52, 67, 0, 66], "options, then file, then sname");
        assert_eq!(r.to_vec().unwrap(), v);

        // Without option 52 the same fields are text, kept raw.
        let mut plain = v.clone();
        plain[243..246].copy_from_slice(&[0, 0, 0]);
        let r = Repr::parse(&plain).unwrap();
        assert!(matches!(r.file, Area::Text(t) if t.len() == 9));
        assert_eq!(r.to_vec().unwrap(), plain);
    }

    #[test]
    fn option_43_is_raw_outside_pxe() {
        let v = packet(&[43, 3, 1, 2, 3, 255]);
        let r = Repr::parse(&v).unwrap();
        assert_eq!(
            r.options,
            [DhcpOption::Other {
                code: 43,
                data: &[1, 2, 3]
            }]
        );
        assert_eq!(r.pxe_options(), None);
        // The same bytes in a PXE message are a malformed sub-option list.
        let v = packet(&[
            43, 3, 1, 2, 3, 60, 9, b'P', b'X', b'E', b'C', b'l', b'i', b'e', b'n', b't', 255,
        ]);
        assert_eq!(
            Repr::parse(&v),
            Err(DhcpError::BadPxeOption {
                code: 1,
                offset: 242
            })
        );
    }

    #[test]
    fn malformed_inputs() {
        use DhcpError::*;
        let pxe60 = |s: &[u8]| [&[60, s.len() as u8][..], s].concat();
        let with_file = |file: &[u8], opts: &[u8]| {
            let mut v = packet(opts);
            v[108..108 + file.len()].copy_from_slice(file);
            v
        };
        let mut bad_op = packet(&[255]);
        bad_op[0] = 3;
        let mut bad_cookie = packet(&[255]);
        bad_cookie[239] = 0x62;
        let cases: Vec<(Vec<u8>, DhcpError)> = vec![
            (vec![], Truncated { len: 0 }),
            (packet(&[])[..239].to_vec(), Truncated { len: 239 }),
            (bad_op, BadOp { op: 3 }),
            (bad_cookie, BadCookie),
            (packet(&[]), MissingEnd { offset: 240 }),
            (packet(&[0, 0]), MissingEnd { offset: 242 }),
            (
                packet(&[12]),
                OptionOverrun {
                    code: 12,
                    offset: 240,
                },
            ),
            (
                packet(&[12, 5, b'a', 255]),
                OptionOverrun {
                    code: 12,
                    offset: 240,
                },
            ),
            (packet(&[255, 0, 1]), NonZeroPadding { offset: 242 }),
            (
                packet(&[53, 2, 1, 1, 255]),
                BadLength {
                    code: 53,
                    offset: 240,
                    len: 2,
                },
            ),
            (
                packet(&[53, 1, 0, 255]),
                BadValue {
                    code: 53,
                    offset: 240,
                },
            ),
            (
                packet(&[53, 1, 1, 54, 3, 1, 2, 3, 255]),
                BadLength {
                    code: 54,
                    offset: 243,
                    len: 3,
                },
            ),
            (
                packet(&[52, 1, 4, 255]),
                BadValue {
                    code: 52,
                    offset: 240,
                },
            ),
            (
                packet(&[52, 0, 255]),
                BadLength {
                    code: 52,
                    offset: 240,
                    len: 0,
                },
            ),
            (
                packet(&[52, 1, 1, 52, 1, 1, 255]),
                MisplacedOverload { offset: 243 },
            ),
            (
                with_file(&[52, 1, 1, 255], &[52, 1, 1, 255]),
                MisplacedOverload { offset: 108 },
            ),
            (
                with_file(&[1, 1], &[52, 1, 1, 255]),
                MissingEnd { offset: 236 },
            ),
            (
                with_file(&[255], &[52, 1, 2, 255]),
                MissingEnd { offset: 108 },
            ),
            (
                with_file(&[255, 7], &[52, 1, 1, 255]),
                NonZeroPadding { offset: 109 },
            ),
            (
                packet(&[66, 0, 255]),
                BadLength {
                    code: 66,
                    offset: 240,
                    len: 0,
                },
            ),
            (
                packet(&[67, 0, 255]),
                BadLength {
                    code: 67,
                    offset: 240,
                    len: 0,
                },
            ),
            (
                packet(&[60, 0, 255]),
                BadLength {
                    code: 60,
                    offset: 240,
                    len: 0,
                },
            ),
            (
                packet(&[93, 3, 0, 0, 0, 255]),
                BadLength {
                    code: 93,
                    offset: 240,
                    len: 3,
                },
            ),
            (
                packet(&[93, 0, 255]),
                BadLength {
                    code: 93,
                    offset: 240,
                    len: 0,
                },
            ),
            (
                packet(&[94, 2, 1, 2, 255]),
                BadLength {
                    code: 94,
                    offset: 240,
                    len: 2,
                },
            ),
            (
                packet(&[97, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255]),
                BadLength {
                    code: 97,
                    offset: 240,
                    len: 16,
                },
            ),
            (
                packet(&[&pxe60(b"PXEClient:Arch:0000:UNDI:002001")[..], &[255]].concat()),
                BadVendorClass { offset: 240 },
            ),
            (
                packet(&[&pxe60(b"PXEClient:Arch:99999:UNDI:002001")[..], &[255]].concat()),
                BadVendorClass { offset: 240 },
            ),
            (
                packet(&[&pxe60(b"PXEClient:Arch:00000:UNDI:256001")[..], &[255]].concat()),
                BadVendorClass { offset: 240 },
            ),
            (
                packet(&[&pxe60(b"PXEClient:Arch:00000:UNDI:002001x")[..], &[255]].concat()),
                BadVendorClass { offset: 240 },
            ),
            (
                packet(&[&pxe60(b"PXEClient")[..], &[43, 5, 71, 3, 0, 0, 0, 255]].concat()),
                BadPxeOption {
                    code: 71,
                    offset: 253,
                },
            ),
            (
                packet(&[&pxe60(b"PXEClient")[..], &[43, 3, 10, 0, 255, 255]].concat()),
                BadPxeOption {
                    code: 10,
                    offset: 253,
                },
            ),
            (
                packet(&[&pxe60(b"PXEClient")[..], &[43, 3, 6, 2, 0, 255]].concat()),
                BadPxeOption {
                    code: 6,
                    offset: 253,
                },
            ),
            (
                packet(&[&pxe60(b"PXEClient")[..], &[43, 2, 255, 0, 255]].concat()),
                BadPxeOption {
                    code: 255,
                    offset: 253,
                },
            ),
            (
                packet(&[&pxe60(b"PXEClient")[..], &[43, 1, 9, 255]].concat()),
                BadPxeOption {
                    code: 9,
                    offset: 253,
                },
            ),
            (
                packet(&[&pxe60(b"PXEClient")[..], &[43, 6, 8, 4, 0, 0, 1, 10, 255]].concat()),
                BadPxeOption {
                    code: 8,
                    offset: 253,
                },
            ),
            (
                packet(&[&pxe60(b"PXEClient")[..], &[43, 6, 9, 4, 0, 0, 5, 10, 255]].concat()),
                BadPxeOption {
                    code: 9,
                    offset: 253,
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                Repr::parse(&input),
                Err(want),
                "input {:02x?}",
                &input.get(236..)
            );
        }
    }

    #[test]
    fn emit_refuses_what_would_not_parse_back() {
        let wire = leak(packet(&[53, 1, 1, 255]));
        let base = Repr::parse(wire).unwrap();
        let bad = |f: &dyn Fn(&mut Repr<'static>)| {
            let mut r = base.clone();
            f(&mut r);
            assert!(r.to_vec().is_err(), "{r:?}");
        };
        bad(&|r| {
            r.options.push(DhcpOption::Other {
                code: 53,
                data: &[1],
            })
        });
        bad(&|r| {
            r.options.push(DhcpOption::Other {
                code: 255,
                data: &[],
            })
        });
        bad(&|r| {
            r.options.push(DhcpOption::Other {
                code: 7,
                data: &[0; 256],
            })
        });
        bad(&|r| r.options.push(DhcpOption::BootfileName(b"")));
        bad(&|r| {
            r.options
                .push(DhcpOption::VendorClass(VendorClass::Other(b"PXEClient")))
        });
        bad(&|r| r.options.push(DhcpOption::PxeVendor(PxeOptions::default())));
        bad(&|r| r.file = Area::Options(vec![]));
        bad(&|r| r.sname = Area::Text(&[1; 65]));
        bad(&|r| r.sname = Area::Text(b"a\0"));
        bad(&|r| {
            r.options.push(DhcpOption::Overload(Overload::File));
            r.file = Area::Options(vec![DhcpOption::Other {
                code: 9,
                data: &[0; 126],
            }]);
        });
        let mut r = base.clone();
        r.options
            .push(DhcpOption::VendorClass(VendorClass::PxeServer));
        r.options.push(DhcpOption::Other {
            code: 43,
            data: &[1],
        });
        assert!(r.to_vec().is_err(), "raw 43 in a PXE message");
        assert_eq!(
            base.emit(&mut [0; 243]),
            Err(EmitError::BufferTooSmall {
                needed: 244,
                got: 243
            })
        );
    }

    // ---- property tests: parse(emit(x)) == x --------------------------------

    fn leak(v: Vec<u8>) -> &'static [u8] {
        Box::leak(v.into_boxed_slice())
    }

    fn bytes(len: core::ops::RangeInclusive<usize>) -> impl Strategy<Value = &'static [u8]> {
        proptest::collection::vec(any::<u8>(), len).prop_map(leak)
    }

    fn pxe_option() -> impl Strategy<Value = PxeOption<'static>> {
        let server = (
            any::<u16>(),
            proptest::collection::vec(any::<[u8; 4]>(), 0..3),
        )
            .prop_map(|(server_type, a)| BootServer {
                server_type,
                addrs: a.into_iter().map(Ipv4Addr::from).collect(),
            });
        let item = (any::<u16>(), bytes(0..=20)).prop_map(|(server_type, description)| MenuItem {
            server_type,
            description,
        });
        prop_oneof![
            Just(PxeOption::Pad),
            any::<u8>().prop_map(PxeOption::DiscoveryControl),
            proptest::collection::vec(server, 1..3).prop_map(PxeOption::BootServers),
            proptest::collection::vec(item, 1..4).prop_map(PxeOption::BootMenu),
            (any::<u8>(), bytes(0..=30))
                .prop_map(|(timeout, prompt)| PxeOption::MenuPrompt { timeout, prompt }),
            (any::<u16>(), any::<u16>())
                .prop_map(|(server_type, layer)| PxeOption::BootItem { server_type, layer }),
            (1u8..=254, bytes(0..=10))
                .prop_filter("untyped", |(c, _)| !pxe_code::TYPED.contains(c))
                .prop_map(|(code, data)| PxeOption::Other { code, data }),
        ]
    }

    /// Options valid in any area; `pxe` allows option 43 as PXE sub-options,
    /// otherwise it may appear raw.
    fn option(pxe: bool) -> BoxedStrategy<DhcpOption<'static>> {
        let raw = (1u8..=254, bytes(0..=40)).prop_filter("untyped", move |(c, _)| {
            !code::TYPED.contains(c) || (*c == code::VENDOR_SPECIFIC && !pxe)
        });
        let mut s = prop_oneof![
            Just(DhcpOption::Pad),
            (1u8..=255).prop_map(|t| DhcpOption::MessageType(MessageType::from_u8(t).unwrap())),
            any::<[u8; 4]>().prop_map(|a| DhcpOption::ServerIdentifier(a.into())),
            "[a-zA-Z0-9 ]{1,20}"
                .prop_map(|s| DhcpOption::VendorClass(VendorClass::Other(leak(s.into_bytes())))),
            bytes(1..=20).prop_map(DhcpOption::TftpServerName),
            bytes(1..=40).prop_map(DhcpOption::BootfileName),
            bytes(1..=10).prop_map(DhcpOption::UserClass),
            proptest::collection::vec(any::<u16>(), 1..4).prop_map(DhcpOption::ClientArch),
            any::<[u8; 3]>().prop_map(|[kind, major, minor]| DhcpOption::UndiVersion(
                UndiVersion { kind, major, minor }
            )),
            (any::<u8>(), any::<[u8; 16]>())
                .prop_map(|(kind, uuid)| DhcpOption::ClientUuid(ClientUuid { kind, uuid })),
            raw.prop_map(|(code, data)| DhcpOption::Other { code, data }),
        ]
        .boxed();
        if pxe {
            let sub = (proptest::collection::vec(pxe_option(), 0..5), any::<bool>())
                .prop_map(|(options, end)| DhcpOption::PxeVendor(PxeOptions { options, end }));
            s = prop_oneof![3 => s, 1 => sub].boxed();
        }
        s
    }

    fn text(max: usize) -> impl Strategy<Value = &'static [u8]> {
        bytes(0..=max).prop_map(|t| &t[..t.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)])
    }

    prop_compose! {
        fn repr()(pxe in any::<bool>(), class in any::<(u16, u8, u8)>(), server in any::<bool>(),
                  overload in 0u8..=3, at in any::<prop::sample::Index>())
                 (main in proptest::collection::vec(option(pxe), 0..10),
                  file_opts in proptest::collection::vec(option(pxe), 0..3),
                  sname_opts in proptest::collection::vec(option(pxe), 0..2),
                  file_text in text(128), sname_text in text(64),
                  header in any::<(bool, u8, u8, u8, u32, u16, u16, [[u8; 4]; 4], [u8; 16])>(),
                  padding in 0usize..64,
                  pxe in Just(pxe), class in Just(class), server in Just(server),
                  overload in Just(overload), at in Just(at))
                 -> Repr<'static> {
            let (op, htype, hlen, hops, xid, secs, flags, [c, y, s, g], chaddr) = header;
            let mut options = main;
            if pxe {
                let v = if server {
                    VendorClass::PxeServer
                } else {
                    let (arch, undi_major, undi_minor) = class;
                    VendorClass::PxeClient(PxeClientClass { arch, undi_major, undi_minor })
                };
                options.insert(at.index(options.len() + 1), DhcpOption::VendorClass(v));
            }
            let overload = Overload::from_u8(overload);
            if let Some(o) = overload {
                options.insert(at.index(options.len() + 1), DhcpOption::Overload(o));
            }
            let area = |on: bool, opts: Vec<DhcpOption<'static>>, text| {
                if on { Area::Options(opts) } else { Area::Text(text) }
            };
            Repr {
                op: if op { Op::Request } else { Op::Reply },
                htype, hlen, hops, xid, secs, flags,
                ciaddr: c.into(), yiaddr: y.into(), siaddr: s.into(), giaddr: g.into(),
                chaddr,
                file: area(overload.is_some_and(Overload::file), file_opts, file_text),
                sname: area(overload.is_some_and(Overload::sname), sname_opts, sname_text),
                options,
                padding,
            }
        }
    }

    proptest! {
        #[test]
        fn repr_round_trips(r in repr()) {
            // Generated options may overflow `sname`/`file`; those must be refused.
            let fits = [(&r.file, 128), (&r.sname, 64)]
                .iter()
                .all(|(a, n)| options_len(a.options()) < *n);
            prop_assume!(fits && r.all_options().all(|o| o.data_len() <= 255));
            let bytes = r.to_vec().unwrap();
            prop_assert_eq!(bytes.len(), r.buffer_len());
            let back = Repr::parse(&bytes).unwrap();
            prop_assert_eq!(&back, &r);
            prop_assert_eq!(back.to_vec().unwrap(), bytes);
        }

        #[test]
        fn parse_never_panics_and_accepted_input_re_emits(
            tail in proptest::collection::vec(any::<u8>(), 0..200),
            sname in proptest::collection::vec(any::<u8>(), 64),
            op in 1u8..=2,
        ) {
            let mut v = packet(&tail);
            v[0] = op;
            v[44..108].copy_from_slice(&sname);
            if let Ok(r) = Repr::parse(&v) {
                prop_assert_eq!(r.to_vec().unwrap(), v);
            }
        }

        #[test]
        fn mutated_captures_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            which in 0usize..12,
        ) {
            let all: Vec<_> = [&include_bytes!("../testdata/dhcp-pxe.pcap")[..],
                               include_bytes!("../testdata/dhcp-proxy-4011.pcap"),
                               include_bytes!("../testdata/dhcp-overload.pcap")]
                .into_iter()
                .flat_map(pcap::datagrams)
                .collect();
            let mut v = all[which].payload.to_vec();
            for (i, b) in flips {
                let i = i.index(v.len());
                v[i] = b;
            }
            if let Ok(r) = Repr::parse(&v) {
                prop_assert_eq!(r.to_vec().unwrap(), v);
            }
        }
    }
}
