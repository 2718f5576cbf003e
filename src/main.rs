//! `bootcache [EAL options] -- [bootcache options]`: the caching bridge.
//! `bootcache cache ls [--config FILE | --cache-dir DIR]`: the operator's
//! view of the filestore and the image map, without DPDK.
//!
//! DPDK port 0 faces the PXE clients, port 1 the boot server. A worker lcore
//! runs the poll-mode bridge (fast path); the main lcore runs the slow path
//! (cache fill, image map), waits for SIGINT/SIGTERM, reloads the
//! configuration on SIGHUP, prints periodic statistics if asked, and the
//! final statistics at exit.
#![deny(unsafe_code)]

mod cache_ls;
mod cache_ops;
mod cache_prefetch;
mod cache_verify;
mod cli;
mod config;
mod control;
mod exporter;
mod fleet;
mod lcores;
mod reload;
mod serve;
mod stats;
mod supervise;
mod worker;

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use dataplane::bridge::SlowPathLink;
use dataplane::{
    Bridge, BridgeConfig, BridgeCounters, FilterConfig, FilterWriter, SharedCounters,
    SharedFilterCounters, SlowPathHealth,
};
use dpdk::{Eal, Mempool, Port, PortConfig};

use cli::{Cli, Parsed};
use config::Config;
use worker::Worker;

/// Bytes of files being fetched that addressed mode keeps in memory at
/// once to stream them to their waiters while they arrive; a fetch past it
/// is served once it is in the cache.
const STREAM_BYTES: u64 = 256 << 20;

fn main() -> ExitCode {
    // Without RUST_LOG the logger passes everything and the level is the
    // configuration's (`log_level`, changed by a reload): log's max level.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("trace"))
        .format_timestamp_millis()
        .init();
    if std::env::var_os("RUST_LOG").is_none() {
        log::set_max_level(log::LevelFilter::Info);
    }
    let argv: Vec<String> = std::env::args().collect();
    let result = match cli::parse(&argv) {
        Parsed::Run(cli) => load_config(&cli).and_then(|cfg| run(&argv, &cli, &cfg)),
        Parsed::CacheLs(ls) => cache_ls::run(&ls),
        Parsed::CacheRm(c) => cache_ops::rm(&c),
        Parsed::CachePurge(c) => cache_ops::purge(&c),
        Parsed::CachePrefetch(c) => cache_ops::prefetch(&c),
        Parsed::CacheVerify(v) => match cache_verify::run(&v) {
            Ok(true) => return ExitCode::SUCCESS,
            // Files removed or unreadable: said on stdout already.
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Parsed::Exit(code) => return code,
    };
    match result {
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

fn load_config(cli: &Cli) -> Result<Config> {
    let cfg = reload::load(cli.config.as_deref(), cli.cache_dir.as_deref())?;
    reload::apply_log_level(&cfg);
    Ok(cfg)
}

/// The link to `[agent]`, if configured (reads its key file, opens its
/// socket), and the key's bytes.
pub(crate) fn agent_link(cfg: &Config) -> Result<Option<(serve::AgentLink, Vec<u8>)>> {
    let Some(a) = &cfg.agent else {
        return Ok(None);
    };
    let bytes = std::fs::read(&a.key_file)
        .with_context(|| format!("config: agent.key_file: reading {}", a.key_file.display()))?;
    let key = bootcache_agent::Key::from_file_contents(&bytes)
        .map_err(|e| anyhow::anyhow!("config: agent.key_file {}: {e}", a.key_file.display()))?;
    let key_bytes = key.as_bytes().to_vec();
    let validation = bootcache_agent::ValidatorConfig {
        ttl: Duration::from_secs(a.answer_ttl),
        retry_interval: Duration::from_millis(a.retry_ms),
        max_tries: a.tries,
        ..bootcache_agent::ValidatorConfig::default()
    };
    let link = serve::AgentLink::new(
        a.address,
        key,
        validation,
        a.on_unreachable == config::Unreachable::Serve,
        serve::ValidationLimits {
            questions: cfg.limits.max_validations,
            waiters: cfg.limits.max_waiters_per_validation,
        },
    )
    .context("config: agent.address: opening the agent's management socket")?;
    Ok(Some((link, key_bytes)))
}

fn run(argv: &[String], cli: &Cli, cfg: &Config) -> Result<()> {
    // First of all: a SIGTERM while the ports start (a supervisor that
    // gives up, a test that stops at once) must stop bootcache cleanly,
    // not kill it with the default action.
    let quit = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&quit))
            .context("installing signal handlers")?;
    }
    // SIGHUP reloads the configuration (the worker looks at the flag once
    // per pass); while the ports start it is noted, not fatal.
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
        .context("installing signal handlers")?;
    let eal_argv = cli::eal_args(argv);
    let eal = Eal::init(eal_argv)
        .context(
            "EAL initialisation failed (check the EAL options before `--`; see bootcache --help)",
        )?
        .eal;
    let result = run_bridge(cli, cfg, quit, hup);
    if let Err(e) = eal.cleanup() {
        log::warn!("{e}");
    }
    result
}

