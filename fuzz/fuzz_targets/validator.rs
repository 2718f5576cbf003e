//! The cache's side of the agent exchange (`bootcache_agent::Validator`),
//! driven by hostile answers: the input is a sequence of (control, length,
//! bytes) records, each one of: ask a question (one of a few files and
//! hashes, or a name from the input), let time pass, let a real agent
//! ([`Responder`]) answer a question the validator sent, or deliver a
//! response built from the input. Built responses are signed here with
//! the shared key, with another key, or not at all, optionally with a byte
//! flipped after signing, and carry the request id of a question the
//! validator sent or one from the input, and a timestamp near the clock.
//!
//! Checks: never panics; everything it sends is an authentic request for a
//! question it was asked; it accepts no response that was not signed with
//! the shared key, was tampered with, or answers a question it did not send;
//! every validation gets exactly one verdict, at the latest once its retries
//! ran out; it sends no more than `max_tries` datagrams per question;
//! its counters add up; its questions and waiters stay within
//! `max_pending` and `max_waiters`, and every refusal is counted.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bootcache_agent::replay::unix_ms;
use bootcache_agent::wire::{decode_request, HEADER_LEN, MAGIC, VERSION};
use bootcache_agent::{
    Answer, FileState, Key, RequestId, Responder, Validator, ValidatorConfig, Verdict,
};
use libfuzzer_sys::fuzz_target;

#[path = "agent_key.rs"]
mod agent_key;
#[path = "alloc_cap.rs"]
mod alloc_cap;

const FILES: [&str; 3] = ["pxelinux.0", "/boot/vmlinuz", "./initrd.img"];
const KIND_RESPONSE: u8 = 2;

fn state(b: &[u8]) -> FileState {
    let mut sha = [0u8; 32];
    sha[0] = b.first().copied().unwrap_or(0);
    FileState {
        size: u64::from(b.get(1).copied().unwrap_or(0)),
        version: 1,
        sha256: sha,
    }
}

/// What the target saw, checked against the validator's promises.
struct World {
    key: Key,
    max_tries: u32,
    /// Validations asked: id → whether their verdict came out.
    asked: HashMap<RequestId, bool>,
    /// Requests the validator sent, and how many per question.
    sent: Vec<Vec<u8>>,
    sent_ids: HashMap<RequestId, u32>,
    questions: HashSet<(SocketAddr, String, [u8; 32])>,
    /// Responses the validator took.
    accepted: u64,
}

