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
/// under a TFTP root; with --nats, publishes its table to the fleet and
/// coordinates the bridges (the `fleet` and `cache` commands talk to them).
#[derive(Parser, Debug)]
#[command(
    name = "bootcache-agent",
    version,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// The TFTP root directory (as served by tftpd-hpa / dnsmasq).
    #[arg(long, required = true)]
    root: Option<PathBuf>,
    /// UDP address to listen on, e.g. 0.0.0.0:4070 (port 0 picks a free one).
    #[arg(long, required = true)]
    listen: Option<SocketAddr>,
    /// File holding the shared HMAC key: hex, or raw bytes; at least 32 bytes.
    #[arg(long, required = true)]
    key_file: Option<PathBuf>,
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
    #[command(flatten)]
    auth: NatsAuth,
    /// The JetStream domain holding the buckets, when --nats is a leaf
    /// node of the hub that has them.
    #[arg(long, value_name = "DOMAIN", requires = "nats")]
    js_domain: Option<String>,
    /// The serving policy (TOML, `[[rule]]` tables): which hits bridges
    /// serve and which they send to the origin. Published signed to the
    /// fleet; re-read when the file changes (a bad edit is reported and
    /// the previous rules stay).
    #[arg(long, value_name = "FILE", requires = "nats")]
    policy: Option<PathBuf>,
}

/// The policy file, re-read when its modification time or size changes.
struct PolicySource {
    path: PathBuf,
    seen: Option<(SystemTime, u64)>,
    checked: std::time::Instant,
    rules: Vec<bootcache_fleet::policy::Rule>,
    /// Pre-staging rules (`[[cache]]`), carried out by the agent.
    cache: Vec<bootcache_fleet::policy::CacheRule>,
}

impl PolicySource {
    fn open(path: PathBuf) -> Result<PolicySource, String> {
        let mut s = PolicySource {
            path,
            seen: None,
            checked: std::time::Instant::now(),
            rules: Vec::new(),
            cache: Vec::new(),
        };
        s.reload()?;
        Ok(s)
    }

    /// Reads the file again if it changed; on an error the rules stay.
    fn reload(&mut self) -> Result<(), String> {
        let p = self.path.display();
        let meta = std::fs::metadata(&self.path).map_err(|e| format!("--policy {p}: {e}"))?;
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        if self.seen == Some(stamp) {
            return Ok(());
        }
        self.seen = Some(stamp);
        let text = std::fs::read_to_string(&self.path).map_err(|e| format!("--policy {p}: {e}"))?;
        let c = bootcache_fleet::policy::parse_policy_file(&text)
            .map_err(|e| format!("--policy {p}: {e}"))?;
        (self.rules, self.cache) = (c.rules, c.cache);
        // Tests and operators wait for this line.
        println!(
            "bootcache-agent: policy: {} rules, {} cache rules from {p}",
            self.rules.len(),
            self.cache.len()
        );
        let _ = std::io::stdout().flush();
        Ok(())
    }

    /// The rules now (checked for a change at most every 200 ms).
    fn poll(&mut self) -> Vec<bootcache_fleet::policy::Rule> {
        if self.checked.elapsed() >= Duration::from_millis(200) {
            self.checked = std::time::Instant::now();
            if let Err(e) = self.reload() {
                log::warn!("{e}: the previous rules stay");
            }
        }
        self.rules.clone()
    }
}

