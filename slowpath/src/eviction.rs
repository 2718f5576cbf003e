//! LRU eviction between two watermarks of the cache's quota, sans-I/O.
//!
//! When a new file would take the cache past its high watermark, the least
//! recently used files (last served, verified or cached) are chosen until
//! the cache with the new file is below the low watermark — never a file
//! the caller says is in use (being served, verified, published or
//! replaced). The filestore removes what [`plan`] chose; this module only
//! decides, so that it can be tested with a simulated clock.

use std::time::SystemTime;

/// The two watermarks, in percent of the quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    /// Evict when a new file would take the cache past this.
    pub high_percent: u8,
    /// Evict until the cache (with the new file) is at or below this.
    pub low_percent: u8,
}

impl Default for Watermarks {
    fn default() -> Self {
        Watermarks {
            high_percent: 90,
            low_percent: 80,
        }
    }
}

impl Watermarks {
    /// Watermarks of `high` and `low` percent, `None` unless
    /// `0 < low <= high <= 100`.
    pub fn new(high: u8, low: u8) -> Option<Self> {
        (low > 0 && low <= high && high <= 100).then_some(Watermarks {
            high_percent: high,
            low_percent: low,
        })
    }

    /// The high watermark of `quota`, in bytes.
    pub fn high(&self, quota: u64) -> u64 {
        percent(quota, self.high_percent)
    }

    /// The low watermark of `quota`, in bytes.
    pub fn low(&self, quota: u64) -> u64 {
        percent(quota, self.low_percent)
    }
}

fn percent(quota: u64, p: u8) -> u64 {
    // u128: a quota near u64::MAX (no quota) must not overflow.
    (u128::from(quota) * u128::from(p) / 100) as u64
}

/// A cached file eviction may choose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<K> {
    /// Which file (the caller's key).
    pub key: K,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last served, verified or cached.
    pub last_used: SystemTime,
    /// Being served, verified, published or replaced: never chosen.
    pub in_use: bool,
}

/// What a new file of some size needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan<K> {
    /// It fits under the high watermark: nothing to evict.
    Fits,
    /// Evict these (least recently used first), then it fits.
    Evict(Vec<K>),
    /// Even evicting every file not in use leaves no room under the quota:
    /// refuse the new file, evict nothing.
    NoRoom,
}

