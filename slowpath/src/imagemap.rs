//! The image map (patent figure 3d, "IP ADDR CLIENT A: 6.IMG"): per client,
//! the NBP and boot server it was told to use and every file it loads with
//! TFTP, so that later boots can be served from the cache by client address.
//!
//! - Clients are keyed by MAC, with UUID and IP as attributes and an
//!   IP → client index for TFTP (an RRQ names only addresses). A TFTP client
//!   whose DHCP was never seen gets an IP-only record, merged into the MAC's
//!   record once DHCP ties that IP to a MAC.
//! - Fed by [`ImageMap::handle_dhcp`] (through [`crate::dhcp`]) and
//!   [`ImageMap::record_file`]; sans-I/O except [`ImageMap::load`] (on
//!   start) and [`ImageMap::save`] (tests, tools).
//! - Persisted incrementally: once [`ImageMap::attach`]ed to the cache's
//!   writer thread, [`ImageMap::persist`] (the worker calls it about once a
//!   second) queues one journal record per client that changed or left
//!   since the last call, never waiting for the disk; the writer appends
//!   them to `imagemap.journal` and folds the journal into `imagemap.json`
//!   now and then. Loading reads the snapshot, then replays the journal (a
//!   torn or damaged record is dropped). A client is identified by its MAC,
//!   or by its IP when it has none.
//! - Bounded ([`Limits`]): past the bounds the least recently seen client,
//!   and within a client the least recently requested file, is evicted and
//!   counted: the map keeps what clients boot now.
//! - File names are hostile input: stored as given (JSON escapes them), shown
//!   escaped by [`render_listing`], never used as paths.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::dhcp::{BootDirective, BootVia, HandlerCounters, Learned, MessageHandler, PxeClass};
use crate::journal;
use crate::writer::{Job, WriterHandle};

/// The image map's file in the cache directory.
pub const IMAGEMAP_FILE: &str = "imagemap.json";
/// The image map's journal (records since the snapshot) in the cache directory.
pub const IMAGEMAP_JOURNAL: &str = "imagemap.journal";
/// The format version written by [`ImageMap::save`].
const FORMAT_VERSION: u32 = 1;
/// Boot directives kept per client (chain loading tells a client a few NBPs:
/// PXE ROM → iPXE → script); past it the least recently told is dropped.
pub const MAX_BOOT_DIRECTIVES: usize = 16;
/// Longest file name recorded, in bytes. A TFTP RRQ can carry ~64 KiB of
/// name; no boot file has one this long, and the bound keeps the map's
/// worst case (clients × files × name) in memory.
pub const MAX_NAME_LEN: usize = 1024;

/// Why the image map could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum ImageMapError {
    /// Reading, writing, syncing or renaming a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The file is not a valid image map (bad JSON or wrong shape).
    #[error("{}: corrupt image map: {source}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What serde_json found.
        #[source]
        source: serde_json::Error,
    },
    /// The file is valid JSON of the right shape but contradicts itself.
    #[error("{}: inconsistent image map: {reason}", path.display())]
    Inconsistent {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file was written by a format version this build does not read.
    #[error("{}: image map format version {found}, expected {FORMAT_VERSION}", path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
}

/// Where a client's copy of a file came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServedFrom {
    /// The origin boot server (all files, until cache serving exists).
    #[default]
    Origin,
    /// bootcache's filestore.
    Cache,
}

impl ServedFrom {
    /// A short name for listings.
    pub fn as_str(self) -> &'static str {
        match self {
            ServedFrom::Origin => "origin",
            ServedFrom::Cache => "cache",
        }
    }
}

/// Bounds of the image map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Clients kept (at least one); past it the least recently seen is
    /// evicted.
    pub max_clients: usize,
    /// Files kept per client; past it the least recently requested is evicted.
    pub max_files_per_client: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: 65536,
            max_files_per_client: 256,
        }
    }
}

/// A file a client requested with TFTP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// The TFTP server the RRQ went to.
    pub server: Ipv4Addr,
    /// The file name as requested (hostile: never a path).
    pub name: String,
    /// When it was first requested.
    pub first_requested: SystemTime,
    /// When it was last requested.
    pub last_requested: SystemTime,
    /// How many RRQs asked for it (retransmitted RRQs and UEFI size probes
    /// count each).
    pub times_requested: u64,
    /// Where the client got it from last time.
    #[serde(default)]
    pub served_from: ServedFrom,
}

/// A boot file a server told the client to load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootRecord {
    /// The NBP's file name, as told (hostile: never a path).
    pub file: String,
    /// The boot server the client will fetch it from.
    pub server: Option<Ipv4Addr>,
    /// Option 66 / `sname` as sent, when given.
    pub server_name: Option<String>,
    /// Which exchange told it.
    pub via: BootVia,
    /// The client's user class when it was told (`iPXE` after chain loading).
    pub user_class: Option<String>,
    /// When it was first told.
    pub first_told: SystemTime,
    /// When it was last told.
    pub last_told: SystemTime,
    /// How many replies told it.
    pub times_told: u64,
}

/// Everything known about one client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    /// Its MAC; `None` for a client seen only by IP (TFTP without DHCP).
    #[serde(with = "mac_opt")]
    pub mac: Option<[u8; 6]>,
    /// Its address, once assigned.
    pub ip: Option<Ipv4Addr>,
    /// Its UUID/GUID (option 97), bytes as sent.
    #[serde(with = "uuid_opt")]
    pub uuid: Option<[u8; 16]>,
    /// Its architecture (option 93, else the PXE vendor class).
    pub arch: Option<u16>,
    /// Its PXE client class, parsed from option 60.
    pub pxe_class: Option<PxeClass>,
    /// Option 60 as sent.
    pub vendor_class: Option<String>,
    /// Option 77 of its latest DHCP request (`None` when it sent none).
    pub user_class: Option<String>,
    /// The boot item of its latest boot-service exchange.
    pub boot_item: Option<(u16, u16)>,
    /// Boot files it was told, oldest first.
    pub boot: Vec<BootRecord>,
    /// Files it requested with TFTP, in first-request order.
    pub files: Vec<FileRecord>,
    /// When it was first seen.
    pub first_seen: SystemTime,
    /// When it was last seen (DHCP or TFTP).
    pub last_seen: SystemTime,
}

impl ClientRecord {
    fn new(mac: Option<[u8; 6]>, wall: SystemTime) -> Self {
        ClientRecord {
            mac,
            ip: None,
            uuid: None,
            arch: None,
            pxe_class: None,
            vendor_class: None,
            user_class: None,
            boot_item: None,
            boot: Vec::new(),
            files: Vec::new(),
            first_seen: wall,
            last_seen: wall,
        }
    }

    /// The boot file it was told most recently: its current NBP.
    pub fn nbp(&self) -> Option<&BootRecord> {
        self.boot.iter().max_by_key(|b| b.last_told)
    }

    /// The record of `name` requested from `server`, if any.
    pub fn file(&self, server: Ipv4Addr, name: &str) -> Option<&FileRecord> {
        self.files
            .iter()
            .find(|f| f.server == server && f.name == name)
    }
}

/// The image map's counters (runtime only, not persisted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// DHCP/PXE messages given to [`ImageMap::handle_dhcp`].
    pub messages_seen: u64,
    /// Of those, malformed ones (ignored).
    pub malformed: u64,
    /// Of those, well-formed ones not for the map (other ports, non-Ethernet).
    pub ignored: u64,
    /// Clients in the map now.
    pub clients: u64,
    /// Clients evicted for [`Limits::max_clients`].
    pub clients_evicted: u64,
    /// TFTP requests recorded.
    pub files_recorded: u64,
    /// Files evicted for [`Limits::max_files_per_client`].
    pub files_evicted: u64,
    /// Boot directives dropped for [`MAX_BOOT_DIRECTIVES`].
    pub boot_evicted: u64,
    /// RRQs not recorded because the name is longer than [`MAX_NAME_LEN`].
    pub names_too_long: u64,
    /// Tentative DHCP offers forgotten (see [`crate::dhcp::HandlerCounters`]).
    pub pending_offers_evicted: u64,
}

