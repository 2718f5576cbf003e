//! The fleet scenario (issue 14): N bridges, each on its own namespace
//! pair of the test bed, one origin (dnsmasq) with `bootcache-agent` and a
//! NATS JetStream server beside it. Every bridge is directed to pre-stage
//! a file of `mib` MiB (through the Object Store); then the file changes
//! once on the origin. Measured: the bytes the origin sent for the change
//! (its TFTP transfers plus the agent's upload into the Object Store) as
//! a multiple of the file — the target is 1 whatever N — and the time from
//! the change until every bridge holds the new version
//! (`bootcache-agent fleet --json`, polled every 50 ms).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::results::{f, Table};
use bootcache_testbed::netns::{self, holds_current, NatsServer, Options, Topology};

/// The scenario's parameters.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Fleet sizes, run one after the other.
    pub bridges: Vec<usize>,
    /// The file's size, MiB.
    pub mib: u64,
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
        "file_bytes",
        "origin_tftp_bytes",
        "store_bytes",
        "origin_ratio",
        "change_to_all_ms",
    ]);
    for &n in &cfg.bridges {
        let r =
            run_one(bootcache_bin, n, cfg.mib << 20).with_context(|| format!("{n} bridge(s)"))?;
        table.push(vec![
            r.bridges.to_string(),
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

fn run_one(bootcache_bin: &Path, n: usize, size: u64) -> Result<FleetRow> {
    anyhow::ensure!(n >= 1, "a fleet has at least one bridge");
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
    let row = FleetRow {
        bridges: n,
        file_bytes: size,
        origin_tftp_bytes: (t0.origin_count(FILE) as u64 - tftp_before) * size,
        store_bytes: uploaded(t0) - store_before,
        change_to_all,
    };
    for t in &mut sites {
        let _ = t.stop_bootcache();
    }
    drop(hub);
    Ok(row)
}
