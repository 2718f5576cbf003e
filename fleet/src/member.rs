//! A bridge as a member of the fleet, sans-I/O (issue 14 items 2–4): what
//! it says it holds, and the directives it carries out. The NATS thread
//! ([`crate::bridge`]) feeds it the bucket's entries, the cache's holdings
//! and the clock, and does what it asks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::doc::{self, Ack, Directive, DirectiveKind, FileAck, FileState, Holding};
use crate::record::FileInfo;

/// Directives a bridge works on at once; more are refused and counted.
pub const MAX_ACTIVE: usize = 256;
/// A file of a directive is given up after this long without success.
pub const GIVE_UP: Duration = Duration::from_secs(60);
/// Pause between attempts at one file (the agent may still be uploading
/// it, or the mirror not live yet).
pub const RETRY: Duration = Duration::from_secs(1);
/// Finished directives remembered at most (past it the set starts over: a
/// directive taken up again finds its files held and is done at once).
pub const MAX_FINISHED: usize = 4096;
/// Directives issued longer ago than this are ignored (a bridge joining
/// later does not replay last month's).
pub const MAX_AGE_MS: u64 = 24 * 3600 * 1000;
/// A cache directive's file the Object Store has not had for this long is
/// read by TFTP from the origin instead (the agent uploads it when it sees
/// the directive: a large file takes a while). A refresh directive is
/// issued only once the object is in the store, so a miss there falls back
/// at once.
pub const ORIGIN_AFTER: Duration = Duration::from_secs(10);

/// The holdings put into the bucket, kept in step with the cache.
#[derive(Debug, Default)]
pub struct HoldingsSync {
    sent: HashMap<String, Holding>,
    /// Keys of ours found in the bucket at the start of a session, not yet
    /// known to be current.
    found: HashSet<String>,
}

/// What to write to bring the bucket to the cache's holdings.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HoldingsDiff {
    /// Keys and holdings to put.
    pub puts: Vec<(String, Holding)>,
    /// Keys to delete.
    pub deletes: Vec<String>,
}

impl HoldingsSync {
    /// A new session found these keys of ours in the bucket (from an
    /// earlier run or before a reconnection): all is put again, and what
    /// the cache no longer holds deleted.
    pub fn start(&mut self, found: impl IntoIterator<Item = String>) {
        self.sent.clear();
        self.found = found.into_iter().collect();
    }

    /// The writes that make the bucket say `now` for `bridge`. Assumes
    /// they all succeed; after a failure call [`HoldingsSync::start`].
    pub fn diff(&mut self, bridge: &str, now: &[Holding]) -> HoldingsDiff {
        let mut out = HoldingsDiff::default();
        let mut keep = HashSet::with_capacity(now.len());
        for h in now {
            let k = h.key(bridge);
            keep.insert(k.clone());
            self.found.remove(&k);
            if self.sent.get(&k) != Some(h) {
                self.sent.insert(k.clone(), h.clone());
                out.puts.push((k, h.clone()));
            }
        }
        let gone: Vec<String> = self
            .sent
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            self.sent.remove(&k);
            out.deletes.push(k);
        }
        out.deletes.extend(self.found.drain());
        out.deletes.sort();
        out
    }
}

/// Where one file of a directive is, on this bridge.
#[derive(Debug, Clone)]
enum Step {
    /// To be fetched at `at` or later; from the origin if `origin`.
    Wait { at: Instant, origin: bool },
    /// A fetch is under way (the I/O side has it).
    Fetching,
    /// Fetched and handed to the cache with this SHA-256: done when the
    /// holdings show it.
    Staged { sha256: [u8; 32] },
    /// Finished (done or failed): in the acknowledgement.
    Over,
}

#[derive(Debug)]
struct Work {
    directive: Directive,
    steps: Vec<Step>,
    ack: Ack,
    started: Instant,
    /// The acknowledgement changed since it was last put.
    dirty: bool,
    /// Last failure per file, for the final detail.
    last_error: Vec<String>,
    /// Per file: since when the Object Store has failed it (cleared by a
    /// failed read from the origin: the store is tried again first).
    store_failing: Vec<Option<Instant>>,
}

