//! A TFTP server session, sans-I/O: serves one cached file to one client
//! (RFC 1350, with RFC 2347 OACK, 2348 `blksize`, 2349 `tsize`/`timeout` and
//! 7440 `windowsize`).
//!
//! The session owns no socket and reads no clock (see quinn-proto): the
//! caller feeds it the client's UDP payloads ([`ServerSession::handle_packet`])
//! and timer expiries ([`ServerSession::handle_timeout`]), each with `now`, and
//! pulls what to send ([`ServerSession::poll_transmit`]) and when to wake it
//! next ([`ServerSession::poll_timeout`]).
//!
//! A DATA block is described, not copied: [`Transmit::Data`] names the block
//! number and the byte range of the file, and [`ServerSession::write`] (or
//! [`data_header`] plus [`FileSource::bytes`]) builds the UDP payload straight
//! from the file's memory into the caller's frame buffer.
//!
//! # What the caller owns
//!
//! - Demultiplexing: one session per (client address and port, server TID).
//!   Packets from another address or port must not reach the session (answer
//!   them with `error_response(ErrorCode::UnknownTid, ..)` or drop them), nor
//!   must the client's retransmitted RRQs to port 69: the session already
//!   retransmits its first answer on timeout.
//! - Refusals before a session exists: [`error_response`] (e.g. ERROR 1, file
//!   not found), and [`Refusal`] from [`ServerSession::new`].
//! - Pacing: a window's blocks are offered back to back; the caller sends them
//!   as fast as its TX path allows.
//! - Freeing the session once [`ServerSession::is_finished`].
//!
//! # Behaviour
//!
//! - Options: the OACK carries only options the client asked for and the
//!   server accepts; unknown options are ignored; without any, DATA 1 is sent
//!   at once. After an OACK the session waits for ACK 0; an ERROR 8 instead is
//!   the UEFI size probe and ends the session as [`Outcome::SizeProbe`].
//! - Windows (RFC 7440): up to `windowsize` blocks are sent, then the session
//!   waits. An ACK for any block sent moves the window to the block after it
//!   and sends from there (a partial-window ACK means the client saw a gap).
//!   An ACK that moves nothing (duplicate, stale) is counted and ignored: it
//!   never triggers a retransmission (no Sorcerer's Apprentice).
//! - Blocks number from 1 and wrap from 65535 to 0, as tftp-hpa does.
//! - The last block is short, zero bytes long if the file size is a multiple
//!   of the block size.
//! - Retransmission (RFC 6298, as TCP): the timer is the measured round
//!   trip, smoothed, plus four times its variation, at least
//!   [`ServerConfig::min_rto`] and at most the negotiated `timeout`; until
//!   the first sample it is [`ServerConfig::initial_rto`] (1 s, as RFC 6298
//!   says, or the timeout if shorter). A lost ACK then costs a few
//!   milliseconds, not the seconds of `timeout`. Round trips are sampled one
//!   block at a time, never from a block that was sent twice (Karn's rule:
//!   its ACK may answer either copy). On expiry the whole unacknowledged
//!   window (or the OACK) is sent again, from the first unacknowledged
//!   block, and the timer doubles up to `timeout`; after `max_retries + 1`
//!   expiries of the full `timeout` in a row without progress the session
//!   ends as [`Outcome::TimedOut`].
//! - A client ERROR ends the session; anything but ACK or ERROR is answered
//!   with ERROR 4 and ends it.

use core::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wire::tftp::{
    EmitError, ErrorCode, Opcode, Options, Packet, Request, TransferMode, HEADER_LEN, MAX_BLKSIZE,
    MIN_BLKSIZE,
};

#[cfg(test)]
pub(crate) mod tests;

/// Largest window the session uses, whatever the configuration says.
///
/// ACKs carry 16-bit block numbers; keeping the blocks in flight under half
/// the number space lets an old, delayed ACK never pass for a new one.
pub const MAX_WINDOWSIZE: u16 = 32768;

