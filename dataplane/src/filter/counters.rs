//! Per-rule hit counters: plain `u64`s bumped by one fast-path lcore, copied
//! into atomics when it publishes, summed over lcores by whoever reads them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::{Action, RuleId, StaticRule, STATIC_RULES};

/// Hits per rule, owned by one fast-path lcore; index = [`RuleId`].
///
/// Size it with [`super::FilterWriter::rule_count`]. A dynamic [`RuleId`] is
/// reused after its rule is removed (oldest freed first), so its counter
/// keeps counting across owners: compare snapshots to attribute hits.
///
/// It also remembers which counters changed since the last publish (a bit
/// per counter, and a bit per 64-counter word of those bits), so that
/// [`SharedFilterCounters::publish`] stores only those: with the default
/// bound of 65,536 rule ids a full walk was ~130,000 instructions on the
/// forwarding thread every `publish_ms`, most of them for rules no frame hit.
#[derive(Debug, Clone)]
pub struct FilterCounters {
    hits: Box<[u64]>,
    /// Bit `i % 64` of word `i / 64`: counter `i` changed since the last publish.
    dirty: Box<[u64]>,
    /// Bit `w % 64` of word `w / 64`: word `w` of `dirty` is not zero.
    dirty_words: Box<[u64]>,
}

impl FilterCounters {
    /// Zeroed counters for `rules` rule ids.
    pub fn new(rules: usize) -> FilterCounters {
        let n = rules.max(STATIC_RULES);
        let words = n.div_ceil(64);
        FilterCounters {
            hits: vec![0; n].into_boxed_slice(),
            dirty: vec![0; words].into_boxed_slice(),
            dirty_words: vec![0; words.div_ceil(64)].into_boxed_slice(),
        }
    }

    /// Counts a hit of the rule `action` names; [`Action::Forward`] and ids
    /// out of range are ignored. One increment and two bits set, no atomics.
    #[inline(always)]
    pub fn record(&mut self, action: Action) {
        if let Some(id) = action.rule() {
            let i = id.index();
            if let Some(h) = self.hits.get_mut(i) {
                *h += 1;
                // In range: `dirty` has a bit for every counter, and
                // `dirty_words` one for every word of `dirty`.
                if let Some(d) = self.dirty.get_mut(i / 64) {
                    *d |= 1 << (i % 64);
                }
                if let Some(d) = self.dirty_words.get_mut(i / 4096) {
                    *d |= 1 << (i / 64 % 64);
                }
            }
        }
    }

    /// Hits of `rule` so far (0 for an unknown id).
    pub fn hits(&self, rule: RuleId) -> u64 {
        self.hits.get(rule.index()).copied().unwrap_or(0)
    }
}

/// The published copy of one lcore's [`FilterCounters`], readable from any
/// thread.
#[derive(Debug)]
pub struct SharedFilterCounters {
    cells: Box<[AtomicU64]>,
}

impl SharedFilterCounters {
    /// Zeroed cells for `rules` rule ids.
    pub fn new(rules: usize) -> SharedFilterCounters {
        SharedFilterCounters {
            cells: (0..rules.max(STATIC_RULES))
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    /// Stores a snapshot (called by the owning lcore only, always with the
    /// same `c`): one relaxed store per counter that changed since the last
    /// publish, found through `c`'s dirty bits, which it clears. The other
    /// cells already hold their counter's value. Nothing hit: a look at
    /// 16 words with the default bound.
    pub fn publish(&self, c: &mut FilterCounters) {
        for (wi, summary) in c.dirty_words.iter_mut().enumerate() {
            let mut words = std::mem::take(summary);
            while words != 0 {
                let w = wi * 64 + words.trailing_zeros() as usize;
                words &= words - 1;
                let Some(slot) = c.dirty.get_mut(w) else {
                    break;
                };
                let mut bits = std::mem::take(slot);
                while bits != 0 {
                    let i = w * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    if let (Some(cell), Some(&v)) = (self.cells.get(i), c.hits.get(i)) {
                        cell.store(v, Relaxed);
                    }
                }
            }
        }
    }

    /// The last published values.
    pub fn snapshot(&self) -> FilterSnapshot {
        FilterSnapshot {
            hits: self.cells.iter().map(|c| c.load(Relaxed)).collect(),
        }
    }
}

/// Hit counts by [`RuleId`], from one lcore or summed over several.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterSnapshot {
    /// Hits, indexed by [`RuleId::index`].
    pub hits: Vec<u64>,
}

impl FilterSnapshot {
    /// Hits of `rule` (0 for an unknown id).
    pub fn get(&self, rule: RuleId) -> u64 {
        self.hits.get(rule.index()).copied().unwrap_or(0)
    }

    /// Hits of a static rule.
    pub fn static_hits(&self, rule: StaticRule) -> u64 {
        self.get(rule.id())
    }

    /// Hits of all dynamic (per-transfer) rules together.
    pub fn dynamic_total(&self) -> u64 {
        self.hits.iter().skip(STATIC_RULES).sum()
    }

    /// Adds another lcore's counts.
    pub fn merge(&mut self, other: &FilterSnapshot) {
        if self.hits.len() < other.hits.len() {
            self.hits.resize(other.hits.len(), 0);
        }
        for (a, b) in self.hits.iter_mut().zip(other.hits.iter()) {
            *a += b;
        }
    }
}
