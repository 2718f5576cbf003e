//! A bridge's member thread (issue 14 items 2–4): presence, holdings and
//! the image map summary into the buckets; directives carried out by
//! fetching files from the Object Store, checked against the signed table
//! and handed to the cache's worker, which publishes them through the
//! filestore's writer thread. A thread of its own with a current-thread
//! tokio runtime; the worker talks to it over bounded channels and never
//! waits.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::doc::{self, Ack, Buckets, Directive, Holding, ImageSummary, Presence};
use crate::member::{
    check_table, DirectiveCounters, Directives, Fetch, HoldingsSync, PortAsk, Source,
};
use crate::nats::{
    backoff, connect, ensure_fleet, ensure_objects, ensure_presence, js_err, lost, runtime,
    wall_ms, FleetError, MirrorReader, NatsConfig, Worker,
};

/// Who this bridge is, and where fetched files go.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// `[fleet] bridge_id`.
    pub id: String,
    /// `[fleet] site`.
    pub site: String,
    /// Addresses it announces.
    pub addresses: Vec<String>,
    /// bootcache's version.
    pub version: String,
    /// The cache's temporary directory (same file system as its files).
    pub tmp_dir: PathBuf,
    /// Largest file fetched (the cache's `max_file_size`).
    pub max_file_size: u64,
    /// How a file the Object Store lacks is read by TFTP from the origin.
    pub origin_read: OriginRead,
}

/// How the member reads a file by TFTP from the origin when the Object
/// Store lacks it (issue 14 item 3).
#[derive(Debug, Clone)]
pub enum OriginRead {
    /// It does not: the store only.
    Never,
    /// On a kernel socket of the bridge host (the management side), by
    /// this function; the member checks the bytes and stages the file.
    Socket(OriginFetch),
    /// Through the bridge's server-side port, by the serving thread's TFTP
    /// client (addressed mode): the member asks with a [`PortFetch`], the
    /// fetch lands in the cache through the fill, and what landed comes
    /// back with [`MemberHandle::port_fetched`], checked here against the
    /// signed table.
    Port,
}

/// A file to fetch through the server-side port into the cache
/// ([`OriginRead::Port`]); answer with [`MemberHandle::port_fetched`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortFetch {
    /// Pass it back with the answer.
    pub tag: u64,
    /// Normalised name.
    pub name: String,
}

/// The bridge's TFTP read of a file from the origin (the cache's prefetch
/// path): writes `name` into the path and returns its size and SHA-256.
/// It blocks; the member runs it on tokio's blocking pool.
#[derive(Clone)]
pub struct OriginFetch(
    #[allow(clippy::type_complexity)]
    pub  Arc<dyn Fn(&std::path::Path, &str) -> Result<(u64, [u8; 32]), String> + Send + Sync>,
);

impl std::fmt::Debug for OriginFetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OriginFetch")
    }
}

/// A file fetched from the Object Store, its bytes checked against the
/// signed table, for the worker to publish.
#[derive(Debug)]
pub struct Staged {
    /// Pass it back with [`MemberHandle::staged_result`].
    pub tag: u64,
    /// The file under the cache's temporary directory.
    pub path: PathBuf,
    /// Normalised name.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// Its SHA-256 (computed while it was written, equal to the table's).
    pub sha256: [u8; 32],
}

enum ToMember {
    Holdings(Vec<Holding>),
    Image(ImageSummary),
    Result(u64, Result<(), String>),
    PortFetched(u64, Result<(u64, [u8; 32]), String>),
}

/// What the member did, for the operator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemberCounters {
    /// Connected to the engine.
    pub connected: bool,
    /// Presence entries put.
    pub presence: u64,
    /// Holding entries put and deleted.
    pub holding_puts: u64,
    /// Holding entries deleted.
    pub holding_deletes: u64,
    /// Directive entries that did not verify (ignored).
    pub bad_signature: u64,
    /// The directives' counters.
    pub directives: DirectiveCounters,
}

