//! The I/O: NATS (async-nats on a tokio runtime of its own, on a thread of
//! its own). The agent's publisher puts its table; a bridge's mirror
//! watches the bucket and hands the serving thread an immutable [`View`]
//! through `arc-swap` plus the heartbeat's arrival time in an atomic: the
//! serving thread never takes a lock or awaits anything.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::mirror::{self, Mirror, MirrorConfig, MirrorCounters, Op, Verdict, View};
use crate::publish::{Published, Publisher};

/// Where the engine is, and how we authenticate to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsConfig {
    /// Server URLs, `nats://host:port` or `tls://host:port` (the client
    /// tries them in turn).
    pub servers: Vec<String>,
    /// The key-value bucket of the verification table.
    pub bucket: String,
    /// A NATS credentials file (user JWT and NKEY seed), if the servers
    /// require one.
    pub credentials: Option<PathBuf>,
    /// The JetStream domain that holds the buckets, when the server we
    /// connect to is a leaf node of a hub that has it (its API is then
    /// `$JS.<domain>.API`); `None`: the JetStream of our own server.
    pub js_domain: Option<String>,
    /// A user name the servers know (with `password_file`).
    pub user: Option<String>,
    /// A file holding that user's password (its first line).
    pub password_file: Option<PathBuf>,
    /// A file holding an NKEY user seed (`SU…`): the client signs the
    /// server's challenge with it; the server knows the public key.
    pub nkey_file: Option<PathBuf>,
    /// A PEM file of the CA certificates the servers' TLS certificates
    /// chain to; set, the connection must be TLS (`tls://` or a server
    /// that requires it). Without it a `tls://` server is checked against
    /// the system's roots.
    pub tls_ca: Option<PathBuf>,
}

/// The JetStream context of `c` on `client`: its domain's, if named.
pub(crate) fn js(c: &NatsConfig, client: async_nats::Client) -> jetstream::Context {
    match &c.js_domain {
        Some(d) => jetstream::with_domain(client, d),
        None => jetstream::new(client),
    }
}

/// Errors of the NATS side (the thread logs them and reconnects).
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A configuration value the fleet cannot use.
    #[error("{0}")]
    Config(String),
    /// Connecting to the servers failed.
    #[error("cannot connect to {servers}: {detail}")]
    Connect {
        /// The configured servers.
        servers: String,
        /// What the client said.
        detail: String,
    },
    /// A JetStream request failed (bucket, stream, watch or put).
    #[error("{what}: {detail}")]
    JetStream {
        /// The operation.
        what: &'static str,
        /// What the client said.
        detail: String,
    },
    /// The connection dropped or the watch ended.
    #[error("connection lost: {0}")]
    Lost(String),
    /// The runtime or its thread could not be started.
    #[error("cannot start the NATS thread: {0}")]
    Thread(#[from] std::io::Error),
}

pub(crate) fn js_err(what: &'static str) -> impl FnOnce(String) -> FleetError {
    move |detail| FleetError::JetStream { what, detail }
}

