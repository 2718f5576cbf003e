//! The fleet scenario (issue 14): N bridges, each on its own namespace
//! pair of the test bed, one origin (dnsmasq) with `bootcache-agent` and a
//! NATS JetStream server beside it. Every bridge is directed to pre-stage
//! a file of `mib` MiB (through the Object Store); then the file changes
//! once on the origin. Measured: the bytes the origin sent for the change
//! (its TFTP transfers plus the agent's upload into the Object Store) as
//! a multiple of the file — the target is 1 whatever N — and the time from
//! the change until every bridge holds the new version
//! (`bootcache-agent fleet --json`, polled every 50 ms). With `clients`
//! M, M clients per bridge (curl in its client namespace, all at once)
//! then read the changed file, and their origin bytes count too.
//!
//! [`run_validation`]: the cost of validating a hit, one bridge, the same
//! warm file read by M clients at once, R times, first with the bridge
//! validating against its mirror of the agent's table, then asking the
//! agent (HMAC over UDP) per request.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::results::{f, Table};
use crate::storm::percentile;
use bootcache_testbed::netns::{self, holds_current, NatsServer, Options, Topology, SERVER_IP};

/// The scenario's parameters.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Fleet sizes, run one after the other.
    pub bridges: Vec<usize>,
    /// The file's size, MiB.
    pub mib: u64,
    /// Clients per bridge reading the changed file after the change.
    pub clients: usize,
}

/// One fleet size's result.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetRow {
    /// Bridges.
    pub bridges: usize,
    /// The file's size, bytes.
    pub file_bytes: u64,
    /// Bytes the origin's TFTP server sent for the change.
    pub origin_tftp_bytes: u64,
    /// Bytes the agent put into the Object Store for the change.
    pub store_bytes: u64,
    /// From the change on the origin to every bridge holding it.
    pub change_to_all: Duration,
    /// Clients per bridge that read the changed file.
    pub clients: usize,
    /// Of their reads, those the bridges served from their caches
    /// (bootcache's `serve hits` that the mirror confirmed, `fleet current`).
    pub from_cache: u64,
}

impl FleetRow {
    /// Origin bytes for the change ÷ file size.
    pub fn ratio(&self) -> f64 {
        (self.origin_tftp_bytes + self.store_bytes) as f64 / self.file_bytes as f64
    }
}

const FILE: &str = "fleet.img";

/// Runs every fleet size; the table is also written as CSV/JSON to `out`.
pub fn run(bootcache_bin: &Path, cfg: &FleetConfig, out: &Path) -> Result<Table> {
    let mut table = Table::new(&[
        "bridges",
        "clients",
        "from_cache",
        "file_bytes",
        "origin_tftp_bytes",
        "store_bytes",
        "origin_ratio",
        "change_to_all_ms",
    ]);
    for &n in &cfg.bridges {
        let r = run_one(bootcache_bin, n, cfg.mib << 20, cfg.clients)
            .with_context(|| format!("{n} bridge(s)"))?;
        table.push(vec![
            r.bridges.to_string(),
            (r.bridges * r.clients).to_string(),
            r.from_cache.to_string(),
            r.file_bytes.to_string(),
            r.origin_tftp_bytes.to_string(),
            r.store_bytes.to_string(),
            f(r.ratio(), 3),
            f(r.change_to_all.as_secs_f64() * 1e3, 0),
        ]);
    }
    table.write(out, "fleet")?;
    Ok(table)
}

/// The bytes the agent's log says it put into the Object Store for
/// [`FILE`], in all.
fn uploaded(t: &Topology) -> u64 {
    let log = std::fs::read_to_string(t.dir.join("agent.log")).unwrap_or_default();
    let mark = format!("fleet: {FILE}: ");
    log.lines()
        .filter_map(|l| {
            l.split_once(&mark)?
                .1
                .split_once(" bytes into the Object Store")
        })
        .filter_map(|(n, _)| n.parse::<u64>().ok())
        .sum()
}

