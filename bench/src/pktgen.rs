//! A minimal packet blaster for the vhost side: sends 64-byte frames as fast
//! as the ports take them on both ports and counts what comes back.

use std::time::{Duration, Instant};

use anyhow::Result;
use dpdk::{Burst, Mbuf, Mempool, Port};

use bootcache_testbed::frames::test_frame;

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

/// Marks a stamped frame (the first 4 of its last 16 bytes).
const STAMP_MAGIC: u32 = 0xb007_cace;

/// How one generator run sends.
#[derive(Debug, Clone, Copy)]
pub struct RunConfig {
    /// Offered load in frames per second, both directions together; `None`:
    /// as fast as the ports take frames.
    pub rate_pps: Option<f64>,
    /// Sending before the measurement starts (not counted).
    pub warmup: Duration,
    /// Measured sending time.
    pub measure: Duration,
    /// One frame in this many (a power of two) carries a TSC stamp for the
    /// latency histogram; 0: none.
    pub stamp_every: u32,
    /// Send on these sides (index = side the frames enter on).
    pub sides: [bool; 2],
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            rate_pps: None,
            warmup: Duration::from_millis(500),
            measure: Duration::from_secs(2),
            stamp_every: 64,
            sides: [true, true],
        }
    }
}

/// What a generator run measured.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Frames offered during the measurement: taken by the ports, plus (at
    /// a fixed rate) those the ports refused because the device under test
    /// had not made room — which count as lost.
    pub offered: u64,
    /// Frames the ports took.
    pub sent: u64,
    /// Frames received back during the measurement and the drain after it.
    pub received: u64,
    /// Bytes of those frames.
    pub received_bytes: u64,
    /// Measurement time.
    pub elapsed: Duration,
    /// Latency of the stamped frames that came back, in nanoseconds.
    pub latency: crate::latency::Histogram,
}

impl RunReport {
    /// Received million frames per second (both directions).
    pub fn mpps(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }

    /// Received Gbit/s of frame bytes (no preamble, gap or FCS counted).
    pub fn gbps(&self) -> f64 {
        self.received_bytes as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e9
    }

    /// Offered million frames per second.
    pub fn offered_mpps(&self) -> f64 {
        self.offered as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }

    /// Frames offered and not received.
    pub fn lost(&self) -> u64 {
        self.offered.saturating_sub(self.received)
    }
}

/// A packet generator on two ports: each side's templates are cycled
/// through (sent by reference count, no copy and no allocation per frame);
/// one frame in `stamp_every` is a fresh copy stamped with the TSC, whose
/// round trip through the device under test goes into the latency histogram.
pub struct Generator<'a> {
    ports: [Port; 2],
    pool: &'a Mempool,
    templates: [Vec<(Mbuf, bool)>; 2],
    next: [usize; 2],
    run_id: u32,
}

impl<'a> Generator<'a> {
    /// A generator sending `traffic[side]` on `ports[side]`.
    pub fn new(
        ports: [Port; 2],
        pool: &'a Mempool,
        traffic: &[Vec<crate::traffic::Template>; 2],
    ) -> Result<Generator<'a>> {
        let mut templates: [Vec<(Mbuf, bool)>; 2] = [Vec::new(), Vec::new()];
        for (t, frames) in templates.iter_mut().zip(traffic.iter()) {
            anyhow::ensure!(!frames.is_empty(), "empty traffic mix");
            for f in frames {
                t.push((Mbuf::from_bytes(pool, &f.frame)?, f.stampable));
            }
        }
        Ok(Generator {
            ports,
            pool,
            templates,
            next: [0; 2],
            run_id: 0,
        })
    }

    /// Drops whatever waits on the ports; returns how many frames.
    pub fn drain(&self, quiet: Duration) -> u64 {
        let mut rx = Burst::new();
        let mut n = 0u64;
        let mut last = Instant::now();
        let give_up = Instant::now() + quiet * 20;
        while last.elapsed() < quiet && Instant::now() < give_up {
            for p in &self.ports {
                if p.rx_burst(0, &mut rx) > 0 {
                    n += rx.free_all() as u64;
                    last = Instant::now();
                }
            }
        }
        n
    }

    /// One run: warm-up, measurement, then (at a fixed rate) a drain that
    /// collects frames still in flight so that loss is exact.
    pub fn run(&mut self, cfg: &RunConfig) -> Result<RunReport> {
        self.run_id = self.run_id.wrapping_add(1);
        let hz = dpdk::tsc_hz().max(1) as f64;
        let ns_per_cycle = 1e9 / hz;
        let sides_on = cfg.sides.iter().filter(|&&s| s).count().max(1) as f64;
        // Frames per TSC cycle per side.
        let per_cycle = cfg.rate_pps.map(|r| r / sides_on / hz);
        let stamp_mask = if cfg.stamp_every == 0 {
            u64::MAX
        } else {
            u64::from(cfg.stamp_every.next_power_of_two()) - 1
        };
        let mut rep = RunReport::default();
        let mut tx = [Burst::new(), Burst::new()];
        let mut rx = Burst::new();
        let mut counter = [0u64; 2];
        // Pacing: frames due since `pace_t0` per side, offered since then.
        let start = dpdk::tsc();
        let warm_end = start + (cfg.warmup.as_secs_f64() * hz) as u64;
        let end = warm_end + (cfg.measure.as_secs_f64() * hz) as u64;
        let mut offered_since_start = [0u64; 2];
        let mut measuring = false;
        let mut wall0 = Instant::now();
        let run_id = self.run_id;
        loop {
            let now = dpdk::tsc();
            if !measuring && now >= warm_end {
                measuring = true;
                wall0 = Instant::now();
                rep = RunReport::default();
            }
            if now >= end {
                break;
            }
            for side in 0..2 {
                if !cfg.sides[side] {
                    continue;
                }
                let t = &self.templates[side];
                let burst = &mut tx[side];
                // How many to add this turn.
                let want = match per_cycle {
                    None => burst.room(),
                    Some(pc) => {
                        let due = ((now - start) as f64 * pc) as u64;
                        (due.saturating_sub(offered_since_start[side]) as usize).min(burst.room())
                    }
                };
                for _ in 0..want {
                    let (m, stampable) = &t[self.next[side]];
                    let m = if *stampable && counter[side] & stamp_mask == 0 {
                        stamped(self.pool, m, run_id, dpdk::tsc())?
                    } else {
                        m.share()
                    };
                    counter[side] += 1;
                    let _ = burst.push(m);
                    self.next[side] = if self.next[side] + 1 == t.len() {
                        0
                    } else {
                        self.next[side] + 1
                    };
                }
                let attempted = burst.len();
                let n = self.ports[side].tx_burst(0, burst);
                if per_cycle.is_some() {
                    // At a fixed rate a refused frame is lost: the device
                    // under test had no room for it in time.
                    offered_since_start[side] += attempted as u64;
                    if measuring {
                        rep.offered += attempted as u64;
                    }
                    burst.free_all();
                } else if measuring {
                    rep.offered += n as u64;
                }
                if measuring {
                    rep.sent += n as u64;
                }
            }
            for side in 0..2 {
                if self.ports[side].rx_burst(0, &mut rx) > 0 {
                    if measuring {
                        receive(&mut rx, &mut rep, run_id, ns_per_cycle);
                    }
                    rx.free_all();
                }
            }
        }
        rep.elapsed = wall0.elapsed();
        for b in &mut tx {
            b.free_all();
        }
        // Collect what is still in flight (at a fixed rate these frames
        // were offered in the measurement; at full speed they are counted
        // too, which the long measurement makes negligible).
        let mut last = Instant::now();
        let give_up = Instant::now() + Duration::from_millis(500);
        while last.elapsed() < Duration::from_millis(20) && Instant::now() < give_up {
            for side in 0..2 {
                if self.ports[side].rx_burst(0, &mut rx) > 0 {
                    if per_cycle.is_some() {
                        receive(&mut rx, &mut rep, run_id, ns_per_cycle);
                    }
                    rx.free_all();
                    last = Instant::now();
                }
            }
        }
        Ok(rep)
    }
}

