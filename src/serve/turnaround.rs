//! How fast a session served from the cache answers: from the fast path's
//! receive timestamp of a client's ACK (the TSC its redirected frame
//! carries) to the slow path's push of the next DATA onto the inject ring.
//! That is the trap, the redirect ring, the slow path's wake-up and the
//! session; the inject ring's wait and the TX are not in it.
//!
//! A fixed log-linear histogram (16 buckets per power of two, at most 1/16
//! too high): recording is a multiply, a shift and an increment, no
//! allocation per frame.

/// Sub-buckets per power of two, as a power of two.
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Values up to 2^40 ns (18 minutes); larger ones land in the last bucket.
const BUCKETS: usize = ((40 - SUB_BITS as usize) + 1) * SUB as usize;

/// ACK-to-next-DATA turnarounds in nanoseconds.
pub(crate) struct Turnaround {
    counts: [u64; BUCKETS],
    samples: u64,
    max_ns: u64,
    /// Nanoseconds per TSC cycle, as a 32.32 fixed-point number.
    ns_per_cycle: u128,
}

impl Turnaround {
    /// An empty histogram for a TSC running at `tsc_hz`.
    pub(crate) fn new(tsc_hz: u64) -> Turnaround {
        Turnaround {
            counts: [0; BUCKETS],
            samples: 0,
            max_ns: 0,
            ns_per_cycle: (1_000_000_000u128 << 32) / u128::from(tsc_hz.max(1)),
        }
    }

    /// Records the turnaround of an ACK received at TSC `ack_tsc`, answered
    /// at TSC `now_tsc`. The fast path's and slow path's TSCs are the same
    /// clock (invariant TSC); a reading from the past counts as 0.
    pub(crate) fn record_tsc(&mut self, ack_tsc: u64, now_tsc: u64) {
        let cycles = u128::from(now_tsc.saturating_sub(ack_tsc));
        // Rounded: the fixed-point factor is truncated.
        let ns = (cycles * self.ns_per_cycle + (1 << 31)) >> 32;
        let ns = u64::try_from(ns).unwrap_or(u64::MAX);
        self.record_ns(ns);
    }

    /// Records one turnaround of `ns` nanoseconds.
    pub(crate) fn record_ns(&mut self, ns: u64) {
        self.counts[bucket(ns)] += 1;
        self.samples += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    /// Turnarounds recorded.
    pub(crate) fn samples(&self) -> u64 {
        self.samples
    }

    /// The longest turnaround recorded.
    pub(crate) fn max_ns(&self) -> u64 {
        self.max_ns
    }

    /// The `q` quantile (0 to 1) in nanoseconds: the upper bound of the
    /// bucket that holds it, never above the largest value seen; 0 when
    /// empty.
    pub(crate) fn quantile_ns(&self, q: f64) -> u64 {
        if self.samples == 0 {
            return 0;
        }
        // The rank of the quantile, from 1: p99 of 100 samples is the 99th.
        let rank = ((q.clamp(0.0, 1.0) * self.samples as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return upper_bound(i).min(self.max_ns);
            }
        }
        self.max_ns
    }
}

/// The bucket of `v`: exact below 2 * SUB, then SUB per power of two.
fn bucket(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS
    let sub = (v >> (exp - SUB_BITS)) & (SUB - 1);
    let i = (exp - SUB_BITS + 1) as usize * SUB as usize + sub as usize;
    i.min(BUCKETS - 1)
}

/// The largest value of bucket `i`.
fn upper_bound(i: usize) -> u64 {
    let sub_count = SUB as usize;
    if i < sub_count {
        return i as u64;
    }
    let exp = (i / sub_count) as u32 + SUB_BITS - 1;
    let sub = (i % sub_count) as u64;
    let width = 1u64 << (exp - SUB_BITS);
    (1u64 << exp) + (sub + 1) * width - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        // Every value falls in a bucket whose upper bound is at least the
        // value and at most 1/16 above it.
        let mut prev = 0;
        for v in (0..5000u64).chain((13..40).map(|e| (1u64 << e) - 1)) {
            let i = bucket(v);
            assert!(i >= prev, "{v} in bucket {i}, before {prev}");
            prev = i;
            let ub = upper_bound(i);
            assert!(ub >= v, "{v} -> bucket {i} ends at {ub}");
            assert!(ub - v <= v / SUB, "{v} -> bucket {i} ends at {ub}");
            if i > 0 {
                assert!(upper_bound(i - 1) < v, "{v} fits bucket {}", i - 1);
            }
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = Turnaround::new(1_000_000_000);
        assert_eq!(h.quantile_ns(0.5), 0);
        // 98 fast answers (10 us), 2 slow ones (2 ms).
        for _ in 0..98 {
            h.record_ns(10_000);
        }
        h.record_ns(2_000_000);
        h.record_ns(2_000_000);
        assert_eq!(h.samples(), 100);
        let p50 = h.quantile_ns(0.5);
        assert!((10_000..=10_000 + 10_000 / 16).contains(&p50), "{p50}");
        assert_eq!(h.quantile_ns(0.98), p50);
        assert_eq!(h.quantile_ns(0.99), 2_000_000);
        assert_eq!(h.max_ns(), 2_000_000);
    }

    #[test]
    fn tsc_cycles_become_nanoseconds() {
        // A 2.5 GHz TSC: 25,000 cycles are 10 us.
        let mut h = Turnaround::new(2_500_000_000);
        h.record_tsc(1_000_000, 1_025_000);
        assert_eq!(h.max_ns(), 10_000);
        // A reading from the past (another CPU's TSC a hair behind) is 0.
        h.record_tsc(1_025_000, 1_000_000);
        assert_eq!(h.quantile_ns(0.0), 0);
    }
}
