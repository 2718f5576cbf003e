//! The verified cache on disk.
//!
//! Layout of a cache directory:
//!
//! ```text
//! <cache_dir>/index.json      snapshot of the entries (rewritten atomically)
//! <cache_dir>/index.journal   entry records since the snapshot (appended)
//! <cache_dir>/files/<name>    one file per entry, never partial
//! <cache_dir>/tmp/            reassemblies in progress; emptied at open
//! ```
//!
//! Entries are keyed by (server address, VLAN scope, file name): two VLANs
//! may reuse one server address for two different servers, so a file filled
//! on VLAN 100 is never served on VLAN 200 — unless the cache is shared
//! across VLANs ([`Filestore::set_share_across_vlans`], `[cache]
//! share_across_vlans`), in which case the key has no scope. File names are
//! hostile input, so they never reach the file system: a cached file is
//! stored as `hex(SHA-256(server ‖ 0 ‖ name [‖ 0 ‖ scope])) "-"
//! hex(SHA-256(content))` (the scope part only for a tagged or shared
//! entry, so untagged entries keep the names they always had), and the
//! original name is kept in the index only. The content hash in the stored
//! name means a changed file is published under a new name before the index
//! switches to it, so the index never points at content other than what it
//! describes, whatever moment a crash picks. [`Filestore::path_of`] derives the
//! path from the entry's key and hash and never trusts a path from the index.
//!
//! Disk writes run on the cache's writer thread ([`crate::writer`]): the
//! caller of [`Filestore::publish`] only queues the file, and the entry
//! appears in [`Filestore::lookup`] once the writer reports its bytes in
//! place ([`Filestore::poll`]). The index is persisted incrementally: one
//! journal record (see [`crate::journal`]) per new, refreshed or removed
//! entry, folded into `index.json` when the journal grows past a few records
//! per entry, and at every open. An `index.json` of an older version (no
//! journal) is a snapshot like any other.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{debug, info, warn};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wire::frame::VlanScope;

use crate::eviction::{self, Candidate, Plan, Watermarks};
use crate::journal;
use crate::reassembly::TempFile;
use crate::writer::{Done, Job, JournalStart, PersistCounters, Writer, WriterHandle};

/// The index snapshot's file name.
pub(crate) const INDEX: &str = "index.json";
/// The index journal's file name.
pub(crate) const INDEX_JOURNAL: &str = "index.journal";
/// The temporary file of versions that rewrote `index.json` in place.
const INDEX_TMP_OLD: &str = "index.json.tmp";
const FILES: &str = "files";
const TMP: &str = "tmp";
const INDEX_VERSION: u32 = 1;

/// Why a filestore operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FilestoreError {
    /// A file or directory of the cache could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The index exists but cannot be parsed.
    #[error("{path}: corrupt index: {source}")]
    CorruptIndex {
        /// The index file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The name names no file under a server's root (see
    /// [`wire::tftp::normalize_name`]).
    #[error("file name {name:?}: {reason}")]
    BadName {
        /// The name as given.
        name: String,
        /// Why it names no file.
        reason: wire::tftp::NameError,
    },
    /// Publishing the file would exceed the quota.
    #[error("quota of {quota} bytes full ({used} used, {needed} more needed)")]
    QuotaFull {
        /// Bytes the new file needs.
        needed: u64,
        /// Bytes used now.
        used: u64,
        /// The quota.
        quota: u64,
    },
    /// The writer's queue is full: the file is not cached this time (the
    /// next transfer of it caches it).
    #[error("the cache writer's queue is full: not cached this time")]
    Deferred,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FilestoreError + '_ {
    move |source| FilestoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A SHA-256 digest; shown and stored as lower-case hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest256(pub [u8; 32]);

impl Digest256 {
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Digest256(out))
    }
}

impl std::fmt::Debug for Digest256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Display for Digest256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Digest256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest256 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest256::from_hex(&s).ok_or_else(|| serde::de::Error::custom("not a SHA-256 hex digest"))
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Times stored as whole seconds since the Unix epoch.
mod unix_secs {
    use super::*;

    pub(super) fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        s.serialize_u64(secs)
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<SystemTime, D::Error> {
        let secs = u64::deserialize(d)?;
        Ok(UNIX_EPOCH + Duration::from_secs(secs))
    }
}

/// A VLAN scope stored as `[outer, inner]` (0 for no tag).
mod vlan_pair {
    use super::*;

    pub(super) fn serialize<S: serde::Serializer>(v: &VlanScope, s: S) -> Result<S::Ok, S::Error> {
        [v.outer, v.inner].serialize(s)
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<VlanScope, D::Error> {
        let [outer, inner] = <[u16; 2]>::deserialize(d)?;
        Ok(VlanScope::new(Some(outer), Some(inner)))
    }
}

/// One cached file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The boot server it came from.
    pub server: Ipv4Addr,
    /// The VLANs it was filled on (entries written before VLANs were part
    /// of the key load as untagged).
    #[serde(default, with = "vlan_pair")]
    pub vlan: VlanScope,
    /// Filled while the cache was shared across VLANs: its key has no
    /// scope, it is served on every VLAN (and only while sharing is on).
    #[serde(default)]
    pub shared: bool,
    /// The file name as the client requested it (hostile: display escaped).
    pub name: String,
    /// Length in bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: Digest256,
    /// When it was first cached.
    #[serde(with = "unix_secs")]
    pub first_seen: SystemTime,
    /// When a transfer last delivered it (or it was last validated).
    #[serde(with = "unix_secs")]
    pub last_seen: SystemTime,
    /// How many complete transfers of it were seen.
    pub times_seen: u64,
    /// When it was last served or verified (eviction's LRU order; whole
    /// seconds, recorded at most once a second). Entries written before it
    /// existed load as never used: their `last_seen` counts instead.
    #[serde(default = "never", with = "unix_secs")]
    pub last_used: SystemTime,
    /// The file's name under `files/` (informational: the path is always
    /// derived again from the key and hash).
    pub stored_as: String,
}

fn never() -> SystemTime {
    UNIX_EPOCH
}

impl Entry {
    /// When it was last cached, served or verified: eviction's LRU order.
    pub fn recency(&self) -> SystemTime {
        self.last_used.max(self.last_seen)
    }
}

/// An entry's key. Everything that builds or compares keys goes through
/// [`key_of`] and [`IndexRecord::key`], so that a key gains a field in one
/// place.
/// Server, VLAN scope (`None`: shared across VLANs), name.
pub(crate) type Key = (Ipv4Addr, Option<VlanScope>, String);

/// The key of `entry`.
pub(crate) fn key_of(entry: &Entry) -> Key {
    (
        entry.server,
        (!entry.shared).then_some(entry.vlan),
        entry.name.clone(),
    )
}

/// The path of `entry`'s content in the cache `dir`, derived from its key
/// and hash.
pub(crate) fn path_in(dir: &Path, entry: &Entry) -> PathBuf {
    dir.join(FILES)
        .join(stored_name(&key_of(entry), &entry.sha256))
}

/// One record of the index journal: the whole entry of a key, or its removal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum IndexRecord {
    /// The entry (new, refreshed or replaced).
    Put {
        /// The whole entry.
        entry: Entry,
    },
    /// The key has no entry any more.
    Del {
        /// The key's server.
        server: Ipv4Addr,
        /// The key's VLAN scope (records written before VLANs: untagged).
        #[serde(default, with = "vlan_pair")]
        vlan: VlanScope,
        /// Whether the key is shared across VLANs (then `vlan` is not part
        /// of it).
        #[serde(default)]
        shared: bool,
        /// The key's (normalised) name.
        name: String,
    },
}

impl IndexRecord {
    /// The removal of `entry`'s key.
    pub(crate) fn del(entry: &Entry) -> Self {
        IndexRecord::Del {
            server: entry.server,
            vlan: entry.vlan,
            shared: entry.shared,
            name: entry.name.clone(),
        }
    }

    fn key(&self) -> Key {
        match self {
            IndexRecord::Put { entry } => key_of(entry),
            IndexRecord::Del {
                server,
                vlan,
                shared,
                name,
            } => (*server, (!shared).then_some(*vlan), name.clone()),
        }
    }
}

/// Applies one journal record to an index.
pub(crate) fn apply_record(index: &mut BTreeMap<Key, Entry>, r: IndexRecord) {
    let key = r.key();
    match r {
        IndexRecord::Put { entry } => {
            index.insert(key, entry);
        }
        IndexRecord::Del { .. } => {
            index.remove(&key);
        }
    }
}

#[derive(Deserialize)]
struct IndexFile {
    version: u32,
    entries: Vec<Entry>,
}

#[derive(Serialize)]
struct IndexFileRef<'a> {
    version: u32,
    entries: Vec<&'a Entry>,
}

/// `index.json` holding `entries`.
pub(crate) fn snapshot_bytes<'a>(entries: impl Iterator<Item = &'a Entry>) -> Vec<u8> {
    let f = IndexFileRef {
        version: INDEX_VERSION,
        entries: entries.collect(),
    };
    serde_json::to_vec(&f).unwrap_or_default()
}

