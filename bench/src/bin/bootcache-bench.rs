//! `bootcache-bench`: the benchmark scenarios, each one command, each
//! printing a table and writing CSV/JSON under `--out` (default
//! bench/results):
//!
//! - `forward`: bootcache vs `dpdk-testpmd --forward-mode=io`, full speed
//!   across frame sizes, zero-loss rate and latency there, latency at
//!   10 kpps, filter table empty and full;
//! - `fill`: TFTP transfers crossing at full speed, slow-path throughput;
//! - `storm`: N simulated PXE clients boot, cold then warm, against testpmd;
//! - `all`: the three, then the plots;
//! - `fleet`: N bridges and one origin on the namespaced test bed; a file
//!   changed once: origin bytes for the change and time until every bridge
//!   holds it, then M clients per bridge read it; with `--validation`,
//!   warm reads through one bridge validated by its mirror vs by asking the
//!   agent (not part of `all`).
//!
//! The generator runs in this process on lcore 0 (CPU 0) with two vhost-user
//! ports; the device under test gets `--lcores 0@0,1@1` (its forwarding
//! lcore alone on CPU 1).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use bootcache_bench::dut::{bootcache_bin, check_hugepages, DutConfig};
use bootcache_bench::fill;
use bootcache_bench::forward::{self, ForwardConfig};
use bootcache_bench::storm;
use bootcache_bench::traffic::FrameSize;
use bootcache_testbed::harness::Harness;
use clap::{Parser, Subcommand};

/// bootcache's benchmark scenarios.
#[derive(Debug, Parser)]
#[command(name = "bootcache-bench")]
struct Cli {
    /// A few seconds per scenario, to prove the harness works (no figures worth quoting).
    #[arg(long, global = true)]
    quick: bool,
    /// Directory for CSV/JSON results and plots.
    #[arg(long, global = true, default_value = "bench/results")]
    out: PathBuf,
    /// The bootcache binary (default: next to this one, or $BOOTCACHE_BIN).
    #[arg(long, global = true)]
    bootcache: Option<PathBuf>,
    /// Device starts per configuration in `forward` (default 3, 1 with
    /// --quick); turns of each mode in `fleet --validation` (default 3).
    #[arg(long, global = true)]
    rounds: Option<usize>,
    /// EAL --lcores of the device under test (default 0@0,1@1: the main
    /// lcore, bootcache's slow path, shares CPU 0 with the generator).
    #[arg(long, global = true)]
    dut_lcores: Option<String>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// bootcache vs testpmd io: Mpps by frame size, zero-loss rate, latency; filter empty and full.
    Forward(ForwardArgs),
    /// TFTP transfers (blksize 1428, windowsize 16) at full speed: slow-path reassembly+hash Gbit/s, ring drops.
    Fill,
    /// N simulated PXE clients (10, 100, 1000) boot through bootcache, cold then warm, and through testpmd.
    Storm(StormArgs),
    /// Every scenario, then the plots.
    All(StormArgs),
    /// Only the plots, from the CSV files in --out.
    Plot,
    /// N bridges (1, 2, 4), one origin, a file changed once: origin bytes for the change ÷ file size, and time until every bridge holds it.
    Fleet(FleetArgs),
}

#[derive(Debug, Clone, clap::Args)]
struct FleetArgs {
    /// Fleet sizes (bridges), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4", value_parser = clap::value_parser!(u32).range(1..=8))]
    bridges: Vec<u32>,
    /// The file's size in MiB (default 64; 4 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    mib: Option<u64>,
    /// Clients per bridge reading the changed file after the change, all
    /// at once (with --validation: clients reading at once).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=64))]
    clients: u32,
    /// Instead: the validation cost per warm read, one bridge, mirror vs
    /// asking the agent per request (--clients at once, --reads rounds).
    #[arg(long)]
    validation: bool,
    /// With --validation: rounds of reads (every client reads this many times).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10000))]
    reads: u32,
    /// With --validation: the file's size in KiB.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    kib: u64,
}

#[derive(Debug, Clone, clap::Args)]
struct ForwardArgs {
    /// Frame sizes for the rate sweep (64-1518 or imix), comma-separated.
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<FrameSize>>,
    /// Sizes that also get the zero-loss search and latency.
    #[arg(long, value_delimiter = ',')]
    headline: Option<Vec<FrameSize>>,
    /// Background flows per direction (half UDP, half TCP).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    flows: Option<u32>,
    /// Share of PXE frames (TFTP of the followed transfers, DHCP), per mille.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pxe_per_mille: Option<u32>,
    /// Dynamic filter entries in the "full" state (0: only the empty table).
    #[arg(long)]
    entries: Option<u16>,
    /// Offer this many Mpps (both directions) instead of full speed.
    #[arg(long)]
    rate: Option<f64>,
    /// Latency at this low fixed rate too, in kpps (both directions), for
    /// the headline sizes (default 10; 0: skip).
    #[arg(long)]
    latency_rate_kpps: Option<f64>,
}