/// Checks a configuration: one line that says what to fix.
pub fn check_config(c: &NatsConfig) -> Result<(), FleetError> {
    if c.servers.is_empty() {
        return Err(FleetError::Config(
            "servers: name at least one, e.g. [\"nats://10.0.0.1:4222\"]".into(),
        ));
    }
    for s in &c.servers {
        let rest = s
            .strip_prefix("nats://")
            .or_else(|| s.strip_prefix("tls://"))
            .ok_or_else(|| {
                FleetError::Config(format!(
                    "servers: {s:?} must be nats://host:port or tls://host:port"
                ))
            })?;
        let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let ok = hostport
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            return Err(FleetError::Config(format!(
                "servers: {s:?} must be nats://host:port"
            )));
        }
    }
    let valid = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    if c.bucket.is_empty() || c.bucket.len() > 64 || !c.bucket.bytes().all(valid) {
        return Err(FleetError::Config(format!(
            "bucket: {:?} must be 1-64 letters, digits, '-' or '_'",
            c.bucket
        )));
    }
    if let Some(d) = &c.js_domain {
        if d.is_empty() || d.len() > 64 || !d.bytes().all(valid) {
            return Err(FleetError::Config(format!(
                "js_domain: {d:?} must be 1-64 letters, digits, '-' or '_'"
            )));
        }
    }
    for (field, p) in [
        ("credentials", &c.credentials),
        ("password_file", &c.password_file),
        ("nkey_file", &c.nkey_file),
        ("tls_ca", &c.tls_ca),
    ] {
        if let Some(p) = p {
            if !p.is_file() {
                return Err(FleetError::Config(format!(
                    "{field}: {} is not a readable file",
                    p.display()
                )));
            }
        }
    }
    if c.user.is_some() != c.password_file.is_some() {
        return Err(FleetError::Config(
            "user: name both user and password_file, or neither".into(),
        ));
    }
    if c.nkey_file.is_some() && (c.user.is_some() || c.credentials.is_some()) {
        return Err(FleetError::Config(
            "nkey_file: one way to authenticate: an NKEY seed, a user and password, or a credentials file".into(),
        ));
    }
    Ok(())
}

/// The first line of a secret's file.
fn read_secret(p: &std::path::Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(p)?;
    Ok(text.lines().next().unwrap_or("").trim().to_owned())
}

pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Connects; connection events (a drop) arrive on the returned channel.
pub(crate) async fn connect(
    c: &NatsConfig,
    name: &str,
) -> Result<
    (
        async_nats::Client,
        mpsc::UnboundedReceiver<async_nats::Event>,
    ),
    FleetError,
> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(2))
        .event_callback(move |ev| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(ev);
            }
        });
    let servers = c.servers.join(",");
    let conn_err = |detail: String| FleetError::Connect {
        servers: servers.clone(),
        detail,
    };
    if let Some(p) = &c.credentials {
        opts = opts
            .credentials_file(p)
            .await
            .map_err(|e| conn_err(format!("credentials {}: {e}", p.display())))?;
    }
    if let (Some(u), Some(p)) = (&c.user, &c.password_file) {
        let pass =
            read_secret(p).map_err(|e| conn_err(format!("password_file {}: {e}", p.display())))?;
        opts = opts.user_and_password(u.clone(), pass);
    }
    if let Some(p) = &c.nkey_file {
        let seed =
            read_secret(p).map_err(|e| conn_err(format!("nkey_file {}: {e}", p.display())))?;
        if !seed.starts_with("SU") {
            return Err(conn_err(format!(
                "nkey_file {}: not an NKEY user seed (SU…)",
                p.display()
            )));
        }
        opts = opts.nkey(seed);
    }
    if let Some(ca) = &c.tls_ca {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    let addrs: Vec<async_nats::ServerAddr> = c
        .servers
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| conn_err(format!("{e}")))?;
    let client = opts.connect(addrs).await.map_err(|e| {
        use async_nats::ConnectErrorKind as K;
        conn_err(match e.kind() {
            K::AuthorizationViolation | K::Authentication => format!(
                "the server refused our credentials ({e}): check user/password_file, nkey_file or credentials"
            ),
            K::Tls => format!("TLS: {e} (is tls_ca the CA of the server's certificate?)"),
            _ => e.to_string(),
        })
    })?;
    Ok((client, rx))
}

pub(crate) fn lost(ev: Option<async_nats::Event>) -> Option<String> {
    match ev {
        Some(async_nats::Event::Disconnected) => Some("disconnected".into()),
        Some(async_nats::Event::Closed) | None => Some("closed".into()),
        Some(_) => None,
    }
}

pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Reconnection pacing: 100 ms doubling to 2 s.
pub(crate) async fn backoff(attempt: &mut u32) {
    let ms = (100u64 << (*attempt).min(5)).min(2000);
    *attempt += 1;
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

// ---------------------------------------------------------------- mirror

/// What the serving thread reads; written by the NATS thread only.
struct Shared {
    view: ArcSwap<View>,
    /// Arrival of the agent's last heartbeat: ns since `base`, plus one
    /// (0: none yet).
    heartbeat: AtomicU64,
    base: Instant,
    max_silence: Duration,
    counters: ArcSwap<MirrorCounters>,
    last_revision: AtomicU64,
}

/// A NATS thread and its stop flag: stopped and joined on drop.
pub(crate) struct Worker {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) thread: Option<JoinHandle<()>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What other threads read of a running mirror (cheap to clone).
#[derive(Clone)]
pub struct MirrorReader {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MirrorReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorReader").finish_non_exhaustive()
    }
}

impl MirrorReader {
    /// What the table vouches for under `name` (normalised) while the
    /// mirror is live: its current content; `None` otherwise.
    pub fn current(&self, now: Instant, name: &str) -> Option<crate::record::FileInfo> {
        if !self.shared.is_live(now) {
            return None;
        }
        self.shared.view.load().current(name)
    }

    /// Whether the mirror answers at `now`.
    pub fn is_live(&self, now: Instant) -> bool {
        self.shared.is_live(now)
    }
}

impl Shared {
    fn is_live(&self, now: Instant) -> bool {
        let hb = match self.heartbeat.load(Ordering::Acquire) {
            0 => None,
            n => Some(self.base + Duration::from_nanos(n - 1)),
        };
        mirror::is_live(self.view.load().synced, hb, now, self.max_silence)
    }
}

/// A running mirror; stops its thread when dropped.
pub struct MirrorHandle {
    shared: Arc<Shared>,
    _worker: Worker,
}

impl std::fmt::Debug for MirrorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorHandle").finish_non_exhaustive()
    }
}

impl MirrorHandle {
    /// The mirror's verdict for a cached copy of `name` (as the client
    /// asked for it) with `sha256`, or `None` when the mirror is not live
    /// (ask the agent). Lock-free: an atomic load of the view and one of
    /// the heartbeat time.
    pub fn verdict(&self, now: Instant, name: &str, sha256: &[u8; 32]) -> Option<Verdict> {
        if !self.is_live(now) {
            return None;
        }
        let Ok(name) = ::wire::tftp::normalize_name(name) else {
            return Some(Verdict::Unknown);
        };
        Some(self.shared.view.load().verdict(&name, sha256))
    }

    /// The serving policy's decision for a hit on `name` (as the client
    /// asked for it) at `bridge` for `client`, from the latest signed
    /// policy the mirror holds (none: serve). Lock-free, like [`verdict`].
    ///
    /// [`verdict`]: MirrorHandle::verdict
    pub fn decide(
        &self,
        name: &str,
        bridge: crate::policy::Bridge<'_>,
        client: crate::policy::Client,
    ) -> crate::policy::Decision {
        let view = self.shared.view.load();
        match ::wire::tftp::normalize_name(name) {
            Ok(n) => view.decide(&n, bridge, client),
            Err(_) => view.decide(name, bridge, client),
        }
    }