/// What [`Filestore::open`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Entries loaded.
    pub loaded: u64,
    /// Entries dropped because their file is missing.
    pub missing: u64,
    /// Entries dropped because their file's size differs.
    pub size_mismatch: u64,
    /// Entries dropped as malformed (bad stored name, duplicate key).
    pub invalid: u64,
    /// Leftovers removed from `tmp/`.
    pub tmp_removed: u64,
    /// Files in `files/` that no entry refers to, removed.
    pub orphans_removed: u64,
    /// The index was unreadable and set aside as `index.json.corrupt`.
    pub index_corrupt: bool,
    /// Journal records replayed.
    pub journal_records: u64,
    /// Journal records dropped (bad checksum, not a record).
    pub journal_bad: u64,
    /// The journal ended in a partial record (a crash mid-write), dropped.
    pub journal_torn: bool,
}

/// What [`Filestore::publish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// A new entry.
    New,
    /// The same content again: times seen and last seen bumped.
    Refreshed,
    /// Different content for an existing key: replaced.
    Replaced,
}

/// The index as read from a cache directory: the snapshot with the journal
/// applied, not yet checked against the files.
struct Loaded {
    /// `None`: the snapshot was corrupt (the journal is not applied: it
    /// holds only the changes since a snapshot that is lost).
    entries: Option<Vec<Entry>>,
    /// Snapshot entries whose key came earlier in it.
    duplicates: u64,
    journal: JournalStart,
    journal_bad: u64,
    journal_torn: bool,
}

/// Reads `index.json` then `index.journal` of `dir`. A corrupt snapshot is
/// an error unless `set_aside`, which renames it (and the journal) out of
/// the way and reports no entries.
fn load(dir: &Path, set_aside: bool) -> Result<Loaded, FilestoreError> {
    let index_path = dir.join(INDEX);
    let snapshot = match fs::read(&index_path) {
        Ok(bytes) => match serde_json::from_slice::<IndexFile>(&bytes) {
            Ok(f) => {
                if f.version != INDEX_VERSION {
                    warn!(
                        "{}: index version {} read as version {INDEX_VERSION}",
                        index_path.display(),
                        f.version
                    );
                }
                Some(f.entries)
            }
            Err(e) if set_aside => {
                // Keep the evidence and the files; start empty.
                warn!("{}: corrupt index ({e}), set aside", index_path.display());
                fs::rename(&index_path, dir.join("index.json.corrupt"))
                    .map_err(io_err(&index_path))?;
                let j = dir.join(INDEX_JOURNAL);
                let _ = fs::rename(&j, dir.join("index.journal.corrupt"));
                None
            }
            Err(e) => {
                return Err(FilestoreError::CorruptIndex {
                    path: index_path,
                    source: e,
                })
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some(Vec::new()),
        Err(e) => return Err(io_err(&index_path)(e)),
    };
    let Some(snapshot) = snapshot else {
        return Ok(Loaded {
            entries: None,
            duplicates: 0,
            journal: JournalStart::default(),
            journal_bad: 0,
            journal_torn: false,
        });
    };
    let jpath = dir.join(INDEX_JOURNAL);
    let decoded = journal::read::<IndexRecord>(&jpath).map_err(io_err(&jpath))?;
    let mut index = BTreeMap::new();
    // Order of first appearance, so that the snapshot's order survives.
    let mut duplicates = 0;
    for e in snapshot {
        let key = key_of(&e);
        match index.entry(key) {
            std::collections::btree_map::Entry::Occupied(_) => duplicates += 1,
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(e);
            }
        }
    }
    let records = decoded.records.len() as u64;
    for r in decoded.records {
        apply_record(&mut index, r);
    }
    if decoded.torn || decoded.bad > 0 {
        warn!(
            "{}: {} bad record(s){} dropped",
            jpath.display(),
            decoded.bad,
            if decoded.torn { " and a torn tail" } else { "" }
        );
    }
    Ok(Loaded {
        entries: Some(index.into_values().collect()),
        duplicates,
        journal: JournalStart {
            len: decoded.valid_len,
            records,
        },
        journal_bad: decoded.bad,
        journal_torn: decoded.torn,
    })
}

/// The verified cache in one directory.
#[derive(Debug)]
pub struct Filestore {
    dir: PathBuf,
    index: BTreeMap<Key, Entry>,
    /// Bytes of the entries and of the publishes under way.
    used: u64,
    quota: u64,
    report: LoadReport,
    /// Entries whose file was hashed by this process (published by it, or
    /// checked by the writer); the others were only checked for size when
    /// the index was loaded.
    verified: BTreeSet<Key>,
    /// Entries whose hash the writer was asked for and has not reported.
    verifying: BTreeSet<Key>,
    /// Publishes queued to the writer and not reported yet.
    pending: BTreeMap<(Key, Digest256), Entry>,
    /// Keys whose refreshed entry did not fit in the writer's queue: sent
    /// again by [`Filestore::poll`].
    deferred: BTreeSet<Key>,
    /// Entries removed because their file no longer hashed to the index.
    corrupt_removed: u64,
    /// Publishes the writer could not complete.
    publish_failed: u64,
    writer: Writer,
    /// One cache for every VLAN (`[cache] share_across_vlans`).
    share_across_vlans: bool,
    /// Eviction's watermarks of the quota.
    marks: Watermarks,
    /// Entries being served: alive while an [`InUse`] of the key lives.
    holds: BTreeMap<Key, Weak<()>>,
    /// What eviction and the operator removed.
    removals: Removals,
}

/// Files removed to make room or by the operator, since the cache was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removals {
    /// Files evicted (least recently used) to make room for new ones.
    pub evicted_files: u64,
    /// Their bytes.
    pub evicted_bytes: u64,
    /// Files removed by the operator (`bootcache cache rm` and `purge`).
    pub removed_files: u64,
    /// Their bytes.
    pub removed_bytes: u64,
}

/// A cached file in use (a session serving it): while one lives, neither
/// eviction nor the operator removes the entry. Dropping it ends the use;
/// no call back into the filestore is needed.
#[derive(Debug, Clone)]
pub struct InUse(#[allow(dead_code)] Arc<()>);

/// Why the operator's removal of a file was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RemoveRefused {
    /// A session is serving it (or the writer is publishing or hashing it):
    /// try again once it ends.
    #[error("in use (being served, published or hashed): try again when that ends")]
    InUse,
    /// The writer's queue is full: try again in a moment.
    #[error("the cache writer is busy: try again")]
    Busy,
}

impl Filestore {
    /// Opens (creating if needed) the cache in `dir`: removes leftovers in
    /// `tmp/`, reloads the index (snapshot and journal), drops entries whose
    /// file is missing or of the wrong size, removes files no entry names,
    /// and starts the writer thread (which folds the journal into a new
    /// snapshot first). The quota is unlimited until
    /// [`Filestore::set_quota`]; the scrub is off until
    /// [`Filestore::set_scrub_rate`].
    pub fn open(dir: &Path) -> Result<Filestore, FilestoreError> {
        let files = dir.join(FILES);
        let tmp = dir.join(TMP);
        fs::create_dir_all(&files).map_err(io_err(&files))?;
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        let mut report = LoadReport::default();
        for e in fs::read_dir(&tmp).map_err(io_err(&tmp))? {
            let path = e.map_err(io_err(&tmp))?.path();
            let r = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            r.map_err(io_err(&path))?;
            report.tmp_removed += 1;
        }
        let _ = fs::remove_file(dir.join(INDEX_TMP_OLD));

        let loaded = load(dir, true)?;
        report.index_corrupt = loaded.entries.is_none();
        report.invalid = loaded.duplicates;
        report.journal_records = loaded.journal.records;
        report.journal_bad = loaded.journal_bad;
        report.journal_torn = loaded.journal_torn;
        let listed = loaded.entries.is_some();
        let mut index = BTreeMap::new();
        let mut used = 0;
        for entry in loaded.entries.unwrap_or_default() {
            let expected = stored_name(&key_of(&entry), &entry.sha256);
            // Names are stored normalised; an entry of an older version
            // under another spelling could never be looked up: dropped
            // (the next transfer of the file caches it again).
            let normal = wire::tftp::normalize_name(&entry.name).ok();
            if entry.stored_as != expected || normal.as_deref() != Some(entry.name.as_str()) {
                report.invalid += 1;
                continue;
            }
            match fs::metadata(path_in(dir, &entry)) {
                Ok(m) if m.is_file() && m.len() == entry.size => {
                    used += entry.size;
                    index.insert(key_of(&entry), entry);
                    report.loaded += 1;
                }
                Ok(_) => {
                    bootcache_metrics::warn_limited!(
                        "cache: {:?} from {}: size differs, dropped",
                        entry.name,
                        entry.server
                    );
                    report.size_mismatch += 1;
                }
                Err(_) => {
                    bootcache_metrics::warn_limited!(
                        "cache: {:?} from {}: file missing, dropped",
                        entry.name,
                        entry.server
                    );
                    report.missing += 1;
                }
            }
        }
        // Files no entry names are from a crash between publishing a file and
        // recording it: unknown as far as the index knows, and their stored
        // name (hashes only) cannot tell which key they were for.
        if listed {
            let known: BTreeSet<&str> = index.values().map(|e| e.stored_as.as_str()).collect();
            for e in fs::read_dir(&files).map_err(io_err(&files))? {
                let e = e.map_err(io_err(&files))?;
                let name = e.file_name();
                if !name.to_str().is_some_and(|n| known.contains(n)) {
                    let path = e.path();
                    let _ = fs::remove_file(&path).or_else(|_| fs::remove_dir_all(&path));
                    report.orphans_removed += 1;
                }
            }
        }
        let writer = Writer::spawn(dir, index.clone(), loaded.journal).map_err(io_err(dir))?;
        info!(
            "cache {}: {} files, {} bytes ({:?})",
            dir.display(),
            index.len(),
            used,
            report
        );
        Ok(Filestore {
            dir: dir.to_owned(),
            index,
            used,
            quota: u64::MAX,
            report,
            verified: BTreeSet::new(),
            verifying: BTreeSet::new(),
            pending: BTreeMap::new(),
            deferred: BTreeSet::new(),
            share_across_vlans: false,
            corrupt_removed: 0,
            publish_failed: 0,
            writer,
            marks: Watermarks::default(),
            holds: BTreeMap::new(),
            removals: Removals::default(),
        })
    }

