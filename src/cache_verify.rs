//! `bootcache cache verify`: every cached file is hashed again against its
//! index entry; one that no longer matches is removed with its entry, as
//! the bridge does before a file's first client after a restart. A running
//! bridge does it when asked on its control socket (hashing on the control
//! thread, removing on the worker); without one it works on the directory
//! under its lock (a bridge started meanwhile forwards without its cache
//! until verify is done).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use slowpath::control::{Answer, Request, VerifyOutcome as Outcome, VerifySummary as Summary};
use slowpath::filestore::read_index;
use slowpath::imagemap::escape_name;
use slowpath::{Entry, Filestore};

use crate::cache_ops::{ask, reach, Reached};
use crate::cli::CacheVerify;

/// Verifies the cache; `Ok(true)` when nothing was removed or unreadable.
pub(crate) fn run(v: &CacheVerify) -> Result<bool> {
    let dir = v.dir.resolve()?;
    let sum = match reach(&dir)? {
        Reached::Bridge(conn) => match ask(conn, &Request::Verify)? {
            Answer::Verify(sum) => sum,
            _ => bail!("the bridge answered verify with something else"),
        },
        Reached::Dir(_lock) => on_dir(&dir, v.json)?,
    };
    if v.json {
        println!(
            "{}",
            serde_json::to_string(&sum).expect("a summary always serializes")
        );
    } else {
        for r in &sum.removed_files {
            println!(
                "{:<15} {:>12}  {}  {}: {}",
                r.origin.to_string(),
                r.size,
                r.sha256,
                escape_name(&r.name),
                r.reason.describe()
            );
        }
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

/// Verifies the cache in `dir`, locked by the caller, on this thread;
/// prints a line per file unless `json`.
fn on_dir(dir: &Path, json: bool) -> Result<Summary> {
    let mut sum = Summary {
        cache_dir: dir.display().to_string(),
        ..Summary::default()
    };
    // What the index lists before loading it drops what is missing or of
    // the wrong size: those are removals too.
    let listed = read_index(dir);
    sum.index_corrupt = listed.is_err();
    let listed = listed.unwrap_or_default();
    let mut store =
        Filestore::open(dir).with_context(|| format!("opening the cache in {}", dir.display()))?;
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
        if outcome == Outcome::Ok {
            sum.ok += 1;
        }
        if !json && outcome == Outcome::Ok {
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
            sum.removed_file(e, outcome);
        }
    }
    Ok(sum)
}