/// The bytes of a file being served.
///
/// Implemented for byte slices and owned buffers. The memory-mapped
/// implementation for the filestore lives with the code that maps files
/// (mapping is `unsafe`, which this crate forbids): a newtype around
/// `memmap2::Mmap` whose [`FileSource::bytes`] slices the map.
pub trait FileSource {
    /// The file's size in bytes.
    fn len(&self) -> u64;

    /// Whether the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes in `range`, exactly `range.end - range.start` of them.
    ///
    /// The session only asks for ranges within `0..available()`; an
    /// implementation may panic on others.
    fn bytes(&self, range: Range<u64>) -> &[u8];

    /// How many bytes, from the start, can be sent now: all of them for a
    /// file at rest; for a file still arriving from the origin (streamed
    /// to its waiters while it is fetched), what arrived. A block is sent
    /// only once all of its bytes are available.
    fn available(&self) -> u64 {
        self.len()
    }
}

/// Converts a file range to slice indices; a range that does not fit `usize`
/// becomes one that the slice index rejects.
fn usize_range(range: Range<u64>) -> Range<usize> {
    let start = usize::try_from(range.start).unwrap_or(usize::MAX);
    let end = usize::try_from(range.end).unwrap_or(usize::MAX);
    start..end
}

impl FileSource for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn bytes(&self, range: Range<u64>) -> &[u8] {
        &self[usize_range(range)]
    }
}

impl FileSource for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn bytes(&self, range: Range<u64>) -> &[u8] {
        &self[usize_range(range)]
    }
}

impl<T: FileSource + ?Sized> FileSource for &T {
    fn len(&self) -> u64 {
        (**self).len()
    }

    fn bytes(&self, range: Range<u64>) -> &[u8] {
        (**self).bytes(range)
    }

    fn available(&self) -> u64 {
        (**self).available()
    }
}

impl<T: FileSource + ?Sized> FileSource for Box<T> {
    fn len(&self) -> u64 {
        (**self).len()
    }

    fn bytes(&self, range: Range<u64>) -> &[u8] {
        (**self).bytes(range)
    }

    fn available(&self) -> u64 {
        (**self).available()
    }
}

impl<T: FileSource + ?Sized> FileSource for Arc<T> {
    fn len(&self) -> u64 {
        (**self).len()
    }

    fn bytes(&self, range: Range<u64>) -> &[u8] {
        (**self).bytes(range)
    }

    fn available(&self) -> u64 {
        (**self).available()
    }
}

/// What the server accepts and how hard it tries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Largest `blksize` granted (clamped to 8–65464). 1468 fits one
    /// 1500-byte Ethernet frame; larger blocks need IP fragmentation.
    pub max_blksize: u16,
    /// Whether to grant `windowsize` (RFC 7440) to clients that ask, even if
    /// the origin server does not support it.
    pub offer_windowsize: bool,
    /// Largest `windowsize` granted (clamped to 1–[`MAX_WINDOWSIZE`]).
    pub max_windowsize: u16,
    /// Retransmission timeout when the client does not ask for `timeout`:
    /// the adaptive timer's ceiling.
    pub default_timeout: Duration,
    /// The timer before the first round trip is measured (capped by the
    /// timeout). Clients ask for long timeouts (curl: seconds); a lost
    /// first ACK should not cost that long.
    pub initial_rto: Duration,
    /// Floor of the adaptive retransmission timer. A few milliseconds: far
    /// above a LAN round trip, so a client that is a little slow for once is
    /// not sent blocks again, yet a lost ACK costs milliseconds.
    pub min_rto: Duration,
    /// Expiries of the full timeout in a row, without progress, before the
    /// session gives up (the shorter, backed-off ones before do not count).
    pub max_retries: u32,
    /// Longest time without progress before the session gives up, whatever
    /// `timeout` the client asked for (issue 13: a client asking `timeout
    /// 255` and never acknowledging would otherwise hold its session ~25
    /// minutes).
    pub max_stall: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_blksize: 1468,
            offer_windowsize: true,
            max_windowsize: 64,
            default_timeout: Duration::from_secs(1),
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(5),
            max_retries: 5,
            max_stall: Duration::from_secs(30),
        }
    }
}

