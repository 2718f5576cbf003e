//! `bootcache [EAL options] -- [bootcache options]`: the caching bridge.
//!
//! DPDK port 0 faces the PXE clients, port 1 the boot server. A worker lcore
//! runs the poll-mode bridge; the main lcore waits for SIGINT/SIGTERM, prints
//! periodic statistics if asked, and the final per-port statistics at exit.
#![deny(unsafe_code)]

mod cli;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dataplane::{Bridge, BridgeConfig, BridgeCounters, SharedCounters};
use dpdk::{Eal, Mempool, Port, PortConfig};

use cli::{Cli, Parsed};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let argv: Vec<String> = std::env::args().collect();
    let cli = match cli::parse(&argv) {
        Parsed::Run(cli) => cli,
        Parsed::Exit(code) => return code,
    };
    match run(&argv, &cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the context chain, outermost first.
            let msg = e
                .chain()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(": ");
            eprintln!("bootcache: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(argv: &[String], cli: &Cli) -> Result<()> {
    let eal_argv = cli::eal_args(argv);
    let eal = Eal::init(eal_argv)
        .context(
            "EAL initialisation failed (check the EAL options before `--`; see bootcache --help)",
        )?
        .eal;
    let result = run_bridge(cli);
    if let Err(e) = eal.cleanup() {
        log::warn!("{e}");
    }
    result
}

fn run_bridge(cli: &Cli) -> Result<()> {
    let nports = Port::count();
    if nports < 2 {
        bail!(
            "needs 2 DPDK ports (port 0: client side, port 1: server side), found {nports}; \
             bind two NICs to vfio-pci or add --vdev options"
        );
    }
    if nports > 2 {
        log::warn!("{nports} ports found; bridging ports 0 and 1 only");
    }
    let workers = dpdk::lcore::workers();
    let Some(&bridge_lcore) = workers.first() else {
        bail!("needs a worker lcore for the bridge: give the EAL at least two lcores, e.g. --lcores '0@0,1@1'");
    };

    let pool = Mempool::create("bootcache_mbufs", cli.mbufs, 256, cli::MBUF_DATA_ROOM, -1)
        .context(
            "creating the packet buffer pool (are enough hugepages reserved? run scripts/setup)",
        )?;
    let ports = [Port::new(0)?, Port::new(1)?];
    let cfg = PortConfig {
        rx_desc: cli.rx_desc,
        tx_desc: cli.tx_desc,
        mtu: cli.mtu,
        ..PortConfig::default()
    };
    for (side, port) in ports.iter().enumerate() {
        port.configure(&cfg, &pool)?;
        port.start()?;
        let mac = port.mac()?;
        log::info!(
            "port {} ({}, {} side): MAC {}, link {}",
            port.id(),
            port.name(),
            side_name(side),
            fmt_mac(&mac),
            if port.link()?.up { "up" } else { "down" }
        );
    }

    let quit = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&quit))
            .context("installing signal handlers")?;
    }
    let shared = Arc::new(SharedCounters::default());
    let bridge = Bridge::new(
        ports[0],
        ports[1],
        &BridgeConfig {
            drain_us: cli.drain_us,
        },
        Arc::clone(&quit),
        Arc::clone(&shared),
    );
    let (tx, rx) = std::sync::mpsc::channel::<BridgeCounters>();
    let running = dpdk::lcore::launch(bridge_lcore, move || {
        let c = bridge.run();
        let _ = tx.send(c);
        0
    })?;
    log::info!("bridging on lcore {bridge_lcore}; Ctrl-C to stop");

    let mut next_stats = Instant::now() + Duration::from_secs(cli.stats_interval.max(1));
    while !quit.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if cli.stats_interval > 0 && Instant::now() >= next_stats {
            print_stats_line(&shared.snapshot());
            next_stats += Duration::from_secs(cli.stats_interval);
        }
    }
    log::info!("stopping");
    running.wait();
    let counters = rx.recv().unwrap_or_else(|_| shared.snapshot());
    for port in &ports {
        if let Err(e) = port.stop() {
            log::warn!("{e}");
        }
    }
    print_final(&ports, &counters);
    for port in &ports {
        if let Err(e) = port.close() {
            log::warn!("{e}");
        }
    }
    Ok(())
}

fn side_name(side: usize) -> &'static str {
    ["client", "server"][side]
}

fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn print_stats_line(c: &BridgeCounters) {
    let [a, b] = &c.ports;
    println!(
        "stats: client rx {} tx {} drop {} | server rx {} tx {} drop {}",
        a.rx_packets, a.tx_packets, a.tx_dropped, b.rx_packets, b.tx_packets, b.tx_dropped
    );
}

/// Final per-port statistics, one `key=value` line per port (stable for scripts and tests).
/// Packets and drops are the bridge's own counts; bytes come from the driver.
fn print_final(ports: &[Port; 2], c: &BridgeCounters) {
    println!("bootcache: final statistics");
    for (side, (port, pc)) in ports.iter().zip(c.ports.iter()).enumerate() {
        let drv = port.stats().unwrap_or_default();
        println!(
            "port={} side={} name={} rx_packets={} rx_bytes={} tx_packets={} tx_bytes={} tx_dropped={} \
             rx_missed={} rx_errors={} tx_errors={}",
            port.id(),
            side_name(side),
            port.name(),
            pc.rx_packets,
            drv.rx_bytes,
            pc.tx_packets,
            drv.tx_bytes,
            pc.tx_dropped,
            drv.rx_missed,
            drv.rx_errors,
            drv.tx_errors,
        );
    }
}
