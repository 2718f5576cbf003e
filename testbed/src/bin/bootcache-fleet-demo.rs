//! The two-site fleet demo (`scripts/demo --sites 2`, issue 14 item 8):
//! one origin with its agent and a NATS hub, two sites each with a NATS
//! leaf node, a bridge, curl and a qemu PXE client ([`netns::TwoSites`]).
//! An iPXE boot at site A (cold), the boot files pre-staged at site B by a
//! directive, a file read cold at both sites; the file and the initrd
//! change on the origin and reach both bridges through the Object Store;
//! iPXE boots at both sites and warm reads from the caches with the new
//! bytes; another file pre-staged at site B and read there. It reports per
//! site and per step the bytes that came from the origin, the Object Store
//! and the cache, and draws the run ([`demo::sites_picture`]): a panel per
//! site, bytes per second by source, the steps numbered. Everything is
//! removed at the end, also on Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bootcache_testbed::demo::{self, Phase, Timeline};
use bootcache_testbed::netns::{self, Topology, TwoSites, PXE_FILES};
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
    /// No qemu PXE boots: the plain clients' reads only.
    #[arg(long)]
    no_boots: bool,
    /// Directory with vmlinuz and initrd.gz (scripts/pxe-images).
    #[arg(long, default_value = netns::DEFAULT_IMAGES)]
    images: PathBuf,
    /// Seconds a boot may take before it counts as failed.
    #[arg(long, default_value_t = 180)]
    boot_timeout: u64,
    /// Directory for the picture of the run, `fleet-demo.svg` and `.png`
    /// (default: `demo/` beside this binary, e.g. target/release/demo).
    #[arg(long)]
    out: Option<PathBuf>,
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

/// The run so far: per site its counters at the last step, the client
/// addresses the origin's log names, the phases; the table's rows.
struct Run<'a> {
    sites: &'a TwoSites,
    /// Origin bytes per site, from the origin's log: each transfer it
    /// sent, by client address, at the file's size when it was counted.
    origin: [u64; 2],
    log_lines: usize,
    clients: [Vec<String>; 2],
    last: [Bytes; 2],
    phases: [Vec<Phase>; 2],
    steps: Vec<Step>,
}

/// A row of the report: a step at a site, the bytes from each source in
/// it, how long it took.
struct Step {
    label: String,
    site: usize,
    bytes: Bytes,
    took: Duration,
}

const SITES: [&str; 2] = ["A", "B"];

