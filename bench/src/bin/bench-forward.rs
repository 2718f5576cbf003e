//! `bench-forward`: forwarding rate of bootcache against `dpdk-testpmd
//! --forward-mode=io` on the same ports, one after the other, in one run,
//! devices alternating, medians of `--rounds`:
//!
//! - `null`: a net_null pair (no generator: the null PMD makes and eats
//!   frames), bootcache without configuration;
//! - `null-config`: the same with a boot server configured (10.77.0.1);
//! - `pcap`: a net_pcap pair replaying a realistic frame mix (see
//!   `bootcache_bench::mix`: IMIX-sized TCP/UDP, some IPv6 and VLAN-tagged,
//!   1 % boot traffic to and from 10.77.0.1), boot server configured;
//! - `lcores`: net_null with 1 and 2 forwarding lcores (`--lcores
//!   0@0,1@1` and `0@0,1@0,2@1`; testpmd `--nb-cores=2 --rxq=2 --txq=2`);
//! - `virtio`, `virtio-rules`: a virtio-user pair driven by a vhost-side
//!   generator in this process, the second with N TFTP transfer rules in
//!   bootcache's filter.
//!
//! Rates on net_null and net_pcap come from DPDK telemetry (`opackets`
//! summed over both ports). Prints Mpps for both and the ratio; writes
//! bench/results/bench-forward.json.
//!
//! Both read bursts of 32. `--testpmd-burst N` adds testpmd with
//! `--burst=N` as a second baseline column in the same rounds (and under
//! `--callgrind`), for comparing a bootcache built with larger bursts
//! against testpmd with the same burst.
//!
//! `--callgrind SECS` instead counts instructions per forwarded frame: each
//! device runs under `valgrind --tool=callgrind` (no hardware counters on
//! these VMs) on net_null and on the pcap mix, boot server configured; the
//! forwarding thread's instructions ÷ the frames it forwarded.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bootcache_bench::dut::testpmd_io_args;
use bootcache_bench::mix::{self, MixSpec};
use bootcache_bench::pcap;
use bootcache_bench::pktgen::blast_mix;
use bootcache_testbed::frames::test_frame;
use bootcache_testbed::harness::Harness;
use bootcache_testbed::process::testpmd_io_args_burst;
use bootcache_testbed::process::{self, default_bootcache_bin, remove_hugepage_files};
use bootcache_testbed::scenario::filter_bench_traffic;
use clap::Parser;

/// The parts of the benchmark, in the order they run.
const SECTIONS: [&str; 6] = [
    "null",
    "null-config",
    "pcap",
    "lcores",
    "virtio",
    "virtio-rules",
];

/// Forwarding benchmark: bootcache vs testpmd io-forward.
#[derive(Debug, Parser)]
#[command(name = "bench-forward")]
struct Cli {
    /// Seconds of measurement per run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Frame length in bytes (without FCS), virtio-user runs.
    #[arg(long, default_value_t = 64)]
    frame_len: usize,
    /// The bootcache binary (default: next to this one).
    #[arg(long)]
    bootcache: Option<PathBuf>,
    /// Where to write bench-forward.json.
    #[arg(long, default_value = "bench/results")]
    results: PathBuf,
    /// Only the parts without the vhost generator (null, null-config, pcap, lcores).
    #[arg(long)]
    null_only: bool,
    /// Only these parts, comma-separated: null, null-config, pcap, lcores,
    /// virtio, virtio-rules (default: all).
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(SECTIONS))]
    only: Option<Vec<String>>,
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
    /// Frames per side in the pcap mix (the period net_pcap replays).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(100..=8192))]
    pcap_frames: u32,
    /// Boot traffic in the pcap mix, per mille.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pcap_boot_per_mille: u32,
    /// Instead of rates: instructions per frame under valgrind's callgrind,
    /// each device running this many seconds per port pair.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(5..=600))]
    callgrind: Option<u64>,
    /// Rates of net_null and net_pcap runs per second of the forwarding
    /// lcores' own CPU time (from /proc/PID/task/TID/schedstat) rather than
    /// wall time: on a machine that other jobs share, time the forwarding
    /// thread spent preempted does not count against either device.
    #[arg(long)]
    cpu_time: bool,
    /// A second testpmd baseline on net_null and net_pcap runs (and under
    /// `--callgrind`): testpmd io with this `--burst` (0: none).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=512))]
    testpmd_burst: u16,
    /// Only write the pcap mix (mix-client.pcap, mix-server.pcap) into this
    /// directory, e.g. to look at it with tcpdump -r, and exit.
    #[arg(long, value_name = "DIR")]
    write_mix: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dut {
    Bootcache,
    Testpmd,
    /// testpmd io with this many frames per burst instead of 32.
    TestpmdBurst(u16),
}

