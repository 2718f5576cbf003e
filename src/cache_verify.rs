//! `bootcache cache verify`: every cached file is hashed again against its
//! index entry; one that no longer matches is removed with its entry, as
//! the bridge does before a file's first client after a restart. It works
//! on the directory alone and takes the directory's lock, so it is refused
//! while a bridge runs on it (and a bridge started meanwhile forwards
//! without its cache until verify is done).

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use slowpath::filestore::read_index;
use slowpath::imagemap::escape_name;
use slowpath::{DirLock, Entry, Filestore, FilestoreError};

use crate::cli::CacheVerify;

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    /// Hashes to its entry.
    Ok,
    /// Its bytes changed: removed.
    Mismatch,
    /// It could not be read: removed (never served unverified).
    Unreadable,
    /// Missing or of the wrong size when the index was loaded: removed.
    Missing,
}

impl Outcome {
    fn describe(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Mismatch => "removed (content no longer matches)",
            Outcome::Unreadable => "removed (unreadable)",
            Outcome::Missing => "removed (missing, wrong size or invalid entry)",
        }
    }
}

#[derive(Serialize)]
struct Removed {
    origin: Ipv4Addr,
    name: String,
    size: u64,
    sha256: String,
    reason: Outcome,
}

/// The JSON summary (`--json`).
#[derive(Serialize, Default)]
struct Summary {
    cache_dir: String,
    /// Entries of the index checked.
    files: u64,
    /// Their bytes.
    bytes: u64,
    ok: u64,
    /// Removed, whatever the reason (unreadable ones included).
    removed: u64,
    unreadable: u64,
    /// The index itself could not be parsed (set aside, as the bridge does).
    index_corrupt: bool,
    removed_files: Vec<Removed>,
}

/// Verifies the cache; `Ok(true)` when nothing was removed or unreadable.
pub(crate) fn run(v: &CacheVerify) -> Result<bool> {
    let dir = v.dir.resolve()?;
    let _lock = match DirLock::acquire(&dir) {
        Ok(l) => l,
        Err(FilestoreError::Io { source, .. }) if source.kind() == ErrorKind::WouldBlock => {
            let pid = DirLock::holder(&dir).map_or_else(|| "unknown".into(), |p| p.to_string());
            bail!(
                "a bridge is running on {} (pid {pid}); stop it or wait for issue 15's control socket",
                dir.display()
            );
        }
        Err(e) => return Err(e).context("locking the cache directory"),
    };
    let mut sum = Summary {
        cache_dir: dir.display().to_string(),
        ..Summary::default()
    };
    // What the index lists before loading it drops what is missing or of
    // the wrong size: those are removals too.
    let listed = read_index(&dir);
    sum.index_corrupt = listed.is_err();
    let listed = listed.unwrap_or_default();
    let mut store =
        Filestore::open(&dir).with_context(|| format!("opening the cache in {}", dir.display()))?;
    let kept: BTreeSet<(Ipv4Addr, String)> = store
        .entries()
        .map(|e| (e.server, e.name.clone()))
        .collect();
    let mut checked: Vec<(Entry, Outcome)> = listed
        .into_iter()
        .filter(|e| !kept.contains(&(e.server, e.name.clone())))
        .map(|e| (e, Outcome::Missing))
        .collect();
    let entries: Vec<Entry> = store.entries().cloned().collect();
    for e in entries {
        let readable = std::fs::File::open(store.path_of(&e)).is_ok();
        let good = store
            .verify(&e)
            .with_context(|| format!("rewriting the index in {}", dir.display()))?;
        let outcome = match (good, readable) {
            (true, _) => Outcome::Ok,
            (false, true) => Outcome::Mismatch,
            (false, false) => Outcome::Unreadable,
        };
        checked.push((e, outcome));
    }
    checked.sort_by(|(a, _), (b, _)| (a.server, &a.name).cmp(&(b.server, &b.name)));

    for (e, outcome) in checked {
        sum.files += 1;
        sum.bytes += e.size;
        match outcome {
            Outcome::Ok => sum.ok += 1,
            Outcome::Unreadable => sum.unreadable += 1,
            Outcome::Mismatch | Outcome::Missing => {}
        }
        if !v.json {
            println!(
                "{:<15} {:>12}  {}  {}: {}",
                e.server.to_string(),
                e.size,
                e.sha256.to_hex(),
                escape_name(&e.name),
                outcome.describe()
            );
        }
        if outcome != Outcome::Ok {
            sum.removed += 1;
            sum.removed_files.push(Removed {
                origin: e.server,
                name: e.name,
                size: e.size,
                sha256: e.sha256.to_hex(),
                reason: outcome,
            });
        }
    }
    if v.json {
        println!(
            "{}",
            serde_json::to_string(&sum).expect("a summary always serializes")
        );
    } else {
        println!(
            "verified {}: {} files, {} bytes: {} ok, {} removed ({} unreadable){}",
            sum.cache_dir,
            sum.files,
            sum.bytes,
            sum.ok,
            sum.removed,
            sum.unreadable,
            if sum.index_corrupt {
                "; the index was unreadable and was set aside"
            } else {
                ""
            }
        );
    }
    Ok(sum.removed == 0 && !sum.index_corrupt)
}
