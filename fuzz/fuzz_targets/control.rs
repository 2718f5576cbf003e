//! The control protocol (`bootcache cache ...` against a running bridge):
//! `parse_request` never panics and allocates in proportion to the line;
//! what it accepts names a file a client could ask for and encodes to a
//! line that parses back equal; a response line never panics its parser,
//! and the duration parser never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slowpath::control::{encode_request, parse_duration, parse_request, Request, Response};

#[path = "alloc_cap.rs"]
mod alloc_cap;

fuzz_target!(|data: &[u8]| {
    let parsed = alloc_cap::capped(64 * 1024 + 64 * data.len(), || parse_request(data));
    if let Ok(r) = parsed {
        if let Request::Rm { name } | Request::Prefetch { name, .. } = &r {
            assert!(
                wire::tftp::normalize_name(name).is_ok(),
                "{name:?} accepted"
            );
        }
        let line = encode_request(&r);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(parse_request(&line).as_ref(), Ok(&r));
    }
    let _ = alloc_cap::capped(64 * 1024 + 64 * data.len(), || Response::parse(data));
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_duration(s);
    }
});