/// The options an OACK carries: those the client asked for and the server
/// grants, with the granted values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Oack {
    /// Granted `blksize`, at most the requested one.
    pub blksize: Option<u16>,
    /// `timeout` in seconds, as requested.
    pub timeout: Option<u8>,
    /// The file's size.
    pub tsize: Option<u64>,
    /// Granted `windowsize`, at most the requested one.
    pub windowsize: Option<u16>,
}

impl Oack {
    /// The options as the wire crate types them (allocates nothing).
    pub fn to_options(&self) -> Options<'static> {
        let mut o = Options::default();
        o.blksize = self.blksize;
        o.timeout = self.timeout;
        o.tsize = self.tsize;
        o.windowsize = self.windowsize;
        o
    }

    fn is_empty(&self) -> bool {
        *self == Oack::default()
    }
}

/// The parameters of a transfer after negotiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// Bytes per DATA block.
    pub blksize: u16,
    /// Blocks sent before waiting for an ACK (1: lock-step).
    pub windowsize: u16,
    /// Retransmission timeout.
    pub timeout: Duration,
    /// The OACK sent first, if any option was granted.
    pub oack: Option<Oack>,
}

impl Negotiated {
    /// Negotiates like a compliant server: each option the client asked for is
    /// granted (possibly lowered) or left out; options the server does not
    /// know are ignored.
    pub fn new(options: &Options<'_>, file_len: u64, config: &ServerConfig) -> Negotiated {
        let max_blksize = config.max_blksize.clamp(MIN_BLKSIZE, MAX_BLKSIZE);
        let max_window = config.max_windowsize.clamp(1, MAX_WINDOWSIZE);
        let oack = Oack {
            // RFC 2348: the server may answer with a smaller block size.
            blksize: options.blksize.map(|b| b.clamp(MIN_BLKSIZE, max_blksize)),
            // The fields are public, so a hand-built request could hold 0.
            timeout: options.timeout.filter(|t| *t >= 1),
            // RFC 2349: the client sends 0 in an RRQ, the server the size.
            tsize: options.tsize.map(|_| file_len),
            windowsize: options
                .windowsize
                .filter(|_| config.offer_windowsize)
                .map(|w| w.clamp(1, max_window)),
        };
        Negotiated {
            blksize: oack.blksize.unwrap_or(wire::tftp::DEFAULT_BLKSIZE),
            windowsize: oack.windowsize.unwrap_or(1),
            timeout: oack.timeout.map_or(config.default_timeout, |t| {
                Duration::from_secs(u64::from(t))
            }),
            oack: (!oack.is_empty()).then_some(oack),
        }
    }
}

/// Why [`ServerSession::new`] would not serve a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The cache holds octet bytes; netascii and mail transfers are the
    /// origin's job (forward the RRQ) or refused with [`Refusal::error_code`].
    #[error("transfer mode {0:?} is not served from cache")]
    UnsupportedMode(TransferMode),
}

impl Refusal {
    /// The ERROR code to answer with when the request is not forwarded.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Refusal::UnsupportedMode(_) => ErrorCode::IllegalOperation,
        }
    }

    /// The ERROR message to answer with.
    pub fn message(&self) -> &'static str {
        match self {
            Refusal::UnsupportedMode(_) => "only octet mode is supported",
        }
    }
}

/// One UDP payload for the session's client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// An option acknowledgement.
    Oack(Oack),
    /// A DATA block: header for `block`, then the file's bytes in `range`
    /// (empty for a zero-length last block).
    Data {
        /// Block number on the wire (wraps from 65535 to 0).
        block: u16,
        /// Bytes of the file the block carries.
        range: Range<u64>,
    },
    /// An ERROR; the session has ended.
    Error {
        /// The code.
        code: ErrorCode,
        /// The message.
        message: &'static str,
    },
}

