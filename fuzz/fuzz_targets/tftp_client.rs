//! The TFTP client session that fetches a miss from the origin (addressed
//! mode), driven by a hostile server: the input picks the session's options,
//! then is a sequence of (control, length, bytes) records. The control byte
//! picks the source port (bits 0-1: the server's TID or one of two stray
//! ones), a time step (bit 3), and whether the bytes go in as they are or
//! `length` (times 16 with bit 4) DATA blocks built here go in (bit 5): the
//! next block, or one a little before or after it (bits 6-7), full, the last
//! one short with bit 2, their bytes a known pattern of the file offset. So
//! whole transfers (up to 4,096 blocks), gaps and duplicates are reached.
//!
//! Checks: never panics; every packet it sends parses as TFTP, the RRQ goes
//! to the origin's port and nothing goes to the server's TID before it is
//! known; the bytes it hands out start at offset 0, follow each other
//! without gap or overlap, come in pieces no larger than the block size and
//! never exceed `max_size`; built blocks arrive as sent; a completed
//! transfer's size is what was handed out (and the announced `tsize`); an
//! ended session asks for no timer and stays ended.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use slowpath::{ClientOptions, ClientOutcome, ClientSession, Destination};
use wire::tftp::{ErrorCode, Packet};

#[path = "alloc_cap.rs"]
mod alloc_cap;

/// The server's TID before the session learnt one.
const SERVER_TID: u16 = 1069;
/// Built DATA blocks per input, at most. Wrapping the block number would
/// take 65,536 (about 140 ms an input here, 30 inputs a second): the unit
/// tests (`slowpath/src/tftp_client/tests.rs`) cover both wraps; this keeps
/// an input under a few milliseconds.
const BLOCK_BUDGET: u32 = 4096;

/// Byte `offset` of the file the built blocks carry.
fn pattern(offset: u64) -> u8 {
    (offset ^ (offset >> 8) ^ (offset >> 16)) as u8
}

fn options(ctl: &[u8; 3]) -> ClientOptions {
    ClientOptions {
        blksize: [None, Some(8), Some(512), Some(1468)][usize::from(ctl[0] & 3)],
        windowsize: [None, Some(1), Some(4), Some(64)][usize::from(ctl[0] >> 2 & 3)],
        ask_tsize: ctl[0] & 0x10 != 0,
        timeout: Duration::from_secs(1),
        max_retries: u32::from(ctl[0] >> 5 & 3),
        max_size: [1 << 32, 3000, 600_000, 0][usize::from(ctl[1] & 3)],
    }
}

/// What the target saw the session do, checked against its promises.
struct Checker {
    /// Bytes handed out so far (the next offset expected).
    handed_out: u64,
    /// Whether a DATA packet not built here was delivered (its bytes are
    /// unknown, so content is checked only before).
    raw_data: bool,
    sent_rrq: bool,
    max_size: u64,
}