impl<'a> Run<'a> {
    fn site(&self, i: usize) -> &'a Topology {
        if i == 0 {
            &self.sites.a
        } else {
            &self.sites.b
        }
    }

    /// Adds the transfers the origin logged since the last call.
    fn count_origin(&mut self) {
        let log = std::fs::read_to_string(self.sites.a.origin_log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        for l in &lines[self.log_lines.min(lines.len())..] {
            let Some((path, client)) = l
                .split_once("dnsmasq-tftp")
                .and_then(|(_, r)| r.split_once(": sent "))
                .and_then(|(_, r)| r.rsplit_once(" to "))
            else {
                continue;
            };
            let size = std::fs::metadata(path).map_or(0, |m| m.len());
            if let Some(i) = (0..2).find(|&i| self.clients[i].iter().any(|c| c == client)) {
                self.origin[i] += size;
            }
        }
        self.log_lines = lines.len();
    }

    fn now(&mut self, i: usize) -> Bytes {
        self.count_origin();
        let t = self.site(i);
        let stat = |s: &str, k: &str| t.bootcache_stat(s, k).unwrap_or(0);
        Bytes {
            origin: self.origin[i],
            store: stat("fleet_member", "published_bytes"),
            cache: stat("serve", "served_bytes"),
        }
    }

    /// Closes a step at site `i` that ran over `phase`: waits for the
    /// statistics object after it (so that the next step's bytes are
    /// counted apart), then adds its row and its phase.
    fn step(&mut self, i: usize, phase: Phase, took: Duration) -> Result<()> {
        let t = self.site(i);
        Timeline::read_past(
            &t.bootcache_log_dir().join("bootcache.out"),
            phase.to_ms,
            Duration::from_secs(5),
        )?;
        let now = self.now(i);
        let last = self.last[i];
        let d = |a: u64, b: u64| a.saturating_sub(b);
        self.steps.push(Step {
            label: phase.label.clone(),
            site: i,
            bytes: Bytes {
                origin: d(now.origin, last.origin),
                store: d(now.store, last.store),
                cache: d(now.cache, last.cache),
            },
            took,
        });
        self.last[i] = now;
        self.phases[i].push(phase);
        Ok(())
    }

    /// The Object Store's bytes in the steps labelled `what`.
    fn store_in(&self, what: &str) -> u64 {
        self.steps
            .iter()
            .filter(|s| s.label == what)
            .map(|s| s.bytes.store)
            .sum()
    }

    /// Reads `name` with curl at site `i`; its step.
    fn read(&mut self, i: usize, what: &str, name: &str) -> Result<()> {
        let t = self.site(i);
        let served = t.bootcache_stat("serve", "served_bytes").unwrap_or(0);
        let out = t.dir.join("out");
        let from_ms = demo::unix_ms();
        let took = t.curl_get(name, Some(1428), &out)?;
        let to_ms = demo::unix_ms();
        // Served bytes are counted as clients acknowledge them: wait for
        // the read's (or see that the origin sent it).
        let at = Instant::now();
        while at.elapsed() < Duration::from_secs(3)
            && t.bootcache_stat("serve", "served_bytes").unwrap_or(0) == served
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        let label = format!("curl: {what} {name}");
        self.step(i, phase(label, from_ms, to_ms), took)
    }

    /// An iPXE boot at site `i`; its step. The guest's marker line must
    /// end in `initrd=` `initrd` when given (which initrd it ran).
    fn boot(
        &mut self,
        i: usize,
        what: &str,
        initrd: Option<&str>,
        timeout: Duration,
    ) -> Result<()> {
        let t = self.site(i);
        // boot_to_marker prints "boot <tag>: <seconds>: <marker>".
        let tag = format!("site-{}-{}", SITES[i], self.phases[i].len() + 1);
        println!(
            "demo: site {}: {what}: qemu (SeaBIOS + iPXE ROM, software emulation) …",
            SITES[i]
        );
        let from_ms = demo::unix_ms();
        let b = t.boot_to_marker(&tag, "1", timeout)?;
        let to_ms = demo::unix_ms();
        let marker = b.marker.unwrap_or_default();
        let ran = marker.split_once(" initrd=").map(|(_, v)| v.trim());
        if ran != initrd {
            bail!(
                "site {}: {what}: the guest ran initrd {ran:?}, expected {initrd:?}: {marker}",
                SITES[i]
            );
        }
        // The origin's log names the guest by its lease.
        if let Some(ip) = marker
            .split_once("ip=")
            .and_then(|(_, r)| r.split_whitespace().next())
        {
            self.clients[i].push(ip.to_string());
        }
        self.step(
            i,
            phase(format!("iPXE boot {what}"), from_ms, to_ms),
            b.elapsed,
        )
    }
}

fn phase(label: String, from_ms: u64, to_ms: u64) -> Phase {
    Phase {
        label,
        from_ms,
        to_ms,
    }
}

/// Waits until both bridges hold `files` with their current content on
/// the origin (`bootcache-agent fleet --json`).
fn wait_held(sites: &TwoSites, bridges: &[&str], files: &[&str], what: &str) -> Result<()> {
    let shas = files
        .iter()
        .map(|f| netns::sha256_file(&sites.a.tftp_root.join(f)))
        .collect::<Result<Vec<_>>>()?;
    sites
        .a
        .wait_fleet(what, Duration::from_secs(60), |v| {
            bridges.iter().all(|b| {
                files
                    .iter()
                    .zip(&shas)
                    .all(|(f, sha)| netns::holds_current(v, b, f, sha))
            })
        })
        .map(|_| ())
}

