//! The agent's side of pushed updates, sans-I/O (issue 14 item 3, figure
//! 8 steps 802–810): from the table and what the bridges say they hold, it
//! decides which files go into the Object Store and which bridges are
//! directed to refresh. The NATS thread ([`crate::agent`]) feeds it the
//! fleet bucket and the table and does the uploads and puts.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::doc::{self, Directive, DirectiveKind, Holding, Presence, Target};
use crate::publish::Published;
use crate::record::{FileInfo, RecordError};

/// Bridges whose holdings the coordinator keeps at most (more are refused
/// and counted: every table keyed by network input is bounded).
pub const MAX_BRIDGES: usize = 4096;
/// Holdings per bridge at most.
pub const MAX_HOLDINGS: usize = 65536;
/// Directives remembered at most (the oldest are forgotten).
pub const MAX_DIRECTIVES: usize = 1024;
/// A failed upload is tried again after this long, in ms.
pub const UPLOAD_RETRY_MS: u64 = 2000;
/// Cache directives older than this no longer make the agent upload, in ms.
pub const DIRECTIVE_UPLOAD_MS: u64 = 3600 * 1000;

/// What the coordinator asks of the I/O side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Put the origin's file `name` into the Object Store; it must hash to
    /// `sha256` (the table's), or the upload does not count.
    Upload {
        /// Normalised name under the root.
        name: String,
        /// The table's SHA-256 of it.
        sha256: [u8; 32],
    },
    /// Put this directive into the fleet bucket.
    Direct(Directive),
}

/// What the coordinator saw and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoordCounters {
    /// Entries of the fleet bucket that did not verify (ignored).
    pub bad_signature: u64,
    /// Entries that were not documents or under unknown keys (ignored).
    pub malformed: u64,
    /// Holdings or bridges refused past the bounds.
    pub refused: u64,
    /// Uploads asked for.
    pub uploads: u64,
    /// Uploads whose bytes were not the table's (changed meanwhile) or
    /// that failed.
    pub upload_errors: u64,
    /// Refresh directives given.
    pub refreshes: u64,
}

/// The agent's coordinator.
#[derive(Debug)]
pub struct Coordinator {
    key: Vec<u8>,
    bucket: String,
    /// Bridge → holding key → holding.
    holdings: HashMap<String, HashMap<String, Holding>>,
    /// Bridge → when its last presence entry was put (its clock, ms):
    /// only bridges present are directed (one that comes back puts its
    /// holdings again and is directed then).
    present: HashMap<String, u64>,
    presence_bucket: String,
    directives: BTreeMap<String, Directive>,
    /// What the Object Store holds (as far as we know): name → SHA-256.
    objects: HashMap<String, [u8; 32]>,
    /// Uploads under way, and failed ones with when to try again (ms).
    uploading: HashMap<String, Option<u64>>,
    /// Refresh directives given: name → (SHA-256, bridges directed).
    refreshed: HashMap<String, ([u8; 32], BTreeSet<String>)>,
    seq: u64,
    counters: CoordCounters,
    /// Files bridges gave up, by directive: (directive id, file), for the
    /// pre-staging rules' retries (at most [`MAX_FAILED`] waiting).
    failed: Vec<(String, String)>,
}

/// Failed files reported and not yet taken, at most (more are counted as
/// refused).
pub const MAX_FAILED: usize = 4096;

impl Coordinator {
    /// A coordinator verifying the fleet bucket `bucket` with `key`.
    pub fn new(key: &[u8], bucket: &str) -> Coordinator {
        Coordinator {
            key: key.to_vec(),
            bucket: bucket.to_owned(),
            holdings: HashMap::new(),
            present: HashMap::new(),
            presence_bucket: doc::Buckets::of(bucket.strip_suffix("-fleet").unwrap_or(bucket))
                .presence,
            directives: BTreeMap::new(),
            objects: HashMap::new(),
            uploading: HashMap::new(),
            refreshed: HashMap::new(),
            seq: 0,
            counters: CoordCounters::default(),
            failed: Vec::new(),
        }
    }