/// What [`ImageMap::save`] writes.
#[derive(Serialize)]
struct StoredRef<'a> {
    version: u32,
    clients: Vec<&'a ClientRecord>,
}

/// `imagemap.json` holding `clients`.
pub(crate) fn snapshot_bytes<'a>(clients: impl Iterator<Item = &'a ClientRecord>) -> Vec<u8> {
    let stored = StoredRef {
        version: FORMAT_VERSION,
        clients: clients.collect(),
    };
    serde_json::to_vec(&stored).unwrap_or_default()
}

/// What identifies a client across restarts: its MAC, or its IP when it
/// has no MAC (an IP-only record keeps its IP for its whole life).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKey {
    /// A client known by MAC.
    Mac(#[serde(with = "mac_hex")] [u8; 6]),
    /// A client seen only by IP.
    Ip(Ipv4Addr),
}

impl ClientKey {
    /// The key of `c`; `None` for a record with neither MAC nor IP.
    pub fn of(c: &ClientRecord) -> Option<ClientKey> {
        c.mac.map(ClientKey::Mac).or(c.ip.map(ClientKey::Ip))
    }
}

/// One record of the image map's journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientOp {
    /// A client's whole record (new or changed).
    Put {
        /// The record.
        client: ClientRecord,
    },
    /// A client left the map.
    Del {
        /// Which.
        key: ClientKey,
    },
}

/// Applies one journal record to a map keyed by [`ClientKey`]. A record
/// with neither MAC nor IP is ignored.
pub(crate) fn apply_op(map: &mut BTreeMap<ClientKey, ClientRecord>, op: ClientOp) {
    match op {
        ClientOp::Put { client } => {
            if let Some(k) = ClientKey::of(&client) {
                map.insert(k, client);
            }
        }
        ClientOp::Del { key } => {
            map.remove(&key);
        }
    }
}

/// After a journal replay: an IP held by several records (a record that
/// gave it up was lost with a torn tail) stays with the most recently seen
/// one; an IP-only record that loses it is dropped.
fn settle_ips(map: BTreeMap<ClientKey, ClientRecord>) -> Vec<ClientRecord> {
    let mut clients: Vec<ClientRecord> = map.into_values().collect();
    clients.sort_by_key(|c| std::cmp::Reverse(c.last_seen));
    let mut held = HashSet::new();
    clients.retain_mut(|c| match c.ip {
        Some(ip) if !held.insert(ip) => {
            c.ip = None;
            c.mac.is_some()
        }
        _ => true,
    });
    clients
}

/// What [`ImageMap::load`] reads.
#[derive(Deserialize)]
struct Stored {
    version: u32,
    clients: Vec<ClientRecord>,
}

type Id = u64;

/// The image map: clients, what they were told and what they loaded.
#[derive(Debug)]
pub struct ImageMap {
    dir: PathBuf,
    limits: Limits,
    /// By id, which grows with creation: iteration is first-seen order.
    clients: BTreeMap<Id, ClientRecord>,
    by_mac: HashMap<[u8; 6], Id>,
    by_ip: HashMap<Ipv4Addr, Id>,
    /// Least recently seen first: touch sequence → id (each client's current
    /// sequence is in `seq_of`). A counter, not the wall clock, which may jump.
    lru: BTreeMap<u64, Id>,
    seq_of: HashMap<Id, u64>,
    next_id: Id,
    next_seq: u64,
    handler: MessageHandler,
    counters: Counters,
    /// Clients changed since the last persist or save.
    changed: HashSet<Id>,
    /// Keys of clients removed since then.
    removed: HashSet<ClientKey>,
    /// Too much changed to list (more removals than the map holds): the
    /// next persist sends the whole map.
    rewrite: bool,
    /// The cache's writer thread, once attached.
    writer: Option<WriterHandle>,
}

impl ImageMap {
    /// An empty map that saves into `dir`.
    pub fn new(dir: &Path, limits: Limits) -> Self {
        ImageMap {
            dir: dir.to_path_buf(),
            limits,
            clients: BTreeMap::new(),
            by_mac: HashMap::new(),
            by_ip: HashMap::new(),
            lru: BTreeMap::new(),
            seq_of: HashMap::new(),
            next_id: 0,
            next_seq: 0,
            handler: MessageHandler::default(),
            counters: Counters::default(),
            changed: HashSet::new(),
            removed: HashSet::new(),
            rewrite: false,
            writer: None,
        }
    }

    /// Loads `<dir>/imagemap.json` with the default [`Limits`]; see
    /// [`ImageMap::load_with`].
    pub fn load(dir: &Path) -> Result<ImageMap, ImageMapError> {
        Self::load_with(dir, Limits::default())
    }

