//! The cache's side of the protocol, sans-I/O (quinn-proto style): the slow
//! path feeds datagrams and the clock in, and pulls datagrams, timeouts and
//! verdicts out.
//!
//! Boot storms: answers are cached per (server, file, SHA-256) for a TTL, and
//! concurrent validations of the same key share one in-flight question.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use crate::replay::{unix_ms, ReplayGuard};
use crate::responder::Counters;
use crate::wire::{self, Answer, DropReason, Envelope, FileState, Request, RequestId};
use crate::{Key, NonceGen};

/// The outcome of one validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The cached copy is current: serve it.
    Current(FileState),
    /// The server has different content now (described here).
    Stale(FileState),
    /// The agent does not know the file (or it is being rewritten).
    Unknown,
    /// No authentic answer after all tries.
    Unreachable,
}

impl From<Answer> for Verdict {
    fn from(a: Answer) -> Self {
        match a {
            Answer::Current(s) => Verdict::Current(s),
            Answer::Stale(s) => Verdict::Stale(s),
            Answer::Unknown => Verdict::Unknown,
        }
    }
}

/// Validator settings.
#[derive(Debug, Clone, Copy)]
pub struct ValidatorConfig {
    /// Wait this long for an answer before retrying.
    pub retry_interval: Duration,
    /// Datagrams sent per question before the verdict is `Unreachable`.
    pub max_tries: u32,
    /// How long an answer is reused for the same (server, file, SHA-256).
    /// Zero disables the cache. A longer TTL absorbs bigger storms but may
    /// serve a copy up to TTL after the server's file changed.
    pub ttl: Duration,
    /// Accepted clock difference to the agent (must match its `--window`).
    pub window: Duration,
    /// Most answers kept in the cache; the oldest is evicted beyond it.
    pub max_cached: usize,
    /// Most distinct questions out at once; a validation that would need
    /// another is refused ([`Refused::Questions`]).
    pub max_pending: usize,
    /// Most validations waiting on one question; one more is refused
    /// ([`Refused::Waiters`]).
    pub max_waiters: usize,
}

impl Default for ValidatorConfig {
    fn default() -> Self {
        Self {
            retry_interval: Duration::from_millis(500),
            max_tries: 3,
            ttl: Duration::from_secs(5),
            window: Duration::from_secs(30),
            max_cached: 4096,
            max_pending: 1024,
            max_waiters: 1024,
        }
    }
}

/// Why [`Validator::validate`] refused a validation: its tables are full.
/// Nothing was asked; the caller decides without the agent (bootcache
/// sends the request on to the origin).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// [`ValidatorConfig::max_pending`] questions are out already.
    #[error("too many questions pending for the agent")]
    Questions,
    /// The question this validation would share has
    /// [`ValidatorConfig::max_waiters`] waiting on it already.
    #[error("too many validations waiting on one question")]
    Waiters,
}

/// Validations refused, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefusedCounters {
    /// Refused with [`Refused::Questions`].
    pub questions: u64,
    /// Refused with [`Refused::Waiters`].
    pub waiters: u64,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The agent's address.
    pub destination: SocketAddr,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

type CacheKey = (SocketAddr, String, [u8; 32]);

#[derive(Debug)]
struct Pending {
    key: CacheKey,
    tries: u32,
    /// On the monotonic clock: a wall clock stepped back must not keep a
    /// question (and the read requests behind it) waiting forever.
    deadline: Instant,
    /// Validations waiting for this question (the first is the question's id).
    waiters: Vec<RequestId>,
}

/// Client-side validation state machine.
#[derive(Debug)]
pub struct Validator {
    key: Key,
    config: ValidatorConfig,
    ids: NonceGen,
    nonces: NonceGen,
    window: ReplayGuard,
    pending: HashMap<RequestId, Pending>,
    inflight: HashMap<CacheKey, RequestId>,
    cache: HashMap<CacheKey, (Instant, Verdict)>,
    transmits: VecDeque<Transmit>,
    results: VecDeque<(RequestId, Verdict)>,
    counters: Counters,
    cache_hits: u64,
    refused: RefusedCounters,
    max_skew_ms: u64,
}

