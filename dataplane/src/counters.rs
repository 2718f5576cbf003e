//! Counters: plain integers owned by the fast-path lcore, copied into atomics
//! at each drain tick so other threads can read them without touching the loop.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Per-port counters kept by the bridge (what it received, sent and dropped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Frames received on this port.
    pub rx_packets: u64,
    /// Frames transmitted on this port.
    pub tx_packets: u64,
    /// Frames meant for this port that TX could not send (freed, not leaked).
    pub tx_dropped: u64,
}

/// What the fast path handed to the slow path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedirectCounters {
    /// Copies of forwarded frames put on the redirect ring.
    pub copied: u64,
    /// Trapped frames (not forwarded) put on the redirect ring.
    pub trapped: u64,
    /// Copies dropped because the ring was full (the original was forwarded).
    pub copy_drops: u64,
    /// Trapped frames dropped because the ring was full.
    pub trap_drops: u64,
    /// Frames the slow path injected for transmission.
    pub injected: u64,
}

/// Counters of both sides of the bridge: index 0 is the client side, 1 the server side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeCounters {
    /// Per port, by bridge side.
    pub ports: [PortCounters; 2],
    /// Redirection to the slow path.
    pub redirect: RedirectCounters,
}

/// The published copy of [`BridgeCounters`], readable from any thread.
#[derive(Debug, Default)]
pub struct SharedCounters {
    cells: [[AtomicU64; 3]; 2],
    redirect: [AtomicU64; 5],
}

impl SharedCounters {
    /// Stores a snapshot (called by the fast-path lcore only).
    pub fn publish(&self, c: &BridgeCounters) {
        for (cells, p) in self.cells.iter().zip(c.ports.iter()) {
            let vals = [p.rx_packets, p.tx_packets, p.tx_dropped];
            for (cell, v) in cells.iter().zip(vals) {
                cell.store(v, Relaxed);
            }
        }
        let r = &c.redirect;
        for (cell, v) in
            self.redirect
                .iter()
                .zip([r.copied, r.trapped, r.copy_drops, r.trap_drops, r.injected])
        {
            cell.store(v, Relaxed);
        }
    }

    /// The last published snapshot.
    pub fn snapshot(&self) -> BridgeCounters {
        let mut out = BridgeCounters::default();
        let r: [u64; 5] = std::array::from_fn(|i| self.redirect[i].load(Relaxed));
        out.redirect = RedirectCounters {
            copied: r[0],
            trapped: r[1],
            copy_drops: r[2],
            trap_drops: r[3],
            injected: r[4],
        };
        for (p, cells) in out.ports.iter_mut().zip(self.cells.iter()) {
            let v: [u64; 3] = std::array::from_fn(|i| cells[i].load(Relaxed));
            *p = PortCounters {
                rx_packets: v[0],
                tx_packets: v[1],
                tx_dropped: v[2],
            };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_then_snapshot_round_trips() {
        let shared = SharedCounters::default();
        let mut c = BridgeCounters::default();
        c.ports[0] = PortCounters {
            rx_packets: 1,
            tx_packets: 3,
            tx_dropped: 5,
        };
        c.ports[1] = PortCounters {
            rx_packets: 6,
            tx_packets: 8,
            tx_dropped: 10,
        };
        c.redirect = RedirectCounters {
            copied: 11,
            trapped: 12,
            copy_drops: 13,
            trap_drops: 14,
            injected: 15,
        };
        shared.publish(&c);
        assert_eq!(shared.snapshot(), c);
    }
}