impl Transmit {
    /// Length of the UDP payload [`ServerSession::write`] produces.
    pub fn payload_len(&self) -> usize {
        match self {
            Transmit::Oack(o) => Packet::Oack(o.to_options()).buffer_len(),
            // A block is at most MAX_BLKSIZE bytes, so this never truncates.
            Transmit::Data { range, .. } => HEADER_LEN + (range.end - range.start) as usize,
            Transmit::Error { message, .. } => HEADER_LEN + clean_message(message).len() + 1,
        }
    }
}

/// The four bytes that start DATA `block`: for callers that place the header
/// and the file bytes into a frame themselves.
pub fn data_header(block: u16) -> [u8; HEADER_LEN] {
    let [op_hi, op_lo] = (Opcode::Data as u16).to_be_bytes();
    let [hi, lo] = block.to_be_bytes();
    [op_hi, op_lo, hi, lo]
}

/// The message up to its first NUL, which the wire cannot carry.
fn clean_message(message: &str) -> &[u8] {
    let b = message.as_bytes();
    b.iter().position(|c| *c == 0).map_or(b, |n| &b[..n])
}

/// Writes an ERROR packet into `buf` and returns its length. A NUL in
/// `message` ends it early.
pub fn write_error(code: ErrorCode, message: &str, buf: &mut [u8]) -> Result<usize, EmitError> {
    Packet::Error {
        // Normalised: `Unknown(4)` would not parse back as itself.
        code: ErrorCode::from(u16::from(code)),
        message: clean_message(message),
    }
    .emit(buf)
}

/// An ERROR packet to refuse a request (e.g. [`ErrorCode::FileNotFound`]),
/// as a UDP payload. A NUL in `message` ends it early.
pub fn error_response(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut v = vec![0; HEADER_LEN + clean_message(message).len() + 1];
    // The buffer is sized exactly and the code and message are normalised,
    // so emitting cannot fail.
    let n = write_error(code, message, &mut v).unwrap_or(0);
    v.truncate(n);
    v
}

/// Why a session was aborted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortReason {
    /// The client sent something other than ACK or ERROR; ERROR 4 was sent.
    IllegalPacket,
    /// The caller ended the session with [`ServerSession::abort`].
    Local(ErrorCode),
}

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The client acknowledged the last block.
    Completed {
        /// The file's size.
        bytes: u64,
        /// From the session's creation to the last ACK.
        elapsed: Duration,
    },
    /// The client read the OACK (its `tsize`) and ended with ERROR 8, as UEFI
    /// firmware does before the real download: a normal end.
    SizeProbe,
    /// The client sent an ERROR with this code.
    ClientError(ErrorCode),
    /// The client stopped answering.
    TimedOut {
        /// Bytes the client acknowledged before.
        acked_bytes: u64,
    },
    /// The session was aborted and an ERROR sent.
    Aborted(AbortReason),
}

/// What a session did, for the worker's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCounters {
    /// DATA packets handed out, retransmissions included.
    pub blocks_sent: u64,
    /// DATA and OACK packets sent again (after a timeout or a partial-window
    /// ACK).
    pub retransmits: u64,
    /// File bytes handed out in DATA packets, retransmissions included.
    pub payload_bytes: u64,
    /// ACKs that moved nothing (duplicates, stale or out of window).
    pub duplicate_acks: u64,
    /// Retransmission timer expiries.
    pub timeouts: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// OACK sent (or due), waiting for ACK 0.
    Oack,
    /// Sending DATA.
    Data,
}

