//! Keeps the [`Table`] current with inotify (through the `notify` crate).
//!
//! Events only mark paths dirty; a worker thread rehashes a dirty path once it
//! has been quiet for the debounce interval (or after `max_delay`, so a file
//! that is written forever still gets looked at). Until then the path answers
//! `Unknown`: the agent never vouches for content that is being written.
//! An event on a path also dirties every link through it (the table keeps
//! each link's chain), so a link follows its target; directories outside
//! the root that hold a followed link's hops are watched too.
//!
//! Nothing slow happens under the table's lock: files are hashed and
//! directories scanned first, then the result goes in with a short write.
//! A full rescan (at start, after the kernel's event queue overflowed, or
//! on request, e.g. SIGHUP) runs on a thread of its own into a fresh table
//! that is swapped in when complete; answers meanwhile come from the table
//! as it was. (A copy-on-write table behind arc-swap would make readers
//! lock-free but every inotify update a copy of the whole table; here a
//! writer holds the lock for one map update at a time.) Paths the watcher
//! touched while the rescan ran are rehashed again after the swap, since
//! the rescan may have seen them before their change.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};

use crate::replay::unix_ms;
use crate::table::{hash_file, resolve, Resolved, Table};

/// Debounce settings.
#[derive(Debug, Clone, Copy)]
pub struct WatchConfig {
    /// A path is rehashed once no event touched it for this long.
    pub debounce: Duration,
    /// ... or at the latest this long after its first pending event.
    pub max_delay: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

/// One finished full rescan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RescanReport {
    /// Files in the new table (links to files included).
    pub files: usize,
    /// When the rescan thread started and finished scanning, in ms since
    /// the Unix epoch (to line up with answers seen elsewhere).
    pub started_ms: u64,
    /// See `started_ms`.
    pub finished_ms: u64,
    /// When its table was swapped in (the watch thread picks it up on its
    /// next pass, within 100 ms).
    pub swapped_ms: u64,
}

/// A running watcher; stops its thread when dropped.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    rescan: Arc<AtomicBool>,
    reports: Receiver<RescanReport>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

impl Watcher {
    /// Asks for a full rescan in the background (one at a time; a request
    /// during a rescan starts another after it).
    pub fn request_rescan(&self) {
        self.rescan.store(true, Ordering::Relaxed);
    }

    /// The flag behind [`Watcher::request_rescan`], for a signal handler.
    pub fn rescan_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.rescan)
    }

    /// The next finished rescan, if any.
    pub fn poll_report(&self) -> Option<RescanReport> {
        self.reports.try_recv().ok()
    }
}

struct Dirty {
    first: Instant,
    last: Instant,
}

// A poisoned lock means another thread panicked mid-update; the table is
// still a set of whole entries, so keep serving rather than stop.
fn read(t: &RwLock<Table>) -> RwLockReadGuard<'_, Table> {
    t.read().unwrap_or_else(|e| e.into_inner())
}

fn write(t: &RwLock<Table>) -> RwLockWriteGuard<'_, Table> {
    t.write().unwrap_or_else(|e| e.into_inner())
}