/// The fleet commands (they talk to the engine, not to a running agent).
#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Lists the bridges present, what each holds (and which copies are
    /// outdated against the table), each one's image map summary, and the
    /// directives with their acknowledgements.
    Fleet {
        #[command(flatten)]
        engine: Engine,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Directs bridges to pre-stage files from the Object Store now (the
    /// running agent uploads them); `fleet` shows pending and done.
    Cache {
        #[command(flatten)]
        engine: Engine,
        /// Files, as clients name them.
        #[arg(required = true)]
        files: Vec<String>,
        /// Only the bridges of this site.
        #[arg(long, conflicts_with = "bridge")]
        site: Option<String>,
        /// Only this bridge (repeat for more).
        #[arg(long)]
        bridge: Vec<String>,
    },
}

/// Where the fleet's engine is.
#[derive(clap::Args, Debug)]
struct Engine {
    /// NATS server URL, e.g. nats://10.0.0.1:4222 (repeat for a cluster).
    #[arg(long = "nats", value_name = "URL", required = true)]
    nats: Vec<String>,
    /// The table's bucket (the fleet's buckets are named after it).
    #[arg(long, default_value = "bootcache")]
    bucket: String,
    #[command(flatten)]
    auth: NatsAuth,
    /// The JetStream domain holding the buckets, when --nats is a leaf
    /// node of the hub that has them.
    #[arg(long, value_name = "DOMAIN")]
    js_domain: Option<String>,
    /// The shared HMAC key: verifies what bridges say, signs directives.
    #[arg(long)]
    key_file: PathBuf,
}

/// How the agent and its commands authenticate to the fleet's engine.
#[derive(clap::Args, Debug)]
struct NatsAuth {
    /// A NATS credentials file (user JWT and NKEY seed).
    #[arg(long, value_name = "FILE")]
    nats_creds: Option<PathBuf>,
    /// A NATS user (with --nats-password-file).
    #[arg(long, value_name = "NAME", requires = "nats_password_file")]
    nats_user: Option<String>,
    /// A file holding the NATS user's password (its first line).
    #[arg(long, value_name = "FILE", requires = "nats_user")]
    nats_password_file: Option<PathBuf>,
    /// A file holding an NKEY user seed (SU…).
    #[arg(long, value_name = "FILE")]
    nats_nkey_file: Option<PathBuf>,
    /// The CA certificates (PEM) of the NATS servers' TLS certificates:
    /// the connection must be TLS.
    #[arg(long, value_name = "FILE")]
    nats_tls_ca: Option<PathBuf>,
}

impl NatsAuth {
    /// The engine's configuration: `servers`, `bucket`, `js_domain` and
    /// these credentials.
    fn config(
        &self,
        servers: &[String],
        bucket: &str,
        js_domain: &Option<String>,
    ) -> bootcache_fleet::NatsConfig {
        bootcache_fleet::NatsConfig {
            servers: servers.to_vec(),
            bucket: bucket.to_owned(),
            credentials: self.nats_creds.clone(),
            js_domain: js_domain.clone(),
            user: self.nats_user.clone(),
            password_file: self.nats_password_file.clone(),
            nkey_file: self.nats_nkey_file.clone(),
            tls_ca: self.nats_tls_ca.clone(),
        }
    }
}

impl Engine {
    fn open(&self) -> Result<(bootcache_fleet::NatsConfig, Key), String> {
        let contents = std::fs::read(&self.key_file)
            .map_err(|e| format!("cannot read --key-file {}: {e}", self.key_file.display()))?;
        let key = Key::from_file_contents(&contents)
            .map_err(|e| format!("--key-file {}: {e}", self.key_file.display()))?;
        let nats = self.auth.config(&self.nats, &self.bucket, &self.js_domain);
        bootcache_fleet::check_config(&nats).map_err(|e| format!("--nats/--bucket: {e}"))?;
        Ok((nats, key))
    }
}

/// `bootcache-agent fleet`.
fn fleet(engine: &Engine, json: bool) -> Result<(), String> {
    let (nats, key) = engine.open()?;
    let r = bootcache_fleet::read_report(&nats, key.as_bytes()).map_err(|e| e.to_string())?;
    if json {
        println!("{}", bootcache_fleet::report::render_json(&r));
    } else {
        let now = bootcache_agent::replay::unix_ms(SystemTime::now());
        print!("{}", bootcache_fleet::report::render_text(&r, now));
    }
    Ok(())
}

/// `bootcache-agent cache`.
fn cache(
    engine: &Engine,
    files: &[String],
    site: Option<&str>,
    bridges: &[String],
) -> Result<(), String> {
    use bootcache_fleet::doc::{self, Directive, DirectiveKind, Target};
    let (nats, key) = engine.open()?;
    let mut names = Vec::new();
    for f in files {
        let n = wire::tftp::normalize_name(f).map_err(|e| format!("{f:?}: {e}"))?;
        names.push(n.to_string());
    }
    if names.len() > doc::MAX_DIRECTIVE_FILES {
        return Err(format!(
            "at most {} files per directive",
            doc::MAX_DIRECTIVE_FILES
        ));
    }
    for id in site.into_iter().chain(bridges.iter().map(String::as_str)) {
        if !doc::valid_id(id) {
            return Err(format!(
                "{id:?}: sites and bridges are 1-64 letters, digits, '-' or '_'"
            ));
        }
    }
    let target = match (site, bridges) {
        (Some(s), _) => Target::Site(s.to_owned()),
        (None, []) => Target::All,
        (None, b) => Target::Bridges(b.to_vec()),
    };
    let d = Directive {
        id: bootcache_fleet::new_directive_id(),
        kind: DirectiveKind::Cache,
        files: names,
        target,
        issued_ms: bootcache_agent::replay::unix_ms(SystemTime::now()),
    };
    bootcache_fleet::put_directive(&nats, key.as_bytes(), &d).map_err(|e| e.to_string())?;
    println!("bootcache-agent: directive {} put", d.id);
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = match Args::try_parse() {
        Ok(args) => args,
        // --help, --version.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bootcache-agent: {}", usage_error(&e));
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("bootcache-agent: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    match &args.command {
        Some(Command::Fleet { engine, json }) => return fleet(engine, *json),
        Some(Command::Cache {
            engine,
            files,
            site,
            bridge,
        }) => return cache(engine, files, site.as_deref(), bridge),
        None => {}
    }
    // clap requires these without a command.
    let (Some(root), Some(listen), Some(key_file)) =
        (args.root.clone(), args.listen, args.key_file.clone())
    else {
        return Err("--root, --listen and --key-file are required".into());
    };
    let contents = std::fs::read(&key_file)
        .map_err(|e| format!("cannot read --key-file {}: {e}", key_file.display()))?;
    let key = Key::from_file_contents(&contents)
        .map_err(|e| format!("--key-file {}: {e}", key_file.display()))?;
    if args.window == 0 {
        return Err("--window must be at least 1 second".into());
    }
    let window = Duration::from_secs(args.window);

    let table = Table::scan_with(&root, args.follow_outside_root)
        .map_err(|e| format!("cannot scan --root {}: {e}", root.display()))?;
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
    .map_err(|e| format!("cannot watch --root {}: {e}", root.display()))?;

    // The policy file's [[cache]] rules: the engine and the rules.
    let mut auto_cache = None;
    let publisher = if args.nats.is_empty() {
        None
    } else {
        let nats = args.auth.config(&args.nats, &args.bucket, &args.js_domain);
        bootcache_fleet::check_config(&nats).map_err(|e| format!("--nats/--bucket: {e}"))?;
        let nats_for_cache = nats.clone();
        let epoch = bootcache_agent::replay::unix_ms(SystemTime::now());
        let policy = match args.policy.clone() {
            Some(p) => Some(PolicySource::open(p)?),
            None => None,
        };
        // The publisher's thread polls it (the closure must be Fn); the
        // main loop reads its pre-staging rules.
        let policy = Arc::new(std::sync::Mutex::new(policy));
        let polled = Arc::clone(&policy);
        let t = table.clone();
        let h = bootcache_fleet::spawn_publisher(
            nats.clone(),
            key.as_bytes(),
            epoch,
            bootcache_fleet::PublishConfig::default(),
            move || fleet_snapshot(&t.read().unwrap_or_else(|e| e.into_inner())),
            move || {
                let mut p = polled.lock().unwrap_or_else(|e| e.into_inner());
                p.as_mut().map_or_else(Vec::new, PolicySource::poll)
            },
        )
        .map_err(|e| format!("--nats: {e}"))?;
        // Pushed updates and directives (issue 14 items 3-4): the files
        // bridges need go into the Object Store from the root.
        let t = table.clone();
        let root = t
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .root()
            .to_path_buf();
        let c = bootcache_fleet::spawn_coordinator(nats, key.as_bytes(), root, move || {
            fleet_snapshot(&t.read().unwrap_or_else(|e| e.into_inner()))
        })
        .map_err(|e| format!("--nats: {e}"))?;
        auto_cache = Some((nats_for_cache, policy));
        Some((h, c))
    };

    let sock =
        UdpSocket::bind(listen).map_err(|e| format!("cannot bind --listen {listen}: {e}"))?;
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

    let key_bytes = key.as_bytes().to_vec();
    let mut auto = bootcache_fleet::policy::AutoCache::default();
    // Pre-staging directives whose put failed, from the threads that put
    // them: retried with backoff.
    let (put_failed_tx, put_failed) = std::sync::mpsc::channel::<String>();
    let mut next_auto = std::time::Instant::now();
    let mut responder = Responder::new(key, window, args.replay_capacity, random_seed());
    // The ready line: scripts and tests wait for it (and learn the port).
    println!("bootcache-agent: listening on {local}");
    let _ = std::io::stdout().flush();

    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if let (Some((nats, policy)), Some((_, coord))) = (&auto_cache, &publisher) {
            if next_auto.elapsed() > Duration::ZERO {
                next_auto = std::time::Instant::now() + Duration::from_secs(1);
                let now_ms = bootcache_agent::replay::unix_ms(SystemTime::now());
                for id in put_failed.try_iter() {
                    auto.put_failed(now_ms, &id);
                }
                for (id, file) in coord.failed() {
                    auto.file_failed(now_ms, &id, &file);
                }
                let rules = policy
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .map_or_else(Vec::new, |p| p.cache.clone());
                if !rules.is_empty() {
                    let files = fleet_snapshot(&table.read().unwrap_or_else(|e| e.into_inner()));
                    let hashed = files.iter().filter_map(|(n, p)| match p {
                        bootcache_fleet::Published::File(i) => Some((n.as_str(), i.sha256)),
                        bootcache_fleet::Published::Changing => None,
                    });
                    for d in auto.due(now_ms, &rules, hashed, bootcache_fleet::new_directive_id) {
                        let target = rules[d.rule].target();
                        direct(nats, &key_bytes, target, d, &put_failed_tx);
                    }
                }
            }
        }
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
    if let Some((p, c)) = publisher {
        let k = c.counters();
        println!(
            "bootcache-agent: fleet: puts={} foreign={} uploads={} upload_errors={} refreshes={} bad_signature={} malformed={} refused={} policy_cache_refused={} policy_cache_retries={}",
            p.puts(),
            p.foreign(),
            k.uploads,
            k.upload_errors,
            k.refreshes,
            k.bad_signature,
            k.malformed,
            k.refused,
            auto.refused,
            auto.retries
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

/// Puts a cache directive for `files` to `target` (the policy file's
/// `[[cache]]` rule) on a thread of its own: the answering loop goes on.
fn direct(
    nats: &bootcache_fleet::NatsConfig,
    key: &[u8],
    target: bootcache_fleet::doc::Target,
    auto: bootcache_fleet::policy::AutoDirective,
    failed: &std::sync::mpsc::Sender<String>,
) {
    let d = bootcache_fleet::doc::Directive {
        id: auto.id,
        kind: bootcache_fleet::doc::DirectiveKind::Cache,
        files: auto.files,
        target,
        issued_ms: bootcache_agent::replay::unix_ms(SystemTime::now()),
    };
    println!(
        "bootcache-agent: policy: cache directive {} for {} file(s){}",
        d.id,
        d.files.len(),
        if auto.retry { " (a retry)" } else { "" }
    );
    let _ = std::io::stdout().flush();
    let (nats, key, failed) = (nats.clone(), key.to_vec(), failed.clone());
    std::thread::spawn(move || {
        if let Err(e) = bootcache_fleet::put_directive(&nats, &key, &d) {
            log::warn!("policy: cache directive {}: {e}", d.id);
            let _ = failed.send(d.id);
        }
    });
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

/// A wrong command line in one line, with where to look.
fn usage_error(e: &clap::Error) -> String {
    let what = bootcache_agent::usage::one_line(e);
    format!("{what} (bootcache-agent --help lists the options)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_command_line_is_one_line_naming_what_is_missing() {
        let argv = [
            "bootcache-agent",
            "fleet",
            "--nats",
            "nats://127.0.0.1:4222",
        ];
        let mut argv: Vec<&str> = argv.to_vec();
        argv.extend(["--key-file", "k", "--nats-user", "u"]);
        let e = Args::try_parse_from(argv).unwrap_err();
        let line = usage_error(&e);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("--nats-password-file"), "{line}");
    }
}