    /// Loads `<dir>/imagemap.json`, then replays `<dir>/imagemap.journal`:
    /// an empty map if there is neither, an error naming the snapshot if it
    /// is corrupt (the caller decides whether to start empty); damaged
    /// journal records are dropped. Records past `limits` are evicted as
    /// they would have been.
    pub fn load_with(dir: &Path, limits: Limits) -> Result<ImageMap, ImageMapError> {
        let path = dir.join(IMAGEMAP_FILE);
        let mut map = ImageMap::new(dir, limits);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                b"{\"version\":1,\"clients\":[]}".to_vec()
            }
            Err(source) => return Err(ImageMapError::Io { path, source }),
        };
        let stored: Stored =
            serde_json::from_slice(&bytes).map_err(|source| ImageMapError::Corrupt {
                path: path.clone(),
                source,
            })?;
        if stored.version != FORMAT_VERSION {
            return Err(ImageMapError::Version {
                path,
                found: stored.version,
            });
        }
        let inconsistent = |reason: String| ImageMapError::Inconsistent {
            path: path.clone(),
            reason,
        };
        // The snapshot must be consistent (it is written whole); the
        // journal's records then apply one by one.
        let mut keyed = BTreeMap::new();
        let mut ips = HashSet::new();
        for c in stored.clients {
            let Some(key) = ClientKey::of(&c) else {
                return Err(inconsistent("a client with neither MAC nor IP".into()));
            };
            if keyed.contains_key(&key) {
                let what = match key {
                    ClientKey::Mac(m) => format!("MAC {}", fmt_mac(&m)),
                    ClientKey::Ip(ip) => format!("IP {ip}"),
                };
                return Err(inconsistent(format!("{what} twice")));
            }
            if let Some(ip) = c.ip {
                if !ips.insert(ip) {
                    return Err(inconsistent(format!("IP {ip} twice")));
                }
            }
            keyed.insert(key, c);
        }
        let jpath = dir.join(IMAGEMAP_JOURNAL);
        let replayed = journal::read::<ClientOp>(&jpath).map_err(|source| ImageMapError::Io {
            path: jpath.clone(),
            source,
        })?;
        if replayed.torn || replayed.bad > 0 {
            log::warn!(
                "{}: {} bad record(s){} dropped",
                jpath.display(),
                replayed.bad,
                if replayed.torn {
                    " and a torn tail"
                } else {
                    ""
                }
            );
        }
        for op in replayed.records {
            apply_op(&mut keyed, op);
        }
        let mut clients = settle_ips(keyed);
        // Replay in last-seen order so that the LRU order survives a restart.
        clients.sort_by_key(|c| c.last_seen);
        for mut c in clients {
            while c.files.len() > limits.max_files_per_client {
                evict_file(&mut c.files, &mut map.counters);
            }
            let id = map.insert(c);
            map.touch(id);
        }
        // A map saved under larger bounds: keep the most recently seen.
        while map.clients.len() > limits.max_clients.max(1) {
            let Some((_, victim)) = map.lru.pop_first() else {
                break;
            };
            map.remove(victim);
            map.counters.clients_evicted += 1;
        }
        map.clear_dirty();
        Ok(map)
    }

    /// Writes the whole map to `<dir>/imagemap.json` atomically (a
    /// temporary file, fsync, rename, fsync of the directory) and empties
    /// the journal, on the calling thread. For a map without a writer
    /// (tests, tools); an attached map persists with [`ImageMap::persist`].
    pub fn save(&mut self) -> Result<(), ImageMapError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ImageMapError::Io { path, source }
        };
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let bytes = snapshot_bytes(self.clients.values());
        journal::write_atomic(&self.dir, IMAGEMAP_FILE, &bytes)
            .map_err(io_err(&self.dir.join(IMAGEMAP_FILE)))?;
        let jpath = self.dir.join(IMAGEMAP_JOURNAL);
        match fs::remove_file(&jpath) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&jpath)(e)),
            _ => {}
        }
        self.clear_dirty();
        Ok(())
    }

    /// Persists through the cache's writer thread from now on: the whole
    /// map is queued once as its new snapshot (waiting for room in the
    /// queue: call it when opening the cache, before serving).
    pub fn attach(&mut self, writer: WriterHandle) {
        writer.send_blocking(Job::ClientSnapshot(
            self.clients.values().cloned().collect(),
        ));
        self.clear_dirty();
        self.writer = Some(writer);
    }

    /// Queues what changed since the last call to the writer (one record
    /// per changed or removed client), never waiting: when the writer's
    /// queue is full the changes stay for the next call (counted as
    /// deferred by the writer). Without a writer, saves the whole map
    /// ([`ImageMap::save`]).
    pub fn persist(&mut self) -> Result<(), ImageMapError> {
        let Some(w) = &self.writer else {
            return if self.is_dirty() { self.save() } else { Ok(()) };
        };
        if !self.is_dirty() {
            return Ok(());
        }
        let job = if self.rewrite {
            Job::ClientSnapshot(self.clients.values().cloned().collect())
        } else {
            let dels = self.removed.iter().map(|&key| ClientOp::Del { key });
            let puts = self
                .changed
                .iter()
                .filter_map(|id| self.clients.get(id))
                .map(|c| ClientOp::Put { client: c.clone() });
            Job::Clients(dels.chain(puts).collect())
        };
        if w.try_send(job) {
            self.clear_dirty();
        }
        Ok(())
    }

    fn clear_dirty(&mut self) {
        self.changed.clear();
        self.removed.clear();
        self.rewrite = false;
    }

    /// The directory the map saves into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the map changed since it was loaded or last persisted.
    pub fn is_dirty(&self) -> bool {
        self.rewrite || !self.changed.is_empty() || !self.removed.is_empty()
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        let HandlerCounters {
            messages,
            malformed,
            ignored,
            pending_evicted,
        } = self.handler.counters();
        Counters {
            messages_seen: messages,
            malformed,
            ignored,
            pending_offers_evicted: pending_evicted,
            clients: self.clients.len() as u64,
            ..self.counters
        }
    }

    /// Every client, in first-seen order.
    pub fn clients(&self) -> impl Iterator<Item = &ClientRecord> {
        self.clients.values()
    }

    /// The client that holds `ip`.
    pub fn client_by_ip(&self, ip: Ipv4Addr) -> Option<&ClientRecord> {
        self.by_ip.get(&ip).and_then(|id| self.clients.get(id))
    }

    /// The client with this MAC.
    pub fn client_by_mac(&self, mac: [u8; 6]) -> Option<&ClientRecord> {
        self.by_mac.get(&mac).and_then(|id| self.clients.get(id))
    }

    /// Learns from one DHCP/BOOTP/PXE message: the UDP `payload` sent from
    /// `src` to `dst` in a frame from `src_mac`, seen at `wall`. Malformed
    /// messages are counted and change nothing.
    pub fn handle_dhcp(
        &mut self,
        wall: SystemTime,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        src_mac: [u8; 6],
        payload: &[u8],
    ) {
        if let Some(l) = self.handler.handle(src, dst, src_mac, payload) {
            self.learn(wall, l);
        }
    }

    /// Records a TFTP RRQ for `filename` from `client_ip` to `server`. The
    /// client is the one holding `client_ip`; else the one with the frame's
    /// `client_mac`, if it has no IP yet (a MAC whose record holds another IP
    /// may be a router's, so it is not trusted); else a new IP-only record.
    pub fn record_file(
        &mut self,
        wall: SystemTime,
        client_ip: Ipv4Addr,
        client_mac: Option<[u8; 6]>,
        server: Ipv4Addr,
        filename: &str,
    ) {
        self.record_file_from(
            wall,
            client_ip,
            client_mac,
            server,
            filename,
            ServedFrom::Origin,
        );
    }

    /// [`ImageMap::record_file`] for a request answered by `from` (the
    /// origin, or bootcache from its cache).
    pub fn record_file_from(
        &mut self,
        wall: SystemTime,
        client_ip: Ipv4Addr,
        client_mac: Option<[u8; 6]>,
        server: Ipv4Addr,
        filename: &str,
        from: ServedFrom,
    ) {
        if filename.len() > MAX_NAME_LEN {
            self.counters.names_too_long += 1;
            log::debug!(
                "imagemap: RRQ name of {} bytes not recorded",
                filename.len()
            );
            return;
        }
        let by_mac = client_mac
            .and_then(|m| self.by_mac.get(&m).copied())
            .filter(|id| self.clients.get(id).is_some_and(|c| c.ip.is_none()));
        let id = match self.by_ip.get(&client_ip).copied().or(by_mac) {
            Some(id) => id,
            None => self.create(None, wall),
        };
        self.assign_ip(id, client_ip);
        self.touch(id);
        self.counters.files_recorded += 1;
        let max_files = self.limits.max_files_per_client;
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        c.last_seen = wall;
        if let Some(f) = c
            .files
            .iter_mut()
            .find(|f| f.server == server && f.name == filename)
        {
            f.last_requested = wall;
            f.times_requested += 1;
            f.served_from = from;
        } else {
            if max_files == 0 {
                self.counters.files_evicted += 1;
                return;
            }
            while c.files.len() >= max_files {
                evict_file(&mut c.files, &mut self.counters);
            }
            c.files.push(FileRecord {
                server,
                name: filename.to_owned(),
                first_requested: wall,
                last_requested: wall,
                times_requested: 1,
                served_from: from,
            });
        }
        self.mark_dirty(id);
    }

    /// `id`'s record changed: persisted at the next [`ImageMap::persist`].
    fn mark_dirty(&mut self, id: Id) {
        self.changed.insert(id);
    }

    /// Folds one message's facts into the client's record.
    fn learn(&mut self, wall: SystemTime, l: Learned) {
        let id = match self.by_mac.get(&l.mac) {
            Some(&id) => id,
            None => self.create(Some(l.mac), wall),
        };
        if let Some(ip) = l.ip {
            self.assign_ip(id, ip);
        }
        self.touch(id);
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        c.last_seen = wall;
        if l.from_client {
            c.uuid = l.uuid.or(c.uuid);
            c.arch = l.arch.or(c.arch);
            c.pxe_class = l.pxe_class.or(c.pxe_class);
            if l.vendor_class.is_some() {
                c.vendor_class = l.vendor_class;
            }
            // The latest request says which stage (ROM, iPXE, ...) is asking.
            c.user_class = l.user_class;
        }
        c.boot_item = l.boot_item.or(c.boot_item);
        if let Some(d) = l.boot {
            told(c, d, wall, &mut self.counters);
        }
        self.mark_dirty(id);
    }

    fn create(&mut self, mac: Option<[u8; 6]>, wall: SystemTime) -> Id {
        if self.clients.len() >= self.limits.max_clients.max(1) {
            if let Some((_, victim)) = self.lru.pop_first() {
                self.remove(victim);
                self.counters.clients_evicted += 1;
                log::debug!("imagemap: client bound reached, evicted the least recently seen");
            }
        }
        let id = self.insert(ClientRecord::new(mac, wall));
        self.touch(id);
        id
    }

    /// Adds a record and indexes it (the caller checked for duplicates).
    fn insert(&mut self, c: ClientRecord) -> Id {
        let id = self.next_id;
        self.next_id += 1;
        if let Some(mac) = c.mac {
            self.by_mac.insert(mac, id);
        }
        if let Some(ip) = c.ip {
            self.by_ip.insert(ip, id);
        }
        self.clients.insert(id, c);
        self.mark_dirty(id);
        id
    }

    fn remove(&mut self, id: Id) -> Option<ClientRecord> {
        let c = self.clients.remove(&id)?;
        if let Some(mac) = c.mac {
            self.by_mac.remove(&mac);
        }
        if let Some(ip) = c.ip {
            self.by_ip.remove(&ip);
        }
        if let Some(seq) = self.seq_of.remove(&id) {
            self.lru.remove(&seq);
        }
        self.changed.remove(&id);
        if let Some(key) = ClientKey::of(&c) {
            // Bounded: past one removal per client the map is sent whole.
            if self.removed.len() >= self.limits.max_clients.max(1) {
                self.rewrite = true;
                self.removed.clear();
            }
            if !self.rewrite {
                self.removed.insert(key);
            }
        }
        Some(c)
    }

    /// Marks `id` most recently seen.
    fn touch(&mut self, id: Id) {
        if let Some(old) = self.seq_of.insert(id, self.next_seq) {
            self.lru.remove(&old);
        }
        self.lru.insert(self.next_seq, id);
        self.next_seq += 1;
    }

    /// Gives `ip` to `id`. An IP-only record holding it is the same client
    /// seen before its DHCP: merged into `id`. A record with a MAC holding
    /// it had the address before (leases move): it loses it.
    fn assign_ip(&mut self, id: Id, ip: Ipv4Addr) {
        match self.by_ip.get(&ip).copied() {
            Some(holder) if holder == id => return,
            Some(holder) => {
                let ip_only = self.clients.get(&holder).is_some_and(|c| c.mac.is_none());
                if ip_only {
                    if let Some(old) = self.remove(holder) {
                        self.merge(id, old);
                    }
                } else if let Some(h) = self.clients.get_mut(&holder) {
                    h.ip = None;
                    self.by_ip.remove(&ip);
                    self.mark_dirty(holder);
                }
            }
            None => {}
        }
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        if let Some(old) = c.ip.replace(ip) {
            self.by_ip.remove(&old);
        }
        self.by_ip.insert(ip, id);
        self.mark_dirty(id);
    }

    /// Moves an IP-only record's history into `id`.
    fn merge(&mut self, id: Id, old: ClientRecord) {
        let max_files = self.limits.max_files_per_client;
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        c.first_seen = c.first_seen.min(old.first_seen);
        c.last_seen = c.last_seen.max(old.last_seen);
        for f in old.files {
            match c
                .files
                .iter_mut()
                .find(|g| g.server == f.server && g.name == f.name)
            {
                Some(g) => {
                    g.first_requested = g.first_requested.min(f.first_requested);
                    g.last_requested = g.last_requested.max(f.last_requested);
                    g.times_requested += f.times_requested;
                }
                None => c.files.push(f),
            }
        }
        while c.files.len() > max_files {
            evict_file(&mut c.files, &mut self.counters);
        }
    }
}

