//! The poll loop, after DPDK's `examples/l2fwd`: rx burst on each port, queue
//! every frame unchanged for the other port, transmit when a TX buffer fills,
//! and drain partially filled buffers every `drain_us`.
//!
//! The loop touches no frame and no mbuf field: counters are per burst, and
//! byte counts come from the drivers' statistics.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use dpdk::{Burst, Port};

use crate::counters::{BridgeCounters, PortCounters, SharedCounters};

/// Settings of the bridge loop.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Longest time a frame waits in a partly filled TX buffer, in microseconds.
    pub drain_us: u64,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig { drain_us: 100 }
    }
}

/// A two-port bridge: side 0 (clients) ↔ side 1 (boot server).
pub struct Bridge {
    ports: [Port; 2],
    drain_cycles: u64,
    quit: Arc<AtomicBool>,
    shared: Arc<SharedCounters>,
}

impl Bridge {
    /// A bridge between `client` and `server`; it stops when `quit` is set.
    pub fn new(
        client: Port,
        server: Port,
        cfg: &BridgeConfig,
        quit: Arc<AtomicBool>,
        shared: Arc<SharedCounters>,
    ) -> Bridge {
        let drain_cycles = (dpdk::tsc_hz() / 1_000_000).max(1) * cfg.drain_us.max(1);
        Bridge {
            ports: [client, server],
            drain_cycles,
            quit,
            shared,
        }
    }

    /// Runs the loop on the calling lcore until `quit` is set; returns the final counters.
    /// Frames still buffered at the end are sent once more, and what is left dropped and counted.
    pub fn run(&self) -> BridgeCounters {
        let mut c = BridgeCounters::default();
        let mut tx = [Burst::new(), Burst::new()];
        let mut last_drain = dpdk::tsc();
        loop {
            let now = dpdk::tsc();
            if now.wrapping_sub(last_drain) >= self.drain_cycles {
                self.flush_all(&mut tx, &mut c);
                self.shared.publish(&c);
                if self.quit.load(Relaxed) {
                    break;
                }
                last_drain = now;
            }
            // Receive straight into the other port's TX buffer: no per-frame work at all.
            for (side, port) in self.ports.iter().enumerate() {
                let out = side ^ 1;
                let n = port.rx_burst(0, &mut tx[out]);
                c.ports[side].rx_packets += n as u64;
                if tx[out].is_full() {
                    self.flush(out, &mut tx[out], &mut c.ports[out]);
                }
            }
        }
        self.flush_all(&mut tx, &mut c);
        self.shared.publish(&c);
        c
    }

    fn flush_all(&self, tx: &mut [Burst; 2], c: &mut BridgeCounters) {
        for (side, (buf, pc)) in tx.iter_mut().zip(c.ports.iter_mut()).enumerate() {
            self.flush(side, buf, pc);
        }
    }

    /// One tx burst of `buf` on `side`; what the driver does not take is freed and counted.
    #[inline(always)]
    fn flush(&self, side: usize, buf: &mut Burst, c: &mut PortCounters) {
        if buf.is_empty() {
            return;
        }
        c.tx_packets += self.ports[side].tx_burst(0, buf) as u64;
        c.tx_dropped += buf.free_all() as u64;
    }
}
