//! The agent protocol's decoders and the agent's request handling (both ends
//! read hostile datagrams). The input is a control byte and a datagram
//! without its MAC, which the target signs itself (HMAC-SHA256 under the
//! shared key, computed here rather than by the crate under test), so the
//! fuzzer's bytes get past the MAC check into the body decoders, the replay
//! guard and the responder. The control byte picks: signed with the shared
//! key, with another key, or taken as it is (the MAC check itself); a byte
//! flipped after signing; the agent's clock relative to the datagram's
//! timestamp; the agent's answer.
//!
//! Checks: never panics, never allocates more than a few times the input;
//! a datagram signed with the shared key never fails as a bad MAC, one
//! signed with another key or tampered with never decodes; whatever decodes
//! re-encodes to the same bytes; the agent answers an authentic request
//! inside its window exactly once (a replay is dropped), with an authentic
//! response that echoes the request id and carries the answer it was given;
//! its counters add up.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use bootcache_agent::wire::{
    decode_request, decode_response, encode_request, encode_response, HEADER_LEN, MAC_LEN,
};
use bootcache_agent::{Answer, DropReason, FileState, Responder};
use libfuzzer_sys::fuzz_target;

#[path = "agent_key.rs"]
mod agent_key;
#[path = "alloc_cap.rs"]
mod alloc_cap;

const WINDOW: Duration = Duration::from_secs(30);

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fuzz_target!(|data: &[u8]| {
    let [ctl, unsigned @ ..] = data else { return };
    let ctl = *ctl;
    let key = agent_key::key();
    let signed = ctl & 3;
    let mut d = match signed {
        0 | 1 => agent_key::sign(unsigned.to_vec(), &agent_key::KEY),
        2 => agent_key::sign(unsigned.to_vec(), &agent_key::OTHER_KEY),
        _ => unsigned.to_vec(),
    };
    let tampered = ctl & 4 != 0 && !d.is_empty();
    if tampered {
        let at = usize::from(ctl >> 3) * 7 % d.len();
        d[at] ^= 0x20;
    }
    let authentic = signed <= 1 && !tampered;
    let cap = 4 * d.len() + 4096;

    let req = alloc_cap::capped(cap, || decode_request(&d, &key));
    let resp = alloc_cap::capped(cap, || decode_response(&d, &key));
    let framed = d.len() >= HEADER_LEN + MAC_LEN && d[..3] == *b"BA\x01";
    for e in [req.as_ref().err(), resp.as_ref().err()]
        .into_iter()
        .flatten()
    {
        if authentic && framed {
            assert_ne!(*e, DropReason::BadMac, "our own signature did not verify");
        }
    }
    if !authentic {
        assert!(
            req.is_err() && resp.is_err(),
            "decoded a forged or tampered datagram"
        );
    }
    if let Ok(r) = &req {
        assert_eq!(encode_request(r, &key), d);
    }
    if let Ok(r) = &resp {
        assert_eq!(encode_response(r, &key), d);
    }

    // The agent, its clock within about ±40 s of the datagram's timestamp.
    let ts = if d.len() >= 12 { be_u64(&d[4..12]) } else { 0 };
    let skew_ms = (i64::from(ctl >> 5) - 4) * 10_000 + 1;
    let now_ms = ts.saturating_add_signed(skew_ms);
    let Some(now) = UNIX_EPOCH.checked_add(Duration::from_millis(now_ms)) else {
        return;
    };
    let state = FileState {
        size: u64::from(ctl),
        version: 3,
        sha256: [ctl; 32],
    };
    let answer = match ctl >> 3 & 3 {
        0 => Answer::Current(state),
        1 => Answer::Stale(state),
        _ => Answer::Unknown,
    };
    let mut agent = Responder::new(key.clone(), WINDOW, 16, 1);
    let mut asked = None;
    let out = agent.handle(now, &d, |file, sha| {
        asked = Some((file.to_owned(), *sha));
        answer
    });
    let in_window = now_ms.abs_diff(ts) <= WINDOW.as_millis() as u64;
    match (&req, out) {
        (Ok(r), Some(out)) => {
            assert!(in_window, "answered a request from outside its window");
            assert_eq!(asked, Some((r.file.clone(), r.sha256)));
            let back = decode_response(&out, &key).expect("the agent's answer decodes");
            assert_eq!(back.envelope.request_id, r.envelope.request_id);
            assert_eq!(back.answer, answer);
            assert!(
                agent.handle(now, &d, |_, _| answer).is_none(),
                "answered a replay"
            );
            assert_eq!(agent.counters().replayed, 1);
        }
        (Ok(_), None) => assert!(!in_window, "dropped an authentic request inside its window"),
        (Err(_), out) => assert!(out.is_none(), "answered a datagram that does not decode"),
    }
    let c = agent.counters();
    assert_eq!(c.received, c.accepted + c.dropped());
});