/// Drops the least recently requested file (the first of equals).
fn evict_file(files: &mut Vec<FileRecord>, counters: &mut Counters) {
    if let Some(i) = (0..files.len()).min_by_key(|&i| files[i].last_requested) {
        files.remove(i);
        counters.files_evicted += 1;
    }
}

/// Records that `c` was told `d`.
fn told(c: &mut ClientRecord, d: BootDirective, wall: SystemTime, counters: &mut Counters) {
    let user_class = c.user_class.clone();
    if let Some(b) = c
        .boot
        .iter_mut()
        .find(|b| b.file == d.file && b.server == d.server && b.user_class == user_class)
    {
        b.last_told = wall;
        b.times_told += 1;
        b.via = d.via;
        b.server_name = d.server_name;
        return;
    }
    if c.boot.len() >= MAX_BOOT_DIRECTIVES {
        if let Some(i) = (0..c.boot.len()).min_by_key(|&i| c.boot[i].last_told) {
            c.boot.remove(i);
            counters.boot_evicted += 1;
        }
    }
    c.boot.push(BootRecord {
        file: d.file,
        server: d.server,
        server_name: d.server_name,
        via: d.via,
        user_class,
        first_told: wall,
        last_told: wall,
        times_told: 1,
    });
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// The UUID's bytes in wire order, grouped 4-2-2-2-6.
pub fn fmt_uuid(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parses `N` hex bytes, ignoring the separators `:` and `-`.
fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let digits: Vec<u8> = s.bytes().filter(|b| !matches!(b, b':' | b'-')).collect();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let hex = std::str::from_utf8(pair).ok()?;
        *o = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

/// Serde for `Option<[u8; 6]>` as `"aa:bb:cc:dd:ee:ff"`.
mod mac_opt {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<[u8; 6]>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(m) => s.serialize_some(&super::fmt_mac(m)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<[u8; 6]>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| super::parse_hex(&s).ok_or_else(|| D::Error::custom("bad MAC address")))
            .transpose()
    }
}

/// Serde for `[u8; 6]` as "aa:bb:cc:dd:ee:ff".
mod mac_hex {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(m: &[u8; 6], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::fmt_mac(m))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 6], D::Error> {
        let s = String::deserialize(d)?;
        super::parse_hex(&s).ok_or_else(|| D::Error::custom("bad MAC address"))
    }
}

/// Serde for `Option<[u8; 16]>` as a UUID string.
mod uuid_opt {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<[u8; 16]>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(u) => s.serialize_some(&super::fmt_uuid(u)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<[u8; 16]>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| super::parse_hex(&s).ok_or_else(|| D::Error::custom("bad UUID")))
            .transpose()
    }
}

/// A hostile name made safe to print on one line: control characters,
/// quotes, backslashes and non-printing Unicode escaped (`\n`, `\u{1b}`).
pub fn escape_name(name: &str) -> String {
    name.escape_debug().collect()
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC), or the offset from the epoch for times
/// before it.
pub fn fmt_time(t: SystemTime) -> String {
    let Ok(d) = t.duration_since(UNIX_EPOCH) else {
        return "before-1970".to_owned();
    };
    let secs = d.as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    // Days to civil date (H. Hinnant's algorithm), for days ≥ 0.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A name for an RFC 4578 architecture type.
fn arch_name(arch: u16) -> &'static str {
    match arch {
        0 => "x86 BIOS",
        6 => "x86 UEFI",
        7 | 9 => "x64 UEFI",
        10 => "ARM32 UEFI",
        11 => "ARM64 UEFI",
        16 => "x64 UEFI HTTP",
        19 => "ARM64 UEFI HTTP",
        _ => "other",
    }
}

