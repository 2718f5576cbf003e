//! The TFTP server session that serves cache hits, driven by a hostile
//! client: the input is a read request (options included) followed by
//! packets, each with a time step. Never panics; everything it sends parses
//! as TFTP; DATA never leaves the file.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use slowpath::{ServerConfig, ServerSession, Transmit};
use wire::tftp::Packet;

fuzz_target!(|data: &[u8]| {
    let [n, rest @ ..] = data else { return };
    let (rrq, mut rest) = rest.split_at(usize::from(*n).min(rest.len()));
    let Ok(Packet::Rrq(req)) = Packet::parse(rrq) else {
        return;
    };
    let file: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    let mut now = Instant::now();
    let Ok(mut s) = ServerSession::new(now, &req, file.as_slice(), &ServerConfig::default()) else {
        return;
    };
    let mut buf = vec![0u8; 70_000];
    for _ in 0..512 {
        while let Some(t) = s.poll_transmit(now) {
            if let Transmit::Data { range, .. } = &t {
                assert!(range.end <= file.len() as u64);
            }
            let len = s.write(&t, &mut buf).expect("buffer large enough");
            assert!(
                Packet::parse(&buf[..len]).is_ok(),
                "sent an unparsable packet"
            );
        }
        if s.is_finished() {
            return;
        }
        let [len, step, tail @ ..] = rest else { break };
        let (pkt, after) = tail.split_at(usize::from(*len).min(tail.len()));
        now += Duration::from_millis(u64::from(*step) * 16);
        if s.poll_timeout().is_some_and(|t| t <= now) {
            s.handle_timeout(now);
        }
        s.handle_packet(now, pkt);
        rest = after;
    }
});