    /// A reader for other threads (the fleet's member thread).
    pub fn reader(&self) -> MirrorReader {
        MirrorReader {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Whether the mirror answers at `now`.
    pub fn is_live(&self, now: Instant) -> bool {
        self.shared.is_live(now)
    }

    /// Files in the mirror.
    pub fn files(&self) -> usize {
        self.shared.view.load().len()
    }

    /// The last revision applied.
    pub fn last_revision(&self) -> u64 {
        self.shared.last_revision.load(Ordering::Relaxed)
    }

    /// The mirror's counters (as of its last change).
    pub fn counters(&self) -> MirrorCounters {
        **self.shared.counters.load()
    }
}

/// Starts mirroring `c.bucket`, verifying records with `key`.
pub fn spawn_mirror(
    c: NatsConfig,
    key: &[u8],
    config: MirrorConfig,
) -> Result<MirrorHandle, FleetError> {
    check_config(&c)?;
    let shared = Arc::new(Shared {
        view: ArcSwap::from_pointee(View::default()),
        heartbeat: AtomicU64::new(0),
        base: Instant::now(),
        max_silence: config.max_silence,
        counters: ArcSwap::from_pointee(MirrorCounters::default()),
        last_revision: AtomicU64::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let rt = runtime()?;
    let mut m = Mirror::new(key, &c.bucket, config);
    let (s2, stop2) = (Arc::clone(&shared), Arc::clone(&stop));
    let thread = std::thread::Builder::new()
        .name("fleet-mirror".into())
        .spawn(move || {
            rt.block_on(async {
                let mut attempt = 0;
                while !stop2.load(Ordering::Relaxed) {
                    let r = mirror_session(&c, &mut m, &s2, &stop2, &mut attempt).await;
                    m.disconnected();
                    publish(&mut m, &s2);
                    match r {
                        Ok(()) => break,
                        // Once per outage (a session that got going resets
                        // `attempt`), not once per retry.
                        Err(e) if attempt == 0 => log::warn!(
                            "fleet: mirror of {}: {e}; asking the agent until it is back",
                            c.bucket
                        ),
                        Err(e) => log::debug!("fleet: {e}"),
                    }
                    backoff(&mut attempt).await;
                }
            })
        })?;
    Ok(MirrorHandle {
        shared,
        _worker: Worker {
            stop,
            thread: Some(thread),
        },
    })
}

fn publish(m: &mut Mirror, s: &Shared) {
    if let Some(at) = m.heartbeat_at() {
        let ns = at.saturating_duration_since(s.base).as_nanos() as u64;
        s.heartbeat.store(ns + 1, Ordering::Release);
    } else {
        s.heartbeat.store(0, Ordering::Release);
    }
    s.last_revision.store(m.last_revision(), Ordering::Relaxed);
    if let Some(v) = m.take_view() {
        s.view.store(Arc::new(v));
    }
    if **s.counters.load() != m.counters() {
        s.counters.store(Arc::new(m.counters()));
    }
}

async fn mirror_session(
    c: &NatsConfig,
    m: &mut Mirror,
    s: &Shared,
    stop: &AtomicBool,
    attempt: &mut u32,
) -> Result<(), FleetError> {
    let (client, mut events) = connect(c, "bootcache").await?;
    let js = js(c, client);
    let store = js
        .get_key_value(&c.bucket)
        .await
        .map_err(|e| js_err("opening the bucket")(e.to_string()))?;
    let stream = js
        .get_stream(format!("KV_{}", c.bucket))
        .await
        .map_err(|e| js_err("reading the bucket's state")(e.to_string()))?;
    let from = m.connected(stream.cached_info().state.last_sequence);
    let mut watch = store
        .watch_all_from_revision(from)
        .await
        .map_err(|e| js_err("watching the bucket")(e.to_string()))?;
    log::info!(
        "fleet: mirroring bucket {} from revision {from} (bucket at {})",
        c.bucket,
        stream.cached_info().state.last_sequence
    );
    *attempt = 0;
    publish(m, s);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            e = watch.next() => match e {
                Some(Ok(e)) => {
                    let op = match e.operation {
                        kv::Operation::Put => Op::Put(&e.value),
                        kv::Operation::Delete | kv::Operation::Purge => Op::Delete,
                    };
                    m.apply(Instant::now(), wall_ms(), e.revision, &e.key, op);
                }
                Some(Err(e)) => return Err(FleetError::Lost(format!("watch: {e}"))),
                None => return Err(FleetError::Lost("watch ended".into())),
            },
            ev = events.recv() => if let Some(why) = lost(ev) {
                return Err(FleetError::Lost(why));
            },
            _ = tick.tick() => if stop.load(Ordering::Relaxed) {
                return Ok(());
            },
        }
        publish(m, s);
    }
}

// ------------------------------------------------------------- publisher

/// The publisher's settings.
#[derive(Debug, Clone, Copy)]
pub struct PublishConfig {
    /// How often the table is compared with what was published.
    pub tick: Duration,
    /// How often the heartbeat is put (well under the bridges'
    /// `max_silence`).
    pub heartbeat: Duration,
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig {
            tick: Duration::from_millis(50),
            heartbeat: Duration::from_millis(250),
        }
    }
}

/// A running publisher; stops its thread when dropped.
pub struct PublisherHandle {
    puts: Arc<AtomicU64>,
    foreign: Arc<AtomicU64>,
    _worker: Worker,
}

impl std::fmt::Debug for PublisherHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublisherHandle").finish_non_exhaustive()
    }
}

