//! A bridge's mirror of the verification-table bucket, sans-I/O: the NATS
//! thread feeds it the watch's entries, connection changes and the clock,
//! and publishes its [`View`] for the serving thread.
//!
//! The mirror is **live** when it is connected, has applied the bucket up
//! to the last revision the bucket had when the watch started, and has
//! had a signed heartbeat from the agent within `max_silence`. Only a live
//! mirror answers; otherwise the bridge asks the agent as before.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::policy::{self, Policy, Rule, POLICY_KEY};
use crate::record::{self, Body, FileInfo, RecordError, HEARTBEAT_KEY};

/// Mirror settings.
#[derive(Debug, Clone, Copy)]
pub struct MirrorConfig {
    /// Files held at most; a put of one more is refused and counted (the
    /// file then answers unknown: its requests go to the origin).
    pub max_files: usize,
    /// The mirror stops answering when the agent's last heartbeat is older.
    pub max_silence: Duration,
    /// A heartbeat stamped further than this from our wall clock is refused
    /// (an old one replayed into a fresh mirror).
    pub window: Duration,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            max_files: 65536,
            max_silence: Duration::from_secs(1),
            window: Duration::from_secs(30),
        }
    }
}

/// What the watch delivered for one KV key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// A value was put.
    Put(&'a [u8]),
    /// The key was deleted or purged (unsigned: it can only make the
    /// bridge ask the origin, never serve).
    Delete,
}

/// What the mirror knows about one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileView {
    /// Current content on the origin.
    File(FileInfo),
    /// Being written, or gone: no copy is current.
    NotServable,
}

/// The mirror's answer for a cached copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The copy's SHA-256 is the origin's: serve it.
    Current(FileInfo),
    /// The origin has other content.
    Stale,
    /// Not in the table, being written, gone, or published by an agent
    /// run that is no longer the current one.
    Unknown,
}

/// The mirror's table as the serving thread sees it: immutable, replaced
/// whole (behind `arc-swap`) when the mirror changes.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Normalised file name → what the agent published, with its epoch.
    files: Arc<HashMap<String, (u64, FileView)>>,
    /// Connected and caught up with the bucket.
    pub synced: bool,
    /// The epoch of the agent's current heartbeat.
    pub epoch: u64,
    /// The serving policy's rules (the latest signed one; none: serve).
    pub policy: Arc<Vec<Rule>>,
}

impl View {
    /// Files in the view.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when the view holds no file.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The current content of `name` (normalised) as published by the
    /// agent's current run, if the table vouches for one. The caller
    /// checks liveness first ([`is_live`]).
    pub fn current(&self, name: &str) -> Option<FileInfo> {
        match self.files.get(name) {
            Some((epoch, FileView::File(info))) if *epoch == self.epoch => Some(*info),
            _ => None,
        }
    }

    /// The verdict for a copy of `name` (normalised) with `sha256`. The
    /// caller checks liveness first ([`is_live`]).
    pub fn verdict(&self, name: &str, sha256: &[u8; 32]) -> Verdict {
        match self.files.get(name) {
            // Published by an earlier run of the agent and not since:
            // that run's word no longer counts.
            Some((epoch, _)) if *epoch != self.epoch => Verdict::Unknown,
            Some((_, FileView::File(info))) if &info.sha256 == sha256 => Verdict::Current(*info),
            Some((_, FileView::File(_))) => Verdict::Stale,
            Some((_, FileView::NotServable)) | None => Verdict::Unknown,
        }
    }
}

impl View {
    /// The serving policy's decision for `name` (normalised) at `bridge`
    /// for `client`: the latest signed policy applies whether or not the
    /// mirror is live (a rule that sends a file to the origin keeps doing
    /// so while the engine is away).
    pub fn decide(
        &self,
        name: &str,
        bridge: policy::Bridge<'_>,
        client: policy::Client,
    ) -> policy::Decision {
        policy::decide(&self.policy, name, bridge, client)
    }
}

