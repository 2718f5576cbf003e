//! The PXE demo (`scripts/demo`): a real PXE client boots twice through
//! bootcache, then plain TFTP clients read a large file cold and warm.
//!
//! Server namespace: dnsmasq (DHCP, router advertisements, TFTP) and
//! bootcache-agent. Client namespace: qemu (software emulation) with the
//! firmware `--firmware` names (default: SeaBIOS and Debian's iPXE ROM; or
//! OVMF's UEFI PXE, pxelinux, GRUB) on a tap, curl and tftp-hpa. bootcache bridges the two
//! on `net_af_packet` ports. Everything is removed at the end, also on
//! Ctrl-C; `--keep` leaves it running for exploration. Besides the text
//! report it draws the run ([`demo::picture`]): bytes per second from the
//! origin and from the cache, sampled from bootcache's `--stats-json`.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bootcache_testbed::demo::{self, Phase, Timeline};
use bootcache_testbed::netns::{self, Firmware, Topology, SERVER_IP};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "bootcache-pxe-demo",
    about = "A real PXE boot through bootcache, twice"
)]
struct Args {
    /// Leave the namespaces and programs running after the report (Ctrl-C removes them).
    #[arg(long)]
    keep: bool,
    /// Directory with vmlinuz and initrd.gz (scripts/pxe-images).
    #[arg(long, default_value = netns::DEFAULT_IMAGES)]
    images: PathBuf,
    /// Size of the large file the plain clients read, MiB (0: skip them).
    #[arg(long, default_value_t = 64)]
    big_mib: usize,
    /// Name prefix of the namespaces and links.
    #[arg(long, default_value = "bcdemo")]
    prefix: String,
    /// Seconds a boot may take before it counts as failed.
    #[arg(long, default_value_t = 180)]
    boot_timeout: u64,
    /// What the PXE client boots: ipxe (SeaBIOS + iPXE ROM), uefi (OVMF's
    /// PXE → iPXE snponly.efi), pxelinux or grub (chained from the iPXE ROM).
    #[arg(long, default_value = "ipxe", value_parser = Firmware::from_name)]
    firmware: Firmware,
    /// Directory for the picture of the run, `pxe-demo.svg` and `.png`
    /// (default: `demo/` beside this binary, e.g. target/release/demo).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    demo::main(|| run(&args))
}

