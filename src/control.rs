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
//! In addressed mode a `prefetch` from the addressed origin without
//! `--via` is fetched through the server-side port instead: the worker
//! starts it on the serving endpoint and answers once it is in the cache.

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use bootcache_serve::endpoint::Landed;
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
/// How long the control thread waits for a fetch through the server-side
/// port (within the command's own 600 s).
const PORT_TIMEOUT: Duration = Duration::from_secs(590);

/// What the worker does for the control thread.
enum Op {
    Ls,
    Rm(String),
    Purge(Option<SystemTime>),
    /// The verdict on an entry's file, hashed on the control thread.
    Checked(Entry, bool),
    /// Fetch a file through the server-side port into the cache
    /// (addressed mode): answered when it landed.
    PortFetch {
        name: String,
        server: Ipv4Addr,
    },
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
    /// Fetches through the port under way (at most one: the control
    /// thread waits on each).
    port: Vec<PortWait>,
}

/// A prefetch through the server-side port waiting for its fetch.
struct PortWait {
    name: String,
    server: Ipv4Addr,
    /// The SHA-256 cached before (the answer says new, refreshed or
    /// replaced).
    before: Option<[u8; 32]>,
    reply: Sender<Reply>,
}

/// What the serving endpoint offers the control socket: fetches through
/// the server-side port (addressed mode).
pub(crate) trait PortFetcher {
    /// Starts fetching `name` into the cache; its end comes with a later
    /// [`Control::poll`]'s `fetched`.
    fn start_fetch(&mut self, name: &str) -> Result<(), String>;
}

impl Control {
    /// Binds `<dir>/control.sock` (mode 0600) and starts the thread that
    /// answers it. A socket another bridge answers on is left alone: no
    /// control socket then (said in one line).
    /// `port`: the addressed origin, whose prefetches without `--via` go
    /// through the server-side port.
    pub(crate) fn start(dir: &Path, port: Option<Ipv4Addr>) -> Result<Control> {
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
            .spawn(move || serve(listener, &dir, &tx, port))
            .context("starting the control thread")?;
        log::info!("control socket {}", path.display());
        Ok(Control {
            jobs: rx,
            port: Vec::new(),
        })
    }