/// Whether a mirror answers: synced, and the agent heard from within
/// `max_silence` of `now`.
pub fn is_live(
    synced: bool,
    heartbeat: Option<Instant>,
    now: Instant,
    max_silence: Duration,
) -> bool {
    synced && heartbeat.is_some_and(|h| now.saturating_duration_since(h) <= max_silence)
}

/// What the mirror did, for the operator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MirrorCounters {
    /// Signed file records applied.
    pub applied: u64,
    /// Signed heartbeats accepted.
    pub heartbeats: u64,
    /// Values whose signature did not verify (ignored).
    pub bad_signature: u64,
    /// Values that were not records, or under the wrong key (ignored).
    pub malformed: u64,
    /// Signed records older than what the mirror holds (ignored).
    pub replayed: u64,
    /// Entries at or below the last applied revision (ignored).
    pub duplicates: u64,
    /// Keys deleted or purged in the bucket.
    pub deletes: u64,
    /// New files refused past `max_files`.
    pub refused: u64,
    /// Times the bucket was found behind the mirror (recreated) and the
    /// mirror started over.
    pub resets: u64,
    /// Watches started (the first, and one per reconnection).
    pub watches: u64,
    /// Signed serving policies applied.
    pub policies: u64,
}

#[derive(Debug, Clone)]
struct Slot {
    name: String,
    epoch: u64,
    seq: u64,
    view: FileView,
}

#[derive(Debug, Clone, Copy)]
struct Heartbeat {
    epoch: u64,
    seq: u64,
    at: Instant,
}

/// The mirror's state.
#[derive(Debug)]
pub struct Mirror {
    key: Vec<u8>,
    bucket: String,
    config: MirrorConfig,
    /// By KV key (deletes name only the key).
    slots: HashMap<String, Slot>,
    last_revision: u64,
    /// The bucket's last revision when the current watch started; `None`
    /// while disconnected.
    target: Option<u64>,
    caught_up: bool,
    heartbeat: Option<Heartbeat>,
    /// The latest signed serving policy.
    policy: Option<Policy>,
    /// The view needs publishing.
    dirty: bool,
    counters: MirrorCounters,
}

impl Mirror {
    /// An empty, disconnected mirror of `bucket`, verifying with `key`.
    pub fn new(key: &[u8], bucket: &str, config: MirrorConfig) -> Mirror {
        Mirror {
            key: key.to_vec(),
            bucket: bucket.to_owned(),
            config,
            slots: HashMap::new(),
            last_revision: 0,
            target: None,
            caught_up: false,
            heartbeat: None,
            policy: None,
            dirty: true,
            counters: MirrorCounters::default(),
        }
    }

    /// The revision the next watch starts from: one past the last applied.
    pub fn resume_from(&self) -> u64 {
        self.last_revision + 1
    }

    /// The last applied revision.
    pub fn last_revision(&self) -> u64 {
        self.last_revision
    }

    /// A watch started; the bucket's last revision was `bucket_last`. A
    /// bucket behind the mirror was recreated: everything is forgotten and
    /// the watch must start from revision 1 (the return value: where to
    /// start).
    pub fn connected(&mut self, bucket_last: u64) -> u64 {
        self.counters.watches += 1;
        if bucket_last < self.last_revision {
            self.counters.resets += 1;
            self.slots.clear();
            self.heartbeat = None;
            self.policy = None;
            self.last_revision = 0;
        }
        self.target = Some(bucket_last);
        self.caught_up = self.last_revision >= bucket_last;
        self.dirty = true;
        self.resume_from()
    }

    /// The connection or the watch is gone: not live until the next watch
    /// has caught up. What was applied stays (and resumes).
    pub fn disconnected(&mut self) {
        self.target = None;
        self.caught_up = false;
        self.dirty = true;
    }