    /// Counters.
    pub fn counters(&self) -> CoordCounters {
        self.counters
    }

    /// The key it verifies (and the agent signs) with.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    fn verify<T: serde::de::DeserializeOwned>(&mut self, key: &str, value: &[u8]) -> Option<T> {
        match doc::verify(value, &self.key, &self.bucket, key) {
            Ok(d) => Some(d),
            Err(RecordError::BadSignature) => {
                self.counters.bad_signature += 1;
                log::warn!(
                    "fleet: {key} in {} is not signed with our key: ignored",
                    self.bucket
                );
                None
            }
            Err(_) => {
                self.counters.malformed += 1;
                None
            }
        }
    }

    /// An entry of the fleet bucket: `value` put under `key`, or `None`
    /// for a delete.
    pub fn observe(&mut self, key: &str, value: Option<&[u8]>) {
        let mut parts = key.splitn(3, '.');
        match (parts.next(), parts.next(), parts.next(), value) {
            (Some("h"), Some(bridge), Some(_), None) => {
                if let Some(h) = self.holdings.get_mut(bridge) {
                    h.remove(key);
                }
            }
            (Some("h"), Some(bridge), Some(_), Some(v)) => {
                let Some(h) = self.verify::<Holding>(key, v) else {
                    return;
                };
                if h.key(bridge) != key {
                    self.counters.malformed += 1;
                    return;
                }
                if !self.holdings.contains_key(bridge) && self.holdings.len() >= MAX_BRIDGES {
                    self.counters.refused += 1;
                    return;
                }
                let held = self.holdings.entry(bridge.to_owned()).or_default();
                if !held.contains_key(key) && held.len() >= MAX_HOLDINGS {
                    self.counters.refused += 1;
                    return;
                }
                held.insert(key.to_owned(), h);
            }
            (Some("d"), Some(_), _, Some(v)) => {
                if let Some(d) = self.verify::<Directive>(key, v) {
                    if doc::directive_key(&d.id) != key {
                        self.counters.malformed += 1;
                        return;
                    }
                    self.directives.insert(d.id.clone(), d);
                    while self.directives.len() > MAX_DIRECTIVES {
                        // Ids start with the issue time: the first is the oldest.
                        self.directives.pop_first();
                    }
                }
            }
            (Some("a"), Some(_), Some(_), Some(v)) => {
                let Some(a) = self.verify::<doc::Ack>(key, v) else {
                    return;
                };
                if doc::ack_key(&a.id, &a.bridge) != key {
                    self.counters.malformed += 1;
                    return;
                }
                for f in a.files.iter().filter(|f| f.state == doc::FileState::Failed) {
                    if self.failed.len() >= MAX_FAILED {
                        self.counters.refused += 1;
                        break;
                    }
                    self.failed.push((a.id.clone(), f.name.clone()));
                }
            }
            // Image maps are the listing's, deletes of directives and
            // acknowledgements change nothing here.
            (Some("d" | "a" | "m"), ..) => {}
            _ => self.counters.malformed += 1,
        }
    }

    /// Files bridges gave up since the last call: (directive id, file).
    pub fn take_failed(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.failed)
    }

    /// An entry of the presence bucket.
    pub fn observe_presence(&mut self, key: &str, value: &[u8]) {
        let p = match doc::verify::<Presence>(value, &self.key, &self.presence_bucket, key) {
            Ok(p) if doc::presence_key(&p.id) == key => p,
            Ok(_) => {
                self.counters.malformed += 1;
                return;
            }
            Err(RecordError::BadSignature) => {
                self.counters.bad_signature += 1;
                return;
            }
            Err(_) => {
                self.counters.malformed += 1;
                return;
            }
        };
        if !self.present.contains_key(&p.id) && self.present.len() >= MAX_BRIDGES {
            self.counters.refused += 1;
            return;
        }
        self.present.insert(p.id, p.at_ms);
    }

    fn is_present(&self, bridge: &str, now_ms: u64) -> bool {
        let ttl = doc::PRESENCE_TTL.as_millis() as u64;
        self.present
            .get(bridge)
            .is_some_and(|at| now_ms.abs_diff(*at) <= ttl)
    }

    /// The Object Store already holds `name` with `sha256` (found at start,
    /// or an upload that hashed to the table's value), or the upload failed
    /// (`None`) at `now_ms`.
    pub fn uploaded(&mut self, now_ms: u64, name: &str, sha256: Option<[u8; 32]>) {
        match sha256 {
            Some(s) => {
                self.uploading.remove(name);
                self.objects.insert(name.to_owned(), s);
            }
            None => {
                self.counters.upload_errors += 1;
                self.uploading
                    .insert(name.to_owned(), Some(now_ms + UPLOAD_RETRY_MS));
            }
        }
    }

    /// Bridges present holding a copy of `name` other than `sha256`
    /// (hex), by id.
    fn outdated(&self, now_ms: u64, name: &str, sha256: &str) -> BTreeSet<String> {
        self.holdings
            .iter()
            .filter(|(b, _)| self.is_present(b, now_ms))
            .filter(|(_, h)| h.values().any(|h| h.name == name && h.sha256 != sha256))
            .map(|(b, _)| b.clone())
            .collect()
    }

    fn want_upload(&mut self, out: &mut Vec<Action>, now_ms: u64, name: &str, sha256: [u8; 32]) {
        if self.objects.get(name) == Some(&sha256) {
            return;
        }
        match self.uploading.get(name) {
            Some(None) => return,
            Some(Some(retry)) if now_ms < *retry => return,
            _ => {}
        }
        self.uploading.insert(name.to_owned(), None);
        self.counters.uploads += 1;
        out.push(Action::Upload {
            name: name.to_owned(),
            sha256,
        });
    }

    /// What to do now, given the agent's `table`: uploads for files some
    /// bridge holds an outdated copy of or a recent cache directive names,
    /// and once a file is in the Object Store, one refresh directive for
    /// the bridges with outdated copies.
    pub fn step(
        &mut self,
        now_ms: u64,
        random: u64,
        table: &HashMap<String, Published>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let mut names: Vec<(&String, FileInfo)> = table
            .iter()
            .filter_map(|(n, p)| match p {
                Published::File(i) => Some((n, *i)),
                Published::Changing => None,
            })
            .collect();
        names.sort_by(|a, b| a.0.cmp(b.0));
        let mut wanted: Vec<(String, [u8; 32])> = Vec::new();
        let mut directs = Vec::new();
        for (name, info) in &names {
            let hex = doc::hex(&info.sha256);
            let outdated = self.outdated(now_ms, name, &hex);
            if outdated.is_empty() {
                continue;
            }
            wanted.push(((*name).clone(), info.sha256));
            if self.objects.get(*name) != Some(&info.sha256) {
                continue;
            }
            let told = match self.refreshed.get(*name) {
                Some((s, b)) if *s == info.sha256 => b.clone(),
                _ => BTreeSet::new(),
            };
            let new: Vec<String> = outdated.difference(&told).cloned().collect();
            if !new.is_empty() {
                directs.push(((*name).clone(), info.sha256, new));
            }
        }
        for d in self.directives.values() {
            if d.kind != DirectiveKind::Cache
                || now_ms.saturating_sub(d.issued_ms) > DIRECTIVE_UPLOAD_MS
            {
                continue;
            }
            for f in &d.files {
                if let Some(Published::File(i)) = table.get(f) {
                    wanted.push((f.clone(), i.sha256));
                }
            }
        }
        for (name, sha) in wanted {
            self.want_upload(&mut out, now_ms, &name, sha);
        }
        for (name, sha, bridges) in directs {
            self.seq += 1;
            let id = format!("{now_ms:013}-{:08x}-{}", random as u32, self.seq);
            log::info!(
                "fleet: {name} changed: directing {} to refresh ({id})",
                bridges.join(", ")
            );
            let told = self.refreshed.entry(name.clone()).or_default();
            if told.0 != sha {
                *told = (sha, BTreeSet::new());
            }
            told.1.extend(bridges.iter().cloned());
            self.counters.refreshes += 1;
            out.push(Action::Direct(Directive {
                id,
                kind: DirectiveKind::Refresh,
                files: vec![name],
                target: Target::Bridges(bridges),
                issued_ms: now_ms,
            }));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = &[9u8; 32];
    const B: &str = "bootcache-fleet";

    fn info(sha: u8) -> FileInfo {
        FileInfo {
            size: 3,
            version: u64::from(sha),
            sha256: [sha; 32],
            mtime_ms: 0,
        }
    }

    fn present(c: &mut Coordinator, bridge: &str, at_ms: u64) {
        let p = Presence {
            id: bridge.into(),
            site: "s".into(),
            addresses: vec![],
            version: "0".into(),
            started_ms: 0,
            at_ms,
            mirror_live: true,
            holdings: 1,
        };
        let k = doc::presence_key(bridge);
        c.observe_presence(&k, &doc::sign(&p, KEY, "bootcache-presence", &k));
    }

    fn hold(c: &mut Coordinator, bridge: &str, name: &str, sha: u8) {
        let h = Holding {
            name: name.into(),
            server: "10.0.0.1".into(),
            vlan: "-".into(),
            size: 3,
            sha256: doc::hex(&[sha; 32]),
            verified_s: 0,
        };
        let k = h.key(bridge);
        c.observe(&k, Some(&doc::sign(&h, KEY, B, &k)));
    }

    #[test]
    fn a_change_is_uploaded_once_then_outdated_bridges_are_directed_once() {
        const T: u64 = 60_000;
        let mut c = Coordinator::new(KEY, B);
        let mut table = HashMap::from([("k".to_string(), Published::File(info(1)))]);
        hold(&mut c, "b1", "k", 1);
        hold(&mut c, "b2", "k", 1);
        hold(&mut c, "gone", "k", 1);
        present(&mut c, "b1", T);
        present(&mut c, "b2", T);
        // Present long ago: not directed.
        present(&mut c, "gone", 0);
        assert!(c.step(T + 1, 0, &table).is_empty(), "all current");
        // The file changes: one upload of the new version.
        table.insert("k".into(), Published::File(info(2)));
        assert_eq!(
            c.step(T + 2, 0, &table),
            vec![Action::Upload {
                name: "k".into(),
                sha256: [2; 32]
            }]
        );
        assert!(c.step(T + 3, 0, &table).is_empty(), "under way: not twice");
        c.uploaded(T + 4, "k", Some([2; 32]));
        let a = c.step(T + 5, 7, &table);
        let [Action::Direct(d)] = &a[..] else {
            panic!("{a:?}")
        };
        assert_eq!(d.kind, DirectiveKind::Refresh);
        assert_eq!(d.target, Target::Bridges(vec!["b1".into(), "b2".into()]));
        assert_eq!(d.files, vec!["k".to_string()]);
        assert!(c.step(T + 6, 7, &table).is_empty(), "directed once");
        // b1 refreshed; a third bridge shows up with the old copy: only it.
        hold(&mut c, "b1", "k", 2);
        hold(&mut c, "b3", "k", 1);
        present(&mut c, "b3", T + 7);
        let a = c.step(T + 7, 7, &table);
        let [Action::Direct(d)] = &a[..] else {
            panic!("{a:?}")
        };
        assert_eq!(d.target, Target::Bridges(vec!["b3".into()]));
        assert_eq!(c.counters().refreshes, 2);
    }

    #[test]
    fn a_failed_upload_is_retried_later_and_cache_directives_upload() {
        let mut c = Coordinator::new(KEY, B);
        let table = HashMap::from([
            ("k".to_string(), Published::File(info(2))),
            ("w".to_string(), Published::Changing),
        ]);
        let d = Directive {
            id: "0000000000100-x".into(),
            kind: DirectiveKind::Cache,
            files: vec!["k".into(), "w".into(), "missing".into()],
            target: Target::All,
            issued_ms: 100,
        };
        let k = doc::directive_key(&d.id);
        c.observe(&k, Some(&doc::sign(&d, KEY, B, &k)));
        let up = Action::Upload {
            name: "k".into(),
            sha256: [2; 32],
        };
        assert_eq!(c.step(200, 0, &table), vec![up.clone()]);
        c.uploaded(300, "k", None);
        assert!(c.step(300 + UPLOAD_RETRY_MS - 1, 0, &table).is_empty());
        assert_eq!(c.step(300 + UPLOAD_RETRY_MS, 0, &table), vec![up]);
        c.uploaded(400, "k", Some([2; 32]));
        assert!(c.step(500, 0, &table).is_empty());
        // Too old: no more uploads for it.
        let mut t2 = table.clone();
        t2.insert("k".into(), Published::File(info(3)));
        assert!(c.step(100 + DIRECTIVE_UPLOAD_MS + 1, 0, &t2).is_empty());
    }

    #[test]
    fn forged_moved_and_unknown_entries_are_ignored_and_counted() {
        let mut c = Coordinator::new(KEY, B);
        let h = Holding {
            name: "k".into(),
            server: "s".into(),
            vlan: "-".into(),
            size: 1,
            sha256: "00".into(),
            verified_s: 0,
        };
        let k = h.key("b1");
        c.observe(&k, Some(&doc::sign(&h, &[1u8; 32], B, &k)));
        assert_eq!(c.counters().bad_signature, 1);
        // Signed for b1's key, put under b2's: the MAC covers the key.
        let k2 = h.key("b2");
        c.observe(&k2, Some(&doc::sign(&h, KEY, B, &k)));
        assert_eq!(c.counters().bad_signature, 2);
        c.observe("zz.top", Some(b"x"));
        c.observe("h.b1.x", Some(b"BF"));
        assert_eq!(c.counters().malformed, 2);
        assert!(c.holdings.is_empty());
        // A delete of a holding forgets it.
        hold(&mut c, "b1", "k", 1);
        let key = c.holdings["b1"].keys().next().unwrap().clone();
        c.observe(&key, None);
        assert!(c.holdings["b1"].is_empty());
    }

    #[test]
    fn files_bridges_gave_up_are_reported_once() {
        let mut c = Coordinator::new(KEY, B);
        let file = |name: &str, state| doc::FileAck {
            name: name.into(),
            state,
            sha256: None,
            detail: String::new(),
        };
        let ack = doc::Ack {
            id: "d1".into(),
            bridge: "b1".into(),
            at_ms: 0,
            files: vec![
                file("k1", doc::FileState::Done),
                file("k2", doc::FileState::Failed),
            ],
        };
        let k = doc::ack_key("d1", "b1");
        c.observe(&k, Some(&doc::sign(&ack, KEY, B, &k)));
        assert_eq!(c.take_failed(), vec![("d1".to_string(), "k2".to_string())]);
        assert!(c.take_failed().is_empty());
        // Under another key, or signed with another key: ignored, counted.
        let other = doc::ack_key("d1", "b2");
        c.observe(&other, Some(&doc::sign(&ack, KEY, B, &other)));
        c.observe(&k, Some(&doc::sign(&ack, &[1; 32], B, &k)));
        assert!(c.take_failed().is_empty());
        assert_eq!((c.counters().malformed, c.counters().bad_signature), (1, 1));
    }
}