/// The member thread; stopped when dropped.
pub struct MemberHandle {
    to: mpsc::Sender<ToMember>,
    staged: std_mpsc::Receiver<Staged>,
    port: std_mpsc::Receiver<PortFetch>,
    counters: Arc<ArcSwap<MemberCounters>>,
    refused: AtomicU64,
    _worker: Worker,
}

impl std::fmt::Debug for MemberHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberHandle").finish_non_exhaustive()
    }
}

impl MemberHandle {
    /// The cache's holdings now (never waits; a full queue drops it and
    /// the next call sends the state again).
    pub fn holdings(&self, h: Vec<Holding>) {
        self.send(ToMember::Holdings(h));
    }

    /// The image map's summary now.
    pub fn image_map(&self, m: ImageSummary) {
        self.send(ToMember::Image(m));
    }

    /// A file the member staged, to publish.
    pub fn try_staged(&self) -> Option<Staged> {
        self.staged.try_recv().ok()
    }

    /// What became of a staged file.
    pub fn staged_result(&self, tag: u64, r: Result<(), String>) {
        self.send(ToMember::Result(tag, r));
    }

    /// A file the member asks to fetch through the server-side port.
    pub fn try_port_fetch(&self) -> Option<PortFetch> {
        self.port.try_recv().ok()
    }

    /// What became of a [`PortFetch`]: the size and SHA-256 of the copy
    /// that landed in the cache, or why none did (refused, failed).
    pub fn port_fetched(&self, tag: u64, r: Result<(u64, [u8; 32]), String>) {
        self.send(ToMember::PortFetched(tag, r));
    }

