//! The two-site fleet demo (`scripts/demo --sites 2`, issue 14 item 8):
//! one origin with its agent and a NATS hub, two sites each with a NATS
//! leaf node, a bridge and curl clients ([`netns::TwoSites`]). Reads a
//! file cold at both sites, changes it on the origin, reads it warm at
//! both, pre-stages another file at site B by a directive and reads it
//! there, and reports per site and per step the bytes that came from the
//! origin, the Object Store and the cache. Everything is removed at the
//! end, also on Ctrl-C.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use bootcache_testbed::demo;
use bootcache_testbed::netns::{self, Topology, TwoSites};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "bootcache-fleet-demo",
    about = "Two sites, one origin: bootcache's fleet over a NATS hub and leaf nodes"
)]
struct Args {
    /// Size of the boot image read at both sites, MiB.
    #[arg(long, default_value_t = 16)]
    mib: usize,
    /// Name prefix of the namespaces and links (site B adds "b").
    #[arg(long, default_value = "bcfleet")]
    prefix: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    demo::main(|| run(&args))
}

/// Where one site's bytes came from so far.
#[derive(Clone, Copy, Default)]
struct Bytes {
    origin: u64,
    store: u64,
    cache: u64,
}

/// A site's counters now: the origin's transfers to it are told apart by
/// the client address in dnsmasq's log.
fn bytes(sites: &TwoSites, t: &Topology, client: &str, sizes: &[(&str, u64)]) -> Bytes {
    let log = std::fs::read_to_string(sites.a.origin_log()).unwrap_or_default();
    let origin = sizes
        .iter()
        .map(|(name, size)| {
            let sent = log
                .lines()
                .filter(|l| l.contains(&format!("/{name} to {client}")))
                .count() as u64;
            sent * size
        })
        .sum();
    let stat = |s: &str, k: &str| t.bootcache_stat(s, k).unwrap_or(0);
    Bytes {
        origin,
        store: stat("fleet_member", "published_bytes"),
        cache: stat("serve", "served_bytes"),
    }
}

fn run(args: &Args) -> Result<()> {
    let image = netns::test_content(args.mib << 20, 51);
    let staged = netns::test_content(4 << 20, 52);
    let opts = netns::Options {
        prefix: Some(args.prefix.clone()),
        ..Default::default()
    };
    eprintln!("demo: building two sites (origin, agent, NATS hub, two leaf nodes, two bridges)");
    let sites = TwoSites::start(&opts, &[("boot.img", &image), ("staged.img", &staged)])?;
    for t in [&sites.a, &sites.b] {
        t.wait_stat("fleet", "live", 1, Duration::from_secs(30))?;
    }
    let sizes = [
        ("boot.img", image.len() as u64),
        ("staged.img", staged.len() as u64),
    ];
    let clients = [
        netns::CLIENT_IP.to_string(),
        netns::SITE_B_CLIENT_IP.to_string(),
    ];
    let site = |i: usize| if i == 0 { &sites.a } else { &sites.b };
    let mut last = [Bytes::default(); 2];
    let mut rows: Vec<String> = Vec::new();
    let mut step = |what: &str, i: usize, took: Option<Duration>, last: &mut [Bytes; 2]| {
        let now = bytes(&sites, site(i), &clients[i], &sizes);
        let d = |a: u64, b: u64| a.saturating_sub(b);
        rows.push(format!(
            "{:<44} {:>6} {:>12} {:>12} {:>12} {:>9}",
            what,
            ["A", "B"][i],
            d(now.origin, last[i].origin),
            d(now.store, last[i].store),
            d(now.cache, last[i].cache),
            took.map_or_else(
                || "-".into(),
                |t| format!("{:.0} ms", t.as_secs_f64() * 1e3)
            ),
        ));
        last[i] = now;
    };
    let out = sites.a.dir.join("out");
    let read = |i: usize, name: &str| -> Result<Duration> {
        let t = site(i);
        let served = t.bootcache_stat("serve", "served_bytes").unwrap_or(0);
        let took = t.curl_get(name, Some(1428), &out)?;
        // Served bytes are counted as clients acknowledge them: wait for
        // the read's (or see that the origin sent it).
        let at = Instant::now();
        while at.elapsed() < Duration::from_secs(3)
            && t.bootcache_stat("serve", "served_bytes").unwrap_or(0) == served
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(took)
    };
    let sha1 = netns::sha256_bytes(&image, &sites.a.dir, "v1")?;
    for i in 0..2 {
        let took = read(i, "boot.img")?;
        step("cold read of boot.img", i, Some(took), &mut last);
    }
    for bridge in ["bridge-a", "bridge-b"] {
        sites
            .a
            .wait_fleet("the cold copies held", Duration::from_secs(30), |v| {
                netns::holds_current(v, bridge, "boot.img", &sha1)
            })?;
    }
    let v2 = netns::test_content(args.mib << 20, 53);
    let sha2 = netns::sha256_bytes(&v2, &sites.a.dir, "v2")?;
    let changed = Instant::now();
    sites.a.put_file("boot.img", &v2)?;
    for bridge in ["bridge-a", "bridge-b"] {
        sites
            .a
            .wait_fleet("the new version held", Duration::from_secs(60), |v| {
                netns::holds_current(v, bridge, "boot.img", &sha2)
            })?;
    }
    let pushed = changed.elapsed();
    // The stats line lags the holdings by up to its interval.
    for t in [&sites.a, &sites.b] {
        t.wait_stat("fleet_member", "published", 1, Duration::from_secs(5))?;
    }
    for i in 0..2 {
        step(
            "boot.img changed on the origin: pushed",
            i,
            Some(pushed),
            &mut last,
        );
    }
    for i in 0..2 {
        let took = read(i, "boot.img")?;
        step("warm read of the new boot.img", i, Some(took), &mut last);
    }
    let sha_staged = netns::sha256_bytes(&staged, &sites.a.dir, "staged")?;
    let at = Instant::now();
    sites
        .a
        .fleet_command("cache", &["staged.img", "--site", "site-b"])?;
    sites.a.wait_fleet(
        "staged.img pre-staged at site B",
        Duration::from_secs(60),
        |v| netns::holds_current(v, "bridge-b", "staged.img", &sha_staged),
    )?;
    sites
        .b
        .wait_stat("fleet_member", "published", 2, Duration::from_secs(5))?;
    step(
        "directive: cache staged.img at site B",
        1,
        Some(at.elapsed()),
        &mut last,
    );
    let took = read(1, "staged.img")?;
    step(
        "first read of staged.img at site B",
        1,
        Some(took),
        &mut last,
    );

    println!();
    println!(
        "{:<44} {:>6} {:>12} {:>12} {:>12} {:>9}",
        "step", "site", "origin B", "store B", "cache B", "time"
    );
    for r in &rows {
        println!("{r}");
    }
    let total_origin: u64 = (0..2)
        .map(|i| bytes(&sites, site(i), &clients[i], &sizes).origin)
        .sum();
    println!(
        "\norigin bytes in all: {total_origin} ({:.2} images of boot.img for 2 cold reads; the new version: 0 from the origin, once into the Object Store)",
        total_origin as f64 / image.len() as f64
    );
    Ok(())
}