impl Checker {
    fn drain(&mut self, s: &mut ClientSession, now: Instant) {
        while let Some(t) = s.poll_transmit(now) {
            let p = Packet::parse(&t.payload).expect("the client sent an unparsable packet");
            match t.to {
                Destination::Origin => {
                    assert!(matches!(p, Packet::Rrq(_)), "{p:?} to the origin's port");
                    self.sent_rrq = true;
                }
                Destination::Server => {
                    assert!(s.server_tid().is_some(), "sent to a TID it does not know");
                    assert!(
                        matches!(p, Packet::Ack { .. } | Packet::Error { .. }),
                        "{p:?} to the server"
                    );
                }
                Destination::Stray(port) => {
                    assert_ne!(Some(port), s.server_tid());
                    assert!(
                        matches!(
                            p,
                            Packet::Error {
                                code: ErrorCode::UnknownTid,
                                ..
                            }
                        ),
                        "{p:?} to a stray"
                    );
                }
            }
        }
        let blksize = u64::from(s.blksize());
        while let Some((offset, bytes)) = s.poll_data() {
            assert_eq!(offset, self.handed_out, "a gap or overlap in the file");
            assert!(bytes.len() as u64 <= blksize, "a piece larger than a block");
            if !self.raw_data {
                for (i, b) in bytes.iter().enumerate() {
                    assert_eq!(*b, pattern(offset + i as u64), "bytes changed on the way");
                }
            }
            self.handed_out += bytes.len() as u64;
            assert!(self.handed_out <= self.max_size, "handed out past max_size");
        }
        if let Some(outcome) = s.outcome() {
            assert!(s.poll_timeout().is_none(), "an ended session wants a timer");
            if let ClientOutcome::Completed { size } = outcome {
                assert_eq!(*size, self.handed_out, "completed size differs");
                if let Some(t) = s.tsize() {
                    assert_eq!(t, *size, "completed size differs from tsize");
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [c0, c1, c2, rest @ ..] = data else {
        return;
    };
    let opts = options(&[*c0, *c1, *c2]);
    let mut now = Instant::now();
    let Ok(mut s) = ClientSession::new(now, "boot/vmlinuz", opts.clone()) else {
        return;
    };
    let mut ck = Checker {
        handed_out: 0,
        raw_data: false,
        sent_rrq: false,
        max_size: opts.max_size,
    };
    // The session keeps what it hands out until polled (drained after every
    // packet here), a few strays' ERRORs and its RRQ: linear in the input,
    // whatever the packets say.
    alloc_cap::capped(64 * data.len() + (1 << 20), || {
        ck.drain(&mut s, now);
        assert!(ck.sent_rrq, "no RRQ first");
        let mut budget = BLOCK_BUDGET;
        let mut rest = rest;
        let mut buf = vec![0u8; 4 + 1468];
        while let [ctl, len, tail @ ..] = rest {
            let ended = s.outcome().cloned();
            let port = if ctl & 1 == 0 {
                s.server_tid().unwrap_or(SERVER_TID)
            } else {
                SERVER_TID + 1 + u16::from(ctl >> 1 & 1)
            };
            if ctl & 8 != 0 {
                now += Duration::from_millis(700);
            }
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
            }
            if ctl & 0x20 == 0 {
                // Raw bytes from the input.
                let (pkt, after) = tail.split_at(usize::from(*len).min(tail.len()));
                if matches!(Packet::parse(pkt), Ok(Packet::Data { .. })) {
                    ck.raw_data = true;
                }
                s.handle_packet(now, port, pkt);
                rest = after;
            } else {
                // `len` built blocks: the next one shifted by -2..=1, the last
                // one short when the control byte says so.
                let shift = i64::from(ctl >> 6) - 2;
                let blksize = usize::from(s.blksize()).min(1468);
                let count = u32::from(*len).max(1) * if ctl & 0x10 != 0 { 16 } else { 1 };
                for i in 0..count.min(budget) {
                    let expected = s.counters().blocks as i64 + 1 + shift;
                    let Ok(abs) = u64::try_from(expected) else {
                        break;
                    };
                    let short = ctl & 4 != 0 && i + 1 == count;
                    let n = if short { blksize / 2 } else { blksize };
                    let offset = abs.saturating_sub(1) * blksize as u64;
                    buf[0..2].copy_from_slice(&[0, 3]);
                    buf[2..4].copy_from_slice(&(abs as u16).to_be_bytes());
                    for (j, b) in buf[4..4 + n].iter_mut().enumerate() {
                        *b = pattern(offset + j as u64);
                    }
                    s.handle_packet(now, port, &buf[..4 + n]);
                    ck.drain(&mut s, now);
                    budget -= 1;
                }
                rest = tail;
            }
            ck.drain(&mut s, now);
            if let Some(before) = ended {
                assert_eq!(
                    s.outcome(),
                    Some(&before),
                    "an ended session changed its outcome"
                );
            }
        }
        // Run the clock out: the session ends within its retries.
        for _ in 0..=opts.max_retries + 1 {
            let Some(t) = s.poll_timeout() else { break };
            now = now.max(t);
            s.handle_timeout(now);
            ck.drain(&mut s, now);
        }
        assert!(
            s.poll_timeout().is_none(),
            "still waiting after all its retries"
        );
        assert!(s.outcome().is_some(), "never ended");
    });
});