/// One read transfer of one file to one client.
#[derive(Debug)]
pub struct ServerSession<F> {
    file: F,
    len: u64,
    params: Negotiated,
    max_retries: u32,
    state: State,
    /// Whether the OACK is due (first time or again after a timeout).
    oack_due: bool,
    oack_sent: bool,
    /// Number of DATA blocks, the last one short (possibly empty).
    total_blocks: u64,
    /// Last block acknowledged (absolute, from 1; 0 before any).
    acked: u64,
    /// Next block to send (absolute).
    next: u64,
    /// Highest block ever sent (absolute): ACKs up to here are plausible.
    high_water: u64,
    /// Retransmission deadline, armed by each send.
    deadline: Option<Instant>,
    rto: Rto,
    /// The block being timed (absolute; 0 is the OACK) and when it was sent:
    /// one round-trip sample at a time, as TCP does without timestamps.
    timing: Option<(u64, Instant)>,
    /// Expiries of the full timeout in a row without progress.
    retries: u32,
    /// The start, or the last time the client moved forward.
    last_progress: Instant,
    max_stall: Duration,
    /// An ERROR to send before the session is finished.
    error_due: Option<(ErrorCode, &'static str)>,
    outcome: Option<Outcome>,
    started: Instant,
    counters: SessionCounters,
}

impl<F: FileSource> ServerSession<F> {
    /// Starts serving `file` for the client's parsed RRQ `request`.
    ///
    /// The first packet (OACK or DATA 1) is ready at once from
    /// [`ServerSession::poll_transmit`].
    pub fn new(
        now: Instant,
        request: &Request<'_>,
        file: F,
        config: &ServerConfig,
    ) -> Result<Self, Refusal> {
        let mode = request.mode.kind();
        if mode != TransferMode::Octet {
            return Err(Refusal::UnsupportedMode(mode));
        }
        let len = file.len();
        let params = Negotiated::new(&request.options, len, config);
        let oack = params.oack.is_some();
        Ok(ServerSession {
            file,
            len,
            params,
            max_retries: config.max_retries,
            state: if oack { State::Oack } else { State::Data },
            oack_due: oack,
            oack_sent: false,
            total_blocks: len / u64::from(params.blksize) + 1,
            acked: 0,
            next: 1,
            high_water: 0,
            deadline: None,
            rto: Rto::new(config.min_rto, config.initial_rto, params.timeout),
            timing: None,
            retries: 0,
            error_due: None,
            outcome: None,
            started: now,
            last_progress: now,
            max_stall: config.max_stall,
            counters: SessionCounters::default(),
        })
    }

    /// The negotiated parameters.
    pub fn negotiated(&self) -> &Negotiated {
        &self.params
    }

    /// The file being served (for [`FileSource::bytes`] on a
    /// [`Transmit::Data`] range).
    pub fn file(&self) -> &F {
        &self.file
    }

    /// The file being served, to tell it that more bytes arrived (call
    /// [`ServerSession::poll_transmit`] after).
    pub fn file_mut(&mut self) -> &mut F {
        &mut self.file
    }

    /// The retransmission timer now: adapted to the measured round trip,
    /// backed off after expiries, between [`ServerConfig::min_rto`] and the
    /// negotiated timeout.
    pub fn rto(&self) -> Duration {
        self.rto.current
    }

    /// The smoothed round trip (from a send to its ACK), once measured.
    pub fn smoothed_rtt(&self) -> Option<Duration> {
        self.rto.srtt
    }

    /// What the session did so far.
    pub fn counters(&self) -> SessionCounters {
        self.counters
    }

    /// How the session ended, once it has.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// Whether the session has ended and has nothing left to send: the caller
    /// frees it (and its TID).
    pub fn is_finished(&self) -> bool {
        self.outcome.is_some() && self.error_due.is_none()
    }