impl Validator {
    /// A validator; `seed` should be random ([`crate::random_seed`]) so that
    /// request ids and nonces do not repeat across restarts of the cache.
    pub fn new(key: Key, config: ValidatorConfig, seed: u64) -> Self {
        Self {
            key,
            config,
            ids: NonceGen::new(seed),
            nonces: NonceGen::new(seed ^ 0x6a09_e667_f3bc_c908),
            // Only the window is used: responses are matched by request id.
            window: ReplayGuard::new(config.window, 0),
            pending: HashMap::new(),
            inflight: HashMap::new(),
            cache: HashMap::new(),
            transmits: VecDeque::new(),
            results: VecDeque::new(),
            counters: Counters::default(),
            cache_hits: 0,
            refused: RefusedCounters::default(),
            max_skew_ms: 0,
        }
    }

    /// Asks whether `sha256` is still current for `file` on the agent at
    /// `server`. The verdict comes out of [`Validator::poll_result`] under the
    /// returned id: immediately on a cache hit, otherwise after an answer or
    /// after the last retry times out.
    ///
    /// `file` is sent as given (the agent normalises it); names longer than
    /// [`wire::MAX_PATH_LEN`] or empty get `Unknown` without asking.
    ///
    /// Time comes in twice, here and in every `handle_*`: `now` (monotonic)
    /// runs the retries and the answer cache, `wall` only stamps requests
    /// and checks the answers' timestamps (the replay window).
    ///
    /// Refused (and counted, [`Validator::refused`]) when it would need a
    /// question past [`ValidatorConfig::max_pending`] or a waiter past
    /// [`ValidatorConfig::max_waiters`]; answers from the cache are never
    /// refused, they take no room.
    pub fn validate(
        &mut self,
        now: Instant,
        wall: SystemTime,
        server: SocketAddr,
        file: &str,
        sha256: [u8; 32],
    ) -> Result<RequestId, Refused> {
        if file.is_empty() || file.len() > wire::MAX_PATH_LEN {
            let id = RequestId(self.ids.next());
            self.results.push_back((id, Verdict::Unknown));
            return Ok(id);
        }
        let key = (server, file.to_owned(), sha256);
        if let Some(&(expires, verdict)) = self.cache.get(&key) {
            if now < expires {
                let id = RequestId(self.ids.next());
                self.cache_hits += 1;
                self.results.push_back((id, verdict));
                return Ok(id);
            }
            self.cache.remove(&key);
        }
        if let Some(p) = self
            .inflight
            .get(&key)
            .and_then(|q| self.pending.get_mut(q))
        {
            if p.waiters.len() >= self.config.max_waiters {
                self.refused.waiters += 1;
                return Err(Refused::Waiters);
            }
            let id = RequestId(self.ids.next());
            p.waiters.push(id);
            return Ok(id);
        }
        if self.pending.len() >= self.config.max_pending {
            self.refused.questions += 1;
            return Err(Refused::Questions);
        }
        let id = RequestId(self.ids.next());
        self.pending.insert(
            id,
            Pending {
                key: key.clone(),
                tries: 0,
                deadline: now,
                waiters: vec![id],
            },
        );
        self.inflight.insert(key, id);
        self.send(now, wall, id);
        Ok(id)
    }

    fn send(&mut self, now: Instant, wall: SystemTime, id: RequestId) {
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        p.tries += 1;
        p.deadline = now + self.config.retry_interval;
        let req = Request {
            envelope: Envelope {
                timestamp_ms: unix_ms(wall),
                // A fresh nonce per datagram: a retry must not look like a
                // replay of the first try to the agent.
                nonce: self.nonces.next(),
                request_id: id,
            },
            file: p.key.1.clone(),
            sha256: p.key.2,
        };
        self.transmits.push_back(Transmit {
            destination: p.key.0,
            payload: wire::encode_request(&req, &self.key),
        });
    }

