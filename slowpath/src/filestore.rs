//! The verified cache on disk.
//!
//! Layout of a cache directory:
//!
//! ```text
//! <cache_dir>/index.json      entries, written atomically (temp, fsync, rename)
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

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{info, warn};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wire::frame::VlanScope;

use crate::reassembly::TempFile;

const INDEX: &str = "index.json";
const INDEX_TMP: &str = "index.json.tmp";
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
    /// The file's name under `files/` (informational: the path is always
    /// derived again from the key and hash).
    pub stored_as: String,
}

#[derive(Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    entries: Vec<Entry>,
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

/// An entry's key: server, VLAN scope (`None`: shared across VLANs), name.
type Key = (Ipv4Addr, Option<VlanScope>, String);

fn key_of(e: &Entry) -> Key {
    (e.server, (!e.shared).then_some(e.vlan), e.name.clone())
}

/// The verified cache in one directory.
#[derive(Debug)]
pub struct Filestore {
    dir: PathBuf,
    index: BTreeMap<Key, Entry>,
    used: u64,
    quota: u64,
    report: LoadReport,
    /// Entries whose file was hashed by this process (published by it, or
    /// checked by [`Filestore::verify`]); the others were only checked for
    /// size when the index was loaded.
    verified: std::collections::BTreeSet<Key>,
    /// Entries removed because their file no longer hashed to the index.
    corrupt_removed: u64,
    /// One cache for every VLAN (`[cache] share_across_vlans`).
    share_across_vlans: bool,
}

impl Filestore {
    /// Opens (creating if needed) the cache in `dir`: removes leftovers in
    /// `tmp/`, reloads the index, and drops entries whose file is missing or
    /// of the wrong size. The quota is unlimited until [`Filestore::set_quota`].
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
        let _ = fs::remove_file(dir.join(INDEX_TMP));