/// What to evict so that `incoming` more bytes fit in a cache holding
/// `used` bytes of its `quota` (`used` counts every file, candidates or
/// not). Files are chosen least recently used first (ties: the larger
/// first, then by key, so the choice never depends on the input's order)
/// until the total is at or below the low watermark; if the files not in
/// use run out first, what was chosen is enough as long as the total is
/// within the quota.
pub fn plan<K: Ord + Clone>(
    used: u64,
    incoming: u64,
    quota: u64,
    marks: Watermarks,
    candidates: impl IntoIterator<Item = Candidate<K>>,
) -> Plan<K> {
    let total = used.saturating_add(incoming);
    if total <= marks.high(quota) {
        return Plan::Fits;
    }
    let mut free: Vec<Candidate<K>> = candidates.into_iter().filter(|c| !c.in_use).collect();
    free.sort_by(|a, b| {
        (a.last_used, std::cmp::Reverse(a.size), &a.key).cmp(&(
            b.last_used,
            std::cmp::Reverse(b.size),
            &b.key,
        ))
    });
    let low = marks.low(quota);
    let mut left = total;
    let mut chosen = Vec::new();
    for c in free {
        if left <= low {
            break;
        }
        left = left.saturating_sub(c.size);
        chosen.push(c.key);
    }
    if left > quota {
        return Plan::NoRoom;
    }
    if chosen.is_empty() {
        // Over the high watermark but nothing can go: it still fits.
        return Plan::Fits;
    }
    Plan::Evict(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// A simulated clock: second `s` after the epoch.
    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    fn file(key: &str, size: u64, used_at: u64) -> Candidate<String> {
        Candidate {
            key: key.into(),
            size,
            last_used: at(used_at),
            in_use: false,
        }
    }

    const MARKS: Watermarks = Watermarks {
        high_percent: 90,
        low_percent: 80,
    };

    #[test]
    fn below_the_high_watermark_nothing_goes() {
        let files = vec![file("a", 40, 1), file("b", 40, 2)];
        // 80 + 10 = 90: at the watermark, not past it.
        assert_eq!(plan(80, 10, 100, MARKS, files), Plan::Fits);
    }

    #[test]
    fn least_recently_used_go_first_until_below_the_low_watermark() {
        // Used at t=30, 10, 20, 40: a is the most recent but one.
        let files = vec![
            file("a", 20, 30),
            file("b", 20, 10),
            file("c", 20, 20),
            file("d", 20, 40),
        ];
        // 80 + 20 = 100 > 90: evict b (→ 80 ≤ 80).
        assert_eq!(
            plan(80, 20, 100, MARKS, files.clone()),
            Plan::Evict(vec!["b".into()])
        );
        // 80 + 30 = 110: b then c (→ 70).
        assert_eq!(
            plan(80, 30, 100, MARKS, files),
            Plan::Evict(vec!["b".into(), "c".into()])
        );
    }

    #[test]
    fn a_file_in_use_is_never_chosen() {
        let mut files = vec![file("old", 50, 1), file("new", 30, 100)];
        files[0].in_use = true;
        // Needs 30 gone: "old" is older but being served.
        assert_eq!(
            plan(80, 20, 100, MARKS, files.clone()),
            Plan::Evict(vec!["new".into()])
        );
        // Every file in use, and no room under the quota: refused.
        files[1].in_use = true;
        assert_eq!(plan(80, 30, 100, MARKS, files.clone()), Plan::NoRoom);
        // Past the high watermark but within the quota: it still fits.
        assert_eq!(plan(80, 15, 100, MARKS, files), Plan::Fits);
    }

    #[test]
    fn running_out_of_candidates_is_fine_within_the_quota() {
        let mut files = vec![file("a", 10, 1), file("b", 60, 2)];
        files[1].in_use = true;
        // 70 + 25 = 95: a goes (85), b cannot; 85 is within the quota.
        assert_eq!(
            plan(70, 25, 100, MARKS, files),
            Plan::Evict(vec!["a".into()])
        );
    }

    #[test]
    fn a_file_larger_than_the_quota_evicts_nothing() {
        let files = vec![file("a", 50, 1)];
        assert_eq!(plan(50, 200, 100, MARKS, files), Plan::NoRoom);
    }

    #[test]
    fn ties_do_not_depend_on_the_order_given() {
        let one = vec![file("x", 10, 5), file("y", 30, 5), file("z", 30, 5)];
        let mut two = one.clone();
        two.reverse();
        let p = plan(90, 10, 100, MARKS, one);
        assert_eq!(p, plan(90, 10, 100, MARKS, two));
        // The larger first, then by key: y (→ 70).
        assert_eq!(p, Plan::Evict(vec!["y".into()]));
    }

    #[test]
    fn a_clock_advancing_changes_the_order() {
        // Files cached at t=0,1,2; "a" served again at t=10.
        let mut files = vec![file("a", 30, 0), file("b", 30, 1), file("c", 30, 2)];
        assert_eq!(
            plan(90, 10, 100, MARKS, files.clone()),
            Plan::Evict(vec!["a".into()])
        );
        files[0].last_used = at(10);
        assert_eq!(
            plan(90, 10, 100, MARKS, files),
            Plan::Evict(vec!["b".into()])
        );
    }

    #[test]
    fn watermarks_are_checked_and_never_overflow() {
        assert!(Watermarks::new(90, 80).is_some());
        assert!(Watermarks::new(80, 90).is_none());
        assert!(Watermarks::new(101, 80).is_none());
        assert!(Watermarks::new(90, 0).is_none());
        assert_eq!(MARKS.high(u64::MAX), (u128::from(u64::MAX) * 9 / 10) as u64);
        assert_eq!(MARKS.low(1000), 800);
    }
}
