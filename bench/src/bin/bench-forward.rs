//! `bench-forward`: forwarding rate of bootcache against `dpdk-testpmd
//! --forward-mode=io` on the same ports, one after the other, in one run:
//! a net_null pair (no generator: the null PMD makes and eats frames) and a
//! virtio-user pair driven by a vhost-side generator in this process.
//! Prints Mpps for both and the ratio; writes bench/results/forward.json.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bootcache_bench::frames::test_frame;
use bootcache_bench::harness::Harness;
use bootcache_bench::pktgen::blast_mix;
use bootcache_bench::process::{default_bootcache_bin, remove_hugepage_files};
use bootcache_bench::scenario::filter_bench_traffic;
use clap::Parser;

/// Forwarding benchmark: bootcache vs testpmd io-forward.
#[derive(Debug, Parser)]
#[command(name = "bench-forward")]
struct Cli {
    /// Seconds of measurement per run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Frame length in bytes (without FCS).
    #[arg(long, default_value_t = 64)]
    frame_len: usize,
    /// The bootcache binary (default: next to this one).
    #[arg(long)]
    bootcache: Option<PathBuf>,
    /// Where to write forward.json.
    #[arg(long, default_value = "bench/results")]
    results: PathBuf,
    /// Only the net_null pair (no vhost generator).
    #[arg(long)]
    null_only: bool,
    /// Also run the virtio-user pair with this many TFTP transfer rules in
    /// bootcache's header filter (0: skip).
    #[arg(long, default_value_t = 10_000)]
    filter_entries: u16,
    /// Runs of each device, alternating bootcache and testpmd; the table
    /// shows medians (this VM's rates drift between runs).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Share of that run's traffic (per mille) matching the transfer rules.
    #[arg(long, default_value_t = 10)]
    match_per_mille: usize,
}

#[derive(Clone, Copy)]
enum Dut {
    Bootcache,
    Testpmd,
}

impl Dut {
    fn name(self) -> &'static str {
        match self {
            Dut::Bootcache => "bootcache",
            Dut::Testpmd => "testpmd-io",
        }
    }

    /// Starts the device under test with `vdevs` and EAL extras.
    fn spawn(
        self,
        bin: &Path,
        prefix: &str,
        vdevs: &[String],
        eal_extra: &[&str],
        app: &[&str],
    ) -> Result<Child> {
        let mut cmd = match self {
            Dut::Bootcache => Command::new(bin),
            Dut::Testpmd => Command::new("dpdk-testpmd"),
        };
        cmd.args([
            "--lcores",
            "0@0,1@1",
            "--file-prefix",
            prefix,
            "--no-pci",
            "-m",
            "512",
        ]);
        cmd.args(["--log-level", "lib.eal:warning"]).args(eal_extra);
        for v in vdevs {
            cmd.arg("--vdev").arg(v);
        }
        cmd.arg("--");
        if let Dut::Bootcache = self {
            cmd.args(app);
        }
        if let Dut::Testpmd = self {
            // Same shape as bootcache: one forwarding core, 1024 descriptors, bursts of 32.
            cmd.args([
                "--forward-mode=io",
                "--auto-start",
                "--stats-period=3600",
                "--nb-cores=1",
            ]);
            cmd.args(["--rxd=1024", "--txd=1024", "--burst=32"]);
        }
        // bootcache's final statistics go to a file next to its prefix, for the report.
        let out = match self {
            Dut::Bootcache => std::fs::File::create(stats_file(prefix))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
            Dut::Testpmd => Stdio::null(),
        };
        cmd.stdin(Stdio::null()).stdout(out).stderr(Stdio::null());
        cmd.env("RUST_LOG", "warn");
        cmd.spawn()
            .with_context(|| format!("starting {}", self.name()))
    }
}

fn stats_file(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{prefix}.stats"))
}