/// Where a [`Fetch`] reads the file from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The Object Store's object of that name.
    ObjectStore,
    /// The origin, by TFTP (the store lacks it, or its object is not the
    /// table's version).
    Origin,
}

/// A fetch the I/O side should do: `name` from `source`, which must hash
/// to `info.sha256` (the signed table's word).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// The directive.
    pub id: String,
    /// The file.
    pub name: String,
    /// What the table says it is.
    pub info: FileInfo,
    /// Where from.
    pub source: Source,
}

/// What the directives did, for the operator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectiveCounters {
    /// Directives for this bridge taken up.
    pub accepted: u64,
    /// Directives for other bridges, already finished here, or too old.
    pub ignored: u64,
    /// Directives refused past [`MAX_ACTIVE`].
    pub refused: u64,
    /// Files fetched (from the Object Store or the origin) and handed to
    /// the cache.
    pub fetched: u64,
    /// Of those, files read by TFTP from the origin.
    pub from_origin: u64,
    /// Files found already held at the table's version.
    pub held: u64,
    /// Fetches that failed (missing object, wrong bytes, cache refused).
    pub fetch_errors: u64,
    /// Files given up.
    pub failed: u64,
}

/// The directives this bridge carries out.
#[derive(Debug)]
pub struct Directives {
    bridge: String,
    site: String,
    active: BTreeMap<String, Work>,
    /// Finished here (acknowledged as such): never taken up again.
    finished: HashSet<String>,
    counters: DirectiveCounters,
}

impl Directives {
    /// For bridge `bridge` of `site`.
    pub fn new(bridge: &str, site: &str) -> Directives {
        Directives {
            bridge: bridge.to_owned(),
            site: site.to_owned(),
            active: BTreeMap::new(),
            finished: HashSet::new(),
            counters: DirectiveCounters::default(),
        }
    }

    /// Counters.
    pub fn counters(&self) -> DirectiveCounters {
        self.counters
    }

    /// Directives under way.
    pub fn active(&self) -> usize {
        self.active.len()
    }

    /// Our acknowledgement of a directive as found in the bucket (an
    /// earlier run's): a finished one is not taken up again.
    pub fn acknowledged(&mut self, ack: &Ack) {
        if ack.bridge == self.bridge && ack.finished() {
            self.finish(ack.id.clone());
        }
    }

    fn finish(&mut self, id: String) {
        if self.finished.len() >= MAX_FINISHED {
            self.finished.clear();
        }
        self.finished.insert(id);
    }

    /// A directive from the bucket (verified). Taken up if it is for us,
    /// recent, and not finished here.
    pub fn offer(&mut self, now: Instant, wall_ms: u64, d: Directive) -> bool {
        if !d.target.includes(&self.bridge, &self.site)
            || self.finished.contains(&d.id)
            || self.active.contains_key(&d.id)
            || wall_ms.saturating_sub(d.issued_ms) > MAX_AGE_MS
            || d.files.is_empty()
            || d.files.len() > doc::MAX_DIRECTIVE_FILES
        {
            self.counters.ignored += 1;
            return false;
        }
        if self.active.len() >= MAX_ACTIVE {
            self.counters.refused += 1;
            log::warn!("fleet: directive {} refused: {MAX_ACTIVE} under way", d.id);
            return false;
        }
        self.counters.accepted += 1;
        log::info!(
            "fleet: directive {} ({:?}): {} file(s)",
            d.id,
            d.kind,
            d.files.len()
        );
        let files = d
            .files
            .iter()
            .map(|n| FileAck {
                name: n.clone(),
                state: FileState::Pending,
                sha256: None,
                detail: String::new(),
            })
            .collect();
        let n = d.files.len();
        self.active.insert(
            d.id.clone(),
            Work {
                ack: Ack {
                    id: d.id.clone(),
                    bridge: self.bridge.clone(),
                    at_ms: wall_ms,
                    files,
                },
                steps: vec![
                    Step::Wait {
                        at: now,
                        origin: false
                    };
                    n
                ],
                directive: d,
                started: now,
                dirty: true,
                last_error: vec![String::new(); n],
                store_failing: vec![None; n],
            },
        );
        true
    }

