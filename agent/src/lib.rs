//! bootcache freshness agent (patent figures 1e, 7; the verification table of
//! figure 8).
//!
//! Runs beside the TFTP server on the boot server. The cache asks "is SHA-256
//! X still current for file F?" before serving a cached copy; the agent
//! answers current, stale (with the current size, SHA-256 and version), or
//! unknown. Every datagram is authenticated with HMAC-SHA256 under a shared
//! key and protected against replay (timestamp window + nonce cache).
//!
//! - [`wire`]: the datagram format, [`encode_request`] / [`decode_request`] /
//!   [`encode_response`] / [`decode_response`].
//! - [`ReplayGuard`]: timestamp window and bounded nonce cache.
//! - [`Responder`]: the agent's sans-I/O protocol state.
//! - [`Validator`]: the cache's sans-I/O client, with retries and a TTL cache.
//! - [`Table`]: the verification table; [`watch`] keeps it current.

#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

use std::fmt;
use std::io::Read;

pub mod replay;
pub mod responder;
pub mod table;
pub mod usage;
pub mod validator;
pub mod watch;
pub mod wire;

pub use replay::ReplayGuard;
pub use responder::{AnswerCounters, Counters, Responder};
pub use table::{normalize, Entry, Table};
pub use validator::{Refused, RefusedCounters, Transmit, Validator, ValidatorConfig, Verdict};
pub use wire::{
    decode_request, decode_response, encode_request, encode_response, Answer, DropReason, Envelope,
    FileState, Request, RequestId, Response,
};

/// Default UDP port of the agent.
pub const DEFAULT_PORT: u16 = 4070;
/// Shortest accepted key, in bytes.
pub const MIN_KEY_LEN: usize = 32;

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Fewer than [`MIN_KEY_LEN`] bytes (after hex decoding).
    #[error("key is {0} bytes, need at least {MIN_KEY_LEN} (e.g. `head -c 32 /dev/urandom | xxd -p -c 64`)")]
    TooShort(usize),
}

/// The shared HMAC key (at least [`MIN_KEY_LEN`] bytes). Its `Debug` output
/// does not show the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Vec<u8>);

impl Key {
    /// A key from raw bytes.
    pub fn new(bytes: Vec<u8>) -> Result<Key, KeyError> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort(bytes.len()));
        }
        Ok(Key(bytes))
    }

    /// A key from a key file's contents: if the contents, whitespace trimmed,
    /// are an even number of hex digits they are decoded; otherwise the raw
    /// bytes are the key.
    pub fn from_file_contents(contents: &[u8]) -> Result<Key, KeyError> {
        let trimmed = contents.trim_ascii();
        let is_hex = !trimmed.is_empty()
            && trimmed.len().is_multiple_of(2)
            && trimmed.iter().all(u8::is_ascii_hexdigit);
        if is_hex {
            let digit = |c: u8| (c as char).to_digit(16).expect("checked hex") as u8;
            let bytes = trimmed
                .chunks(2)
                .map(|p| digit(p[0]) << 4 | digit(p[1]))
                .collect();
            Key::new(bytes)
        } else {
            Key::new(contents.to_vec())
        }
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({} bytes)", self.0.len())
    }
}

/// A 64-bit seed from the kernel's CSPRNG (`/dev/urandom`), for request ids
/// and nonces. Falls back to the clock and pid if the device is unavailable:
/// nonces need to be unique, not secret.
pub fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u64::from_ne_bytes(b),
        Err(_) => {
            let t = replay::unix_ms(std::time::SystemTime::now());
            t.rotate_left(20) ^ u64::from(std::process::id())
        }
    }
}

/// Unique 64-bit values: SplitMix64 over a counter. It is a bijection of the
/// counter, so values never repeat within 2^64 draws, and a random seed keeps
/// them from colliding across restarts.
#[derive(Debug, Clone)]
pub(crate) struct NonceGen(u64);

impl NonceGen {
    pub(crate) fn new(seed: u64) -> Self {
        NonceGen(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parsing() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
        let k = Key::from_file_contents(hex.as_bytes()).unwrap();
        assert_eq!(k.as_bytes().len(), 32);
        assert_eq!(&k.as_bytes()[..3], &[0x00, 0x11, 0x22]);
        // Raw bytes.
        let raw = [0xffu8; 40];
        assert_eq!(Key::from_file_contents(&raw).unwrap().as_bytes(), &raw);
        // Too short, in hex and raw.
        assert_eq!(Key::from_file_contents(b"abcd"), Err(KeyError::TooShort(2)));
        assert_eq!(
            Key::from_file_contents(b"short key!"),
            Err(KeyError::TooShort(10))
        );
        assert!(!format!("{k:?}").contains("11"));
    }

    #[test]
    fn nonces_do_not_repeat() {
        let mut g = NonceGen::new(0);
        let v: std::collections::HashSet<u64> = (0..10_000).map(|_| g.next()).collect();
        assert_eq!(v.len(), 10_000);
    }
}