#[derive(Debug, Clone, clap::Args)]
struct StormArgs {
    /// Storm sizes (clients booting at once), comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=60000))]
    clients: Option<Vec<u32>>,
    /// Boot image size in bytes (default 64 MiB; 64 KiB with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=(1 << 32)))]
    image_size: Option<u64>,
    /// NBP size in bytes (default 46000; 16 KiB with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=(1 << 24)))]
    nbp_size: Option<u64>,
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                std::process::exit(0);
            }
            // One line: what was wrong.
            let text = e.render().to_string();
            let line = text.lines().next().unwrap_or("bad command line");
            eprintln!(
                "bootcache-bench: {} (bootcache-bench --help)",
                line.trim_start_matches("error: ")
            );
            std::process::exit(2);
        }
    };
    let t0 = Instant::now();
    if let Err(e) = run(&cli) {
        let msg = e
            .chain()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ");
        eprintln!("bootcache-bench: {msg}");
        std::process::exit(1);
    }
    println!(
        "bootcache-bench: done in {:.0} s",
        t0.elapsed().as_secs_f64()
    );
}

/// The line under every plot: the machine and the command.
fn machine_note() -> String {
    // The machine's CPUs, not this process's affinity (the EAL pinned it to one).
    let cpus = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|s| s.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into());
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    // Other work on the machine moves every number: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!(
        "{date}, {cpus} vCPUs, {os}, DPDK 22.11 (Debian), load average {load} at start; bootcache-bench {}",
        args.join(" ")
    )
}

/// Where and how the results in `out` were made (written by the scenarios,
/// read by the plots, so `plot` redraws with the original note).
fn run_note_file(out: &std::path::Path) -> PathBuf {
    out.join("run.txt")
}

fn plots(out: &std::path::Path) -> Result<()> {
    let note = std::fs::read_to_string(run_note_file(out))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| machine_note());
    let files = bootcache_bench::plot::all(out, &note)?;
    if files.is_empty() {
        println!("no results in {} to plot", out.display());
    }
    for f in files {
        println!("plot: {}", f.display());
    }
    Ok(())
}

/// `bootcache-bench fleet`: on the namespaced test bed (root, `scripts/setup`).
fn fleet(cli: &Cli, a: &FleetArgs) -> Result<()> {
    let bin = bootcache_bin(cli.bootcache.as_deref())?;
    bootcache_testbed::netns::check_prerequisites(false)?;
    bootcache_testbed::netns::cleanup_on_signals();
    std::fs::create_dir_all(&cli.out).with_context(|| format!("creating {}", cli.out.display()))?;
    if a.validation {
        let cfg = bootcache_bench::fleet::ValidationConfig {
            clients: (a.clients as usize).max(1),
            reads: a.reads as usize,
            rounds: cli.rounds.unwrap_or(3).max(1),
            kib: a.kib,
        };
        println!(
            "== fleet --validation: one bridge, {} client(s) at once × {} rounds reading a warm {} KiB file; validated by the mirror, then by asking the agent per request (answer_ttl 0); {} turns each ==",
            cfg.clients, cfg.reads, cfg.kib, cfg.rounds
        );
        let (table, lines) = bootcache_bench::fleet::run_validation(&bin, &cfg, &cli.out)?;
        print!("{}", table.render());
        for l in lines {
            println!("{l}");
        }
        println!("{}", machine_note());
        return Ok(());
    }
    let cfg = bootcache_bench::fleet::FleetConfig {
        bridges: a.bridges.iter().map(|&n| n as usize).collect(),
        mib: a.mib.unwrap_or(if cli.quick { 4 } else { 64 }),
        clients: a.clients as usize,
    };
    println!(
        "== fleet: {:?} bridge(s) × {} client(s), one origin, a {} MiB file changed once; origin bytes for the change and the clients' reads, time until every bridge holds it ==",
        cfg.bridges, cfg.clients, cfg.mib
    );
    let table = bootcache_bench::fleet::run(&bin, &cfg, &cli.out)?;
    print!("{}", table.render());
    println!("{}", machine_note());
    Ok(())
}