    /// Applies one entry of the watch (in revision order). `wall` is our
    /// wall clock in ms since the Unix epoch (heartbeat window only).
    pub fn apply(&mut self, now: Instant, wall_ms: u64, revision: u64, kv_key: &str, op: Op<'_>) {
        if revision <= self.last_revision {
            self.counters.duplicates += 1;
            return;
        }
        self.last_revision = revision;
        if let Some(t) = self.target {
            if revision >= t && !self.caught_up {
                self.caught_up = true;
                self.dirty = true;
            }
        }
        if kv_key == POLICY_KEY {
            return self.apply_policy(revision, op);
        }
        let value = match op {
            Op::Delete => {
                self.counters.deletes += 1;
                if self.slots.remove(kv_key).is_some() {
                    self.dirty = true;
                }
                return;
            }
            Op::Put(v) => v,
        };
        let rec = match record::decode(value, &self.key, &self.bucket, kv_key) {
            Ok(r) => r,
            Err(RecordError::BadSignature) => {
                self.counters.bad_signature += 1;
                log::warn!("fleet: entry {kv_key} (revision {revision}) is not signed with our key: ignored");
                return;
            }
            Err(e) => {
                self.counters.malformed += 1;
                log::warn!("fleet: entry {kv_key} (revision {revision}): {e}: ignored");
                return;
            }
        };
        let order = (rec.epoch, rec.seq);
        if kv_key == HEARTBEAT_KEY {
            let fresh = wall_ms.abs_diff(rec.timestamp_ms) <= self.config.window.as_millis() as u64;
            if !fresh || self.heartbeat.is_some_and(|h| (h.epoch, h.seq) >= order) {
                self.counters.replayed += 1;
                return;
            }
            if self.heartbeat.is_none_or(|h| h.epoch != rec.epoch) {
                self.dirty = true;
            }
            self.heartbeat = Some(Heartbeat {
                epoch: rec.epoch,
                seq: rec.seq,
                at: now,
            });
            self.counters.heartbeats += 1;
            return;
        }
        let (name, view) = match rec.body {
            Body::File { name, info } => (name, FileView::File(info)),
            Body::Changing { name } | Body::Absent { name } => (name, FileView::NotServable),
            // A heartbeat under a file's key cannot verify (the key is signed).
            Body::Heartbeat => return,
        };
        match self.slots.get(kv_key) {
            Some(s) if (s.epoch, s.seq) >= order => {
                self.counters.replayed += 1;
                return;
            }
            None if self.slots.len() >= self.config.max_files => {
                self.counters.refused += 1;
                return;
            }
            _ => {}
        }
        // A change while caught up is news (one line per change of the
        // origin); the catch-up after a (re)connection is not.
        let level = if self.caught_up {
            log::Level::Info
        } else {
            log::Level::Debug
        };
        match view {
            FileView::File(i) => log::log!(
                level,
                "fleet: {name}: version {} size {} (revision {revision})",
                i.version,
                i.size
            ),
            FileView::NotServable => log::log!(
                level,
                "fleet: {name}: being written or gone (revision {revision})"
            ),
        }
        let slot = Slot {
            name,
            epoch: rec.epoch,
            seq: rec.seq,
            view,
        };
        self.slots.insert(kv_key.to_owned(), slot);
        self.counters.applied += 1;
        self.dirty = true;
    }

    /// The serving policy's entry: kept if it verifies and is newer than
    /// the one held. A delete (unsigned) keeps the policy held: the agent
    /// withdraws rules by publishing an empty policy, never by deleting,
    /// and whoever can delete in the engine must not lift a rule.
    fn apply_policy(&mut self, revision: u64, op: Op<'_>) {
        let Op::Put(value) = op else {
            self.counters.deletes += 1;
            return;
        };
        let p: Policy = match crate::doc::verify(value, &self.key, &self.bucket, POLICY_KEY) {
            Ok(p) => p,
            Err(RecordError::BadSignature) => {
                self.counters.bad_signature += 1;
                log::warn!("fleet: the serving policy (revision {revision}) is not signed with our key: ignored");
                return;
            }
            Err(e) => {
                self.counters.malformed += 1;
                log::warn!("fleet: the serving policy (revision {revision}): {e}: ignored");
                return;
            }
        };
        if let Err(e) = policy::check(&p.rules) {
            self.counters.malformed += 1;
            log::warn!("fleet: the serving policy (revision {revision}): {e}: ignored");
            return;
        }
        if self
            .policy
            .as_ref()
            .is_some_and(|h| (h.epoch, h.seq) >= (p.epoch, p.seq))
        {
            self.counters.replayed += 1;
            return;
        }
        log::info!(
            "fleet: serving policy of {} rules (revision {revision})",
            p.rules.len()
        );
        self.policy = Some(p);
        self.counters.policies += 1;
        self.dirty = true;
    }

