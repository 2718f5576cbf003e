//! `bootcache-agent`: serves the freshness protocol for one TFTP root.

#![deny(unsafe_code)]

use std::collections::HashMap;
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use bootcache_agent::watch::{self, WatchConfig};
use bootcache_agent::{random_seed, Key, Responder, Table};
use clap::Parser;

/// Answers bootcache's "is this copy still current?" questions for the files
/// under a TFTP root.
#[derive(Parser, Debug)]
#[command(name = "bootcache-agent", version)]
struct Args {
    /// The TFTP root directory (as served by tftpd-hpa / dnsmasq).
    #[arg(long)]
    root: PathBuf,
    /// UDP address to listen on, e.g. 0.0.0.0:4070 (port 0 picks a free one).
    #[arg(long)]
    listen: SocketAddr,
    /// File holding the shared HMAC key: hex, or raw bytes; at least 32 bytes.
    #[arg(long)]
    key_file: PathBuf,
    /// Accepted clock difference to the cache, in seconds.
    #[arg(long, default_value_t = 30)]
    window: u64,
    /// Quiet time after the last write before a file is rehashed, in ms.
    #[arg(long, default_value_t = 200)]
    debounce_ms: u64,
    /// Most nonces remembered for replay protection.
    #[arg(long, default_value_t = 1 << 16)]
    replay_capacity: usize,
    /// Follow symbolic links whose target lies outside the root (a TFTP
    /// server that does, outside a chroot). Default: such links answer
    /// "unknown", as dnsmasq refuses them and tftpd-hpa --secure resolves
    /// them inside its chroot.
    #[arg(long)]
    follow_outside_root: bool,
    /// Publish the verification table to this NATS server for the bridges
    /// to mirror, e.g. nats://10.0.0.1:4222 (repeat for a cluster).
    #[arg(long = "nats", value_name = "URL")]
    nats: Vec<String>,
    /// The JetStream key-value bucket of the table (created if missing).
    #[arg(long, default_value = "bootcache", requires = "nats")]
    bucket: String,
    /// A NATS credentials file, if the servers require one.
    #[arg(long, value_name = "FILE", requires = "nats")]
    nats_creds: Option<PathBuf>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("bootcache-agent: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let contents = std::fs::read(&args.key_file)
        .map_err(|e| format!("cannot read --key-file {}: {e}", args.key_file.display()))?;
    let key = Key::from_file_contents(&contents)
        .map_err(|e| format!("--key-file {}: {e}", args.key_file.display()))?;
    if args.window == 0 {
        return Err("--window must be at least 1 second".into());
    }
    let window = Duration::from_secs(args.window);

    let table = Table::scan_with(&args.root, args.follow_outside_root)
        .map_err(|e| format!("cannot scan --root {}: {e}", args.root.display()))?;
    log::info!(
        "verification table: {} files ({} through links) under {}",
        table.len(),
        table.links(),
        table.root().display()
    );
    if table.outside_root() > 0 {
        log::warn!(
            "{} links lead outside {} and answer unknown (--follow-outside-root follows them)",
            table.outside_root(),
            table.root().display()
        );
    }
    let table = Arc::new(RwLock::new(table));
    let watcher = watch::spawn(
        table.clone(),
        WatchConfig {
            debounce: Duration::from_millis(args.debounce_ms),
            ..WatchConfig::default()
        },
    )
    .map_err(|e| format!("cannot watch --root {}: {e}", args.root.display()))?;

    let publisher = if args.nats.is_empty() {
        None
    } else {
        let nats = bootcache_fleet::NatsConfig {
            servers: args.nats.clone(),
            bucket: args.bucket.clone(),
            credentials: args.nats_creds.clone(),
        };
        bootcache_fleet::check_config(&nats).map_err(|e| format!("--nats/--bucket: {e}"))?;
        let epoch = bootcache_agent::replay::unix_ms(SystemTime::now());
        let t = table.clone();
        let h = bootcache_fleet::spawn_publisher(
            nats,
            key.as_bytes(),
            epoch,
            bootcache_fleet::PublishConfig::default(),
            move || fleet_snapshot(&t.read().unwrap_or_else(|e| e.into_inner())),
        )
        .map_err(|e| format!("--nats: {e}"))?;
        Some(h)
    };

    let sock = UdpSocket::bind(args.listen)
        .map_err(|e| format!("cannot bind --listen {}: {e}", args.listen))?;
    // Short timeout: the loop must notice the shutdown flag promptly.
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| format!("socket: {e}"))?;
    let local = sock.local_addr().map_err(|e| format!("socket: {e}"))?;

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("cannot install signal handler: {e}"))?;
    }
    // SIGHUP: a full rescan in the background (answers go on meanwhile).
    signal_hook::flag::register(signal_hook::consts::SIGHUP, watcher.rescan_flag())
        .map_err(|e| format!("cannot install signal handler: {e}"))?;

    let mut responder = Responder::new(key, window, args.replay_capacity, random_seed());
    // The ready line: scripts and tests wait for it (and learn the port).
    println!("bootcache-agent: listening on {local}");
    let _ = std::io::stdout().flush();

    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        while let Some(r) = watcher.poll_report() {
            // One line per rescan: operators and tests line answers up with it.
            println!(
                "bootcache-agent: rescan files={} started_ms={} finished_ms={} swapped_ms={}",
                r.files, r.started_ms, r.finished_ms, r.swapped_ms
            );
            let _ = std::io::stdout().flush();
        }
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                log::warn!("recv: {e}");
                continue;
            }
        };
        let now = SystemTime::now();
        let reply = {
            let t = table.read().unwrap_or_else(|e| e.into_inner());
            responder.handle(now, &buf[..n], |file, sha| t.query(file, sha))
        };
        match reply {
            Some(r) => {
                if let Err(e) = sock.send_to(&r, from) {
                    log::warn!("send to {from}: {e}");
                }
            }
            None => log::debug!("dropped datagram from {from}"),
        }
    }

    {
        let t = table.read().unwrap_or_else(|e| e.into_inner());
        println!(
            "bootcache-agent: table: files={} links={} links_outside_root={}",
            t.len(),
            t.links(),
            t.outside_root()
        );
    }
    if let Some(p) = publisher {
        println!(
            "bootcache-agent: fleet: puts={} foreign={}",
            p.puts(),
            p.foreign()
        );
    }
    let c = responder.counters();
    let a = responder.answers();
    println!("bootcache-agent: counters: {c}");
    println!(
        "bootcache-agent: answers: current={} stale={} unknown={}",
        a.current, a.stale, a.unknown
    );
    let b = responder.bytes();
    println!(
        "bootcache-agent: bytes: received={} sent={}",
        b.received, b.sent
    );
    let _ = std::io::stdout().flush();
    log::info!("shutting down");
    Ok(())
}

/// The table as the fleet publishes it: hashed files, and files being
/// written (which no bridge may serve until they are rehashed).
fn fleet_snapshot(t: &Table) -> HashMap<String, bootcache_fleet::Published> {
    t.files()
        .map(|(name, entry, changing)| {
            let p = match entry {
                Some(e) if !changing => {
                    bootcache_fleet::Published::File(bootcache_fleet::FileInfo {
                        size: e.state.size,
                        version: e.state.version,
                        sha256: e.state.sha256,
                        mtime_ms: bootcache_agent::replay::unix_ms(e.mtime),
                    })
                }
                _ => bootcache_fleet::Published::Changing,
            };
            (name.to_owned(), p)
        })
        .collect()
}
