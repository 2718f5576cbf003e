//! A TFTP client session, sans-I/O: fetches one file from an origin server
//! (RFC 1350, with RFC 2347 OACK, 2348 `blksize`, 2349 `tsize` and 7440
//! `windowsize`), for addressed mode, where bootcache fetches a miss itself.
//!
//! Like [`crate::tftp_server::ServerSession`], the session owns no socket and
//! reads no clock: the caller feeds it the server's UDP payloads
//! ([`ClientSession::handle_packet`]) and timer expiries
//! ([`ClientSession::handle_timeout`]), each with `now`, and pulls what to
//! send ([`ClientSession::poll_transmit`]), the file's bytes
//! ([`ClientSession::poll_data`]) and when to wake it next
//! ([`ClientSession::poll_timeout`]).
//!
//! # What the caller owns
//!
//! - Addresses: the RRQ goes to the origin's well-known port
//!   ([`Destination::Origin`], normally 69), everything after to the server's
//!   TID ([`Destination::Server`], learnt from the first reply), and ERROR 5
//!   answers to strays to the port they came from ([`Destination::Stray`]).
//!   Packets from another *address* than the origin's must not reach the
//!   session; the session itself checks only ports.
//! - Writing the data: [`ClientSession::poll_data`] hands out the file's bytes
//!   in order, each with its offset. The file is good only if the session
//!   ends as [`ClientOutcome::Completed`]; on any other outcome the bytes
//!   handed out must be thrown away.
//! - Freeing the session. After [`ClientOutcome::Completed`] the session still
//!   answers a retransmitted last DATA with its ACK (RFC 1350's dally); the
//!   caller may keep it around for a timeout or two for that, or free it once
//!   [`ClientSession::is_finished`].
//!
//! # Behaviour
//!
//! - The RRQ asks for octet mode and the options in [`ClientOptions`]. An OACK
//!   must grant only options asked for, and `blksize`/`windowsize` no larger
//!   than asked; otherwise the session sends ERROR 8 and fails. DATA 1 instead
//!   of an OACK means RFC 1350 defaults (512-byte blocks, lock-step).
//! - Only the next block in order is taken; anything else is dropped. The
//!   session ACKs after `windowsize` in-order blocks, at once on a gap (the
//!   last in-order block, once per gap), and on a duplicate (once until the
//!   next progress or timeout), and on the last, short block.
//! - Block numbers wrap after 65535, to 0 (tftp-hpa and RFC 7440 servers) or,
//!   in lock-step only, to 1 (some old servers): the first block after 65535
//!   decides. With a window, a wrap to 1 cannot be told from a lost block 0
//!   and is not accepted (the transfer fails rather than goes wrong).
//! - Timeout: the RRQ (before any reply) or the ACK of the last in-order block
//!   is sent again; after `max_retries` timeouts in a row without progress the
//!   session ends as [`ClientOutcome::TimedOut`].
//! - Size cap: a `tsize` or data beyond [`ClientOptions::max_size`] is answered
//!   with ERROR 3 and ends the session as [`ClientOutcome::TooLarge`].
//! - An ERROR from the server ends the session as
//!   [`ClientOutcome::ServerError`]; anything but DATA, OACK or ERROR at the
//!   server's TID is answered with ERROR 4 and ends it.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use wire::tftp::{
    EmitError, ErrorCode, Mode, Options, Packet, Request, DEFAULT_BLKSIZE, MAX_BLKSIZE, MIN_BLKSIZE,
};

use crate::tftp_server::error_response;

#[cfg(test)]
mod tests;

/// At most this many ERROR 5 answers to strays wait to be sent; more strays
/// are dropped unanswered (no amplification from a flood).
const MAX_STRAY_ERRORS: usize = 8;

/// What the client asks for and how hard it tries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// `blksize` to ask for (8–65464), or `None` for 512-byte blocks.
    pub blksize: Option<u16>,
    /// `windowsize` to ask for (at least 1), or `None` for lock-step.
    pub windowsize: Option<u16>,
    /// Whether to ask for `tsize` (the file's size in the OACK).
    pub ask_tsize: bool,
    /// Retransmission timeout (local; not sent as the `timeout` option).
    pub timeout: Duration,
    /// Timeouts in a row, without progress, before the session gives up.
    pub max_retries: u32,
    /// Largest file accepted, in bytes.
    pub max_size: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            blksize: Some(1468),
            windowsize: None,
            ask_tsize: true,
            timeout: Duration::from_secs(1),
            max_retries: 5,
            max_size: 1 << 32,
        }
    }
}

