//! A latency histogram with bounded relative error (log-linear buckets, as
//! HdrHistogram does): recording is one index computation and an add, no
//! allocation, so the generator can record on its receive path.

/// Sub-buckets per power of two: values are kept to within 1/64 (1.6 %).
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Powers of two covered above the linear range (values up to 2^(6+40) ns).
const GROUPS: usize = 41;

/// Latencies in nanoseconds.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.total)
            .field("min", &self.min)
            .field("max", &self.max)
            .finish()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

/// Bucket of `v`: values below 2·SUB map to themselves; above, each power of
/// two is split into SUB equal sub-buckets.
fn index(v: u64) -> usize {
    if v < 2 * SUB {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros(); // ≥ SUB_BITS + 1
    let shift = msb - SUB_BITS;
    let group = (shift as usize).min(GROUPS - 1);
    let sub = ((v >> shift) - SUB).min(SUB - 1) as usize;
    2 * SUB as usize + (group - 1) * SUB as usize + sub
}

/// The largest value that maps to bucket `i` (what percentiles report).
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * SUB {
        return i;
    }
    let group = (i - 2 * SUB) / SUB + 1;
    let sub = (i - 2 * SUB) % SUB;
    ((SUB + sub + 1) << group) - 1
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; 2 * SUB as usize + (GROUPS - 1) * SUB as usize],
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    /// Records one latency of `ns` nanoseconds.
    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.counts[index(ns)] += 1;
        self.total += 1;
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
        self.sum += u128::from(ns);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Smallest sample (0 when empty).
    pub fn min(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            self.min
        }
    }

    /// Largest sample.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Mean of the samples (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The value at or below which a fraction `q` (0–1) of the samples lie,
    /// to within the bucket width (at most 1.6 % high); never above the
    /// maximum. 0 when empty.
    pub fn percentile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(i).min(self.max).max(self.min);
            }
        }
        self.max
    }

    /// The cumulative distribution: (latency ns, fraction of samples at or
    /// below it), one point per non-empty bucket.
    pub fn cdf(&self) -> Vec<(u64, f64)> {
        let mut out = Vec::new();
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            seen += c;
            out.push((
                upper(i).min(self.max),
                seen as f64 / self.total.max(1) as f64,
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_bound_the_error() {
        let mut last = 0;
        for v in (0..2_000_000u64).step_by(7).chain([1 << 30, 1 << 45]) {
            let i = index(v);
            assert!(i >= last, "index not monotonic at {v}");
            last = i;
            let u = upper(i);
            assert!(u >= v, "{v} above its bucket's top {u}");
            assert!(
                (u - v) as f64 <= v as f64 / 64.0 + 1.0,
                "{v}: bucket top {u}"
            );
        }
        // Beyond the range: clamped into the last bucket, no panic.
        let mut h = Histogram::new();
        h.record(u64::MAX / 4);
        assert_eq!(h.percentile(0.5), u64::MAX / 4);
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = Histogram::new();
        // 1..=10000 ns once each: p50 = 5000, p99 = 9900, p99.9 = 9990.
        for v in 1..=10_000u64 {
            h.record(v);
        }
        assert_eq!(h.count(), 10_000);
        for (q, want) in [(0.5, 5000.0), (0.99, 9900.0), (0.999, 9990.0)] {
            let got = h.percentile(q) as f64;
            assert!(
                got >= want && got <= want * 1.016 + 1.0,
                "p{q}: got {got}, want {want}"
            );
        }
        assert_eq!(h.percentile(1.0), 10_000);
        assert_eq!(h.percentile(0.0), 1);
        assert_eq!(h.min(), 1);
        assert!((h.mean() - 5000.5).abs() < 1e-6);
    }

    #[test]
    fn a_tail_shows_in_the_high_percentiles_only() {
        let mut h = Histogram::new();
        for _ in 0..9_990 {
            h.record(1_000);
        }
        for _ in 0..10 {
            h.record(1_000_000);
        }
        assert!(h.percentile(0.99) <= 1_016);
        assert!(h.percentile(0.999) <= 1_016);
        assert!(h.percentile(0.9995) >= 1_000_000 * 63 / 64);
        let cdf = h.cdf();
        assert_eq!(cdf.len(), 2);
        assert!((cdf[0].1 - 0.999).abs() < 1e-9);
        assert_eq!(cdf[1].1, 1.0);
    }

    #[test]
    fn merge_adds_and_empty_is_zero() {
        let mut a = Histogram::new();
        assert_eq!(a.percentile(0.5), 0);
        assert_eq!(a.min(), 0);
        let mut b = Histogram::new();
        b.record(100);
        b.record(300);
        a.record(200);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.min(), 100);
        assert_eq!(a.max(), 300);
        assert!(
            (200..=203).contains(&a.percentile(0.5)),
            "{}",
            a.percentile(0.5)
        );
    }
}