impl PublisherHandle {
    /// Records put so far (heartbeats included).
    pub fn puts(&self) -> u64 {
        self.puts.load(Ordering::Relaxed)
    }

    /// Entries under a file's key that someone else wrote (each put right
    /// again).
    pub fn foreign(&self) -> u64 {
        self.foreign.load(Ordering::Relaxed)
    }
}

/// Starts publishing the table `snapshot` returns into `c.bucket` (created
/// if missing: history 1, file storage), signed with `key`, for the agent
/// run that started at `epoch` (ms since the Unix epoch), and the serving
/// policy `policy` returns (put whenever it changes).
pub fn spawn_publisher<F, P>(
    c: NatsConfig,
    key: &[u8],
    epoch: u64,
    config: PublishConfig,
    snapshot: F,
    policy: P,
) -> Result<PublisherHandle, FleetError>
where
    F: Fn() -> HashMap<String, Published> + Send + 'static,
    P: Fn() -> Vec<crate::policy::Rule> + Send + 'static,
{
    check_config(&c)?;
    let stop = Arc::new(AtomicBool::new(false));
    let puts = Arc::new(AtomicU64::new(0));
    let rt = runtime()?;
    let mut p = Publisher::new(key, &c.bucket, epoch);
    let foreign = Arc::new(AtomicU64::new(0));
    let (stop2, puts2, foreign2) = (Arc::clone(&stop), Arc::clone(&puts), Arc::clone(&foreign));
    let thread = std::thread::Builder::new()
        .name("fleet-publish".into())
        .spawn(move || {
            rt.block_on(async {
                let mut attempt = 0;
                while !stop2.load(Ordering::Relaxed) {
                    p.forget();
                    let counts = (&*puts2, &*foreign2);
                    let sources = (&snapshot, &policy);
                    match publish_session(&c, &mut p, &config, sources, &stop2, counts).await {
                        Ok(()) => break,
                        Err(e) => {
                            if attempt == 0 {
                                log::warn!("fleet: publishing to {}: {e}; retrying", c.bucket);
                            }
                            backoff(&mut attempt).await;
                        }
                    }
                }
            })
        })?;
    Ok(PublisherHandle {
        puts,
        foreign,
        _worker: Worker {
            stop,
            thread: Some(thread),
        },
    })
}

