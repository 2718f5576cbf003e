//! Rate-limited warnings. A flood of requests that each hit the same bound
//! or error must not become a flood of log lines (the counters say how many;
//! the log says that it happens): [`warn_limited!`](crate::warn_limited)
//! logs at most one line per cause (its call site) per [`PERIOD`], and the
//! next line it lets through says how many it suppressed meanwhile. A
//! cause that falls quiet after a storm is not left owing its count:
//! [`flush`] (the bridge calls it every second) logs the counts no further
//! line has carried once their period is over.
//!
//! Lock-free and allocation-free: one [`Limiter`] (a few atomics) per call
//! site, a `static` the macro declares, so the table of causes is bounded
//! by the code, never by the input; a limiter that suppressed a line is
//! listed once, in a fixed table of [`LISTED`] slots, for [`flush`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// At most one line per cause in this period.
pub const PERIOD: Duration = Duration::from_secs(10);

/// Call sites [`flush`] can reach (the code has about a dozen; one beyond
/// this still counts its suppressed lines into its next line).
pub const LISTED: usize = 64;

/// The limiters that suppressed a line, for [`flush`].
static LIST: [OnceLock<&'static Limiter>; LISTED] = [const { OnceLock::new() }; LISTED];

/// One cause's state.
#[derive(Debug)]
pub struct Limiter {
    /// When the next line may be logged, in ns on [`now_ns`]'s clock.
    next_ns: AtomicU64,
    /// Lines suppressed since the last one logged.
    suppressed: AtomicU64,
    /// Where the warning is (`file:line`), named by the count [`flush`] logs.
    site: &'static str,
    /// Whether it is in [`LIST`] (or found it full).
    listed: AtomicBool,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new()
    }
}

impl Limiter {
    /// A limiter that lets its first line through.
    pub const fn new() -> Limiter {
        Limiter::at("")
    }

    /// [`Limiter::new`] for the warning at `site` (`file:line`).
    pub const fn at(site: &'static str) -> Limiter {
        Limiter {
            next_ns: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            site,
            listed: AtomicBool::new(false),
        }
    }

    /// [`Limiter::admit`], and a limiter that suppresses its first line is
    /// listed for [`flush`].
    pub fn admit_listed(&'static self, now_ns: u64, period: Duration) -> Option<u64> {
        let r = self.admit(now_ns, period);
        if r.is_none() && !self.listed.swap(true, Relaxed) {
            // The first free slot; a full table leaves it unlisted.
            for slot in &LIST {
                if slot.set(self).is_ok() {
                    break;
                }
            }
        }
        r
    }

    /// The count of lines suppressed since the last line, if its period is
    /// over and no line has carried it yet (then the period starts again).
    pub fn owed(&self, now_ns: u64, period: Duration) -> Option<u64> {
        let next = self.next_ns.load(Relaxed);
        if now_ns < next || self.suppressed.load(Relaxed) == 0 {
            return None;
        }
        self.next_ns
            .compare_exchange(next, now_ns.saturating_add(nanos(period)), Relaxed, Relaxed)
            .ok()?;
        Some(self.suppressed.swap(0, Relaxed)).filter(|&n| n > 0)
    }

    /// Whether a line at `now_ns` (nanoseconds on any monotonic clock) is
    /// logged: `Some(n)` with the number suppressed since the last line
    /// logged, or `None` (suppressed, and counted for the next one).
    pub fn admit(&self, now_ns: u64, period: Duration) -> Option<u64> {
        let next = self.next_ns.load(Relaxed);
        if now_ns >= next
            && self
                .next_ns
                .compare_exchange(next, now_ns.saturating_add(nanos(period)), Relaxed, Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Relaxed))
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            None
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Nanoseconds since the first call in this process (the monotonic clock
/// the macro feeds [`Limiter::admit`]).
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Counts owed by the listed limiters at `now_ns`: `(site, count)` for
/// each whose period is over and that suppressed lines no line carried.
pub fn owed(now_ns: u64, period: Duration) -> impl Iterator<Item = (&'static str, u64)> {
    LIST.iter()
        .map_while(OnceLock::get)
        .filter_map(move |l| Some((l.site, l.owed(now_ns, period)?)))
}

/// Logs what [`owed`] finds now, a line per cause:
/// `N similar warnings suppressed (file:line)`. Cheap when nothing is
/// owed (a load per listed call site); the bridge calls it every second.
pub fn flush() {
    if !log::log_enabled!(log::Level::Warn) {
        return;
    }
    for (site, n) in owed(now_ns(), PERIOD) {
        log::warn!("{n} similar warnings suppressed ({site})");
    }
}

/// `log::warn!`, at most once per call site per [`PERIOD`]; the next line
/// after a suppressed one ends with `(N similar suppressed)`, or [`flush`]
/// logs the count alone.
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static LIMITER: $crate::ratelimit::Limiter =
            $crate::ratelimit::Limiter::at(concat!(file!(), ":", line!()));
        if $crate::ratelimit::__log::log_enabled!($crate::ratelimit::__log::Level::Warn) {
            match LIMITER.admit_listed($crate::ratelimit::now_ns(), $crate::ratelimit::PERIOD) {
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
    fn a_count_no_line_carried_is_owed_once_the_period_is_over() {
        static L: Limiter = Limiter::at("here.rs:1");
        let mine = |now| owed(now, PERIOD).find(|(site, _)| *site == "here.rs:1");
        assert_eq!(L.admit_listed(0, PERIOD), Some(0));
        // Nothing suppressed yet: nothing listed, nothing owed.
        assert_eq!(mine(20 * S), None);
        assert_eq!(L.admit_listed(2 * S, PERIOD), None);
        assert_eq!(L.admit_listed(3 * S, PERIOD), None);
        // Within the period the count waits for a line.
        assert_eq!(mine(9 * S), None);
        assert_eq!(mine(10 * S), Some(("here.rs:1", 2)));
        // Paid: not owed again, and the period starts again from the flush.
        assert_eq!(mine(11 * S), None);
        assert_eq!(L.admit_listed(12 * S, PERIOD), None);
        assert_eq!(L.admit_listed(20 * S, PERIOD), Some(1));
        assert_eq!(mine(40 * S), None);
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