fn run(args: &Args) -> Result<()> {
    let image = netns::test_content(args.mib << 20, 51);
    let staged = netns::test_content(4 << 20, 52);
    let opts = netns::Options {
        prefix: Some(args.prefix.clone()),
        ..Default::default()
    };
    let boots = !args.no_boots;
    let timeout = Duration::from_secs(args.boot_timeout);
    eprintln!("demo: building two sites (origin, agent, NATS hub, two leaf nodes, two bridges)");
    let files = [("boot.img", &image[..]), ("staged.img", &staged[..])];
    let sites = if boots {
        TwoSites::start_pxe(&opts, &files, &args.images)?
    } else {
        TwoSites::start(&opts, &files)?
    };
    for t in [&sites.a, &sites.b] {
        t.wait_stat("fleet", "live", 1, Duration::from_secs(30))?;
    }
    let mut run = Run {
        sites: &sites,
        origin: [0; 2],
        log_lines: 0,
        clients: [
            vec![netns::CLIENT_IP.to_string()],
            vec![netns::SITE_B_CLIENT_IP.to_string()],
        ],
        last: [Bytes::default(); 2],
        phases: [Vec::new(), Vec::new()],
        steps: Vec::new(),
    };

    if boots {
        run.boot(0, "(cold)", None, timeout)?;
        wait_held(
            &sites,
            &["bridge-a"],
            &PXE_FILES,
            "the boot files held at site A",
        )?;
        let from_ms = demo::unix_ms();
        let at = Instant::now();
        sites.a.fleet_command(
            "cache",
            &[PXE_FILES[0], PXE_FILES[1], PXE_FILES[2], "--site", "site-b"],
        )?;
        wait_held(
            &sites,
            &["bridge-b"],
            &PXE_FILES,
            "the boot files pre-staged at site B",
        )?;
        sites
            .b
            .wait_stat("fleet_member", "published", 3, Duration::from_secs(5))?;
        let p = phase(
            "directive: pre-stage the boot files".into(),
            from_ms,
            demo::unix_ms(),
        );
        run.step(1, p, at.elapsed())?;
    }
    for i in 0..2 {
        run.read(i, "cold read of", "boot.img")?;
    }
    wait_held(
        &sites,
        &["bridge-a", "bridge-b"],
        &["boot.img"],
        "the cold copies held",
    )?;

    // The change on the origin: the boot image, and the initrd.
    let mut changed_files = vec!["boot.img"];
    let published: Vec<u64> = [&sites.a, &sites.b]
        .iter()
        .map(|t| t.bootcache_stat("fleet_member", "published").unwrap_or(0))
        .collect();
    let from_ms = demo::unix_ms();
    let changed = Instant::now();
    sites
        .a
        .put_file("boot.img", &netns::test_content(args.mib << 20, 53))?;
    if boots {
        sites
            .a
            .put_file(PXE_FILES[2], &netns::initrd_variant(&args.images, "2")?)?;
        changed_files.push(PXE_FILES[2]);
    }
    wait_held(
        &sites,
        &["bridge-a", "bridge-b"],
        &changed_files,
        "the new versions held",
    )?;
    let pushed = changed.elapsed();
    let to_ms = demo::unix_ms();
    // The stats line lags the holdings by up to its interval.
    for (t, n) in [&sites.a, &sites.b].iter().zip(published) {
        t.wait_stat(
            "fleet_member",
            "published",
            n + changed_files.len() as u64,
            Duration::from_secs(5),
        )?;
    }
    let what = format!(
        "{} change on the origin: pushed",
        changed_files.join(" and ")
    );
    for i in 0..2 {
        run.step(i, phase(what.clone(), from_ms, to_ms), pushed)?;
    }
    let origin_before: u64 = run.origin.iter().sum();
    let store_pushed = run.store_in(&what);

    if boots {
        run.boot(0, "(warm: the new initrd)", Some("2"), timeout)?;
        run.boot(
            1,
            "(first at B, from its cache: the new initrd)",
            Some("2"),
            timeout,
        )?;
    }
    for i in 0..2 {
        run.read(i, "warm read of the new", "boot.img")?;
    }
    let sha_staged = netns::sha256_bytes(&staged, &sites.a.dir, "staged")?;
    let from_ms = demo::unix_ms();
    let at = Instant::now();
    sites
        .a
        .fleet_command("cache", &["staged.img", "--site", "site-b"])?;
    sites.a.wait_fleet(
        "staged.img pre-staged at site B",
        Duration::from_secs(60),
        |v| netns::holds_current(v, "bridge-b", "staged.img", &sha_staged),
    )?;
    let n = sites
        .b
        .bootcache_stat("fleet_member", "published")
        .unwrap_or(0);
    sites.b.wait_stat(
        "fleet_member",
        "published",
        n.max(1),
        Duration::from_secs(5),
    )?;
    let p = phase(
        "directive: pre-stage staged.img".into(),
        from_ms,
        demo::unix_ms(),
    );
    run.step(1, p, at.elapsed())?;
    run.read(1, "first read of", "staged.img")?;

    println!();
    println!(
        "{:<52} {:>4} {:>12} {:>12} {:>12} {:>9}",
        "step", "site", "origin B", "store B", "cache B", "time"
    );
    for s in &run.steps {
        println!(
            "{:<52} {:>4} {:>12} {:>12} {:>12} {:>9}",
            s.label,
            SITES[s.site],
            s.bytes.origin,
            s.bytes.store,
            s.bytes.cache,
            format!("{:.0} ms", s.took.as_secs_f64() * 1e3),
        );
    }
    run.count_origin();
    let total_origin: u64 = run.origin.iter().sum();
    println!(
        "\norigin bytes in all: {total_origin}: {origin_before} before the change ({}two cold reads of boot.img), {} after it; the new versions reached both caches through the Object Store ({store_pushed} bytes published)",
        if boots { "site A's cold boot, " } else { "" },
        total_origin - origin_before,
    );
    draw(args, &run)?;
    Ok(())
}