async fn publish_session<F, P>(
    c: &NatsConfig,
    p: &mut Publisher,
    config: &PublishConfig,
    (snapshot, policy): (&F, &P),
    stop: &AtomicBool,
    (puts, foreign): (&AtomicU64, &AtomicU64),
) -> Result<(), FleetError>
where
    F: Fn() -> HashMap<String, Published>,
    P: Fn() -> Vec<crate::policy::Rule>,
{
    let (client, mut events) = connect(c, "bootcache-agent").await?;
    let js = js(c, client);
    let store = match js.get_key_value(&c.bucket).await {
        Ok(s) => s,
        Err(_) => {
            create_bucket(&js, &c.bucket).await?;
            js.get_key_value(&c.bucket)
                .await
                .map_err(|e| js_err("opening the bucket")(e.to_string()))?
        }
    };
    // Our own bucket, watched: an entry under a file's key that is not
    // ours (a replayed or forged record, a delete) is put right again.
    let mut watch = store
        .watch_all()
        .await
        .map_err(|e| js_err("watching the bucket")(e.to_string()))?;
    log::info!("fleet: publishing the table to bucket {}", c.bucket);
    let mut tick = tokio::time::interval(config.tick);
    let mut last_heartbeat: Option<Instant> = None;
    loop {
        tokio::select! {
            ev = events.recv() => if let Some(why) = lost(ev) {
                return Err(FleetError::Lost(why));
            },
            e = watch.next() => match e {
                Some(Ok(e)) => {
                    let value = matches!(e.operation, kv::Operation::Put).then_some(&e.value[..]);
                    if p.observe(&e.key, e.revision, value) {
                        log::warn!("fleet: {} (revision {}) was written by someone else: putting ours again", e.key, e.revision);
                        foreign.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                Some(Err(e)) => return Err(FleetError::Lost(format!("watch: {e}"))),
                None => return Err(FleetError::Lost("watch ended".into())),
            },
            _ = tick.tick() => {}
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let table = snapshot();
        let mut batch = p.diff(wall_ms(), &table);
        batch.extend(p.policy(&policy()));
        // The heartbeat goes after the table: a bridge that hears from this
        // run has its records before (the watch delivers in order).
        if last_heartbeat.is_none_or(|t| t.elapsed() >= config.heartbeat) {
            batch.push(p.heartbeat(wall_ms()));
            last_heartbeat = Some(Instant::now());
        }
        for put in batch {
            let revision = store
                .put(&put.key, put.value.into())
                .await
                .map_err(|e| js_err("put")(e.to_string()))?;
            p.put_done(&put.key, revision);
            puts.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Creates the bucket's stream as a KV bucket of history 1 with file
/// storage. Not through `create_key_value`: that first reads the account
/// information, whose 2.9 form async-nats 0.50 cannot parse (it expects
/// 2.10's `reserved_memory`); the stream is what `create_key_value` makes.
async fn create_bucket(js: &jetstream::Context, bucket: &str) -> Result<(), FleetError> {
    create_kv(
        js,
        bucket,
        "bootcache verification table (signed by bootcache-agent)",
        Duration::ZERO,
    )
    .await
}

/// Creates a KV bucket's stream (see [`create_bucket`]); a non-zero
/// `max_age` makes its entries expire (NATS 2.9 has no per-key TTL).
async fn create_kv(
    js: &jetstream::Context,
    bucket: &str,
    description: &str,
    max_age: Duration,
) -> Result<(), FleetError> {
    use jetstream::stream::{Config, DiscardPolicy, StorageType};
    js.create_stream(Config {
        name: format!("KV_{bucket}"),
        description: Some(description.into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: 1,
        discard: DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .map_err(|e| js_err("creating a bucket")(format!("{bucket}: {e}")))?;
    Ok(())
}

/// Opens the KV bucket `bucket`, creating it if missing.
async fn ensure_kv(
    js: &jetstream::Context,
    bucket: &str,
    description: &str,
    max_age: Duration,
) -> Result<kv::Store, FleetError> {
    if let Ok(s) = js.get_key_value(bucket).await {
        return Ok(s);
    }
    create_kv(js, bucket, description, max_age).await?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| js_err("opening a bucket")(format!("{bucket}: {e}")))
}

/// Opens the fleet bucket of `b` (holdings, image maps, directives,
/// acknowledgements), creating it if missing.
pub(crate) async fn ensure_fleet(
    js: &jetstream::Context,
    b: &crate::doc::Buckets,
) -> Result<kv::Store, FleetError> {
    let what = "bootcache fleet: holdings, image maps, directives";
    ensure_kv(js, &b.fleet, what, Duration::ZERO).await
}

/// Opens the presence bucket of `b` (entries expire after
/// [`crate::doc::PRESENCE_TTL`]), creating it if missing.
pub(crate) async fn ensure_presence(
    js: &jetstream::Context,
    b: &crate::doc::Buckets,
) -> Result<kv::Store, FleetError> {
    let what = "bootcache fleet: bridges present";
    ensure_kv(js, &b.presence, what, crate::doc::PRESENCE_TTL).await
}

/// Opens the Object Store `bucket`, creating it if missing (file storage).
pub(crate) async fn ensure_objects(
    js: &jetstream::Context,
    bucket: &str,
) -> Result<jetstream::object_store::ObjectStore, FleetError> {
    if let Ok(s) = js.get_object_store(bucket).await {
        return Ok(s);
    }
    js.create_object_store(jetstream::object_store::Config {
        bucket: bucket.to_owned(),
        description: Some("bootcache: files pushed to and pre-staged on bridges".into()),
        storage: jetstream::stream::StorageType::File,
        num_replicas: 1,
        max_bytes: -1,
        ..Default::default()
    })
    .await
    .map_err(|e| js_err("creating the Object Store")(format!("{bucket}: {e}")))
}

/// Puts one raw value into a bucket and returns its revision: for tests
/// and for operators checking what bridges do with a foreign entry.
pub fn put_raw(c: &NatsConfig, key: &str, value: Vec<u8>) -> Result<u64, FleetError> {
    check_config(c)?;
    runtime()?.block_on(async {
        let (client, _events) = connect(c, "bootcache-put").await?;
        let store = js(c, client)
            .get_key_value(&c.bucket)
            .await
            .map_err(|e| js_err("opening the bucket")(e.to_string()))?;
        store
            .put(key, value.into())
            .await
            .map_err(|e| js_err("put")(e.to_string()))
    })
}

/// Deletes `name` from the fleet's Object Store: for tests and for
/// operators making bridges read a file from the origin instead.
pub fn delete_object(c: &NatsConfig, name: &str) -> Result<(), FleetError> {
    check_config(c)?;
    let b = crate::doc::Buckets::of(&c.bucket);
    runtime()?.block_on(async {
        let (client, _events) = connect(c, "bootcache-delete").await?;
        let store = js(c, client)
            .get_object_store(&b.objects)
            .await
            .map_err(|e| js_err("opening the Object Store")(e.to_string()))?;
        store
            .delete(name)
            .await
            .map_err(|e| js_err("deleting the object")(e.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(servers: &[&str], bucket: &str) -> NatsConfig {
        NatsConfig {
            servers: servers.iter().map(|s| s.to_string()).collect(),
            bucket: bucket.into(),
            ..NatsConfig::default()
        }
    }

    #[test]
    fn configuration_errors_say_what_to_fix() {
        assert!(check_config(&cfg(&["nats://10.0.0.1:4222", "nats://u:p@h:1"], "b-1_x")).is_ok());
        assert!(check_config(&cfg(&["tls://h:4222"], "b")).is_ok());
        let file = std::env::temp_dir().join(format!("fleet-cfg-{}", std::process::id()));
        std::fs::write(&file, "x\n").unwrap();
        let with = |f: &dyn Fn(&mut NatsConfig)| {
            let mut c = cfg(&["nats://h:4222"], "b");
            f(&mut c);
            c
        };
        let cases = [
            (cfg(&[], "b"), "servers"),
            (cfg(&["http://h:4222"], "b"), "tls://"),
            (with(&|c| c.user = Some("u".into())), "password_file"),
            (with(&|c| c.password_file = Some(file.clone())), "user"),
            (
                with(&|c| {
                    c.user = Some("u".into());
                    c.password_file = Some(file.clone());
                    c.nkey_file = Some(file.clone());
                }),
                "one way",
            ),
            (
                with(&|c| c.nkey_file = Some("/nonexistent/seed".into())),
                "nkey_file",
            ),
            (
                with(&|c| c.tls_ca = Some("/nonexistent/ca".into())),
                "tls_ca",
            ),
            (cfg(&["h:4222"], "b"), "nats://"),
            (cfg(&["nats://h"], "b"), "host:port"),
            (cfg(&["nats://h:0"], "b"), "host:port"),
            (cfg(&["nats://:4222"], "b"), "host:port"),
            (cfg(&["nats://h:4222"], ""), "bucket"),
            (cfg(&["nats://h:4222"], "a.b"), "bucket"),
            (
                NatsConfig {
                    credentials: Some("/nonexistent/x.creds".into()),
                    ..cfg(&["nats://h:4222"], "b")
                },
                "credentials",
            ),
        ];
        for (c, want) in cases {
            let e = check_config(&c).unwrap_err().to_string();
            assert!(e.contains(want), "{c:?}: {e}");
            assert!(!e.contains('\n'));
        }
        let _ = std::fs::remove_file(&file);
    }
}