/// EAL `--lcores` for `fwd` forwarding lcores on this 2-CPU machine: the
/// main lcore on CPU 0, one forwarding lcore on CPU 1, a second on CPU 0.
fn lcores(fwd: usize) -> &'static str {
    if fwd >= 2 {
        "0@0,1@0,2@1"
    } else {
        "0@0,1@1"
    }
}

impl Dut {
    fn name(self) -> &'static str {
        match self {
            Dut::Bootcache => "bootcache",
            Dut::Testpmd => "testpmd-io",
            Dut::TestpmdBurst(_) => "testpmd-io-burst",
        }
    }

    /// Starts the device under test with `vdevs`, EAL extras and `fwd`
    /// forwarding lcores (testpmd: as many cores and queues per port).
    fn spawn(
        self,
        bin: &Path,
        prefix: &str,
        vdevs: &[String],
        eal_extra: &[&str],
        app: &[&str],
        fwd: usize,
    ) -> Result<Child> {
        let mut cmd = match self {
            Dut::Bootcache => Command::new(bin),
            Dut::Testpmd | Dut::TestpmdBurst(_) => Command::new("dpdk-testpmd"),
        };
        cmd.args([
            "--lcores",
            lcores(fwd),
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
        match self {
            Dut::Bootcache => {}
            Dut::Testpmd => {
                cmd.args(testpmd_io_args(fwd));
            }
            Dut::TestpmdBurst(b) => {
                cmd.args(testpmd_io_args_burst(fwd, b));
            }
        }
        // bootcache's final statistics go to a file next to its prefix, for
        // the report; either device's errors to another, for failures.
        let out = match self {
            Dut::Bootcache => std::fs::File::create(stats_file(prefix))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
            Dut::Testpmd | Dut::TestpmdBurst(_) => Stdio::null(),
        };
        let err = std::fs::File::create(err_file(prefix))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        cmd.env("RUST_LOG", "warn");
        cmd.spawn()
            .with_context(|| format!("starting {}", self.name()))
    }
}

fn stats_file(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{prefix}.stats"))
}

fn err_file(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{prefix}.err"))
}

/// The last lines a device wrote on stderr (EAL and telemetry chatter left
/// out), for an error message.
fn err_tail(prefix: &str) -> String {
    let text = std::fs::read_to_string(err_file(prefix)).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("TELEMETRY") && !l.starts_with("EAL: Detected"))
        .collect();
    lines[lines.len().saturating_sub(4)..].join(" / ")
}

