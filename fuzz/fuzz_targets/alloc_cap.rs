// Shared by the targets (`#[path]`-included): a global allocator that fails
// the run when handling one input holds more heap than a bound, so an input
// that makes a parser allocate out of proportion is reported as a crash.

use std::alloc::System;

use cap::Cap;

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

/// Runs `f` with at most `bytes` more heap live at any moment; going over
/// aborts the process, which libFuzzer reports with the input. A failed
/// assertion inside `f` lifts the cap first, so that the panic message and
/// backtrace can be written (they allocate) and libFuzzer reports the
/// assertion rather than an allocation failure.
pub fn capped<T>(bytes: usize, f: impl FnOnce() -> T) -> T {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        // Chains to the hook libfuzzer-sys installed (print, then abort).
        let next = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = ALLOC.set_limit(usize::MAX);
            next(info)
        }));
    });
    let base = ALLOC.allocated();
    ALLOC
        .set_limit(base.saturating_add(bytes))
        .expect("limit above current use");
    let out = f();
    ALLOC.set_limit(usize::MAX).expect("lifting the limit");
    out
}
