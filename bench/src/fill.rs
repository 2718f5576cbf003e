//! The fill scenario: TFTP transfers (blksize 1428, windowsize 16) cross
//! bootcache as fast as the generator sends them; bootcache copies them to
//! its slow path, which reassembles, hashes (SHA-256) and publishes each
//! file. Reports the slow path's throughput and the redirect ring's drops.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dpdk::{Burst, Mbuf};

use crate::dut::{Dut, DutConfig, DutProcess};
use crate::results::{f, Table};
use bootcache_testbed::harness::Harness;
use bootcache_testbed::process::stat;
use bootcache_testbed::scenario::{test_file, tftp_read, Endpoints, TransferShape};

/// The fill scenario's parameters.
#[derive(Debug, Clone)]
pub struct FillConfig {
    /// Transfers, interleaved frame by frame (at most 250).
    pub transfers: usize,
    /// Size of each file.
    pub file_size: usize,
    /// Slots of bootcache's redirect ring.
    pub redirect_ring: u32,
    /// bootcache's lcores.
    pub lcores: String,
}

impl FillConfig {
    /// The full run or the quick one.
    pub fn new(quick: bool) -> FillConfig {
        FillConfig {
            transfers: if quick { 4 } else { 32 },
            file_size: if quick { 1 << 20 } else { 8 << 20 },
            redirect_ring: 16384,
            // The slow path shares the device's CPU with the bridge, so the
            // generator keeps CPU 0 to itself (on CPU 0 the slow path halved
            // the generator's rate in trials).
            lcores: "0@1,1@1".into(),
        }
    }
}

/// What the scenario measured.
#[derive(Debug, Clone, Default)]
pub struct FillResults {
    /// The summary table.
    pub table: Table,
}

/// Runs the scenario on harness `h`.
pub fn run(
    h: &Harness,
    base: &DutConfig,
    cfg: &FillConfig,
    work: &Path,
    out: &Path,
) -> Result<FillResults> {
    let server = Ipv4Addr::new(10, 77, 0, 1);
    let cache = work.join("fill-cache");
    let args = crate::dut::write_config(
        &work.join("fill.toml"),
        &cache,
        &format!("[limits]\nredirect_ring = {}\n", cfg.redirect_ring),
    )?;
    let shape = TransferShape {
        blksize: Some(1428),
        windowsize: 16,
        ..TransferShape::default()
    };
    // Each transfer's frames; the read requests go first (they make
    // bootcache follow the transfer), the rest interleaved frame by frame.
    let mut rrqs = Vec::new();
    let mut rest: Vec<std::vec::IntoIter<(usize, Vec<u8>)>> = Vec::new();
    for t in 0..cfg.transfers {
        let ep = Endpoints {
            client: SocketAddrV4::new(Ipv4Addr::new(10, 77, 1, t as u8 + 1), 2000 + t as u16),
            server,
            server_tid: 40000 + t as u16,
        };
        let file = test_file(cfg.file_size, t as u8);
        let mut frames = tftp_read(ep, &format!("fill/{t}.img"), &file, shape).into_iter();
        rrqs.push(frames.next().context("a transfer starts with its RRQ")?);
        rest.push(frames.collect::<Vec<_>>().into_iter());
    }
    let mut script = Vec::new();
    while rest.iter().any(|r| r.len() > 0) {
        for r in &mut rest {
            if let Some(x) = r.next() {
                script.push(x);
            }
        }
    }
    let payload_bytes = (cfg.transfers * cfg.file_size) as u64;
    let dcfg = DutConfig {
        lcores: cfg.lcores.clone(),
        bootcache_args: args,
        ..base.clone()
    };
    let prefix = format!("bb-fill-{}", std::process::id());
    let p = DutProcess::start(h, Dut::Bootcache, &dcfg, &prefix)?;
    let reps = h.replay(&rrqs, 64, Duration::from_secs(3))?;
    anyhow::ensure!(
        reps[0].received == rrqs.len() as u64,
        "read requests did not cross"
    );
    std::thread::sleep(Duration::from_millis(300)); // the slow path installs the rules
    h.drain();
    let files_dir = cache.join("files");
    let count = || {
        std::fs::read_dir(&files_dir)
            .map(|d| d.count())
            .unwrap_or(0)
    };
    // Blast: every frame on its side, as fast as the ports take them.
    let start = Instant::now();
    let (mut sent, mut sent_bytes, mut received) = (0u64, 0u64, 0u64);
    let mut tx = [Burst::new(), Burst::new()];
    let mut rx = Burst::new();
    let mut it = script.iter().peekable();
    while it.peek().is_some() || tx.iter().any(|b| !b.is_empty()) {
        // Fill each side's burst in script order until the next frame's side is full.
        while let Some((side, f)) = it.peek() {
            if tx[*side].is_full() {
                break;
            }
            let m = Mbuf::from_bytes(&h.pool, f).context("harness pool exhausted")?;
            let _ = tx[*side].push(m);
            sent_bytes += f.len() as u64;
            it.next();
        }
        for (port, b) in h.ports.iter().zip(tx.iter_mut()) {
            sent += port.tx_burst(0, b) as u64;
            if port.rx_burst(0, &mut rx) > 0 {
                received += rx.free_all() as u64;
            }
        }
    }
    let blast = start.elapsed();
    // Wait for the slow path to publish (or give up 10 s after the blast).
    let mut last_publish = start.elapsed();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        for port in &h.ports {
            if port.rx_burst(0, &mut rx) > 0 {
                received += rx.free_all() as u64;
            }
        }
        let n = count();
        if n > seen {
            seen = n;
            last_publish = start.elapsed();
        }
        if n >= cfg.transfers {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let text = p.stop(h)?;
    let _ = std::fs::remove_dir_all(&cache);
    let cached = stat(&text, "files", "bytes_cached").unwrap_or(0);
    let files = stat(&text, "files", "cached").unwrap_or(0);
    let copy_drops = stat(&text, "redirect", "copy_drops").unwrap_or(0);
    let copied = stat(&text, "redirect", "copied").unwrap_or(0);
    let offered_gbps = sent_bytes as f64 * 8.0 / blast.as_secs_f64() / 1e9;
    let slow_gbps = cached as f64 * 8.0 / last_publish.as_secs_f64().max(1e-9) / 1e9;
    println!(
        "  {} transfers of {} B: {sent} frames ({:.2} Gbit/s, {:.2} Mpps) sent in {:.3} s, {received} forwarded; \
         bootcache copied {copied}, copy_drops {copy_drops}; {files} files ({cached} B) published {:.3} s after the first frame",
        cfg.transfers,
        cfg.file_size,
        offered_gbps,
        sent as f64 / blast.as_secs_f64() / 1e6,
        blast.as_secs_f64(),
        last_publish.as_secs_f64()
    );
    let mut t = Table::new(&[
        "transfers",
        "file_bytes",
        "frames",
        "offered_gbps",
        "forwarded_frames",
        "copied",
        "copy_drops",
        "files_cached",
        "bytes_cached",
        "slowpath_gbps",
        "payload_bytes",
    ]);
    t.push(vec![
        cfg.transfers.to_string(),
        cfg.file_size.to_string(),
        sent.to_string(),
        f(offered_gbps, 2),
        received.to_string(),
        copied.to_string(),
        copy_drops.to_string(),
        files.to_string(),
        cached.to_string(),
        f(slow_gbps, 2),
        payload_bytes.to_string(),
    ]);
    t.write(out, "fill")?;
    Ok(FillResults { table: t })
}
