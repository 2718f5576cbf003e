//! Counters: plain integers owned by the fast-path lcore, copied into atomics
//! at each drain tick so other threads can read them without touching the loop.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

bootcache_metrics::counters! {
    /// Per-port counters kept by the bridge (what it received, sent and dropped).
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct PortCounters {
        /// Frames the bridge received on this port.
        #[metric(Counter None "port_rx_frames" "rx")]
        pub rx_packets: u64,
        /// Frames the bridge transmitted on this port.
        #[metric(Counter None "port_tx_frames" "tx")]
        pub tx_packets: u64,
        /// Frames meant for this port that TX could not send (freed, not leaked).
        #[metric(Counter None "port_tx_dropped_frames" "drop")]
        pub tx_dropped: u64,
    }
}

bootcache_metrics::counters! {
    /// What the fast path handed to the slow path.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct RedirectCounters {
        /// Copies of forwarded frames put on the redirect ring.
        #[metric(Counter None "redirect_copied_frames" "copied")]
        pub copied: u64,
        /// Trapped frames (not forwarded) put on the redirect ring.
        #[metric(Counter None "redirect_trapped_frames" "trapped")]
        pub trapped: u64,
        /// Copies dropped because the ring was full or the copy pool empty
        /// (the original was forwarded).
        #[metric(Counter None "redirect_copy_dropped_frames" "copy_drops")]
        pub copy_drops: u64,
        /// Trapped frames dropped because the ring was full.
        #[metric(Counter None "redirect_trap_dropped_frames" "trap_drops")]
        pub trap_drops: u64,
        /// Frames the slow path injected for transmission.
        #[metric(Counter None "redirect_injected_frames" "injected")]
        pub injected: u64,
        /// Times the fast path started bypassing the slow path (its heartbeat
        /// stopped, or it asked to forward only).
        #[metric(Counter None "failopen_bypass_periods" "bypass_periods")]
        pub bypass_periods: u64,
        /// Frames forwarded without looking at the filter while bypassing.
        #[metric(Counter None "failopen_bypassed_frames" "bypassed")]
        pub bypassed: u64,
    }
}

/// Counters of both sides of the bridge: index 0 is the client side, 1 the server side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeCounters {
    /// Per port, by bridge side.
    pub ports: [PortCounters; 2],
    /// Redirection to the slow path.
    pub redirect: RedirectCounters,
    /// True while the fast path bypasses the slow path (forward only).
    pub bypassing: bool,
}

impl BridgeCounters {
    /// Adds another lcore's counters (per-lcore counters are summed when read).
    pub fn add(&mut self, o: &BridgeCounters) {
        for (p, q) in self.ports.iter_mut().zip(o.ports.iter()) {
            p.rx_packets += q.rx_packets;
            p.tx_packets += q.tx_packets;
            p.tx_dropped += q.tx_dropped;
        }
        let (r, s) = (&mut self.redirect, &o.redirect);
        r.copied += s.copied;
        r.trapped += s.trapped;
        r.copy_drops += s.copy_drops;
        r.trap_drops += s.trap_drops;
        r.injected += s.injected;
        r.bypass_periods += s.bypass_periods;
        r.bypassed += s.bypassed;
        self.bypassing |= o.bypassing;
    }

    /// The sum of several lcores' counters.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a BridgeCounters>) -> BridgeCounters {
        let mut out = BridgeCounters::default();
        for c in all {
            out.add(c);
        }
        out
    }
}

/// The published copy of [`BridgeCounters`], readable from any thread.
#[derive(Debug, Default)]
pub struct SharedCounters {
    cells: [[AtomicU64; 3]; 2],
    redirect: [AtomicU64; 7],
    bypassing: std::sync::atomic::AtomicBool,
    ticks: AtomicU64,
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
        let vals = [
            r.copied,
            r.trapped,
            r.copy_drops,
            r.trap_drops,
            r.injected,
            r.bypass_periods,
            r.bypassed,
        ];
        for (cell, v) in self.redirect.iter().zip(vals) {
            cell.store(v, Relaxed);
        }
        self.bypassing.store(c.bypassing, Relaxed);
        self.ticks.fetch_add(1, Relaxed);
    }

    /// Publishes so far: it advances while the lcore's loop runs (the
    /// liveness systemd's watchdog follows).
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Relaxed)
    }

    /// The last published snapshot.
    pub fn snapshot(&self) -> BridgeCounters {
        let mut out = BridgeCounters::default();
        let r: [u64; 7] = std::array::from_fn(|i| self.redirect[i].load(Relaxed));
        out.redirect = RedirectCounters {
            copied: r[0],
            trapped: r[1],
            copy_drops: r[2],
            trap_drops: r[3],
            injected: r[4],
            bypass_periods: r[5],
            bypassed: r[6],
        };
        out.bypassing = self.bypassing.load(Relaxed);
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
            bypass_periods: 16,
            bypassed: 17,
        };
        c.bypassing = true;
        shared.publish(&c);
        assert_eq!(shared.snapshot(), c);
    }

    #[test]
    fn lcores_sum() {
        let mut a = BridgeCounters::default();
        a.ports[0].rx_packets = 2;
        a.redirect.copied = 3;
        let mut b = a;
        b.ports[1].tx_dropped = 4;
        b.bypassing = true;
        let s = BridgeCounters::sum([&a, &b]);
        assert_eq!(s.ports[0].rx_packets, 4);
        assert_eq!(s.ports[1].tx_dropped, 4);
        assert_eq!(s.redirect.copied, 6);
        assert!(s.bypassing);
    }
}