    /// Sets the quota in bytes. A file that would take the total past the
    /// high watermark evicts the least recently used files not in use down
    /// to the low watermark ([`Filestore::set_watermarks`]); one that
    /// cannot fit even then is refused.
    pub fn set_quota(&mut self, bytes: u64) {
        self.quota = bytes;
    }

    /// Sets eviction's watermarks (default 90 % and 80 % of the quota).
    pub fn set_watermarks(&mut self, marks: Watermarks) {
        self.marks = marks;
    }

    /// Marks `entry` as in use (a session serving it) until the returned
    /// guard and its clones are dropped, and records the time as its last
    /// use (a journal record at most once a second per file: no disk work
    /// per block or per session start).
    pub fn hold(&mut self, entry: &Entry, wall: SystemTime) -> InUse {
        let key = key_of(entry);
        let guard = match self.holds.get(&key).and_then(Weak::upgrade) {
            Some(g) => g,
            None => {
                // Holds of ended sessions go when the table outgrows the
                // index (it stays as small as the set of files in use).
                if self.holds.len() > self.index.len() {
                    self.holds.retain(|_, w| w.strong_count() > 0);
                }
                let g = Arc::new(());
                self.holds.insert(key.clone(), Arc::downgrade(&g));
                g
            }
        };
        self.touch(key, wall);
        InUse(guard)
    }