/// The slow path's transfer counters from a bootcache run's final statistics.
fn transfer_summary(prefix: &str) -> String {
    let text = std::fs::read_to_string(stats_file(prefix)).unwrap_or_default();
    let _ = std::fs::remove_file(stats_file(prefix));
    let pick = |key: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or("?")
            .to_string()
    };
    format!(
        "transfers seen={} active={}, transfer-rule hits={}, copies={} copy_drops={}",
        pick("seen="),
        pick("active="),
        pick("transfer-rules="),
        pick("copied="),
        pick("copy_drops=")
    )
}

fn stop(mut child: Child, prefix: &str) {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    remove_hugepage_files(prefix);
}

/// Sum of opackets over ports 0 and 1, via the DPDK telemetry socket.
fn telemetry_opackets(prefix: &str) -> Result<u64> {
    let mut total = 0;
    for port in 0..2 {
        let mut c = Command::new("dpdk-telemetry.py")
            .args(["-f", prefix])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("dpdk-telemetry.py")?;
        c.stdin
            .take()
            .unwrap()
            .write_all(format!("/ethdev/stats,{port}\n").as_bytes())?;
        let out = c.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let v = text
            .split("\"opackets\":")
            .nth(1)
            .and_then(|s| s.trim_start().split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|s| s.parse::<u64>().ok())
            .with_context(|| format!("no opackets in telemetry answer: {text}"))?;
        total += v;
    }
    Ok(total)
}

/// net_null pair: the DUT alone; rate from telemetry counters over `secs`.
fn run_null(dut: Dut, bin: &Path, secs: u64, app: &[&str]) -> Result<f64> {
    let prefix = format!("bf-null-{}-{}", dut.name(), std::process::id());
    let vdevs = ["net_null0".to_string(), "net_null1".to_string()];
    let child = dut.spawn(bin, &prefix, &vdevs, &[], app)?;
    let result = (|| {
        std::thread::sleep(Duration::from_secs(2));
        let (a, t0) = (telemetry_opackets(&prefix)?, Instant::now());
        std::thread::sleep(Duration::from_secs(secs));
        let (b, t1) = (telemetry_opackets(&prefix)?, Instant::now());
        Ok((b - a) as f64 / (t1 - t0).as_secs_f64() / 1e6)
    })();
    stop(child, &prefix);
    let _ = std::fs::remove_file(stats_file(&prefix));
    result
}

/// virtio-user pair: the DUT on virtio-user, the generator on vhost here.
/// `setup` frames are replayed first (e.g. requests that fill the filter).
fn run_virtio(
    h: &Harness,
    dut: Dut,
    bin: &Path,
    secs: u64,
    mix: &[Vec<Vec<u8>>; 2],
    setup: &[(usize, Vec<u8>)],
    app: &[&str],
) -> Result<f64> {
    let prefix = format!("bf-virtio-{}-{}", dut.name(), std::process::id());
    let vdevs: Vec<String> = h
        .sockets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "net_virtio_user{i},path={},queues=1,queue_size=1024",
                s.display()
            )
        })
        .collect();
    let mut child = dut.spawn(bin, &prefix, &vdevs, &["--single-file-segments"], app)?;
    let result = (|| {
        h.wait_link_up(Duration::from_secs(30), || {
            matches!(child.try_wait(), Ok(None))
        })?;
        h.drain();
        if !setup.is_empty() {
            h.replay(setup, 256, Duration::from_secs(3))?;
            std::thread::sleep(Duration::from_secs(1)); // the slow path installs the rules
            h.drain();
        }
        let r = blast_mix(
            h.ports,
            &h.pool,
            mix,
            Duration::from_secs(1),
            Duration::from_secs(secs),
        )?;
        Ok(r.mpps())
    })();
    stop(child, &prefix);
    if let (Dut::Bootcache, false) = (dut, setup.is_empty()) {
        println!("bootcache with rules: {}", transfer_summary(&prefix));
    }
    let _ = std::fs::remove_file(stats_file(&prefix));
    h.wait_link_down(Duration::from_secs(10))?;
    result
}