/// Why [`ClientSession::new`] could not build its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The file name or an option cannot go into an RRQ (empty name, NUL,
    /// value out of range, request over 512 bytes).
    #[error("cannot build the read request: {0}")]
    Emit(#[from] EmitError),
}

/// Where a [`ClientTransmit`] goes (always to the origin's address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// The origin's well-known port (69): the RRQ.
    Origin,
    /// The server's TID ([`ClientSession::server_tid`]).
    Server,
    /// Another port of the origin's that sent a stray packet: ERROR 5.
    Stray(u16),
}

/// One UDP payload to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTransmit {
    /// Where it goes.
    pub to: Destination,
    /// The TFTP packet.
    pub payload: Vec<u8>,
}

/// A violation of the protocol by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// The OACK carries an option that was not asked for; ERROR 8 was sent.
    UnrequestedOption,
    /// The OACK grants a `blksize` or `windowsize` larger than asked (or an
    /// invalid one); ERROR 8 was sent.
    OptionIncreased,
    /// The server sent something other than DATA, OACK or ERROR, or a
    /// malformed packet; ERROR 4 was sent.
    IllegalPacket,
    /// A DATA block is longer than the negotiated block size; ERROR 4 was sent.
    OversizedBlock,
    /// The file's size differs from the `tsize` the OACK announced; ERROR 4
    /// was sent.
    SizeMismatch,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProtocolError::UnrequestedOption => "OACK with an option not asked for",
            ProtocolError::OptionIncreased => "OACK grants more than asked",
            ProtocolError::IllegalPacket => "illegal or malformed packet",
            ProtocolError::OversizedBlock => "DATA block larger than the block size",
            ProtocolError::SizeMismatch => "file size differs from tsize",
        })
    }
}

/// How a client session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOutcome {
    /// The last block arrived and was acknowledged: the bytes handed out by
    /// [`ClientSession::poll_data`] are the whole file.
    Completed {
        /// The file's size.
        size: u64,
    },
    /// The server sent an ERROR with this code and message (lossily decoded).
    ServerError(ErrorCode, String),
    /// The server stopped answering.
    TimedOut,
    /// The file is larger than [`ClientOptions::max_size`]; ERROR 3 was sent.
    TooLarge,
    /// The server broke the protocol.
    Protocol(ProtocolError),
}

/// What a session did, for counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientCounters {
    /// In-order DATA blocks taken.
    pub blocks: u64,
    /// DATA blocks dropped as duplicates or stale.
    pub duplicate_blocks: u64,
    /// DATA blocks dropped as beyond a gap.
    pub out_of_order_blocks: u64,
    /// Packets from another port than the server's TID.
    pub stray_packets: u64,
    /// Retransmission timer expiries.
    pub timeouts: u64,
}

/// How block numbers wrap after 65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wrap {
    /// Not seen yet.
    Undecided,
    /// 65535 → 0 → 1 (tftp-hpa, RFC 7440).
    ToZero,
    /// 65535 → 1.
    ToOne,
}

/// What the session sends next (at most one of these is due at a time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    Rrq,
    /// ACK of this absolute block.
    Ack(u64),
    Error(ErrorCode, &'static str),
}

/// One read transfer of one file from one server.
#[derive(Debug)]
pub struct ClientSession {
    options: ClientOptions,
    rrq: Vec<u8>,
    server_tid: Option<u16>,
    /// Whether an OACK was taken.
    oacked: bool,
    /// Whether DATA or an OACK arrived (the options are settled).
    settled: bool,
    blksize: u16,
    windowsize: u16,
    tsize: Option<u64>,
    /// Last in-order block received (absolute, 0 before any).
    received: u64,
    /// Bytes received in order.
    size: u64,
    /// In-order blocks since the last ACK sent.
    unacked: u16,
    /// Last block an ACK was sent for (absolute), if any.
    last_ack: Option<u64>,
    /// The gap (next expected block) already answered with an ACK.
    gap_acked: Option<u64>,
    /// Whether a duplicate was answered since the last progress or timeout.
    dup_acked: bool,
    wrap: Wrap,
    due: Option<Due>,
    strays: VecDeque<u16>,
    data: VecDeque<(u64, Vec<u8>)>,
    deadline: Option<Instant>,
    retries: u32,
    outcome: Option<ClientOutcome>,
    counters: ClientCounters,
}