    fn send(&self, m: ToMember) {
        if self.to.try_send(m).is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counters.
    pub fn counters(&self) -> MemberCounters {
        **self.counters.load()
    }
}

/// Starts the member thread of bridge `m` on `c`'s engine (the table's
/// bucket named there; the others beside it), signing with `key`.
pub fn spawn_member(
    c: NatsConfig,
    key: &[u8],
    m: MemberConfig,
    mirror: MirrorReader,
) -> Result<MemberHandle, FleetError> {
    crate::nats::check_config(&c)?;
    if !doc::valid_id(&m.id) || !doc::valid_id(&m.site) {
        return Err(FleetError::Config(format!(
            "bridge_id {:?} and site {:?} must be 1-64 letters, digits, '-' or '_'",
            m.id, m.site
        )));
    }
    let (to, rx) = mpsc::channel(64);
    let (staged_tx, staged) = std_mpsc::sync_channel(4);
    let (port_tx, port) = std_mpsc::sync_channel(4);
    let counters = Arc::new(ArcSwap::from_pointee(MemberCounters::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let rt = runtime()?;
    let mut st = State {
        key: key.to_vec(),
        buckets: Buckets::of(&c.bucket),
        started_ms: wall_ms(),
        directives: Directives::new(&m.id, &m.site),
        sync: HoldingsSync::default(),
        holdings: Vec::new(),
        image: None,
        image_dirty: false,
        waiting: None,
        port_ask: PortAsk::default(),
        tag: 0,
        counters: MemberCounters::default(),
        m,
        mirror,
        rx,
        staged_tx,
        port_tx,
        shared: Arc::clone(&counters),
    };
    let stop2 = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("fleet-member".into())
        .spawn(move || {
            rt.block_on(async {
                let mut attempt = 0;
                while !stop2.load(Ordering::Relaxed) {
                    let r = member_session(&c, &mut st, &stop2, &mut attempt).await;
                    st.counters.connected = false;
                    st.publish();
                    match r {
                        Ok(()) => break,
                        Err(e) if attempt == 0 => {
                            log::warn!("fleet: member {}: {e}; retrying", st.m.id)
                        }
                        Err(e) => log::debug!("fleet: {e}"),
                    }
                    backoff(&mut attempt).await;
                }
            })
        })?;
    Ok(MemberHandle {
        to,
        staged,
        port,
        counters,
        refused: AtomicU64::new(0),
        _worker: Worker {
            stop,
            thread: Some(thread),
        },
    })
}

struct State {
    key: Vec<u8>,
    buckets: Buckets,
    m: MemberConfig,
    started_ms: u64,
    directives: Directives,
    sync: HoldingsSync,
    holdings: Vec<Holding>,
    image: Option<ImageSummary>,
    image_dirty: bool,
    /// A staged file the worker has not answered for yet.
    waiting: Option<(u64, Fetch)>,
    /// A fetch through the server-side port not answered yet.
    port_ask: PortAsk,
    tag: u64,
    counters: MemberCounters,
    mirror: MirrorReader,
    rx: mpsc::Receiver<ToMember>,
    staged_tx: std_mpsc::SyncSender<Staged>,
    port_tx: std_mpsc::SyncSender<PortFetch>,
    shared: Arc<ArcSwap<MemberCounters>>,
}

impl State {
    fn publish(&mut self) {
        self.counters.directives = self.directives.counters();
        if **self.shared.load() != self.counters {
            self.shared.store(Arc::new(self.counters));
        }
    }

    fn take(&mut self, msg: ToMember) {
        match msg {
            ToMember::Holdings(h) => self.holdings = h,
            ToMember::Image(m) => {
                if self.image.as_ref() != Some(&m) {
                    self.image = Some(m);
                    self.image_dirty = true;
                }
            }
            ToMember::Result(tag, r) => {
                if let Some((t, f)) = self.waiting.take() {
                    if t == tag {
                        if let Err(e) = &r {
                            log::warn!("fleet: {}: the cache refused it: {e}", f.name);
                        }
                        self.directives.fetched(Instant::now(), &f, r);
                    } else {
                        self.waiting = Some((t, f));
                    }
                }
            }
            ToMember::PortFetched(tag, r) => {
                if let Some((f, r)) = self.port_ask.answered(tag, r) {
                    self.port_fetched(&f, r);
                }
            }
        }
    }

    /// The end of a fetch through the server-side port, checked against
    /// the signed table.
    fn port_fetched(&mut self, f: &Fetch, r: Result<(), String>) {
        match &r {
            Ok(()) => log::info!(
                "fleet: {}: {} bytes fetched from the origin through the server-side port, \
                 SHA-256 is the table's: in the cache",
                f.name,
                f.info.size
            ),
            Err(e) => log::warn!("fleet: {}: from the origin: {e}", f.name),
        }
        self.directives.fetched(Instant::now(), f, r);
    }
}

async fn member_session(
    c: &NatsConfig,
    st: &mut State,
    stop: &AtomicBool,
    attempt: &mut u32,
) -> Result<(), FleetError> {
    let (client, mut events) = connect(c, &format!("bootcache {}", st.m.id)).await?;
    let js = crate::nats::js(c, client);
    let fleet = ensure_fleet(&js, &st.buckets).await?;
    let presence = ensure_presence(&js, &st.buckets).await?;
    let objects = ensure_objects(&js, &st.buckets.objects).await?;
    // Our holdings from an earlier run or session: put again, and the
    // ones the cache no longer has deleted.
    let prefix = format!("h.{}.", st.m.id);
    let mut found = Vec::new();
    let mut keys = fleet
        .keys()
        .await
        .map_err(|e| js_err("listing the fleet bucket")(e.to_string()))?;
    while let Some(k) = keys.next().await {
        match k {
            Ok(k) if k.starts_with(&prefix) => found.push(k),
            Ok(_) => {}
            Err(e) => return Err(js_err("listing the fleet bucket")(e.to_string())),
        }
    }
    st.sync.start(found);
    let mut directives = fleet
        .watch_with_history("d.>")
        .await
        .map_err(|e| js_err("watching directives")(e.to_string()))?;
    log::info!(
        "fleet: bridge {} of site {} joined (buckets {}, {}, {})",
        st.m.id,
        st.m.site,
        st.buckets.fleet,
        st.buckets.presence,
        st.buckets.objects
    );
    *attempt = 0;
    st.counters.connected = true;
    // The presence heartbeat beats in a task of its own: a fetch (a large
    // file from the store or by TFTP) holds up this loop for as long as
    // it takes, and the bridge must not look gone meanwhile.
    let beat = Beat {
        presence,
        key: st.key.clone(),
        bucket: st.buckets.presence.clone(),
        m: st.m.clone(),
        started_ms: st.started_ms,
        mirror: st.mirror.clone(),
        holdings: Arc::new(AtomicU64::new(st.holdings.len() as u64)),
        puts: Arc::new(AtomicU64::new(0)),
    };
    let (holdings_n, puts) = (Arc::clone(&beat.holdings), Arc::clone(&beat.puts));
    let mut beating = AbortOnDrop(tokio::spawn(beat.run()));
    let puts_before = st.counters.presence;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            ev = events.recv() => if let Some(why) = lost(ev) {
                return Err(FleetError::Lost(why));
            },
            r = &mut beating.0 => return Err(match r {
                Ok(e) => e,
                Err(e) => FleetError::Lost(format!("presence: {e}")),
            }),
            msg = st.rx.recv() => match msg {
                Some(m) => st.take(m),
                None => return Ok(()),
            },
            e = directives.next() => match e {
                Some(Ok(e)) if matches!(e.operation, kv::Operation::Put) => {
                    offer(st, &fleet, &e.key, &e.value).await?;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(FleetError::Lost(format!("directives: {e}"))),
                None => return Err(FleetError::Lost("directives watch ended".into())),
            },
            _ = tick.tick() => {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                holdings_n.store(st.holdings.len() as u64, Ordering::Relaxed);
                st.counters.presence = puts_before + puts.load(Ordering::Relaxed);
                sync_holdings(st, &fleet).await?;
                if st.image_dirty {
                    if let Some(m) = &st.image {
                        let k = doc::image_key(&st.m.id);
                        let v = doc::sign(m, &st.key, &st.buckets.fleet, &k);
                        fleet.put(&k, v.into()).await.map_err(|e| js_err("put")(e.to_string()))?;
                    }
                    st.image_dirty = false;
                }
                work(st, &objects).await;
                for a in st.directives.take_acks() {
                    put_ack(st, &fleet, &a).await?;
                }
            },
        }
        st.publish();
    }
}

async fn offer(
    st: &mut State,
    fleet: &kv::Store,
    key: &str,
    value: &[u8],
) -> Result<(), FleetError> {
    let d: Directive = match doc::verify(value, &st.key, &st.buckets.fleet, key) {
        Ok(d) => d,
        Err(e) => {
            st.counters.bad_signature += 1;
            log::warn!("fleet: directive {key}: {e}: ignored");
            return Ok(());
        }
    };
    if doc::directive_key(&d.id) != key || !d.target.includes(&st.m.id, &st.m.site) {
        return Ok(());
    }
    // Finished in an earlier run? Our acknowledgement says so.
    let k = doc::ack_key(&d.id, &st.m.id);
    if let Some(v) = fleet
        .get(&k)
        .await
        .map_err(|e| js_err("reading an acknowledgement")(e.to_string()))?
    {
        if let Ok(a) = doc::verify::<Ack>(&v, &st.key, &st.buckets.fleet, &k) {
            st.directives.acknowledged(&a);
        }
    }
    st.directives.offer(Instant::now(), wall_ms(), d);
    Ok(())
}

/// Aborts the task when dropped (the session ended).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The presence heartbeat's task: what it puts, and how many it put.
struct Beat {
    presence: kv::Store,
    key: Vec<u8>,
    bucket: String,
    m: MemberConfig,
    started_ms: u64,
    mirror: MirrorReader,
    /// The holdings' count, kept current by the member loop.
    holdings: Arc<AtomicU64>,
    puts: Arc<AtomicU64>,
}

impl Beat {
    /// Puts the presence entry every [`doc::PRESENCE_PERIOD`] until a put
    /// fails (its error ends the session).
    async fn run(self) -> FleetError {
        let k = doc::presence_key(&self.m.id);
        let mut every = tokio::time::interval(doc::PRESENCE_PERIOD);
        loop {
            every.tick().await;
            let p = Presence {
                id: self.m.id.clone(),
                site: self.m.site.clone(),
                addresses: self.m.addresses.clone(),
                version: self.m.version.clone(),
                started_ms: self.started_ms,
                at_ms: wall_ms(),
                mirror_live: self.mirror.is_live(Instant::now()),
                holdings: self.holdings.load(Ordering::Relaxed),
            };
            let v = doc::sign(&p, &self.key, &self.bucket, &k);
            if let Err(e) = self.presence.put(&k, v.into()).await {
                return js_err("putting presence")(e.to_string());
            }
            self.puts.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn sync_holdings(st: &mut State, fleet: &kv::Store) -> Result<(), FleetError> {
    let diff = st.sync.diff(&st.m.id, &st.holdings);
    for (k, h) in diff.puts {
        let v = doc::sign(&h, &st.key, &st.buckets.fleet, &k);
        if let Err(e) = fleet.put(&k, v.into()).await {
            st.sync.start(Vec::new());
            return Err(js_err("putting a holding")(e.to_string()));
        }
        st.counters.holding_puts += 1;
    }
    for k in diff.deletes {
        if let Err(e) = fleet.delete(&k).await {
            st.sync.start(vec![k]);
            return Err(js_err("deleting a holding")(e.to_string()));
        }
        st.counters.holding_deletes += 1;
    }
    Ok(())
}

async fn put_ack(st: &State, fleet: &kv::Store, a: &Ack) -> Result<(), FleetError> {
    let k = doc::ack_key(&a.id, &a.bridge);
    let v = doc::sign(a, &st.key, &st.buckets.fleet, &k);
    fleet
        .put(&k, v.into())
        .await
        .map_err(|e| js_err("putting an acknowledgement")(e.to_string()))?;
    Ok(())
}

/// One step of the directives: the next fetch, if any, done now (or,
/// through the server-side port, asked of the serving thread).
async fn work(st: &mut State, objects: &jetstream::object_store::ObjectStore) {
    if let Some((f, r)) = st.port_ask.poll_timeout(Instant::now()) {
        st.port_fetched(&f, r);
    }
    if st.waiting.is_some() || st.port_ask.busy() {
        return;
    }
    let held: HashSet<(&str, &str)> = st
        .holdings
        .iter()
        .map(|h| (h.name.as_str(), h.sha256.as_str()))
        .collect();
    let now = Instant::now();
    let mirror = st.mirror.clone();
    let fetch = st.directives.poll(
        now,
        wall_ms(),
        |name| mirror.current(now, name),
        |name, sha| held.contains(&(name, doc::hex(sha).as_str())),
    );
    let Some(f) = fetch else {
        return;
    };
    st.tag += 1;
    let tag = st.tag;
    if f.source == Source::Origin && matches!(st.m.origin_read, OriginRead::Port) {
        ask_port(st, f, tag, now);
        return;
    }
    let got = match f.source {
        Source::ObjectStore => fetch_object(st, objects, &f, tag).await,
        Source::Origin => fetch_origin(st, &f, tag).await,
    };
    match got {
        Ok(staged) => {
            log::info!(
                "fleet: {}: {} bytes fetched from {}, SHA-256 is the table's: to the cache",
                f.name,
                staged.size,
                match f.source {
                    Source::ObjectStore => "the Object Store",
                    Source::Origin => "the origin by TFTP",
                }
            );
            match st.staged_tx.try_send(staged) {
                Ok(()) => st.waiting = Some((tag, f)),
                Err(e) => {
                    // The worker has not taken the last ones yet.
                    let _ = std::fs::remove_file(match &e {
                        std_mpsc::TrySendError::Full(s)
                        | std_mpsc::TrySendError::Disconnected(s) => &s.path,
                    });
                    st.directives
                        .fetched(now, &f, Err("the cache's worker is busy".into()));
                }
            }
        }
        Err(e) => {
            match f.source {
                Source::ObjectStore => log::debug!("fleet: {}: {e}", f.name),
                Source::Origin => log::warn!("fleet: {}: from the origin: {e}", f.name),
            }
            st.directives.fetched(now, &f, Err(e));
        }
    }
}

/// Asks the serving thread to fetch the file through the server-side
/// port (never waits: a full queue is a failed attempt, tried again).
fn ask_port(st: &mut State, f: Fetch, tag: u64, now: Instant) {
    if f.info.size > st.m.max_file_size {
        let e = format!(
            "{} bytes: larger than the cache's max_file_size",
            f.info.size
        );
        st.directives.fetched(now, &f, Err(e));
        return;
    }
    let ask = PortFetch {
        tag,
        name: f.name.clone(),
    };
    match st.port_tx.try_send(ask) {
        Ok(()) => {
            log::info!(
                "fleet: {}: not in the Object Store: reading it from the origin through the server-side port",
                f.name
            );
            st.port_ask.asked(now, tag, f);
        }
        Err(_) => {
            st.directives
                .fetched(now, &f, Err("the serving thread is busy".into()));
        }
    }
}

/// Reads the file by TFTP from the origin (on the blocking pool: the
/// transfer is lock-step UDP) into a temporary file; the bytes must be
/// the table's.
async fn fetch_origin(st: &State, f: &Fetch, tag: u64) -> Result<Staged, String> {
    let OriginRead::Socket(read) = st.m.origin_read.clone() else {
        return Err("not in the Object Store, and no origin to read it from".into());
    };
    if f.info.size > st.m.max_file_size {
        return Err(format!(
            "{} bytes: larger than the cache's max_file_size",
            f.info.size
        ));
    }
    let path =
        st.m.tmp_dir
            .join(format!("fleet-{}-{tag}", std::process::id()));
    let (p, name) = (path.clone(), f.name.clone());
    let r = tokio::task::spawn_blocking(move || (read.0)(&p, &name))
        .await
        .unwrap_or_else(|e| Err(format!("the TFTP read stopped: {e}")));
    let r = r.and_then(|(size, sha)| check_table(f, size, &sha).map(|()| (size, sha)));
    match r {
        Ok((size, sha256)) => Ok(Staged {
            tag,
            path,
            name: f.name.clone(),
            size,
            sha256,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}

/// Streams the object into a temporary file, hashing as it goes; the
/// bytes must be the table's (size and SHA-256).
async fn fetch_object(
    st: &State,
    objects: &jetstream::object_store::ObjectStore,
    f: &Fetch,
    tag: u64,
) -> Result<Staged, String> {
    if f.info.size > st.m.max_file_size {
        return Err(format!(
            "{} bytes: larger than the cache's max_file_size",
            f.info.size
        ));
    }
    let mut obj = objects
        .get(&f.name)
        .await
        .map_err(|e| format!("not in the Object Store: {e}"))?;
    let path =
        st.m.tmp_dir
            .join(format!("fleet-{}-{tag}", std::process::id()));
    let mut out = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut hash = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 128 * 1024];
    let r: Result<(), String> = async {
        loop {
            let n = obj
                .read(&mut buf)
                .await
                .map_err(|e| format!("reading the object: {e}"))?;
            if n == 0 {
                return Ok(());
            }
            size += n as u64;
            if size > f.info.size {
                return Err("the object is larger than the table says".into());
            }
            hash.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    .await;
    let sha: [u8; 32] = hash.finalize().into();
    let r = r.and_then(|()| check_table(f, size, &sha));
    if let Err(e) = r {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(Staged {
        tag,
        path,
        name: f.name.clone(),
        size,
        sha256: sha,
    })
}
