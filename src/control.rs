//! The control socket: `bootcache cache ls | rm | purge | verify |
//! prefetch` against a running bridge.
//!
//! A Unix socket, `<cache_dir>/control.sock`, mode 0600: whoever may open
//! it (the bridge's user, root) may manage the cache; nothing else
//! authenticates. One request line and one response line per connection
//! (`slowpath::control`). A thread of its own accepts connections, one at
//! a time, and reads and parses the request; what touches the cache goes
//! to the slow path's worker over a bounded channel, which the worker
//! polls once per pass of its loop ([`Control::poll`]) and never waits on:
//! a full channel answers "busy". Hashing files (`verify`) and fetching
//! one (`prefetch`) happen on the control thread; the worker only takes
//! the verdicts and publishes the fetched file, as it does a transfer's.

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use slowpath::control::{
    parse_request, Answer, Listed, Listing, Prefetched, Removed, Request, Response, VerifyOutcome,
    VerifySummary, MAX_REQUEST,
};
use slowpath::filestore::file_matches;
use slowpath::reassembly::TempFile;
use slowpath::{CacheLogic, Entry, Published};
use std::sync::mpsc::{sync_channel as bounded, Receiver, SyncSender as Sender, TrySendError};
use wire::frame::VlanScope;

/// The socket's name in the cache directory.
pub(crate) const SOCKET: &str = "control.sock";
/// Requests queued for the worker at most; more are answered "busy".
const QUEUE: usize = 4;
/// How long the control thread waits for the worker's answer.
const WORKER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send its whole request line.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// What the worker does for the control thread.
enum Op {
    Ls,
    Rm(String),
    Purge(Option<SystemTime>),
    /// The verdict on an entry's file, hashed on the control thread.
    Checked(Entry, bool),
    /// Publish a fetched file (removed with the job if it is dropped).
    Publish {
        temp: TempFile,
        server: Ipv4Addr,
        name: String,
        size: u64,
        sha256: [u8; 32],
    },
}

/// The worker's answer (`Checked`: whether the entry was removed).
type Reply = Result<Answer, String>;

struct Job {
    op: Op,
    reply: Sender<Reply>,
}

/// The worker's end of the control socket.
pub(crate) struct Control {
    jobs: Receiver<Job>,
}

impl Control {
    /// Binds `<dir>/control.sock` (mode 0600) and starts the thread that
    /// answers it. A socket another bridge answers on is left alone: no
    /// control socket then (said in one line).
    pub(crate) fn start(dir: &Path) -> Result<Control> {
        let path = dir.join(SOCKET);
        if UnixStream::connect(&path).is_ok() {
            anyhow::bail!(
                "{}: another bridge answers on it; no control socket",
                path.display()
            );
        }
        // A socket left by a bridge that is gone.
        let _ = std::fs::remove_file(&path);
        let listener =
            UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 0600 {}", path.display()))?;
        let (tx, rx) = bounded(QUEUE);
        let dir = dir.to_owned();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || serve(listener, &dir, &tx))
            .context("starting the control thread")?;
        log::info!("control socket {}", path.display());
        Ok(Control { jobs: rx })
    }

    /// Does what the control thread asked (call once per pass; never
    /// waits). `unusable` says why the cache cannot be used now.
    pub(crate) fn poll(&self, logic: &mut CacheLogic, unusable: Option<&str>) {
        // A few per pass: frames go first.
        for _ in 0..QUEUE {
            let Ok(job) = self.jobs.try_recv() else {
                return;
            };
            let reply = match unusable {
                Some(why) => Err(format!("the bridge's cache is unusable now: {why}")),
                None => run(logic, job.op),
            };
            let _ = job.reply.try_send(reply);
        }
    }
}

/// Does `op` on the worker's cache.
fn run(logic: &mut CacheLogic, op: Op) -> Reply {
    let fs = logic.filestore_mut();
    match op {
        Op::Ls => Ok(Answer::Ls(Listing {
            used_bytes: fs.used_bytes(),
            quota_bytes: fs.quota(),
            files: fs
                .entries()
                .map(|e| Listed {
                    in_use: fs.is_in_use(e),
                    entry: e.clone(),
                })
                .collect(),
        })),
        Op::Rm(name) => match fs.remove_named(&name) {
            Ok(gone) if gone.is_empty() => Err(format!("{name:?} is not cached")),
            Ok(gone) => Ok(removed(gone, 0)),
            Err(e) => Err(format!("{name:?} not removed: {e}")),
        },
        Op::Purge(before) => match fs.purge(before) {
            Ok((gone, kept)) => Ok(removed(gone, kept)),
            Err(e) => Err(format!("nothing purged: {e}")),
        },
        Op::Checked(entry, good) => {
            let done = if good {
                fs.mark_verified(&entry, SystemTime::now());
                false
            } else {
                fs.remove_corrupt(&entry)
            };
            Ok(Answer::Removed(Removed {
                removed_bytes: if done { entry.size } else { 0 },
                removed: if done { vec![entry] } else { Vec::new() },
                kept_in_use: 0,
            }))
        }
        Op::Publish {
            temp,
            server,
            name,
            size,
            sha256,
        } => {
            let p = fs
                .publish(
                    SystemTime::now(),
                    (VlanScope::UNTAGGED, server),
                    &name,
                    temp,
                    size,
                    sha256,
                )
                .map_err(|e| format!("{name:?} not cached: {e}"))?;
            Ok(Answer::Prefetched(Prefetched {
                name,
                server,
                size,
                sha256: slowpath::Digest256(sha256).to_hex(),
                published: published_word(p).into(),
            }))
        }
    }
}