/// Starts watching the table's root recursively, and a first rescan in
/// the background (files written between the table's scan and the watch
/// being armed would be missed otherwise).
pub fn spawn(table: Arc<RwLock<Table>>, config: WatchConfig) -> notify::Result<Watcher> {
    let root = read(&table).root().to_path_buf();
    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let mut inner = notify::recommended_watcher(tx)?;
    inner.watch(&root, RecursiveMode::Recursive)?;
    let stop = Arc::new(AtomicBool::new(false));
    let rescan = Arc::new(AtomicBool::new(true));
    let (report_tx, reports) = mpsc::channel();
    let mut w = Loop {
        root,
        table,
        config,
        inner,
        dirty: HashMap::new(),
        rescan: Arc::clone(&rescan),
        running: None,
        touched: HashSet::new(),
        outside_watched: HashSet::new(),
        reports: report_tx,
    };
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("agent-watch".into())
        .spawn(move || w.run(rx, &stop2))
        .map_err(notify::Error::io)?;
    Ok(Watcher {
        stop,
        rescan,
        reports,
        thread: Some(thread),
    })
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a rescan thread hands back: its table and when it scanned.
struct Scanned {
    table: std::io::Result<Table>,
    started_ms: u64,
    finished_ms: u64,
}

/// A rescan in progress: its result arrives on `done`.
struct Running {
    done: Receiver<Scanned>,
}

/// The watch thread's state.
struct Loop {
    root: PathBuf,
    table: Arc<RwLock<Table>>,
    config: WatchConfig,
    // Owned here: dropping it with the thread closes the event channel.
    inner: RecommendedWatcher,
    dirty: HashMap<String, Dirty>,
    rescan: Arc<AtomicBool>,
    running: Option<Running>,
    /// Paths dirtied or rehashed while a rescan runs.
    touched: HashSet<String>,
    outside_watched: HashSet<PathBuf>,
    reports: mpsc::Sender<RescanReport>,
}

impl Loop {
    fn run(&mut self, rx: Receiver<notify::Result<notify::Event>>, stop: &AtomicBool) {
        self.sync_outside_watches();
        while !stop.load(Ordering::Relaxed) {
            let wait = Duration::from_millis(100).min(self.config.debounce);
            match rx.recv_timeout(wait) {
                Ok(Ok(ev)) => self.event(&ev),
                Ok(Err(e)) => log::warn!("watch error: {e}"),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.poll_rescan();
            self.rehash_due();
        }
    }

    fn event(&mut self, ev: &notify::Event) {
        if ev.need_rescan() {
            log::warn!("inotify queue overflowed: full rescan");
            self.rescan.store(true, Ordering::Relaxed);
            return;
        }
        let suspect = match ev.kind {
            // Reads by the TFTP server itself are not changes.
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => return,
            EventKind::Modify(ModifyKind::Metadata(_)) => false,
            _ => true,
        };
        let now = Instant::now();
        // Found under the read lock; the write lock only marks.
        let rels: Vec<String> = {
            let t = read(&self.table);
            let mut rels = Vec::new();
            for p in &ev.paths {
                rels.extend(t.links_through(p));
                if p != &self.root {
                    rels.extend(t.relative(p));
                }
            }
            rels
        };
        if suspect && !rels.is_empty() {
            let mut t = write(&self.table);
            for rel in &rels {
                t.mark_changing(rel);
            }
        }
        for rel in rels {
            if self.running.is_some() {
                self.touched.insert(rel.clone());
            }
            self.dirty
                .entry(rel)
                .and_modify(|d| d.last = now)
                .or_insert(Dirty {
                    first: now,
                    last: now,
                });
        }
    }

    /// Starts a requested rescan, or swaps in a finished one.
    fn poll_rescan(&mut self) {
        if let Some(r) = &self.running {
            let (scanned, started_ms, finished_ms) = match r.done.try_recv() {
                Ok(s) => (s.table, s.started_ms, s.finished_ms),
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => (
                    Err(std::io::Error::other("rescan thread ended without a table")),
                    0,
                    0,
                ),
            };
            self.running = None;
            match scanned {
                Ok(scanned) => {
                    let files = scanned.len();
                    let now = Instant::now();
                    let mut t = write(&self.table);
                    t.replace_with(scanned);
                    for rel in self.touched.drain() {
                        t.mark_changing(&rel);
                        self.dirty.entry(rel).or_insert(Dirty {
                            first: now,
                            last: now,
                        });
                    }
                    drop(t);
                    let swapped_ms = unix_ms(SystemTime::now());
                    log::info!(
                        "rescan: {files} files in {} ms",
                        finished_ms.saturating_sub(started_ms)
                    );
                    let _ = self.reports.send(RescanReport {
                        files,
                        started_ms,
                        finished_ms,
                        swapped_ms,
                    });
                    self.sync_outside_watches();
                }
                Err(e) => {
                    log::error!("rescan failed: {e}");
                    self.touched.clear();
                }
            }
        }
        if self.running.is_none() && self.rescan.swap(false, Ordering::Relaxed) {
            let fresh = read(&self.table).fresh();
            let live = Arc::clone(&self.table);
            let (tx, done) = mpsc::channel();
            let spawned = std::thread::Builder::new()
                .name("agent-rescan".into())
                .spawn(move || {
                    let started_ms = unix_ms(SystemTime::now());
                    let mut fresh = fresh;
                    // Unchanged files keep their versions: a short read
                    // lock per file, never one across the scan.
                    let prior = |rel: &str| read(&live).get(rel).map(|e| e.state);
                    let table = fresh.scan_under("", &prior).map(|()| fresh);
                    let _ = tx.send(Scanned {
                        table,
                        started_ms,
                        finished_ms: unix_ms(SystemTime::now()),
                    });
                });
            match spawned {
                Ok(_) => self.running = Some(Running { done }),
                Err(e) => log::error!("cannot start a rescan: {e}"),
            }
        }
    }

    /// Rehashes the dirty paths that were quiet long enough.
    fn rehash_due(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .dirty
            .iter()
            .filter(|(_, d)| {
                now.duration_since(d.last) >= self.config.debounce
                    || now.duration_since(d.first) >= self.config.max_delay
            })
            .map(|(k, _)| k.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        let follow = read(&self.table).follow_outside();
        for rel in due {
            let done = match resolve(&self.root, follow, &rel) {
                Resolved::File { path, hops } => match hash_file(&path) {
                    Ok(h) => {
                        let torn = h.is_none();
                        write(&self.table).apply(&rel, hops, h);
                        !torn
                    }
                    Err(e) => {
                        log::warn!("cannot hash {}: {e}", path.display());
                        write(&self.table).remove(&rel);
                        true
                    }
                },
                Resolved::Dir => {
                    let mut sub = read(&self.table).fresh();
                    let prior = |k: &str| read(&self.table).get(k).map(|e| e.state);
                    if let Err(e) = sub.scan_under(&rel, &prior) {
                        log::warn!("cannot scan {rel}: {e}");
                    }
                    write(&self.table).merge_dir(&rel, sub);
                    true
                }
                Resolved::Outside => {
                    log::warn!("{rel}: link leads outside the root: refused (answered unknown)");
                    write(&self.table).refuse_outside(&rel);
                    true
                }
                Resolved::Other => {
                    write(&self.table).remove(&rel);
                    true
                }
            };
            if self.running.is_some() {
                self.touched.insert(rel.clone());
            }
            if done {
                self.dirty.remove(&rel);
            } else if let Some(d) = self.dirty.get_mut(&rel) {
                // Still being written: look again after another quiet period.
                d.last = now;
                d.first = now;
            }
        }
        self.sync_outside_watches();
    }

    /// Watches the directories outside the root that hold hops of followed
    /// links (only with `follow_outside`), and no others.
    fn sync_outside_watches(&mut self) {
        let want = read(&self.table).outside_dirs();
        for d in self.outside_watched.difference(&want) {
            let _ = self.inner.unwatch(d);
        }
        for d in want.difference(&self.outside_watched) {
            if let Err(e) = self.inner.watch(d, RecursiveMode::NonRecursive) {
                log::warn!("cannot watch {}: {e}", d.display());
            }
        }
        self.outside_watched = want;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Answer;
    use sha2::{Digest, Sha256};
    use std::fs;

    fn sha(b: &[u8]) -> [u8; 32] {
        Sha256::digest(b).into()
    }

    /// Polls `f` until it holds or 5 s pass.
    fn eventually(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("timed out waiting for: {what}");
    }

    /// A watcher with a short debounce, for tests.
    fn watch_fast(table: &Arc<RwLock<Table>>) -> Watcher {
        let config = WatchConfig {
            debounce: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
        };
        spawn(table.clone(), config).unwrap()
    }

    #[test]
    fn table_follows_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let table = Arc::new(RwLock::new(Table::scan(dir.path()).unwrap()));
        let _w = watch_fast(&table);
        let q = |f: &str, b: &[u8]| table.read().unwrap().query(f, &sha(b));

        // Create.
        fs::write(dir.path().join("a.bin"), b"one").unwrap();
        eventually("a.bin added", || {
            matches!(q("a.bin", b"one"), Answer::Current(_))
        });
        let v1 = table.read().unwrap().get("a.bin").unwrap().state.version;

        // Modify: the old hash turns stale and the version moves.
        fs::write(dir.path().join("a.bin"), b"two two").unwrap();
        eventually(
            "a.bin modified",
            || matches!(q("a.bin", b"one"), Answer::Stale(s) if s.sha256 == sha(b"two two") && s.size == 7),
        );
        assert!(table.read().unwrap().get("a.bin").unwrap().state.version > v1);

        // Rename within the root, including into a new subdirectory.
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::rename(dir.path().join("a.bin"), dir.path().join("sub/b.bin")).unwrap();
        eventually("renamed", || {
            q("a.bin", b"two two") == Answer::Unknown
                && matches!(q("/sub/b.bin", b"two two"), Answer::Current(_))
        });

        // Whole directory moved in from outside the root.
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir(outside.path().join("efi")).unwrap();
        fs::write(outside.path().join("efi/shim.efi"), b"shim").unwrap();
        fs::rename(outside.path().join("efi"), dir.path().join("efi")).unwrap();
        eventually("dir moved in", || {
            matches!(q("efi/shim.efi", b"shim"), Answer::Current(_))
        });

        // Delete.
        fs::remove_file(dir.path().join("sub/b.bin")).unwrap();
        eventually("deleted", || q("sub/b.bin", b"two two") == Answer::Unknown);
        fs::remove_dir_all(dir.path().join("efi")).unwrap();
        eventually("dir deleted", || table.read().unwrap().is_empty());
    }

    #[test]
    fn rapid_writes_are_debounced_to_the_final_content() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("img"), b"v0").unwrap();
        let table = Arc::new(RwLock::new(Table::scan(dir.path()).unwrap()));
        let v0 = table.read().unwrap().get("img").unwrap().state.version;
        let _w = spawn(
            table.clone(),
            WatchConfig {
                debounce: Duration::from_millis(300),
                max_delay: Duration::from_secs(5),
            },
        )
        .unwrap();
        for i in 0..20 {
            fs::write(dir.path().join("img"), format!("v{i} ").repeat(100)).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        let last = "v19 ".repeat(100);
        eventually("settled", || {
            matches!(
                table.read().unwrap().query("img", &sha(last.as_bytes())),
                Answer::Current(_)
            )
        });
        // One rehash for the burst (maybe two if a scheduler hiccup split it),
        // not twenty.
        let v = table.read().unwrap().get("img").unwrap().state.version;
        assert!(v - v0 <= 2, "version moved {} times", v - v0);
    }

    /// Issue 13: a link's hash follows its target. The target rewritten,
    /// the link retargeted, a followed link's target outside the root
    /// rewritten: each time the link answers with the new content.
    #[test]
    fn links_follow_their_targets() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let r = dir.path();
        fs::write(r.join("vmlinuz-1"), b"one").unwrap();
        fs::write(r.join("vmlinuz-2"), b"two").unwrap();
        symlink("vmlinuz-1", r.join("vmlinuz")).unwrap();
        fs::write(outside.path().join("initrd"), b"initrd one").unwrap();
        symlink(outside.path().join("initrd"), r.join("initrd.img")).unwrap();
        let table = Arc::new(RwLock::new(Table::scan_with(r, true).unwrap()));
        let _w = watch_fast(&table);
        let q = |f: &str, b: &[u8]| table.read().unwrap().query(f, &sha(b));
        assert!(matches!(q("vmlinuz", b"one"), Answer::Current(_)));

        fs::write(r.join("vmlinuz-1"), b"one, patched").unwrap();
        eventually("the link follows its target's new content", || {
            matches!(q("vmlinuz", b"one, patched"), Answer::Current(_))
        });

        // Retargeted atomically, as `ln -sfn` through a rename does.
        symlink("vmlinuz-2", r.join("vmlinuz.new")).unwrap();
        fs::rename(r.join("vmlinuz.new"), r.join("vmlinuz")).unwrap();
        eventually("the link follows its new target", || {
            matches!(q("vmlinuz", b"two"), Answer::Current(_))
        });
        // The old target is no longer its business.
        fs::write(r.join("vmlinuz-1"), b"one again").unwrap();
        eventually("the old target rehashed", || {
            matches!(q("vmlinuz-1", b"one again"), Answer::Current(_))
        });
        assert!(matches!(q("vmlinuz", b"two"), Answer::Current(_)));

        fs::write(outside.path().join("initrd"), b"initrd two").unwrap();
        eventually(
            "a followed link outside the root follows its target",
            || matches!(q("initrd.img", b"initrd two"), Answer::Current(_)),
        );
    }

    /// A full rescan runs beside the watcher: requested, it reports, and
    /// what it found is in the table.
    #[test]
    fn a_requested_rescan_reports_and_swaps_in() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), b"a").unwrap();
        let table = Arc::new(RwLock::new(Table::scan(dir.path()).unwrap()));
        let w = spawn(table.clone(), WatchConfig::default()).unwrap();
        // The first one, from spawn.
        eventually("the first rescan", || w.poll_report().is_some());
        fs::write(dir.path().join("b"), b"b").unwrap();
        w.request_rescan();
        let mut report = None;
        eventually("a requested rescan", || {
            report = w.poll_report();
            report.is_some()
        });
        let r = report.unwrap();
        assert_eq!(r.files, 2);
        assert!(r.finished_ms >= r.started_ms);
        // Written just now, so it may still answer unknown (pending), but
        // the rescan's table holds it.
        assert_eq!(
            table.read().unwrap().get("b").map(|e| e.state.sha256),
            Some(sha(b"b"))
        );
    }
}
