//! `bootcache cache ls | rm | purge | verify | prefetch`: through a running
//! bridge's control socket (`src/control.rs`) when one answers, else on the
//! cache directory itself under its lock, so that a bridge starting
//! meanwhile waits (forwarding only) instead of racing. When neither is
//! possible — no permission, or a bridge holds the directory but does not
//! answer — one line says what to do.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use slowpath::control::{
    encode_request, Answer, Listed, Listing, Prefetched, Removed, Request, Response, MAX_LINE,
};
use slowpath::imagemap::{escape_name, fmt_time};
use slowpath::{DirLock, Entry, Filestore, FilestoreError};

use crate::cli::{CachePrefetch, CachePurge, CacheRm};
use crate::control::{published_word, removed, SOCKET};

/// How long a command waits for the bridge's answer (verify hashes every
/// file, prefetch reads one from the server).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(600);

/// Who answers for the cache directory.
pub(crate) enum Reached {
    /// A running bridge, on its control socket.
    Bridge(UnixStream),
    /// Nobody: the directory is ours while the lock is held.
    Dir(DirLock),
}

/// A running bridge's control socket, else the directory's lock, else one
/// line saying what to do.
pub(crate) fn reach(dir: &Path) -> Result<Reached> {
    let sock = dir.join(SOCKET);
    match UnixStream::connect(&sock) {
        Ok(s) => return Ok(Reached::Bridge(s)),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => bail!(
            "no permission to use {} (mode 0600): run this as the bridge's user or as root",
            sock.display()
        ),
        // No socket, or one left by a bridge that is gone: the directory.
        Err(_) => {}
    }
    match DirLock::acquire(dir) {
        Ok(l) => Ok(Reached::Dir(l)),
        Err(FilestoreError::Io { source, .. }) if source.kind() == ErrorKind::WouldBlock => {
            let pid = DirLock::holder(dir).map_or_else(|| "unknown".into(), |p| p.to_string());
            bail!(
                "a bridge is running on {} (pid {pid}) but does not answer on {}: it is starting, stopping or stuck; try again, or stop it and run this on the directory",
                dir.display(),
                sock.display()
            )
        }
        Err(FilestoreError::Io { source, .. }) if source.kind() == ErrorKind::PermissionDenied => {
            bail!(
                "no permission to lock {}: run this as the bridge's user or as root",
                dir.display()
            )
        }
        Err(e) => Err(e).context("locking the cache directory"),
    }
}

/// Sends `req` to the bridge and reads its answer; a refusal is an error
/// of one line.
pub(crate) fn ask(mut conn: UnixStream, req: &Request) -> Result<Answer> {
    conn.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    conn.write_all(&encode_request(req))
        .context("sending to the bridge's control socket")?;
    let mut line = Vec::new();
    BufReader::new(conn.take(MAX_LINE as u64))
        .read_until(b'\n', &mut line)
        .context("reading the bridge's answer")?;
    let r = Response::parse(&line).context("the bridge's answer")?;
    match (r.ok, r.answer, r.error) {
        (true, Some(a), _) => Ok(a),
        (_, _, Some(e)) => bail!("{e}"),
        _ => bail!("the bridge's answer is empty"),
    }
}

/// Opens the cache in `dir` (locked by the caller), runs `f` on it, and
/// waits for the writer to persist what `f` did.
fn with_store<T>(dir: &Path, f: impl FnOnce(&mut Filestore) -> Result<T>) -> Result<T> {
    let mut store =
        Filestore::open(dir).with_context(|| format!("opening the cache in {}", dir.display()))?;
    let r = f(&mut store);
    store.sync();
    store.close();
    r
}

/// The listing: from the bridge (with what is in use), else read from the
/// directory (no lock needed: both index files are replaced atomically).
pub(crate) fn listing(dir: &Path) -> Result<Listing> {
    if let Ok(conn) = UnixStream::connect(dir.join(SOCKET)) {
        if let Answer::Ls(l) = ask(conn, &Request::Ls)? {
            return Ok(l);
        }
        bail!("the bridge answered ls with something else");
    }
    let entries = slowpath::filestore::read_index(dir)
        .with_context(|| format!("reading the filestore in {}", dir.display()))?;
    Ok(Listing {
        used_bytes: entries.iter().map(|e| e.size).sum(),
        quota_bytes: 0,
        files: entries
            .into_iter()
            .map(|entry| Listed {
                entry,
                in_use: false,
            })
            .collect(),
    })
}

