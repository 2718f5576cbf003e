//! The forward scenario: bootcache against `dpdk-testpmd --forward-mode=io`
//! on the same vhost-user ↔ virtio-user ports, with bootcache's filter table
//! empty and holding N dynamic entries: full-speed rate across frame sizes,
//! the zero-loss rate (RFC 2544 binary search) and latency at that rate,
//! and latency at a low fixed rate (10 kpps: a bridge's own delay, without
//! queueing).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::dut::{Dut, DutConfig, DutProcess};
use crate::latency::Histogram;
use crate::pktgen::{Generator, RunConfig};
use crate::results::{f, Table};
use crate::search::{zero_loss, Trial};
use crate::traffic::{build, FrameSize, TrafficSpec};
use bootcache_testbed::harness::Harness;
use bootcache_testbed::process::stat;

/// What to run.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// Frame sizes measured at full speed with the empty table (the sweep).
    pub sweep: Vec<FrameSize>,
    /// Sizes with zero-loss search and latency, in both table states.
    pub headline: Vec<FrameSize>,
    /// Dynamic filter entries in the "full" state (0: skip it).
    pub entries: u16,
    /// Background flows.
    pub flows: usize,
    /// PXE share of the traffic, per mille.
    pub pxe_per_mille: usize,
    /// Device starts per configuration, alternating bootcache and testpmd.
    pub rounds: usize,
    /// Full-speed measurement per size.
    pub measure: Duration,
    /// Zero-loss trial length.
    pub trial: Duration,
    /// Trials per zero-loss search.
    pub max_trials: usize,
    /// Latency run at the zero-loss rate.
    pub latency: Duration,
    /// Offer this many frames per second (both directions) instead of as
    /// many as the ports take, in the rate measurement.
    pub rate_pps: Option<f64>,
    /// Latency also at this low fixed rate (frames per second, both
    /// directions), every background frame stamped, for the headline sizes
    /// (None: skip).
    pub low_rate_pps: Option<f64>,
    /// Length of the low-rate latency run.
    pub low_rate_measure: Duration,
}

/// The low fixed rate of the latency run: 10 kpps, where nothing queues
/// and a frame's latency is the bridge's own delay.
pub const LOW_RATE_PPS: f64 = 10_000.0;

impl ForwardConfig {
    /// Sizes measured with the empty table: the sweep, then any headline
    /// size the sweep lacks.
    pub fn empty_sizes(&self) -> Vec<FrameSize> {
        let mut v = self.sweep.clone();
        v.extend(self.headline.iter().filter(|s| !self.sweep.contains(s)));
        v
    }

    /// The full run (a few minutes) or the quick one (seconds per device).
    pub fn new(quick: bool) -> ForwardConfig {
        let sweep = [64, 128, 256, 512, 1024, 1518]
            .into_iter()
            .map(FrameSize::Fixed)
            .chain([FrameSize::Imix])
            .collect();
        if quick {
            ForwardConfig {
                sweep: vec![FrameSize::Fixed(64), FrameSize::Imix],
                headline: vec![FrameSize::Fixed(64)],
                entries: 1000,
                flows: 1000,
                pxe_per_mille: 10,
                rounds: 1,
                measure: Duration::from_millis(300),
                trial: Duration::from_millis(100),
                max_trials: 4,
                latency: Duration::from_millis(200),
                rate_pps: None,
                low_rate_pps: Some(LOW_RATE_PPS),
                low_rate_measure: Duration::from_millis(200),
            }
        } else {
            ForwardConfig {
                sweep,
                headline: vec![FrameSize::Fixed(64), FrameSize::Imix],
                entries: 10_000,
                flows: 1000,
                pxe_per_mille: 10,
                rounds: 3,
                measure: Duration::from_secs(2),
                trial: Duration::from_millis(500),
                max_trials: 8,
                latency: Duration::from_secs(1),
                rate_pps: None,
                low_rate_pps: Some(LOW_RATE_PPS),
                low_rate_measure: Duration::from_secs(1),
            }
        }
    }
}

