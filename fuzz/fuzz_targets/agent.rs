//! The agent protocol's decoders (both ends read hostile datagrams): never
//! panic; whatever decodes re-encodes to the same bytes.
#![no_main]

use bootcache_agent::wire::{decode_request, decode_response, encode_request, encode_response};
use bootcache_agent::Key;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = Key::new(vec![7u8; 32]).expect("32-byte key");
    if let Ok(r) = decode_request(data, &key) {
        assert_eq!(encode_request(&r, &key), data);
    }
    if let Ok(r) = decode_response(data, &key) {
        assert_eq!(encode_response(&r, &key), data);
    }
});