/// How a publish went, in the protocol's words.
pub(crate) fn published_word(p: Published) -> &'static str {
    match p {
        Published::New => "new",
        Published::Refreshed => "refreshed",
        Published::Replaced => "replaced",
    }
}

/// The answer to a removal.
pub(crate) fn removed(gone: Vec<Entry>, kept_in_use: u64) -> Answer {
    Answer::Removed(Removed {
        removed_bytes: gone.iter().map(|e| e.size).sum(),
        removed: gone,
        kept_in_use,
    })
}

/// The control thread: one connection at a time, for as long as the
/// process lives.
fn serve(listener: UnixListener, dir: &Path, jobs: &Sender<Job>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let response = match read_request(&conn) {
            Ok(req) => answer(dir, jobs, req),
            Err(e) => Response::error(e),
        };
        let mut conn = conn;
        let _ = conn.write_all(&response.encode());
    }
}

/// Reads one request line (bounded in bytes and in time: a client that
/// trickles bytes cannot hold the one control thread) and parses it.
fn read_request(mut conn: &UnixStream) -> Result<Request, String> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut line = Vec::new();
    let mut buf = [0u8; 512];
    while !line.contains(&b'\n') && line.len() <= MAX_REQUEST {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no request line within {READ_TIMEOUT:?}"));
        }
        let _ = conn.set_read_timeout(Some(left));
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => line.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("reading the request: {e}")),
        }
    }
    // One request per connection: what follows its line is ignored.
    let end = line
        .iter()
        .position(|&b| b == b'\n')
        .map_or(line.len(), |i| i + 1);
    parse_request(&line[..end]).map_err(|e| e.to_string())
}

/// Carries out `req`, asking the worker for what touches the cache.
fn answer(dir: &Path, jobs: &Sender<Job>, req: Request) -> Response {
    let r = match req {
        Request::Ls => ask(jobs, Op::Ls),
        Request::Rm { name } => ask(jobs, Op::Rm(name)),
        Request::Purge { older_than_s } => {
            let before = older_than_s
                .map(|s| SystemTime::now().checked_sub(Duration::from_secs(s)))
                .map(|t| t.unwrap_or(SystemTime::UNIX_EPOCH));
            ask(jobs, Op::Purge(before))
        }
        Request::Verify => verify(dir, jobs).map(Answer::Verify),
        Request::Prefetch { name, server, via } => {
            prefetch(dir, jobs, &name, server, via.unwrap_or(server))
        }
    };
    match r {
        Ok(a) => Response::ok(a),
        Err(e) => Response::error(e),
    }
}

/// Hands `op` to the worker and waits for its answer.
fn ask(jobs: &Sender<Job>, op: Op) -> Reply {
    let (tx, rx) = bounded(1);
    match jobs.try_send(Job { op, reply: tx }) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => return Err("the bridge is busy: try again".into()),
        Err(TrySendError::Disconnected(_)) => return Err("the bridge is stopping".into()),
    }
    rx.recv_timeout(WORKER_TIMEOUT)
        .map_err(|_| "the bridge's slow path did not answer in time: try again".to_string())?
}

/// Hashes every cached file on this thread; the worker removes those that
/// no longer match (if still the cached version) and marks the others
/// verified.
fn verify(dir: &Path, jobs: &Sender<Job>) -> Result<VerifySummary, String> {
    let Answer::Ls(listing) = ask(jobs, Op::Ls)? else {
        return Err("unexpected answer from the worker".into());
    };
    let mut sum = VerifySummary {
        cache_dir: dir.display().to_string(),
        ..VerifySummary::default()
    };
    for Listed { entry, .. } in listing.files {
        sum.files += 1;
        sum.bytes += entry.size;
        let outcome = match file_matches(dir, &entry) {
            Ok(true) => VerifyOutcome::Ok,
            Ok(false) => VerifyOutcome::Mismatch,
            Err(_) => VerifyOutcome::Unreadable,
        };
        let good = outcome == VerifyOutcome::Ok;
        let Answer::Removed(r) = ask(jobs, Op::Checked(entry.clone(), good))? else {
            return Err("unexpected answer from the worker".into());
        };
        if good {
            sum.ok += 1;
        } else if !r.removed.is_empty() {
            // Else replaced or removed meanwhile: nothing to report.
            sum.removed_file(entry, outcome);
        }
    }
    Ok(sum)
}