        let index_path = dir.join(INDEX);
        let entries = match fs::read(&index_path) {
            Ok(bytes) => match serde_json::from_slice::<IndexFile>(&bytes) {
                Ok(f) => Some(f.entries),
                Err(e) => {
                    // Keep the evidence and the files; start empty.
                    warn!("{}: corrupt index ({e}), set aside", index_path.display());
                    let aside = dir.join("index.json.corrupt");
                    fs::rename(&index_path, &aside).map_err(io_err(&index_path))?;
                    report.index_corrupt = true;
                    None
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Some(Vec::new()),
            Err(e) => return Err(io_err(&index_path)(e)),
        };

        let mut store = Filestore {
            dir: dir.to_owned(),
            index: BTreeMap::new(),
            used: 0,
            quota: u64::MAX,
            report,
            verified: Default::default(),
            corrupt_removed: 0,
            share_across_vlans: false,
        };
        let listed = entries.is_some();
        let mut dropped = false;
        for entry in entries.unwrap_or_default() {
            let key = key_of(&entry);
            let expected = stored_name(&key, &entry.sha256);
            // Names are stored normalised; an entry of an older version
            // under another spelling could never be looked up: dropped
            // (the next transfer of the file caches it again).
            let normal = wire::tftp::normalize_name(&entry.name).ok();
            if entry.stored_as != expected
                || store.index.contains_key(&key)
                || normal.as_deref() != Some(entry.name.as_str())
            {
                store.report.invalid += 1;
                dropped = true;
                continue;
            }
            let path = store.path_of(&entry);
            match fs::metadata(&path) {
                Ok(m) if m.is_file() && m.len() == entry.size => {
                    store.used += entry.size;
                    store.index.insert(key, entry);
                    store.report.loaded += 1;
                }
                Ok(_) => {
                    warn!(
                        "cache: {:?} from {}: size differs, dropped",
                        entry.name, entry.server
                    );
                    store.report.size_mismatch += 1;
                    dropped = true;
                }
                Err(_) => {
                    warn!(
                        "cache: {:?} from {}: file missing, dropped",
                        entry.name, entry.server
                    );
                    store.report.missing += 1;
                    dropped = true;
                }
            }
        }
        // Files no entry names are from a crash between publishing a file and
        // writing the index: incomplete as far as the index knows.
        if listed {
            for e in fs::read_dir(&files).map_err(io_err(&files))? {
                let e = e.map_err(io_err(&files))?;
                let name = e.file_name();
                let known = store
                    .index
                    .values()
                    .any(|en| std::ffi::OsStr::new(&en.stored_as) == name);
                if !known {
                    let path = e.path();
                    let _ = fs::remove_file(&path).or_else(|_| fs::remove_dir_all(&path));
                    store.report.orphans_removed += 1;
                }
            }
        }
        if dropped {
            store.write_index()?;
        }
        info!(
            "cache {}: {} files, {} bytes ({:?})",
            dir.display(),
            store.index.len(),
            store.used,
            store.report
        );
        Ok(store)
    }

    /// Sets the quota in bytes; files that would take the total over it are
    /// refused.
    pub fn set_quota(&mut self, bytes: u64) {
        self.quota = bytes;
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

    /// Bytes of cached files.
    pub fn used_bytes(&self) -> u64 {
        self.used
    }

    /// Bytes that can still be published.
    pub fn space_left(&self) -> u64 {
        self.quota.saturating_sub(self.used)
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
        self.dir
            .join(FILES)
            .join(stored_name(&key_of(entry), &entry.sha256))
    }

    /// Publishes a verified file: `temp` (under [`Filestore::tmp_dir`]) holds
    /// `size` bytes hashing to `sha256`, requested as `name` on the VLANs
    /// `scope` from `server` (the pair the tracker keyed the transfer by).
    ///
    /// The same content again only bumps the entry; new content is fsynced,
    /// renamed into `files/`, then the index is rewritten atomically, then an
    /// old version is removed. On error nothing is published and `temp` is
    /// removed.
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
                self.write_index()?;
                // The transfer just hashed to it, but the file on disk was
                // not read: leave its state as it was.
                return Ok(Published::Refreshed);
            }
        }
        let freed = old.as_ref().map_or(0, |o| o.size);
        let used_after = self.used - freed;
        if used_after.saturating_add(size) > self.quota {
            return Err(FilestoreError::QuotaFull {
                needed: size,
                used: self.used,
                quota: self.quota,
            });
        }
        let stored_as = stored_name(&key, &sha256);
        let dest = self.dir.join(FILES).join(&stored_as);
        // The reassembly fsynced the data; the rename and the directory
        // entry are made durable here.
        temp.persist(&dest).map_err(io_err(&dest))?;
        sync_dir(&self.dir.join(FILES))?;
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
            stored_as,
        };
        self.index.insert(key.clone(), entry);
        self.verified.insert(key.clone());
        self.used = used_after + size;
        if let Err(e) = self.write_index() {
            // Not in the index on disk: undo in memory too, and drop the file
            // (an orphan would be removed at the next open anyway).
            match old.clone() {
                Some(o) => self.index.insert(key, o),
                None => self.index.remove(&key),
            };
            self.used = self.used - size + freed;
            let _ = fs::remove_file(&dest);
            return Err(e);
        }
        match old {
            Some(o) => {
                let _ = fs::remove_file(self.path_of(&o));
                Ok(Published::Replaced)
            }
            None => Ok(Published::New),
        }
    }

    /// Whether `entry`'s file was hashed by this process ([`Self::verify`],
    /// or published by it).
    pub fn is_verified(&self, entry: &Entry) -> bool {
        self.verified.contains(&key_of(entry))
    }

    /// Re-hashes `entry`'s file: true when it still is the bytes that were
    /// verified (size and SHA-256 of the index). When it is not (a disk
    /// error, a file changed behind the cache's back), the entry and its
    /// file are removed and counted ([`Self::corrupt_removed`]): never
    /// served. Errors only when the index cannot be rewritten.
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
        warn!(
            "cache: {:?} from {} no longer hashes to its index entry: removed",
            e.name, e.server
        );
        self.index.remove(&key);
        self.verified.remove(&key);
        self.used -= e.size;
        self.corrupt_removed += 1;
        let _ = fs::remove_file(&path);
        self.write_index()?;
        Ok(false)
    }

    /// Entries removed by [`Self::verify`] since the cache was opened.
    pub fn corrupt_removed(&self) -> u64 {
        self.corrupt_removed
    }

    /// Writes `index.json` atomically: temp file, fsync, rename, fsync dir.
    fn write_index(&self) -> Result<(), FilestoreError> {
        let tmp = self.dir.join(INDEX_TMP);
        let index = IndexFile {
            version: INDEX_VERSION,
            entries: self.index.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&index).expect("an index always serializes");
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(&bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        let path = self.dir.join(INDEX);
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_dir(&self.dir)
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

fn sync_dir(dir: &Path) -> Result<(), FilestoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// The index of the cache in `dir`, read without changing anything (for
/// listing it while bootcache runs: the index is replaced atomically). A
/// missing index is an empty cache.
pub fn read_index(dir: &Path) -> Result<Vec<Entry>, FilestoreError> {
    let index_path = dir.join(INDEX);
    match fs::read(&index_path) {
        Ok(bytes) => serde_json::from_slice::<IndexFile>(&bytes)
            .map(|f| f.entries)
            .map_err(|e| io_err(&index_path)(io::Error::new(io::ErrorKind::InvalidData, e))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err(&index_path)(e)),
    }
}

/// Size and SHA-256 of the file at `path`, read in 1 MiB pieces.
fn hash_file(path: &Path) -> io::Result<(u64, [u8; 32])> {
    use std::io::Read;
    let mut f = File::open(path)?;
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
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |e| match Self::holder(dir) {
                Some(pid) if e == rustix::io::Errno::WOULDBLOCK => io_err(&path)(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("locked by pid {pid}"),
                )),
                _ => io_err(&path)(e.into()),
            },
        )?;
        f.set_len(0).map_err(io_err(&path))?;
        writeln!(f, "{}", std::process::id()).map_err(io_err(&path))?;
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
        store.publish(SystemTime::now(), (U, SERVER), name, t, size, sha)
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
    /// it was hashed again; a file whose bytes changed on disk (same size)
    /// is removed and counted, never served.
    #[test]
    fn verify_rehashes_and_removes_what_changed() {
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
        let mut store = Filestore::open(dir.path()).unwrap();
        assert_eq!(store.len(), 2, "the size check alone passes both");
        assert!(!store.is_verified(&good) && !store.is_verified(&bad));
        assert!(store.verify(&good).unwrap());
        assert!(store.is_verified(&good));
        assert!(!store.verify(&bad).unwrap());
        assert!(store.lookup(U, SERVER, "bad").is_none());
        assert!(!path.exists());
        assert_eq!(store.corrupt_removed(), 1);
        let reopened = Filestore::open(dir.path()).unwrap();
        assert_eq!(reopened.len(), 1);
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
        // Exactly one file per stored name under files/, the index, and
        // nothing else.
        let files = all_files(dir.path());
        assert_eq!(files.len(), stored + 1);
        assert!(files.contains(&cache.join("index.json")));
        assert!(files
            .iter()
            .all(|f| f.starts_with(cache.join("files")) || f == &cache.join("index.json")));
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
        // Too big next to "a"; the refused file leaves nothing behind.
        assert!(matches!(
            publish(&mut store, "b", &[2; 500]),
            Err(FilestoreError::QuotaFull { .. })
        ));
        assert!(store.lookup(U, SERVER, "b").is_none());
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
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
        store.publish(SystemTime::now(), (scope, SERVER), name, t, size, sha)
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
        let index = dir.path().join("index.json");
        let text = fs::read_to_string(&index).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let stored = v["entries"][0]["stored_as"].as_str().unwrap().to_owned();
        fs::write(&index, text.replace(&stored, "../../etc/passwd")).unwrap();
        let store = Filestore::open(dir.path()).unwrap();
        assert_eq!(store.load_report().invalid, 1);
        assert!(store.is_empty());

        fs::write(&index, b"{not json").unwrap();
        let store = Filestore::open(dir.path()).unwrap();
        assert!(store.load_report().index_corrupt);
        assert!(dir.path().join("index.json.corrupt").exists());
    }
}
