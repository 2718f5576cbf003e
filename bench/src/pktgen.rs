//! A minimal packet blaster for the vhost side: sends 64-byte frames as fast
//! as the ports take them on both ports and counts what comes back.

use std::time::{Duration, Instant};

use anyhow::Result;
use dpdk::{Burst, Mbuf, Mempool, Port};

use crate::frames::test_frame;

/// What a blast measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct BlastReport {
    /// Frames the generator handed to its ports during the measurement.
    pub sent: u64,
    /// Frames that came back through the device under test.
    pub received: u64,
    /// Measurement time.
    pub elapsed: Duration,
}

impl BlastReport {
    /// Received (= forwarded) million frames per second, both directions summed.
    pub fn mpps(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

/// Blasts `frame_len`-byte harness test frames on both `ports`; see [`blast_mix`].
pub fn blast(
    ports: [Port; 2],
    pool: &Mempool,
    frame_len: usize,
    warmup: Duration,
    measure: Duration,
) -> Result<BlastReport> {
    let mut mix: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    for (side, frames) in mix.iter_mut().enumerate() {
        let mut buf = Vec::new();
        test_frame(side, 0, frame_len, &mut buf);
        frames.push(buf);
    }
    blast_mix(ports, pool, &mix, warmup, measure)
}

/// Blasts the frames of `mix[side]` on port `side`, cycling through them, for
/// `warmup + measure`, counting frames received on either port during
/// `measure`. Each frame is a template mbuf sent by refcount, so the generator
/// allocates nothing per frame.
pub fn blast_mix(
    ports: [Port; 2],
    pool: &Mempool,
    mix: &[Vec<Vec<u8>>; 2],
    warmup: Duration,
    measure: Duration,
) -> Result<BlastReport> {
    let mut templates: [Vec<Mbuf>; 2] = [Vec::new(), Vec::new()];
    for (t, frames) in templates.iter_mut().zip(mix.iter()) {
        anyhow::ensure!(!frames.is_empty(), "empty traffic mix");
        for f in frames {
            t.push(Mbuf::from_bytes(pool, f)?);
        }
    }
    let mut next = [0usize; 2];
    let mut tx = Burst::new();
    let mut rx = Burst::new();
    let mut rep = BlastReport::default();
    let start = Instant::now();
    let mut measuring: Option<Instant> = None;
    loop {
        let now = Instant::now();
        match measuring {
            None if now - start >= warmup => {
                measuring = Some(now);
                rep = BlastReport::default();
            }
            Some(t0) if now - t0 >= measure => {
                rep.elapsed = now - t0;
                break;
            }
            _ => {}
        }
        // A few hundred iterations between clock reads keep Instant off the profile.
        for _ in 0..256 {
            for (side, port) in ports.iter().enumerate() {
                let t = &templates[side];
                while !tx.is_full() {
                    let _ = tx.push(t[next[side]].share());
                    next[side] = if next[side] + 1 == t.len() {
                        0
                    } else {
                        next[side] + 1
                    };
                }
                rep.sent += port.tx_burst(0, &mut tx) as u64;
                tx.free_all();
                let n = port.rx_burst(0, &mut rx);
                rep.received += n as u64;
                rx.free_all();
            }
        }
    }
    Ok(rep)
}
