//! The validation protocol's datagram format (version 1).
//!
//! Every datagram is one UDP payload, all integers big-endian:
//!
//! ```text
//! offset size  field
//!  0      2    magic "BA" (0x42 0x41)
//!  2      1    version = 1
//!  3      1    kind: 1 = request, 2 = response
//!  4      8    timestamp: sender's wall clock, milliseconds since the Unix epoch
//! 12      8    nonce: random, fresh for every datagram (retries included)
//! 20      8    request id: chosen by the client, echoed in the response
//! 28      n    body (below)
//! 28+n   32    HMAC-SHA256(key, bytes 0 .. 28+n)
//!
//! request body:  sha256 [32] | path length u16 (1..=1024) | path (UTF-8)
//! response body: status u8 (0 current, 1 stale, 2 unknown)
//!                current/stale only: size u64 | version u64 | sha256 [32]
//! ```
//!
//! The MAC covers the kind byte, so a request can never be reflected back as a
//! response. The receiver checks, in order: length, magic, version and kind
//! (malformed), the MAC in constant time (bad MAC), the body (malformed), and
//! only then the timestamp window and the nonce (see [`crate::ReplayGuard`]),
//! so unauthenticated traffic can never fill the replay cache. Sizes are exact:
//! trailing bytes make a datagram malformed.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Key;

type HmacSha256 = Hmac<Sha256>;

/// Magic bytes opening every datagram.
pub const MAGIC: [u8; 2] = *b"BA";
/// Protocol version carried in byte 2.
pub const VERSION: u8 = 1;
/// Length of the fixed header (magic to request id).
pub const HEADER_LEN: usize = 28;
/// Length of the trailing HMAC-SHA256 tag.
pub const MAC_LEN: usize = 32;
/// Longest file path a request may carry, in bytes.
pub const MAX_PATH_LEN: usize = 1024;
/// Largest datagram either side ever emits (a request with the longest path).
pub const MAX_DATAGRAM_LEN: usize = HEADER_LEN + 32 + 2 + MAX_PATH_LEN + MAC_LEN;

mod field {
    use std::ops::Range;
    pub(super) const MAGIC: Range<usize> = 0..2;
    pub(super) const VERSION: usize = 2;
    pub(super) const KIND: usize = 3;
    pub(super) const TIMESTAMP: Range<usize> = 4..12;
    pub(super) const NONCE: Range<usize> = 12..20;
    pub(super) const REQUEST_ID: Range<usize> = 20..28;
}

const KIND_REQUEST: u8 = 1;
const KIND_RESPONSE: u8 = 2;

const STATUS_CURRENT: u8 = 0;
const STATUS_STALE: u8 = 1;
const STATUS_UNKNOWN: u8 = 2;

/// Identifies one validation question; the agent echoes it in its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Fields every datagram carries for authentication and replay protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    /// Sender's wall clock, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Random value, fresh for every datagram.
    pub nonce: u64,
    /// The question this datagram asks or answers.
    pub request_id: RequestId,
}

/// The cache's question: "is SHA-256 `sha256` still current for `file`?"
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Timestamp, nonce and request id.
    pub envelope: Envelope,
    /// File path as the TFTP client requested it (the agent normalises it).
    pub file: String,
    /// SHA-256 of the copy the cache holds.
    pub sha256: [u8; 32],
}

/// What the agent knows about the file the server currently has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileState {
    /// Size in bytes.
    pub size: u64,
    /// Version counter; bumped by the agent whenever the content changes.
    pub version: u64,
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
}

/// The agent's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Answer {
    /// The cache's copy matches the server's file.
    Current(FileState),
    /// The server's file differs; this is what it is now.
    Stale(FileState),
    /// The agent has no such file (or cannot vouch for it right now, e.g. it
    /// is being written).
    Unknown,
}

/// The agent's response to a [`Request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// Timestamp, fresh nonce, and the request id being answered.
    pub envelope: Envelope,
    /// The answer.
    pub answer: Answer,
}

/// Why a datagram was dropped. Every drop is counted, none is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DropReason {
    /// Wrong length, magic, version, kind or body encoding.
    #[error("malformed datagram")]
    Malformed,
    /// The HMAC did not verify (tampered, or a different key).
    #[error("bad MAC")]
    BadMac,
    /// The timestamp lies outside the accepted window.
    #[error("timestamp outside the window")]
    OutsideWindow,
    /// The nonce was already seen within the window.
    #[error("replayed nonce")]
    Replayed,
    /// The replay cache is full; accepting would mean forgetting a nonce that
    /// is still inside the window.
    #[error("replay cache full")]
    ReplayCacheFull,
    /// Authentic, but answers no question we are waiting for.
    #[error("unexpected response")]
    Unexpected,
}

fn mac(key: &Key) -> HmacSha256 {
    // HMAC accepts keys of any length; `Key` guarantees at least 32 bytes.
    <HmacSha256 as Mac>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length")
}

fn emit_header(out: &mut Vec<u8>, kind: u8, env: &Envelope) {
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&env.timestamp_ms.to_be_bytes());
    out.extend_from_slice(&env.nonce.to_be_bytes());
    out.extend_from_slice(&env.request_id.0.to_be_bytes());
}