    /// Advances every directive: files the cache now holds at the table's
    /// version are done, files past [`GIVE_UP`] failed; returns the next
    /// fetch to do, if any (one at a time). `table` is the mirror's word
    /// (`None`: not live, or not a file the table vouches for); `held`
    /// whether the cache holds `name` with that SHA-256.
    pub fn poll(
        &mut self,
        now: Instant,
        wall_ms: u64,
        table: impl Fn(&str) -> Option<FileInfo>,
        held: impl Fn(&str, &[u8; 32]) -> bool,
    ) -> Option<Fetch> {
        let mut fetch = None;
        let busy = self
            .active
            .values()
            .any(|w| w.steps.iter().any(|s| matches!(s, Step::Fetching)));
        for w in self.active.values_mut() {
            let expired = now.saturating_duration_since(w.started) >= GIVE_UP;
            for i in 0..w.steps.len() {
                if matches!(w.steps[i], Step::Over) {
                    continue;
                }
                let name = &w.directive.files[i];
                let info = table(name);
                if let Some(info) = info {
                    if held(name, &info.sha256) {
                        let how = if matches!(w.steps[i], Step::Staged { .. }) {
                            "fetched"
                        } else {
                            self.counters.held += 1;
                            "held"
                        };
                        w.steps[i] = Step::Over;
                        w.ack.files[i] = FileAck {
                            name: name.clone(),
                            state: FileState::Done,
                            sha256: Some(doc::hex(&info.sha256)),
                            detail: how.into(),
                        };
                        w.ack.at_ms = wall_ms;
                        w.dirty = true;
                        continue;
                    }
                }
                if expired && !matches!(w.steps[i], Step::Fetching) {
                    let why = match (&info, w.last_error[i].as_str()) {
                        (_, e) if !e.is_empty() => e.to_owned(),
                        (None, _) => "the table does not vouch for it (mirror not live, unknown, or being written)".into(),
                        (Some(_), _) => "not in the cache in time".into(),
                    };
                    log::warn!(
                        "fleet: directive {}: {name}: given up: {why}",
                        w.directive.id
                    );
                    self.counters.failed += 1;
                    w.steps[i] = Step::Over;
                    w.ack.files[i].state = FileState::Failed;
                    w.ack.files[i].detail = why;
                    w.ack.at_ms = wall_ms;
                    w.dirty = true;
                    continue;
                }
                let due = match w.steps[i] {
                    Step::Wait { at, origin } if now >= at => Some(origin),
                    _ => None,
                };
                if let (Some(origin), false, None, Some(info)) = (due, busy, &fetch, info) {
                    w.steps[i] = Step::Fetching;
                    fetch = Some(Fetch {
                        id: w.directive.id.clone(),
                        name: name.clone(),
                        info,
                        source: if origin {
                            Source::Origin
                        } else {
                            Source::ObjectStore
                        },
                    });
                }
            }
        }
        fetch
    }

    /// The I/O side's result for a [`Fetch`]: handed to the cache (`Ok`),
    /// or why not.
    pub fn fetched(&mut self, now: Instant, f: &Fetch, result: Result<(), String>) {
        let Some(w) = self.active.get_mut(&f.id) else {
            return;
        };
        let Some(i) = w.directive.files.iter().position(|n| *n == f.name) else {
            return;
        };
        if !matches!(w.steps[i], Step::Fetching) {
            return;
        }
        match result {
            Ok(()) => {
                self.counters.fetched += 1;
                if f.source == Source::Origin {
                    self.counters.from_origin += 1;
                }
                w.steps[i] = Step::Staged {
                    sha256: f.info.sha256,
                };
            }
            Err(e) => {
                self.counters.fetch_errors += 1;
                log::debug!("fleet: directive {}: {}: {e}", f.id, f.name);
                w.last_error[i] = e;
                // The store missed it: the origin next, at once for a
                // refresh (its object should have been there), after
                // ORIGIN_AFTER for a cache directive (the agent may be
                // uploading it). The origin failed: the store again.
                let origin = match f.source {
                    Source::ObjectStore => {
                        let since = *w.store_failing[i].get_or_insert(now);
                        w.directive.kind == DirectiveKind::Refresh
                            || now.saturating_duration_since(since) >= ORIGIN_AFTER
                    }
                    Source::Origin => {
                        w.store_failing[i] = None;
                        false
                    }
                };
                w.steps[i] = Step::Wait {
                    at: now + RETRY,
                    origin,
                };
            }
        }
    }