/// The operator view of the image map (`bootcache cache ls`): per client its
/// MAC, IP, UUID, architecture and classes, the boot files it was told, and
/// a table of the files it requested. Names are escaped.
pub fn render_listing(map: &ImageMap) -> String {
    let mut out = String::new();
    let c = map.counters();
    let _ = writeln!(out, "image map: {} clients", c.clients);
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    for client in map.clients() {
        let _ = writeln!(
            out,
            "\nclient {}  ip {}  uuid {}",
            opt(client.mac.as_ref().map(fmt_mac)),
            opt(client.ip.map(|i| i.to_string())),
            opt(client.uuid.as_ref().map(fmt_uuid)),
        );
        let _ = writeln!(
            out,
            "  arch {}  class {}  user class {}",
            opt(client.arch.map(|a| format!("{a} ({})", arch_name(a)))),
            opt(client
                .vendor_class
                .as_deref()
                .map(|v| format!("\"{}\"", escape_name(v)))),
            opt(client
                .user_class
                .as_deref()
                .map(|v| format!("\"{}\"", escape_name(v)))),
        );
        let _ = writeln!(
            out,
            "  seen {} .. {}",
            fmt_time(client.first_seen),
            fmt_time(client.last_seen)
        );
        let nbp = client.nbp();
        for b in &client.boot {
            let current = if nbp == Some(b) { "*" } else { " " };
            let _ = writeln!(
                out,
                "  {current}told \"{}\" from {}{} via {}{}  x{} last {}",
                escape_name(&b.file),
                opt(b.server.map(|s| s.to_string())),
                b.server_name
                    .as_deref()
                    .map(|n| format!(" (\"{}\")", escape_name(n)))
                    .unwrap_or_default(),
                b.via.as_str(),
                b.user_class
                    .as_deref()
                    .map(|u| format!(" to \"{}\"", escape_name(u)))
                    .unwrap_or_default(),
                b.times_told,
                fmt_time(b.last_told),
            );
        }
        if client.files.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "  {:<15} {:>6}  {:<20}  {:<20}  {:<6}  FILE",
            "SERVER", "TIMES", "FIRST", "LAST", "FROM"
        );
        for f in &client.files {
            let _ = writeln!(
                out,
                "  {:<15} {:>6}  {:<20}  {:<20}  {:<6}  {}",
                f.server.to_string(),
                f.times_requested,
                fmt_time(f.first_requested),
                fmt_time(f.last_requested),
                f.served_from.as_str(),
                escape_name(&f.name),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::captures::{datagrams, message, PROXY_4011, PXE};
    use proptest::prelude::*;
    use std::time::Duration;

    const CLIENT: [u8; 6] = [2, 0x77, 0, 0, 0, 2];
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    fn addr(a: [u8; 4], port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(a.into(), port)
    }

    fn replay(map: &mut ImageMap, pcap: &[u8], at: u64) {
        for (i, d) in datagrams(pcap).iter().enumerate() {
            map.handle_dhcp(t(at + i as u64), d.src, d.dst, d.src_mac, &d.payload);
        }
    }

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn captured_pxe_dhcp_makes_a_client_record() {
        let dir = tmp();
        let mut map = ImageMap::new(dir.path(), Limits::default());
        replay(&mut map, PXE, 0);
        let c = map.client_by_mac(CLIENT).expect("the client");
        let ip = c.ip.expect("the ACK's address");
        assert_eq!(ip.octets()[..3], [10, 77, 0]);
        assert_eq!(map.client_by_ip(ip), Some(c));
        assert_eq!(c.uuid, Some(core::array::from_fn(|i| 0x10 + i as u8)));
        assert_eq!(c.arch, Some(0));
        assert_eq!(
            c.vendor_class.as_deref(),
            Some("PXEClient:Arch:00000:UNDI:002001")
        );
        assert_eq!(c.user_class.as_deref(), Some("iPXE"));
        let nbp = c.nbp().expect("told a boot file");
        assert_eq!(nbp.file, "pxelinux.0");
        assert_eq!(nbp.server, Some(SERVER));
        assert_eq!(nbp.server_name.as_deref(), Some("bootsrv"));
        assert_eq!(nbp.via, BootVia::Dhcp);
        assert_eq!(nbp.user_class.as_deref(), Some("iPXE"));
        assert_eq!(c.boot.len(), 1, "the OFFER's file is not counted twice");
        assert_eq!((c.first_seen, c.last_seen), (t(0), t(3)));
        let n = map.counters();
        assert_eq!((n.messages_seen, n.malformed, n.clients), (4, 0, 1));
        assert!(map.is_dirty());
    }

    #[test]
    fn captured_proxy_dhcp_and_4011_make_a_client_record() {
        let dir = tmp();
        let mut map = ImageMap::new(dir.path(), Limits::default());
        replay(&mut map, PROXY_4011, 0);
        assert_eq!(map.clients().count(), 1);
        let c = map.client_by_ip(Ipv4Addr::new(10, 77, 0, 2)).unwrap();
        assert_eq!(c.mac, Some(CLIENT));
        assert_eq!(c.arch, Some(0));
        assert_eq!(c.user_class, None);
        assert!(c.boot_item.is_some());
        let nbp = c.nbp().unwrap();
        assert_eq!(
            (nbp.file.as_str(), nbp.server, nbp.via),
            ("pxelinux.0", Some(SERVER), BootVia::BootService)
        );
    }

    /// A client's whole boot, built by hand: DHCP with a proxyDHCP server
    /// alongside, boot server discovery on 4011, then TFTP.
    fn full_flow(map: &mut ImageMap, mac: [u8; 6], ip: [u8; 4], at: u64) {
        let xid = u32::from_be_bytes(ip);
        let vendor = b"PXEClient:Arch:00007:UNDI:003016";
        let mut client_opts = vec![93, 2, 0, 7, 97, 17, 0];
        client_opts.extend_from_slice(&[mac[5]; 16]);
        client_opts.extend_from_slice(&[60, vendor.len() as u8]);
        client_opts.extend_from_slice(vendor);
        let with = |mut o: Vec<u8>, more: &[u8]| {
            o.extend_from_slice(more);
            o
        };
        let (dhcp, proxy, boot) = ([10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 3]);
        let bcast = addr([255; 4], 67);
        let from = addr([0; 4], 68);
        let to_client = addr([255; 4], 68);
        let discover = message(1, xid, mac, &with(vec![53, 1, 1], &client_opts));
        map.handle_dhcp(t(at), from, bcast, mac, &discover);
        let mut offer = message(2, xid, mac, &[53, 1, 2, 54, 4, 10, 0, 0, 1]);
        offer[16..20].copy_from_slice(&ip);
        map.handle_dhcp(t(at), addr(dhcp, 67), to_client, [0xaa; 6], &offer);
        // proxyDHCP: no address; PXE class; a menu but no file.
        let proxy_opts = [
            53, 1, 2, 54, 4, 10, 0, 0, 2, 60, 9, b'P', b'X', b'E', b'C', b'l', b'i', b'e', b'n',
            b't', 43, 10, 6, 1, 3, 71, 4, 0x80, 0, 0, 0, 255,
        ];
        let proxy_offer = message(2, xid, mac, &proxy_opts);
        map.handle_dhcp(t(at), addr(proxy, 67), to_client, [0xbb; 6], &proxy_offer);
        let request = message(
            1,
            xid,
            mac,
            &with(vec![53, 1, 3, 54, 4, 10, 0, 0, 1], &client_opts),
        );
        map.handle_dhcp(t(at + 1), from, bcast, mac, &request);
        let mut ack = message(2, xid, mac, &[53, 1, 5, 54, 4, 10, 0, 0, 1]);
        ack[16..20].copy_from_slice(&ip);
        map.handle_dhcp(t(at + 1), addr(dhcp, 67), to_client, [0xaa; 6], &ack);
        // Boot server discovery: REQUEST with 43/71 to 4011, ACK with the NBP.
        let item = [43, 7, 71, 4, 0x80, 0, 0, 0, 255];
        let mut req4011 = message(
            1,
            xid + 1,
            mac,
            &with(with(vec![53, 1, 3], &item), &client_opts),
        );
        req4011[12..16].copy_from_slice(&ip);
        map.handle_dhcp(t(at + 2), addr(ip, 68), addr(boot, 4011), mac, &req4011);
        let mut ack4011 = message(
            2,
            xid + 1,
            mac,
            &with(vec![53, 1, 5, 60, 9], &b"PXEClient"[..])
                .into_iter()
                .chain(item)
                .collect::<Vec<_>>(),
        );
        ack4011[108..108 + 14].copy_from_slice(b"efi/bootx64.ef");
        map.handle_dhcp(
            t(at + 2),
            addr(boot, 4011),
            addr(ip, 68),
            [0xcc; 6],
            &ack4011,
        );
        // TFTP: the NBP, then the kernel and initrd it loads.
        let ip = Ipv4Addr::from(ip);
        let boot = Ipv4Addr::from(boot);
        map.record_file(t(at + 3), ip, Some(mac), boot, "efi/bootx64.ef");
        map.record_file(t(at + 4), ip, Some(mac), boot, "vmlinuz");
        map.record_file(t(at + 5), ip, Some(mac), boot, "initrd.img");
        // A UEFI size probe asks for the kernel twice.
        map.record_file(t(at + 6), ip, Some(mac), boot, "vmlinuz");
    }

    #[test]
    fn synthetic_boot_names_the_clients_files() {
        let dir = tmp();
        let mut map = ImageMap::new(dir.path(), Limits::default());
        let mac = [2, 0, 0, 0, 0, 0x42];
        full_flow(&mut map, mac, [10, 0, 0, 50], 0);
        assert_eq!(map.counters().malformed, 0);
        assert_eq!(map.clients().count(), 1);
        let c = map.client_by_ip(Ipv4Addr::new(10, 0, 0, 50)).unwrap();
        assert_eq!(c.mac, Some(mac));
        assert_eq!(c.uuid, Some([0x42; 16]));
        assert_eq!(c.arch, Some(7));
        assert_eq!(c.boot_item, Some((0x8000, 0)));
        let nbp = c.nbp().unwrap();
        assert_eq!(nbp.file, "efi/bootx64.ef");
        assert_eq!(
            nbp.server,
            Some(Ipv4Addr::new(10, 0, 0, 3)),
            "the 4011 server"
        );
        assert_eq!(nbp.via, BootVia::BootService);
        let names: Vec<_> = c.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["efi/bootx64.ef", "vmlinuz", "initrd.img"]);
        let k = c.file(Ipv4Addr::new(10, 0, 0, 3), "vmlinuz").unwrap();
        assert_eq!(
            (k.times_requested, k.first_requested, k.last_requested),
            (2, t(4), t(6))
        );
        assert_eq!(k.served_from, ServedFrom::Origin);
        assert_eq!(map.counters().files_recorded, 4);

        let listing = render_listing(&map);
        assert!(listing.contains("client 02:00:00:00:00:42  ip 10.0.0.50"));
        assert!(listing.contains("arch 7 (x64 UEFI)"));
        assert!(listing.contains("*told \"efi/bootx64.ef\" from 10.0.0.3 via bootservice"));
        let kernel = listing.lines().find(|l| l.ends_with("vmlinuz")).unwrap();
        assert!(kernel.contains("10.0.0.3"));
        assert!(kernel.contains("      2  2023-11-14T22:13:24Z  2023-11-14T22:13:26Z  origin"));
    }

    #[test]
    fn save_load_round_trip() {
        let dir = tmp();
        let mut map = ImageMap::new(dir.path(), Limits::default());
        replay(&mut map, PXE, 0);
        full_flow(&mut map, [2, 0, 0, 0, 0, 7], [10, 0, 0, 7], 10);
        map.record_file(t(30), Ipv4Addr::new(10, 9, 9, 9), None, SERVER, "ipxe.efi");
        assert!(map.is_dirty());
        map.save().unwrap();
        assert!(!map.is_dirty());
        let mut loaded = ImageMap::load(dir.path()).unwrap();
        assert!(!loaded.is_dirty());
        let a: Vec<_> = map.clients().collect();
        let mut b: Vec<_> = loaded.clients().collect();
        // Load replays in last-seen order; compare as sets.
        b.sort_by_key(|c| a.iter().position(|x| x == c));
        assert_eq!(a, b);
        for c in map.clients() {
            if let Some(ip) = c.ip {
                assert_eq!(loaded.client_by_ip(ip), Some(c));
            }
            if let Some(mac) = c.mac {
                assert_eq!(loaded.client_by_mac(mac), Some(c));
            }
        }
        // Readable on disk, and nothing else left behind.
        let json = fs::read_to_string(dir.path().join(IMAGEMAP_FILE)).unwrap();
        assert!(json.contains("\"02:77:00:00:00:02\""));
        assert!(json.contains("\"10111213-1415-1617-1819-1a1b1c1d1e1f\""));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [IMAGEMAP_FILE]);
        // Saving again over the old file works.
        loaded.save().unwrap();
        assert_eq!(ImageMap::load(dir.path()).unwrap().clients().count(), 3);
    }

    #[test]
    fn missing_file_is_an_empty_map() {
        let dir = tmp();
        let mut map = ImageMap::load(&dir.path().join("not-yet")).unwrap();
        assert_eq!(map.clients().count(), 0);
        assert!(!map.is_dirty());
        // Saving creates the directory.
        map.save().unwrap();
        assert!(dir.path().join("not-yet").join(IMAGEMAP_FILE).exists());
    }

    #[test]
    fn corrupt_files_are_errors_that_name_the_file() {
        let dir = tmp();
        let path = dir.path().join(IMAGEMAP_FILE);
        let mac = r#"{"mac":"02:00:00:00:00:01","ip":null,"uuid":null,"arch":null,"pxe_class":null,"vendor_class":null,"user_class":null,"boot_item":null,"boot":[],"files":[],"first_seen":{"secs_since_epoch":1,"nanos_since_epoch":0},"last_seen":{"secs_since_epoch":1,"nanos_since_epoch":0}}"#;
        let cases = [
            ("{\"version\":1,\"clients\":[".to_owned(), "corrupt"),
            ("\0\0\0".to_owned(), "corrupt"),
            ("{\"version\":1}".to_owned(), "corrupt"),
            (
                format!(
                    "{{\"version\":1,\"clients\":[{}]}}",
                    mac.replace("02:00", "zz:00")
                ),
                "corrupt",
            ),
            ("{\"version\":2,\"clients\":[]}".to_owned(), "version 2"),
            (
                format!("{{\"version\":1,\"clients\":[{mac},{mac}]}}"),
                "MAC 02:00:00:00:00:01 twice",
            ),
            (
                format!(
                    "{{\"version\":1,\"clients\":[{}]}}",
                    mac.replace("\"02:00:00:00:00:01\"", "null")
                ),
                "neither MAC nor IP",
            ),
        ];
        for (text, what) in cases {
            fs::write(&path, &text).unwrap();
            let e = ImageMap::load(dir.path()).unwrap_err().to_string();
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(e.contains(what), "{text}: {e}");
        }
        fs::write(&path, format!("{{\"version\":1,\"clients\":[{mac}]}}")).unwrap();
        assert_eq!(ImageMap::load(dir.path()).unwrap().clients().count(), 1);
    }

    #[test]
    fn malformed_dhcp_is_counted_and_changes_nothing() {
        let dir = tmp();
        let mut map = ImageMap::new(dir.path(), Limits::default());
        let good = message(1, 1, [2, 0, 0, 0, 0, 1], &[53, 1, 1]);
        let mut bad_opt = good.clone();
        bad_opt.truncate(bad_opt.len() - 1);
        bad_opt.extend_from_slice(&[53, 9, 1]);
        let (c, s) = (addr([0; 4], 68), addr([255; 4], 67));
        for m in [&b""[..], &good[..239], &bad_opt] {
            map.handle_dhcp(t(0), c, s, [2; 6], m);
        }
        assert!(!map.is_dirty());
        assert_eq!(map.clients().count(), 0);
        let n = map.counters();
        assert_eq!((n.messages_seen, n.malformed, n.clients), (3, 3, 0));
        map.handle_dhcp(t(0), c, s, [2; 6], &good);
        assert!(map.is_dirty());
        assert_eq!(map.counters().clients, 1);
    }

    #[test]
    fn hostile_names_are_kept_as_given_and_printed_escaped() {
        let dir = tmp();
        let mut map = ImageMap::new(dir.path(), Limits::default());
        let ip = Ipv4Addr::new(10, 0, 0, 9);
        let names = [
            "../../etc/passwd",
            "/etc/shadow",
            "C:\\boot\\bcd",
            "nul\0inside",
            "line\nbreak\r\x1b[31mred",
            "\u{202e}gpj.exe",
            "imagemap.json",
            "",
        ];
        for n in names {
            map.record_file(t(0), ip, None, SERVER, n);
        }
        map.save().unwrap();
        let loaded = ImageMap::load(dir.path()).unwrap();
        let c = loaded.client_by_ip(ip).unwrap();
        let got: Vec<_> = c.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(got, names);
        // Only the map's own file in the directory: names are never paths.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let listing = render_listing(&loaded);
        assert!(!listing.contains(['\0', '\r', '\x1b', '\u{202e}']));
        assert!(listing.contains("nul\\0inside"));
        assert!(listing.contains("line\\nbreak\\r\\u{1b}[31mred"));
        assert!(listing.contains("C:\\\\boot\\\\bcd"));
        // One line per file, plus the six lines of the header.
        assert_eq!(listing.lines().count(), 6 + names.len());

        let long = "x".repeat(MAX_NAME_LEN + 1);
        map.record_file(t(1), ip, None, SERVER, &long);
        assert_eq!(map.counters().names_too_long, 1);
        assert_eq!(map.client_by_ip(ip).unwrap().files.len(), names.len());
    }

    /// The map's records as sorted JSON, to compare maps as sets.
    fn as_set(map: &ImageMap) -> Vec<String> {
        let mut v: Vec<String> = map
            .clients()
            .map(|c| serde_json::to_string(c).unwrap())
            .collect();
        v.sort();
        v
    }

    fn journal_lines(dir: &Path) -> usize {
        fs::read(dir.join(IMAGEMAP_JOURNAL))
            .map(|b| b.iter().filter(|&&x| x == b'\n').count())
            .unwrap_or(0)
    }

    /// Attached to the writer, the map persists one record per client that
    /// changed, not the whole map; a reload (snapshot, then journal)
    /// gives the same map, leases that moved included.
    #[test]
    fn journal_holds_one_record_per_changed_client() {
        let dir = tmp();
        let mut store = crate::filestore::Filestore::open(dir.path()).unwrap();
        let mut map = ImageMap::new(dir.path(), Limits::default());
        map.attach(store.writer());
        full_flow(&mut map, [2, 0, 0, 0, 0, 7], [10, 0, 0, 7], 10);
        full_flow(&mut map, [2, 0, 0, 0, 0, 8], [10, 0, 0, 8], 20);
        map.record_file(t(30), Ipv4Addr::new(10, 9, 9, 9), None, SERVER, "ipxe.efi");
        assert!(map.is_dirty());
        map.persist().unwrap();
        assert!(!map.is_dirty());
        store.sync();
        assert_eq!(journal_lines(dir.path()), 3);
        // The lease of 10.0.0.7 moves to a new client: two records (the new
        // client, the one that lost the address), not three.
        full_flow(&mut map, [2, 0, 0, 0, 0, 9], [10, 0, 0, 7], 40);
        map.persist().unwrap();
        store.sync();
        assert_eq!(journal_lines(dir.path()), 5);
        let loaded = ImageMap::load(dir.path()).unwrap();
        assert_eq!(as_set(&loaded), as_set(&map));
        let holder = loaded.client_by_ip(Ipv4Addr::new(10, 0, 0, 7)).unwrap();
        assert_eq!(holder.mac, Some([2, 0, 0, 0, 0, 9]));
        // Nothing changed: nothing written.
        map.persist().unwrap();
        store.sync();
        assert_eq!(journal_lines(dir.path()), 5);
    }

    /// A torn last record and a damaged one are dropped; the others load.
    /// Evictions are records too (removals).
    #[test]
    fn torn_or_damaged_client_records_are_dropped_and_removals_replay() {
        let dir = tmp();
        let mut store = crate::filestore::Filestore::open(dir.path()).unwrap();
        let limits = Limits {
            max_clients: 2,
            ..Limits::default()
        };
        let mut map = ImageMap::new(dir.path(), limits);
        map.attach(store.writer());
        for i in 1..=3u8 {
            map.record_file(
                t(u64::from(i)),
                Ipv4Addr::new(10, 1, 0, i),
                None,
                SERVER,
                "a",
            );
            map.persist().unwrap();
        }
        store.sync();
        drop(store);
        let want = as_set(&map);
        assert_eq!(want.len(), 2, "the first client was evicted");
        let loaded = ImageMap::load_with(dir.path(), limits).unwrap();
        assert_eq!(as_set(&loaded), want);
        let j = dir.path().join(IMAGEMAP_JOURNAL);
        let mut bytes = fs::read(&j).unwrap();
        bytes.extend_from_slice(b"{\"op\":\"del\"}\tffffffffffffffff\n");
        let mut put = Vec::new();
        let extra = ClientRecord::new(Some([2, 0, 0, 0, 0, 1]), t(9));
        journal::encode(&ClientOp::Put { client: extra }, &mut put);
        bytes.extend_from_slice(&put[..put.len() - 3]);
        fs::write(&j, bytes).unwrap();
        let loaded = ImageMap::load_with(dir.path(), limits).unwrap();
        assert_eq!(as_set(&loaded), want);
    }

    /// The writer folds the image map's journal into imagemap.json once it
    /// holds more than COMPACT_FACTOR records per client (at least
    /// COMPACT_MIN): a busy client does not grow it without end.
    #[test]
    fn client_journal_is_compacted() {
        use crate::writer::COMPACT_MIN;
        let dir = tmp();
        let mut store = crate::filestore::Filestore::open(dir.path()).unwrap();
        let mut map = ImageMap::new(dir.path(), Limits::default());
        map.attach(store.writer());
        let before = {
            store.sync();
            store.persist_counters().compactions
        };
        for i in 0..COMPACT_MIN + 10 {
            map.record_file(t(i), Ipv4Addr::new(10, 1, 0, 1), None, SERVER, "a");
            map.persist().unwrap();
            // One job each (a full queue would fold changes together).
            store.sync();
        }
        assert_eq!(store.persist_counters().compactions, before + 1);
        assert!(journal_lines(dir.path()) < 20);
        let loaded = ImageMap::load(dir.path()).unwrap();
        assert_eq!(as_set(&loaded), as_set(&map));
        let c = loaded.client_by_ip(Ipv4Addr::new(10, 1, 0, 1)).unwrap();
        assert_eq!(c.files[0].times_requested, COMPACT_MIN + 10);
    }

    /// An image map as earlier versions saved it (pretty JSON, no journal)
    /// loads as the snapshot.
    #[test]
    fn old_pretty_snapshot_loads() {
        let dir = tmp();
        let mut map = ImageMap::new(dir.path(), Limits::default());
        full_flow(&mut map, [2, 0, 0, 0, 0, 7], [10, 0, 0, 7], 10);
        let old = serde_json::json!({ "version": 1, "clients": map.clients().collect::<Vec<_>>() });
        fs::write(
            dir.path().join(IMAGEMAP_FILE),
            serde_json::to_vec_pretty(&old).unwrap(),
        )
        .unwrap();
        assert_eq!(as_set(&ImageMap::load(dir.path()).unwrap()), as_set(&map));
    }

    #[test]
    fn clients_are_bounded_least_recently_seen_evicted() {
        let dir = tmp();
        let limits = Limits {
            max_clients: 3,
            max_files_per_client: 256,
        };
        let mut map = ImageMap::new(dir.path(), limits);
        let ip = |i: u8| Ipv4Addr::new(10, 0, 0, i);
        for i in 1..=3 {
            map.record_file(t(u64::from(i)), ip(i), None, SERVER, "a");
        }
        // Client 1 is seen again, so client 2 is now the least recent.
        map.record_file(t(4), ip(1), None, SERVER, "b");
        map.record_file(t(5), ip(4), None, SERVER, "a");
        map.record_file(t(6), ip(5), None, SERVER, "a");
        let mut left: Vec<_> = map.clients().map(|c| c.ip.unwrap()).collect();
        left.sort();
        assert_eq!(left, [ip(1), ip(4), ip(5)]);
        assert_eq!(map.client_by_ip(ip(2)), None);
        let n = map.counters();
        assert_eq!((n.clients, n.clients_evicted), (3, 2));

        // A map saved under larger bounds keeps its most recent clients.
        map.save().unwrap();
        let smaller = Limits {
            max_clients: 2,
            max_files_per_client: 1,
        };
        let loaded = ImageMap::load_with(dir.path(), smaller).unwrap();
        let mut left: Vec<_> = loaded.clients().map(|c| c.ip.unwrap()).collect();
        left.sort();
        assert_eq!(left, [ip(4), ip(5)]);
        assert_eq!(loaded.counters().clients_evicted, 1);
    }

    #[test]
    fn files_are_bounded_least_recently_requested_evicted() {
        let dir = tmp();
        let limits = Limits {
            max_clients: 10,
            max_files_per_client: 2,
        };
        let mut map = ImageMap::new(dir.path(), limits);
        let ip = Ipv4Addr::new(10, 0, 0, 1);
        map.record_file(t(1), ip, None, SERVER, "nbp");
        map.record_file(t(2), ip, None, SERVER, "kernel");
        map.record_file(t(3), ip, None, SERVER, "nbp");
        map.record_file(t(4), ip, None, SERVER, "initrd");
        let c = map.client_by_ip(ip).unwrap();
        let names: Vec<_> = c.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["nbp", "initrd"]);
        assert_eq!(map.counters().files_evicted, 1);
        // Same name from another server is another file.
        map.record_file(t(5), ip, None, Ipv4Addr::new(10, 0, 0, 99), "initrd");
        let c = map.client_by_ip(ip).unwrap();
        assert_eq!(c.files.len(), 2);
        assert_eq!(c.files.iter().filter(|f| f.name == "initrd").count(), 2);
    }

    #[test]
    fn ip_only_records_merge_and_leases_move() {
        let dir = tmp();
        let mut map = ImageMap::new(dir.path(), Limits::default());
        let ip = [10, 0, 0, 50];
        // TFTP seen before any DHCP (e.g. bootcache started mid-boot).
        map.record_file(t(0), ip.into(), Some([0xee; 6]), SERVER, "vmlinuz");
        assert_eq!(map.client_by_ip(ip.into()).unwrap().mac, None);
        let mac = [2, 0, 0, 0, 0, 0x50];
        full_flow(&mut map, mac, ip, 10);
        assert_eq!(map.clients().count(), 1, "merged into the MAC's record");
        let c = map.client_by_mac(mac).unwrap();
        assert_eq!(c.first_seen, t(0));
        assert_eq!(
            c.file(Ipv4Addr::new(10, 0, 0, 3), "vmlinuz")
                .unwrap()
                .times_requested,
            2
        );
        assert_eq!(c.file(SERVER, "vmlinuz").unwrap().times_requested, 1);

        // The lease moves to another client: the first loses the address.
        let other = [2, 0, 0, 0, 0, 0x51];
        full_flow(&mut map, other, ip, 20);
        assert_eq!(map.client_by_ip(ip.into()).unwrap().mac, Some(other));
        assert_eq!(map.client_by_mac(mac).unwrap().ip, None);

        // A TFTP frame from a MAC whose record holds another IP (a router)
        // does not land on that record.
        map.record_file(
            t(30),
            Ipv4Addr::new(192, 168, 1, 5),
            Some(other),
            SERVER,
            "x",
        );
        let routed = map.client_by_ip(Ipv4Addr::new(192, 168, 1, 5)).unwrap();
        assert_eq!(routed.mac, None);
        // A known MAC without an IP yet takes the RRQ's address.
        map.record_file(t(31), Ipv4Addr::new(10, 0, 0, 60), Some(mac), SERVER, "y");
        assert_eq!(
            map.client_by_mac(mac).unwrap().ip,
            Some(Ipv4Addr::new(10, 0, 0, 60))
        );
    }

    #[test]
    fn proxy_offer_file_and_dhcp_ack_address_meet_in_one_record() {
        let dir = tmp();
        let mut map = ImageMap::new(dir.path(), Limits::default());
        let mac = [2, 0, 0, 0, 0, 0x33];
        let to_client = addr([255; 4], 68);
        // proxyDHCP OFFER: no yiaddr, PXEClient, a file and a next server.
        let mut o = vec![53, 1, 2, 54, 4, 10, 0, 0, 2, 60, 9];
        o.extend_from_slice(b"PXEClient");
        o.extend_from_slice(&[67, 9]);
        o.extend_from_slice(b"grubx64.e");
        let mut proxy = message(2, 5, mac, &o);
        proxy[20..24].copy_from_slice(&[10, 0, 0, 4]);
        map.handle_dhcp(t(0), addr([10, 0, 0, 2], 67), to_client, [0xbb; 6], &proxy);
        // The DHCP server's ACK: an address, no file.
        let mut ack = message(2, 5, mac, &[53, 1, 5, 54, 4, 10, 0, 0, 1]);
        ack[16..20].copy_from_slice(&[10, 0, 0, 77]);
        map.handle_dhcp(t(1), addr([10, 0, 0, 1], 67), to_client, [0xaa; 6], &ack);
        assert_eq!(map.clients().count(), 1);
        let c = map.client_by_ip(Ipv4Addr::new(10, 0, 0, 77)).unwrap();
        assert_eq!(c.mac, Some(mac));
        let nbp = c.nbp().unwrap();
        assert_eq!(
            (nbp.file.as_str(), nbp.server, nbp.via),
            (
                "grubx64.e",
                Some(Ipv4Addr::new(10, 0, 0, 4)),
                BootVia::ProxyDhcp
            )
        );
    }

    #[test]
    fn chain_loading_keeps_each_stage() {
        let dir = tmp();
        let mut map = ImageMap::new(dir.path(), Limits::default());
        let mac = [2, 0, 0, 0, 0, 1];
        let (c, s) = (addr([0; 4], 68), addr([255; 4], 67));
        // PXE ROM gets undionly.kpxe; iPXE (user class) gets a script.
        for (i, (user, file)) in [(None, &b"undionly.kpxe"[..]), (Some(b"iPXE"), b"boot.ipxe")]
            .into_iter()
            .enumerate()
        {
            let mut opts = vec![53, 1, 1];
            if let Some(u) = user {
                opts.extend_from_slice(&[77, 4]);
                opts.extend_from_slice(u);
            }
            let xid = i as u32;
            map.handle_dhcp(t(xid.into()), c, s, mac, &message(1, xid, mac, &opts));
            let mut ack = vec![53, 1, 5, 67, file.len() as u8];
            ack.extend_from_slice(file);
            let mut ack = message(2, xid, mac, &ack);
            ack[16..20].copy_from_slice(&[10, 0, 0, 5]);
            ack[20..24].copy_from_slice(&[10, 0, 0, 1]);
            map.handle_dhcp(
                t(xid.into()),
                addr([10, 0, 0, 1], 67),
                addr([255; 4], 68),
                [9; 6],
                &ack,
            );
        }
        let c = map.client_by_mac(mac).unwrap();
        let told: Vec<_> = c
            .boot
            .iter()
            .map(|b| (b.file.as_str(), b.user_class.as_deref()))
            .collect();
        assert_eq!(told, [("undionly.kpxe", None), ("boot.ipxe", Some("iPXE"))]);
        assert_eq!(c.nbp().unwrap().file, "boot.ipxe");
    }

    #[test]
    fn times_format_as_utc() {
        assert_eq!(fmt_time(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            fmt_time(UNIX_EPOCH + Duration::from_secs(951_827_696)),
            "2000-02-29T12:34:56Z"
        );
        assert_eq!(fmt_time(UNIX_EPOCH - Duration::from_secs(1)), "before-1970");
    }

    /// A BOOTP header (either op, Ethernet) with the cookie, then random bytes.
    fn dhcp_like() -> impl Strategy<Value = Vec<u8>> {
        (
            1u8..=2,
            proptest::collection::vec(any::<u8>(), 236),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(op, mut head, tail)| {
                head[0] = op;
                head[1] = 1;
                head[2] = 6;
                head.extend_from_slice(&wire::dhcp::MAGIC_COOKIE);
                head.extend_from_slice(&tail);
                head
            })
    }

    proptest! {
        #[test]
        fn handle_dhcp_never_panics(
            payloads in proptest::collection::vec(
                prop_oneof![proptest::collection::vec(any::<u8>(), 0..600), dhcp_like()], 1..8),
            port in prop::sample::select(vec![67u16, 68, 4011]),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut map = ImageMap::new(dir.path(), Limits { max_clients: 2, max_files_per_client: 2 });
            for p in &payloads {
                map.handle_dhcp(t(0), addr([10, 0, 0, 1], port), addr([10, 0, 0, 2], 68), [2; 6], p);
            }
            let n = map.counters();
            prop_assert_eq!(n.messages_seen, payloads.len() as u64);
            prop_assert!(n.clients <= 2);
            let _ = render_listing(&map);
        }

        #[test]
        fn mutated_captures_never_panic(i in 0usize..8, at in 0usize..600, byte in any::<u8>()) {
            let all: Vec<_> = [PXE, PROXY_4011].into_iter().flat_map(datagrams).collect();
            let d = &all[i % all.len()];
            let mut p = d.payload.clone();
            let n = p.len();
            p[at % n] = byte;
            let dir = tempfile::tempdir().unwrap();
            let mut map = ImageMap::new(dir.path(), Limits::default());
            map.handle_dhcp(t(0), d.src, d.dst, d.src_mac, &p);
            prop_assert_eq!(map.counters().messages_seen, 1);
        }
    }
}