/// The picture of the run, a panel per site; prints where it is.
fn draw(args: &Args, run: &Run<'_>) -> Result<()> {
    let dir = demo::out_dir(args.out.as_deref())?;
    let mut timelines = Vec::new();
    for i in 0..2 {
        let end = run.phases[i].iter().map(|p| p.to_ms).max().unwrap_or(0);
        let out = run.site(i).bootcache_log_dir().join("bootcache.out");
        timelines.push(Timeline::read_past(&out, end, Duration::from_secs(5))?);
    }
    let note = format!(
        "{} + {} samples of --stats-json, 1 s apart. Origin: bytes the server-side port received; Object Store: pushed files published into the cache; cache: what the client side sent beyond the origin's",
        timelines[0].len(),
        timelines[1].len()
    );
    let names = ["site A (bridge-a, with the origin)", "site B (bridge-b)"];
    let sites: Vec<demo::Site<'_>> = (0..2)
        .map(|i| (names[i], &timelines[i], &run.phases[i][..]))
        .collect();
    let files = demo::sites_picture(
        "Two sites, one origin: bytes per second by source at each bridge",
        &note,
        &sites,
        &dir,
        "fleet-demo",
    )
    .context("drawing the picture of the run")?;
    let mut recorded = Vec::new();
    for (i, t) in timelines.iter().enumerate() {
        let p = dir.join(format!("fleet-demo-site-{}.jsonl", SITES[i].to_lowercase()));
        std::fs::write(&p, demo::recording(t, &run.phases[i]))
            .with_context(|| format!("writing {}", p.display()))?;
        recorded.push(p);
    }
    let show = |v: &[PathBuf]| {
        v.iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(" and ")
    };
    println!(
        "demo: picture of the run: {} (its samples: {})",
        show(&files),
        show(&recorded)
    );
    Ok(())
}