/// Opens the cache under its directory's lock, taken once and kept (a
/// `bootcache cache verify` holding it makes the cache unopenable until it
/// is done: forwarding goes on meanwhile).
fn open_cache(
    dir: &std::path::Path,
    limits: slowpath::CacheLimits,
    servers: Vec<std::net::Ipv4Addr>,
    lock: &mut Option<slowpath::DirLock>,
) -> Result<slowpath::CacheLogic, slowpath::CacheError> {
    if lock.is_none() {
        // The lock file lives in the directory; the filestore would create it anyway.
        let _ = std::fs::create_dir_all(dir);
        *lock = Some(slowpath::DirLock::acquire(dir)?);
    }
    slowpath::CacheLogic::new(dir, limits, servers)
}

fn run_bridge(cli: &Cli, cfg: &Config, quit: Arc<AtomicBool>, hup: Arc<AtomicBool>) -> Result<()> {
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
    if workers.is_empty() {
        bail!("needs a worker lcore for the bridge: give the EAL at least two lcores, e.g. --lcores '0@0,1@1'");
    }
    if let Some(mtu) = cli.mtu {
        cli::check_mtu_fits(mtu, cli.mbuf_size).map_err(|e| anyhow::anyhow!("{e}"))?;
    }

    // The slow path first. A cache that cannot be opened (a read-only or
    // failed disk at boot) must not keep the segment down: bootcache starts
    // forwarding only, on a placeholder cache, and opens the real one when
    // it can (fail open).
    let mut dir_lock = None;
    let (logic, unopened) = match open_cache(
        &cfg.cache_dir,
        cfg.slowpath_limits(),
        cfg.boot_servers(),
        &mut dir_lock,
    ) {
        Ok(l) => (l, None),
        Err(e) => {
            let why = format!("{}: {e}", cfg.cache_dir.display());
            log::error!("cache {why}: forwarding only until it can be opened");
            let placeholder =
                std::env::temp_dir().join(format!("bootcache-unopened-{}", std::process::id()));
            let l = slowpath::CacheLogic::new(&placeholder, cfg.slowpath_limits(), Vec::new())
                .with_context(|| {
                    format!("opening the cache directory {} (and a placeholder)", why)
                })?;
            (l, Some(why))
        }
    };
    if cfg.boot_servers().is_empty() {
        log::warn!("no boot servers configured (--config, `servers`): DHCP/PXE is mapped, nothing is cached");
    }
    let filter = FilterWriter::new(&FilterConfig {
        servers: cfg.boot_servers().iter().map(|&s| s.into()).collect(),
        dscp_mark: cfg.dscp,
        max_dynamic: cfg.limits.max_filter_entries,
        copy_server_udp: true,
        own_address: cfg.addressed.as_ref().map(|a| a.address),
    })
    .context("config")?;
    let mut filter = filter;
    // Addressed mode serves too: without a freshness policy (max_age 0),
    // every request is fetched from the origin, shared among concurrent ones.
    let serving = cfg.serve_max_age.is_some() || cfg.agent.is_some() || cfg.addressed.is_some();
    let (agent_link, fleet_key) = agent_link(cfg)?.unzip();
    // The fleet's mirror (issue 14): a NATS thread of its own; the serving
    // thread reads its snapshot.
    let mut fleet_member = None;
    let fleet_link = match (&cfg.fleet, &fleet_key) {
        (Some(f), Some(key)) => {
            let mirror = bootcache_fleet::spawn_mirror(
                f.nats(),
                key,
                bootcache_fleet::MirrorConfig {
                    max_files: f.max_files,
                    max_silence: Duration::from_millis(f.max_silence_ms),
                    ..bootcache_fleet::MirrorConfig::default()
                },
            )
            .context("config: fleet")?;
            // Presence, holdings and directives (items 2-4): a thread of
            // its own; the worker hands it the cache's state. A file the
            // Object Store lacks is read by TFTP from the origin: through
            // the server-side port when the bridge owns an address there,
            // else through the prefetch path on the host's own network.
            let origin = f.origin.or_else(|| cfg.boot_servers().first().copied());
            let addressed = cfg
                .addressed
                .as_ref()
                .and_then(|a| Some((a.address, a.origin(&cfg.servers)?)));
            let path = fleet::OriginPath::choose(f.tftp_via, addressed, origin);
            log::info!("{}", path.describe());
            let origin_read = match path {
                fleet::OriginPath::Port { .. } => bootcache_fleet::OriginRead::Port,
                fleet::OriginPath::Never => bootcache_fleet::OriginRead::Never,
                fleet::OriginPath::Socket { via, .. } => {
                    bootcache_fleet::OriginRead::Socket(bootcache_fleet::OriginFetch(
                        std::sync::Arc::new(move |path: &std::path::Path, name: &str| {
                            cache_prefetch::fetch(path, via, cache_prefetch::PORT, name)
                                .map(|got| (got.size, got.sha256))
                                .map_err(|e| format!("{e:#}"))
                        }),
                    ))
                }
            };
            let member = bootcache_fleet::spawn_member(
                f.nats(),
                key,
                bootcache_fleet::MemberConfig {
                    id: f.bridge_id(),
                    site: f.site(),
                    addresses: cfg.boot_servers().iter().map(|s| s.to_string()).collect(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    tmp_dir: cfg.cache_dir.join("tmp"),
                    max_file_size: cfg.limits.max_file_size.0,
                    origin_read,
                },
                mirror.reader(),
            )
            .context("config: fleet")?;
            fleet_member = Some(fleet::Member::new(member, origin));
            Some(serve::FleetLink {
                mirror,
                counters: serve::FleetCounters::default(),
                id: f.bridge_id(),
                site: f.site(),
            })
        }
        _ => None,
    };
    if serving {
        // Every RRQ to a boot server comes to the slow path first: it is
        // answered from the cache or handed on to the origin.
        filter.set_static_trap(dataplane::StaticRule::TftpRequest, true);
        filter.publish();
    }

    let pool = Mempool::create("bootcache_mbufs", cli.mbufs, 256, cli.mbuf_size, -1).context(
        "creating the packet buffer pool (are enough hugepages reserved? run scripts/setup)",
    )?;
    let ports = [Port::new(0)?, Port::new(1)?];
    let infos = [ports[0].info()?, ports[1].info()?];
    let plan = lcores::plan(&infos, workers.len());
    for note in &plan.notes {
        log::info!("{note}");
    }
    // Every descriptor holds a buffer. A frame waiting in a redirect ring
    // holds one of its lcore's copy pool (`copy_pool`, sized from the
    // ring), so the rings take nothing from this pool; only without a copy
    // pool (no memory for it) would they pin buffers here, and a slow slow
    // path would then starve the receive queues: the ring of such an lcore
    // is capped to what this pool leaves after the descriptors.
    let queues = u64::from(plan.queues);
    let descriptors = 2 * queues * (u64::from(cli.rx_desc) + u64::from(cli.tx_desc));
    let spare = u64::from(cli.mbufs).saturating_sub(descriptors) / queues;
    if spare < 64 {
        bail!(
            "--mbufs {} cannot cover {} queue pair(s) of {}+{} descriptors on 2 ports ({descriptors} buffers) \
             and leave room for the redirect rings; raise --mbufs or lower --rx-desc/--tx-desc",
            cli.mbufs,
            plan.queues,
            cli.rx_desc,
            cli.tx_desc
        );
    }
    let redirect_ring = cfg.limits.redirect_ring;
    // Rings are powers of two (configuration rule); stay one.
    let shared_ring = redirect_ring.min(1 << (63 - spare.leading_zeros()));
    let port_cfg = PortConfig {
        rx_queues: plan.queues,
        tx_queues: plan.tx_queues,
        rx_desc: cli.rx_desc,
        tx_desc: cli.tx_desc,
        mtu: cli.mtu,
        rss_hf: dpdk::RSS_IP,
        ..PortConfig::default()
    };
    for (side, port) in ports.iter().enumerate() {
        port.configure(&port_cfg, &pool)?;
        // The driver's MTU when none was given: a frame must fit one mbuf.
        let mtu = port.mtu()?;
        cli::check_mtu_fits(mtu, cli.mbuf_size)
            .map_err(|e| anyhow::anyhow!("port {} ({}): {e}", port.id(), port.name()))?;
        port.start()?;
        log::info!(
            "port {} ({}, {} side): MAC {}, link {}, MTU {mtu}, {} queue pair(s){}",
            port.id(),
            port.name(),
            side_name(side),
            fmt_mac(&port.mac()?),
            if port.link()?.up { "up" } else { "down" },
            plan.queues,
            if plan.rss[side] {
                " with RSS on the address pair"
            } else {
                ""
            },
        );
    }

    if !cfg.boot_servers().is_empty() {
        for port in &ports {
            log::info!("{}", steering_capability(port, &cfg.boot_servers()));
        }
    }

    let addressed = match &cfg.addressed {
        Some(a) => {
            let mac = match a.mac().context("config")? {
                Some(m) => wire::frame::MacAddr(m),
                None => wire::frame::MacAddr(ports[0].mac()?),
            };
            let origin = a
                .origin(&cfg.servers)
                .context("config: addressed.origin: needed")?;
            log::info!(
                "addressed mode: {} at {mac}, fetching misses from {origin}",
                a.address
            );
            Some(serve::OwnAddress {
                ip: a.address,
                mac,
                origin,
                fetch: slowpath::tftp_client::ClientOptions {
                    blksize: Some(a.fetch_blksize),
                    windowsize: (a.fetch_windowsize > 1).then_some(a.fetch_windowsize),
                    max_size: cfg.limits.max_file_size.0,
                    ..Default::default()
                },
            })
        }
        None => None,
    };

    let health = Arc::new(SlowPathHealth::new());
    let inject = Arc::new(dataplane::InjectRing::new(cfg.limits.redirect_ring));
    let mut rings = Vec::new();
    let mut shared = Vec::new();
    let mut filter_counters = Vec::new();
    let mut running = Vec::new();
    let (tx, rx) = std::sync::mpsc::channel::<BridgeCounters>();
    for (q, &lcore) in workers.iter().take(usize::from(plan.queues)).enumerate() {
        let q = q as u16;
        let ring_size = if dataplane::redirect::copy_pool(q, redirect_ring).is_some() {
            redirect_ring
        } else {
            if shared_ring < redirect_ring {
                log::warn!(
                    "[limits] redirect_ring {redirect_ring} capped to {shared_ring} on queue {q}: no copy pool, and --mbufs {} leaves {spare} buffers per forwarding lcore after the descriptors",
                    cli.mbufs
                );
            }
            shared_ring
        };
        let (ring, ring_rx) = dataplane::redirect_ring(ring_size);
        let counters = Arc::new(SharedCounters::default());
        let hits = Arc::new(SharedFilterCounters::new(filter.rule_count()));
        let bridge = Bridge::new(
            ports[0],
            ports[1],
            &BridgeConfig {
                drain_us: cli.drain_us,
                queue: q,
                inject_queue: plan.inject_queue,
                slowpath_timeout_ms: cli.slowpath_timeout_ms,
                ..BridgeConfig::default()
            },
            Arc::clone(&quit),
            Arc::clone(&counters),
            SlowPathLink {
                filter: filter.reader(),
                ring,
                // The first lcore also sends the slow path's frames.
                inject: (q == 0).then(|| Arc::clone(&inject)),
                filter_counters: Arc::clone(&hits),
                rule_count: filter.rule_count(),
                health: Arc::clone(&health),
            },
        );
        let tx = tx.clone();
        running.push(dpdk::lcore::launch(lcore, move || {
            let _ = tx.send(bridge.run());
            0
        })?);
        rings.push(ring_rx);
        shared.push(counters);
        filter_counters.push(hits);
    }
    drop(tx);
    log::info!(
        "bridging on lcore {}, slow path on lcore {}; cache {}; Ctrl-C to stop",
        running
            .iter()
            .map(|r| r.lcore().to_string())
            .collect::<Vec<_>>()
            .join(","),
        dpdk::lcore::main_lcore(),
        cfg.cache_dir.display()
    );
    let watchdog = supervise::Watchdog::start(Arc::clone(&quit), shared.clone());

    let mode = match (&cfg.addressed, serving) {
        (Some(_), _) => "addressed",
        (None, true) => "serve",
        (None, false) => "fill",
    };
    let (published, exporter) = match cfg.metrics.listen {
        Some(addr) => {
            let p = Arc::new(exporter::Published::default());
            p.set_info(reload::info(cfg, mode));
            let e = exporter::start(exporter::bind(addr)?, Arc::clone(&p))?;
            (Some(p), Some(e))
        }
        None => (None, None),
    };
    let max_age = Duration::from_secs(cfg.serve_max_age.unwrap_or(0));
    let mut worker = Worker::new(worker::Parts {
        logic,
        filter,
        rings,
        quit: Arc::clone(&quit),
        bridge_counters: shared.clone(),
        filter_counters,
        health,
        ports: ports.to_vec(),
        stats_interval: (cli.stats_interval > 0).then(|| Duration::from_secs(cli.stats_interval)),
        stats_json: cli.stats_json,
        published,
        throttle: (cli.slowpath_throttle_us > 0)
            .then(|| Duration::from_micros(cli.slowpath_throttle_us)),
        panic_after: cli.slowpath_panic_after,
        serve: serving.then(|| {
            let limits = serve::ServeLimits {
                sessions: cfg.limits.max_sessions,
                held: cfg.limits.max_held_requests,
                fetches: cfg.limits.max_fetches,
                stream_bytes: STREAM_BYTES,
            };
            let mut s = serve::Serve::new(
                pool,
                Arc::clone(&inject),
                max_age,
                agent_link,
                addressed,
                limits,
            );
            s.fleet = fleet_link;
            s
        }),
        fleet: fleet_member,
        control: match control::Control::start(
            &cfg.cache_dir,
            cfg.addressed.as_ref().and_then(|a| a.origin(&cfg.servers)),
        ) {
            Ok(c) => Some(c),
            Err(e) => {
                // Forwarding and caching go on; the cache is managed on
                // the directory once the bridge stops.
                log::warn!("no control socket: {e:#}");
                None
            }
        },
        inject,
        poll: cli.slowpath_poll,
        reopen: {
            let (dir, limits, servers) = (
                cfg.cache_dir.clone(),
                cfg.slowpath_limits(),
                cfg.boot_servers().to_vec(),
            );
            Box::new(move || open_cache(&dir, limits.clone(), servers.clone(), &mut dir_lock))
        },
        unopened,
        reload: reload::State {
            flag: hup,
            path: cli.config.clone(),
            cache_dir: cli.cache_dir.clone(),
            current: cfg.clone(),
            mode,
            exporter,
            ok: 0,
            failed: 0,
        },
    });
    let worker_result = worker.run();
    // The bridge watches the same flag; make sure it stops even if the worker failed.
    quit.store(true, std::sync::atomic::Ordering::Relaxed);
    log::info!("stopping");
    for r in running {
        r.wait();
    }
    let finals: Vec<BridgeCounters> = rx.iter().collect();
    let counters = if finals.len() == shared.len() {
        BridgeCounters::sum(&finals)
    } else {
        BridgeCounters::sum(
            shared
                .iter()
                .map(|s| s.snapshot())
                .collect::<Vec<_>>()
                .iter(),
        )
    };
    drop(watchdog);
    worker.final_counters = Some(counters);
    worker.throttle = None;
    let finish_result = worker.finish();
    for port in &ports {
        if let Err(e) = port.stop() {
            log::warn!("{e}");
        }
    }
    print_final(&ports, &counters, &worker);
    for port in &ports {
        if let Err(e) = port.close() {
            log::warn!("{e}");
        }
    }
    worker_result.and(finish_result)
}

/// Whether the port could steer the boot traffic to a queue of its own in
/// hardware (`rte_flow_validate` of every rule; nothing is created): one
/// line for the log. bootcache finds boot traffic in software (the filter's
/// first stage) either way; see the README's "Hardware steering".
fn steering_capability(port: &Port, servers: &[std::net::Ipv4Addr]) -> String {
    let rules = dpdk::flow::boot_traffic(servers);
    let refused = rules
        .iter()
        .find_map(|r| dpdk::flow::validate_steer(port, r, 0).err());
    match refused {
        None => format!(
            "port {} ({}): rte_flow validates all {} boot-traffic steering rules (hardware steering possible; bootcache classifies in software)",
            port.id(),
            port.name(),
            rules.len()
        ),
        Some(e) => format!(
            "port {} ({}): no rte_flow steering ({e}): boot traffic is found in software by the filter's first stage",
            port.id(),
            port.name()
        ),
    }
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

/// Final statistics: one `key=value` line per port (packets and drops are
/// the bridge's own counts, bytes the driver's), then the slow path's
/// line (with `--stats-json` followed by one JSON object holding all of it).
fn print_final(ports: &[Port; 2], c: &BridgeCounters, worker: &Worker) {
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
    println!("{}", worker.stats_output());
}
