//! Real TFTP clients through bootcache in network namespaces (see
//! `testbed/src/netns.rs`: bootcache on `net_af_packet` ports, dnsmasq as the
//! origin), two modes:
//!
//! - `serve` (issue 5): one file read cold (from the origin, while
//!   bootcache caches it), then warm (from bootcache's cache), with the same
//!   client and options; prints both times and their ratio.
//! - `inline` (issue 11): the same lock-step read through bootcache with
//!   cache fill on and nothing served (a boot server configured, no agent,
//!   no `serve_max_age`: every read goes to the origin and is copied to the
//!   cache), against the same read through `dpdk-testpmd --forward-mode=io`
//!   on the same two ports; devices alternate, medians and their ratio.
//! - `warm` (issue 12): the read answered by bootcache from its cache
//!   against the same read from the origin through `dpdk-testpmd
//!   --forward-mode=io` on the same ports (devices alternate, medians and
//!   their ratio), with bootcache's ACK-to-next-DATA turnaround; with
//!   `--ack-loss P`, nftables in the client namespace drops P% of the
//!   client's ACKs for both devices.
//!
//! - `burst` (issue 13): the read answered from the cache, again and again,
//!   while `--burst-files` other files are read cold through bootcache
//!   (`--burst-parallel` at a time), each filled into the cache: a burst of
//!   publishes (fsync, rename, index and image-map records) while serving.
//!   Prints bootcache's ACK-to-next-DATA turnaround over the serving
//!   (p50, p99, max): what disk work on the serving thread costs clients.
//!   `BOOTCACHE_BIN` picks the binary (to compare two builds).
//!
//!   sudo ./target/release/bench-serve [--mib 64] [--client curl|tftp] [--blksize 1428] [--warm-rounds 3]
//!   sudo ./target/release/bench-serve --mode burst [--mib 4] [--burst-files 64] [--burst-kib 1024] [--burst-parallel 4]
//!   sudo ./target/release/bench-serve --mode inline [--mib 16] [--client both] [--rounds 3]
//!   sudo ./target/release/bench-serve --mode warm [--mib 16] [--client both] [--rounds 3] [--ack-loss 5]

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bootcache_testbed::netns::{self, Topology};
use clap::{Parser, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "bench-serve",
    about = "TFTP reads by real clients through bootcache: warm (cache) vs cold (origin), or inline (bootcache vs testpmd io)"
)]
struct Args {
    /// serve: warm (bootcache's cache) vs cold (origin); inline: bootcache
    /// filling its cache vs dpdk-testpmd io on the same ports; warm:
    /// bootcache serving from its cache vs the origin through testpmd io.
    #[arg(long, value_enum, default_value_t = Mode::Serve)]
    mode: Mode,
    /// File size in MiB (default 64; 16 in inline mode).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    mib: Option<u32>,
    /// The client: curl (tftp://, --tftp-blksize), tftp (tftp-hpa, 512-byte
    /// blocks, no options), atftp (--blksize, windowsize 16) or both (curl
    /// and tftp; default curl; both in inline mode).
    #[arg(long, value_enum)]
    client: Option<ClientArg>,
    /// curl's --tftp-blksize.
    #[arg(long, default_value_t = 1428)]
    blksize: u16,
    /// Warm reads (serve mode; the median is reported).
    #[arg(long, default_value_t = 3)]
    warm_rounds: usize,
    /// Reads per device and client (inline mode; medians are reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// More bootcache options, one string split at spaces (e.g. "--drain-us 1").
    #[arg(long, allow_hyphen_values = true, default_value = "")]
    bootcache_args: String,
    /// EAL --lcores of bootcache and of testpmd (default '0@(0,1),1@1': the
    /// slow path on either CPU, the forwarding lcore on CPU 1).
    #[arg(long)]
    lcores: Option<String>,
    /// Run the clients and the origin on these CPUs only (taskset -c), e.g.
    /// 0: away from the forwarding lcore's CPU 1 (default: anywhere).
    #[arg(long)]
    programs_cpus: Option<String>,
    /// With --programs-cpus: keep those CPUs out of idle with a busy loop at
    /// nice 19, so that a client's or the origin's wake-up does not wait
    /// for the VM to leave idle (bootcache's slow path polls there for a
    /// while after each frame; testpmd's main lcore sleeps). Measured: it
    /// steadies curl's reads, but tftp-hpa's get 2.5-5 times slower through
    /// either bridge: use it with --client curl.
    #[arg(long, requires = "programs_cpus")]
    awake: bool,
    /// Warm mode: drop this share of the client's ACKs (percent, nftables
    /// in the client namespace), for bootcache and the origin alike.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=50))]
    ack_loss: Option<u32>,
    /// Burst mode: files read cold (and published) while the warm file is served.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    burst_files: u32,
    /// Burst mode: size of each of those files, KiB.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=65536))]
    burst_kib: u32,
    /// Burst mode: cold reads at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    burst_parallel: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Serve,
    Inline,
    Warm,
    Burst,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ClientArg {
    Curl,
    Tftp,
    /// atftp with --blksize's block size and `windowsize 16` (RFC 7440).
    Atftp,
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    Curl,
    Tftp,
    Atftp,
}

/// The window atftp asks for.
const ATFTP_WINDOW: u16 = 16;

impl Client {
    fn describe(self, blksize: u16) -> String {
        match self {
            Client::Curl => format!("curl --tftp-blksize {blksize}"),
            Client::Tftp => "tftp-hpa (512-byte blocks, no options)".to_string(),
            Client::Atftp => {
                format!(
                    "atftp --option \"blksize {blksize}\" --option \"windowsize {ATFTP_WINDOW}\""
                )
            }
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let r = match (args.mode, args.ack_loss) {
        (Mode::Warm, _) => compare(&args, true),
        (_, Some(_)) => Err(anyhow::anyhow!("--ack-loss: only in --mode warm")),
        (Mode::Serve, None) => serve(&args),
        (Mode::Burst, None) => burst(&args),
        (Mode::Inline, None) => compare(&args, false),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-serve: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn clients(args: &Args, default: ClientArg) -> Vec<Client> {
    match args.client.unwrap_or(default) {
        ClientArg::Curl => vec![Client::Curl],
        ClientArg::Tftp => vec![Client::Tftp],
        ClientArg::Atftp => vec![Client::Atftp],
        ClientArg::Both => vec![Client::Tftp, Client::Curl],
    }
}

fn read(
    t: &Topology,
    client: Client,
    blksize: u16,
    name: &str,
    out: &std::path::Path,
) -> Result<Duration> {
    match client {
        Client::Curl => t.curl_get(name, Some(blksize), out),
        Client::Tftp => t.tftp_hpa_get(name, out),
        Client::Atftp => t.atftp_get(name, blksize, ATFTP_WINDOW, out),
    }
}

/// The namespace topology with `bench.img` (`mib` MiB) and `others` on
/// the origin, the origin and the agent started, and bootcache serving
/// (statistics every second); returns it and bench.img's SHA-256.
fn serving_topology(
    args: &Args,
    mib: usize,
    others: &[(String, Vec<u8>)],
) -> Result<(Topology, String)> {
    netns::check_prerequisites(false)?;
    let mut t = Topology::create(&netns::Options {
        lcores: args.lcores.clone(),
        programs_cpus: args.programs_cpus.clone(),
        ..netns::Options::default()
    })?;
    t.put_file("bench.img", &netns::test_content(mib << 20, 64))?;
    for (name, content) in others {
        t.put_file(name, content)?;
    }
    let want = netns::sha256_file(&t.tftp_root.join("bench.img"))?;
    t.start_origin()?;
    t.start_agent()?;
    t.write_bootcache_config("")?;
    let mut bc_args = vec!["--stats-interval", "1"];
    bc_args.extend(args.bootcache_args.split_whitespace());
    t.start_bootcache(&bc_args)?;
    Ok((t, want))
}

fn serve(args: &Args) -> Result<()> {
    let mib = args.mib.unwrap_or(64) as usize;
    let [client] = clients(args, ClientArg::Curl)[..] else {
        bail!("--client both: only in --mode inline");
    };
    let (mut t, want) = serving_topology(args, mib, &[])?;
    let out = t.dir.join("read.img");
    let what = client.describe(args.blksize);

    let cold = read(&t, client, args.blksize, "bench.img", &out).context("cold read")?;
    if netns::sha256_file(&out)? != want || t.origin_count("bench.img") != 1 {
        bail!("cold read: wrong bytes or not from the origin");
    }
    t.wait_stat("files", "in_store", 1, Duration::from_secs(60))?;
    let mut warm = Vec::new();
    for i in 0..args.warm_rounds.max(1) {
        let d = read(&t, client, args.blksize, "bench.img", &out).context("warm read")?;
        if netns::sha256_file(&out)? != want {
            bail!("warm read {i}: wrong bytes");
        }
        warm.push(d);
        println!("warm read {}: {:.2} s", i + 1, d.as_secs_f64());
    }
    if t.origin_count("bench.img") != 1 {
        bail!("warm reads reached the origin: {:?}", t.origin_transfers());
    }
    warm.sort();
    let w = warm[warm.len() / 2];
    let fin = t.stop_bootcache()?;
    let hits = netns::stat(&fin.stdout, "serve", "hits").unwrap_or(0);
    println!(
        "{} MiB with {what}: cold (origin) {:.2} s = {:.1} MiB/s, warm (bootcache, median of {}) {:.2} s = {:.1} MiB/s, warm/cold time ratio {:.2} (serve hits {hits})",
        mib,
        cold.as_secs_f64(),
        mib as f64 / cold.as_secs_f64(),
        warm.len(),
        w.as_secs_f64(),
        mib as f64 / w.as_secs_f64(),
        w.as_secs_f64() / cold.as_secs_f64()
    );
    Ok(())
}

/// Burst mode: the warm file served from the cache, read after read, while
/// a pool of cold reads of other files fills the cache (a burst of
/// publishes); bootcache's turnaround over all the serving.
fn burst(args: &Args) -> Result<()> {
    let mib = args.mib.unwrap_or(4) as usize;
    let (files, kib, parallel) = (args.burst_files, args.burst_kib, args.burst_parallel);
    let others: Vec<(String, Vec<u8>)> = (0..files)
        .map(|i| {
            let content = netns::test_content((kib as usize) << 10, 1000 + u64::from(i));
            (format!("burst{i}.img"), content)
        })
        .collect();
    let (mut t, want) = serving_topology(args, mib, &others)?;
    let out = t.dir.join("read.img");
    read(&t, Client::Curl, args.blksize, "bench.img", &out).context("cold read")?;
    t.wait_stat("files", "in_store", 1, Duration::from_secs(60))?;

    // The pool of cold reads, and warm reads until the pool is done.
    let started = std::time::Instant::now();
    let mut next = 0u32;
    let mut running: Vec<(u32, std::process::Child)> = Vec::new();
    let mut warm = Vec::new();
    loop {
        let mut still = Vec::new();
        for (i, mut c) in running {
            match c.try_wait()? {
                Some(st) if st.success() => {}
                Some(st) => bail!("cold read of burst{i}.img: curl {st}"),
                None => still.push((i, c)),
            }
        }
        running = still;
        while next < files && running.len() < parallel as usize {
            let child = t
                .client_cmd("curl")
                .args(["-sS", "--max-time", "300", "-o", "/dev/null"])
                .args(["--tftp-blksize", &args.blksize.to_string()])
                .arg(format!("tftp://{}/burst{next}.img", netns::SERVER_IP))
                .stdin(std::process::Stdio::null())
                .spawn()
                .context("starting curl")?;
            running.push((next, child));
            next += 1;
        }
        if running.is_empty() {
            break;
        }
        let d = read(&t, Client::Curl, args.blksize, "bench.img", &out).context("warm read")?;
        if netns::sha256_file(&out)? != want {
            bail!("warm read: wrong bytes");
        }
        warm.push(d);
    }
    let burst_time = started.elapsed();
    let all = 1 + u64::from(files);
    t.wait_stat("files", "in_store", all, Duration::from_secs(120))
        .context("the burst's files were not all cached")?;
    let fin = t.stop_bootcache()?;
    if t.origin_count("bench.img") != 1 {
        bail!("warm reads reached the origin: {:?}", t.origin_transfers());
    }
    let s = |sec, key| netns::stat(&fin.stdout, sec, key).unwrap_or(0);
    let command = std::iter::once("bench-serve".to_string())
        .chain(std::env::args().skip(1))
        .map(|a| netns::shell_word(&a))
        .collect::<Vec<_>>()
        .join(" ");
    println!(
        "burst: {files} files of {kib} KiB read cold ({parallel} at a time) and published in {:.2} s, while {} warm reads of {mib} MiB (median {:.3} s) were served; serve hits={} retransmits={}; files cached={}",
        burst_time.as_secs_f64(),
        warm.len(),
        if warm.is_empty() { 0.0 } else { median(&warm).as_secs_f64() },
        s("serve", "hits"),
        s("serve", "retransmits"),
        s("files", "cached"),
    );
    println!(
        "burst: ACK-to-DATA turnaround while publishing: samples={} p50 {:.1} us p99 {:.1} us max {:.1} us; bootcache {}; command: {command}",
        s("turnaround", "samples"),
        s("turnaround", "p50_ns") as f64 / 1e3,
        s("turnaround", "p99_ns") as f64 / 1e3,
        s("turnaround", "max_ns") as f64 / 1e3,
        t.bootcache_cmdline(),
    );
    Ok(())
}

/// The bridge under test in inline mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bridge {
    Bootcache,
    Testpmd,
}

/// What one bootcache run (one timed read) did: to its cache (inline
/// mode), and serving from it (warm mode).
#[derive(Debug, Default, Clone, Copy)]
struct Fill {
    completed: u64,
    cached: u64,
    refreshed: u64,
    copy_drops: u64,
    serve_hits: u64,
    serve_retransmits: u64,
    /// ACK-to-next-DATA turnaround of the run, nanoseconds.
    turnaround_p50: u64,
    turnaround_p99: u64,
    /// Times the slow path fell back from yielding to sleeping.
    yield_fallbacks: u64,
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

/// Starts `bridge`, reads a small file (not timed: ARP, the bridge's first
/// frames), then times `client` reading `bench.img`, checks the bytes, and
/// stops the bridge. For bootcache, waits until both transfers were
/// verified into the cache (inline mode) or served from it (warm mode)
/// first, and returns its counters.
fn bridge_read(
    t: &mut Topology,
    bridge: Bridge,
    client: Client,
    args: &Args,
    want: &str,
    warm: bool,
) -> Result<(Duration, Option<Fill>)> {
    let out = t.dir.join("read.img");
    match bridge {
        Bridge::Bootcache => {
            let mut a = vec!["--stats-interval", "1"];
            a.extend(args.bootcache_args.split_whitespace());
            t.start_bootcache(&a)?;
        }
        Bridge::Testpmd => t.start_testpmd()?,
    }
    let r = (|| {
        read(t, client, args.blksize, "warmup.img", &out).context("warm-up read")?;
        let d = read(t, client, args.blksize, "bench.img", &out).context("timed read")?;
        if netns::sha256_file(&out)? != want {
            bail!("{bridge:?}: wrong bytes read");
        }
        match (bridge, warm) {
            (Bridge::Bootcache, false) => {
                t.wait_stat("transfers", "completed", 2, Duration::from_secs(60))?
            }
            (Bridge::Bootcache, true) => wait_sessions_ended(t, 2)?,
            (Bridge::Testpmd, _) => {}
        }
        Ok(d)
    })();
    let fill = match bridge {
        Bridge::Bootcache => {
            let fin = t.stop_bootcache()?;
            let s = |sec, key| netns::stat(&fin.stdout, sec, key).unwrap_or(0);
            Some(Fill {
                completed: s("transfers", "completed"),
                cached: s("files", "cached"),
                refreshed: s("files", "refreshed"),
                copy_drops: s("redirect", "copy_drops"),
                serve_hits: s("serve", "hits"),
                serve_retransmits: s("serve", "retransmits"),
                turnaround_p50: s("turnaround", "p50_ns"),
                turnaround_p99: s("turnaround", "p99_ns"),
                yield_fallbacks: s("turnaround", "yield_fallbacks"),
            })
        }
        Bridge::Testpmd => {
            t.stop_testpmd();
            None
        }
    };
    Ok((r?, fill))
}

/// A busy loop at nice 19 on `cpus` (see `--awake`), stopped on drop.
struct Spinner(std::process::Child);

impl Spinner {
    fn start(cpus: &str) -> Result<Spinner> {
        let child = std::process::Command::new("nice")
            .args([
                "-n",
                "19",
                "taskset",
                "-c",
                cpus,
                "sh",
                "-c",
                "while :; do :; done",
            ])
            .stdin(std::process::Stdio::null())
            .spawn()
            .context("starting the busy loop (nice, taskset)")?;
        Ok(Spinner(child))
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Warm mode's setup: the agent, bootcache's full configuration, and a cold
/// read of both files (through bootcache, from the origin) that fills the
/// cache.
fn fill_cache(t: &mut Topology, args: &Args) -> Result<()> {
    t.start_agent()?;
    t.write_bootcache_config("")?;
    t.start_bootcache(&["--stats-interval", "1"])?;
    let out = t.dir.join("read.img");
    for name in ["warmup.img", "bench.img"] {
        read(t, Client::Curl, args.blksize, name, &out)
            .with_context(|| format!("filling {name}"))?;
    }
    let r = t.wait_stat("files", "in_store", 2, Duration::from_secs(60));
    t.stop_bootcache()?;
    r
}

/// inline (`warm` false): bootcache filling its cache vs testpmd io, both
/// reading from the origin; warm: bootcache serving from its cache vs
/// testpmd io reading from the origin. Devices alternate; medians.
fn compare(args: &Args, warm: bool) -> Result<()> {
    let mib = args.mib.unwrap_or(16) as usize;
    let clients = clients(args, ClientArg::Both);
    netns::check_prerequisites(false)?;
    let _spinner = match (&args.programs_cpus, args.awake) {
        (Some(cpus), true) => Some(Spinner::start(cpus)?),
        _ => None,
    };
    let mut t = Topology::create(&netns::Options {
        lcores: args.lcores.clone(),
        programs_cpus: args.programs_cpus.clone(),
        ..netns::Options::default()
    })?;
    t.put_file("bench.img", &netns::test_content(mib << 20, 64))?;
    t.put_file("warmup.img", &netns::test_content(64 << 10, 65))?;
    let want = netns::sha256_file(&t.tftp_root.join("bench.img"))?;
    t.start_origin()?;
    if warm {
        fill_cache(&mut t, args)?;
    } else {
        t.write_fill_only_config()?;
    }
    if let Some(p) = args.ack_loss {
        t.drop_client_acks(p)?;
    }
    let loss = args
        .ack_loss
        .map(|p| format!(", {p}% of the client's ACKs dropped"))
        .unwrap_or_default();
    let command = std::iter::once("bench-serve".to_string())
        .chain(std::env::args().skip(1))
        .map(|a| netns::shell_word(&a))
        .collect::<Vec<_>>()
        .join(" ");
    let (mode, mine, target) = if warm {
        // Under loss: no longer than the origin (issue 12's item 3).
        let target = if args.ack_loss.is_some() {
            "1.0"
        } else {
            "0.5"
        };
        ("warm", "bootcache from its cache", target)
    } else {
        (
            "inline",
            "bootcache (cache fill on: boot server configured, no agent, no serve_max_age)",
            "1.05",
        )
    };
    println!(
        "{mode}: {mib} MiB, lock-step{loss}, {} read(s) per device and client, alternating {mine} and the origin through dpdk-testpmd io on the same af_packet veths",
        args.rounds
    );
    let mut origin_reads = 0usize;
    let mut summary = Vec::new();
    for client in clients {
        let what = client.describe(args.blksize);
        let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
        let mut fill = Fill::default();
        let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
        for round in 1..=args.rounds {
            // Each round starts with the other device, so neither always
            // reads right after the other one's run.
            let order = if round % 2 == 1 {
                [Bridge::Bootcache, Bridge::Testpmd]
            } else {
                [Bridge::Testpmd, Bridge::Bootcache]
            };
            let mut line = [Duration::ZERO; 2];
            for bridge in order {
                let (d, f) = bridge_read(&mut t, bridge, client, args, &want, warm)
                    .with_context(|| format!("{what} through {bridge:?}, round {round}"))?;
                if bridge == Bridge::Testpmd || !warm {
                    origin_reads += 1;
                }
                let i = usize::from(bridge == Bridge::Testpmd);
                times[i].push(d);
                line[i] = d;
                if let Some(f) = f {
                    fill.completed += f.completed;
                    fill.cached += f.cached;
                    fill.refreshed += f.refreshed;
                    fill.copy_drops += f.copy_drops;
                    fill.serve_hits += f.serve_hits;
                    fill.serve_retransmits += f.serve_retransmits;
                    fill.yield_fallbacks += f.yield_fallbacks;
                    p50s.push(Duration::from_nanos(f.turnaround_p50));
                    p99s.push(Duration::from_nanos(f.turnaround_p99));
                }
            }
            println!(
                "  {what}, round {round}: bootcache {:.3} s, testpmd io {:.3} s, ratio {:.3}",
                line[0].as_secs_f64(),
                line[1].as_secs_f64(),
                line[0].as_secs_f64() / line[1].as_secs_f64()
            );
        }
        let (b, tp) = (median(&times[0]), median(&times[1]));
        let counters = if warm {
            format!(
                "ACK-to-DATA turnaround p50 {:.1} us p99 {:.1} us (medians of the runs); serve hits={} retransmits={}; slow path yield fallbacks={}",
                median(&p50s).as_secs_f64() * 1e6,
                median(&p99s).as_secs_f64() * 1e6,
                fill.serve_hits,
                fill.serve_retransmits,
                fill.yield_fallbacks
            )
        } else {
            format!(
                "cache fill: transfers completed={} (files cached={} refreshed={}) copy_drops={} serve hits={}",
                fill.completed, fill.cached, fill.refreshed, fill.copy_drops, fill.serve_hits
            )
        };
        summary.push(format!(
            "{mode} {mib} MiB with {what}{loss}: bootcache {:.3} s, testpmd io {:.3} s (medians of {}), ratio {:.3} [target <= {target}]; {counters}; command: {command}",
            b.as_secs_f64(),
            tp.as_secs_f64(),
            times[0].len(),
            b.as_secs_f64() / tp.as_secs_f64(),
        ));
    }
    // Every read through testpmd went to the origin, and in warm mode no
    // read through bootcache did (the fill was one more).
    let sent = t.origin_count("bench.img");
    let expected = origin_reads + usize::from(warm);
    if sent != expected {
        bail!("the origin sent bench.img {sent} times, expected {expected}");
    }
    if args.ack_loss.is_some() {
        println!("ACKs dropped by nftables: {}", t.client_acks_dropped());
    }
    println!("bootcache: {}", t.bootcache_cmdline());
    println!(
        "testpmd: dpdk-testpmd {}",
        t.testpmd_args()
            .iter()
            .map(|a| netns::shell_word(a))
            .collect::<Vec<_>>()
            .join(" ")
    );
    for s in summary {
        println!("{s}");
    }
    Ok(())
}

/// Waits until bootcache's serving sessions have ended `n` times, however
/// they ended: a session whose client's last ACK never arrived ends timed
/// out although the client has every byte (TFTP cannot tell the
/// difference), and the read was already checked byte for byte.
fn wait_sessions_ended(t: &netns::Topology, n: u64) -> Result<()> {
    const ENDINGS: [&str; 4] = ["completed", "timeouts", "client_errors", "aborted"];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ended: u64 = ENDINGS
            .iter()
            .filter_map(|k| t.bootcache_stat("serve", k))
            .sum();
        if ended >= n {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("bootcache's serving sessions ended {ended} times after 60 s, expected {n} (needs --stats-interval 1)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