impl ClientSession {
    /// Starts fetching `filename` (octet mode). The RRQ is ready at once from
    /// [`ClientSession::poll_transmit`].
    pub fn new(now: Instant, filename: &str, options: ClientOptions) -> Result<Self, RequestError> {
        let _ = now;
        let mut o = Options::default();
        o.blksize = options.blksize;
        o.windowsize = options.windowsize;
        o.tsize = options.ask_tsize.then_some(0);
        let rrq = Packet::Rrq(Request {
            filename: filename.as_bytes(),
            mode: Mode::OCTET,
            options: o,
        })
        .to_vec()?;
        Ok(ClientSession {
            options,
            rrq,
            server_tid: None,
            oacked: false,
            settled: false,
            blksize: DEFAULT_BLKSIZE,
            windowsize: 1,
            tsize: None,
            received: 0,
            size: 0,
            unacked: 0,
            last_ack: None,
            gap_acked: None,
            dup_acked: false,
            wrap: Wrap::Undecided,
            due: Some(Due::Rrq),
            strays: VecDeque::new(),
            data: VecDeque::new(),
            deadline: None,
            retries: 0,
            outcome: None,
            counters: ClientCounters::default(),
        })
    }

    /// The server's TID (source port of its first reply), once known.
    pub fn server_tid(&self) -> Option<u16> {
        self.server_tid
    }

    /// The block size in use (512 until an OACK grants another).
    pub fn blksize(&self) -> u16 {
        self.blksize
    }

    /// The window size in use (1 until an OACK grants another).
    pub fn windowsize(&self) -> u16 {
        self.windowsize
    }

    /// The file size the OACK announced, if it did.
    pub fn tsize(&self) -> Option<u64> {
        self.tsize
    }

    /// Bytes received in order so far.
    pub fn received_bytes(&self) -> u64 {
        self.size
    }

    /// Whether an OACK was received (options negotiated).
    pub fn oack_received(&self) -> bool {
        self.oacked
    }

    /// What the session did so far.
    pub fn counters(&self) -> ClientCounters {
        self.counters
    }

    /// How the session ended, once it has.
    pub fn outcome(&self) -> Option<&ClientOutcome> {
        self.outcome.as_ref()
    }

    /// Whether the session has ended and has nothing left to send or hand
    /// out.
    pub fn is_finished(&self) -> bool {
        self.outcome.is_some()
            && self.due.is_none()
            && self.strays.is_empty()
            && self.data.is_empty()
    }