impl World {
    /// Takes what the validator sends and decides, checking both.
    fn pump(&mut self, v: &mut Validator) {
        while let Some(t) = v.poll_transmit() {
            let req =
                decode_request(&t.payload, &self.key).expect("the validator sent a bad request");
            assert!(
                self.questions
                    .contains(&(t.destination, req.file.clone(), req.sha256)),
                "a request nobody asked for: {req:?}"
            );
            let n = self.sent_ids.entry(req.envelope.request_id).or_default();
            *n += 1;
            assert!(
                *n <= self.max_tries,
                "more than max_tries datagrams for one question"
            );
            self.sent.push(t.payload);
        }
        while let Some((id, verdict)) = v.poll_result() {
            let done = self
                .asked
                .get_mut(&id)
                .expect("a verdict for a validation never asked");
            assert!(!*done, "two verdicts for one validation");
            *done = true;
            if self.accepted == 0 {
                assert!(
                    matches!(verdict, Verdict::Unreachable | Verdict::Unknown),
                    "{verdict:?} without any answer taken"
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [cfg, rest @ ..] = data else { return };
    let key = agent_key::key();
    let config = ValidatorConfig {
        retry_interval: Duration::from_millis(500),
        max_tries: u32::from(cfg & 3) + 1,
        ttl: [Duration::ZERO, Duration::from_secs(5)][usize::from(cfg >> 2 & 1)],
        window: Duration::from_secs(30),
        max_cached: usize::from(cfg >> 3 & 3) + 1,
        max_pending: usize::from(cfg >> 5 & 3) + 1,
        max_waiters: usize::from(cfg >> 7) + 1,
    };
    let servers: [SocketAddr; 2] = [
        "192.0.2.1:4070".parse().unwrap(),
        "192.0.2.2:4070".parse().unwrap(),
    ];
    let mut v = Validator::new(key.clone(), config, 1);
    let mut agent = Responder::new(key.clone(), Duration::from_secs(30), 4096, 2);
    let mut now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    // The validator's timers run on a monotonic clock: here it moves with
    // `now`, which only goes forward in this target.
    let (start, t0) = (now, Instant::now());
    let mono = |w: SystemTime| t0 + w.duration_since(start).unwrap_or_default();
    let wall = |t: Instant| start + t.duration_since(t0);

    let mut w = World {
        key: key.clone(),
        max_tries: config.max_tries,
        asked: HashMap::new(),
        sent: Vec::new(),
        sent_ids: HashMap::new(),
        questions: HashSet::new(),
        accepted: 0,
    };
    let mut delivered = 0u64;
    let mut refused = 0u64;

    alloc_cap::capped(256 * data.len() + (1 << 20), || {
        let mut rest = rest;
        while let [ctl, len, tail @ ..] = rest {
            let (ctl, len) = (*ctl, *len);
            let (bytes, after) = tail.split_at(usize::from(len).min(tail.len()));
            rest = after;
            match ctl & 3 {
                0 => {
                    // Ask: a known file and hash, or a name from the input.
                    let server = servers[usize::from(ctl >> 2 & 1)];
                    let file = if ctl & 8 != 0 {
                        String::from_utf8_lossy(bytes).into_owned()
                    } else {
                        FILES[usize::from(ctl >> 4) % FILES.len()].to_string()
                    };
                    let sha = [ctl >> 6; 32];
                    w.questions.insert((server, file.clone(), sha));
                    match v.validate(mono(now), now, server, &file, sha) {
                        Ok(id) => {
                            assert!(w.asked.insert(id, false).is_none(), "a request id twice")
                        }
                        Err(_) => refused += 1,
                    }
                    let (questions, waiters) = v.pending();
                    assert!(questions <= config.max_pending, "past max_pending");
                    assert!(
                        waiters <= questions * config.max_waiters,
                        "past max_waiters"
                    );
                }
                1 => {
                    // Time passes.
                    now += Duration::from_millis(u64::from(ctl >> 2) * 50);
                    if v.poll_timeout().is_some_and(|t| t <= mono(now)) {
                        v.handle_timeout(mono(now), now);
                    }
                }
                2 => {
                    // A real agent answers one of the requests sent.
                    if w.sent.is_empty() {
                        continue;
                    }
                    let req = &w.sent[usize::from(len) % w.sent.len()];
                    let answer = match ctl >> 2 & 3 {
                        0 => Answer::Current(state(bytes)),
                        1 => Answer::Stale(state(bytes)),
                        _ => Answer::Unknown,
                    };
                    if let Some(resp) = agent.handle(now, req, |_, _| answer) {
                        delivered += 1;
                        if v.handle_datagram(mono(now), now, &resp) {
                            w.accepted += 1;
                        }
                    }
                }
                _ => {
                    // A response built from the input: header, then the
                    // input's bytes as the body.
                    let pending_id = (!w.sent.is_empty()).then(|| {
                        let req = &w.sent[usize::from(len) % w.sent.len()];
                        decode_request(req, &key)
                            .expect("checked when sent")
                            .envelope
                            .request_id
                    });
                    let (id, id_sent) = match (ctl & 4 != 0, pending_id) {
                        (true, Some(id)) => (id, true),
                        _ => {
                            let mut b = [0u8; 8];
                            let n = bytes.len().min(8);
                            b[..n].copy_from_slice(&bytes[..n]);
                            let id = RequestId(u64::from_be_bytes(b));
                            (id, w.sent_ids.contains_key(&id))
                        }
                    };
                    let skew_ms = (i64::from(ctl >> 5) - 4) * 9_000;
                    let ts = unix_ms(now).saturating_add_signed(skew_ms);
                    let mut d = Vec::with_capacity(HEADER_LEN + bytes.len() + 32);
                    d.extend_from_slice(&MAGIC);
                    d.extend_from_slice(&[VERSION, KIND_RESPONSE]);
                    d.extend_from_slice(&ts.to_be_bytes());
                    d.extend_from_slice(&[ctl; 8]);
                    d.extend_from_slice(&id.0.to_be_bytes());
                    d.extend_from_slice(bytes);
                    let authentic = ctl & 8 == 0;
                    let d = if authentic {
                        agent_key::sign(d, &agent_key::KEY)
                    } else {
                        agent_key::sign(d, &agent_key::OTHER_KEY)
                    };
                    let tamper = ctl & 0x10 != 0 && !d.is_empty();
                    let mut d = d;
                    if tamper {
                        let at = usize::from(len) % d.len();
                        d[at] ^= 1;
                    }
                    delivered += 1;
                    if v.handle_datagram(mono(now), now, &d) {
                        w.accepted += 1;
                        assert!(authentic && !tamper, "accepted a forged or tampered answer");
                        assert!(id_sent, "accepted an answer to a question never sent");
                        assert!(
                            skew_ms.unsigned_abs() <= 30_000,
                            "accepted an answer from outside the window"
                        );
                    }
                }
            }
            w.pump(&mut v);
        }
        // Run the clock out: every validation gets its verdict. Each
        // question takes at most `max_tries` expiries; their deadlines differ.
        let expiries = (config.max_tries as usize + 1) * (w.sent_ids.len() + 1);
        for _ in 0..expiries {
            let Some(t) = v.poll_timeout() else { break };
            now = now.max(wall(t));
            v.handle_timeout(mono(now), now);
            w.pump(&mut v);
        }
        assert!(
            v.poll_timeout().is_none(),
            "questions left after all retries"
        );
        if let Some((id, _)) = w.asked.iter().find(|(_, done)| !**done) {
            panic!("validation {id:?} never got a verdict");
        }
        let r = v.refused();
        assert_eq!(r.questions + r.waiters, refused);
        let c = v.counters();
        assert_eq!(c.received, delivered);
        assert_eq!(c.accepted, w.accepted);
        assert_eq!(c.received, c.accepted + c.dropped());
    });
});
