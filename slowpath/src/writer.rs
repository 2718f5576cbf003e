//! The cache's writer thread: every disk write the cache needs after it was
//! opened, off the thread that serves clients and fills the cache.
//!
//! The serving thread hands jobs over a bounded queue ([`QUEUE`] slots) and
//! never waits: a full queue defers persistence (the caller keeps what it
//! could not send, or drops a publish, and [`PersistStats::deferred`]
//! counts it). The writer:
//!
//! - publishes reassembled files: fsync of the data, rename into `files/`,
//!   fsync of the directory, then an index record; only then is the file
//!   reported published ([`Done::Published`]), so the serving thread never
//!   lists a file whose bytes are not in place;
//! - appends index and image-map records to their journals (one fsync per
//!   batch of jobs), and compacts a journal into its snapshot when it holds
//!   more than [`COMPACT_FACTOR`] records per live entry;
//! - re-hashes files: every entry it starts with (what the cache held when
//!   it was opened), at full speed in [`REHASH_CHUNK`] pieces whenever no
//!   job waits (a large file never holds up publishing for long), so that
//!   a restarted cache is servable again within seconds; a file asked for
//!   ([`Job::Verify`]: a client wants it) goes to the front of that pass;
//!   and a background scrub of every entry in turn, limited to a rate in
//!   bytes per second. A file whose bytes no longer hash to its entry is
//!   removed with its record ([`Done::Corrupt`]).
//!
//! The writer keeps its own copy of the index (and of the image map, once
//! given a snapshot of it) so that it compacts without asking anyone.
//!
//! Failed writes are counted ([`PersistStats::errors`]) and logged the
//! first time and at every power of two: a full or read-only disk stops
//! persistence, never serving.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{
    bounded, unbounded, Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError,
};
use log::{error, info, warn};
use sha2::{Digest, Sha256};

use crate::filestore::{self, Entry, IndexRecord, Key};
use crate::imagemap::{self, ClientKey, ClientOp, ClientRecord};
use crate::journal::{self, Appender};
use crate::reassembly::TempFile;

/// Jobs the queue holds; past it persistence is deferred.
pub const QUEUE: usize = 1024;
/// A journal is compacted when it holds more than this many records per
/// live entry (and at least [`COMPACT_MIN`]).
pub const COMPACT_FACTOR: u64 = 4;
/// Journals shorter than this are never compacted.
pub const COMPACT_MIN: u64 = 1024;
/// Jobs handled between two syncs of the journals.
const BATCH: usize = 256;
/// Bytes the scrub reads per step (less when the rate is lower).
const SCRUB_CHUNK: u64 = 256 << 10;
/// Bytes the re-hash after opening reads between two looks at the queue.
pub const REHASH_CHUNK: usize = 1 << 20;
/// The scrub's pause when there is nothing to scrub.
const SCRUB_IDLE: Duration = Duration::from_secs(1);

/// What the serving thread asks of the writer.
#[derive(Debug)]
pub(crate) enum Job {
    /// Publish `temp` (complete and hashed) as `entry`.
    Publish { temp: TempFile, entry: Entry },
    /// Append an index record.
    Index(IndexRecord),
    /// Remove a file no entry refers to any more (an old version).
    RemoveFile(PathBuf),
    /// Remove an entry (evicted, or by the operator): its removal record,
    /// synced, then its file.
    Remove(Entry),
    /// Hash `entry`'s file now (before its first serve).
    Verify(Entry),
    /// Append image-map records.
    Clients(Vec<ClientOp>),
    /// The whole image map: rewrite its snapshot, empty its journal.
    ClientSnapshot(Vec<ClientRecord>),
    /// Scrub at this many bytes per second (0: off).
    ScrubRate(u64),
    /// Reply once every earlier job is done and its records synced.
    Barrier(Sender<()>),
    /// Finish: sync and end the thread.
    Stop,
    /// Tests: wait until the sender is dropped (a writer stuck on a slow
    /// disk).
    #[cfg(test)]
    Pause(Receiver<()>),
}

/// What the writer reports back.
#[derive(Debug)]
pub(crate) enum Done {
    /// The file is in place and recorded: it may be served.
    Published(Entry),
    /// The file could not be put in place: nothing was published.
    PublishFailed(Entry),
    /// The file still hashes to the entry.
    Verified(Entry),
    /// The file no longer hashes to the entry: file and record removed.
    Corrupt(Entry),
    /// A verification found the entry replaced or gone: nothing done.
    Stale(Entry),
}

