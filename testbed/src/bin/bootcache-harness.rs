//! `bootcache-harness`: runs bootcache between two vhost-user ports of its own,
//! sends frames both ways, plays a PXE client and its boot server through it,
//! and prints what crossed and what bootcache cached (the README's main job
//! until the PXE demo with real firmware exists).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bootcache_testbed::demo;
use bootcache_testbed::frames::malformed_frames;
use bootcache_testbed::harness::Harness;
use bootcache_testbed::process::{default_bootcache_bin, remove_hugepage_files};
use bootcache_testbed::scenario::{
    captured_dhcp_exchange, test_file, tftp_read, Endpoints, TransferShape,
};
use bootcache_testbed::tftp_client::client_read;
use clap::Parser;

/// Drives a bootcache through virtio-user ↔ vhost-user port pairs.
#[derive(Debug, Parser)]
#[command(name = "bootcache-harness", version)]
struct Cli {
    /// The bootcache binary (default: next to this one).
    #[arg(long)]
    bootcache: Option<PathBuf>,
    /// Directory for the vhost-user sockets.
    #[arg(long, default_value = "/tmp/bootcache-harness")]
    dir: PathBuf,
    /// Test frames to send each way.
    #[arg(long, default_value_t = 100_000)]
    frames: u64,
    /// Frames in flight at most (flow control, so nothing need be dropped).
    #[arg(long, default_value_t = 512)]
    window: u64,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    demo::main(|| run(cli))
}

