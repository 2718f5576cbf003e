//! Per-rule hit counters: plain `u64`s bumped by one fast-path lcore, copied
//! into atomics when it publishes, summed over lcores by whoever reads them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::{Action, RuleId, StaticRule, STATIC_RULES};

/// Hits per rule, owned by one fast-path lcore; index = [`RuleId`].
///
/// Size it with [`super::FilterWriter::rule_count`]. A dynamic [`RuleId`] is
/// reused after its rule is removed (oldest freed first), so its counter
/// keeps counting across owners: compare snapshots to attribute hits.
#[derive(Debug, Clone)]
pub struct FilterCounters {
    hits: Box<[u64]>,
}

impl FilterCounters {
    /// Zeroed counters for `rules` rule ids.
    pub fn new(rules: usize) -> FilterCounters {
        FilterCounters {
            hits: vec![0; rules.max(STATIC_RULES)].into_boxed_slice(),
        }
    }

    /// Counts a hit of the rule `action` names; [`Action::Forward`] and ids
    /// out of range are ignored. One increment, no atomics.
    #[inline(always)]
    pub fn record(&mut self, action: Action) {
        if let Some(id) = action.rule() {
            if let Some(h) = self.hits.get_mut(id.index()) {
                *h += 1;
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

    /// Stores a snapshot (called by the owning lcore only). One relaxed
    /// store per rule id: ~65,000 of them with the default bound, tens of
    /// microseconds, so call it at the stats period rather than every drain.
    pub fn publish(&self, c: &FilterCounters) {
        for (cell, &v) in self.cells.iter().zip(c.hits.iter()) {
            cell.store(v, Relaxed);
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