    /// Connected and caught up with the bucket.
    pub fn synced(&self) -> bool {
        self.target.is_some() && self.caught_up
    }

    /// When the agent's last accepted heartbeat arrived.
    pub fn heartbeat_at(&self) -> Option<Instant> {
        self.heartbeat.map(|h| h.at)
    }

    /// Whether the mirror answers at `now`.
    pub fn is_live(&self, now: Instant) -> bool {
        is_live(
            self.synced(),
            self.heartbeat_at(),
            now,
            self.config.max_silence,
        )
    }

    /// The view to publish, if anything the serving thread sees changed
    /// since the last call (heartbeat times travel apart: they change
    /// several times a second).
    pub fn take_view(&mut self) -> Option<View> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        Some(self.view())
    }

    /// The current view.
    pub fn view(&self) -> View {
        let files = self
            .slots
            .values()
            .map(|s| (s.name.clone(), (s.epoch, s.view)))
            .collect();
        View {
            files: Arc::new(files),
            synced: self.synced(),
            epoch: self.heartbeat.map_or(0, |h| h.epoch),
            policy: Arc::new(
                self.policy
                    .as_ref()
                    .map_or_else(Vec::new, |p| p.rules.clone()),
            ),
        }
    }

    /// The counters.
    pub fn counters(&self) -> MirrorCounters {
        self.counters
    }

    /// Files held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no file is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{encode, file_key, Record};

    const KEY: &[u8] = &[3u8; 32];
    const B: &str = "bc";
    const WALL: u64 = 1_700_000_000_000;

    fn info(sha: u8, version: u64) -> FileInfo {
        FileInfo {
            size: 10,
            version,
            sha256: [sha; 32],
            mtime_ms: 1,
        }
    }

    fn put(epoch: u64, seq: u64, body: Body) -> (String, Vec<u8>) {
        // Signed with our key; `T::feed_signed` for others.
        let r = Record {
            epoch,
            seq,
            timestamp_ms: WALL,
            body,
        };
        (r.body.kv_key(), encode(&r, KEY, B))
    }

    fn file(epoch: u64, seq: u64, name: &str, sha: u8) -> (String, Vec<u8>) {
        put(
            epoch,
            seq,
            Body::File {
                name: name.into(),
                info: info(sha, seq),
            },
        )
    }

    struct T {
        m: Mirror,
        now: Instant,
        rev: u64,
    }

    impl T {
        fn new() -> T {
            T {
                m: Mirror::new(KEY, B, MirrorConfig::default()),
                now: Instant::now(),
                rev: 0,
            }
        }
        /// Connected to an empty bucket, heartbeat (epoch 1, seq 1) applied.
        fn live() -> T {
            let mut t = T::new();
            t.m.connected(0);
            t.feed(put(1, 1, Body::Heartbeat));
            t
        }
        fn feed(&mut self, (k, v): (String, Vec<u8>)) {
            self.rev += 1;
            self.m.apply(self.now, WALL, self.rev, &k, Op::Put(&v));
        }
        /// Puts `r` signed with `with` (a forger's key, or ours).
        fn feed_signed(&mut self, r: &Record, with: &[u8]) {
            self.rev += 1;
            let v = encode(r, with, B);
            let k = r.body.kv_key();
            self.m.apply(self.now, WALL, self.rev, &k, Op::Put(&v));
        }
        fn verdict(&self, name: &str, sha: u8) -> Option<Verdict> {
            self.m
                .is_live(self.now)
                .then(|| self.m.view().verdict(name, &[sha; 32]))
        }
    }

    fn policy(epoch: u64, seq: u64, rules: &str) -> (String, Vec<u8>) {
        let p = Policy {
            epoch,
            seq,
            rules: policy::parse_file(rules).unwrap(),
        };
        (
            POLICY_KEY.to_owned(),
            crate::doc::sign(&p, KEY, B, POLICY_KEY),
        )
    }

    const SITE_A: policy::Bridge<'static> = policy::Bridge {
        id: "a1",
        site: "site-a",
    };

    fn action(t: &T, name: &str) -> policy::Action {
        t.m.view()
            .decide(name, SITE_A, policy::Client::default())
            .action
    }

    #[test]
    fn the_serving_policy_applies_from_the_mirror() {
        use policy::Action::{Origin, Serve};
        let mut t = T::live();
        assert_eq!(action(&t, "vmlinuz"), Serve, "no policy: serve");
        let origin = "[[rule]]\nfile = \"vmlinuz\"\nsite = \"site-a\"\naction = \"origin\"";
        t.feed(policy(1, 2, origin));
        assert_eq!(t.m.counters().policies, 1);
        assert_eq!(action(&t, "vmlinuz"), Origin);
        assert_eq!(action(&t, "initrd"), Serve);
        // The rule is lifted by a newer, empty policy.
        t.feed(policy(1, 3, ""));
        assert_eq!(action(&t, "vmlinuz"), Serve);
        // The older policy replayed is refused.
        t.feed(policy(1, 2, origin));
        assert_eq!(t.m.counters().replayed, 1);
        assert_eq!(action(&t, "vmlinuz"), Serve);
        // A forged one, and a table record under the policy's key, too.
        let forged = Policy {
            epoch: 9,
            seq: 9,
            rules: policy::parse_file(origin).unwrap(),
        };
        t.rev += 1;
        let v = crate::doc::sign(&forged, &[7u8; 32], B, POLICY_KEY);
        t.m.apply(t.now, WALL, t.rev, POLICY_KEY, Op::Put(&v));
        assert_eq!(t.m.counters().bad_signature, 1);
        let (_, rec) = file(1, 4, "vmlinuz", 1);
        t.rev += 1;
        t.m.apply(t.now, WALL, t.rev, POLICY_KEY, Op::Put(&rec));
        assert_eq!(t.m.counters().malformed, 1);
        assert_eq!(action(&t, "vmlinuz"), Serve);
        // A new agent run's policy orders after the last run's.
        t.feed(policy(2, 1, origin));
        assert_eq!(action(&t, "vmlinuz"), Origin);
        // An (unsigned) delete does not lift a rule.
        t.rev += 1;
        t.m.apply(t.now, WALL, t.rev, POLICY_KEY, Op::Delete);
        assert_eq!(action(&t, "vmlinuz"), Origin);
        // Not live: the last policy still holds.
        t.m.disconnected();
        assert_eq!(action(&t, "vmlinuz"), Origin);
        // Over the bound: refused as malformed, the last one kept.
        let p = Policy {
            epoch: 3,
            seq: 1,
            rules: vec![
                policy::parse_file("[[rule]]\naction = \"serve\"").unwrap()[0].clone();
                policy::MAX_RULES + 1
            ],
        };
        t.rev += 1;
        let v = crate::doc::sign(&p, KEY, B, POLICY_KEY);
        t.m.apply(t.now, WALL, t.rev, POLICY_KEY, Op::Put(&v));
        assert_eq!(t.m.counters().malformed, 2);
        assert_eq!(action(&t, "vmlinuz"), Origin);
    }

    #[test]
    fn live_only_when_caught_up_and_heard_from() {
        let mut t = T::new();
        assert_eq!(t.verdict("a", 1), None, "never connected");
        // The bucket holds 2 revisions: not live before both are applied.
        assert_eq!(t.m.connected(2), 1);
        t.feed(file(1, 1, "a", 1));
        assert!(!t.m.synced());
        t.feed(put(1, 2, Body::Heartbeat));
        assert!(t.m.synced());
        assert_eq!(t.verdict("a", 1), Some(Verdict::Current(info(1, 1))));
        assert_eq!(t.verdict("a", 2), Some(Verdict::Stale));
        assert_eq!(t.verdict("b", 1), Some(Verdict::Unknown));
        // The agent falls silent: the mirror stops answering.
        t.now += Duration::from_millis(1001);
        assert_eq!(t.verdict("a", 1), None);
        t.feed(put(1, 3, Body::Heartbeat));
        assert!(t.verdict("a", 1).is_some());
        // Disconnected: not live, whatever it holds.
        t.m.disconnected();
        assert_eq!(t.verdict("a", 1), None);
        // An empty bucket is caught up at once, but needs a heartbeat.
        let mut e = T::new();
        e.m.connected(0);
        assert!(e.m.synced());
        assert!(!e.m.is_live(e.now));
    }

    #[test]
    fn entries_apply_in_revision_order_and_duplicates_are_ignored() {
        let mut t = T::live();
        t.feed(file(1, 2, "a", 1));
        t.feed(put(1, 3, Body::Changing { name: "a".into() }));
        assert_eq!(t.verdict("a", 1), Some(Verdict::Unknown), "being written");
        t.feed(file(1, 4, "a", 2));
        assert_eq!(t.verdict("a", 2), Some(Verdict::Current(info(2, 4))));
        assert_eq!(t.verdict("a", 1), Some(Verdict::Stale));
        // Redelivered at an old revision (a watch resumed too early): ignored.
        let (k, v) = file(1, 2, "a", 1);
        t.m.apply(t.now, WALL, 2, &k, Op::Put(&v));
        assert_eq!(t.m.counters().duplicates, 1);
        assert_eq!(t.verdict("a", 2), Some(Verdict::Current(info(2, 4))));
        // Gone from the origin.
        t.feed(put(1, 5, Body::Absent { name: "a".into() }));
        assert_eq!(t.verdict("a", 2), Some(Verdict::Unknown));
    }

    #[test]
    fn a_signature_that_does_not_verify_is_ignored_and_counted() {
        let mut t = T::live();
        t.feed(file(1, 2, "a", 2));
        // Forged: the old content claimed current, under another key.
        let forged = Record {
            epoch: 1,
            seq: 99,
            timestamp_ms: WALL,
            body: Body::File {
                name: "a".into(),
                info: info(1, 99),
            },
        };
        t.feed_signed(&forged, &[4u8; 32]);
        // Garbage.
        t.rev += 1;
        t.m.apply(t.now, WALL, t.rev, &file_key("b"), Op::Put(b"hello"));
        let c = t.m.counters();
        assert_eq!((c.bad_signature, c.malformed), (1, 1));
        assert_eq!(t.verdict("a", 1), Some(Verdict::Stale));
        assert_eq!(t.verdict("a", 2), Some(Verdict::Current(info(2, 2))));
        // A forged heartbeat does not keep a silent agent's mirror live.
        t.now += Duration::from_secs(2);
        let hb = Record {
            epoch: 1,
            seq: 100,
            timestamp_ms: WALL,
            body: Body::Heartbeat,
        };
        t.feed_signed(&hb, &[4u8; 32]);
        assert!(!t.m.is_live(t.now));
        assert_eq!(t.m.counters().bad_signature, 2);
    }

    #[test]
    fn replayed_records_are_refused() {
        let mut t = T::new();
        t.m.connected(0);
        t.feed(put(1, 5, Body::Heartbeat));
        let old = file(1, 6, "a", 1);
        t.feed(old.clone());
        t.feed(file(1, 7, "a", 2));
        // The signed old record put again at a new revision.
        t.feed(old);
        assert_eq!(t.m.counters().replayed, 1);
        assert_eq!(t.verdict("a", 1), Some(Verdict::Stale));
        // A replayed heartbeat neither revives nor moves the clock.
        t.now += Duration::from_secs(2);
        t.feed(put(1, 5, Body::Heartbeat));
        assert!(!t.m.is_live(t.now));
        // Nor does one stamped far from our clock, even with a new seq.
        let r = Record {
            epoch: 1,
            seq: 50,
            timestamp_ms: WALL - 60_000,
            body: Body::Heartbeat,
        };
        t.feed_signed(&r, KEY);
        assert!(!t.m.is_live(t.now));
        assert_eq!(t.m.counters().replayed, 3);
    }

    #[test]
    fn a_deletion_makes_the_file_unknown() {
        let mut t = T::live();
        t.feed(file(1, 2, "a", 1));
        t.rev += 1;
        t.m.apply(t.now, WALL, t.rev, &file_key("a"), Op::Delete);
        assert_eq!(t.verdict("a", 1), Some(Verdict::Unknown));
        assert_eq!(t.m.counters().deletes, 1);
        assert!(t.m.is_empty());
    }

    #[test]
    fn a_watch_resumes_from_the_last_revision() {
        let mut t = T::new();
        assert_eq!(t.m.connected(0), 1);
        t.feed(put(1, 1, Body::Heartbeat));
        t.feed(file(1, 2, "a", 1));
        t.m.disconnected();
        // Meanwhile the bucket moved on to revision 5.
        assert_eq!(t.m.connected(5), 3, "resume after the last applied");
        assert!(!t.m.synced(), "not caught up yet");
        t.feed(file(1, 3, "a", 2)); // revision 3
        t.feed(put(1, 4, Body::Heartbeat)); // 4
        assert!(!t.m.synced());
        t.feed(put(1, 5, Body::Heartbeat)); // 5
        assert!(t.m.synced());
        assert_eq!(t.verdict("a", 2), Some(Verdict::Current(info(2, 3))));
        // A recreated bucket (behind us) starts the mirror over.
        assert_eq!(t.m.connected(1), 1);
        assert_eq!(t.m.counters().resets, 1);
        assert!(t.m.is_empty());
        assert!(!t.m.is_live(t.now), "no heartbeat from the new bucket yet");
    }

    #[test]
    fn an_earlier_agent_run_no_longer_vouches() {
        let mut t = T::live();
        t.feed(file(1, 2, "a", 1));
        t.feed(file(1, 3, "b", 1));
        // The agent restarted (epoch 2) and republished "a" only ("b" is
        // gone, and it did not know it had published it).
        t.feed(file(2, 1, "a", 1));
        t.feed(put(2, 2, Body::Heartbeat));
        assert_eq!(t.verdict("a", 1), Some(Verdict::Current(info(1, 1))));
        assert_eq!(t.verdict("b", 1), Some(Verdict::Unknown));
    }

    #[test]
    fn files_past_the_bound_are_refused_and_counted() {
        let mut t = T {
            m: Mirror::new(
                KEY,
                B,
                MirrorConfig {
                    max_files: 2,
                    ..MirrorConfig::default()
                },
            ),
            now: Instant::now(),
            rev: 0,
        };
        t.m.connected(0);
        t.feed(put(1, 1, Body::Heartbeat));
        for (i, n) in ["a", "b", "c"].iter().enumerate() {
            t.feed(file(1, 2 + i as u64, n, 1));
        }
        assert_eq!(t.m.len(), 2);
        assert_eq!(t.m.counters().refused, 1);
        assert_eq!(t.verdict("c", 1), Some(Verdict::Unknown));
        // An update of a held file still applies.
        t.feed(file(1, 9, "a", 2));
        assert_eq!(t.verdict("a", 2), Some(Verdict::Current(info(2, 9))));
    }
}
