//! DHCP/PXE: `Repr::parse` never panics, allocates in proportion to the
//! input, and whatever it accepts re-emits byte for byte and parses back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::dhcp::Repr;

#[path = "alloc_cap.rs"]
mod alloc_cap;

fuzz_target!(|data: &[u8]| {
    // Each option costs one list entry (tens of bytes) plus Vec growth.
    let parsed = alloc_cap::capped(64 * 1024 + 256 * data.len(), || Repr::parse(data));
    let Ok(r) = parsed else { return };
    assert_eq!(r.buffer_len(), data.len());
    let bytes = r.to_vec().expect("an accepted message emits");
    assert_eq!(bytes, data, "re-emit differs");
    assert_eq!(Repr::parse(&bytes).as_ref(), Ok(&r));
});
