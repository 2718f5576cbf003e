//! The fast-path classifier: never panics and never allocates, neither when
//! classifying nor when slicing out the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::classify::classify;

#[path = "alloc_cap.rs"]
mod alloc_cap;

fuzz_target!(|data: &[u8]| {
    let payload = alloc_cap::capped(0, || classify(data).payload(data));
    std::hint::black_box(payload);
});