/// One measurement of one device at one size and table state.
#[derive(Debug, Clone)]
struct Sample {
    filter: &'static str,
    size: FrameSize,
    dut: Dut,
    round: usize,
    mpps: f64,
    gbps: f64,
    offered_mpps: f64,
    zero_loss_mpps: Option<f64>,
    latency: Option<Histogram>,
    latency_lost: u64,
    low_rate: Option<Histogram>,
    low_rate_lost: u64,
}

/// Everything the scenario measured (medians over rounds), for the plots.
#[derive(Debug, Clone, Default)]
pub struct ForwardResults {
    /// Full-speed Mpps by (device, frame size) with the empty table.
    pub sweep: Vec<(Dut, FrameSize, f64)>,
    /// Latency histograms at the zero-loss rate, 64 B, empty table, by device
    /// (all rounds merged).
    pub latency: Vec<(Dut, Histogram)>,
    /// The summary table.
    pub table: Table,
    /// Latency at the low fixed rate, by table state and size (medians of
    /// nothing: all rounds' samples merged), with the ratios.
    pub low_rate: Table,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the scenario on harness `h`; `work` is a scratch directory.
pub fn run(
    h: &Harness,
    base: &DutConfig,
    cfg: &ForwardConfig,
    work: &Path,
    out: &Path,
) -> Result<ForwardResults> {
    let plain_args = vec![
        "--cache-dir".to_string(),
        work.join("plain-cache").display().to_string(),
    ];
    let cache = work.join("forward-cache");
    let mut full_args = crate::dut::write_config(
        &work.join("forward.toml"),
        &cache,
        &format!(
            "[limits]\nmax_transfers = {}\nmax_filter_entries = {}\nredirect_ring = 16384\n",
            // All requests come from one client address, which may hold a
            // sixteenth of max_transfers.
            16 * (u32::from(cfg.entries) + 16),
            2 * u32::from(cfg.entries) + 16
        ),
    )?;
    // The pool must leave the 16384-slot ring its room after the
    // descriptors (bootcache caps the ring otherwise).
    full_args.extend(["--mbufs".to_string(), "32767".to_string()]);
    let mut filters: Vec<(&'static str, Vec<String>)> = vec![("empty", plain_args)];
    if cfg.entries > 0 {
        filters.push(("full", full_args));
    }
    let (rrqs, _) = bootcache_testbed::scenario::filter_bench_traffic(cfg.entries.max(1), 0);
    let mut samples: Vec<Sample> = Vec::new();
    for round in 1..=cfg.rounds.max(1) {
        for (filter, args) in &filters {
            for dut in [Dut::Bootcache, Dut::Testpmd] {
                let dcfg = DutConfig {
                    bootcache_args: args.clone(),
                    ..base.clone()
                };
                let prefix = format!("bb-fw-{}-{}", dut.name(), std::process::id());
                let p = DutProcess::start(h, dut, &dcfg, &prefix)?;
                if *filter == "full" {
                    h.replay(&rrqs, 256, Duration::from_secs(3))
                        .context("replaying the read requests that fill the filter")?;
                    std::thread::sleep(Duration::from_millis(500));
                    h.drain();
                }
                let sizes: Vec<FrameSize> = if *filter == "empty" {
                    cfg.empty_sizes()
                } else {
                    cfg.headline.clone()
                };
                let mut res = Vec::new();
                for size in sizes {
                    res.push(measure(h, cfg, filter, size, dut, round)?);
                }
                let text = p.stop(h)?;
                if dut == Dut::Bootcache && *filter == "full" {
                    println!(
                        "  bootcache, {} rules: transfers seen={} active={}, transfer-rule hits={}, copies={} copy_drops={}",
                        cfg.entries,
                        stat(&text, "transfers", "seen").unwrap_or(0),
                        stat(&text, "transfers", "active").unwrap_or(0),
                        stat(&text, "rules", "transfer-rules").unwrap_or(0),
                        stat(&text, "redirect", "copied").unwrap_or(0),
                        stat(&text, "redirect", "copy_drops").unwrap_or(0),
                    );
                }
                for s in &res {
                    println!(
                        "  round {round}, filter {filter:5}, {:>4} B, {:10}: {:6.2} Mpps {:6.2} Gbit/s (offered {:.2} Mpps){}",
                        s.size.to_string(),
                        dut.name(),
                        s.mpps,
                        s.gbps,
                        s.offered_mpps,
                        match (&s.zero_loss_mpps, &s.latency) {
                            (Some(z), Some(l)) => format!(
                                ", zero-loss {z:6.2} Mpps, latency there p50 {:.1} p99 {:.1} p99.9 {:.1} µs ({} lost)",
                                l.percentile(0.5) as f64 / 1e3,
                                l.percentile(0.99) as f64 / 1e3,
                                l.percentile(0.999) as f64 / 1e3,
                                s.latency_lost
                            ),
                            _ => String::new(),
                        }
                    );
                    if let Some(l) = &s.low_rate {
                        println!(
                            "  round {round}, filter {filter:5}, {:>4} B, {:10}: at {:.0} kpps latency p50 {:.1} p99 {:.1} µs ({} frames, {} lost)",
                            s.size.to_string(),
                            dut.name(),
                            cfg.low_rate_pps.unwrap_or(0.0) / 1e3,
                            l.percentile(0.5) as f64 / 1e3,
                            l.percentile(0.99) as f64 / 1e3,
                            l.count(),
                            s.low_rate_lost
                        );
                    }
                }
                samples.extend(res);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&cache);
    summarise(cfg, &samples, out)
}

/// Full speed, then (headline sizes) the zero-loss search and latency.
fn measure(
    h: &Harness,
    cfg: &ForwardConfig,
    filter: &'static str,
    size: FrameSize,
    dut: Dut,
    round: usize,
) -> Result<Sample> {
    let traffic = build(&TrafficSpec {
        size,
        flows: cfg.flows,
        pxe_per_mille: cfg.pxe_per_mille,
        transfers: cfg.entries.max(1),
    })?;
    let mut gen = Generator::new(h.ports, &h.pool, &traffic)?;
    let full = gen.run(&RunConfig {
        rate_pps: cfg.rate_pps,
        warmup: cfg.measure / 4,
        measure: cfg.measure,
        ..RunConfig::default()
    })?;
    if full.received == 0 {
        eprintln!(
            "  warning: {} forwarded nothing in {:?} at {size} B (stalled: is the machine busy?)",
            dut.name(),
            cfg.measure
        );
    }
    let mut s = Sample {
        filter,
        size,
        dut,
        round,
        mpps: full.mpps(),
        offered_mpps: full.offered_mpps(),
        gbps: full.gbps(),
        zero_loss_mpps: None,
        latency: None,
        latency_lost: 0,
        low_rate: None,
        low_rate_lost: 0,
    };
    if cfg.headline.contains(&size) {
        gen.drain(Duration::from_millis(20));
        let hi = full.mpps() * 1e6 * 1.02;
        let z = zero_loss(hi * 0.05, hi, 0.01, cfg.max_trials, |rate| {
            let r = gen.run(&RunConfig {
                rate_pps: Some(rate),
                warmup: Duration::ZERO,
                measure: cfg.trial,
                stamp_every: 0,
                ..RunConfig::default()
            })?;
            Ok::<_, anyhow::Error>(Trial {
                target_pps: rate,
                offered_pps: r.offered as f64 / r.elapsed.as_secs_f64().max(1e-9),
                lost: r.lost(),
            })
        })?;
        // Latency at the zero-loss rate (RFC 2544 measures it at the
        // throughput rate); at 5 % of full speed if nothing was loss-free.
        let at = if z.pps > 0.0 { z.pps } else { hi * 0.05 };
        let l = gen.run(&RunConfig {
            rate_pps: Some(at),
            warmup: Duration::ZERO,
            measure: cfg.latency,
            stamp_every: 16,
            ..RunConfig::default()
        })?;
        s.zero_loss_mpps = Some(z.pps / 1e6);
        s.latency_lost = l.lost();
        s.latency = Some(l.latency);
        if let Some(rate) = cfg.low_rate_pps {
            // A bridge's own delay: frames one at a time, far apart, each
            // background frame stamped.
            gen.drain(Duration::from_millis(20));
            let l = gen.run(&RunConfig {
                rate_pps: Some(rate),
                warmup: cfg.low_rate_measure / 10,
                measure: cfg.low_rate_measure,
                stamp_every: 1,
                ..RunConfig::default()
            })?;
            s.low_rate_lost = l.lost();
            s.low_rate = Some(l.latency);
        }
    }
    gen.drain(Duration::from_millis(20));
    Ok(s)
}

fn summarise(cfg: &ForwardConfig, samples: &[Sample], out: &Path) -> Result<ForwardResults> {
    let mut res = ForwardResults::default();
    let mut raw = Table::new(&[
        "round",
        "filter",
        "size",
        "device",
        "mpps",
        "gbps",
        "zero_loss_mpps",
        "p50_us",
        "p99_us",
        "p999_us",
        "latency_lost",
        "low_rate_p50_us",
        "low_rate_p99_us",
        "low_rate_lost",
    ]);
    for s in samples {
        let l = s.latency.as_ref();
        let p = |q: f64| {
            l.map(|h| f(h.percentile(q) as f64 / 1e3, 2))
                .unwrap_or_default()
        };
        let mut row = vec![
            s.round.to_string(),
            s.filter.to_string(),
            s.size.to_string(),
            s.dut.name().to_string(),
            f(s.mpps, 3),
            f(s.gbps, 3),
            s.zero_loss_mpps.map(|z| f(z, 3)).unwrap_or_default(),
            p(0.5),
            p(0.99),
            p(0.999),
            if l.is_some() {
                s.latency_lost.to_string()
            } else {
                String::new()
            },
        ];
        match &s.low_rate {
            Some(h) => row.extend([
                f(h.percentile(0.5) as f64 / 1e3, 2),
                f(h.percentile(0.99) as f64 / 1e3, 2),
                s.low_rate_lost.to_string(),
            ]),
            None => row.extend(std::iter::repeat_n(String::new(), 3)),
        }
        raw.push(row);
    }
    raw.write(out, "forward-rounds")?;
    fn pick<'a>(
        samples: &'a [Sample],
        filter: &'a str,
        size: FrameSize,
        dut: Dut,
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        samples
            .iter()
            .filter(move |s| s.filter == filter && s.size == size && s.dut == dut)
    }
    let mut t = Table::new(&[
        "filter",
        "size",
        "bootcache_mpps",
        "testpmd_mpps",
        "ratio",
        "bootcache_zero_loss_mpps",
        "testpmd_zero_loss_mpps",
        "zero_loss_ratio",
        "bootcache_p50_us",
        "bootcache_p99_us",
        "bootcache_p999_us",
        "testpmd_p50_us",
        "testpmd_p99_us",
        "testpmd_p999_us",
    ]);
    let filters: &[&str] = if cfg.entries > 0 {
        &["empty", "full"]
    } else {
        &["empty"]
    };
    for &filter in filters {
        let sizes = if filter == "empty" {
            cfg.empty_sizes()
        } else {
            cfg.headline.clone()
        };
        for size in sizes {
            let mpps = |d| median(pick(samples, filter, size, d).map(|s| s.mpps).collect());
            let zl = |d| {
                median(
                    pick(samples, filter, size, d)
                        .filter_map(|s| s.zero_loss_mpps)
                        .collect(),
                )
            };
            let hist = |d| {
                let mut h = Histogram::new();
                for s in pick(samples, filter, size, d) {
                    if let Some(l) = &s.latency {
                        h.merge(l);
                    }
                }
                h
            };
            let (b, tp) = (mpps(Dut::Bootcache), mpps(Dut::Testpmd));
            if filter == "empty" {
                res.sweep.push((Dut::Bootcache, size, b));
                res.sweep.push((Dut::Testpmd, size, tp));
            }
            let mut row = vec![
                if filter == "full" {
                    format!("{} entries", cfg.entries)
                } else {
                    "empty".to_string()
                },
                size.to_string(),
                f(b, 2),
                f(tp, 2),
                f(b / tp, 3),
            ];
            if cfg.headline.contains(&size) {
                let (zb, zt) = (zl(Dut::Bootcache), zl(Dut::Testpmd));
                let (hb, ht) = (hist(Dut::Bootcache), hist(Dut::Testpmd));
                let us = |h: &Histogram, q| f(h.percentile(q) as f64 / 1e3, 1);
                row.extend([f(zb, 2), f(zt, 2), f(zb / zt, 3)]);
                row.extend([us(&hb, 0.5), us(&hb, 0.99), us(&hb, 0.999)]);
                row.extend([us(&ht, 0.5), us(&ht, 0.99), us(&ht, 0.999)]);
                if filter == "empty" && size == FrameSize::Fixed(64) {
                    res.latency.push((Dut::Bootcache, hb));
                    res.latency.push((Dut::Testpmd, ht));
                }
            } else {
                row.extend(std::iter::repeat_n(String::new(), 9));
            }
            t.push(row);
        }
    }
    t.write(out, "forward")?;
    res.low_rate = low_rate_table(cfg, samples, filters);
    if cfg.low_rate_pps.is_some() {
        res.low_rate.write(out, "forward-lowrate")?;
    }
    let mut cdf = Table::new(&["device", "latency_us", "fraction"]);
    for (dut, h) in &res.latency {
        for (ns, q) in thin_cdf(&h.cdf()) {
            cdf.push(vec![dut.name().into(), f(ns as f64 / 1e3, 3), f(q, 6)]);
        }
    }
    cdf.write(out, "forward-latency-cdf")?;
    res.table = t;
    Ok(res)
}

/// Latency at the low fixed rate: per table state and headline size, both
/// devices' p50 and p99 over all rounds' samples, and bootcache ÷ testpmd.
fn low_rate_table(cfg: &ForwardConfig, samples: &[Sample], filters: &[&str]) -> Table {
    let mut t = Table::new(&[
        "filter",
        "size",
        "rate_kpps",
        "bootcache_p50_us",
        "bootcache_p99_us",
        "testpmd_p50_us",
        "testpmd_p99_us",
        "p50_ratio",
        "p99_ratio",
        "bootcache_frames",
        "testpmd_frames",
        "bootcache_lost",
        "testpmd_lost",
    ]);
    let Some(rate) = cfg.low_rate_pps else {
        return t;
    };
    for &filter in filters {
        for &size in &cfg.headline {
            let merged = |dut: Dut| {
                let mut h = Histogram::new();
                let mut lost = 0;
                for s in samples
                    .iter()
                    .filter(|s| s.filter == filter && s.size == size && s.dut == dut)
                {
                    if let Some(l) = &s.low_rate {
                        h.merge(l);
                        lost += s.low_rate_lost;
                    }
                }
                (h, lost)
            };
            let ((hb, lb), (ht, lt)) = (merged(Dut::Bootcache), merged(Dut::Testpmd));
            if hb.count() == 0 && ht.count() == 0 {
                continue;
            }
            let us = |h: &Histogram, q| h.percentile(q) as f64 / 1e3;
            t.push(vec![
                if filter == "full" {
                    format!("{} entries", cfg.entries)
                } else {
                    "empty".to_string()
                },
                size.to_string(),
                f(rate / 1e3, 1),
                f(us(&hb, 0.5), 1),
                f(us(&hb, 0.99), 1),
                f(us(&ht, 0.5), 1),
                f(us(&ht, 0.99), 1),
                f(us(&hb, 0.5) / us(&ht, 0.5), 3),
                f(us(&hb, 0.99) / us(&ht, 0.99), 3),
                hb.count().to_string(),
                ht.count().to_string(),
                lb.to_string(),
                lt.to_string(),
            ]);
        }
    }
    t
}

/// One line per row of the low-rate table, for the reader.
pub fn low_rate_lines(t: &Table) -> Vec<String> {
    let col = |name: &str| t.columns.iter().position(|c| c == name);
    t.rows
        .iter()
        .map(|r| {
            let v = |name: &str| col(name).map_or("?", |i| r[i].as_str()).to_string();
            format!(
                "latency at {} kpps, filter {}, {} B: bootcache p50 {} µs p99 {} µs, testpmd p50 {} µs p99 {} µs; bootcache ÷ testpmd p50 {} p99 {} [target <= 1.1] ({} / {} frames, {} / {} lost)",
                v("rate_kpps"),
                v("filter"),
                v("size"),
                v("bootcache_p50_us"),
                v("bootcache_p99_us"),
                v("testpmd_p50_us"),
                v("testpmd_p99_us"),
                v("p50_ratio"),
                v("p99_ratio"),
                v("bootcache_frames"),
                v("testpmd_frames"),
                v("bootcache_lost"),
                v("testpmd_lost"),
            )
        })
        .collect()
}

/// A CDF with at most a few hundred points: a point is kept when the
/// fraction moved by 0.5 % since the last one kept (0.01 % in the top
/// percent, where the tail is), and the last point always.
pub fn thin_cdf(cdf: &[(u64, f64)]) -> Vec<(u64, f64)> {
    let mut out: Vec<(u64, f64)> = Vec::new();
    for (i, &(x, q)) in cdf.iter().enumerate() {
        let last_q = out.last().map_or(-1.0, |p| p.1);
        let step = if q >= 0.99 { 0.0001 } else { 0.005 };
        if q - last_q >= step || i + 1 == cdf.len() {
            out.push((x, q));
        }
    }
    out
}

/// Where the scenario's files go, for messages.
pub fn files(out: &Path) -> Vec<PathBuf> {
    [
        "forward",
        "forward-rounds",
        "forward-latency-cdf",
        "forward-lowrate",
    ]
    .iter()
    .map(|n| out.join(format!("{n}.csv")))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_rate_table_merges_rounds_and_divides() {
        let cfg = ForwardConfig::new(true);
        let sample = |dut, round, base: u64| {
            let mut h = Histogram::new();
            for i in 0..100 {
                h.record(base + i);
            }
            Sample {
                filter: "empty",
                size: FrameSize::Fixed(64),
                dut,
                round,
                mpps: 1.0,
                gbps: 1.0,
                offered_mpps: 1.0,
                zero_loss_mpps: None,
                latency: None,
                latency_lost: 0,
                low_rate: Some(h),
                low_rate_lost: 1,
            }
        };
        let samples = [
            sample(Dut::Bootcache, 1, 20_000),
            sample(Dut::Bootcache, 2, 20_000),
            sample(Dut::Testpmd, 1, 10_000),
            sample(Dut::Testpmd, 2, 10_000),
        ];
        let t = low_rate_table(&cfg, &samples, &["empty"]);
        assert_eq!(t.rows.len(), 1);
        let get = |c: &str| {
            let i = t.columns.iter().position(|x| x == c).unwrap();
            t.rows[0][i].clone()
        };
        assert_eq!(get("rate_kpps"), "10.0");
        assert_eq!(get("bootcache_frames"), "200");
        assert_eq!(get("testpmd_lost"), "2");
        let ratio: f64 = get("p50_ratio").parse().unwrap();
        assert!((ratio - 2.0).abs() < 0.05, "{ratio}");
        let lines = low_rate_lines(&t);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("latency at 10.0 kpps, filter empty, 64 B: bootcache p50 20."));
        // Skipped: no table.
        let off = ForwardConfig {
            low_rate_pps: None,
            ..cfg
        };
        assert!(low_rate_table(&off, &samples, &["empty"]).rows.is_empty());
    }

    #[test]
    fn thin_cdf_keeps_the_shape_and_the_tail() {
        let mut h = Histogram::new();
        // Log-uniform over 1 µs–1 ms: each bucket holds about 0.16 %.
        for k in 0..64_000 {
            h.record((1000.0 * 2f64.powf(k as f64 / 6400.0)) as u64);
        }
        let full = h.cdf();
        let thin = thin_cdf(&full);
        assert!(thin.len() < 400, "{} points", thin.len());
        assert_eq!(thin.last(), full.last());
        assert!(thin.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
        // Below the 99th percentile, no gap of more than 0.5 % plus one
        // bucket (about 0.2 % here).
        assert!(thin
            .windows(2)
            .all(|w| w[1].1 > 0.99 || w[1].1 - w[0].1 < 0.008));
    }
}