    /// Records `wall` as the last use of `key`'s entry.
    fn touch(&mut self, key: Key, wall: SystemTime) {
        let secs = UNIX_EPOCH
            + Duration::from_secs(wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
        let Some(e) = self.index.get_mut(&key) else {
            return;
        };
        if e.last_used >= secs {
            return;
        }
        e.last_used = secs;
        self.queue_record(key);
    }

    /// Whether `key`'s entry must stay: served, hashed or being replaced.
    fn in_use(&self, key: &Key) -> bool {
        self.holds.get(key).is_some_and(|w| w.strong_count() > 0)
            || self.verifying.contains(key)
            || self.publishing(key)
    }

    /// Whether `entry` is in use now (served, published or hashed): never
    /// evicted or removed by the operator then.
    pub fn is_in_use(&self, entry: &Entry) -> bool {
        self.in_use(&key_of(entry))
    }

    /// What eviction and the operator removed since the cache was opened.
    pub fn removals(&self) -> Removals {
        self.removals
    }

    /// Removes `key`'s entry and then its file (one job for the writer:
    /// the removal record is synced before the file goes). `None`, and
    /// nothing changed, when there is no entry or the writer's queue is
    /// full.
    fn remove_key(&mut self, key: &Key) -> Option<Entry> {
        let e = self.index.get(key)?.clone();
        if !self.writer.handle().try_send(Job::Remove(e.clone())) {
            return None;
        }
        self.index.remove(key);
        self.verified.remove(key);
        self.deferred.remove(key);
        self.used -= e.size;
        Some(e)
    }

    /// Makes room for `size` more bytes replacing `freed` (a version of
    /// the same `key`, never evicted): the least recently used entries not
    /// in use go once the total would pass the high watermark. Err when
    /// the file cannot fit under the quota even so.
    fn make_room(
        &mut self,
        key: &Key,
        name: &str,
        size: u64,
        freed: u64,
    ) -> Result<(), FilestoreError> {
        let used = self.used - freed;
        let candidates = self.index.iter().map(|(k, e)| Candidate {
            key: k.clone(),
            size: e.size,
            last_used: e.recency(),
            in_use: k == key || self.in_use(k),
        });
        let victims = match eviction::plan(used, size, self.quota, self.marks, candidates) {
            Plan::Fits => return Ok(()),
            Plan::Evict(v) => v,
            Plan::NoRoom => {
                return Err(FilestoreError::QuotaFull {
                    needed: size,
                    used: self.used,
                    quota: self.quota,
                })
            }
        };
        let (mut files, mut bytes) = (0u64, 0u64);
        for k in &victims {
            match self.remove_key(k) {
                Some(e) => {
                    files += 1;
                    bytes += e.size;
                }
                // The writer is busy: what was removed stays removed.
                None => break,
            }
        }
        self.removals.evicted_files += files;
        self.removals.evicted_bytes += bytes;
        if files > 0 {
            info!(
            "cache: evicted {files} least recently used file(s), {bytes} bytes, for {name:?} ({size} bytes): {} of {} bytes used",
            self.used, self.quota
        );
        }
        if (self.used - freed).saturating_add(size) > self.quota {
            return Err(FilestoreError::QuotaFull {
                needed: size,
                used: self.used,
                quota: self.quota,
            });
        }
        Ok(())
    }

    /// The operator's removal of every entry named `name` (normalised as
    /// a client's request is), from any server and VLAN. Refused, and
    /// nothing removed, while any of them is in use.
    pub fn remove_named(&mut self, name: &str) -> Result<Vec<Entry>, RemoveRefused> {
        let Ok(name) = wire::tftp::normalize_name(name) else {
            return Ok(Vec::new());
        };
        let keys: Vec<Key> = self.index.keys().filter(|k| k.2 == name).cloned().collect();
        if keys.iter().any(|k| self.in_use(k)) {
            return Err(RemoveRefused::InUse);
        }
        self.remove_operator(&keys)
    }

    /// The operator's removal of every entry not used since `before`
    /// (every entry: `None`); entries in use stay. Gives what was removed
    /// and how many were kept because in use.
    pub fn purge(
        &mut self,
        before: Option<SystemTime>,
    ) -> Result<(Vec<Entry>, u64), RemoveRefused> {
        let old: Vec<Key> = self
            .index
            .iter()
            .filter(|(_, e)| before.is_none_or(|t| e.recency() < t))
            .map(|(k, _)| k.clone())
            .collect();
        let (busy, free): (Vec<Key>, Vec<Key>) = old.into_iter().partition(|k| self.in_use(k));
        Ok((self.remove_operator(&free)?, busy.len() as u64))
    }

    fn remove_operator(&mut self, keys: &[Key]) -> Result<Vec<Entry>, RemoveRefused> {
        let mut out = Vec::new();
        for k in keys {
            match self.remove_key(k) {
                Some(e) => {
                    self.removals.removed_files += 1;
                    self.removals.removed_bytes += e.size;
                    info!(
                        "cache: {:?} from {} removed by the operator",
                        e.name, e.server
                    );
                    out.push(e);
                }
                None if out.is_empty() => return Err(RemoveRefused::Busy),
                None => break,
            }
        }
        Ok(out)
    }

    /// Removes `entry` found not to hash to its index (by `bootcache cache
    /// verify` off the serving thread) if it still is the cached version;
    /// counted as corrupt. Sessions serving it keep their mapping.
    pub fn remove_corrupt(&mut self, entry: &Entry) -> bool {
        let key = key_of(entry);
        if self
            .index
            .get(&key)
            .is_none_or(|c| c.sha256 != entry.sha256)
        {
            return false;
        }
        let removed = self.remove_key(&key).is_some();
        if removed {
            self.corrupt_removed += 1;
        }
        removed
    }

    /// Records that `entry`'s file was hashed again and matched (off the
    /// serving thread): it counts as used now, and is servable.
    pub fn mark_verified(&mut self, entry: &Entry, wall: SystemTime) {
        let key = key_of(entry);
        if self
            .index
            .get(&key)
            .is_some_and(|c| c.sha256 == entry.sha256)
        {
            self.verified.insert(key.clone());
            self.touch(key, wall);
        }
    }

    /// Shares the cache across VLANs (`true`): files are looked up and
    /// published without their VLAN scope. Off by default: two VLANs may
    /// hold two different servers at one address. Entries filled in the
    /// other mode stay in the index but are not served until it returns.
    pub fn set_share_across_vlans(&mut self, share: bool) {
        self.share_across_vlans = share;
    }

    /// The key of `name` from `server` asked on `scope`, under this mode.
    fn key(&self, scope: VlanScope, server: Ipv4Addr, name: String) -> Key {
        (server, (!self.share_across_vlans).then_some(scope), name)
    }

    /// The quota in bytes.
    pub fn quota(&self) -> u64 {
        self.quota
    }

    /// Sets the background scrub's rate in bytes per second (0: off): the
    /// writer re-hashes every entry's file in turn at that pace, removing
    /// (and counting) one that no longer matches.
    pub fn set_scrub_rate(&mut self, bytes_per_sec: u64) {
        self.writer
            .handle()
            .send_blocking(Job::ScrubRate(bytes_per_sec));
    }

    /// Bytes of cached files (and of files being published).
    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    /// Bytes a new file may take: the whole quota, since eviction makes
    /// room. (One that cannot fit because the files it would evict are in
    /// use is refused when it is published; a bound that depended on what
    /// is in use would be stale by the time the transfer ends.)
    pub fn space_left(&self) -> u64 {
        self.quota
    }

    /// What [`Filestore::open`] found.
    pub fn load_report(&self) -> &LoadReport {
        &self.report
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where reassemblies put their temporary files.
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join(TMP)
    }

    /// The entry for `name` from `server` as asked on the VLANs `scope`
    /// (any VLAN when shared), the name normalised as the server resolves
    /// it ([`wire::tftp::normalize_name`]: "x", "/x" and "./x" are one
    /// entry; a name with `..` has none).
    pub fn lookup(&self, scope: VlanScope, server: Ipv4Addr, name: &str) -> Option<&Entry> {
        let name = wire::tftp::normalize_name(name).ok()?;
        self.index.get(&self.key(scope, server, name))
    }

    /// Every entry, ordered by server, scope (shared first), then name.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.index.values()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The path of an entry's content, derived from its key and hash.
    pub fn path_of(&self, entry: &Entry) -> PathBuf {
        path_in(&self.dir, entry)
    }

    /// Publishes a verified file: `temp` (under [`Filestore::tmp_dir`]) holds
    /// `size` bytes hashing to `sha256`, requested as `name` on the VLANs
    /// `scope` from `server` (the pair the tracker keyed the transfer by).
    ///
    /// The same content again only bumps the entry (a journal record is
    /// queued). New content is queued to the writer, which fsyncs it,
    /// renames it into `files/` and records it; the entry appears once
    /// [`Filestore::poll`] hears so, and an old version's file is removed
    /// then. Never waits for the disk: a full queue refuses the file
    /// ([`FilestoreError::Deferred`]). On error nothing is published and
    /// `temp` is removed.
    pub fn publish(
        &mut self,
        wall: SystemTime,
        (scope, server): (VlanScope, Ipv4Addr),
        name: &str,
        temp: TempFile,
        size: u64,
        sha256: [u8; 32],
    ) -> Result<Published, FilestoreError> {
        let name = &wire::tftp::normalize_name(name).map_err(|e| FilestoreError::BadName {
            name: name.to_owned(),
            reason: e,
        })?;
        let key = self.key(scope, server, name.to_owned());
        let sha256 = Digest256(sha256);
        // What the index can store, so that memory and disk agree.
        let wall = UNIX_EPOCH
            + Duration::from_secs(wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
        let old = self.index.get(&key).cloned();
        if let Some(old) = &old {
            if old.sha256 == sha256 && old.size == size {
                let e = self.index.get_mut(&key).expect("looked up above");
                e.times_seen += 1;
                e.last_seen = wall;
                drop(temp);
                self.queue_record(key);
                // The transfer just hashed to it, but the file on disk was
                // not read: leave its state as it was.
                return Ok(Published::Refreshed);
            }
        }
        if let Some(p) = self.pending.get_mut(&(key.clone(), sha256)) {
            // The same content is on its way into the cache already: the
            // entry it becomes is bumped, and recorded once it is in place.
            p.times_seen += 1;
            p.last_seen = wall;
            self.deferred.insert(key);
            return Ok(Published::Refreshed);
        }
        let freed = old.as_ref().map_or(0, |o| o.size);
        self.make_room(&key, name, size, freed)?;
        let entry = Entry {
            server,
            vlan: scope,
            shared: self.share_across_vlans,
            name: name.to_owned(),
            size,
            sha256,
            first_seen: old.as_ref().map_or(wall, |o| o.first_seen),
            last_seen: wall,
            times_seen: old.as_ref().map_or(0, |o| o.times_seen) + 1,
            last_used: wall,
            stored_as: stored_name(&key, &sha256),
        };
        let job = Job::Publish {
            temp,
            entry: entry.clone(),
        };
        // A refused job is dropped here, and with it the temporary file.
        if !self.writer.handle().try_send(job) {
            return Err(FilestoreError::Deferred);
        }
        self.pending.insert((key, sha256), entry);
        self.used += size;
        Ok(if old.is_some() {
            Published::Replaced
        } else {
            Published::New
        })
    }

    /// Queues the current entry of `key` as a journal record, or keeps the
    /// key for [`Filestore::poll`] to send when the queue is full.
    fn queue_record(&mut self, key: Key) {
        if self.publishing(&key) {
            // Its entry is about to be replaced: recorded after that, or
            // this record would land after the new one's and undo it.
            self.deferred.insert(key);
            return;
        }
        let Some(e) = self.index.get(&key) else {
            return;
        };
        let r = IndexRecord::Put { entry: e.clone() };
        if !self.writer.handle().try_send(Job::Index(r)) {
            self.deferred.insert(key);
        }
    }

    /// Takes in what the writer reported (publishes in place, hashes
    /// checked) and sends deferred records again. Call it often (every pass
    /// of the worker's loop): it never waits.
    pub fn poll(&mut self) {
        while let Some(done) = self.writer.poll() {
            self.apply(done);
        }
        if self.deferred.is_empty() {
            return;
        }
        // Rare (the queue was full): the keys are copied out to be sent.
        let keys: Vec<Key> = self.deferred.iter().cloned().collect();
        for key in keys {
            if self.publishing(&key) {
                // Its entry is about to change: sent after the change.
                continue;
            }
            if let Some(e) = self.index.get(&key) {
                let r = IndexRecord::Put { entry: e.clone() };
                if !self.writer.handle().try_send(Job::Index(r)) {
                    break;
                }
            }
            self.deferred.remove(&key);
        }
    }

    fn apply(&mut self, done: Done) {
        match done {
            Done::Published(e) => {
                let key = key_of(&e);
                // Bumped meanwhile (the same content again): that entry.
                let e = self.pending.remove(&(key.clone(), e.sha256)).unwrap_or(e);
                self.verified.insert(key.clone());
                if let Some(old) = self.index.insert(key, e.clone()) {
                    self.used -= old.size;
                    if old.sha256 != e.sha256 {
                        let _ = self
                            .writer
                            .handle()
                            .try_send(Job::RemoveFile(self.path_of(&old)));
                    }
                }
            }
            Done::PublishFailed(e) => {
                self.pending.remove(&(key_of(&e), e.sha256));
                self.used -= e.size;
                self.publish_failed += 1;
            }
            Done::Verified(e) => {
                let key = key_of(&e);
                self.verifying.remove(&key);
                if self.index.get(&key).is_some_and(|c| c.sha256 == e.sha256)
                    && self.verified.insert(key)
                {
                    info!(
                        "cache: {:?} from {}: hashed again, matches its entry: served from the cache",
                        e.name, e.server
                    );
                }
            }
            Done::Corrupt(e) => {
                let key = key_of(&e);
                self.verifying.remove(&key);
                if self.index.get(&key).is_some_and(|c| c.sha256 == e.sha256) {
                    self.index.remove(&key);
                    self.verified.remove(&key);
                    self.used -= e.size;
                    self.corrupt_removed += 1;
                }
            }
            Done::Stale(e) => {
                self.verifying.remove(&key_of(&e));
            }
        }
    }

    /// Whether a file for `name` from `server` on `scope` was handed to
    /// the writer and is not in place yet (then [`Self::lookup`] still
    /// gives the previous entry, if any).
    pub fn is_publishing(&self, scope: VlanScope, server: Ipv4Addr, name: &str) -> bool {
        wire::tftp::normalize_name(name)
            .is_ok_and(|name| self.publishing(&self.key(scope, server, name)))
    }

    /// Whether a publish of `key` is under way.
    fn publishing(&self, key: &Key) -> bool {
        let lo = (key.clone(), Digest256([0; 32]));
        let hi = (key.clone(), Digest256([0xff; 32]));
        self.pending.range(lo..=hi).next().is_some()
    }

    /// Entries whose file was hashed by this process (published by it, or
    /// checked since the cache was opened): servable now.
    pub fn verified_count(&self) -> usize {
        self.verified.len()
    }

    /// Whether `entry`'s file was hashed by this process (published by it,
    /// or checked by the writer since the cache was opened).
    pub fn is_verified(&self, entry: &Entry) -> bool {
        self.verified.contains(&key_of(entry))
    }

    /// Whether `entry` may be served now. If its file was not hashed by
    /// this process yet, the writer is asked to (once) and the answer is
    /// no: the caller goes to the origin meanwhile. A file that no longer
    /// hashes to its entry is removed by the writer and counted
    /// ([`Self::corrupt_removed`]) when [`Self::poll`] hears of it.
    pub fn check_verified(&mut self, entry: &Entry) -> bool {
        let key = key_of(entry);
        if self.verified.contains(&key) {
            return true;
        }
        if !self.verifying.contains(&key)
            && self.writer.handle().try_send(Job::Verify(entry.clone()))
        {
            debug!(
                "cache: {:?} from {}: hashing it again before its first serve",
                entry.name, entry.server
            );
            self.verifying.insert(key);
        }
        false
    }

    /// Re-hashes `entry`'s file on the calling thread, whole: true when it
    /// still is the bytes that were verified. One that is not is removed
    /// with its record (queued to the writer) and counted
    /// ([`Self::corrupt_removed`]). For tools that own the cache (`bootcache
    /// cache verify`), never the serving thread ([`Self::check_verified`]).
    pub fn verify(&mut self, entry: &Entry) -> Result<bool, FilestoreError> {
        let key = key_of(entry);
        let Some(e) = self.index.get(&key).cloned() else {
            return Ok(false);
        };
        let path = self.path_of(&e);
        let good = hash_file(&path).is_ok_and(|(size, sha)| size == e.size && sha == e.sha256.0);
        if good {
            self.verified.insert(key);
            return Ok(true);
        }
        bootcache_metrics::warn_limited!(
            "cache: {:?} from {} no longer hashes to its index entry: removed",
            e.name,
            e.server
        );
        let _ = fs::remove_file(&path);
        self.index.remove(&key);
        self.verified.remove(&key);
        self.used -= e.size;
        self.corrupt_removed += 1;
        self.writer
            .handle()
            .send_blocking(Job::Index(IndexRecord::del(&e)));
        Ok(false)
    }

    /// Entries removed since the cache was opened because their file no
    /// longer hashed to the index.
    pub fn corrupt_removed(&self) -> u64 {
        self.corrupt_removed
    }

    /// Publishes the writer could not complete (the disk refused the file).
    pub fn publish_failed(&self) -> u64 {
        self.publish_failed
    }

    /// The writer's counters.
    pub fn persist_counters(&self) -> PersistCounters {
        self.writer.handle().counters()
    }

    /// The writer's sending side (the image map persists through it).
    pub fn writer(&self) -> WriterHandle {
        self.writer.handle().clone()
    }

    /// Waits until the writer has done everything queued so far and takes
    /// in its reports: for tests and for a clean exit, never on the
    /// serving path. Re-hashes run in the background and are not waited
    /// for (at exit they would only delay it).
    pub fn sync(&mut self) {
        // Twice: taking in reports may queue removals of old versions.
        for _ in 0..2 {
            self.writer.barrier();
            self.poll();
        }
    }

    /// Finishes the writer's queued work and stops it; the store persists
    /// nothing afterwards. Before the cache is opened again in this process.
    pub fn close(&mut self) {
        self.writer.stop();
    }
}

/// The safe on-disk name of a file: hashes only, whatever the name holds.
/// The scope is hashed after a NUL (never in a normalised name) for tagged
/// and shared keys only: untagged entries keep their names from before.
fn stored_name(key: &Key, sha256: &Digest256) -> String {
    let (server, scope, name) = key;
    let mut h = Sha256::new();
    h.update(server.octets());
    h.update([0]);
    h.update(name.as_bytes());
    match scope {
        Some(s) if s.is_untagged() => {}
        Some(s) => {
            h.update([0, b'v']);
            h.update(s.outer.to_be_bytes());
            h.update(s.inner.to_be_bytes());
        }
        None => h.update([0, b's']),
    }
    format!("{}-{}", hex(&h.finalize()), sha256.to_hex())
}

/// Whether `entry`'s file in the cache `dir` still has its size and
/// SHA-256 (read whole, on the calling thread: for tools, never the
/// serving thread).
pub fn file_matches(dir: &Path, entry: &Entry) -> io::Result<bool> {
    let (size, sha) = hash_file(&path_in(dir, entry))?;
    Ok(size == entry.size && sha == entry.sha256.0)
}

/// Size and SHA-256 of the file at `path`, read in 1 MiB pieces.
fn hash_file(path: &Path) -> io::Result<(u64, [u8; 32])> {
    use std::io::Read;
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((size, h.finalize().into()));
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
}

/// The index of the cache in `dir` (snapshot and journal), read without
/// changing anything (for listing it while bootcache runs). A missing index
/// is an empty cache. Read during a compaction it may miss the entries the
/// journal held a moment before: read again.
pub fn read_index(dir: &Path) -> Result<Vec<Entry>, FilestoreError> {
    Ok(load(dir, false)?.entries.unwrap_or_default())
}

/// The lock file of a cache directory.
const LOCK: &str = "lock";

/// An exclusive advisory lock (`flock`) on a cache directory's `lock`
/// file, taken by a running bridge and by `bootcache cache verify`: one
/// owner of the directory's files at a time. The kernel releases it when
/// the holder exits, however it exits.
#[derive(Debug)]
pub struct DirLock {
    // Held open for the lock's sake: closing it releases the lock.
    _file: File,
}

impl DirLock {
    /// Takes the lock without waiting and writes our pid into the file.
    /// Held by another process: an `Io` error of kind `WouldBlock`
    /// ([`DirLock::holder`] names it).
    pub fn acquire(dir: &Path) -> Result<DirLock, FilestoreError> {
        let path = dir.join(LOCK);
        // Created (and the pid written) through a file closed at once; the
        // lock itself is held on a read-only descriptor: a file held open
        // for writing would keep the cache's file system from being
        // remounted read-only (fail open must see that happen).
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        let f = File::open(&path).map_err(io_err(&path))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |e| match Self::holder(dir) {
                Some(pid) if e == rustix::io::Errno::WOULDBLOCK => io_err(&path)(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("locked by pid {pid}"),
                )),
                _ => io_err(&path)(e.into()),
            },
        )?;
        // Ours now: the pid for whoever finds it locked.
        fs::write(&path, format!("{}\n", std::process::id())).map_err(io_err(&path))?;
        Ok(DirLock { _file: f })
    }