    /// Acknowledgements to put (changed since the last call); finished
    /// directives leave the active set.
    pub fn take_acks(&mut self) -> Vec<Ack> {
        let mut out = Vec::new();
        let mut done = Vec::new();
        for (id, w) in &mut self.active {
            if w.dirty {
                w.dirty = false;
                out.push(w.ack.clone());
            }
            if w.steps.iter().all(|s| matches!(s, Step::Over)) {
                done.push(id.clone());
            }
        }
        for id in done {
            self.active.remove(&id);
            self.finish(id);
        }
        out
    }

    /// SHA-256s handed to the cache and not yet seen in the holdings (a
    /// staged file is expected there).
    pub fn staged(&self) -> impl Iterator<Item = &[u8; 32]> + '_ {
        self.active.values().flat_map(|w| {
            w.steps.iter().filter_map(|s| match s {
                Step::Staged { sha256 } => Some(sha256),
                _ => None,
            })
        })
    }
}

/// How long a fetch through the server-side port may go unanswered
/// before it counts as failed and is tried again: the serving thread ends
/// every fetch by its own timeouts, so this only guards against an answer
/// lost with a restarted slow path.
pub const PORT_ANSWER_TIMEOUT: Duration = Duration::from_secs(300);

/// The fetch through the server-side port asked of the serving thread and
/// not answered yet (one at a time; issue 14 item 3). The answer is what
/// landed in the cache, checked here against the signed table as a
/// staged file's bytes are.
#[derive(Debug, Default)]
pub struct PortAsk {
    waiting: Option<(u64, Fetch, Instant)>,
}

impl PortAsk {
    /// A fetch is asked and not answered.
    pub fn busy(&self) -> bool {
        self.waiting.is_some()
    }

    /// `f` was asked at `now` under `tag`.
    pub fn asked(&mut self, now: Instant, tag: u64, f: Fetch) {
        self.waiting = Some((tag, f, now));
    }

    /// The serving thread's answer to `tag`: the size and SHA-256 of the
    /// copy that landed in the cache, or why none did. The fetch and its
    /// result for [`Directives::fetched`]; `None` for an answer to nothing
    /// asked now (a late one, after [`PortAsk::poll_timeout`]).
    pub fn answered(
        &mut self,
        tag: u64,
        r: Result<(u64, [u8; 32]), String>,
    ) -> Option<(Fetch, Result<(), String>)> {
        match self.waiting.take() {
            Some((t, f, _)) if t == tag => {
                let r = r.and_then(|(size, sha)| check_table(&f, size, &sha));
                Some((f, r))
            }
            other => {
                self.waiting = other;
                None
            }
        }
    }

    /// The fetch asked, failed if unanswered for [`PORT_ANSWER_TIMEOUT`].
    pub fn poll_timeout(&mut self, now: Instant) -> Option<(Fetch, Result<(), String>)> {
        let (_, _, since) = self.waiting.as_ref()?;
        if now.saturating_duration_since(*since) < PORT_ANSWER_TIMEOUT {
            return None;
        }
        let (_, f, _) = self.waiting.take()?;
        Some((f, Err("the serving thread did not answer".into())))
    }
}

