//! The agent's side, sans-I/O: what to put into the bucket so that it
//! matches the agent's table. The NATS thread hands it a snapshot of the
//! table every tick and puts what comes out.

use std::collections::HashMap;

use crate::policy::{Policy, Rule, POLICY_KEY};
use crate::record::{self, Body, FileInfo, Record};

/// A file as the agent's table has it right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Hashed: its current content.
    File(FileInfo),
    /// Being written (the agent answers unknown until it rehashed it).
    Changing,
}

/// One put for the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    /// The KV key.
    pub key: String,
    /// The signed value.
    pub value: Vec<u8>,
}

/// What we last put under a file's KV key.
#[derive(Debug)]
struct Ours {
    /// The file (`None`: the serving policy).
    name: Option<String>,
    value: Vec<u8>,
    /// The revision of our last acknowledged put there (0: none yet).
    revision: u64,
}

/// Publication state of one agent run.
#[derive(Debug)]
pub struct Publisher {
    key: Vec<u8>,
    bucket: String,
    epoch: u64,
    seq: u64,
    /// What the bucket holds from us, by file name.
    sent: HashMap<String, Published>,
    /// The serving policy the bucket holds from us.
    sent_policy: Option<Vec<Rule>>,
    /// Our last value under each file's KV key, with the file's name and
    /// the revision our last acknowledged put got: a later revision with
    /// another value was written by someone else.
    values: HashMap<String, Ours>,
}

impl Publisher {
    /// A publisher for an agent run started at `epoch` (ms since the Unix
    /// epoch: a restarted agent's records order after the last run's).
    pub fn new(key: &[u8], bucket: &str, epoch: u64) -> Publisher {
        Publisher {
            key: key.to_vec(),
            bucket: bucket.to_owned(),
            epoch,
            seq: 0,
            sent: HashMap::new(),
            sent_policy: None,
            values: HashMap::new(),
        }
    }

    fn sign(&mut self, wall_ms: u64, body: Body) -> Put {
        let name = body.name().map(str::to_owned);
        let put = self.sign_record(wall_ms, body);
        if name.is_some() {
            self.remember(&put, name);
        }
        put
    }

    /// Our value under `put.key`, to tell someone else's from it.
    fn remember(&mut self, put: &Put, name: Option<String>) {
        let revision = self.values.get(&put.key).map_or(0, |o| o.revision);
        self.values.insert(
            put.key.clone(),
            Ours {
                name,
                value: put.value.clone(),
                revision,
            },
        );
    }

    /// The put of the serving policy `rules`, if the bucket does not hold
    /// them from us yet (signed with this run's epoch and the next
    /// counter: a bridge refuses an older policy replayed).
    pub fn policy(&mut self, rules: &[Rule]) -> Option<Put> {
        if self.sent_policy.as_deref() == Some(rules) {
            return None;
        }
        self.seq += 1;
        let p = Policy {
            epoch: self.epoch,
            seq: self.seq,
            rules: rules.to_vec(),
        };
        let put = Put {
            key: POLICY_KEY.to_owned(),
            value: crate::doc::sign(&p, &self.key, &self.bucket, POLICY_KEY),
        };
        self.remember(&put, None);
        self.sent_policy = Some(p.rules);
        Some(put)
    }

    fn sign_record(&mut self, wall_ms: u64, body: Body) -> Put {
        self.seq += 1;
        let r = Record {
            epoch: self.epoch,
            seq: self.seq,
            timestamp_ms: wall_ms,
            body,
        };
        Put {
            key: r.body.kv_key(),
            value: record::encode(&r, &self.key, &self.bucket),
        }
    }

    /// The puts that bring the bucket from what was sent to `table`
    /// (changes, additions, and removals as `Absent`). Assumes every put
    /// returned succeeds; after a failure call [`Publisher::forget`].
    pub fn diff(&mut self, wall_ms: u64, table: &HashMap<String, Published>) -> Vec<Put> {
        let mut out = Vec::new();
        let mut names: Vec<&String> = table.keys().collect();
        // Stable order: tests and logs read better.
        names.sort();
        for name in names {
            let now = table[name];
            if self.sent.get(name) == Some(&now) {
                continue;
            }
            let body = match now {
                Published::File(info) => Body::File {
                    name: name.clone(),
                    info,
                },
                Published::Changing => Body::Changing { name: name.clone() },
            };
            out.push(self.sign(wall_ms, body));
            self.sent.insert(name.clone(), now);
        }
        let mut gone: Vec<String> = self
            .sent
            .keys()
            .filter(|n| !table.contains_key(*n))
            .cloned()
            .collect();
        gone.sort();
        for name in gone {
            self.sent.remove(&name);
            out.push(self.sign(wall_ms, Body::Absent { name }));
        }
        out
    }

    /// Our put under `kv_key` was acknowledged at `revision`.
    pub fn put_done(&mut self, kv_key: &str, revision: u64) {
        if let Some(o) = self.values.get_mut(kv_key) {
            o.revision = o.revision.max(revision);
        }
    }

    /// The heartbeat put.
    pub fn heartbeat(&mut self, wall_ms: u64) -> Put {
        self.sign_record(wall_ms, Body::Heartbeat)
    }

    /// Forgets what was sent: the next diff publishes the whole table (after
    /// a failed put or a reconnection, the bucket may have lost anything).
    pub fn forget(&mut self) {
        self.sent.clear();
        self.sent_policy = None;
        self.values.clear();
    }