/// The writer's counters, shared with whoever reads them.
#[derive(Debug, Default)]
pub struct PersistStats {
    /// Jobs not queued because the queue was full (records kept for
    /// later, publishes dropped).
    pub deferred: AtomicU64,
    /// Writes that failed (publishing, journals, snapshots, removals).
    pub errors: AtomicU64,
    /// Records appended to the journals.
    pub records: AtomicU64,
    /// Journals folded into their snapshot.
    pub compactions: AtomicU64,
    /// Files the background scrub hashed completely.
    pub scrubbed_files: AtomicU64,
    /// Bytes the background scrub read.
    pub scrubbed_bytes: AtomicU64,
    /// Files re-hashed since the cache was opened, before their first
    /// serve (the pass over what the cache held, and requests).
    pub verified_files: AtomicU64,
}

/// A plain copy of [`PersistStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PersistCounters {
    /// See [`PersistStats::deferred`].
    pub deferred: u64,
    /// See [`PersistStats::errors`].
    pub errors: u64,
    /// See [`PersistStats::records`].
    pub records: u64,
    /// See [`PersistStats::compactions`].
    pub compactions: u64,
    /// See [`PersistStats::scrubbed_files`].
    pub scrubbed_files: u64,
    /// See [`PersistStats::scrubbed_bytes`].
    pub scrubbed_bytes: u64,
    /// See [`PersistStats::verified_files`].
    pub verified_files: u64,
    /// Jobs queued now.
    pub queued: u64,
}

/// The sending side, cloned into whoever persists through the writer.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: Sender<Job>,
    stats: Arc<PersistStats>,
}

impl WriterHandle {
    /// Queues `job` unless the queue is full (counted) or the writer is
    /// gone; false when the job was not queued (and is dropped).
    pub(crate) fn try_send(&self, job: Job) -> bool {
        match self.tx.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.stats.deferred.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Queues `job`, waiting for room: only where nothing is served yet
    /// (opening the cache).
    pub(crate) fn send_blocking(&self, job: Job) {
        if self.tx.send(job).is_err() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counters.
    pub fn counters(&self) -> PersistCounters {
        let s = &self.stats;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PersistCounters {
            deferred: g(&s.deferred),
            errors: g(&s.errors),
            records: g(&s.records),
            compactions: g(&s.compactions),
            scrubbed_files: g(&s.scrubbed_files),
            scrubbed_bytes: g(&s.scrubbed_bytes),
            verified_files: g(&s.verified_files),
            queued: self.tx.len() as u64,
        }
    }
}

/// The writer thread and its two channels.
#[derive(Debug)]
pub(crate) struct Writer {
    handle: WriterHandle,
    done: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
}

/// Where the index journal stands when the writer starts.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct JournalStart {
    /// Bytes up to the last complete record.
    pub(crate) len: u64,
    /// Records in it.
    pub(crate) records: u64,
}

impl Writer {
    /// Starts the writer of the cache in `dir`, whose index is `index`
    /// (what was loaded: the writer folds the journal into a new snapshot
    /// first, which also drops a torn tail).
    pub(crate) fn spawn(
        dir: &Path,
        index: BTreeMap<Key, Entry>,
        journal: JournalStart,
    ) -> io::Result<Writer> {
        let (tx, rx) = bounded(QUEUE);
        // Replies are bounded by the jobs in flight (one each at most) and
        // by the scrub's pace (one per file).
        let (done_tx, done) = unbounded();
        let stats = Arc::new(PersistStats::default());
        let mut index_journal = Appender::new(dir.join(filestore::INDEX_JOURNAL));
        index_journal.resume(journal.len, journal.records);
        let state = State {
            dir: dir.to_owned(),
            startup: index.values().cloned().collect(),
            rehashing: None,
            index,
            index_journal,
            clients: None,
            clients_journal: Appender::new(dir.join(imagemap::IMAGEMAP_JOURNAL)),
            stats: stats.clone(),
            done: done_tx,
            scrub: Scrub::default(),
        };
        let thread = std::thread::Builder::new()
            .name("bootcache-writer".into())
            .spawn(move || state.run(rx))?;
        Ok(Writer {
            handle: WriterHandle { tx, stats },
            done,
            thread: Some(thread),
        })
    }

    /// The sending side.
    pub(crate) fn handle(&self) -> &WriterHandle {
        &self.handle
    }

    /// The next report, if any.
    pub(crate) fn poll(&self) -> Option<Done> {
        self.done.try_recv().ok()
    }

