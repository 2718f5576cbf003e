//! TFTP: `Packet::parse` never panics, allocates in proportion to the input,
//! and whatever it accepts re-emits byte for byte and parses back equal; the
//! fast-path DATA reader agrees with it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::tftp::{parse_data_header, Packet};

#[path = "alloc_cap.rs"]
mod alloc_cap;

fuzz_target!(|data: &[u8]| {
    // Requests carry at most 512 bytes; ~100 bytes of bookkeeping per byte is
    // far above what option lists need and far below a blow-up.
    let parsed = alloc_cap::capped(64 * 1024 + 128 * data.len(), || Packet::parse(data));
    let fast = parse_data_header(data);
    let Ok(p) = parsed else {
        assert!(fast.is_none(), "fast path accepted what parse refused");
        return;
    };
    match &p {
        Packet::Data { block, payload } => assert_eq!(fast, Some((*block, *payload))),
        _ => assert_eq!(fast, None),
    }
    assert_eq!(p.buffer_len(), data.len());
    let bytes = p.to_vec().expect("an accepted packet emits");
    assert_eq!(bytes, data, "re-emit differs");
    assert_eq!(Packet::parse(&bytes).as_ref(), Ok(&p));
});
