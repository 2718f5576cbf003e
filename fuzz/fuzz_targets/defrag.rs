//! The slow path's IPv4 defragmenter: a sequence of hostile IPv4 packets
//! (each prefixed by a one-byte length and a one-byte time step) never
//! panics, and its buffered bytes stay within the configured bound.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use slowpath::defrag::{DefragLimits, Defragmenter};

fuzz_target!(|data: &[u8]| {
    let limits = DefragLimits {
        max_datagrams: 8,
        max_buffered_bytes: 64 * 1024,
        ..DefragLimits::default()
    };
    let max_buffered = limits.max_buffered_bytes;
    let mut d = Defragmenter::new(limits);
    let mut now = Instant::now();
    let mut rest = data;
    while let [len, step, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (packet, after) = tail.split_at(n);
        now += Duration::from_millis(u64::from(*step) * 8);
        let _ = d.handle(now, packet);
        if d.poll_timeout().is_some_and(|t| t <= now) {
            d.handle_timeout(now);
        }
        assert!(d.buffered_bytes() <= max_buffered);
        rest = after;
    }
});