fn seal(mut out: Vec<u8>, key: &Key) -> Vec<u8> {
    let mut m = mac(key);
    m.update(&out);
    out.extend_from_slice(&m.finalize().into_bytes());
    out
}

/// Encodes and authenticates a request.
///
/// # Panics
/// If `req.file` is empty or longer than [`MAX_PATH_LEN`] bytes: the caller
/// builds requests from its own state and must not ask about such names.
pub fn encode_request(req: &Request, key: &Key) -> Vec<u8> {
    let path = req.file.as_bytes();
    assert!(
        !path.is_empty() && path.len() <= MAX_PATH_LEN,
        "request path must be 1..={MAX_PATH_LEN} bytes"
    );
    let mut out = Vec::with_capacity(HEADER_LEN + 34 + path.len() + MAC_LEN);
    emit_header(&mut out, KIND_REQUEST, &req.envelope);
    out.extend_from_slice(&req.sha256);
    out.extend_from_slice(&(path.len() as u16).to_be_bytes());
    out.extend_from_slice(path);
    seal(out, key)
}

/// Encodes and authenticates a response.
pub fn encode_response(resp: &Response, key: &Key) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 1 + 48 + MAC_LEN);
    emit_header(&mut out, KIND_RESPONSE, &resp.envelope);
    let (status, state) = match resp.answer {
        Answer::Current(s) => (STATUS_CURRENT, Some(s)),
        Answer::Stale(s) => (STATUS_STALE, Some(s)),
        Answer::Unknown => (STATUS_UNKNOWN, None),
    };
    out.push(status);
    if let Some(s) = state {
        out.extend_from_slice(&s.size.to_be_bytes());
        out.extend_from_slice(&s.version.to_be_bytes());
        out.extend_from_slice(&s.sha256);
    }
    seal(out, key)
}

