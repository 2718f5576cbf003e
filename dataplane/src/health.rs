//! The slow path's heartbeat, watched by the fast path (fail open).
//!
//! The slow path stores the TSC at every pass of its loop; each forwarding
//! lcore reads it once per housekeeping tick (not per frame). When the beat
//! is older than the configured timeout, or the slow path itself asks for it
//! (its cache is unusable: disk full, read-only, a panic being recovered),
//! the fast path goes **forward only**: nothing is copied or trapped, so read
//! requests reach the origin and every frame crosses the bridge, until the
//! slow path beats again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Shared between the slow path (writer) and every forwarding lcore (readers).
#[derive(Debug)]
pub struct SlowPathHealth {
    beat: AtomicU64,
    forward_only: AtomicBool,
}

impl Default for SlowPathHealth {
    fn default() -> Self {
        SlowPathHealth::new()
    }
}

impl SlowPathHealth {
    /// A healthy slow path that beat just now.
    pub fn new() -> SlowPathHealth {
        SlowPathHealth {
            beat: AtomicU64::new(dpdk::tsc()),
            forward_only: AtomicBool::new(false),
        }
    }

    /// The slow path is alive (call once per pass of its loop).
    #[inline]
    pub fn beat(&self) {
        self.beat.store(dpdk::tsc(), Relaxed);
    }

    /// The slow path asks the fast path to forward only (`true`) or to copy
    /// and trap again (`false`).
    pub fn set_forward_only(&self, on: bool) {
        self.forward_only.store(on, Relaxed);
    }

    /// Whether the slow path asked to forward only.
    pub fn forward_only_requested(&self) -> bool {
        self.forward_only.load(Relaxed)
    }

    /// TSC of the last beat.
    pub fn last_beat(&self) -> u64 {
        self.beat.load(Relaxed)
    }

    /// True when the fast path must bypass the slow path at TSC `now`: it
    /// asked to, or has not beaten for `timeout_cycles`.
    #[inline]
    pub fn bypass(&self, now: u64, timeout_cycles: u64) -> bool {
        self.forward_only.load(Relaxed) || now.saturating_sub(self.last_beat()) > timeout_cycles
    }
}
