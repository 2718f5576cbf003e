//! Rate-limited warnings. A flood of requests that each hit the same bound
//! or error must not become a flood of log lines (the counters say how many;
//! the log says that it happens): [`warn_limited!`](crate::warn_limited)
//! logs at most one line per cause (its call site) per [`PERIOD`], and the
//! next line it lets through says how many it suppressed meanwhile.
//!
//! Lock-free and allocation-free: one [`Limiter`] (two atomics) per call
//! site, a `static` the macro declares, so the table of causes is bounded
//! by the code, never by the input.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// At most one line per cause in this period.
pub const PERIOD: Duration = Duration::from_secs(10);

/// One cause's state.
#[derive(Debug)]
pub struct Limiter {
    /// When the next line may be logged, in ns on [`now_ns`]'s clock.
    next_ns: AtomicU64,
    /// Lines suppressed since the last one logged.
    suppressed: AtomicU64,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new()
    }
}

impl Limiter {
    /// A limiter that lets its first line through.
    pub const fn new() -> Limiter {
        Limiter {
            next_ns: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line at `now_ns` (nanoseconds on any monotonic clock) is
    /// logged: `Some(n)` with the number suppressed since the last line
    /// logged, or `None` (suppressed, and counted for the next one).
    pub fn admit(&self, now_ns: u64, period: Duration) -> Option<u64> {
        let next = self.next_ns.load(Relaxed);
        let period = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
        if now_ns >= next
            && self
                .next_ns
                .compare_exchange(next, now_ns.saturating_add(period), Relaxed, Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Relaxed))
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            None
        }
    }
}

/// Nanoseconds since the first call in this process (the monotonic clock
/// the macro feeds [`Limiter::admit`]).
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// `log::warn!`, at most once per call site per [`PERIOD`]; the next line
/// after a suppressed one ends with `(N similar suppressed)`.
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static LIMITER: $crate::ratelimit::Limiter = $crate::ratelimit::Limiter::new();
        if $crate::ratelimit::__log::log_enabled!($crate::ratelimit::__log::Level::Warn) {
            match LIMITER.admit($crate::ratelimit::now_ns(), $crate::ratelimit::PERIOD) {
                Some(0) => $crate::ratelimit::__log::warn!($($arg)+),
                Some(n) => $crate::ratelimit::__log::warn!(
                    "{} ({} similar suppressed)",
                    format_args!($($arg)+),
                    n
                ),
                None => {}
            }
        }
    }};
}

#[doc(hidden)]
pub use log as __log;

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn one_line_per_period_then_the_count_of_what_was_suppressed() {
        let l = Limiter::new();
        assert_eq!(l.admit(0, PERIOD), Some(0));
        // A storm within the period: all suppressed.
        for t in 1..=100 {
            assert_eq!(l.admit(t * S / 20, PERIOD), None, "at {t}");
        }
        assert_eq!(l.admit(10 * S - 1, PERIOD), None);
        // The period is over: the next line says how many were dropped.
        assert_eq!(l.admit(10 * S, PERIOD), Some(101));
        assert_eq!(l.admit(11 * S, PERIOD), None);
        // A quiet cause logs each line again, with nothing suppressed.
        assert_eq!(l.admit(20 * S, PERIOD), Some(1));
        assert_eq!(l.admit(40 * S, PERIOD), Some(0));
    }

    #[test]
    fn causes_are_independent() {
        let (a, b) = (Limiter::new(), Limiter::new());
        assert_eq!(a.admit(5 * S, PERIOD), Some(0));
        assert_eq!(b.admit(5 * S, PERIOD), Some(0));
        assert_eq!(a.admit(6 * S, PERIOD), None);
        assert_eq!(b.admit(16 * S, PERIOD), Some(0));
        assert_eq!(a.admit(16 * S, PERIOD), Some(1));
    }

    #[test]
    fn the_macro_expands_and_the_clock_advances() {
        let t0 = now_ns();
        for i in 0..3 {
            crate::warn_limited!("test warning {i}");
        }
        assert!(now_ns() >= t0);
    }
}