/// Checks framing and the MAC; returns the envelope and the body.
fn open<'a>(bytes: &'a [u8], kind: u8, key: &Key) -> Result<(Envelope, &'a [u8]), DropReason> {
    if bytes.len() < HEADER_LEN + MAC_LEN
        || bytes[field::MAGIC] != MAGIC
        || bytes[field::VERSION] != VERSION
        || bytes[field::KIND] != kind
    {
        return Err(DropReason::Malformed);
    }
    let (signed, tag) = bytes.split_at(bytes.len() - MAC_LEN);
    let mut m = mac(key);
    m.update(signed);
    // `verify_slice` compares in constant time.
    m.verify_slice(tag).map_err(|_| DropReason::BadMac)?;
    let env = Envelope {
        timestamp_ms: be_u64(&signed[field::TIMESTAMP]),
        nonce: be_u64(&signed[field::NONCE]),
        request_id: RequestId(be_u64(&signed[field::REQUEST_ID])),
    };
    Ok((env, &signed[HEADER_LEN..]))
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn sha(b: &[u8]) -> [u8; 32] {
    let mut a = [0u8; 32];
    a.copy_from_slice(&b[..32]);
    a
}

/// Verifies and parses a request. Does not check freshness: pass the envelope
/// to a [`crate::ReplayGuard`] next.
pub fn decode_request(bytes: &[u8], key: &Key) -> Result<Request, DropReason> {
    let (envelope, body) = open(bytes, KIND_REQUEST, key)?;
    if body.len() < 34 {
        return Err(DropReason::Malformed);
    }
    let len = u16::from_be_bytes([body[32], body[33]]) as usize;
    let path = &body[34..];
    if len == 0 || len > MAX_PATH_LEN || path.len() != len {
        return Err(DropReason::Malformed);
    }
    let file = std::str::from_utf8(path).map_err(|_| DropReason::Malformed)?;
    Ok(Request {
        envelope,
        file: file.to_owned(),
        sha256: sha(&body[..32]),
    })
}

/// Verifies and parses a response. Does not check freshness.
pub fn decode_response(bytes: &[u8], key: &Key) -> Result<Response, DropReason> {
    let (envelope, body) = open(bytes, KIND_RESPONSE, key)?;
    let state = |b: &[u8]| -> Result<FileState, DropReason> {
        if b.len() != 48 {
            return Err(DropReason::Malformed);
        }
        Ok(FileState {
            size: be_u64(&b[0..8]),
            version: be_u64(&b[8..16]),
            sha256: sha(&b[16..48]),
        })
    };
    let answer = match body.split_first() {
        Some((&STATUS_CURRENT, rest)) => Answer::Current(state(rest)?),
        Some((&STATUS_STALE, rest)) => Answer::Stale(state(rest)?),
        Some((&STATUS_UNKNOWN, [])) => Answer::Unknown,
        _ => return Err(DropReason::Malformed),
    };
    Ok(Response { envelope, answer })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> Key {
        Key::new(vec![7u8; 32]).unwrap()
    }

    fn env() -> Envelope {
        Envelope {
            timestamp_ms: 1_700_000_000_123,
            nonce: 0x0102_0304_0506_0708,
            request_id: RequestId(42),
        }
    }

    fn req() -> Request {
        Request {
            envelope: env(),
            file: "pxelinux.0".into(),
            sha256: [0xab; 32],
        }
    }

    #[test]
    fn request_layout_is_as_documented() {
        let b = encode_request(&req(), &key());
        assert_eq!(b.len(), HEADER_LEN + 32 + 2 + 10 + MAC_LEN);
        assert_eq!(&b[0..4], &[b'B', b'A', 1, 1]);
        assert_eq!(&b[4..12], &1_700_000_000_123u64.to_be_bytes());
        assert_eq!(&b[12..20], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&b[20..28], &42u64.to_be_bytes());
        assert_eq!(&b[28..60], &[0xab; 32]);
        assert_eq!(&b[60..62], &[0, 10]);
        assert_eq!(&b[62..72], b"pxelinux.0");
    }

    #[test]
    fn request_round_trip() {
        let r = req();
        assert_eq!(decode_request(&encode_request(&r, &key()), &key()), Ok(r));
    }

    #[test]
    fn response_round_trips() {
        let st = FileState {
            size: 123_456,
            version: 9,
            sha256: [3; 32],
        };
        for answer in [Answer::Current(st), Answer::Stale(st), Answer::Unknown] {
            let r = Response {
                envelope: env(),
                answer,
            };
            let b = encode_response(&r, &key());
            let expect_len = HEADER_LEN + 1 + if answer == Answer::Unknown { 0 } else { 48 } + 32;
            assert_eq!(b.len(), expect_len);
            assert_eq!(decode_response(&b, &key()), Ok(r));
        }
    }

    #[test]
    fn tampering_any_byte_is_detected() {
        let b = encode_request(&req(), &key());
        for i in 0..b.len() {
            let mut t = b.clone();
            t[i] ^= 0x01;
            let e = decode_request(&t, &key()).unwrap_err();
            // Header framing bytes fail as malformed, everything else as a bad MAC.
            let expected = if i < 4 {
                DropReason::Malformed
            } else {
                DropReason::BadMac
            };
            assert_eq!(e, expected, "byte {i}");
        }
    }

    #[test]
    fn wrong_key_is_bad_mac() {
        let b = encode_request(&req(), &key());
        let other = Key::new(vec![8u8; 32]).unwrap();
        assert_eq!(decode_request(&b, &other), Err(DropReason::BadMac));
    }

    #[test]
    fn truncated_and_extended_are_rejected() {
        let b = encode_request(&req(), &key());
        for n in 0..b.len() {
            assert!(decode_request(&b[..n], &key()).is_err(), "prefix {n}");
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(decode_request(&longer, &key()).is_err());
    }

    #[test]
    fn request_is_not_accepted_as_response() {
        let b = encode_request(&req(), &key());
        assert_eq!(decode_response(&b, &key()), Err(DropReason::Malformed));
        let r = Response {
            envelope: env(),
            answer: Answer::Unknown,
        };
        let b = encode_response(&r, &key());
        assert_eq!(decode_request(&b, &key()), Err(DropReason::Malformed));
    }

    #[test]
    fn authentic_but_bad_body_is_malformed() {
        // A correctly MACed request whose length field lies.
        let mut body = Vec::new();
        emit_header(&mut body, KIND_REQUEST, &env());
        body.extend_from_slice(&[0; 32]);
        body.extend_from_slice(&5u16.to_be_bytes());
        body.extend_from_slice(b"abc");
        let b = seal(body, &key());
        assert_eq!(decode_request(&b, &key()), Err(DropReason::Malformed));
        // Non-UTF-8 path.
        let mut body = Vec::new();
        emit_header(&mut body, KIND_REQUEST, &env());
        body.extend_from_slice(&[0; 32]);
        body.extend_from_slice(&2u16.to_be_bytes());
        body.extend_from_slice(&[0xff, 0xfe]);
        let b = seal(body, &key());
        assert_eq!(decode_request(&b, &key()), Err(DropReason::Malformed));
        // Unknown status.
        let mut body = Vec::new();
        emit_header(&mut body, KIND_RESPONSE, &env());
        body.push(9);
        let b = seal(body, &key());
        assert_eq!(decode_response(&b, &key()), Err(DropReason::Malformed));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
            let _ = decode_request(&bytes, &key());
            let _ = decode_response(&bytes, &key());
        }

        #[test]
        fn decode_never_panics_on_plausible_headers(
            tail in proptest::collection::vec(any::<u8>(), 0..200),
            kind in 0u8..4,
        ) {
            let mut b = vec![b'B', b'A', 1, kind];
            b.extend_from_slice(&tail);
            let _ = decode_request(&b, &key());
            let _ = decode_response(&b, &key());
        }

        #[test]
        fn any_request_round_trips(
            ts: u64, nonce: u64, id: u64, sha: [u8; 32],
            file in "[a-zA-Z0-9/._-]{1,200}",
        ) {
            let r = Request {
                envelope: Envelope { timestamp_ms: ts, nonce, request_id: RequestId(id) },
                file,
                sha256: sha,
            };
            prop_assert_eq!(decode_request(&encode_request(&r, &key()), &key()), Ok(r));
        }
    }
}