/// Polls the listing until every bridge holds `sha` of [`FILE`].
fn wait_all(t: &Topology, n: usize, sha: &str, what: &str) -> Result<()> {
    let start = Instant::now();
    loop {
        let v = t.fleet_json()?;
        if (0..n).all(|i| holds_current(&v, &format!("bridge-{i}"), FILE, sha)) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("{what}: not after 300 s; the listing:\n{v:#}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `n` sites of the test bed; every other site's server side joined to
/// the first one's origin LAN (its clients reach the one origin through
/// their own bridge).
fn create_sites(bootcache_bin: &Path, n: usize) -> Result<Vec<Topology>> {
    let mut sites = Vec::with_capacity(n);
    for i in 0..n {
        // Forwarding lcores alternate between the two CPUs.
        let lcores = (i % 2 == 1).then(|| "0@(0,1),1@0".to_string());
        sites.push(Topology::create(&Options {
            bootcache_bin: Some(bootcache_bin.to_path_buf()),
            lcores,
            ..Options::default()
        })?);
    }
    if let Some((first, rest)) = sites.split_first_mut() {
        for (k, site) in rest.iter().enumerate() {
            // Clients from .60, server sides from .10: clear of the
            // origin (.1), the first site's client (.50) and DHCP (.100-).
            let client = Ipv4Addr::new(10, 80, 0, 60 + k as u8);
            let wan = Ipv4Addr::new(10, 80, 0, 10 + k as u8);
            first.join_origin_lan_as(site, client, wan)?;
        }
    }
    Ok(sites)
}

fn run_one(bootcache_bin: &Path, n: usize, size: u64, clients: usize) -> Result<FleetRow> {
    anyhow::ensure!(n >= 1, "a fleet has at least one bridge");
    let mut sites = create_sites(bootcache_bin, n)?;
    let v1 = netns::test_content(size as usize, 61);
    let v2 = netns::test_content(size as usize, 62);
    let sha1 = netns::sha256_bytes(&v1, &sites[0].dir, "v1")?;
    let sha2 = netns::sha256_bytes(&v2, &sites[0].dir, "v2")?;
    let hub: NatsServer = sites[0].start_nats_hub()?;
    sites[0].put_file(FILE, &v1)?;
    sites[0].start_origin()?;
    sites[0].start_fleet_agent()?;
    for (i, t) in sites.iter().enumerate() {
        t.write_site_config(&sites[0], &hub.url, &format!("bridge-{i}"), "bench")?;
    }
    for (i, t) in sites.iter_mut().enumerate() {
        t.start_bootcache(&["--stats-interval", "1"])
            .with_context(|| format!("bootcache {i}"))?;
    }
    let t0 = &sites[0];
    // Every bridge holds the first version (pre-staged from the store).
    t0.fleet_command("cache", &[FILE])?;
    wait_all(t0, n, &sha1, "the first version at every bridge")?;
    let tftp_before = t0.origin_count(FILE) as u64;
    let store_before = uploaded(t0);
    let changed = Instant::now();
    t0.put_file(FILE, &v2)?;
    wait_all(t0, n, &sha2, "the new version at every bridge")?;
    let change_to_all = changed.elapsed();
    // M clients per bridge, all at once, read the new version.
    let mut from_cache = 0;
    if clients > 0 {
        let jobs: Vec<(&Topology, PathBuf)> = sites
            .iter()
            .flat_map(|t| (0..clients).map(move |k| (t, t.dir.join(format!("read-{k}")))))
            .collect();
        read_all(&jobs, FILE, &v2)?;
        for t in &sites {
            fresh_stats(t)?;
            from_cache += t.bootcache_stat("fleet", "current").unwrap_or(0);
        }
    }
    let row = FleetRow {
        bridges: n,
        file_bytes: size,
        origin_tftp_bytes: (t0.origin_count(FILE) as u64 - tftp_before) * size,
        store_bytes: uploaded(t0) - store_before,
        change_to_all,
        clients,
        from_cache,
    };
    for t in &mut sites {
        let _ = t.stop_bootcache();
    }
    drop(hub);
    Ok(row)
}

/// Waits until bootcache printed a statistics object begun after this
/// call (the second one from now: the next may have been sampled before),
/// so its counters include everything done so far.
fn fresh_stats(t: &Topology) -> Result<()> {
    let out = t.bootcache_log_dir().join("bootcache.out");
    let count = || {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        bootcache_metrics::Reader::all(&text).len()
    };
    let (now, start) = (count(), Instant::now());
    while count() < now + 2 {
        if start.elapsed() > Duration::from_secs(15) {
            bail!("bootcache printed no statistics for 15 s (run with --stats-interval 1)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Reads `name` with curl (blksize 1428) from each job's client namespace
/// into its path, all at once; each must get exactly `want`. Each read's
/// time as curl measured it, from its request to the last byte (not the
/// process's start; curl's first-byte time stays 0 for TFTP).
fn read_all(jobs: &[(&Topology, PathBuf)], name: &str, want: &[u8]) -> Result<Vec<Duration>> {
    let mut running = Vec::with_capacity(jobs.len());
    for (t, out) in jobs {
        let _ = std::fs::remove_file(out);
        let child = t
            .client_cmd("curl")
            .args(["-sS", "--max-time", "300", "--tftp-blksize", "1428"])
            .args(["-w", "%{time_total}", "-o"])
            .arg(out)
            .arg(format!("tftp://{SERVER_IP}/{name}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting curl (Debian package curl: run scripts/setup)")?;
        running.push((child, out));
    }
    let mut reads = Vec::with_capacity(jobs.len());
    let mut failed = Vec::new();
    for (child, out) in running {
        let o = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&o.stdout);
        match (o.status.success(), text.trim().parse::<f64>()) {
            (true, Ok(secs)) => {
                if std::fs::read(out).ok().as_deref() != Some(want) {
                    failed.push(format!("{}: not the expected bytes", out.display()));
                }
                let _ = std::fs::remove_file(out);
                reads.push(Duration::from_secs_f64(secs));
            }
            _ => failed.push(format!(
                "{}: curl {}: {}",
                out.display(),
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} reads failed: {}",
            failed.len(),
            jobs.len(),
            failed.join("; ")
        );
    }
    Ok(reads)
}

/// [`run_validation`]'s parameters.
#[derive(Debug, Clone)]
pub struct ValidationConfig {
    /// Clients reading at once.
    pub clients: usize,
    /// Rounds: every client reads this many times per turn.
    pub reads: usize,
    /// Turns of the two modes (mirror, agent, mirror, agent, ...).
    pub rounds: usize,
    /// The file's size, KiB.
    pub kib: u64,
}

/// How the bridge validates a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `[fleet]`: against its live mirror of the agent's table.
    Mirror,
    /// No `[fleet]`: asks the agent, every request (`answer_ttl = 0`).
    Agent,
}

/// One mode's storm.
#[derive(Debug, Clone)]
struct ModeResult {
    mode: Mode,
    /// Each read's time (curl's).
    reads: Vec<Duration>,
    /// The whole storm.
    elapsed: Duration,
    /// bootcache's counters after it: `serve hits`,
    /// `serve validated_current` + `agent_unreachable` (questions the agent
    /// answered, or not), `fleet current` + `stale` (decided by the
    /// mirror), `fleet fallbacks` (the mirror not live: the agent asked).
    hits: u64,
    agent: u64,
    mirror: u64,
    fallbacks: u64,
}

impl ModeResult {
    /// The `q` quantile of the reads' times.
    fn read(&self, q: f64) -> Duration {
        percentile(&self.reads, q)
    }
}

const VALIDATION_FILE: &str = "validate.img";

/// The validation comparison: one bridge, one origin (dnsmasq) with the
/// real agent publishing to a NATS hub; the file is cached once, then
/// `clients` curl clients read it at once, `reads` rounds, through the
/// bridge validating against its mirror, then through the bridge asking
/// the agent per request (bootcache restarted between, the cache kept);
/// `rounds` such turns.
/// The table (CSV/JSON `fleet-validation` in `out`) and the ratio lines.
pub fn run_validation(
    bootcache_bin: &Path,
    cfg: &ValidationConfig,
    out: &Path,
) -> Result<(Table, Vec<String>)> {
    anyhow::ensure!(
        cfg.clients >= 1 && cfg.reads >= 1 && cfg.rounds >= 1,
        "at least one read"
    );
    let mut t = Topology::create(&Options {
        bootcache_bin: Some(bootcache_bin.to_path_buf()),
        ..Options::default()
    })?;
    let content = netns::test_content((cfg.kib << 10) as usize, 63);
    let hub = t.start_nats_hub()?;
    t.put_file(VALIDATION_FILE, &content)?;
    t.start_origin()?;
    t.start_fleet_agent()?;
    // Cache it once (a cold read through the origin).
    t.write_bootcache_config("answer_ttl = 0")?;
    t.start_bootcache(&["--stats-interval", "1"])?;
    read_all(&[(&t, t.dir.join("cold"))], VALIDATION_FILE, &content)?;
    t.wait_stat("files", "in_store", 1, Duration::from_secs(60))?;
    t.stop_bootcache()?;
    let mut results: Vec<ModeResult> = [Mode::Mirror, Mode::Agent]
        .map(|mode| ModeResult {
            mode,
            reads: Vec::new(),
            elapsed: Duration::ZERO,
            hits: 0,
            agent: 0,
            mirror: 0,
            fallbacks: 0,
        })
        .to_vec();
    // The modes take turns, so the machine's other load falls on both.
    for (i, mode) in
        (0..cfg.rounds).flat_map(|_| [Mode::Mirror, Mode::Agent].into_iter().enumerate())
    {
        match mode {
            Mode::Mirror => {
                let p = t.write_site_config(&t, &hub.url, "bridge-0", "bench")?;
                // A fallback, if any, asks per request as the agent mode does.
                let text = std::fs::read_to_string(&p)?.replacen(
                    "[agent]\n",
                    "[agent]\nanswer_ttl = 0\n",
                    1,
                );
                std::fs::write(&p, text)?;
            }
            Mode::Agent => {
                t.write_bootcache_config("answer_ttl = 0")?;
            }
        }
        t.start_bootcache(&["--stats-interval", "1"])
            .with_context(|| format!("bootcache ({mode:?})"))?;
        if mode == Mode::Mirror {
            let wait = Duration::from_secs(30);
            t.wait_stat("fleet", "live", 1, wait)?;
            t.wait_stat("fleet", "files", 1, wait)?;
        }
        let jobs: Vec<(&Topology, PathBuf)> = (0..cfg.clients)
            .map(|k| (&t, t.dir.join(format!("read-{k}"))))
            .collect();
        let r = &mut results[i];
        let start = Instant::now();
        for _ in 0..cfg.reads {
            r.reads.extend(read_all(&jobs, VALIDATION_FILE, &content)?);
        }
        r.elapsed += start.elapsed();
        // Each bootcache run counts from zero: the rounds add up.
        fresh_stats(&t)?;
        let stat = |s: &str, k: &str| t.bootcache_stat(s, k).unwrap_or(0);
        r.hits += stat("serve", "hits");
        r.agent += stat("serve", "validated_current") + stat("serve", "agent_unreachable");
        r.mirror += stat("fleet", "current") + stat("fleet", "stale");
        r.fallbacks += stat("fleet", "fallbacks");
        t.stop_bootcache()?;
    }
    drop(hub);
    let ms = |d: Duration| f(d.as_secs_f64() * 1e3, 2);
    let mut table = Table::new(&[
        "mode",
        "reads",
        "hits",
        "agent_questions",
        "mirror_decisions",
        "fallbacks",
        "read_p50_ms",
        "read_p99_ms",
        "storm_s",
    ]);
    for r in &results {
        table.push(vec![
            format!("{:?}", r.mode).to_lowercase(),
            r.reads.len().to_string(),
            r.hits.to_string(),
            r.agent.to_string(),
            r.mirror.to_string(),
            r.fallbacks.to_string(),
            ms(r.read(0.5)),
            ms(r.read(0.99)),
            f(r.elapsed.as_secs_f64(), 2),
        ]);
    }
    table.write(out, "fleet-validation")?;
    let ratio = |a: Duration, b: Duration| f(a.as_secs_f64() / b.as_secs_f64().max(1e-9), 2);
    let (m, a) = (&results[0], &results[1]);
    let lines = vec![format!(
        "mirror ÷ agent: read p50 {} p99 {}, storm {}",
        ratio(m.read(0.5), a.read(0.5)),
        ratio(m.read(0.99), a.read(0.99)),
        ratio(m.elapsed, a.elapsed),
    )];
    Ok((table, lines))
}
