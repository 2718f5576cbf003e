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

/// Counters of both sides of the bridge: index 0 is the client side, 1 the server side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeCounters {
    /// Per port, by bridge side.
    pub ports: [PortCounters; 2],
}

/// The published copy of [`BridgeCounters`], readable from any thread.
#[derive(Debug, Default)]
pub struct SharedCounters {
    cells: [[AtomicU64; 3]; 2],
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
    }

    /// The last published snapshot.
    pub fn snapshot(&self) -> BridgeCounters {
        let mut out = BridgeCounters::default();
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
        shared.publish(&c);
        assert_eq!(shared.snapshot(), c);
    }
}