/// Waits until the device's telemetry socket exists (its EAL is up), or
/// fails with what it printed if it exits first or takes over 30 s.
fn wait_telemetry(child: &mut Child, dut: Dut, prefix: &str) -> Result<()> {
    let sock = PathBuf::from(format!("/var/run/dpdk/{prefix}/dpdk_telemetry.v2"));
    let t = Instant::now();
    while !sock.exists() {
        if !matches!(child.try_wait(), Ok(None)) {
            bail!("{} exited at start: {}", dut.name(), err_tail(prefix));
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!(
                "{} has no telemetry socket after 30 s: {}",
                dut.name(),
                err_tail(prefix)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A counter from a bootcache run's final statistics (`key=value`; the
/// last line's when it printed some along the way).
fn pick(text: &str, key: &str) -> String {
    let k = format!("{key}=");
    text.split_whitespace()
        .rev()
        .find_map(|w| w.strip_prefix(k.as_str()))
        .unwrap_or("?")
        .to_string()
}

/// The slow path's transfer counters from a bootcache run's final statistics.
fn transfer_summary(prefix: &str) -> String {
    let text = std::fs::read_to_string(stats_file(prefix)).unwrap_or_default();
    let _ = std::fs::remove_file(stats_file(prefix));
    format!(
        "transfers seen={} active={}, transfer-rule hits={}, copies={} copy_drops={}",
        pick(&text, "seen"),
        pick(&text, "active"),
        pick(&text, "transfer-rules"),
        pick(&text, "copied"),
        pick(&text, "copy_drops")
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

/// One run on software ports that make their own traffic (net_null,
/// net_pcap): the DUT alone; rate from telemetry counters over `secs`.
/// With `report`, bootcache's copy counters are printed after the run.
struct PortRun<'a> {
    tag: &'a str,
    vdevs: &'a [String],
    app: &'a [&'a str],
    fwd: usize,
    report: bool,
    /// Frames per second of the forwarding lcores' own CPU time instead of
    /// wall time (`--cpu-time`).
    cpu_time: bool,
}

/// CPU time the forwarding lcores of process `pid` have run (the EAL names
/// their threads `rte-worker-N`), in ns, from the kernel's schedstat.
fn forwarding_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.starts_with("rte-worker") || c.starts_with("lcore-worker"))
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn run_ports(dut: Dut, bin: &Path, secs: u64, r: &PortRun<'_>) -> Result<f64> {
    let prefix = format!("bf-{}-{}-{}", r.tag, dut.name(), std::process::id());
    let mut child = dut.spawn(bin, &prefix, r.vdevs, &[], r.app, r.fwd)?;
    let result = (|| {
        wait_telemetry(&mut child, dut, &prefix)?;
        // Ports started, forwarding settled.
        std::thread::sleep(Duration::from_secs(1));
        let pid = child.id();
        let (a, t0, c0) = (
            telemetry_opackets(&prefix)?,
            Instant::now(),
            forwarding_cpu_ns(pid),
        );
        std::thread::sleep(Duration::from_secs(secs));
        let (b, t1, c1) = (
            telemetry_opackets(&prefix)?,
            Instant::now(),
            forwarding_cpu_ns(pid),
        );
        let secs = if r.cpu_time {
            (c1 - c0) as f64 / 1e9
        } else {
            (t1 - t0).as_secs_f64()
        };
        Ok((b - a) as f64 / secs.max(1e-9) / 1e6)
    })();
    stop(child, &prefix);
    let _ = std::fs::remove_file(err_file(&prefix));
    if r.report && dut == Dut::Bootcache {
        let text = std::fs::read_to_string(stats_file(&prefix)).unwrap_or_default();
        println!(
            "  bootcache on {}: redirect copied={} copy_drops={}, dhcp={}",
            r.tag,
            pick(&text, "copied"),
            pick(&text, "copy_drops"),
            pick(&text, "dhcp")
        );
    }
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
    let mut child = dut.spawn(bin, &prefix, &vdevs, &["--single-file-segments"], app, 1)?;
    let result = (|| {
        h.wait_link_up(Duration::from_secs(30), || {
            matches!(child.try_wait(), Ok(None))
        })?;
        h.drain();
        if !setup.is_empty() {
            h.replay(setup, 256, Duration::from_secs(3))?;
            if dut == Dut::Bootcache {
                wait_rules(&mut child, &prefix, setup.len() as u64)?;
            }
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
    let _ = std::fs::remove_file(err_file(&prefix));
    if let (Dut::Bootcache, false) = (dut, setup.is_empty()) {
        println!("bootcache with rules: {}", transfer_summary(&prefix));
    }
    let _ = std::fs::remove_file(stats_file(&prefix));
    h.wait_link_down(Duration::from_secs(10))?;
    result
}

/// Waits until bootcache's slow path follows `n` transfers (one per read
/// request replayed, each a rule in the filter), from the statistics it
/// prints every second (`--stats-interval 1 --stats-json`). The slow path
/// shares CPU 0 with the generator: measuring before it has read every
/// request measures a table with fewer rules (626 of 10,000 on a loaded
/// VM when this was a fixed one-second sleep).
fn wait_rules(child: &mut Child, prefix: &str, n: u64) -> Result<()> {
    let t = Instant::now();
    let mut seen = 0;
    while t.elapsed() < Duration::from_secs(120) {
        if !matches!(child.try_wait(), Ok(None)) {
            bail!(
                "bootcache exited while setting up rules: {}",
                err_tail(prefix)
            );
        }
        let text = std::fs::read_to_string(stats_file(prefix)).unwrap_or_default();
        seen = process::stat(&text, "transfers", "seen").unwrap_or(0);
        let active = process::stat(&text, "transfers", "active").unwrap_or(0);
        if seen >= n && active >= n {
            println!(
                "  bootcache: {active} transfers (rules) set up {:.1} s after the requests",
                t.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("bootcache followed only {seen} of {n} transfers 120 s after the requests")
}

/// Writes the mix's two pcap files into `dir`; returns the net_pcap vdevs
/// that replay them (client side as port 0). No tx_pcap: the PMD drops
/// what is sent and counts it.
fn write_mix(dir: &Path, spec: &MixSpec) -> Result<Vec<String>> {
    let mut vdevs = Vec::new();
    for (side, name) in ["client", "server"].iter().enumerate() {
        let file = dir.join(format!("mix-{name}.pcap"));
        pcap::write(&file, &mix::frames(side, spec))?;
        vdevs.push(format!(
            "net_pcap{side},rx_pcap={},infinite_rx=1",
            file.display()
        ));
    }
    Ok(vdevs)
}

/// Instructions per forwarded frame of `dut` on `vdevs` under callgrind,
/// over a run of `secs` seconds: the busiest thread's instructions (the
/// forwarding lcore's; the main lcores mostly sleep) ÷ the frames sent.
fn callgrind_run(
    dut: Dut,
    bin: &Path,
    dir: &Path,
    secs: u64,
    vdevs: &[String],
    app: &[&str],
) -> Result<(f64, u64)> {
    let tag = format!("cg-{}-{}", dut.name(), std::process::id());
    let out_base = dir.join(&tag);
    let mut cmd = Command::new("valgrind");
    cmd.args([
        "--tool=callgrind",
        "--separate-threads=yes",
        "--dump-instr=no",
    ])
    .arg(format!("--callgrind-out-file={}.%p", out_base.display()));
    match dut {
        Dut::Bootcache => cmd.arg(bin),
        Dut::Testpmd | Dut::TestpmdBurst(_) => cmd.arg("dpdk-testpmd"),
    };
    // No hugepages under valgrind; mbufs as bootcache's default pool.
    cmd.args([
        "--lcores",
        lcores(1),
        "--no-huge",
        "-m",
        "512",
        "--no-shconf",
    ])
    .args([
        "--file-prefix",
        &tag,
        "--no-pci",
        "--log-level",
        "lib.eal:warning",
    ]);
    for v in vdevs {
        cmd.arg("--vdev").arg(v);
    }
    cmd.arg("--");
    match dut {
        // The slow path is slow under valgrind too: without a long
        // heartbeat timeout the bridge would bypass the filter.
        // `--stats-json`: the final counters are read from its JSON object.
        Dut::Bootcache => cmd
            .args(app)
            .args(["--slowpath-timeout-ms", "600000", "--stats-json"]),
        Dut::Testpmd => cmd.args(testpmd_io_args(1)).arg("--total-num-mbufs=16383"),
        Dut::TestpmdBurst(b) => cmd
            .args(testpmd_io_args_burst(1, b))
            .arg("--total-num-mbufs=16383"),
    };
    let log = dir.join(format!("{tag}.out"));
    let f = std::fs::File::create(&log)?;
    cmd.stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .env("RUST_LOG", "warn");
    let mut child = cmd
        .spawn()
        .context("starting valgrind (apt-get install valgrind)")?;
    // valgrind takes a while to bring the EAL up; then `secs` of forwarding.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if !matches!(child.try_wait(), Ok(None)) {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            bail!(
                "{} under valgrind exited early: {}",
                dut.name(),
                text.lines().rev().take(4).collect::<Vec<_>>().join(" / ")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(120);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let frames: u64 = match dut {
        Dut::Bootcache => bootcache_testbed::process::parse_final_stats(&text)
            .iter()
            .map(|p| p.tx_packets)
            .sum(),
        // testpmd at exit: "Accumulated forward statistics for all ports",
        // then "TX-packets: N ...".
        Dut::Testpmd | Dut::TestpmdBurst(_) => text
            .split("Accumulated forward statistics")
            .nth(1)
            .and_then(|s| s.split("TX-packets:").nth(1))
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    };
    // One file per thread: <base>.<pid>-NN; their "totals:" lines.
    let mut busiest = 0u64;
    let prefix = format!("{tag}.{}", child.id());
    for e in std::fs::read_dir(dir)?.flatten() {
        if !e.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let t = std::fs::read_to_string(e.path()).unwrap_or_default();
        let ir = t
            .lines()
            .find_map(|l| l.strip_prefix("totals:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        busiest = busiest.max(ir);
        let _ = std::fs::remove_file(e.path());
    }
    remove_hugepage_files(&tag);
    if frames == 0 || busiest == 0 {
        bail!(
            "{} under callgrind: {frames} frames, {busiest} instructions (see {})",
            dut.name(),
            log.display()
        );
    }
    Ok((busiest as f64 / frames as f64, frames))
}

/// `--callgrind`: instructions per frame of both devices on net_null and
/// on the pcap mix, boot server configured.
fn callgrind(
    bin: &Path,
    dir: &Path,
    secs: u64,
    null_vdevs: &[String],
    pcap_vdevs: &[String],
    app: &[&str],
    burst: u16,
) -> Result<()> {
    for (what, vdevs) in [("net_null", null_vdevs), ("net_pcap mix", pcap_vdevs)] {
        let (b, bf) = callgrind_run(Dut::Bootcache, bin, dir, secs, vdevs, app)?;
        let (t, tf) = callgrind_run(Dut::Testpmd, bin, dir, secs, vdevs, app)?;
        println!(
            "instructions per frame (callgrind, forwarding thread), {what}, boot server configured: bootcache {b:.1} ({bf} frames), testpmd io {t:.1} ({tf} frames), ratio {:.3}; difference {:.1} instructions per frame",
            b / t,
            b - t
        );
        if burst > 0 {
            let (t, tf) = callgrind_run(Dut::TestpmdBurst(burst), bin, dir, secs, vdevs, app)?;
            println!(
                "  {what}: testpmd io --burst={burst} {t:.1} ({tf} frames), bootcache ÷ it {:.3}; difference {:.1}",
                b / t,
                b - t
            );
        }
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `run` for bootcache and testpmd alternately, `rounds` times each,
/// and, with `burst` > 0, testpmd with `--burst=burst` after each pair,
/// printing every round; returns the medians (bootcache, testpmd, testpmd
/// with the burst: NaN without).
fn alternate(
    what: &str,
    rounds: usize,
    burst: u16,
    mut run: impl FnMut(Dut) -> Result<f64>,
) -> Result<[f64; 3]> {
    let mut rates = [Vec::new(), Vec::new(), Vec::new()];
    for round in 1..=rounds.max(1) {
        let b = run(Dut::Bootcache)?;
        let t = run(Dut::Testpmd)?;
        let tb = if burst > 0 {
            run(Dut::TestpmdBurst(burst))?
        } else {
            f64::NAN
        };
        let second = if burst > 0 {
            format!(
                ", testpmd --burst={burst} {tb:.2} Mpps, ratio {:.3}",
                b / tb
            )
        } else {
            String::new()
        };
        println!(
            "{what}, round {round}: bootcache {b:.2} Mpps, testpmd {t:.2} Mpps, ratio {:.3}{second}",
            b / t
        );
        rates[0].push(b);
        rates[1].push(t);
        rates[2].push(tb);
    }
    Ok(rates.map(median))
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
    let wanted = |s: &str| match &cli.only {
        Some(list) => list.iter().any(|x| x == s),
        None => !cli.null_only || !s.starts_with("virtio"),
    };
    // Without a configuration bootcache caches nothing, but it still keeps
    // an image map: give it a directory of ours.
    let dir = std::env::temp_dir().join(format!("bench-forward-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // Removed however the run ends (an error included).
    let _scratch = RemoveOnDrop(dir.clone());
    let plain_cache = dir.join("plain-cache");
    let plain_app = ["--cache-dir", plain_cache.to_str().unwrap_or_default()];
    // A boot server configured: its traffic is copied to the slow path.
    let server_cfg = dir.join("server.toml");
    std::fs::write(
        &server_cfg,
        format!(
            "servers = [\"{}\"]\ncache_dir = \"{}\"\n",
            mix::BOOT_SERVER,
            dir.join("server-cache").display()
        ),
    )?;
    let server_app = ["--config", server_cfg.to_str().unwrap_or_default()];
    let null_vdevs = ["net_null0".to_string(), "net_null1".to_string()];
    let spec = MixSpec {
        frames: cli.pcap_frames as usize,
        boot_per_mille: cli.pcap_boot_per_mille as usize,
        ..MixSpec::default()
    };
    if let Some(out) = &cli.write_mix {
        std::fs::create_dir_all(out)?;
        for v in write_mix(out, &spec)? {
            println!("{v}");
        }
        return Ok(());
    }
    let pcap_vdevs = write_mix(&dir, &spec)?;
    if let Some(secs) = cli.callgrind {
        return callgrind(
            &bin,
            &dir,
            secs,
            &null_vdevs,
            &pcap_vdevs,
            &server_app,
            cli.testpmd_burst,
        );
    }
    let mut rows: Vec<(String, f64, f64, f64)> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let secs = cli.seconds;

    for (tag, what, app) in [
        ("null", "net_null pair", &plain_app),
        (
            "null-config",
            "net_null, boot server configured",
            &server_app,
        ),
    ] {
        if !wanted(tag) {
            continue;
        }
        let run = PortRun {
            tag,
            vdevs: &null_vdevs,
            app,
            fwd: 1,
            report: false,
            cpu_time: cli.cpu_time,
        };
        let r = alternate(what, cli.rounds, cli.testpmd_burst, |dut| {
            run_ports(dut, &bin, secs, &run)
        })?;
        rows.push((what.into(), r[0], r[1], r[2]));
    }
    if wanted("pcap") {
        let vdevs = &pcap_vdevs;
        let mean = |side| {
            let f = mix::frames(side, &spec);
            f.iter().map(Vec::len).sum::<usize>() as f64 / f.len() as f64
        };
        println!(
            "net_pcap mix: {} frames per side, mean {:.0} / {:.0} bytes (client / server side), {}‰ boot traffic, {}‰ IPv6, {}‰ VLAN-tagged; transmit drops (no tx_pcap)",
            spec.frames,
            mean(0),
            mean(1),
            spec.boot_per_mille,
            spec.ipv6_per_mille,
            spec.vlan_per_mille
        );
        let run = PortRun {
            tag: "pcap",
            vdevs,
            app: &server_app,
            fwd: 1,
            report: true,
            cpu_time: cli.cpu_time,
        };
        let r = alternate(
            "net_pcap mix, boot server configured",
            cli.rounds,
            cli.testpmd_burst,
            |dut| run_ports(dut, &bin, secs, &run),
        )?;
        rows.push((
            "net_pcap mix, boot server configured".into(),
            r[0],
            r[1],
            r[2],
        ));
    }
    if wanted("lcores") {
        // [device][lcores - 1]: rates of every round.
        let mut rates = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
        for round in 1..=cli.rounds.max(1) {
            let mut line = Vec::new();
            for (d, dut) in [Dut::Bootcache, Dut::Testpmd].into_iter().enumerate() {
                for fwd in [1, 2] {
                    let run = PortRun {
                        tag: if fwd == 1 { "lcores1" } else { "lcores2" },
                        vdevs: &null_vdevs,
                        app: &plain_app,
                        fwd,
                        report: false,
                        cpu_time: cli.cpu_time,
                    };
                    let r = run_ports(dut, &bin, secs, &run)?;
                    rates[d][fwd - 1].push(r);
                    line.push(format!("{} {fwd} lcore(s) {r:.2}", dut.name()));
                }
            }
            println!(
                "net_null forwarding lcores, round {round}: {} Mpps",
                line.join(", ")
            );
        }
        let m = rates.map(|d| d.map(median));
        for (d, dut) in [Dut::Bootcache, Dut::Testpmd].into_iter().enumerate() {
            notes.push(format!(
                "net_null, forwarding lcores: {} 1 lcore ({}) {:.2} Mpps, 2 lcores ({}) {:.2} Mpps, 2÷1 = {:.3}",
                dut.name(),
                lcores(1),
                m[d][0],
                lcores(2),
                m[d][1],
                m[d][1] / m[d][0]
            ));
        }
        rows.push((
            "net_null, 1 forwarding lcore".into(),
            m[0][0],
            m[1][0],
            f64::NAN,
        ));
        rows.push((
            "net_null, 2 forwarding lcores".into(),
            m[0][1],
            m[1][1],
            f64::NAN,
        ));
    }
    let virtio = wanted("virtio") || (wanted("virtio-rules") && cli.filter_entries > 0);
    if virtio {
        let h = Harness::start(&dir, &format!("bf-gen-{}", std::process::id()), "0@0")?;
        if wanted("virtio") {
            let mut plain: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
            for (side, frames) in plain.iter_mut().enumerate() {
                let mut buf = Vec::new();
                test_frame(side, 0, cli.frame_len, &mut buf);
                frames.push(buf);
            }
            let v = alternate("virtio-user pair", cli.rounds, 0, |dut| {
                run_virtio(&h, dut, &bin, secs, &plain, &[], &plain_app)
            })?;
            rows.push((
                format!("virtio-user pair, {} B", cli.frame_len),
                v[0],
                v[1],
                f64::NAN,
            ));
        }
        if wanted("virtio-rules") && cli.filter_entries > 0 {
            let (rrqs, mix) = filter_bench_traffic(cli.filter_entries, cli.match_per_mille);
            let cache = dir.join("cache");
            let cfg = dir.join("bench.toml");
            std::fs::write(
                &cfg,
                format!(
                    "servers = [\"10.77.0.1\"]\ncache_dir = \"{}\"\n[limits]\nmax_transfers = {}\nmax_filter_entries = {}\nredirect_ring = 16384\n",
                    cache.display(),
                    // All requests come from one client address, which
                    // may hold a sixteenth of max_transfers (626 of 10,000
                    // followed with entries + 16).
                    16 * (u32::from(cli.filter_entries) + 16),
                    2 * u32::from(cli.filter_entries) + 16
                ),
            )?;
            // The pool must leave the 16384-slot ring its room after the
            // descriptors (bootcache caps the ring otherwise).
            let app = [
                "--config",
                cfg.to_str().unwrap_or_default(),
                "--mbufs",
                "32767",
                // Read back by `wait_rules`.
                "--stats-interval",
                "1",
                "--stats-json",
            ];
            let v = alternate("virtio with rules", cli.rounds, 0, |dut| {
                run_virtio(&h, dut, &bin, secs, &mix, &rrqs, &app)
            })?;
            rows.push((
                format!(
                    "virtio, {} rules, {}‰ match",
                    cli.filter_entries, cli.match_per_mille
                ),
                v[0],
                v[1],
                f64::NAN,
            ));
        }
        remove_hugepage_files(&h.file_prefix);
    }
    let second = format!("testpmd --burst={}", cli.testpmd_burst);
    println!(
        "{:<40} {:>15} {:>15} {:>7} {:>22} {:>7}",
        "ports", "bootcache Mpps", "testpmd Mpps", "ratio", second, "ratio"
    );
    let mut json = Vec::new();
    for (name, b, t, tb) in &rows {
        let (tb_text, ratio_b) = if tb.is_nan() {
            ("-".to_string(), "-".to_string())
        } else {
            (format!("{tb:.2}"), format!("{:.3}", b / tb))
        };
        println!(
            "{name:<40} {b:>15.2} {t:>15.2} {:>7.3} {tb_text:>22} {ratio_b:>7}",
            b / t
        );
        let mut row = serde_json::json!({
            "ports": name,
            "bootcache_mpps": (b * 1000.0).round() / 1000.0,
            "testpmd_mpps": (t * 1000.0).round() / 1000.0,
            "ratio": (b / t * 10000.0).round() / 10000.0,
        });
        if !tb.is_nan() {
            row["testpmd_burst"] = cli.testpmd_burst.into();
            row["testpmd_burst_mpps"] = ((tb * 1000.0).round() / 1000.0).into();
            row["ratio_burst"] = ((b / tb * 10000.0).round() / 10000.0).into();
        }
        json.push(row);
    }
    for n in &notes {
        println!("{n}");
    }
    println!(
        "(medians of {} round(s) of {secs} s; bootcache {})",
        cli.rounds.max(1),
        bin.display()
    );
    std::fs::create_dir_all(&cli.results)?;
    let doc = serde_json::json!({ "rows": json, "notes": notes });
    std::fs::write(
        cli.results.join("bench-forward.json"),
        serde_json::to_string_pretty(&doc)? + "\n",
    )?;
    Ok(())
}

/// Removes a scratch directory when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
