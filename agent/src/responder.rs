//! The agent's side of the protocol, sans-I/O: datagram in, datagram out.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::replay::{unix_ms, ReplayGuard};
use crate::wire::{self, Answer, DropReason, Envelope, Response};
use crate::Key;

/// Counters of one protocol endpoint. Drops are counted by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams handled.
    pub received: u64,
    /// Datagrams accepted (answered, for the agent; matched, for the client).
    pub accepted: u64,
    /// Dropped: wrong framing or body.
    pub malformed: u64,
    /// Dropped: MAC did not verify.
    pub bad_mac: u64,
    /// Dropped: timestamp outside the window.
    pub outside_window: u64,
    /// Dropped: nonce replayed.
    pub replayed: u64,
    /// Dropped: replay cache full.
    pub replay_cache_full: u64,
    /// Dropped: authentic response to no pending question.
    pub unexpected: u64,
}

impl Counters {
    /// Counts one drop.
    pub fn count_drop(&mut self, reason: DropReason) {
        let c = match reason {
            DropReason::Malformed => &mut self.malformed,
            DropReason::BadMac => &mut self.bad_mac,
            DropReason::OutsideWindow => &mut self.outside_window,
            DropReason::Replayed => &mut self.replayed,
            DropReason::ReplayCacheFull => &mut self.replay_cache_full,
            DropReason::Unexpected => &mut self.unexpected,
        };
        *c += 1;
    }

    /// Total datagrams dropped.
    pub fn dropped(&self) -> u64 {
        self.malformed
            + self.bad_mac
            + self.outside_window
            + self.replayed
            + self.replay_cache_full
            + self.unexpected
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received={} accepted={} dropped={} (malformed={} bad_mac={} outside_window={} replayed={} replay_cache_full={} unexpected={})",
            self.received,
            self.accepted,
            self.dropped(),
            self.malformed,
            self.bad_mac,
            self.outside_window,
            self.replayed,
            self.replay_cache_full,
            self.unexpected
        )
    }
}

/// Answer counts of the agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnswerCounters {
    /// Answered "current".
    pub current: u64,
    /// Answered "stale".
    pub stale: u64,
    /// Answered "unknown file".
    pub unknown: u64,
}

/// The agent's protocol state: key, replay guard, counters.
#[derive(Debug)]
pub struct Responder {
    key: Key,
    guard: ReplayGuard,
    nonce: crate::NonceGen,
    counters: Counters,
    answers: AnswerCounters,
    bytes: ByteCounters,
}

/// Bytes the agent's datagrams carried: what a fleet of bridges costs the
/// boot server's link beside the TFTP traffic (the storm benchmark counts
/// them as origin bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteCounters {
    /// Bytes of every datagram handled, dropped ones included (UDP payload).
    pub received: u64,
    /// Bytes of the answers produced (UDP payload).
    pub sent: u64,
}

impl Responder {
    /// A responder accepting requests within ±`window` of its clock;
    /// `seed` feeds its response nonces (use [`crate::random_seed`]).
    pub fn new(key: Key, window: Duration, replay_capacity: usize, seed: u64) -> Self {
        Self {
            key,
            guard: ReplayGuard::new(window, replay_capacity),
            nonce: crate::NonceGen::new(seed),
            counters: Counters::default(),
            answers: AnswerCounters::default(),
            bytes: ByteCounters::default(),
        }
    }

    /// Handles one datagram. `lookup(file, sha256)` consults the
    /// verification table. Returns the response to send back to the sender,
    /// or `None` when the datagram was dropped (and counted).
    pub fn handle(
        &mut self,
        now: SystemTime,
        bytes: &[u8],
        lookup: impl FnOnce(&str, &[u8; 32]) -> Answer,
    ) -> Option<Vec<u8>> {
        self.counters.received += 1;
        self.bytes.received += bytes.len() as u64;
        let req = match wire::decode_request(bytes, &self.key)
            .and_then(|r| self.guard.check(now, &r.envelope).map(|()| r))
        {
            Ok(r) => r,
            Err(reason) => {
                self.counters.count_drop(reason);
                log::debug!("dropped request: {reason}");
                return None;
            }
        };
        self.counters.accepted += 1;
        let answer = lookup(&req.file, &req.sha256);
        match answer {
            Answer::Current(_) => self.answers.current += 1,
            Answer::Stale(_) => self.answers.stale += 1,
            Answer::Unknown => self.answers.unknown += 1,
        }
        log::debug!("{}: {:?}", req.file, answer);
        let resp = Response {
            envelope: Envelope {
                timestamp_ms: unix_ms(now),
                nonce: self.nonce.next(),
                request_id: req.envelope.request_id,
            },
            answer,
        };
        let out = wire::encode_response(&resp, &self.key);
        self.bytes.sent += out.len() as u64;
        Some(out)
    }

    /// Datagram counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Answer counters.
    pub fn answers(&self) -> AnswerCounters {
        self.answers
    }

    /// Bytes received and answered.
    pub fn bytes(&self) -> ByteCounters {
        self.bytes
    }
}
