// Shared by the agent and validator targets (`#[path]`-included): the key
// both ends share, and HMAC-SHA256 computed here from the `hmac` crate
// rather than by the code under test, so that the targets sign their inputs
// and the fuzzer's bytes get past the MAC check.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The shared key.
pub const KEY: [u8; 32] = [7; 32];
/// Another key: what it signs must never be taken.
pub const OTHER_KEY: [u8; 32] = [8; 32];

/// Appends HMAC-SHA256 of `bytes` under `key`.
pub fn sign(mut bytes: Vec<u8>, key: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    m.update(&bytes);
    bytes.extend_from_slice(&m.finalize().into_bytes());
    bytes
}

/// The shared key as the agent crate takes it.
pub fn key() -> bootcache_agent::Key {
    bootcache_agent::Key::new(KEY.to_vec()).expect("32-byte key")
}