/// With `--keep`, a failure leaves everything up for a look (Ctrl-C ends it).
fn keep_on_failure<T>(args: &Args, r: Result<T>) -> Result<T> {
    if args.keep {
        if let Err(e) = &r {
            eprintln!("demo: {e:#}");
            eprintln!("demo: --keep: leaving everything up for a look; Ctrl-C removes it");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }
    r
}

struct FileRow {
    name: String,
    size: u64,
}

struct BootReport {
    elapsed: Duration,
    /// When it ran, on the statistics' clock.
    phase: Phase,
    marker: String,
    from_origin: Vec<String>,
    /// The TFTP requests and answers on the client's wire.
    wire: Vec<String>,
}

fn boot(t: &Topology, tag: &str, timeout: Duration) -> Result<BootReport> {
    let before = t.origin_transfers().len();
    println!(
        "demo: PXE boot {tag}: qemu ({}, software emulation) on the client side …",
        t.firmware().describe()
    );
    let cap = t.capture_tftp(tag)?;
    let from_ms = demo::unix_ms();
    let b = t.boot_pxe(tag, timeout);
    let phase = Phase {
        label: format!("boot {tag} ({})", if tag == "1" { "cold" } else { "warm" }),
        from_ms,
        to_ms: demo::unix_ms(),
    };
    let wire = t.tftp_captured(cap)?;
    let b = b?;
    let Some(marker) = b.marker else {
        eprintln!("{}", t.diagnostics());
        bail!(
            "boot {tag}: no {} on the serial console after {:.0?}; serial log {} (--keep keeps it)",
            netns::MARKER,
            b.elapsed,
            t.dir.join(format!("serial-{tag}.log")).display()
        );
    };
    let from_origin = t.origin_transfers()[before..].to_vec();
    println!(
        "demo: boot {tag} done in {:.1} s: {marker}",
        b.elapsed.as_secs_f64()
    );
    Ok(BootReport {
        elapsed: b.elapsed,
        phase,
        marker,
        from_origin,
        wire,
    })
}

fn run(args: &Args) -> Result<()> {
    netns::check_prerequisites(true)?;
    if std::env::var_os("BOOTCACHE_QEMU_ACCEL").is_none() {
        println!("demo: qemu uses software emulation (TCG; BOOTCACHE_QEMU_ACCEL=kvm to try KVM): a boot takes under a minute");
    }
    let mut t = Topology::create(&netns::Options {
        prefix: Some(args.prefix.clone()),
        keep_dir: args.keep,
        ..netns::Options::default()
    })?;
    println!(
        "demo: namespaces {} (boot server) and {} (PXE client), bootcache ports {} (client side) and {} (server side), work dir {}",
        t.server_ns,
        t.client_ns,
        t.client_link,
        t.server_link,
        t.dir.display()
    );
    t.set_firmware(args.firmware);
    t.install_firmware_files(args.firmware, &args.images)?;
    if args.big_mib > 0 {
        t.put_file(
            "images/big.img",
            &netns::test_content(args.big_mib << 20, 1),
        )?;
    }
    t.start_origin()?;
    t.start_agent()?;
    t.write_bootcache_config("")?;
    t.start_bootcache(&["--stats-interval", "1"])?;
    println!(
        "demo: dnsmasq (DHCP + TFTP) and bootcache-agent on {SERVER_IP}, bootcache bridging (logs under {})",
        t.dir.display()
    );

    let timeout = Duration::from_secs(args.boot_timeout);
    let first = keep_on_failure(args, boot(&t, "1", timeout))?;
    settle(&t, first.phase.to_ms)?;
    // Every file the first boot loaded (GRUB: its modules too), once.
    let mut names: Vec<String> = Vec::new();
    for n in args
        .firmware
        .boot_files()
        .into_iter()
        .chain(first.from_origin.clone())
    {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    t.wait_stat(
        "files",
        "in_store",
        names.len() as u64,
        Duration::from_secs(30),
    )
    .context("the first boot's files were not all cached")?;
    let second = keep_on_failure(args, boot(&t, "2", timeout))?;
    settle(&t, second.phase.to_ms)?;

    let mut phases = vec![first.phase.clone(), second.phase.clone()];
    let mut plain = Vec::new();
    if args.big_mib > 0 {
        let name = "images/big.img";
        let want = netns::sha256_file(&t.tftp_root.join(name))?;
        for (label, how, short) in [
            ("curl --tftp-blksize 1428, cold", "curl", "curl, cold"),
            ("curl --tftp-blksize 1428, warm", "curl", "curl, warm"),
            (
                "tftp (tftp-hpa, 512-byte blocks), warm",
                "tftp",
                "tftp, warm",
            ),
        ] {
            let out = t.dir.join("fetched.img");
            let before = t.origin_count(name);
            let from_ms = demo::unix_ms();
            let d = match how {
                "curl" => t.curl_get(name, Some(1428), &out)?,
                _ => t.tftp_hpa_get(name, &out)?,
            };
            let to_ms = demo::unix_ms();
            phases.push(Phase {
                label: short.into(),
                from_ms,
                to_ms,
            });
            settle(&t, to_ms)?;
            let same = netns::sha256_file(&out)? == want;
            let _ = std::fs::remove_file(&out);
            let by = if t.origin_count(name) > before {
                "origin"
            } else {
                "cache"
            };
            println!(
                "demo: {name} ({} MiB) with {label}: {:.1} s, served by {by}, sha256 {}",
                args.big_mib,
                d.as_secs_f64(),
                if same { "identical" } else { "DIFFERENT" }
            );
            if !same {
                bail!("{name}: the client got different bytes");
            }
            plain.push((label, d, by));
            if plain.len() == 1 {
                t.wait_stat(
                    "files",
                    "in_store",
                    names.len() as u64 + 1,
                    Duration::from_secs(30),
                )?;
            }
        }
    }

    // The report.
    let files: Vec<FileRow> = names
        .iter()
        .map(|n| FileRow {
            name: n.to_string(),
            size: std::fs::metadata(t.tftp_root.join(n))
                .map(|m| m.len())
                .unwrap_or(0),
        })
        .collect();
    let by = |b: &BootReport, f: &FileRow| {
        if b.from_origin.contains(&f.name) {
            "origin"
        } else {
            "cache"
        }
    };
    let origin_bytes = |b: &BootReport| -> u64 {
        files
            .iter()
            .filter(|f| b.from_origin.contains(&f.name))
            .map(|f| f.size)
            .sum()
    };
    println!();
    println!("== report ==");
    let w = files
        .iter()
        .map(|f| f.name.len())
        .max()
        .unwrap_or(4)
        .max(12);
    println!(
        "{:<w$} {:>10}  {:<8} {:<8}",
        "file", "bytes", "boot 1", "boot 2"
    );
    for f in &files {
        println!(
            "{:<w$} {:>10}  {:<8} {:<8}",
            f.name,
            f.size,
            by(&first, f),
            by(&second, f)
        );
    }
    println!(
        "boot 1: {:.1} s, origin sent {} bytes ({} transfers)",
        first.elapsed.as_secs_f64(),
        origin_bytes(&first),
        first.from_origin.len()
    );
    println!(
        "boot 2: {:.1} s, origin sent {} bytes ({} transfers)",
        second.elapsed.as_secs_f64(),
        origin_bytes(&second),
        second.from_origin.len()
    );
    for (label, b) in [("boot 1 (origin)", &first), ("boot 2 (cache)", &second)] {
        println!(
            "TFTP options, {label}: what {} asked → what was answered:",
            args.firmware.name()
        );
        for (asked, answered, n) in netns::option_exchanges(&b.wire) {
            println!("  {n:>3} × {asked} → {answered}");
        }
    }
    let probes = |section| t.bootcache_stat(section, "size_probes").unwrap_or(0);
    println!(
        "size probes (read ended by ERROR 8 after the OACK): {} seen from the origin, {} answered from the cache",
        probes("transfers"),
        probes("serve")
    );
    println!("console, boot 1: {}", first.marker);
    println!("console, boot 2: {}", second.marker);
    if let [(_, cold, _), (_, warm, _), ..] = plain.as_slice() {
        println!(
            "{} MiB over TFTP, curl blksize 1428: cold (origin) {:.1} s, warm (cache) {:.1} s, warm/cold {:.2}",
            args.big_mib,
            cold.as_secs_f64(),
            warm.as_secs_f64(),
            warm.as_secs_f64() / cold.as_secs_f64()
        );
    }
    if let Some(line) = std::fs::read_to_string(t.bootcache_log_dir().join("bootcache.out"))
        .ok()
        .and_then(|s| {
            s.lines()
                .rev()
                .find(|l| l.starts_with("stats:"))
                .map(str::to_string)
        })
    {
        println!("bootcache {line}");
    }
    draw(args, &t, &phases)?;
    println!();
    let cfg = t.dir.join("bootcache.toml");
    let bc = std::env::current_exe()?
        .parent()
        .map(|d| d.join("bootcache"))
        .unwrap_or_else(|| "bootcache".into());
    println!("$ bootcache cache ls --config {}", cfg.display());
    let ls = Command::new(&bc)
        .args(["cache", "ls", "--config"])
        .arg(&cfg)
        .output()
        .with_context(|| format!("running {} cache ls", bc.display()))?;
    print!("{}", String::from_utf8_lossy(&ls.stdout));

    if args.keep {
        println!();
        println!("demo: --keep: everything stays up until Ctrl-C. To look around:");
        println!(
            "  ip netns exec {} curl -o /tmp/k --tftp-blksize 1428 tftp://{SERVER_IP}/vmlinuz",
            t.client_ns
        );
        println!(
            "  ip netns exec {} tftp -m binary {SERVER_IP} -c get initrd.gz /tmp/i",
            t.client_ns
        );
        println!(
            "  tail -f {}        # origin: DHCP and every TFTP transfer it sent",
            t.origin_log().display()
        );
        println!(
            "  tail -f {}/bootcache.out   # bootcache's stats, every second",
            t.bootcache_log_dir().display()
        );
        println!("  {} cache ls --config {}", bc.display(), cfg.display());
        println!(
            "  ls {}  # serial-*.log: the PXE client's console",
            t.dir.display()
        );
        println!(
            "  dpdk-telemetry.py -f bce-{}   # then /ethdev/stats,0",
            t.prefix
        );
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let fin = t.stop_bootcache()?;
    if fin.code != Some(0) {
        bail!(
            "bootcache exited with {:?}: {}",
            fin.code,
            fin.stderr.trim()
        );
    }
    drop(t);
    println!("demo: cleaned up (namespaces, links, processes)");
    Ok(())
}

/// bootcache's statistics once one was printed after `to_ms` (a phase's
/// end), so that the next phase's bytes are counted apart.
fn settle(t: &Topology, to_ms: u64) -> Result<Timeline> {
    let out = t.bootcache_log_dir().join("bootcache.out");
    Timeline::read_past(&out, to_ms, Duration::from_secs(5))
}

/// The picture of the run, from bootcache's statistics objects; prints
/// where it is.
fn draw(args: &Args, t: &Topology, phases: &[Phase]) -> Result<()> {
    let end = phases.iter().map(|p| p.to_ms).max().unwrap_or(0);
    let timeline = settle(t, end)?;
    let dir = demo::out_dir(args.out.as_deref())?;
    let note = format!(
        "{} samples of --stats-json, 1 s apart. Origin: bytes the server-side port received; cache: what the client side sent beyond them. Firmware {}",
        timeline.len(),
        args.firmware.name()
    );
    let files = demo::picture(
        "A real PXE boot through bootcache, twice: bytes per second by source",
        &note,
        &[("bootcache", &timeline)],
        phases,
        &dir,
        "pxe-demo",
    )
    .context("drawing the picture of the run")?;
    let samples = dir.join("pxe-demo.jsonl");
    std::fs::write(&samples, demo::recording(&timeline, phases))
        .with_context(|| format!("writing {}", samples.display()))?;
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    println!(
        "demo: picture of both boots: {} (its samples: {})",
        names.join(" and "),
        samples.display()
    );
    Ok(())
}
