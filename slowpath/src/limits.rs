//! Resource bounds of the slow path.

use std::time::Duration;

/// Resource bounds; every one that is hit bumps a counter and logs a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Transfers tracked at once; further read requests are ignored (not
    /// followed, not cached) and counted. One client address gets at most
    /// its [`per_source`] share of them.
    pub max_transfers: usize,
    /// Largest file cached, in bytes; a transfer whose data or announced
    /// `tsize` goes past it is discarded.
    pub max_file_size: u64,
    /// Bytes of cached files the cache directory may hold; new files that
    /// would exceed it are refused.
    pub quota_bytes: u64,
    /// A transfer with no packet for this long is dropped (extended to six
    /// times a negotiated TFTP `timeout` when that is longer).
    pub idle_timeout: Duration,
    /// Bounds of the image map (clients, files per client).
    pub image_map: crate::imagemap::Limits,
    /// Bytes per second the background scrub re-hashes cached files at
    /// (0: no scrub).
    pub scrub_rate: u64,
    /// Not a bound, but it travels with them from the configuration: one
    /// cache for every VLAN ([`crate::Filestore::set_share_across_vlans`]).
    /// Off by default.
    pub share_across_vlans: bool,
    /// When a new file evicts the least recently used ones, and down to
    /// what ([`crate::eviction`]).
    pub watermarks: crate::eviction::Watermarks,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_transfers: 1024,
            max_file_size: 4 << 30,
            quota_bytes: 64 << 30,
            idle_timeout: Duration::from_secs(30),
            image_map: crate::imagemap::Limits::default(),
            scrub_rate: 0,
            share_across_vlans: false,
            watermarks: crate::eviction::Watermarks::default(),
        }
    }
}

/// One client address's share of a table of `total` entries keyed by
/// network input: a sixteenth, at least 4 (never more than the table). A
/// host flooding requests fills its own share, not the table every other
/// client needs.
pub fn per_source(total: usize) -> usize {
    (total / 16).max(4).min(total)
}