    /// Feeds a datagram received from an agent. Returns true if it answered
    /// a pending question; everything else is dropped and counted.
    pub fn handle_datagram(&mut self, now: Instant, wall: SystemTime, bytes: &[u8]) -> bool {
        self.counters.received += 1;
        let result = wire::decode_response(bytes, &self.key).and_then(|r| {
            // Authentic: the agent's clock against ours.
            let skew = unix_ms(wall).abs_diff(r.envelope.timestamp_ms);
            self.max_skew_ms = self.max_skew_ms.max(skew);
            if !self.window.in_window(wall, r.envelope.timestamp_ms) {
                Err(DropReason::OutsideWindow)
            } else if !self.pending.contains_key(&r.envelope.request_id) {
                // Late duplicate or replayed answer to a finished question.
                Err(DropReason::Unexpected)
            } else {
                Ok(r)
            }
        });
        let resp = match result {
            Ok(r) => r,
            Err(reason) => {
                self.counters.count_drop(reason);
                return false;
            }
        };
        self.counters.accepted += 1;
        let verdict = Verdict::from(resp.answer);
        let p = self
            .pending
            .remove(&resp.envelope.request_id)
            .expect("checked above");
        self.inflight.remove(&p.key);
        if !self.config.ttl.is_zero() {
            if self.cache.len() >= self.config.max_cached {
                self.evict(now);
            }
            if self.cache.len() < self.config.max_cached {
                self.cache.insert(p.key, (now + self.config.ttl, verdict));
            }
        }
        for w in p.waiters {
            self.results.push_back((w, verdict));
        }
        true
    }

    fn evict(&mut self, now: Instant) {
        self.cache.retain(|_, (exp, _)| now < *exp);
        if self.cache.len() >= self.config.max_cached {
            if let Some(k) = self
                .cache
                .iter()
                .min_by_key(|(_, (exp, _))| *exp)
                .map(|(k, _)| k.clone())
            {
                self.cache.remove(&k);
            }
        }
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next finished validation, if any.
    pub fn poll_result(&mut self) -> Option<(RequestId, Verdict)> {
        self.results.pop_front()
    }

    /// When [`Validator::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    /// Retries questions whose deadline passed, or gives up on them with
    /// [`Verdict::Unreachable`] after `max_tries` datagrams.
    pub fn handle_timeout(&mut self, now: Instant, wall: SystemTime) {
        let due: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if self.pending[&id].tries >= self.config.max_tries {
                let p = self.pending.remove(&id).expect("listed above");
                self.inflight.remove(&p.key);
                for w in p.waiters {
                    self.results.push_back((w, Verdict::Unreachable));
                }
            } else {
                self.send(now, wall, id);
            }
        }
    }

    /// Forgets cached answers, e.g. after the cache refilled a file.
    pub fn clear_cache(&mut self) {
        self.cache.clear();
    }

    /// Datagram counters (responses received, matched, dropped by reason).
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Validations answered from the TTL cache.
    pub fn cache_hits(&self) -> u64 {
        self.cache_hits
    }

    /// Validations refused because a bound was reached, by reason.
    pub fn refused(&self) -> RefusedCounters {
        self.refused
    }

    /// Questions out at once, and validations waiting on them.
    pub fn pending(&self) -> (usize, usize) {
        let waiters = self.pending.values().map(|p| p.waiters.len()).sum();
        (self.pending.len(), waiters)
    }