    /// The pid written by the lock's holder, if any.
    pub fn holder(dir: &Path) -> Option<u32> {
        fs::read_to_string(dir.join(LOCK)).ok()?.trim().parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reassembly::Reassembly;

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const U: VlanScope = VlanScope::UNTAGGED;

    /// A finished temporary file with `content`, as the tracker hands over.
    fn temp(store: &Filestore, content: &[u8]) -> (TempFile, u64, [u8; 32]) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let path = store
            .tmp_dir()
            .join(format!("t{}", N.fetch_add(1, Ordering::Relaxed)));
        let mut r = Reassembly::create(path, 512, None, u64::MAX).unwrap();
        let mut chunks: Vec<&[u8]> = content.chunks(512).collect();
        if content.len().is_multiple_of(512) {
            chunks.push(&[]);
        }
        for (i, c) in chunks.iter().enumerate() {
            r.insert(i as u64 + 1, c).unwrap();
        }
        let done = r.finish().unwrap();
        (done.file, done.size, done.sha256)
    }

    fn publish(
        store: &mut Filestore,
        name: &str,
        content: &[u8],
    ) -> Result<Published, FilestoreError> {
        let (t, size, sha) = temp(store, content);
        let r = store.publish(SystemTime::now(), (U, SERVER), name, t, size, sha);
        store.sync();
        r
    }