/// A fresh copy of template `m` with the stamp in its last 16 bytes:
/// magic, run id, TSC.
fn stamped(pool: &Mempool, m: &Mbuf, run_id: u32, tsc: u64) -> Result<Mbuf> {
    let mut c = Mbuf::from_bytes(pool, m.data())?;
    let d = c
        .data_mut()
        .ok_or_else(|| anyhow::anyhow!("fresh mbuf not writable"))?;
    let at = d.len() - crate::traffic::STAMP_LEN;
    d[at..at + 4].copy_from_slice(&STAMP_MAGIC.to_be_bytes());
    d[at + 4..at + 8].copy_from_slice(&run_id.to_be_bytes());
    d[at + 8..at + 16].copy_from_slice(&tsc.to_be_bytes());
    Ok(c)
}

/// The TSC stamp of a frame stamped in run `run_id`.
fn stamp_of(frame: &[u8], run_id: u32) -> Option<u64> {
    let at = frame.len().checked_sub(crate::traffic::STAMP_LEN)?;
    let s = &frame[at..];
    if s[0..4] != STAMP_MAGIC.to_be_bytes() || s[4..8] != run_id.to_be_bytes() {
        return None;
    }
    Some(u64::from_be_bytes(s[8..16].try_into().ok()?))
}

#[inline]
fn receive(rx: &mut Burst, rep: &mut RunReport, run_id: u32, ns_per_cycle: f64) {
    let now = dpdk::tsc();
    for m in rx.as_slice() {
        rep.received += 1;
        rep.received_bytes += u64::from(m.pkt_len());
        if let Some(t) = stamp_of(m.data(), run_id) {
            rep.latency
                .record((now.saturating_sub(t) as f64 * ns_per_cycle) as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_found_only_in_their_own_run() {
        let mut f = crate::traffic::background(0, 0, 64);
        assert_eq!(stamp_of(&f, 1), None);
        let at = f.len() - 16;
        f[at..at + 4].copy_from_slice(&STAMP_MAGIC.to_be_bytes());
        f[at + 4..at + 8].copy_from_slice(&7u32.to_be_bytes());
        f[at + 8..].copy_from_slice(&123_456u64.to_be_bytes());
        assert_eq!(stamp_of(&f, 7), Some(123_456));
        assert_eq!(stamp_of(&f, 8), None);
        assert_eq!(stamp_of(&f[..10], 7), None);
    }

    #[test]
    fn report_rates_and_loss() {
        let r = RunReport {
            offered: 2_000_000,
            sent: 1_900_000,
            received: 1_500_000,
            received_bytes: 1_500_000 * 64,
            elapsed: Duration::from_millis(500),
            ..RunReport::default()
        };
        assert!((r.mpps() - 3.0).abs() < 1e-9);
        assert!((r.offered_mpps() - 4.0).abs() < 1e-9);
        assert!((r.gbps() - 1.536).abs() < 1e-9);
        assert_eq!(r.lost(), 500_000);
    }
}