    /// The largest difference seen between an authentic answer's
    /// timestamp and our wall clock, in ms: the clocks must agree within
    /// the window ([`ValidatorConfig::window`]) for answers to count.
    pub fn max_skew_ms(&self) -> u64 {
        self.max_skew_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::responder::Responder;
    use crate::table::normalize;
    use std::time::UNIX_EPOCH;

    const AGENT: &str = "192.0.2.1:4070";

    fn key() -> Key {
        Key::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap()
    }

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const GOOD: [u8; 32] = [1; 32];
    const NEW: [u8; 32] = [2; 32];

    /// The agent's view: "pxelinux.0" has content GOOD, "vmlinuz" has NEW.
    fn table(file: &str, _sha: &[u8; 32]) -> Option<FileState> {
        match normalize(file).ok()?.as_str() {
            "pxelinux.0" => Some(FileState {
                size: 10,
                version: 1,
                sha256: GOOD,
            }),
            "vmlinuz" => Some(FileState {
                size: 20,
                version: 4,
                sha256: NEW,
            }),
            _ => None,
        }
    }

    fn lookup(file: &str, sha: &[u8; 32]) -> Answer {
        match table(file, sha) {
            Some(s) if &s.sha256 == sha => Answer::Current(s),
            Some(s) => Answer::Stale(s),
            None => Answer::Unknown,
        }
    }

    struct World {
        v: Validator,
        agent: Responder,
        /// The wall clock (the agent's too).
        now: SystemTime,
        /// The monotonic clock, advanced with it.
        mono: Instant,
        /// Drop every datagram to the agent while true.
        lose: bool,
        sent: usize,
    }

    impl World {
        fn new(config: ValidatorConfig) -> Self {
            Self {
                v: Validator::new(key(), config, 1),
                agent: Responder::new(key(), Duration::from_secs(30), 1024, 2),
                now: t0(),
                mono: Instant::now(),
                lose: false,
                sent: 0,
            }
        }

        /// Both clocks move on by `d`.
        fn advance(&mut self, d: Duration) {
            self.now += d;
            self.mono += d;
        }

        /// Delivers pending datagrams both ways (10 ms latency each way).
        fn pump(&mut self) {
            while let Some(tx) = self.v.poll_transmit() {
                assert_eq!(tx.destination, AGENT.parse().unwrap());
                self.sent += 1;
                if self.lose {
                    continue;
                }
                self.advance(ms(10));
                if let Some(resp) = self.agent.handle(self.now, &tx.payload, lookup) {
                    self.advance(ms(10));
                    assert!(self.v.handle_datagram(self.mono, self.now, &resp));
                }
            }
        }

        fn ask(&mut self, file: &str, sha: [u8; 32]) -> (RequestId, Verdict) {
            let id = self
                .v
                .validate(self.mono, self.now, AGENT.parse().unwrap(), file, sha)
                .unwrap();
            loop {
                self.pump();
                if let Some(r) = self.v.poll_result() {
                    return r;
                }
                let t = self
                    .v
                    .poll_timeout()
                    .expect("pending question has a timeout");
                assert!(t > self.mono || self.lose);
                self.advance(t.saturating_duration_since(self.mono));
                self.v.handle_timeout(self.mono, self.now);
                let _ = id;
            }
        }
    }

    #[test]
    fn current_stale_unknown() {
        let mut w = World::new(ValidatorConfig::default());
        let (id, v) = w.ask("/pxelinux.0", GOOD);
        assert!(matches!(v, Verdict::Current(s) if s.size == 10));
        let (id2, v) = w.ask("vmlinuz", GOOD);
        assert_ne!(id, id2);
        assert_eq!(
            v,
            Verdict::Stale(FileState {
                size: 20,
                version: 4,
                sha256: NEW
            })
        );
        let (_, v) = w.ask("missing", GOOD);
        assert_eq!(v, Verdict::Unknown);
        assert_eq!(w.sent, 3);
        assert_eq!(w.agent.answers().current, 1);
    }

    #[test]
    fn ttl_cache_answers_without_a_datagram() {
        let mut w = World::new(ValidatorConfig {
            ttl: Duration::from_secs(5),
            ..Default::default()
        });
        w.ask("pxelinux.0", GOOD);
        assert_eq!(w.sent, 1);
        w.advance(Duration::from_secs(4));
        let id =
            w.v.validate(w.mono, w.now, AGENT.parse().unwrap(), "pxelinux.0", GOOD)
                .unwrap();
        assert!(w.v.poll_transmit().is_none());
        assert!(matches!(w.v.poll_result(), Some((i, Verdict::Current(_))) if i == id));
        assert_eq!(w.v.cache_hits(), 1);
        // A different hash is a different question.
        w.ask("pxelinux.0", NEW);
        assert_eq!(w.sent, 2);
        // After the TTL the agent is asked again.
        w.advance(Duration::from_secs(2));
        w.ask("pxelinux.0", GOOD);
        assert_eq!(w.sent, 3);
    }

    #[test]
    fn concurrent_validations_share_one_question() {
        let mut w = World::new(ValidatorConfig::default());
        let ids: Vec<RequestId> = (0..50)
            .map(|_| {
                w.v.validate(w.mono, w.now, AGENT.parse().unwrap(), "pxelinux.0", GOOD)
                    .unwrap()
            })
            .collect();
        w.pump();
        assert_eq!(w.sent, 1);
        let mut got = Vec::new();
        while let Some((id, v)) = w.v.poll_result() {
            assert!(matches!(v, Verdict::Current(_)));
            got.push(id);
        }
        assert_eq!(got, ids);
    }

    /// Issue 13: the tables keyed by what clients ask are bounded. Past
    /// `max_waiters` on one question, or `max_pending` questions, a
    /// validation is refused at once (nothing sent, counted); cache hits
    /// and the room freed by an answer or by giving up are not.
    #[test]
    fn bounded_questions_and_waiters() {
        let mut w = World::new(ValidatorConfig {
            max_pending: 2,
            max_waiters: 3,
            retry_interval: ms(500),
            max_tries: 2,
            ..Default::default()
        });
        let agent: SocketAddr = AGENT.parse().unwrap();
        w.lose = true;
        let ask = |w: &mut World, file: &str| w.v.validate(w.mono, w.now, agent, file, GOOD);
        for _ in 0..3 {
            ask(&mut w, "pxelinux.0").unwrap();
        }
        assert_eq!(ask(&mut w, "pxelinux.0"), Err(Refused::Waiters));
        ask(&mut w, "vmlinuz").unwrap();
        assert_eq!(ask(&mut w, "third"), Err(Refused::Questions));
        assert_eq!(ask(&mut w, "fourth"), Err(Refused::Questions));
        // A long or empty name is answered without a question: no room needed.
        assert!(ask(&mut w, "").is_ok());
        assert_eq!(w.v.pending(), (2, 4));
        assert_eq!(
            w.v.refused(),
            RefusedCounters {
                questions: 2,
                waiters: 1
            }
        );
        w.pump();
        assert_eq!(w.sent, 2, "refused validations send nothing");
        while w.v.poll_result().is_some() {}

        // Giving up frees the room.
        for _ in 0..2 {
            w.advance(ms(500));
            w.v.handle_timeout(w.mono, w.now);
            w.pump();
        }
        assert_eq!(w.v.pending(), (0, 0));
        let mut unreachable = 0;
        while let Some((_, v)) = w.v.poll_result() {
            assert_eq!(v, Verdict::Unreachable);
            unreachable += 1;
        }
        assert_eq!(unreachable, 4, "every waiter that was taken gets a verdict");

        // An answer frees it too, and a cached answer needs none.
        w.lose = false;
        let (_, v) = w.ask("pxelinux.0", GOOD);
        assert!(matches!(v, Verdict::Current(_)));
        w.lose = true;
        ask(&mut w, "a").unwrap();
        ask(&mut w, "b").unwrap();
        assert_eq!(ask(&mut w, "c"), Err(Refused::Questions));
        let id = ask(&mut w, "pxelinux.0").expect("a cache hit takes no room");
        assert!(matches!(w.v.poll_result(), Some((i, Verdict::Current(_))) if i == id));
        assert_eq!(w.v.refused().questions, 3);
    }

    #[test]
    fn retries_then_unreachable() {
        let mut w = World::new(ValidatorConfig {
            retry_interval: ms(500),
            max_tries: 3,
            ..Default::default()
        });
        w.lose = true;
        let start = w.now;
        let (_, v) = w.ask("pxelinux.0", GOOD);
        assert_eq!(v, Verdict::Unreachable);
        assert_eq!(w.sent, 3);
        assert_eq!(w.now.duration_since(start).unwrap(), ms(1500));
        assert!(w.v.poll_timeout().is_none());
        // Unreachable is not cached: the next validation asks again.
        w.lose = false;
        let (_, v) = w.ask("pxelinux.0", GOOD);
        assert!(matches!(v, Verdict::Current(_)));
    }

    /// Issue 13: the wall clock steps back an hour while a question is
    /// out; its retries and its end still come on time (monotonic), and
    /// answers stamped by a clock that differs are judged by the window
    /// alone, the largest difference kept for the operator.
    #[test]
    fn timers_ignore_the_wall_clock_and_the_skew_is_kept() {
        let mut w = World::new(ValidatorConfig {
            retry_interval: ms(500),
            max_tries: 3,
            ..Default::default()
        });
        w.lose = true;
        w.v.validate(w.mono, w.now, AGENT.parse().unwrap(), "pxelinux.0", GOOD)
            .unwrap();
        w.pump();
        w.now -= Duration::from_secs(3600);
        let start = w.mono;
        let mut verdict = None;
        while verdict.is_none() {
            let t = w.v.poll_timeout().expect("the question is still pending");
            assert!(
                t <= start + ms(1500),
                "a deadline moved with the wall clock"
            );
            w.advance(t.saturating_duration_since(w.mono));
            w.v.handle_timeout(w.mono, w.now);
            w.pump();
            verdict = w.v.poll_result();
        }
        assert_eq!(verdict.map(|(_, v)| v), Some(Verdict::Unreachable));
        assert_eq!(w.mono.duration_since(start), ms(1500));
        // The agent's clock 10 s ahead of ours: inside the window, counted.
        w.lose = false;
        let mut agent_clock = w.now + Duration::from_secs(10);
        let id =
            w.v.validate(w.mono, w.now, AGENT.parse().unwrap(), "vmlinuz", NEW)
                .unwrap();
        let tx = w.v.poll_transmit().unwrap();
        w.agent = Responder::new(key(), Duration::from_secs(30), 1024, 5);
        let resp = w.agent.handle(agent_clock, &tx.payload, lookup).unwrap();
        assert!(w.v.handle_datagram(w.mono, w.now, &resp));
        assert!(matches!(w.v.poll_result(), Some((i, Verdict::Current(_))) if i == id));
        assert_eq!(w.v.max_skew_ms(), 10_000);
        // 40 s ahead: outside the window, dropped, and the skew still seen.
        agent_clock += Duration::from_secs(30);
        w.v.validate(w.mono, w.now, AGENT.parse().unwrap(), "pxelinux.0", NEW)
            .unwrap();
        let tx = w.v.poll_transmit().unwrap();
        w.agent = Responder::new(key(), Duration::from_secs(60), 1024, 6);
        let resp = w.agent.handle(agent_clock, &tx.payload, lookup).unwrap();
        assert!(!w.v.handle_datagram(w.mono, w.now, &resp));
        assert_eq!(w.v.counters().outside_window, 1);
        assert_eq!(w.v.max_skew_ms(), 40_000);
    }

    #[test]
    fn retry_after_lost_answer_is_not_a_replay() {
        let mut w = World::new(ValidatorConfig::default());
        let id =
            w.v.validate(w.mono, w.now, AGENT.parse().unwrap(), "pxelinux.0", GOOD)
                .unwrap();
        // The first request reaches the agent but its answer is lost.
        let tx = w.v.poll_transmit().unwrap();
        assert!(w.agent.handle(w.now, &tx.payload, lookup).is_some());
        w.advance(ms(500));
        w.v.handle_timeout(w.mono, w.now);
        let retry = w.v.poll_transmit().unwrap();
        assert_ne!(retry.payload, tx.payload);
        let resp = w.agent.handle(w.now, &retry.payload, lookup).unwrap();
        assert!(w.v.handle_datagram(w.mono, w.now, &resp));
        assert!(matches!(w.v.poll_result(), Some((i, Verdict::Current(_))) if i == id));
        // A duplicate of that answer is unexpected now.
        assert!(!w.v.handle_datagram(w.mono, w.now, &resp));
        assert_eq!(w.v.counters().unexpected, 1);
    }

    #[test]
    fn forged_and_old_answers_are_dropped() {
        let mut w = World::new(ValidatorConfig::default());
        let id =
            w.v.validate(w.mono, w.now, AGENT.parse().unwrap(), "vmlinuz", GOOD)
                .unwrap();
        let _ = w.v.poll_transmit().unwrap();
        let forged = |k: &Key, ts: SystemTime| {
            wire::encode_response(
                &wire::Response {
                    envelope: Envelope {
                        timestamp_ms: unix_ms(ts),
                        nonce: 5,
                        request_id: id,
                    },
                    answer: Answer::Current(FileState {
                        size: 1,
                        version: 1,
                        sha256: GOOD,
                    }),
                },
                k,
            )
        };
        let other = Key::new(vec![9; 32]).unwrap();
        assert!(!w.v.handle_datagram(w.mono, w.now, &forged(&other, w.now)));
        assert!(!w.v.handle_datagram(
            w.mono,
            w.now,
            &forged(&key(), w.now - Duration::from_secs(31))
        ));
        let mut t = forged(&key(), w.now);
        t[40] ^= 1;
        assert!(!w.v.handle_datagram(w.mono, w.now, &t));
        assert!(!w.v.handle_datagram(w.mono, w.now, &t[..20]));
        let c = w.v.counters();
        assert_eq!((c.bad_mac, c.outside_window, c.malformed), (2, 1, 1));
        assert!(w.v.poll_result().is_none());
    }

    #[test]
    fn agent_drops_and_counts_bad_requests() {
        let mut agent = Responder::new(key(), Duration::from_secs(30), 1024, 3);
        let now = t0();
        let req = |ts: SystemTime, nonce: u64, k: &Key| {
            wire::encode_request(
                &Request {
                    envelope: Envelope {
                        timestamp_ms: unix_ms(ts),
                        nonce,
                        request_id: RequestId(1),
                    },
                    file: "pxelinux.0".into(),
                    sha256: GOOD,
                },
                k,
            )
        };
        let good = req(now, 1, &key());
        let resp = agent.handle(now, &good, lookup).expect("answered");
        assert_eq!(
            wire::decode_response(&resp, &key())
                .unwrap()
                .envelope
                .request_id,
            RequestId(1)
        );
        // Replay of the same datagram.
        assert!(agent.handle(now + ms(100), &good, lookup).is_none());
        // Wrong key, tampered, old, future, truncated, garbage.
        assert!(agent
            .handle(now, &req(now, 2, &Key::new(vec![0; 32]).unwrap()), lookup)
            .is_none());
        let mut t = req(now, 3, &key());
        t[30] ^= 0x80;
        assert!(agent.handle(now, &t, lookup).is_none());
        assert!(agent
            .handle(now, &req(now - Duration::from_secs(31), 4, &key()), lookup)
            .is_none());
        assert!(agent
            .handle(now, &req(now + Duration::from_secs(31), 5, &key()), lookup)
            .is_none());
        assert!(agent.handle(now, &good[..good.len() - 1], lookup).is_none());
        assert!(agent.handle(now, b"hello", lookup).is_none());
        let c = agent.counters();
        assert_eq!(c.received, 8);
        assert_eq!(c.accepted, 1);
        assert_eq!(c.replayed, 1);
        assert_eq!(c.bad_mac, 3, "wrong key, tampered, truncated MAC");
        assert_eq!(c.outside_window, 2);
        assert_eq!(c.malformed, 1);
        assert_eq!(c.dropped(), 7);
        // Bytes: every datagram in, only the one answer out.
        let b = agent.bytes();
        assert_eq!(b.sent, resp.len() as u64);
        // Wrong key, tampered, old, future; truncated; "hello".
        let bad_len = 4 * good.len() as u64 + (good.len() as u64 - 1) + 5;
        assert_eq!(b.received, 2 * good.len() as u64 + bad_len);
    }
}