fn run(cli: Cli) -> Result<()> {
    std::fs::create_dir_all(&cli.dir).with_context(|| format!("creating {}", cli.dir.display()))?;
    let bin = cli.bootcache.unwrap_or_else(default_bootcache_bin);
    if !bin.exists() {
        bail!(
            "no bootcache binary at {} (build it: cargo build --release)",
            bin.display()
        );
    }
    let pid = std::process::id();
    let h = Harness::start(&cli.dir, &format!("bch-harness-{pid}"), "0@0")?;
    println!(
        "harness: vhost-user sockets {} and {}",
        h.sockets[0].display(),
        h.sockets[1].display()
    );
    // The demo's boot server is 10.77.0.1, as in the captured DHCP exchange.
    let cache = cli.dir.join("cache");
    let cfg = cli.dir.join("bootcache.toml");
    std::fs::write(
        &cfg,
        format!(
            "servers = [\"10.77.0.1\"]\ncache_dir = \"{}\"\nserve_max_age = 3600\n",
            cache.display()
        ),
    )?;
    let app = ["--config", cfg.to_str().unwrap_or_default()];
    let bc = h.start_bootcache(&bin, &format!("bch-dut-{pid}"), &app)?;
    println!("harness: started {} (pid {})", bin.display(), bc.pid());

    let mut crossed = [0u64; 2];
    let mut lost = 0u64;
    for from in [0usize, 1] {
        let dir = if from == 0 {
            "client → server"
        } else {
            "server → client"
        };
        // Every size 60..=1518 once, then a stream of 64-byte frames.
        let sizes = h.transfer_test_frames(from, 1459, cli.window, |i| 60 + i as usize)?;
        let stream = h.transfer_test_frames(from, cli.frames, cli.window, |_| 64)?;
        let mal = malformed_frames();
        let bad = h.transfer(
            from,
            mal.len() as u64,
            cli.window,
            Duration::from_secs(2),
            |i, buf| {
                buf.clear();
                buf.extend_from_slice(&mal[i as usize].1);
            },
        )?;
        for (what, r) in [
            ("sizes 60..1518", &sizes),
            ("64 B stream", &stream),
            ("malformed", &bad),
        ] {
            println!(
                "{dir:16} {what:15} sent {:>8} received {:>8} identical {:>8}  {:>7.3} Mpps",
                r.sent,
                r.received,
                r.received - r.mismatch_count,
                r.pps() / 1e6
            );
            crossed[from] += r.received - r.mismatch_count;
            lost += (r.sent - r.received) + r.mismatch_count;
        }
    }
    // A PXE boot as it crosses the wire: the captured DHCP exchange, then the
    // NBP, a kernel and an initrd over TFTP (lock-step and windowsize 16).
    println!("\nharness: PXE client 10.77.0.115 boots from 10.77.0.1 through bootcache");
    let dhcp = h.replay(&captured_dhcp_exchange(), 64, Duration::from_secs(3))?;
    lost += dhcp
        .iter()
        .map(|r| (r.sent - r.received) + r.mismatch_count)
        .sum::<u64>();
    let files = [
        ("pxelinux.0", 46_000, TransferShape::RFC1350),
        (
            "boot/vmlinuz",
            8 << 20,
            TransferShape {
                blksize: Some(1468),
                windowsize: 16,
                ..Default::default()
            },
        ),
        (
            "boot/initrd.img",
            3 << 20,
            TransferShape {
                blksize: Some(1468),
                windowsize: 1,
                ..Default::default()
            },
        ),
    ];
    for (i, (name, size, shape)) in files.iter().enumerate() {
        let ep = Endpoints {
            client: std::net::SocketAddrV4::new(
                std::net::Ipv4Addr::new(10, 77, 0, 115),
                49152 + i as u16,
            ),
            server: std::net::Ipv4Addr::new(10, 77, 0, 1),
            server_tid: 40000 + i as u16,
        };
        let script = tftp_read(ep, name, &test_file(*size, i as u8), *shape);
        let r = h.replay(&script, 256, Duration::from_secs(3))?;
        let ok = r
            .iter()
            .all(|r| r.sent == r.received && r.mismatch_count == 0);
        lost += r
            .iter()
            .map(|r| (r.sent - r.received) + r.mismatch_count)
            .sum::<u64>();
        println!(
            "  TFTP {name:<16} {size:>9} bytes, blksize {:>4}, windowsize {:>2}: {} frames crossed{}",
            shape.blksize.unwrap_or(512),
            shape.windowsize,
            r[0].received + r[1].received,
            if ok { ", byte-identical" } else { ", LOSS" }
        );
    }
    // A second client boots: bootcache answers from its cache.
    std::thread::sleep(Duration::from_millis(300)); // the last file's publish
    println!("\nharness: a second client, 10.77.0.116, asks for the same files");
    for (i, (name, size, shape)) in files.iter().enumerate() {
        let mut opts = wire::tftp::Options::default();
        opts.blksize = shape.blksize;
        opts.windowsize = (shape.windowsize > 1).then_some(shape.windowsize);
        let client =
            std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(10, 77, 0, 116), 49252 + i as u16);
        let got = client_read(
            &h,
            client,
            std::net::Ipv4Addr::new(10, 77, 0, 1),
            name,
            opts,
        )?;
        let same = got.file == test_file(*size, i as u8);
        if !same {
            lost += 1;
        }
        println!(
            "  TFTP {name:<16} {:>9} bytes in {:>7.1} ms, answered by {} from bootcache's cache, {} frames reached the server{}",
            got.file.len(),
            got.elapsed.as_secs_f64() * 1e3,
            got.answered_by.map(|a| a.to_string()).unwrap_or_default(),
            got.server_side_frames.len(),
            if same { ", byte-identical" } else { ", DIFFERENT" }
        );
    }
    let fin = h.stop_bootcache(bc)?;
    println!();
    print!("{}", fin.stdout);
    remove_hugepage_files(&h.file_prefix);
    if lost > 0 {
        bail!("{lost} frames lost or changed in the bridge");
    }
    println!(
        "harness: {} test frames crossed client → server, {} server → client, all byte-identical",
        crossed[0], crossed[1]
    );
    println!("\n$ bootcache cache ls --config {}", cfg.display());
    let ls = std::process::Command::new(&bin)
        .args(["cache", "ls", "--config", cfg.to_str().unwrap_or_default()])
        .output()
        .context("running bootcache cache ls")?;
    print!("{}", String::from_utf8_lossy(&ls.stdout));
    if !ls.status.success() {
        bail!(
            "bootcache cache ls: {}",
            String::from_utf8_lossy(&ls.stderr).trim()
        );
    }
    Ok(())
}