/// `bootcache cache rm NAME`.
pub(crate) fn rm(c: &CacheRm) -> Result<()> {
    let dir = c.dir.resolve()?;
    let answer = match reach(&dir)? {
        Reached::Bridge(conn) => ask(
            conn,
            &Request::Rm {
                name: c.name.clone(),
            },
        )?,
        Reached::Dir(_lock) => with_store(&dir, |s| match s.remove_named(&c.name) {
            Ok(gone) if gone.is_empty() => bail!("{:?} is not cached", c.name),
            Ok(gone) => Ok(removed(gone, 0)),
            Err(e) => bail!("{:?} not removed: {e}", c.name),
        })?,
    };
    print_removed(&answer, c.json)
}

/// `bootcache cache purge [--older-than D]`.
pub(crate) fn purge(c: &CachePurge) -> Result<()> {
    let dir = c.dir.resolve()?;
    let answer = match reach(&dir)? {
        Reached::Bridge(conn) => ask(
            conn,
            &Request::Purge {
                older_than_s: c.older_than.map(|d| d.as_secs()),
            },
        )?,
        Reached::Dir(_lock) => {
            let before = c.older_than.map(|d| {
                SystemTime::now()
                    .checked_sub(d)
                    .unwrap_or(SystemTime::UNIX_EPOCH)
            });
            with_store(&dir, |s| match s.purge(before) {
                Ok((gone, kept)) => Ok(removed(gone, kept)),
                Err(e) => bail!("nothing purged: {e}"),
            })?
        }
    };
    print_removed(&answer, c.json)
}

/// `bootcache cache prefetch NAME --from SERVER`.
pub(crate) fn prefetch(c: &CachePrefetch) -> Result<()> {
    let dir = c.dir.resolve()?;
    let req = Request::Prefetch {
        name: c.name.clone(),
        server: c.from,
        via: c.via,
    };
    // The same checks as the bridge's (a name with `..` is refused).
    slowpath::control::parse_request(&encode_request(&req))?;
    let answer = match reach(&dir)? {
        Reached::Bridge(conn) => ask(conn, &req)?,
        Reached::Dir(_lock) => with_store(&dir, |s| {
            let temp = s.tmp_dir().join(format!("prefetch-{}", std::process::id()));
            let via = c.via.unwrap_or(c.from);
            let got =
                crate::cache_prefetch::fetch(&temp, via, crate::cache_prefetch::PORT, &c.name)
                    .inspect_err(|_| {
                        let _ = std::fs::remove_file(&temp);
                    })?;
            let p = s.publish(
                SystemTime::now(),
                (wire::frame::VlanScope::UNTAGGED, c.from),
                &c.name,
                slowpath::reassembly::TempFile::adopt(temp),
                got.size,
                got.sha256,
            )?;
            Ok(Answer::Prefetched(Prefetched {
                name: c.name.clone(),
                server: c.from,
                size: got.size,
                sha256: slowpath::Digest256(got.sha256).to_hex(),
                published: published_word(p).into(),
            }))
        })?,
    };
    let Answer::Prefetched(p) = answer else {
        bail!("the bridge answered prefetch with something else");
    };
    if c.json {
        println!("{}", serde_json::to_string(&p)?);
    } else {
        println!(
            "cached {} from {}: {} bytes, sha256 {} ({})",
            escape_name(&p.name),
            p.server,
            p.size,
            p.sha256,
            p.published
        );
    }
    Ok(())
}

fn print_removed(answer: &Answer, json: bool) -> Result<()> {
    let Answer::Removed(r) = answer else {
        bail!("the bridge answered with something else");
    };
    if json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    let Removed {
        removed,
        removed_bytes,
        kept_in_use,
    } = r;
    for e in removed {
        println!("removed {}", describe(e));
    }
    println!(
        "removed {} files, {removed_bytes} bytes{}",
        removed.len(),
        if *kept_in_use > 0 {
            format!("; {kept_in_use} in use kept")
        } else {
            String::new()
        }
    );
    Ok(())
}

/// A cached file in one line: origin, VLAN, size, last use, name.
fn describe(e: &Entry) -> String {
    format!(
        "{:<15} {:<9} {:>12}  {:<20}  {}",
        e.server.to_string(),
        vlan_word(e),
        e.size,
        fmt_time(e.recency()),
        escape_name(&e.name)
    )
}

/// The VLAN column: `-` untagged, `100`, `100.200` for QinQ, `shared`.
pub(crate) fn vlan_word(e: &Entry) -> String {
    // Two VLANs may hold two servers at one address: the VLAN tells their
    // files apart ("shared": served on every VLAN).
    match (e.shared, e.vlan.outer, e.vlan.inner) {
        (true, ..) => "shared".to_string(),
        (false, 0, 0) => "-".to_string(),
        (false, o, 0) => o.to_string(),
        (false, o, i) => format!("{o}.{i}"),
    }
}