fn run(cli: &Cli) -> Result<()> {
    if matches!(cli.scenario, Scenario::Plot) {
        return plots(&cli.out);
    }
    if let Scenario::Fleet(a) = &cli.scenario {
        return fleet(cli, a);
    }
    let bin = bootcache_bin(cli.bootcache.as_deref())?;
    check_hugepages()?;
    which("dpdk-testpmd")?;
    let pid = std::process::id();
    let work = std::env::temp_dir().join(format!("bootcache-bench-{pid}"));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let _cleanup = RemoveOnDrop(work.clone());
    let h = Harness::start(&work, &format!("bb-gen-{pid}"), "0@0")
        .context("starting the generator's DPDK ports")?;
    let _pages = Prefix(h.file_prefix.clone());
    let base = DutConfig {
        bootcache_bin: bin,
        lcores: cli.dut_lcores.clone().unwrap_or_else(|| "0@0,1@1".into()),
        memory_mb: 512,
        bootcache_args: Vec::new(),
    };
    let all = matches!(cli.scenario, Scenario::All(_));
    std::fs::create_dir_all(&cli.out).with_context(|| format!("creating {}", cli.out.display()))?;
    std::fs::write(run_note_file(&cli.out), machine_note() + "\n")?;
    if all || matches!(cli.scenario, Scenario::Forward(_)) {
        let mut cfg = ForwardConfig::new(cli.quick);
        if let Some(r) = cli.rounds {
            cfg.rounds = r;
        }
        if let Scenario::Forward(a) = &cli.scenario {
            if let Some(v) = &a.sizes {
                cfg.sweep = v.clone();
            }
            if let Some(v) = &a.headline {
                cfg.headline = v.clone();
            }
            if let Some(v) = a.flows {
                cfg.flows = v as usize;
            }
            if let Some(v) = a.pxe_per_mille {
                cfg.pxe_per_mille = v as usize;
            }
            if let Some(v) = a.entries {
                cfg.entries = v;
            }
            if let Some(v) = a.rate {
                anyhow::ensure!(v > 0.0 && v.is_finite(), "--rate {v}: must be above 0 Mpps");
                cfg.rate_pps = Some(v * 1e6);
            }
            if let Some(v) = a.latency_rate_kpps {
                anyhow::ensure!(
                    v >= 0.0 && v.is_finite(),
                    "--latency-rate-kpps {v}: must be 0 (skip) or more"
                );
                cfg.low_rate_pps = (v > 0.0).then_some(v * 1e3);
            }
        }
        println!(
            "== forward: bootcache vs dpdk-testpmd io, {} round(s), filter empty and {} entries ==",
            cfg.rounds, cfg.entries
        );
        let r = forward::run(&h, &base, &cfg, &work, &cli.out)?;
        print!("{}", r.table.render());
        for line in forward::low_rate_lines(&r.low_rate) {
            println!("{line}");
        }
        println!(
            "wrote {}",
            forward::files(&cli.out)
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if all || matches!(cli.scenario, Scenario::Fill) {
        let cfg = fill::FillConfig::new(cli.quick);
        println!(
            "== fill: {} TFTP transfers of {} B, blksize 1428, windowsize 16, at full speed through bootcache ==",
            cfg.transfers, cfg.file_size
        );
        let r = fill::run(&h, &base, &cfg, &work, &cli.out)?;
        print!("{}", r.table.render());
    }
    if let Scenario::Storm(a) | Scenario::All(a) = &cli.scenario {
        let mut cfg = storm::StormConfig::new(cli.quick);
        if let Some(c) = &a.clients {
            cfg.clients = c.iter().map(|&n| n as usize).collect();
        }
        if let Some(s) = a.image_size {
            cfg.image_size = s as usize;
        }
        if let Some(s) = a.nbp_size {
            cfg.nbp_size = s as usize;
        }
        println!(
            "== storm: {:?} PXE clients, NBP {} B + image {} B, blksize {} windowsize {}; bootcache (cold, then warm) vs testpmd io ==",
            cfg.clients, cfg.nbp_size, cfg.image_size, cfg.shape.blksize, cfg.shape.windowsize
        );
        let r = storm::run(&h, &base, &cfg, &work, &cli.out)?;
        print!("{}", r.table.render());
    }
    if all {
        plots(&cli.out)?;
    }
    Ok(())
}

fn which(prog: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false);
    anyhow::ensure!(found, "{prog} not found: run scripts/setup");
    Ok(())
}

/// Removes a scratch directory at the end, however the run ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes this process's own hugepage files at the end.
struct Prefix(String);

impl Drop for Prefix {
    fn drop(&mut self) {
        bootcache_testbed::process::remove_hugepage_files(&self.0);
    }
}
