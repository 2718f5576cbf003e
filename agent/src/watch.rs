//! Keeps the [`Table`] current with inotify (through the `notify` crate).
//!
//! Events only mark paths dirty; a worker thread rehashes a dirty path once it
//! has been quiet for the debounce interval (or after `max_delay`, so a file
//! that is written forever still gets looked at). Until then the path answers
//! `Unknown`: the agent never vouches for content that is being written.
//! Hashing happens outside the table lock, so queries keep flowing while a
//! large image is rehashed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};

use crate::table::{hash_file, Table};

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

/// A running watcher; stops its thread when dropped.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    // Dropping the notify watcher closes the channel the thread reads.
    _inner: RecommendedWatcher,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

struct Dirty {
    first: Instant,
    last: Instant,
}

/// Starts watching the table's root recursively.
pub fn spawn(table: Arc<RwLock<Table>>, config: WatchConfig) -> notify::Result<Watcher> {
    let root = table
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .root()
        .to_path_buf();
    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let mut inner = notify::recommended_watcher(tx)?;
    inner.watch(&root, RecursiveMode::Recursive)?;
    // Files written between the initial scan and the watch being armed would
    // be missed: rescan once now that events are flowing.
    table
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .rescan()
        .map_err(notify::Error::io)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("agent-watch".into())
        .spawn(move || run(root, table, rx, config, stop2))
        .map_err(notify::Error::io)?;
    Ok(Watcher {
        stop,
        thread: Some(thread),
        _inner: inner,
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

fn run(
    root: PathBuf,
    table: Arc<RwLock<Table>>,
    rx: mpsc::Receiver<notify::Result<notify::Event>>,
    config: WatchConfig,
    stop: Arc<AtomicBool>,
) {
    // A poisoned lock means another thread panicked mid-update; the table is
    // still a set of whole entries, so keep serving rather than stop.
    let rescan = |t: &Arc<RwLock<Table>>| t.write().unwrap_or_else(|e| e.into_inner()).rescan();
    let mut dirty: HashMap<String, Dirty> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let wait = Duration::from_millis(100).min(config.debounce);
        match rx.recv_timeout(wait) {
            Ok(Ok(ev)) => {
                if ev.need_rescan() {
                    log::warn!("inotify queue overflowed: full rescan");
                    if let Err(e) = rescan(&table) {
                        log::error!("rescan failed: {e}");
                    }
                    dirty.clear();
                    continue;
                }
                let suspect = match ev.kind {
                    // Reads by the TFTP server itself are not changes.
                    EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                    EventKind::Access(_) => continue,
                    EventKind::Modify(ModifyKind::Metadata(_)) => false,
                    _ => true,
                };
                let now = Instant::now();
                let mut t = table.write().unwrap_or_else(|e| e.into_inner());
                for p in &ev.paths {
                    if p == &root {
                        continue;
                    }
                    let Some(rel) = t.relative(p) else { continue };
                    if suspect {
                        t.mark_changing(&rel);
                    }
                    dirty
                        .entry(rel)
                        .and_modify(|d| d.last = now)
                        .or_insert(Dirty {
                            first: now,
                            last: now,
                        });
                }
            }
            Ok(Err(e)) => log::warn!("watch error: {e}"),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        let due: Vec<String> = dirty
            .iter()
            .filter(|(_, d)| {
                now.duration_since(d.last) >= config.debounce
                    || now.duration_since(d.first) >= config.max_delay
            })
            .map(|(k, _)| k.clone())
            .collect();
        for rel in due {
            let abs = root.join(&rel);
            let done = match std::fs::metadata(&abs) {
                Ok(m) if m.is_file() => {
                    let hashed = hash_file(&abs);
                    let mut t = table.write().unwrap_or_else(|e| e.into_inner());
                    match hashed {
                        Ok(h) => {
                            let torn = h.is_none();
                            t.apply_hash(&rel, h);
                            !torn
                        }
                        Err(e) => {
                            log::warn!("cannot hash {}: {e}", abs.display());
                            t.remove(&rel);
                            true
                        }
                    }
                }
                _ => {
                    let mut t = table.write().unwrap_or_else(|e| e.into_inner());
                    t.refresh(&rel).unwrap_or_else(|e| {
                        log::warn!("cannot refresh {rel}: {e}");
                        true
                    })
                }
            };
            if done {
                dirty.remove(&rel);
            } else if let Some(d) = dirty.get_mut(&rel) {
                // Still being written: look again after another quiet period.
                d.last = now;
                d.first = now;
            }
        }
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

    #[test]
    fn table_follows_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let table = Arc::new(RwLock::new(Table::scan(dir.path()).unwrap()));
        let _w = spawn(
            table.clone(),
            WatchConfig {
                debounce: Duration::from_millis(50),
                max_delay: Duration::from_secs(2),
            },
        )
        .unwrap();
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
}