    /// Waits (with a deadline) until `f` holds, taking in the writer's
    /// reports meanwhile.
    fn poll_until(store: &mut Filestore, what: &str, f: impl Fn(&Filestore) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f(store) {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(2));
            store.poll();
        }
    }

    fn all_files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }

    /// Issue 13: after a restart a cached file counts as verified only once
    /// the writer hashed it again (its pass over what the cache held, or a
    /// request); until then `check_verified` says no (the caller goes to
    /// the origin). A file whose bytes changed on disk (same size) is
    /// removed and counted, never served.
    #[test]
    fn verification_runs_on_the_writer_and_removes_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Filestore::open(dir.path()).unwrap();
        publish(&mut store, "good", &[1; 5000]).unwrap();
        publish(&mut store, "bad", &[2; 5000]).unwrap();
        let good = store.lookup(U, SERVER, "good").unwrap().clone();
        assert!(store.is_verified(&good), "published by this process");
        let bad = store.lookup(U, SERVER, "bad").unwrap().clone();
        // A bit flips on disk; the size stays.
        let path = store.path_of(&bad);
        let mut bytes = fs::read(&path).unwrap();
        bytes[4000] ^= 0x10;
        fs::write(&path, bytes).unwrap();
        drop(store);
        let mut store = Filestore::open(dir.path()).unwrap();
        assert_eq!(store.len(), 2, "the size check alone passes both");
        assert!(!store.is_verified(&good) && !store.is_verified(&bad));
        // Not before the writer's answer is taken in, however often asked.
        assert!(!store.check_verified(&good));
        assert!(!store.check_verified(&good));
        assert!(!store.check_verified(&bad));
        poll_until(&mut store, "both hashed", |s| {
            s.corrupt_removed() == 1 && s.is_verified(&good)
        });
        assert!(store.persist_counters().verified_files >= 2);
        assert!(store.check_verified(&good));
        assert_eq!(store.verified_count(), 1);
        assert!(store.lookup(U, SERVER, "bad").is_none());
        assert!(!path.exists());
        assert_eq!(store.corrupt_removed(), 1);
        drop(store);
        let reopened = Filestore::open(dir.path()).unwrap();
        assert_eq!(reopened.len(), 1);
    }

    /// `verify` (for `bootcache cache verify`): hashes on the calling
    /// thread, removes a changed file with its record, at once.
    #[test]
    fn verify_on_the_calling_thread_for_tools() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Filestore::open(dir.path()).unwrap();
        publish(&mut store, "good", &[1; 5000]).unwrap();
        publish(&mut store, "bad", &[2; 5000]).unwrap();
        let good = store.lookup(U, SERVER, "good").unwrap().clone();
        let bad = store.lookup(U, SERVER, "bad").unwrap().clone();
        let path = store.path_of(&bad);
        let mut bytes = fs::read(&path).unwrap();
        bytes[10] ^= 1;
        fs::write(&path, bytes).unwrap();
        assert!(store.verify(&good).unwrap());
        assert!(!store.verify(&bad).unwrap());
        assert!(store.lookup(U, SERVER, "bad").is_none() && !path.exists());
        assert_eq!(store.corrupt_removed(), 1);
        drop(store);
        let store = Filestore::open(dir.path()).unwrap();
        assert_eq!(store.len(), 1);
        assert_eq!(
            store.load_report().missing,
            0,
            "the record went with the file"
        );
    }

    /// After a restart the writer hashes everything the cache held, with
    /// no request: the cache is servable again without a trip to the
    /// origin per file.
    #[test]
    fn reopened_cache_is_hashed_again_without_requests() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Filestore::open(dir.path()).unwrap();
        // "a" takes several steps of the pass.
        let big = crate::writer::REHASH_CHUNK * 5 / 2;
        for (n, len) in [("a", big), ("b", 70_000), ("c", 70_000)] {
            publish(&mut store, n, &vec![n.as_bytes()[0]; len]).unwrap();
        }
        drop(store);
        let mut store = Filestore::open(dir.path()).unwrap();
        assert_eq!(store.verified_count(), 0);
        poll_until(&mut store, "all hashed again", |s| s.verified_count() == 3);
        assert_eq!(store.persist_counters().verified_files, 3);
    }

    /// The background scrub hashes every file in turn at its rate: a file
    /// changed on disk behind the cache's back (after it was verified) is
    /// removed and counted.
    #[test]
    fn scrub_finds_a_flipped_bit_and_counts_what_it_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Filestore::open(dir.path()).unwrap();
        for (i, n) in ["a", "b", "c"].iter().enumerate() {
            publish(&mut store, n, &vec![i as u8; 300_000]).unwrap();
        }
        let b = store.lookup(U, SERVER, "b").unwrap().clone();
        assert!(store.is_verified(&b));
        let path = store.path_of(&b);
        let mut bytes = fs::read(&path).unwrap();
        bytes[123_456] ^= 0x80;
        fs::write(&path, bytes).unwrap();
        store.set_scrub_rate(64 << 20);
        poll_until(&mut store, "the scrub to remove b and read all", |s| {
            s.corrupt_removed() == 1
                && s.lookup(U, SERVER, "b").is_none()
                && s.persist_counters().scrubbed_files >= 3
        });
        assert_eq!(store.verified_count(), 2);
        assert!(store.lookup(U, SERVER, "b").is_none() && !path.exists());
        let c = store.persist_counters();
        assert!(c.scrubbed_files >= 3, "{c:?}");
        assert!(c.scrubbed_bytes >= 900_000, "{c:?}");
    }

    /// The index persists as a journal of per-entry records: a record cut
    /// short by a crash is dropped (the others load), and the next records
    /// go after the last whole one.
    #[test]
    fn torn_last_record_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Filestore::open(dir.path()).unwrap();
        publish(&mut store, "a", b"alpha").unwrap();
        publish(&mut store, "b", b"beta").unwrap();
        drop(store);
        let j = dir.path().join(INDEX_JOURNAL);
        let whole = fs::read(&j).unwrap();
        assert_eq!(whole.iter().filter(|&&b| b == b'\n').count(), 2);
        // Half of a third record, as a crash mid-append leaves it.
        let mut third = Vec::new();
        journal::encode(
            &IndexRecord::Del {
                server: SERVER,
                vlan: U,
                shared: false,
                name: "a".into(),
            },
            &mut third,
        );
        let mut torn = whole.clone();
        torn.extend_from_slice(&third[..third.len() / 2]);
        fs::write(&j, &torn).unwrap();
        let mut store = Filestore::open(dir.path()).unwrap();
        let r = *store.load_report();
        assert!(r.journal_torn);
        assert_eq!((r.loaded, r.journal_records, r.journal_bad), (2, 2, 0));
        publish(&mut store, "c", b"gamma").unwrap();
        drop(store);
        let store = Filestore::open(dir.path()).unwrap();
        assert_eq!(store.len(), 3);
        assert!(!store.load_report().journal_torn);
    }

    /// A garbage line or a record whose checksum fails is skipped and
    /// counted; the records around it still apply.
    #[test]
    fn garbage_record_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Filestore::open(dir.path()).unwrap();
        publish(&mut store, "a", b"alpha").unwrap();
        drop(store);
        let j = dir.path().join(INDEX_JOURNAL);
        let mut bytes = fs::read(&j).unwrap();
        bytes.extend_from_slice(b"\x00\xffgarbage\t0123456789abcdef\n");
        // A removal of "a" with one bit flipped: not applied.
        let mut del = Vec::new();
        journal::encode(
            &IndexRecord::Del {
                server: SERVER,
                vlan: U,
                shared: false,
                name: "a".into(),
            },
            &mut del,
        );
        del[3] ^= 0x01;
        bytes.extend_from_slice(&del);
        fs::write(&j, &bytes).unwrap();
        let store = Filestore::open(dir.path()).unwrap();
        let r = *store.load_report();
        assert_eq!((r.loaded, r.journal_bad), (1, 2));
        assert!(store.lookup(U, SERVER, "a").is_some());
    }

    /// Every open folds the journal into `index.json`, and so does the
    /// writer once the journal holds more than COMPACT_FACTOR records per
    /// entry (at least COMPACT_MIN): refreshes do not grow it without end.
    #[test]
    fn journal_is_compacted() {
        use crate::writer::{COMPACT_FACTOR, COMPACT_MIN};
        let dir = tempfile::tempdir().unwrap();
        let mut store = Filestore::open(dir.path()).unwrap();
        let refreshes = COMPACT_MIN + 10;
        assert!(refreshes > COMPACT_FACTOR);
        publish(&mut store, "x", b"same bytes").unwrap();
        for _ in 0..refreshes {
            let (t, size, sha) = temp(&store, b"same bytes");
            let r = store.publish(SystemTime::now(), (U, SERVER), "x", t, size, sha);
            assert_eq!(r.unwrap(), Published::Refreshed);
        }
        store.sync();
        // The writer compacts after the batch that held the barrier.
        poll_until(&mut store, "the compaction past the bound", |s| {
            s.persist_counters().compactions >= 2
        });
        let c = store.persist_counters();
        assert_eq!(c.compactions, 2, "one at open, one past the bound: {c:?}");
        let j = dir.path().join(INDEX_JOURNAL);
        let left = journal::read::<IndexRecord>(&j).unwrap().records.len() as u64;
        assert!(left < 20, "{left} records left after compaction");
        let text = fs::read_to_string(dir.path().join(INDEX)).unwrap();
        assert!(text.contains("\"times_seen\""));
        drop(store);
        let store = Filestore::open(dir.path()).unwrap();
        assert_eq!(
            store.lookup(U, SERVER, "x").unwrap().times_seen,
            refreshes + 1
        );
        assert_eq!(read_index(dir.path()).unwrap().len(), 1);
    }

    /// An `index.json` as earlier versions wrote it (pretty JSON, no
    /// journal) loads as the snapshot, and is rewritten with the journal
    /// folded in.
    #[test]
    fn old_index_without_journal_loads() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Filestore::open(dir.path()).unwrap();
        publish(&mut store, "boot/pxelinux.0", b"pxe").unwrap();
        publish(&mut store, "vmlinuz", &[9; 3000]).unwrap();
        let entries: Vec<Entry> = store.entries().cloned().collect();
        drop(store);
        let old = serde_json::json!({ "version": 1, "entries": entries });
        fs::write(
            dir.path().join(INDEX),
            serde_json::to_vec_pretty(&old).unwrap(),
        )
        .unwrap();
        fs::remove_file(dir.path().join(INDEX_JOURNAL)).unwrap();
        let store = Filestore::open(dir.path()).unwrap();
        assert_eq!(store.load_report().loaded, 2);
        assert_eq!(store.entries().cloned().collect::<Vec<_>>(), entries);
    }

    /// A crash between the rename into files/ and the record leaves a file
    /// no record names: removed at the next open (its stored name holds
    /// hashes only, so it cannot be adopted). A record whose file is gone
    /// is dropped.
    #[test]
    fn crash_between_rename_and_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Filestore::open(dir.path()).unwrap();
        publish(&mut store, "kept", b"kept").unwrap();
        // What the writer had renamed when the crash came.
        let unrecorded = Entry {
            server: SERVER,
            vlan: U,
            shared: false,
            name: "late".into(),
            size: 4,
            sha256: Digest256([7; 32]),
            first_seen: UNIX_EPOCH,
            last_seen: UNIX_EPOCH,
            times_seen: 1,
            last_used: UNIX_EPOCH,
            stored_as: stored_name(&(SERVER, Some(U), "late".into()), &Digest256([7; 32])),
        };
        fs::write(store.path_of(&unrecorded), b"late").unwrap();
        drop(store);
        // And a record whose file never made it.
        let ghost = Entry {
            name: "ghost".into(),
            stored_as: stored_name(&(SERVER, Some(U), "ghost".into()), &Digest256([8; 32])),
            sha256: Digest256([8; 32]),
            ..unrecorded.clone()
        };
        let mut line = Vec::new();
        journal::encode(&IndexRecord::Put { entry: ghost }, &mut line);
        let j = dir.path().join(INDEX_JOURNAL);
        let mut bytes = fs::read(&j).unwrap();
        bytes.extend_from_slice(&line);
        fs::write(&j, bytes).unwrap();
        let store = Filestore::open(dir.path()).unwrap();
        let r = *store.load_report();
        assert_eq!((r.loaded, r.missing, r.orphans_removed), (1, 1, 1));
        assert!(!store.path_of(&unrecorded).exists());
        assert!(store.lookup(U, SERVER, "kept").is_some());
    }

    /// A writer stuck on a slow disk never blocks the caller: with its
    /// queue full, refreshed entries' records wait in memory (sent once
    /// there is room, nothing lost), a new file is refused and its
    /// temporary file removed, and both are counted.
    #[test]
    fn a_full_queue_defers_and_never_blocks() {
        use crate::writer::QUEUE;
        let dir = tempfile::tempdir().unwrap();
        let mut store = Filestore::open(dir.path()).unwrap();
        publish(&mut store, "x", b"same bytes").unwrap();
        let (unpause, paused) = crossbeam::channel::bounded::<()>(0);
        assert!(store.writer.handle().try_send(Job::Pause(paused)));
        let started = std::time::Instant::now();
        for _ in 0..QUEUE + 10 {
            let (t, size, sha) = temp(&store, b"same bytes");
            let r = store.publish(SystemTime::now(), (U, SERVER), "x", t, size, sha);
            assert_eq!(r.unwrap(), Published::Refreshed);
        }
        let (t, size, sha) = temp(&store, b"new file");
        let r = store.publish(SystemTime::now(), (U, SERVER), "y", t, size, sha);
        assert!(matches!(r, Err(FilestoreError::Deferred)), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "it waited");
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
        assert!(store.persist_counters().deferred >= 10);
        drop(unpause);
        store.sync();
        drop(store);
        let store = Filestore::open(dir.path()).unwrap();
        let e = store.lookup(U, SERVER, "x").unwrap();
        assert_eq!(
            e.times_seen,
            QUEUE as u64 + 11,
            "the last refresh is recorded"
        );
        assert!(store.lookup(U, SERVER, "y").is_none());
    }

    /// Publishing returns at once; the entry appears when the writer has
    /// put the bytes in place, never before.
    #[test]
    fn entry_appears_only_once_its_file_is_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Filestore::open(dir.path()).unwrap();
        let (t, size, sha) = temp(&store, &[5; 70_000]);
        let r = store.publish(SystemTime::now(), (U, SERVER), "f", t, size, sha);
        assert_eq!(r.unwrap(), Published::New);
        assert_eq!(store.used_bytes(), 70_000, "reserved at once");
        poll_until(&mut store, "the publish", |s| {
            s.lookup(U, SERVER, "f")
                .is_some_and(|e| s.path_of(e).exists())
        });
    }

    #[test]
    fn one_lock_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DirLock::acquire(dir.path()).unwrap();
        assert_eq!(DirLock::holder(dir.path()), Some(std::process::id()));
        // flock belongs to the open file: a second open conflicts, even here.
        let e = DirLock::acquire(dir.path()).unwrap_err();
        assert!(
            matches!(&e, FilestoreError::Io { source, .. } if source.kind() == io::ErrorKind::WouldBlock),
            "{e}"
        );
        drop(lock);
        DirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn hostile_names_stay_inside_files() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let mut store = Filestore::open(&cache).unwrap();
        let long = "a/".repeat(250);
        let names = [
            "../../../etc/passwd",
            "/etc/passwd",
            "..",
            ".",
            "..\\..\\windows\\system32",
            "index.json",
            "files/../index.json",
            "tmp/x",
            "a\u{1}b\u{7f}c\n",
            "C:\\boot\\bcd",
            long.as_str(),
            "\u{202e}fdp.exe",
        ];
        let mut stored = 0;
        for (i, name) in names.iter().enumerate() {
            let content = vec![i as u8; 100 + i];
            // Names are stored as servers resolve them; names that resolve
            // to no file under a root are refused.
            let Ok(normal) = wire::tftp::normalize_name(name) else {
                assert!(matches!(
                    publish(&mut store, name, &content),
                    Err(FilestoreError::BadName { .. })
                ));
                assert!(store.lookup(U, SERVER, name).is_none());
                continue;
            };
            assert_eq!(publish(&mut store, name, &content).unwrap(), Published::New);
            stored += 1;
            let e = store.lookup(U, SERVER, name).unwrap().clone();
            assert_eq!(e.name, normal);
            let path = store.path_of(&e);
            assert_eq!(path.parent().unwrap(), cache.join("files"));
            assert_eq!(fs::read(&path).unwrap(), content);
        }
        assert_eq!(stored, 7);
        // Exactly one file per stored name under files/, the index and its
        // journal, and nothing else.
        let files = all_files(dir.path());
        assert_eq!(files.len(), stored + 2);
        let (index, journal) = (cache.join(INDEX), cache.join(INDEX_JOURNAL));
        assert!(files.contains(&index) && files.contains(&journal));
        assert!(files
            .iter()
            .all(|f| f.starts_with(cache.join("files")) || f == &index || f == &journal));
        let reopened = Filestore::open(&cache).unwrap();
        assert_eq!(reopened.len(), stored);
        assert_eq!(reopened.load_report().loaded, stored as u64);
    }

    #[test]
    fn refresh_replace_and_quota() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Filestore::open(dir.path()).unwrap();
        store.set_quota(1000);
        assert_eq!(publish(&mut store, "a", &[1; 600]).unwrap(), Published::New);
        assert_eq!(
            publish(&mut store, "a", &[1; 600]).unwrap(),
            Published::Refreshed
        );
        let e = store.lookup(U, SERVER, "a").unwrap().clone();
        assert_eq!(e.times_seen, 2);
        // Too big next to "a", which is being served (so not evicted); the
        // refused file leaves nothing behind.
        let served = store.hold(&e, SystemTime::now());
        assert!(matches!(
            publish(&mut store, "b", &[2; 500]),
            Err(FilestoreError::QuotaFull { .. })
        ));
        assert!(store.lookup(U, SERVER, "b").is_none());
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
        drop(served);
        // Replacing "a" frees its old size first.
        assert_eq!(
            publish(&mut store, "a", &[3; 900]).unwrap(),
            Published::Replaced
        );
        let e2 = store.lookup(U, SERVER, "a").unwrap().clone();
        assert_eq!(
            (e2.size, e2.times_seen, e2.first_seen),
            (900, 3, e.first_seen)
        );
        assert_eq!(fs::read(store.path_of(&e2)).unwrap(), vec![3; 900]);
        assert!(!store.path_of(&e).exists(), "old version removed");
        assert_eq!(store.used_bytes(), 900);
    }

    /// Publishes `content` as `name` at second `t` of a simulated clock.
    fn publish_at(store: &mut Filestore, name: &str, content: &[u8], t: u64) -> Published {
        let (f, size, sha) = temp(store, content);
        let wall = UNIX_EPOCH + Duration::from_secs(t);
        let r = store
            .publish(wall, (U, SERVER), name, f, size, sha)
            .unwrap();
        store.sync();
        r
    }

    #[test]
    fn eviction_takes_the_least_recently_used_and_never_one_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Filestore::open(dir.path()).unwrap();
        store.set_quota(1000);
        let at = |t: u64| UNIX_EPOCH + Duration::from_secs(t);
        for (i, n) in ["a", "b", "c"].iter().enumerate() {
            publish_at(&mut store, n, &[i as u8; 300], i as u64 + 1);
        }
        // 900 bytes: at the high watermark (90 %), nothing evicted.
        assert_eq!(store.removals(), Removals::default());
        // "a" (the oldest) is served at t=4: "b" is the least recently used.
        let a = store.lookup(U, SERVER, "a").unwrap().clone();
        drop(store.hold(&a, at(4)));
        let b = store.lookup(U, SERVER, "b").unwrap().clone();
        publish_at(&mut store, "d", &[4; 200], 5);
        assert!(store.lookup(U, SERVER, "b").is_none(), "b evicted");
        assert!(!store.path_of(&b).exists(), "b's file removed");
        assert_eq!(store.used_bytes(), 800, "down to the low watermark");
        let r = store.removals();
        assert_eq!((r.evicted_files, r.evicted_bytes), (1, 300));
        // "c" is the oldest now, but a session is serving it: "a" goes.
        let c = store.lookup(U, SERVER, "c").unwrap().clone();
        let serving = store.hold(&c, at(3));
        publish_at(&mut store, "e", &[5; 300], 6);
        assert!(store.lookup(U, SERVER, "c").is_some(), "in use: kept");
        assert!(store.lookup(U, SERVER, "a").is_none(), "a evicted");
        // Everything else in use and no room: refused, nothing evicted.
        let d = store.lookup(U, SERVER, "d").unwrap().clone();
        let e = store.lookup(U, SERVER, "e").unwrap().clone();
        let more = [store.hold(&d, at(7)), store.hold(&e, at(7))];
        let (f, size, sha) = temp(&store, &[6; 300]);
        assert!(matches!(
            store.publish(at(8), (U, SERVER), "f", f, size, sha),
            Err(FilestoreError::QuotaFull { .. })
        ));
        assert_eq!(store.len(), 3);
        drop((serving, more));
        // The last use is on disk: a reopened cache evicts in the same order.
        store.sync();
        store.close();
        drop(store);
        let mut store = Filestore::open(dir.path()).unwrap();
        store.set_quota(1000);
        assert_eq!(
            store.lookup(U, SERVER, "d").unwrap().last_used,
            at(7),
            "last use persisted"
        );
        assert_eq!(store.len(), 3);
        publish_at(&mut store, "g", &[7; 300], 9);
        // c (used at 3) goes; d and e (used at 7) stay.
        assert!(store.lookup(U, SERVER, "c").is_none());
        assert!(store.lookup(U, SERVER, "d").is_some());
        assert!(store.lookup(U, SERVER, "e").is_some());
    }

    #[test]
    fn operator_removals_spare_files_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Filestore::open(dir.path()).unwrap();
        let at = |t: u64| UNIX_EPOCH + Duration::from_secs(t);
        publish_at(&mut store, "old", &[1; 100], 10);
        publish_at(&mut store, "/boot/x", &[2; 100], 20);
        publish_at(&mut store, "new", &[3; 100], 30);
        let x = store.lookup(U, SERVER, "boot/x").unwrap().clone();
        let serving = store.hold(&x, at(25));
        assert_eq!(store.remove_named("boot/x"), Err(RemoveRefused::InUse));
        drop(serving);
        let gone = store.remove_named("./boot/x").unwrap();
        assert_eq!(gone.len(), 1);
        store.sync();
        assert!(!store.path_of(&x).exists());
        assert_eq!(store.remove_named("absent").unwrap(), Vec::new());
        // Purge what was not used since t=15: "old" only.
        let (gone, kept) = store.purge(Some(at(15))).unwrap();
        assert_eq!((gone.len(), kept), (1, 0));
        assert_eq!(gone[0].name, "old");
        let n = store.lookup(U, SERVER, "new").unwrap().clone();
        let serving = store.hold(&n, at(40));
        let (gone, kept) = store.purge(None).unwrap();
        assert_eq!((gone.len(), kept), (0, 1));
        drop(serving);
        let r = store.removals();
        assert_eq!(
            (r.removed_files, r.removed_bytes, r.evicted_files),
            (2, 200, 0)
        );
        store.sync();
        store.close();
        drop(store);
        let store = Filestore::open(dir.path()).unwrap();
        assert_eq!(store.len(), 1, "removals persisted");
        assert_eq!(store.load_report().orphans_removed, 0);
    }

    #[test]
    fn reopen_keeps_complete_drops_broken_and_cleans_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Filestore::open(dir.path()).unwrap();
        for n in ["keep", "gone", "short"] {
            publish(&mut store, n, n.repeat(300).as_bytes()).unwrap();
        }
        let gone = store.path_of(store.lookup(U, SERVER, "gone").unwrap());
        let short = store.path_of(store.lookup(U, SERVER, "short").unwrap());
        let keep = store.lookup(U, SERVER, "keep").unwrap().clone();
        drop(store);
        fs::remove_file(gone).unwrap();
        fs::write(&short, b"truncated").unwrap();
        fs::write(dir.path().join("tmp/leftover.part"), b"partial").unwrap();
        fs::write(dir.path().join("files/orphan"), b"x").unwrap();

        let store = Filestore::open(dir.path()).unwrap();
        let r = *store.load_report();
        assert_eq!(
            (
                r.loaded,
                r.missing,
                r.size_mismatch,
                r.tmp_removed,
                r.orphans_removed
            ),
            (1, 1, 1, 1, 2) // the truncated file is an orphan once dropped
        );
        assert_eq!(store.lookup(U, SERVER, "keep"), Some(&keep));
        assert_eq!(store.len(), 1);
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
        drop(store);
        // The cleaned index is what a third open sees.
        let again = Filestore::open(dir.path()).unwrap();
        assert_eq!(again.load_report().loaded, 1);
        assert_eq!(again.load_report().missing, 0);
    }

    fn publish_on(
        store: &mut Filestore,
        scope: VlanScope,
        name: &str,
        content: &[u8],
    ) -> Result<Published, FilestoreError> {
        let (t, size, sha) = temp(store, content);
        let r = store.publish(SystemTime::now(), (scope, SERVER), name, t, size, sha);
        store.sync();
        r
    }

    /// Issue 13: the VLAN is part of the key. The same server address and
    /// name on two VLANs are two entries and two files, even with the same
    /// content (replacing one never removes the other's file); neither is
    /// found untagged; both survive a restart.
    #[test]
    fn two_vlans_are_two_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Filestore::open(dir.path()).unwrap();
        let (v100, v200) = (
            VlanScope::new(Some(100), None),
            VlanScope::new(Some(200), None),
        );
        assert_eq!(
            publish_on(&mut store, v100, "f", b"same").unwrap(),
            Published::New
        );
        assert_eq!(
            publish_on(&mut store, v200, "f", b"same").unwrap(),
            Published::New
        );
        assert_eq!(store.len(), 2);
        assert!(store.lookup(U, SERVER, "f").is_none());
        let a = store.lookup(v100, SERVER, "/f").unwrap().clone();
        let b = store.lookup(v200, SERVER, "f").unwrap().clone();
        assert_eq!((a.vlan, b.vlan, a.shared), (v100, v200, false));
        assert_ne!(store.path_of(&a), store.path_of(&b));
        assert_eq!(
            publish_on(&mut store, v100, "f", b"new").unwrap(),
            Published::Replaced
        );
        assert_eq!(fs::read(store.path_of(&b)).unwrap(), b"same");
        let reopened = Filestore::open(dir.path()).unwrap();
        assert_eq!(reopened.load_report().loaded, 2);
        let a2 = reopened.lookup(v100, SERVER, "f").unwrap();
        assert_eq!(fs::read(reopened.path_of(a2)).unwrap(), b"new");
        assert_eq!(reopened.lookup(v200, SERVER, "f"), Some(&b));
    }

    /// `share_across_vlans`: one entry whatever VLAN fills or asks; entries
    /// of the other mode stay but are not served.
    #[test]
    fn shared_across_vlans_is_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Filestore::open(dir.path()).unwrap();
        publish_on(&mut store, VlanScope::new(Some(7), None), "own", b"x").unwrap();
        store.set_share_across_vlans(true);
        let v = |o| VlanScope::new(Some(o), None);
        assert_eq!(
            publish_on(&mut store, v(100), "f", b"c").unwrap(),
            Published::New
        );
        assert_eq!(
            publish_on(&mut store, v(200), "f", b"c").unwrap(),
            Published::Refreshed
        );
        for scope in [U, v(100), v(300)] {
            assert!(store.lookup(scope, SERVER, "f").is_some_and(|e| e.shared));
        }
        assert!(store.lookup(v(7), SERVER, "own").is_none());
        assert_eq!(store.len(), 2);
        let mut reopened = Filestore::open(dir.path()).unwrap();
        assert_eq!(reopened.len(), 2);
        assert!(
            reopened.lookup(v(100), SERVER, "f").is_none(),
            "sharing off"
        );
        assert!(reopened.lookup(v(7), SERVER, "own").is_some());
        reopened.set_share_across_vlans(true);
        assert!(reopened.lookup(v(100), SERVER, "f").is_some());
    }

    /// An index written before VLANs were keys (no `vlan`, no `shared`)
    /// loads as untagged, under the same stored names.
    #[test]
    fn index_without_vlans_loads_as_untagged() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Filestore::open(dir.path()).unwrap();
        publish(&mut store, "old", b"bytes").unwrap();
        drop(store);
        // Opening folds the journal into index.json.
        drop(Filestore::open(dir.path()).unwrap());
        let index = dir.path().join("index.json");
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&index).unwrap()).unwrap();
        let e = v["entries"][0].as_object_mut().unwrap();
        assert_eq!(e["vlan"], serde_json::json!([0, 0]));
        e.remove("vlan");
        e.remove("shared");
        fs::write(&index, serde_json::to_vec(&v).unwrap()).unwrap();
        let store = Filestore::open(dir.path()).unwrap();
        assert_eq!(store.load_report().loaded, 1);
        let e = store.lookup(U, SERVER, "old").unwrap();
        assert_eq!((e.vlan, e.shared), (U, false));
        assert_eq!(fs::read(store.path_of(e)).unwrap(), b"bytes");
    }

    #[test]
    fn tampered_index_cannot_point_outside() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Filestore::open(dir.path()).unwrap();
        publish(&mut store, "x", b"hello").unwrap();
        drop(store);
        // Opening folds the journal into index.json.
        drop(Filestore::open(dir.path()).unwrap());
        let index = dir.path().join("index.json");
        let text = fs::read_to_string(&index).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let stored = v["entries"][0]["stored_as"].as_str().unwrap().to_owned();
        fs::write(&index, text.replace(&stored, "../../etc/passwd")).unwrap();
        let store = Filestore::open(dir.path()).unwrap();
        assert_eq!(store.load_report().invalid, 1);
        assert!(store.is_empty());
        drop(store);

        fs::write(&index, b"{not json").unwrap();
        let store = Filestore::open(dir.path()).unwrap();
        assert!(store.load_report().index_corrupt);
        assert!(dir.path().join("index.json.corrupt").exists());
    }
}
