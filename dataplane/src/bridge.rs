//! The poll loop, after DPDK's `examples/l2fwd`: rx burst on each port into
//! the other port's TX buffer, classify each new frame and look it up in the
//! header filter (figure 4), give the slow path a zero-copy clone (copy) or
//! the frame itself (trap), transmit when a TX buffer fills, and drain
//! partially filled buffers every `drain_us`.
//!
//! Per frame: a prefetch of the next frame, one classification (~6 ns) and at
//! most one filter probe; nothing is allocated, locked, logged or written to
//! the frame. Counters are plain integers on this lcore, published to atomics
//! at the drain tick (bridge) and every `publish_ms` (per-rule hits).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use dpdk::{Burst, Port};
use wire::classify::classify;

use crate::counters::{BridgeCounters, PortCounters, SharedCounters};
use crate::filter::{Action, FilterCounters, FilterReader, SharedFilterCounters};
use crate::redirect::{InjectRing, RedirectRing, Redirected};

/// Settings of the bridge loop.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Longest time a frame waits in a partly filled TX buffer, in microseconds.
    pub drain_us: u64,
    /// How often per-rule hit counters are published, in milliseconds.
    pub publish_ms: u64,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            drain_us: 100,
            publish_ms: 100,
        }
    }
}

/// The fast path's ends of the slow-path connection.
pub struct SlowPathLink {
    /// The published header filter table.
    pub filter: FilterReader,
    /// Where redirected frames go.
    pub ring: Arc<RedirectRing>,
    /// Frames the slow path sends (answers from the cache).
    pub inject: Arc<InjectRing>,
    /// Where per-rule hits are published.
    pub filter_counters: Arc<SharedFilterCounters>,
    /// Number of rule ids (size of the hit counters).
    pub rule_count: usize,
}

/// A two-port bridge: side 0 (clients) ↔ side 1 (boot server).
pub struct Bridge {
    ports: [Port; 2],
    drain_cycles: u64,
    publish_cycles: u64,
    quit: Arc<AtomicBool>,
    shared: Arc<SharedCounters>,
    link: SlowPathLink,
}

impl Bridge {
    /// A bridge between `client` and `server`; it stops when `quit` is set.
    pub fn new(
        client: Port,
        server: Port,
        cfg: &BridgeConfig,
        quit: Arc<AtomicBool>,
        shared: Arc<SharedCounters>,
        link: SlowPathLink,
    ) -> Bridge {
        let us = (dpdk::tsc_hz() / 1_000_000).max(1);
        Bridge {
            ports: [client, server],
            drain_cycles: us * cfg.drain_us.max(1),
            publish_cycles: us * 1000 * cfg.publish_ms.max(1),
            quit,
            shared,
            link,
        }
    }

    /// Runs the loop on the calling lcore until `quit` is set; returns the final counters.
    /// Frames still buffered at the end are sent once more, and what is left dropped and counted.
    pub fn run(self) -> BridgeCounters {
        let Bridge {
            ports,
            drain_cycles,
            publish_cycles,
            quit,
            shared,
            mut link,
        } = self;
        let mut c = BridgeCounters::default();
        let mut hits = FilterCounters::new(link.rule_count);
        let mut tx = [Burst::new(), Burst::new()];
        let mut inject_tx = [Burst::new(), Burst::new()];
        let mut last_drain = dpdk::tsc();
        let mut last_publish = last_drain;
        loop {
            let now = dpdk::tsc();
            if now.wrapping_sub(last_drain) >= drain_cycles {
                flush_all(&ports, &mut tx, &mut c);
                shared.publish(&c);
                if now.wrapping_sub(last_publish) >= publish_cycles {
                    link.filter_counters.publish(&hits);
                    last_publish = now;
                }
                if quit.load(Relaxed) {
                    break;
                }
                last_drain = now;
            }
            // Frames from the slow path (answers from the cache): at most a
            // burst per pass, so they never starve forwarding. Unlike
            // forwarded frames they are not dropped when TX is full: they
            // wait in their own buffer for the next pass, and the inject
            // ring backs up meanwhile, so a serving session is paced by the
            // port instead of losing its window to a full TX queue.
            let mut popped = 0;
            while popped < dpdk::BURST_SIZE && !inject_tx[0].is_full() && !inject_tx[1].is_full() {
                let Some(i) = link.inject.pop() else { break };
                popped += 1;
                c.redirect.injected += 1;
                // Cannot fail: neither buffer is full.
                let _ = inject_tx[usize::from(i.side & 1)].push(i.mbuf);
            }
            for (side, buf) in inject_tx.iter_mut().enumerate() {
                if !buf.is_empty() {
                    c.ports[side].tx_packets += ports[side].tx_burst(0, buf) as u64;
                }
            }
            for (side, port) in ports.iter().enumerate() {
                let out = side ^ 1;
                let start = tx[out].len();
                let n = port.rx_burst(0, &mut tx[out]);
                if n == 0 {
                    continue;
                }
                c.ports[side].rx_packets += n as u64;
                let table = link.filter.load();
                let ring = &*link.ring;
                let r = &mut c.redirect;
                let (mut copied, mut copy_drops, mut trapped, mut trap_drops) =
                    (0u64, 0u64, 0u64, 0u64);
                if let Some(first) = tx[out].as_slice().get(start) {
                    first.prefetch_data();
                }
                tx[out].extract_from(
                    start,
                    |m, next| {
                        if let Some(nx) = next {
                            nx.prefetch_data();
                        }
                        let action = table.lookup(side, &classify(m.data()));
                        hits.record(action);
                        match action {
                            Action::Forward => false,
                            Action::Copy(_) => {
                                let copy = Redirected {
                                    mbuf: m.share(),
                                    side: side as u8,
                                    tsc: now,
                                    trapped: false,
                                };
                                match ring.push(copy) {
                                    Ok(()) => copied += 1,
                                    Err(_) => copy_drops += 1,
                                }
                                false
                            }
                            Action::Trap(_) => true,
                        }
                    },
                    |m| match ring.push(Redirected {
                        mbuf: m,
                        side: side as u8,
                        tsc: now,
                        trapped: true,
                    }) {
                        Ok(()) => trapped += 1,
                        Err(_) => trap_drops += 1,
                    },
                );
                r.copied += copied;
                r.copy_drops += copy_drops;
                r.trapped += trapped;
                r.trap_drops += trap_drops;
                if tx[out].is_full() {
                    flush(ports[out], &mut tx[out], &mut c.ports[out]);
                }
            }
        }
        flush_all(&ports, &mut tx, &mut c);
        flush_all(&ports, &mut inject_tx, &mut c);
        shared.publish(&c);
        link.filter_counters.publish(&hits);
        c
    }
}

fn flush_all(ports: &[Port; 2], tx: &mut [Burst; 2], c: &mut BridgeCounters) {
    for ((port, buf), pc) in ports.iter().zip(tx.iter_mut()).zip(c.ports.iter_mut()) {
        flush(*port, buf, pc);
    }
}

/// One tx burst of `buf`; what the driver does not take is freed and counted.
#[inline(always)]
fn flush(port: Port, buf: &mut Burst, c: &mut PortCounters) {
    if buf.is_empty() {
        return;
    }
    c.tx_packets += port.tx_burst(0, buf) as u64;
    c.tx_dropped += buf.free_all() as u64;
}
