// Shared by the targets (`#[path]`-included): a global allocator that fails
// the run when handling one input holds more heap than a bound, so an input
// that makes a parser allocate out of proportion is reported as a crash.

use std::alloc::System;

use cap::Cap;

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

/// Runs `f` with at most `bytes` more heap live at any moment; going over
/// aborts the process, which libFuzzer reports with the input.
pub fn capped<T>(bytes: usize, f: impl FnOnce() -> T) -> T {
    let base = ALLOC.allocated();
    ALLOC
        .set_limit(base.saturating_add(bytes))
        .expect("limit above current use");
    let out = f();
    ALLOC.set_limit(usize::MAX).expect("lifting the limit");
    out
}