/// Fetches `name` from `via` into the cache's `tmp/` and has the worker
/// publish it as from `server`.
fn prefetch(dir: &Path, jobs: &Sender<Job>, name: &str, server: Ipv4Addr, via: Ipv4Addr) -> Reply {
    static N: AtomicU64 = AtomicU64::new(0);
    let temp = dir.join("tmp").join(format!(
        "prefetch-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let got = crate::cache_prefetch::fetch(&temp, via, crate::cache_prefetch::PORT, name).map_err(
        |e| {
            let _ = std::fs::remove_file(&temp);
            format!("{e:#}")
        },
    )?;
    ask(
        jobs,
        Op::Publish {
            temp: TempFile::adopt(temp),
            server,
            name: name.to_owned(),
            size: got.size,
            sha256: got.sha256,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `line` to the socket in `dir` and reads the one-line answer,
    /// while this thread plays the worker's loop (its cache `unusable`).
    fn exchange_when(
        unusable: Option<&str>,
        dir: &Path,
        control: &Control,
        logic: &mut CacheLogic,
        line: &[u8],
    ) -> Response {
        let path = dir.join(SOCKET);
        let line = line.to_vec();
        let client = std::thread::spawn(move || {
            let mut c = UnixStream::connect(path).unwrap();
            c.write_all(&line).unwrap();
            let mut out = Vec::new();
            c.read_to_end(&mut out).unwrap();
            out
        });
        while !client.is_finished() {
            control.poll(logic, unusable);
            std::thread::sleep(Duration::from_millis(1));
        }
        let out = client.join().unwrap();
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        Response::parse(&out).unwrap()
    }

    fn exchange(dir: &Path, control: &Control, logic: &mut CacheLogic, line: &[u8]) -> Response {
        exchange_when(None, dir, control, logic, line)
    }

    /// A fresh directory of this test process, removed on drop.
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let d = std::env::temp_dir()
                .join(format!("bootcache-control-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            TempDir(d)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn answers_on_a_private_socket_through_the_worker() {
        let dir = TempDir::new("answers");
        let mut logic =
            CacheLogic::new(dir.path(), slowpath::CacheLimits::default(), Vec::new()).unwrap();
        let control = Control::start(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(SOCKET))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A second bridge on the directory leaves the socket alone.
        assert!(Control::start(dir.path()).is_err());

        let r = exchange(dir.path(), &control, &mut logic, b"{\"op\":\"ls\"}\n");
        assert!(r.ok, "{r:?}");
        assert!(matches!(r.answer, Some(Answer::Ls(l)) if l.files.is_empty()));
        let r = exchange(
            dir.path(),
            &control,
            &mut logic,
            b"{\"op\":\"rm\",\"name\":\"x\"}\n",
        );
        assert!(!r.ok);
        assert!(r.error.unwrap().contains("is not cached"));
        let r = exchange(dir.path(), &control, &mut logic, b"{\"op\":\"format\"}\n");
        assert!(!r.ok);
        assert!(r.error.unwrap().starts_with("not a request"));
        let long = vec![b'x'; MAX_REQUEST + 100];
        let r = exchange(dir.path(), &control, &mut logic, &long);
        assert!(r.error.unwrap().contains("longer than"));
        let r = exchange(dir.path(), &control, &mut logic, b"{\"op\":\"verify\"}\n");
        assert!(matches!(r.answer, Some(Answer::Verify(v)) if v.files == 0));
    }

    #[test]
    fn a_socket_left_by_a_killed_bridge_is_replaced() {
        let dir = TempDir::new("stale");
        // A bridge killed with SIGKILL leaves its socket file: nothing listens.
        drop(UnixListener::bind(dir.path().join(SOCKET)).unwrap());
        assert!(UnixStream::connect(dir.path().join(SOCKET)).is_err());
        let mut logic =
            CacheLogic::new(dir.path(), slowpath::CacheLimits::default(), Vec::new()).unwrap();
        let control = Control::start(dir.path()).unwrap();
        let r = exchange(dir.path(), &control, &mut logic, b"{\"op\":\"ls\"}\n");
        assert!(r.ok, "{r:?}");
    }

    #[test]
    fn an_unusable_cache_is_said_in_the_answer() {
        let dir = TempDir::new("unusable");
        let mut logic =
            CacheLogic::new(dir.path(), slowpath::CacheLimits::default(), Vec::new()).unwrap();
        let control = Control::start(dir.path()).unwrap();
        let why = Some("the disk is read-only");
        let r = exchange_when(
            why,
            dir.path(),
            &control,
            &mut logic,
            b"{\"op\":\"purge\"}\n",
        );
        assert!(!r.ok);
        assert!(r.error.unwrap().contains("the disk is read-only"));
    }
}