    /// Waits until every job queued so far is done and synced.
    pub(crate) fn barrier(&self) {
        let (tx, rx) = bounded(1);
        if self.handle.tx.send(Job::Barrier(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// Finishes the queued jobs and ends the thread.
    pub(crate) fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.handle.tx.send(Job::Stop);
            if t.join().is_err() {
                error!("cache writer thread panicked");
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The background scrub's progress.
#[derive(Debug, Default)]
struct Scrub {
    /// Bytes per second; 0: off.
    rate: u64,
    /// The key scrubbed last (the next is the one after it, wrapping).
    cursor: Option<Key>,
    current: Option<Hashing>,
    /// When the next step may run.
    next_at: Option<Instant>,
}

/// A file part-way through the scrub.
#[derive(Debug)]
struct Hashing {
    entry: Entry,
    file: File,
    hasher: Sha256,
    read: u64,
}

/// The writer thread's state.
struct State {
    dir: PathBuf,
    /// Entries the cache held when opened (or asked for), not hashed
    /// again yet.
    startup: VecDeque<Entry>,
    /// The file of that pass being hashed.
    rehashing: Option<Hashing>,
    index: BTreeMap<Key, Entry>,
    index_journal: Appender,
    /// The image map as persisted, once a snapshot of it was given.
    clients: Option<BTreeMap<ClientKey, ClientRecord>>,
    clients_journal: Appender,
    stats: Arc<PersistStats>,
    done: Sender<Done>,
    scrub: Scrub,
}

impl State {
    fn run(mut self, rx: Receiver<Job>) {
        self.compact_index();
        'outer: loop {
            let first = if self.startup.is_empty() && self.rehashing.is_none() {
                None
            } else {
                match rx.try_recv() {
                    Ok(j) => Some(j),
                    Err(TryRecvError::Empty) => {
                        self.startup_step();
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => break,
                }
            };
            let first = match first {
                Some(j) => j,
                None => match self.scrub_due() {
                    Some(at) => match rx.recv_deadline(at) {
                        Ok(j) => j,
                        Err(RecvTimeoutError::Timeout) => {
                            self.scrub_step();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    },
                    None => match rx.recv() {
                        Ok(j) => j,
                        Err(_) => break,
                    },
                },
            };
            let mut next = Some(first);
            let mut n = 0;
            while let Some(job) = next.take() {
                if !self.handle(job) {
                    break 'outer;
                }
                n += 1;
                if n < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            self.sync_journals();
            self.maybe_compact();
        }
        self.sync_journals();
    }

    /// Handles one job; false for [`Job::Stop`].
    fn handle(&mut self, job: Job) -> bool {
        match job {
            Job::Publish { temp, entry } => self.publish(temp, entry),
            Job::Index(r) => {
                self.append_index(&r);
                filestore::apply_record(&mut self.index, r);
            }
            Job::Remove(entry) => {
                let r = IndexRecord::del(&entry);
                self.append_index(&r);
                filestore::apply_record(&mut self.index, r);
                self.sync_journals();
                let path = filestore::path_in(&self.dir, &entry);
                if let Err(e) = fs::remove_file(&path) {
                    if e.kind() != io::ErrorKind::NotFound {
                        self.failed(&format!("removing {}", path.display()), &e);
                    }
                }
            }
            Job::RemoveFile(path) => {
                // The record that replaced the file's entry is made durable
                // first: a crash never leaves a record without its file.
                self.sync_journals();
                if let Err(e) = fs::remove_file(&path) {
                    if e.kind() != io::ErrorKind::NotFound {
                        self.failed(&format!("removing {}", path.display()), &e);
                    }
                }
            }
            Job::Verify(entry) => {
                // Ahead of the pass over what the cache held, and not twice.
                self.startup.retain(|e| e != &entry);
                if self.rehashing.as_ref().is_none_or(|h| h.entry != entry) {
                    self.startup.push_front(entry);
                }
            }
            Job::Clients(ops) => {
                let mut lines = Vec::new();
                for op in &ops {
                    journal::encode(op, &mut lines);
                }
                let n = ops.len() as u64;
                if let Err(e) = self.clients_journal.append(&lines, n) {
                    self.failed("appending to the image map's journal", &e);
                } else {
                    self.stats.records.fetch_add(n, Ordering::Relaxed);
                }
                if let Some(m) = &mut self.clients {
                    for op in ops {
                        imagemap::apply_op(m, op);
                    }
                }
            }
            Job::ClientSnapshot(all) => {
                let mut m = BTreeMap::new();
                for c in all {
                    imagemap::apply_op(&mut m, ClientOp::Put { client: c });
                }
                self.clients = Some(m);
                self.compact_clients();
            }
            Job::ScrubRate(rate) => {
                self.scrub.rate = rate;
                self.scrub.next_at = (rate > 0).then(Instant::now);
                if rate > 0 {
                    info!("cache scrub: {rate} bytes/s");
                }
            }
            Job::Barrier(reply) => {
                self.sync_journals();
                let _ = reply.send(());
            }
            Job::Stop => return false,
            #[cfg(test)]
            Job::Pause(rx) => {
                let _ = rx.recv();
            }
        }
        true
    }

    /// One piece of the pass over what the cache held when it was opened:
    /// the next chunk of the file being hashed, or the next file.
    fn startup_step(&mut self) {
        let Some(mut h) = self.rehashing.take() else {
            let Some(entry) = self.startup.pop_front() else {
                return;
            };
            let current = self.index.get(&filestore::key_of(&entry));
            if current.is_none_or(|c| c.sha256 != entry.sha256) {
                let _ = self.done.send(Done::Stale(entry));
                return;
            }
            self.rehashing = Hashing::open(&self.dir, &entry);
            if self.rehashing.is_none() {
                self.checked(entry, false);
            }
            return;
        };
        match h.step(REHASH_CHUNK) {
            Ok(None) => self.rehashing = Some(h),
            Ok(Some(good)) => {
                self.stats.verified_files.fetch_add(1, Ordering::Relaxed);
                self.checked(h.entry, good);
            }
            Err(_) => self.checked(h.entry, false),
        }
    }

    fn publish(&mut self, temp: TempFile, entry: Entry) {
        let dest = filestore::path_in(&self.dir, &entry);
        let files = dest.parent().map(Path::to_owned).unwrap_or_default();
        // The data first, then the name: a crash leaves the new file whole
        // or absent, never a name over missing blocks.
        let r = File::open(temp.path())
            .and_then(|f| f.sync_all())
            .and_then(|()| temp.persist(&dest))
            .and_then(|()| journal::sync_dir(&files));
        if let Err(e) = r {
            self.failed(&format!("publishing {:?}", entry.name), &e);
            let _ = fs::remove_file(&dest);
            let _ = self.done.send(Done::PublishFailed(entry));
            return;
        }
        // Servable from here on: the bytes are in place. Reported before
        // the record is written, so that whoever sees the record (`cache
        // ls`, a test) finds the entry in the serving thread's index too.
        let _ = self.done.send(Done::Published(entry.clone()));
        let r = IndexRecord::Put { entry };
        // Not recorded, the file is still whole and served now; after a
        // restart it is an orphan and removed.
        self.append_index(&r);
        filestore::apply_record(&mut self.index, r);
    }

    fn append_index(&mut self, r: &IndexRecord) {
        let mut line = Vec::new();
        journal::encode(r, &mut line);
        match self.index_journal.append(&line, 1) {
            Ok(()) => {
                self.stats.records.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.failed("appending to the index journal", &e),
        }
    }

    /// After hashing `entry`'s file: reports it good, or removes the file
    /// and its record (if the entry is still the current one) and reports
    /// it corrupt.
    fn checked(&mut self, entry: Entry, good: bool) {
        let key = filestore::key_of(&entry);
        if self
            .index
            .get(&key)
            .is_none_or(|c| c.sha256 != entry.sha256)
        {
            let _ = self.done.send(Done::Stale(entry));
            return;
        }
        if good {
            let _ = self.done.send(Done::Verified(entry));
            return;
        }
        warn!(
            "cache: {:?} from {} no longer hashes to its index entry: removed",
            entry.name, entry.server
        );
        let path = filestore::path_in(&self.dir, &entry);
        // The file first: a record left without its file is dropped at the
        // next open, a file without its record is removed.
        if let Err(e) = fs::remove_file(&path) {
            if e.kind() != io::ErrorKind::NotFound {
                self.failed(&format!("removing {}", path.display()), &e);
            }
        }
        let r = IndexRecord::del(&entry);
        self.append_index(&r);
        filestore::apply_record(&mut self.index, r);
        self.sync_journals();
        let _ = self.done.send(Done::Corrupt(entry));
    }

    fn sync_journals(&mut self) {
        if let Err(e) = self.index_journal.sync() {
            self.failed("syncing the index journal", &e);
        }
        if let Err(e) = self.clients_journal.sync() {
            self.failed("syncing the image map's journal", &e);
        }
    }

    fn maybe_compact(&mut self) {
        let due =
            |records: u64, live: usize| records > COMPACT_MIN.max(COMPACT_FACTOR * live as u64);
        if due(self.index_journal.records(), self.index.len()) {
            self.compact_index();
        }
        if let Some(m) = &self.clients {
            if due(self.clients_journal.records(), m.len()) {
                self.compact_clients();
            }
        }
    }

    /// The index journal folded into a new `index.json`.
    fn compact_index(&mut self) {
        let bytes = filestore::snapshot_bytes(self.index.values());
        let r = journal::write_atomic(&self.dir, filestore::INDEX, &bytes)
            .and_then(|()| self.index_journal.clear());
        match r {
            Ok(()) => {
                self.stats.compactions.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.failed("compacting the index", &e),
        }
    }

    /// The image map's journal folded into a new `imagemap.json`.
    fn compact_clients(&mut self) {
        let Some(m) = &self.clients else { return };
        let bytes = imagemap::snapshot_bytes(m.values());
        let r = journal::write_atomic(&self.dir, imagemap::IMAGEMAP_FILE, &bytes)
            .and_then(|()| self.clients_journal.clear());
        match r {
            Ok(()) => {
                self.stats.compactions.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.failed("compacting the image map", &e),
        }
    }

    /// Counts a failed write; logs the first and then every power of two.
    fn failed(&self, what: &str, e: &io::Error) {
        let n = self.stats.errors.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            error!("cache persistence: {what}: {e} ({n} failed writes so far; serving goes on)");
        }
    }

    fn scrub_due(&self) -> Option<Instant> {
        (self.scrub.rate > 0)
            .then_some(self.scrub.next_at)
            .flatten()
    }

    /// One step of the background scrub: the next chunk of the file being
    /// hashed, or the next file.
    fn scrub_step(&mut self) {
        let now = Instant::now();
        let Some(mut h) = self.scrub.current.take() else {
            self.scrub.next_at = Some(match self.scrub_next_file() {
                Some(h) => {
                    self.scrub.current = Some(h);
                    now
                }
                None => now + SCRUB_IDLE,
            });
            return;
        };
        let chunk = SCRUB_CHUNK.min(self.scrub.rate).max(1) as usize;
        let before = h.read;
        match h.step(chunk) {
            Ok(Some(good)) => {
                self.stats.scrubbed_files.fetch_add(1, Ordering::Relaxed);
                self.checked(h.entry, good);
                self.scrub.next_at = Some(now);
            }
            Ok(None) => {
                let n = h.read - before;
                self.stats.scrubbed_bytes.fetch_add(n, Ordering::Relaxed);
                let pause = Duration::from_secs_f64(n as f64 / self.scrub.rate as f64);
                self.scrub.next_at = Some(now + pause);
                self.scrub.current = Some(h);
            }
            Err(_) => {
                self.checked(h.entry, false);
                self.scrub.next_at = Some(now);
            }
        }
    }

    /// Opens the entry after the cursor (wrapping around).
    fn scrub_next_file(&mut self) -> Option<Hashing> {
        use std::ops::Bound;
        let after = match &self.scrub.cursor {
            Some(k) => self
                .index
                .range::<Key, _>((Bound::Excluded(k), Bound::Unbounded))
                .next(),
            None => None,
        };
        let (key, entry) = after.or_else(|| self.index.iter().next())?;
        self.scrub.cursor = Some(key.clone());
        let entry = entry.clone();
        let h = Hashing::open(&self.dir, &entry);
        if h.is_none() {
            self.checked(entry, false);
        }
        h
    }
}

impl Hashing {
    /// `entry`'s file in the cache `dir`, opened; `None` if it cannot be.
    fn open(dir: &Path, entry: &Entry) -> Option<Hashing> {
        let file = File::open(filestore::path_in(dir, entry)).ok()?;
        Some(Hashing {
            entry: entry.clone(),
            file,
            hasher: Sha256::new(),
            read: 0,
        })
    }

    /// Hashes up to `chunk` more bytes; at the end of the file, whether it
    /// is the entry's size and SHA-256.
    fn step(&mut self, chunk: usize) -> io::Result<Option<bool>> {
        let mut buf = vec![0u8; chunk];
        let n = self.file.read(&mut buf)?;
        if n == 0 {
            let sha: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
            return Ok(Some(
                self.read == self.entry.size && sha == self.entry.sha256.0,
            ));
        }
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(None)
    }
}