    /// Does what the control thread asked (call once per pass; never
    /// waits). `unusable` says why the cache cannot be used now; `port`
    /// fetches through the server-side port, whose ends of this pass are
    /// `fetched` (by name: what landed in the cache, or why nothing did).
    pub(crate) fn poll(
        &mut self,
        logic: &mut CacheLogic,
        unusable: Option<&str>,
        mut port: Option<&mut dyn PortFetcher>,
        fetched: &[(String, Result<Landed, String>)],
    ) {
        for (name, result) in fetched {
            while let Some(i) = self.port.iter().position(|w| w.name == *name) {
                let PortWait {
                    name,
                    server,
                    before,
                    reply,
                } = self.port.swap_remove(i);
                let answer = result.clone().map(|l| {
                    let published = match before {
                        None => Published::New,
                        Some(b) if b == l.sha256 => Published::Refreshed,
                        Some(_) => Published::Replaced,
                    };
                    Answer::Prefetched(Prefetched {
                        name: name.clone(),
                        server,
                        size: l.size,
                        sha256: slowpath::Digest256(l.sha256).to_hex(),
                        published: published_word(published).into(),
                    })
                });
                let _ = reply.try_send(answer);
            }
        }
        // A few per pass: frames go first.
        for _ in 0..QUEUE {
            let Ok(job) = self.jobs.try_recv() else {
                return;
            };
            let reply = match (unusable, job.op) {
                (Some(why), _) => Err(format!("the bridge's cache is unusable now: {why}")),
                (None, Op::PortFetch { name, server }) => {
                    let before = logic
                        .filestore()
                        .lookup(VlanScope::UNTAGGED, server, &name)
                        .map(|e| e.sha256.0);
                    let started = match port.as_deref_mut() {
                        Some(p) => p.start_fetch(&name),
                        None => Err("this bridge fetches through no server-side port".into()),
                    };
                    match started {
                        Ok(()) => {
                            self.port.push(PortWait {
                                name,
                                server,
                                before,
                                reply: job.reply,
                            });
                            continue;
                        }
                        Err(e) => Err(format!("{name:?} not fetched: {e}")),
                    }
                }
                (None, op) => run(logic, op),
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
        Op::PortFetch { name, .. } => Err(format!("{name:?}: not fetched here")),
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
fn serve(listener: UnixListener, dir: &Path, jobs: &Sender<Job>, port: Option<Ipv4Addr>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let response = match read_request(&conn) {
            Ok(req) => answer(dir, jobs, req, port),
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
fn answer(dir: &Path, jobs: &Sender<Job>, req: Request, port: Option<Ipv4Addr>) -> Response {
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
        // The addressed origin, no `--via`: through the server-side port.
        Request::Prefetch {
            name,
            server,
            via: None,
        } if port == Some(server) => match wire::tftp::normalize_name(&name) {
            Ok(name) => ask_for(jobs, Op::PortFetch { name, server }, PORT_TIMEOUT),
            Err(e) => Err(format!("{name:?}: {e}")),
        },
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
    ask_for(jobs, op, WORKER_TIMEOUT)
}

/// [`ask`], waiting up to `timeout`.
fn ask_for(jobs: &Sender<Job>, op: Op, timeout: Duration) -> Reply {
    let (tx, rx) = bounded(1);
    match jobs.try_send(Job { op, reply: tx }) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => return Err("the bridge is busy: try again".into()),
        Err(TrySendError::Disconnected(_)) => return Err("the bridge is stopping".into()),
    }
    rx.recv_timeout(timeout)
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
        control: &mut Control,
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
            control.poll(logic, unusable, None, &[]);
            std::thread::sleep(Duration::from_millis(1));
        }
        let out = client.join().unwrap();
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        Response::parse(&out).unwrap()
    }

    fn exchange(
        dir: &Path,
        control: &mut Control,
        logic: &mut CacheLogic,
        line: &[u8],
    ) -> Response {
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
        let mut control = Control::start(dir.path(), None).unwrap();
        let mode = std::fs::metadata(dir.path().join(SOCKET))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A second bridge on the directory leaves the socket alone.
        assert!(Control::start(dir.path(), None).is_err());

        let r = exchange(dir.path(), &mut control, &mut logic, b"{\"op\":\"ls\"}\n");
        assert!(r.ok, "{r:?}");
        assert!(matches!(r.answer, Some(Answer::Ls(l)) if l.files.is_empty()));
        let r = exchange(
            dir.path(),
            &mut control,
            &mut logic,
            b"{\"op\":\"rm\",\"name\":\"x\"}\n",
        );
        assert!(!r.ok);
        assert!(r.error.unwrap().contains("is not cached"));
        let r = exchange(
            dir.path(),
            &mut control,
            &mut logic,
            b"{\"op\":\"format\"}\n",
        );
        assert!(!r.ok);
        assert!(r.error.unwrap().starts_with("not a request"));
        let long = vec![b'x'; MAX_REQUEST + 100];
        let r = exchange(dir.path(), &mut control, &mut logic, &long);
        assert!(r.error.unwrap().contains("longer than"));
        let r = exchange(
            dir.path(),
            &mut control,
            &mut logic,
            b"{\"op\":\"verify\"}\n",
        );
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
        let mut control = Control::start(dir.path(), None).unwrap();
        let r = exchange(dir.path(), &mut control, &mut logic, b"{\"op\":\"ls\"}\n");
        assert!(r.ok, "{r:?}");
    }

    #[test]
    fn an_unusable_cache_is_said_in_the_answer() {
        let dir = TempDir::new("unusable");
        let mut logic =
            CacheLogic::new(dir.path(), slowpath::CacheLimits::default(), Vec::new()).unwrap();
        let mut control = Control::start(dir.path(), None).unwrap();
        let why = Some("the disk is read-only");
        let r = exchange_when(
            why,
            dir.path(),
            &mut control,
            &mut logic,
            b"{\"op\":\"purge\"}\n",
        );
        assert!(!r.ok);
        assert!(r.error.unwrap().contains("the disk is read-only"));
    }

    /// Records the fetches asked, as the serving endpoint would start them.
    struct Fetcher(Vec<String>);

    impl PortFetcher for Fetcher {
        fn start_fetch(&mut self, name: &str) -> Result<(), String> {
            if name == "busy.img" {
                return Err("64 fetches under way (max_fetches): try again".into());
            }
            self.0.push(name.to_owned());
            Ok(())
        }
    }

    #[test]
    fn a_prefetch_from_the_addressed_origin_goes_through_the_port() {
        let dir = TempDir::new("port");
        let mut logic =
            CacheLogic::new(dir.path(), slowpath::CacheLimits::default(), Vec::new()).unwrap();
        let mut control = Control::start(dir.path(), Some(Ipv4Addr::new(10, 0, 0, 1))).unwrap();
        let ask = |line: &'static [u8]| {
            let path = dir.path().join(SOCKET);
            std::thread::spawn(move || {
                let mut c = UnixStream::connect(path).unwrap();
                c.write_all(line).unwrap();
                let mut out = Vec::new();
                c.read_to_end(&mut out).unwrap();
                Response::parse(&out).unwrap()
            })
        };
        let mut port = Fetcher(Vec::new());
        let client = ask(b"{\"op\":\"prefetch\",\"name\":\"/a.img\",\"server\":\"10.0.0.1\"}\n");
        // The worker's passes: the fetch is started (by its normalised
        // name), nothing answered until it ends.
        while port.0.is_empty() {
            control.poll(&mut logic, None, Some(&mut port), &[]);
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(port.0, ["a.img"]);
        control.poll(&mut logic, None, Some(&mut port), &[]);
        assert!(!client.is_finished());
        let landed = Landed {
            size: 5,
            sha256: [3; 32],
        };
        let other = [("b.img".to_string(), Ok(landed))];
        control.poll(&mut logic, None, Some(&mut port), &other);
        assert_eq!(control.port.len(), 1, "another file's end answers nothing");
        let ended = [("a.img".to_string(), Ok(landed))];
        control.poll(&mut logic, None, Some(&mut port), &ended);
        let r = client.join().unwrap();
        let Some(Answer::Prefetched(p)) = r.answer else {
            panic!("{r:?}");
        };
        assert_eq!(
            (p.name.as_str(), p.size, p.published.as_str()),
            ("a.img", 5, "new")
        );
        assert_eq!(p.sha256, slowpath::Digest256([3; 32]).to_hex());
        // Refused by the endpoint: said at once. Failed: the reason.
        let client = ask(b"{\"op\":\"prefetch\",\"name\":\"busy.img\",\"server\":\"10.0.0.1\"}\n");
        while !client.is_finished() {
            control.poll(&mut logic, None, Some(&mut port), &[]);
            std::thread::sleep(Duration::from_millis(1));
        }
        let r = client.join().unwrap();
        assert!(r.error.unwrap().contains("max_fetches"));
        let client = ask(b"{\"op\":\"prefetch\",\"name\":\"c.img\",\"server\":\"10.0.0.1\"}\n");
        while port.0.len() < 2 {
            control.poll(&mut logic, None, Some(&mut port), &[]);
            std::thread::sleep(Duration::from_millis(1));
        }
        let failed = [("c.img".to_string(), Err("file not found".to_string()))];
        control.poll(&mut logic, None, Some(&mut port), &failed);
        let r = client.join().unwrap();
        assert_eq!(r.error.as_deref(), Some("file not found"));
        assert!(control.port.is_empty());
    }
}