/// Runs `run` for bootcache and testpmd alternately, `rounds` times each,
/// printing every pair; returns the medians (bootcache, testpmd).
fn alternate(
    what: &str,
    rounds: usize,
    mut run: impl FnMut(Dut) -> Result<f64>,
) -> Result<[f64; 2]> {
    let mut rates = [Vec::new(), Vec::new()];
    for round in 1..=rounds.max(1) {
        let b = run(Dut::Bootcache)?;
        let t = run(Dut::Testpmd)?;
        println!(
            "{what}, round {round}: bootcache {b:.2} Mpps, testpmd {t:.2} Mpps, ratio {:.3}",
            b / t
        );
        rates[0].push(b);
        rates[1].push(t);
    }
    Ok(rates.map(|mut r| {
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    }))
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        let msg = e
            .chain()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ");
        eprintln!("bench-forward: {msg}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let bin = cli.bootcache.clone().unwrap_or_else(default_bootcache_bin);
    if !bin.exists() {
        bail!(
            "no bootcache binary at {} (cargo build --release)",
            bin.display()
        );
    }
    // Without a configuration bootcache caches nothing, but it still keeps
    // an image map: give it a directory of ours.
    let dir = std::env::temp_dir().join(format!("bench-forward-{}", std::process::id()));
    let plain_cache = dir.join("plain-cache");
    let plain_app = ["--cache-dir", plain_cache.to_str().unwrap_or_default()];
    let mut rows: Vec<(String, f64, f64)> = Vec::new();
    let null = alternate("net_null pair", cli.rounds, |dut| {
        run_null(dut, &bin, cli.seconds, &plain_app)
    })?;
    rows.push(("net_null pair".into(), null[0], null[1]));
    if !cli.null_only {
        std::fs::create_dir_all(&dir)?;
        let h = Harness::start(&dir, &format!("bf-gen-{}", std::process::id()), "0@0")?;
        let mut plain: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
        for (side, frames) in plain.iter_mut().enumerate() {
            let mut buf = Vec::new();
            test_frame(side, 0, cli.frame_len, &mut buf);
            frames.push(buf);
        }
        let v = alternate("virtio-user pair", cli.rounds, |dut| {
            run_virtio(&h, dut, &bin, cli.seconds, &plain, &[], &plain_app)
        })?;
        rows.push((format!("virtio-user pair, {} B", cli.frame_len), v[0], v[1]));
        if cli.filter_entries > 0 {
            let (rrqs, mix) = filter_bench_traffic(cli.filter_entries, cli.match_per_mille);
            let cache = dir.join("cache");
            let cfg = dir.join("bench.toml");
            std::fs::write(
                &cfg,
                format!(
                    "servers = [\"10.77.0.1\"]\ncache_dir = \"{}\"\n[limits]\nmax_transfers = {}\nmax_filter_entries = {}\nredirect_ring = 16384\n",
                    cache.display(),
                    u32::from(cli.filter_entries) + 16,
                    2 * u32::from(cli.filter_entries) + 16
                ),
            )?;
            let app = ["--config", cfg.to_str().unwrap_or_default()];
            let v = alternate("virtio with rules", cli.rounds, |dut| {
                run_virtio(&h, dut, &bin, cli.seconds, &mix, &rrqs, &app)
            })?;
            rows.push((
                format!(
                    "virtio, {} rules, {}‰ match",
                    cli.filter_entries, cli.match_per_mille
                ),
                v[0],
                v[1],
            ));
            let _ = std::fs::remove_dir_all(&cache);
        }
        remove_hugepage_files(&h.file_prefix);
    }
    println!(
        "{:<28} {:>15} {:>15} {:>7}",
        "ports", "bootcache Mpps", "testpmd Mpps", "ratio"
    );
    let mut json = String::from("[\n");
    for (i, (name, b, t)) in rows.iter().enumerate() {
        println!("{name:<34} {b:>15.2} {t:>15.2} {:>7.3}", b / t);
        json += &format!(
            "  {{\"ports\": \"{name}\", \"bootcache_mpps\": {b:.3}, \"testpmd_mpps\": {t:.3}, \"ratio\": {:.4}}}{}\n",
            b / t,
            if i + 1 < rows.len() { "," } else { "" }
        );
    }
    json += "]\n";
    std::fs::create_dir_all(&cli.results)?;
    std::fs::write(cli.results.join("forward.json"), json)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