    /// The next packet to send, if any. Call until `None` after every input.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if let Some((code, message)) = self.error_due.take() {
            return Some(Transmit::Error { code, message });
        }
        if self.outcome.is_some() {
            return None;
        }
        match self.state {
            State::Oack => {
                if !self.oack_due {
                    return None;
                }
                self.oack_due = false;
                if self.oack_sent {
                    self.counters.retransmits += 1;
                } else {
                    self.timing = Some((0, now));
                }
                self.oack_sent = true;
                self.deadline = Some(now + self.rto.current);
                self.params.oack.map(Transmit::Oack)
            }
            State::Data => {
                let window_end = self.acked + u64::from(self.params.windowsize);
                if self.next > self.total_blocks || self.next > window_end {
                    return None;
                }
                let bs = u64::from(self.params.blksize);
                // A streamed file: the block waits for its bytes (no timer
                // runs for it: nothing unacknowledged is in flight).
                if (self.next * bs).min(self.len) > self.file.available() {
                    return None;
                }
                let block = self.next;
                self.next += 1;
                if block <= self.high_water {
                    self.counters.retransmits += 1;
                    // Karn: an ACK for it may answer either copy.
                    if self.timing.is_some_and(|(b, _)| b >= block) {
                        self.timing = None;
                    }
                } else {
                    self.high_water = block;
                    if self.timing.is_none() {
                        self.timing = Some((block, now));
                    }
                }
                let start = (block - 1) * bs;
                let range = start..(start + bs).min(self.len);
                self.counters.blocks_sent += 1;
                self.counters.payload_bytes += range.end - range.start;
                self.deadline = Some(now + self.rto.current);
                Some(Transmit::Data {
                    // Wire block numbers are the absolute ones modulo 2^16.
                    block: block as u16,
                    range,
                })
            }
        }
    }

    /// When [`ServerSession::handle_timeout`] is due next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.outcome.is_some() {
            None
        } else {
            self.deadline
        }
    }

    /// Handles the passage of time: on expiry, queues the unacknowledged
    /// window (or the OACK) again with the timer doubled, or gives up after
    /// `max_retries + 1` expiries of the full timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.deadline {
            Some(d) if self.outcome.is_none() && now >= d => {}
            _ => return,
        }
        self.deadline = None;
        self.counters.timeouts += 1;
        // Everything unacknowledged is sent again: no sample from it.
        self.timing = None;
        let stalled = now.saturating_duration_since(self.last_progress) >= self.max_stall;
        if self.rto.at_ceiling() || stalled {
            self.retries += 1;
            if self.retries > self.max_retries || stalled {
                self.outcome = Some(Outcome::TimedOut {
                    acked_bytes: self.acked_bytes(),
                });
                return;
            }
        }
        self.rto.back_off();
        match self.state {
            State::Oack => self.oack_due = true,
            State::Data => self.next = self.acked + 1,
        }
    }

    /// Handles one UDP payload from the client (at the session's TID, from the
    /// session's client address and port).
    pub fn handle_packet(&mut self, now: Instant, payload: &[u8]) {
        if self.outcome.is_some() {
            return;
        }
        // An ERROR ends the transfer even if its message is malformed (no
        // NUL): never answer an ERROR with an ERROR.
        if let [0, 5, hi, lo, ..] = *payload {
            let code = ErrorCode::from(u16::from_be_bytes([hi, lo]));
            self.outcome = Some(
                if self.state == State::Oack && code == ErrorCode::OptionNegotiation {
                    Outcome::SizeProbe
                } else {
                    Outcome::ClientError(code)
                },
            );
            return;
        }
        match Packet::parse(payload) {
            Ok(Packet::Ack { block }) => self.on_ack(now, block),
            _ => {
                self.error_due = Some((ErrorCode::IllegalOperation, "illegal TFTP operation"));
                self.outcome = Some(Outcome::Aborted(AbortReason::IllegalPacket));
            }
        }
    }

    /// Ends the session with an ERROR to the client (e.g. shutdown, the cached
    /// copy turned out stale).
    pub fn abort(&mut self, code: ErrorCode, message: &'static str) {
        if self.outcome.is_some() {
            return;
        }
        self.error_due = Some((code, message));
        self.outcome = Some(Outcome::Aborted(AbortReason::Local(code)));
    }

    /// Writes the UDP payload of `transmit` into `buf` and returns its length
    /// ([`Transmit::payload_len`]). A DATA block's bytes are copied once,
    /// from the file into `buf`.
    pub fn write(&self, transmit: &Transmit, buf: &mut [u8]) -> Result<usize, EmitError> {
        match transmit {
            Transmit::Oack(o) => Packet::Oack(o.to_options()).emit(buf),
            Transmit::Data { block, range } => {
                let payload = self.file.bytes(range.clone());
                let needed = HEADER_LEN + payload.len();
                let Some(out) = buf.get_mut(..needed) else {
                    return Err(EmitError::BufferTooSmall {
                        needed,
                        got: buf.len(),
                    });
                };
                out[..HEADER_LEN].copy_from_slice(&data_header(*block));
                out[HEADER_LEN..].copy_from_slice(payload);
                Ok(needed)
            }
            Transmit::Error { code, message } => write_error(*code, message, buf),
        }
    }

    fn on_ack(&mut self, now: Instant, block: u16) {
        match self.state {
            State::Oack => {
                if block != 0 {
                    self.counters.duplicate_acks += 1;
                    return;
                }
                self.state = State::Data;
                self.sample_rtt(now);
                self.progress(now);
            }
            State::Data => {
                // Distance forward from the last acknowledged block, modulo
                // 2^16; a plausible ACK names a block already sent.
                let delta = u64::from(block.wrapping_sub(self.acked as u16));
                if delta == 0 || delta > self.high_water - self.acked {
                    self.counters.duplicate_acks += 1;
                    return;
                }
                self.acked += delta;
                self.sample_rtt(now);
                if self.acked == self.total_blocks {
                    self.deadline = None;
                    self.outcome = Some(Outcome::Completed {
                        bytes: self.len,
                        elapsed: now.saturating_duration_since(self.started),
                    });
                    return;
                }
                self.progress(now);
                // RFC 7440: the next window starts after the acknowledged
                // block, also when the ACK falls inside the window.
                self.next = self.acked + 1;
            }
        }
    }

    /// A round-trip sample if the ACK covers the timed block. If it does
    /// not, the blocks after the ACK are sent again (a partial window), so
    /// the timed one no longer gives a sample.
    fn sample_rtt(&mut self, now: Instant) {
        if let Some((block, sent)) = self.timing.take() {
            if block <= self.acked {
                self.rto.sample(now.saturating_duration_since(sent));
            }
        }
    }

    /// The client moved forward: the retry budget starts again and the timer
    /// waits for the next send.
    fn progress(&mut self, now: Instant) {
        self.retries = 0;
        self.deadline = None;
        self.last_progress = now;
    }

    fn acked_bytes(&self) -> u64 {
        (self.acked * u64::from(self.params.blksize)).min(self.len)
    }
}