    /// An entry the bucket's watch shows (`None`: deleted or purged).
    /// Returns true when it is not what we last put under a file's key —
    /// someone else wrote it (a replayed old record, a forgery, a delete):
    /// the next diff puts ours again, so that a bridge mirroring from
    /// scratch finds our record, not theirs.
    /// Entries at or below our last acknowledged revision there are our
    /// own, delivered late.
    pub fn observe(&mut self, kv_key: &str, revision: u64, value: Option<&[u8]>) -> bool {
        let Some(ours) = self.values.get_mut(kv_key) else {
            return false;
        };
        if revision <= ours.revision || value == Some(ours.value.as_slice()) {
            return false;
        }
        // Seen: the same foreign entry, redelivered, is not news again.
        ours.revision = revision;
        match ours.name.clone() {
            Some(name) => {
                self.sent.remove(&name);
            }
            None => self.sent_policy = None,
        }
        true
    }

    /// Records signed so far.
    pub fn signed(&self) -> u64 {
        self.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::{Mirror, MirrorConfig, Op, Verdict};
    use std::time::Instant;

    const KEY: &[u8] = &[9u8; 32];

    fn info(sha: u8) -> FileInfo {
        FileInfo {
            size: 1,
            version: u64::from(sha),
            sha256: [sha; 32],
            mtime_ms: 0,
        }
    }

    /// What the publisher puts, fed to a mirror, answers as the table does.
    #[test]
    fn a_mirror_fed_by_the_publisher_follows_the_table() {
        let mut p = Publisher::new(KEY, "b", 10);
        let mut m = Mirror::new(KEY, "b", MirrorConfig::default());
        let now = Instant::now();
        let wall = 1_000;
        m.connected(0);
        let mut rev = 0;
        let mut feed = |m: &mut Mirror, puts: Vec<Put>| {
            for put in puts {
                rev += 1;
                m.apply(now, wall, rev, &put.key, Op::Put(&put.value));
            }
        };
        let mut table = HashMap::from([
            ("a".to_string(), Published::File(info(1))),
            ("b".to_string(), Published::File(info(2))),
        ]);
        let first = p.diff(wall, &table);
        assert_eq!(first.len(), 2);
        feed(&mut m, first);
        feed(&mut m, vec![p.heartbeat(wall)]);
        assert!(p.diff(wall, &table).is_empty(), "nothing changed");
        let v = |m: &Mirror, n: &str, s: u8| m.view().verdict(n, &[s; 32]);
        assert_eq!(v(&m, "a", 1), Verdict::Current(info(1)));

        table.insert("a".into(), Published::Changing);
        table.remove("b");
        let puts = p.diff(wall, &table);
        assert_eq!(puts.len(), 2);
        feed(&mut m, puts);
        assert_eq!(v(&m, "a", 1), Verdict::Unknown);
        assert_eq!(v(&m, "b", 2), Verdict::Unknown);

        table.insert("a".into(), Published::File(info(3)));
        feed(&mut m, p.diff(wall, &table));
        assert_eq!(v(&m, "a", 1), Verdict::Stale);
        assert_eq!(v(&m, "a", 3), Verdict::Current(info(3)));

        // Someone else's value under "a" after ours (a replay of the old
        // record): the next diff puts ours again. Our own values, our older
        // ones delivered late, and keys we never wrote are not news.
        let key_a = crate::record::file_key("a");
        p.put_done(&key_a, 10);
        assert!(!p.observe(&key_a, 9, Some(b"an older one of ours")));
        assert!(p.observe(&key_a, 11, Some(b"forged")));
        assert!(!p.observe("f.unknown", 12, None));
        let again = p.diff(wall, &table);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].key, key_a);
        assert!(!p.observe(&key_a, 11, Some(b"forged")), "before our put");
        assert!(!p.observe(&key_a, 13, Some(&again[0].value)));
        p.put_done(&key_a, 13);
        assert!(p.diff(wall, &table).is_empty());
        assert!(
            p.observe(&key_a, 14, None),
            "a delete is someone else's too"
        );
        assert_eq!(p.diff(wall, &table).len(), 1);

        // After a failure everything goes again.
        p.forget();
        assert_eq!(p.diff(wall, &table).len(), 1);
        assert!(m.is_live(now));
        assert_eq!(m.counters().bad_signature, 0);
    }

    /// The policy goes once per change, again after someone else's put
    /// under its key or a failure, and a mirror fed by it decides by it.
    #[test]
    fn the_policy_is_put_on_change_and_put_back() {
        use crate::policy::{self, Action, Bridge, Client};
        let mut p = Publisher::new(KEY, "b", 10);
        let mut m = Mirror::new(KEY, "b", MirrorConfig::default());
        let rules = policy::parse_file("[[rule]]\nfile = \"k*\"\naction = \"origin\"").unwrap();
        let bridge = Bridge { id: "x", site: "s" };
        let put = p.policy(&rules).expect("first put");
        m.apply(Instant::now(), 0, 1, &put.key, Op::Put(&put.value));
        let d = m.view().decide("kernel", bridge, Client::default());
        assert_eq!(d.action, Action::Origin);
        assert!(p.policy(&rules).is_none(), "unchanged");
        p.put_done(POLICY_KEY, 1);
        assert!(p.observe(POLICY_KEY, 2, None), "deleted by someone else");
        let again = p.policy(&rules).expect("put back");
        assert!(p.policy(&[]).is_some(), "lifted");
        p.forget();
        assert!(p.policy(&[]).is_some(), "after a failure");
        // Our put back orders after the first.
        m.apply(Instant::now(), 0, 3, &again.key, Op::Put(&again.value));
        assert_eq!(m.counters().policies, 2);
    }
}