/// The bytes fetched (`size`, `sha`) must be the signed table's version.
pub fn check_table(f: &Fetch, size: u64, sha: &[u8; 32]) -> Result<(), String> {
    if size != f.info.size || *sha != f.info.sha256 {
        return Err(format!(
            "the bytes ({size} bytes, SHA-256 {}) are not the table's version ({} bytes, {})",
            doc::hex(sha),
            f.info.size,
            doc::hex(&f.info.sha256)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::Target;

    fn holding(name: &str, sha: &str) -> Holding {
        Holding {
            name: name.into(),
            server: "10.0.0.1".into(),
            vlan: "-".into(),
            size: 3,
            sha256: sha.into(),
            verified_s: 1,
        }
    }

    fn info(sha: u8) -> FileInfo {
        FileInfo {
            size: 3,
            version: 1,
            sha256: [sha; 32],
            mtime_ms: 0,
        }
    }

    fn directive(id: &str, target: Target, files: &[&str]) -> Directive {
        Directive {
            id: id.into(),
            kind: DirectiveKind::Cache,
            files: files.iter().map(|s| s.to_string()).collect(),
            target,
            issued_ms: 1_000,
        }
    }

    #[test]
    fn holdings_follow_the_cache_and_clean_up_an_earlier_run() {
        let mut s = HoldingsSync::default();
        let a = holding("a", "aa");
        s.start(["h.b1.old".to_string(), a.key("b1")]);
        let d = s.diff("b1", std::slice::from_ref(&a));
        assert_eq!(d.puts, vec![(a.key("b1"), a.clone())]);
        assert_eq!(d.deletes, vec!["h.b1.old".to_string()]);
        // Nothing changed: nothing written.
        assert_eq!(
            s.diff("b1", std::slice::from_ref(&a)),
            HoldingsDiff::default()
        );
        // Replaced content, a new file, then a file gone.
        let a2 = holding("a", "a2");
        let b = holding("b", "bb");
        let d = s.diff("b1", &[a2.clone(), b.clone()]);
        assert_eq!(d.puts.len(), 2);
        assert!(d.deletes.is_empty());
        let d = s.diff("b1", std::slice::from_ref(&b));
        assert!(d.puts.is_empty());
        assert_eq!(d.deletes, vec![a.key("b1")]);
    }

    #[test]
    fn a_directive_is_fetched_verified_by_holdings_and_acknowledged() {
        let t0 = Instant::now();
        let mut d = Directives::new("b1", "site-a");
        assert!(!d.offer(
            t0,
            2_000,
            directive("x", Target::Site("site-b".into()), &["f"])
        ));
        assert!(!d.offer(
            t0,
            2_000,
            directive("y", Target::Bridges(vec!["b2".into()]), &["f"])
        ));
        assert!(!d.offer(
            t0,
            MAX_AGE_MS + 5_000,
            directive("old", Target::All, &["f"])
        ));
        assert!(d.offer(
            t0,
            2_000,
            directive("1", Target::Site("site-a".into()), &["f", "g"])
        ));
        assert!(
            !d.offer(t0, 2_000, directive("1", Target::All, &["f"])),
            "twice"
        );
        let table = |n: &str| match n {
            "f" => Some(info(1)),
            "g" => Some(info(2)),
            _ => None,
        };
        // "g" is held already at the table's version; "f" must be fetched.
        let mut cache: HashSet<(String, [u8; 32])> = [("g".to_string(), [2; 32])].into();
        let f = d
            .poll(t0, 2_000, table, |n, s| {
                cache.contains(&(n.to_string(), *s))
            })
            .expect("a fetch");
        assert_eq!(
            f,
            Fetch {
                id: "1".into(),
                name: "f".into(),
                info: info(1),
                source: Source::ObjectStore,
            }
        );
        // One fetch at a time.
        assert!(d
            .poll(t0, 2_000, table, |n, s| cache
                .contains(&(n.to_string(), *s)))
            .is_none());
        // The object was missing: retried after RETRY.
        d.fetched(t0, &f, Err("no such object".into()));
        assert!(d
            .poll(t0, 2_000, table, |n, s| cache
                .contains(&(n.to_string(), *s)))
            .is_none());
        let t1 = t0 + RETRY;
        let f = d
            .poll(t1, 3_000, table, |n, s| {
                cache.contains(&(n.to_string(), *s))
            })
            .unwrap();
        d.fetched(t1, &f, Ok(()));
        assert_eq!(d.staged().count(), 1);
        let acks = d.take_acks();
        assert_eq!(acks.len(), 1);
        assert_eq!(acks[0].files[0].state, FileState::Pending);
        assert_eq!(acks[0].files[1].state, FileState::Done);
        assert_eq!(acks[0].files[1].detail, "held");
        // The cache took it in: done, acknowledged, finished.
        cache.insert(("f".into(), [1; 32]));
        assert!(d
            .poll(t1, 3_000, table, |n, s| cache
                .contains(&(n.to_string(), *s)))
            .is_none());
        let acks = d.take_acks();
        assert!(acks[0].finished());
        assert_eq!(acks[0].files[0].detail, "fetched");
        assert_eq!(
            acks[0].files[0].sha256.as_deref(),
            Some(&*doc::hex(&[1; 32]))
        );
        assert_eq!(d.active(), 0);
        assert!(
            !d.offer(t1, 3_000, directive("1", Target::All, &["f"])),
            "finished here"
        );
        let c = d.counters();
        assert_eq!(
            (c.accepted, c.fetched, c.held, c.fetch_errors, c.failed),
            (1, 1, 1, 1, 0)
        );
    }

    #[test]
    fn a_file_the_table_does_not_vouch_for_is_given_up_with_the_reason() {
        let t0 = Instant::now();
        let mut d = Directives::new("b1", "s");
        d.acknowledged(&Ack {
            id: "done-before".into(),
            bridge: "b1".into(),
            at_ms: 0,
            files: vec![],
        });
        assert!(!d.offer(t0, 2_000, directive("done-before", Target::All, &["f"])));
        assert!(d.offer(t0, 2_000, directive("2", Target::All, &["f"])));
        // Unknown to the table: never fetched.
        assert!(d.poll(t0, 2_000, |_| None, |_, _| false).is_none());
        assert!(d
            .poll(t0 + GIVE_UP, 9_000, |_| None, |_, _| false)
            .is_none());
        let acks = d.take_acks();
        assert_eq!(acks[0].files[0].state, FileState::Failed);
        assert!(acks[0].files[0].detail.contains("table"), "{:?}", acks[0]);
        assert_eq!(d.counters().failed, 1);
        // Wrong bytes: the last error is the reason.
        assert!(d.offer(t0, 2_000, directive("3", Target::All, &["f"])));
        let f = d.poll(t0, 2_000, |_| Some(info(1)), |_, _| false).unwrap();
        d.fetched(t0, &f, Err("SHA-256 differs from the table".into()));
        assert!(d
            .poll(t0 + GIVE_UP, 9_000, |_| Some(info(1)), |_, _| false)
            .is_none());
        assert!(d.take_acks()[0].files[0].detail.contains("SHA-256"));
    }

    #[test]
    fn a_file_the_store_lacks_is_read_from_the_origin() {
        let t0 = Instant::now();
        let table = |_: &str| Some(info(1));
        let none = |_: &str, _: &[u8; 32]| false;
        // A refresh: its object should be in the store; one miss (or an
        // object that is not the table's) and the origin is next.
        let mut d = Directives::new("b1", "s");
        let mut r = directive("r", Target::All, &["f"]);
        r.kind = DirectiveKind::Refresh;
        assert!(d.offer(t0, 2_000, r));
        let f = d.poll(t0, 2_000, table, none).unwrap();
        assert_eq!(f.source, Source::ObjectStore);
        d.fetched(t0, &f, Err("not in the Object Store".into()));
        let t1 = t0 + RETRY;
        let f = d.poll(t1, 3_000, table, none).unwrap();
        assert_eq!(f.source, Source::Origin);
        // The origin did not answer: the store again, then the origin.
        d.fetched(t1, &f, Err("no answer".into()));
        let t2 = t1 + RETRY;
        let f = d.poll(t2, 4_000, table, none).unwrap();
        assert_eq!(f.source, Source::ObjectStore);
        d.fetched(t2, &f, Err("SHA-256 is not the table's".into()));
        let t3 = t2 + RETRY;
        let f = d.poll(t3, 5_000, table, none).unwrap();
        assert_eq!(f.source, Source::Origin);
        d.fetched(t3, &f, Ok(()));
        let c = d.counters();
        assert_eq!((c.fetched, c.from_origin, c.fetch_errors), (1, 1, 3));

        // A cache directive: the agent may still be uploading; the store
        // is tried until ORIGIN_AFTER has passed since its first miss.
        let mut d = Directives::new("b1", "s");
        assert!(d.offer(t0, 2_000, directive("c", Target::All, &["f"])));
        let mut now = t0;
        let mut sources = Vec::new();
        while now <= t0 + ORIGIN_AFTER + RETRY {
            if let Some(f) = d.poll(now, 2_000, table, none) {
                sources.push(f.source);
                if f.source == Source::Origin {
                    break;
                }
                d.fetched(now, &f, Err("not in the Object Store".into()));
            }
            now += RETRY;
        }
        assert_eq!(sources.last(), Some(&Source::Origin), "{sources:?}");
        assert!(sources[..sources.len() - 1]
            .iter()
            .all(|s| *s == Source::ObjectStore));
        assert!(sources.len() as u32 > ORIGIN_AFTER.as_secs() as u32);
    }

    #[test]
    fn a_read_through_the_port_is_checked_against_the_table() {
        let t0 = Instant::now();
        let table = |_: &str| Some(info(1));
        let mut cache: HashSet<(String, [u8; 32])> = HashSet::new();
        let mut d = Directives::new("b1", "s");
        let mut r = directive("r", Target::All, &["f"]);
        r.kind = DirectiveKind::Refresh;
        assert!(d.offer(t0, 2_000, r));
        let f = d.poll(t0, 2_000, table, |_, _| false).unwrap();
        d.fetched(t0, &f, Err("not in the Object Store".into()));
        let mut ask = PortAsk::default();
        let mut now = t0 + RETRY;
        let f = d.poll(now, 3_000, table, |_, _| false).unwrap();
        assert_eq!(f.source, Source::Origin);
        ask.asked(now, 1, f);
        assert!(ask.busy());
        // Another copy landed (the origin holds another version): an
        // error, and the store is tried again, then the origin.
        assert!(ask.answered(7, Ok((3, [1; 32]))).is_none(), "not asked");
        let (f, r) = ask.answered(1, Ok((3, [9; 32]))).unwrap();
        assert!(r.as_ref().unwrap_err().contains("not the table's"), "{r:?}");
        d.fetched(now, &f, r);
        now += RETRY;
        let f = d.poll(now, 4_000, table, |_, _| false).unwrap();
        assert_eq!(f.source, Source::ObjectStore);
        d.fetched(now, &f, Err("not in the Object Store".into()));
        now += RETRY;
        let f = d.poll(now, 5_000, table, |_, _| false).unwrap();
        assert_eq!(f.source, Source::Origin);
        ask.asked(now, 2, f);
        let (f, r) = ask.answered(2, Ok((3, [1; 32]))).unwrap();
        assert_eq!(r, Ok(()));
        d.fetched(now, &f, r);
        // Done once the holdings show it.
        cache.insert(("f".into(), [1; 32]));
        assert!(d
            .poll(now, 5_000, table, |n, s| cache
                .contains(&(n.to_string(), *s)))
            .is_none());
        let acks = d.take_acks();
        assert!(acks.last().unwrap().finished());
        assert_eq!(acks.last().unwrap().files[0].detail, "fetched");
        let c = d.counters();
        assert_eq!(
            (c.fetched, c.from_origin, c.fetch_errors, c.failed),
            (1, 1, 3, 0)
        );
    }

    #[test]
    fn a_read_through_the_port_never_answered_fails_and_its_late_answer_is_ignored() {
        let t0 = Instant::now();
        let f = Fetch {
            id: "r".into(),
            name: "f".into(),
            info: info(1),
            source: Source::Origin,
        };
        let mut ask = PortAsk::default();
        assert!(ask.poll_timeout(t0).is_none(), "nothing asked");
        ask.asked(t0, 4, f.clone());
        assert!(ask.poll_timeout(t0 + PORT_ANSWER_TIMEOUT / 2).is_none());
        let (g, r) = ask.poll_timeout(t0 + PORT_ANSWER_TIMEOUT).unwrap();
        assert_eq!(g, f);
        assert!(r.unwrap_err().contains("did not answer"));
        assert!(!ask.busy());
        assert!(ask.answered(4, Ok((3, [1; 32]))).is_none(), "too late");
        // A failed fetch's reason is passed on.
        ask.asked(t0, 5, f);
        let (_, r) = ask
            .answered(5, Err("origin: file not found".into()))
            .unwrap();
        assert_eq!(r, Err("origin: file not found".into()));
    }
}