    /// The next packet to send, if any. Call until `None` after every input.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<ClientTransmit> {
        if let Some(port) = self.strays.pop_front() {
            return Some(ClientTransmit {
                to: Destination::Stray(port),
                payload: error_response(ErrorCode::UnknownTid, "unknown transfer ID"),
            });
        }
        let due = self.due.take()?;
        let (to, payload) = match due {
            Due::Rrq => (Destination::Origin, self.rrq.clone()),
            Due::Ack(block) => {
                self.last_ack = Some(block);
                self.unacked = 0;
                let payload = Packet::Ack {
                    block: self.wire_block(block),
                }
                .to_vec()
                // An ACK always encodes.
                .unwrap_or_default();
                (Destination::Server, payload)
            }
            Due::Error(code, message) => (Destination::Server, error_response(code, message)),
        };
        if self.outcome.is_none() {
            self.deadline = Some(now + self.options.timeout);
        }
        Some(ClientTransmit { to, payload })
    }

    /// The next piece of the file, in order: its offset and its bytes.
    pub fn poll_data(&mut self) -> Option<(u64, Vec<u8>)> {
        self.data.pop_front()
    }

    /// When [`ClientSession::handle_timeout`] is due next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.outcome.is_some() {
            None
        } else {
            self.deadline
        }
    }

    /// Handles the passage of time: on expiry, queues the RRQ (before any
    /// reply) or the ACK of the last in-order block again, or gives up after
    /// `max_retries`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.deadline {
            Some(d) if self.outcome.is_none() && now >= d => {}
            _ => return,
        }
        self.deadline = None;
        self.counters.timeouts += 1;
        self.retries += 1;
        if self.retries > self.options.max_retries {
            self.due = None;
            self.outcome = Some(ClientOutcome::TimedOut);
            return;
        }
        self.dup_acked = false;
        self.gap_acked = None;
        self.due = Some(if self.server_tid.is_none() {
            Due::Rrq
        } else {
            Due::Ack(self.received)
        });
    }

    /// Handles one UDP payload from the origin's address, from source port
    /// `from_port`.
    pub fn handle_packet(&mut self, now: Instant, from_port: u16, payload: &[u8]) {
        let parsed = Packet::parse(payload);
        match self.server_tid {
            Some(tid) if tid != from_port => {
                self.stray(from_port, payload);
                return;
            }
            Some(_) => {}
            None => {
                if self.outcome.is_some() {
                    return;
                }
                // The first well-formed reply names the server's TID.
                match &parsed {
                    Ok(Packet::Data { .. } | Packet::Oack(_) | Packet::Error { .. }) => {
                        self.server_tid = Some(from_port);
                    }
                    _ if is_error(payload) => self.server_tid = Some(from_port),
                    _ => return,
                }
            }
        }
        if let Some(outcome) = &self.outcome {
            // Dally: answer a retransmitted last block once more.
            if matches!(outcome, ClientOutcome::Completed { .. }) {
                if let Ok(Packet::Data { block, .. }) = parsed {
                    if block == self.wire_block(self.received) && self.due.is_none() {
                        self.due = Some(Due::Ack(self.received));
                    }
                }
            }
            return;
        }
        // An ERROR ends the transfer even if malformed: never answer an
        // ERROR with an ERROR.
        if let [0, 5, hi, lo, ref rest @ ..] = *payload {
            let code = ErrorCode::from(u16::from_be_bytes([hi, lo]));
            let msg = rest.split(|b| *b == 0).next().unwrap_or_default();
            self.finish(
                ClientOutcome::ServerError(code, String::from_utf8_lossy(msg).into_owned()),
                None,
            );
            return;
        }
        match parsed {
            Ok(Packet::Oack(o)) => self.on_oack(now, &o),
            Ok(Packet::Data { block, payload }) => self.on_data(now, block, payload),
            _ => self.fail(
                ProtocolError::IllegalPacket,
                ErrorCode::IllegalOperation,
                "illegal TFTP operation",
            ),
        }
    }

    /// A packet from a port other than the server's TID: ERROR 5 to it
    /// (RFC 1350), never to an ERROR, at most [`MAX_STRAY_ERRORS`] queued.
    fn stray(&mut self, port: u16, payload: &[u8]) {
        self.counters.stray_packets += 1;
        if !is_error(payload) && self.strays.len() < MAX_STRAY_ERRORS {
            self.strays.push_back(port);
        }
    }

    fn on_oack(&mut self, now: Instant, o: &Options<'_>) {
        if self.settled {
            // The server sent its OACK again: our ACK 0 was lost.
            if self.oacked && self.received == 0 && self.due.is_none() {
                self.due = Some(Due::Ack(0));
            }
            return;
        }
        let unrequested = !o.unknown.is_empty()
            || o.timeout.is_some()
            || (o.blksize.is_some() && self.options.blksize.is_none())
            || (o.windowsize.is_some() && self.options.windowsize.is_none())
            || (o.tsize.is_some() && !self.options.ask_tsize);
        if unrequested {
            self.fail(
                ProtocolError::UnrequestedOption,
                ErrorCode::OptionNegotiation,
                "option not requested",
            );
            return;
        }
        let blksize_ok = match (o.blksize, self.options.blksize) {
            (Some(got), Some(asked)) => (MIN_BLKSIZE..=MAX_BLKSIZE).contains(&got) && got <= asked,
            _ => true,
        };
        let window_ok = match (o.windowsize, self.options.windowsize) {
            (Some(got), Some(asked)) => got >= 1 && got <= asked,
            _ => true,
        };
        if !blksize_ok || !window_ok {
            self.fail(
                ProtocolError::OptionIncreased,
                ErrorCode::OptionNegotiation,
                "option value not acceptable",
            );
            return;
        }
        if o.tsize.is_some_and(|t| t > self.options.max_size) {
            self.too_large();
            return;
        }
        self.settled = true;
        self.oacked = true;
        self.blksize = o.blksize.unwrap_or(DEFAULT_BLKSIZE);
        self.windowsize = o.windowsize.unwrap_or(1);
        self.tsize = o.tsize;
        self.progress(now);
        self.due = Some(Due::Ack(0));
    }

    fn on_data(&mut self, now: Instant, block: u16, payload: &[u8]) {
        if !self.settled {
            // No OACK: RFC 1350 defaults.
            self.settled = true;
        }
        let expected = self.received + 1;
        let mut take = block == self.wire_block(expected);
        if !take && expected == 65536 && self.wrap == Wrap::Undecided {
            if block == 1 && self.windowsize == 1 {
                self.wrap = Wrap::ToOne;
                take = true;
            }
        } else if take && expected == 65536 {
            self.wrap = Wrap::ToZero;
        }
        if !take {
            self.out_of_order(block);
            return;
        }
        if payload.len() > usize::from(self.blksize) {
            self.fail(
                ProtocolError::OversizedBlock,
                ErrorCode::IllegalOperation,
                "block larger than blksize",
            );
            return;
        }
        let offset = self.size;
        let size = offset + payload.len() as u64;
        if size > self.options.max_size {
            self.too_large();
            return;
        }
        if self.tsize.is_some_and(|t| size > t) {
            self.fail(
                ProtocolError::SizeMismatch,
                ErrorCode::IllegalOperation,
                "more data than tsize",
            );
            return;
        }
        self.received = expected;
        self.size = size;
        self.counters.blocks += 1;
        if !payload.is_empty() {
            self.data.push_back((offset, payload.to_vec()));
        }
        self.progress(now);
        self.unacked += 1;
        let last = payload.len() < usize::from(self.blksize);
        if last {
            if self.tsize.is_some_and(|t| size != t) {
                self.fail(
                    ProtocolError::SizeMismatch,
                    ErrorCode::IllegalOperation,
                    "less data than tsize",
                );
                return;
            }
            self.finish(ClientOutcome::Completed { size }, Some(Due::Ack(expected)));
        } else if self.unacked >= self.windowsize {
            self.due = Some(Due::Ack(expected));
        }
    }

    /// A DATA block other than the next one: a gap is answered once with the
    /// ACK of the last in-order block, a duplicate once until progress.
    fn out_of_order(&mut self, block: u16) {
        let ahead = (block.wrapping_sub(self.wire_block(self.received + 1)) as i16) > 0;
        if ahead {
            self.counters.out_of_order_blocks += 1;
            if self.gap_acked != Some(self.received + 1) {
                self.gap_acked = Some(self.received + 1);
                self.due = Some(Due::Ack(self.received));
            }
        } else {
            self.counters.duplicate_blocks += 1;
            // Nothing was acknowledged yet without an OACK: no ACK 0.
            if self.last_ack.is_some() && !self.dup_acked && self.due.is_none() {
                self.dup_acked = true;
                self.due = Some(Due::Ack(self.received));
            }
        }
    }

    /// The transfer moved forward: the retry budget starts again.
    fn progress(&mut self, now: Instant) {
        self.retries = 0;
        self.dup_acked = false;
        self.gap_acked = None;
        self.deadline = Some(now + self.options.timeout);
    }

    fn too_large(&mut self) {
        self.finish(
            ClientOutcome::TooLarge,
            Some(Due::Error(
                ErrorCode::DiskFull,
                "disk full or allocation exceeded",
            )),
        );
    }

    fn fail(&mut self, reason: ProtocolError, code: ErrorCode, message: &'static str) {
        self.finish(
            ClientOutcome::Protocol(reason),
            Some(Due::Error(code, message)),
        );
    }

    fn finish(&mut self, outcome: ClientOutcome, last: Option<Due>) {
        self.outcome = Some(outcome);
        self.due = last;
        self.deadline = None;
    }

    /// Block number on the wire for absolute block `abs`.
    fn wire_block(&self, abs: u64) -> u16 {
        match self.wrap {
            Wrap::ToOne if abs > 0 => ((abs - 1) % 65535 + 1) as u16,
            _ => abs as u16,
        }
    }
}

/// Whether `payload` starts like an ERROR packet.
fn is_error(payload: &[u8]) -> bool {
    payload.len() >= 4 && payload[..2] == [0, 5]
}