/// The retransmission timer of RFC 6298: smoothed round trip plus four
/// times its mean deviation, between a floor and a ceiling, doubled on each
/// expiry until the next sample.
#[derive(Clone, Copy, Debug)]
struct Rto {
    srtt: Option<Duration>,
    rttvar: Duration,
    current: Duration,
    floor: Duration,
    ceiling: Duration,
}

impl Rto {
    /// Before any sample the timer is `initial`, within floor and ceiling.
    fn new(floor: Duration, initial: Duration, ceiling: Duration) -> Rto {
        let floor = floor.min(ceiling);
        Rto {
            srtt: None,
            rttvar: Duration::ZERO,
            current: initial.clamp(floor, ceiling),
            floor,
            ceiling,
        }
    }

    fn sample(&mut self, rtt: Duration) {
        let (srtt, rttvar) = match self.srtt {
            None => (rtt, rtt / 2),
            // RFC 6298 2.3: beta = 1/4, alpha = 1/8.
            Some(s) => ((s * 7 + rtt) / 8, (self.rttvar * 3 + s.abs_diff(rtt)) / 4),
        };
        self.srtt = Some(srtt);
        self.rttvar = rttvar;
        self.current = (srtt + rttvar * 4).clamp(self.floor, self.ceiling);
    }

    fn back_off(&mut self) {
        self.current = (self.current * 2).min(self.ceiling);
    }

    fn at_ceiling(&self) -> bool {
        self.current >= self.ceiling
    }
}
