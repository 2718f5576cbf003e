//! The poll loop, after DPDK's `testpmd` io mode: rx burst on each port
//! straight into the other port's TX buffer, classify the frames that may
//! match the header filter (figure 4), give the slow path a copy (copy) or
//! the frame (trap), and transmit at the end of each poll pass.
//!
//! **No added latency.** A frame never waits for a timer while its port has
//! nothing more to give: a TX buffer is sent at the end of the pass in which
//! its frames arrived, unless the receive side delivered a full burst (it may
//! have more, so coalescing is free) and the oldest frame has waited less
//! than `drain_us` (a cap under load). Injected frames (answers from the
//! cache) are sent in the pass that took them off the inject ring. Lock-step
//! TFTP pays the bridge's delay once per block, so this is the default.
//!
//! **Fail open.** Each housekeeping tick reads the slow path's heartbeat
//! ([`SlowPathHealth`]); when it is stale, or the slow path asked for it, the
//! bridge forwards only: nothing is classified, copied or trapped.
//!
//! Per frame: the filter's first stage ([`crate::filter::Table::may_match`],
//! a few fixed header offsets), and only for candidates one classification
//! and one filter probe; nothing is allocated, locked, logged or written to
//! the frame. Counters are plain integers on this lcore, published to
//! atomics at each housekeeping tick (bridge) and every `publish_ms`
//! (per-rule hits).
//!
//! Measured cost per frame, by stage (main at 4b66fdd, 2026-12-02:
//! instructions from callgrind on the forwarding thread, split by inline
//! chain with `scripts/callgrind-stages`, the housekeeping tick left out;
//! shares of the thread's samples from `scripts/perf-share --stages`,
//! timer-based `perf record -t <forwarding thread>`, this 2-vCPU VM has no
//! hardware counters; README "Forwarding" has the commands):
//!
//! | stage                                    | net_null, server configured | pcap mix, server configured |
//! |------------------------------------------|-----------------------------|-----------------------------|
//! | PMD rx + tx, mempool, TLS (as testpmd)   | 121.8 instr.                | 266.4 instr.                |
//! | first stage: lanes (AVX2, 8 a step), exact answer for candidates | 14.3 instr., 10.6% | 24.7 instr., 7.0% (lanes 4.1, exact 2.1) |
//! | classify + lookup + copy (~1% of frames), the loop, rx/tx calls | 5.7 instr., 4.3% | 12.6 instr., 8.7% (copies 5.6) |
//! | total (testpmd io)                       | 141.8 (124.8) instr.        | 303.9 (269.4) instr.        |
//! | own code's share of the thread (testpmd io) | 15.4% (4.8%)             | 16.3–18.6% (3.4–3.8%)       |
//!
//! The burst loop per frame: the mbuf's data pointer and length, a 46-byte
//! length check (a `cmov` to the `SHORT` stand-in), two 16-byte loads
//! (from byte 12 and byte 26) placed as halves of 256-bit rows, and per
//! eight frames two in-lane AVX2 transposes, ~10 lane compares and one
//! mask (`dpdk::simd::U32x8`, in one function compiled for AVX2 via
//! `dpdk::simd::Avx2::run`; SSE2 four at a time where the CPU has no
//! AVX2): 2–3 ns a frame. Of its 14.3 instructions a frame, 8 are the
//! pointer, length and loads, ~3.4 the lane work, ~3 once per burst. On the
//! pcap mix, IPv6 UDP is decided by the exact answer without classifying.
//! A copy costs ~300 ns of this core: its lines are shared with the slow
//! path's core. The drivers' burst functions are called through
//! `rte_eth_fp_ops` from Rust (the C shim cost 2.0 instructions a frame);
//! per-rule hit counters are published only where they changed.
//!
//! Copies: a zero-copy clone cost ~500 ns of this core's time although its
//! instructions are few: the slow path read the shared buffer whole, and
//! the PMD's next write of it paid for the lines. So a copy is made into a
//! buffer of a pool of its own with non-temporal stores
//! ([`crate::redirect::copy_pool`]; pcap mix 0.68 → 0.73 of testpmd). The
//! hand-over is a single-producer ring per lcore ([`dpdk::spsc`]): a push
//! writes a slot only this lcore writes (whole cache lines, the next one
//! prefetched for writing), and a pass's copies become visible at the start
//! of the next pass with one store fence and one release store (a fence
//! after each copy waited for its streaming stores); the copy's buffer is
//! taken one copy ahead, its header prefetched for writing
//! ([`dpdk::CopySource`]). Crossbeam's multi-producer queue, before the
//! ring, took a locked compare-exchange and a cache miss per copy. Trapped
//! frames are copied too, and freed here at once. Copies are given back
//! and freed here ([`RedirectTx::free_given_back`]) so that their headers
//! stay in this lcore's cache.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use dpdk::{Burst, CopySource, Port};
use wire::classify::{classify, Class};

use crate::counters::{BridgeCounters, PortCounters, SharedCounters};
use crate::filter::{Action, FilterCounters, FilterReader, SharedFilterCounters};
use crate::health::SlowPathHealth;
use crate::redirect::{copy_pool, InjectRing, RedirectTx, Redirected, COPY_ROOM};

/// Settings of the bridge loop.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Longest time a frame waits in a TX buffer while the receive side keeps
    /// delivering full bursts, in microseconds. Frames never wait otherwise.
    pub drain_us: u64,
    /// How often per-rule hit counters are published, in milliseconds.
    pub publish_ms: u64,
    /// The RX and TX queue this lcore polls and sends on, on both ports.
    pub queue: u16,
    /// The TX queue injected frames go out on (only the lcore that owns the
    /// inject ring uses it); the same as `queue` on single-queue ports.
    pub inject_queue: u16,
    /// The slow path counts as stuck when its heartbeat is older than this,
    /// in milliseconds: the bridge then forwards only.
    pub slowpath_timeout_ms: u64,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            drain_us: 100,
            publish_ms: 100,
            queue: 0,
            inject_queue: 0,
            slowpath_timeout_ms: 500,
        }
    }
}

/// Housekeeping (quit flag, heartbeat, counters) runs this often, in µs.
const TICK_US: u64 = 100;

/// The fast path's ends of the slow-path connection (one per lcore).
pub struct SlowPathLink {
    /// The published header filter table.
    pub filter: FilterReader,
    /// Where this lcore's redirected frames go (its end of its own ring).
    pub ring: RedirectTx,
    /// Frames the slow path sends (answers from the cache); only one lcore
    /// takes them.
    pub inject: Option<Arc<InjectRing>>,
    /// Where this lcore's per-rule hits are published.
    pub filter_counters: Arc<SharedFilterCounters>,
    /// Number of rule ids (size of the hit counters).
    pub rule_count: usize,
    /// The slow path's heartbeat.
    pub health: Arc<SlowPathHealth>,
}

/// A two-port bridge on one lcore: side 0 (clients) ↔ side 1 (boot server).
pub struct Bridge {
    ports: [Port; 2],
    queue: u16,
    inject_queue: u16,
    drain_cycles: u64,
    tick_cycles: u64,
    publish_cycles: u64,
    timeout_cycles: u64,
    quit: Arc<AtomicBool>,
    shared: Arc<SharedCounters>,
    link: SlowPathLink,
    copies: Option<CopySource>,
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
        let copies = copy_pool(cfg.queue, link.ring.capacity()).map(CopySource::new);
        Bridge {
            copies,
            ports: [client, server],
            queue: cfg.queue,
            inject_queue: cfg.inject_queue,
            drain_cycles: us * cfg.drain_us.max(1),
            tick_cycles: us * TICK_US,
            publish_cycles: us * 1000 * cfg.publish_ms.max(1),
            timeout_cycles: us * 1000 * cfg.slowpath_timeout_ms.max(1),
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
            queue,
            inject_queue,
            drain_cycles,
            tick_cycles,
            publish_cycles,
            timeout_cycles,
            quit,
            shared,
            mut link,
            mut copies,
        } = self;
        let mut c = BridgeCounters::default();
        let mut hits = FilterCounters::new(link.rule_count);
        let mut tx = [Burst::new(), Burst::new()];
        let mut inject_tx = [Burst::new(), Burst::new()];
        let mut given_back = Burst::new();
        // When each TX buffer's oldest frame arrived, and whether the port
        // that fills it delivered a full burst in this pass.
        let mut since = [0u64; 2];
        let mut more = [false; 2];
        let mut last_tick = dpdk::tsc();
        let mut last_publish = last_tick;
        let mut bypass = false;
        let mut now = last_tick;
        let mut pass = 0u32;
        loop {
            // The TSC every fourth pass: rdtsc costs ~25 cycles on this VM
            // (1.4% of the forwarding thread on net_null, perf), a pass a
            // few µs at most, and `now` only times the drain cap (100 µs)
            // and the housekeeping tick. Redirected frames read their own.
            if pass & 3 == 0 {
                now = dpdk::tsc();
            }
            pass = pass.wrapping_add(1);
            // The previous pass's redirected frames, fenced and published.
            link.ring.publish();
            if now.wrapping_sub(last_tick) >= tick_cycles {
                let b = link.health.bypass(now, timeout_cycles);
                if b && !bypass {
                    c.redirect.bypass_periods += 1;
                }
                bypass = b;
                c.bypassing = b;
                shared.publish(&c);
                link.ring.free_given_back(&mut given_back);
                if now.wrapping_sub(last_publish) >= publish_cycles {
                    link.filter_counters.publish(&mut hits);
                    last_publish = now;
                }
                if quit.load(Relaxed) {
                    break;
                }
                last_tick = now;
            }
            if let Some(inject) = &link.inject {
                // Frames from the slow path (answers from the cache): at most
                // a burst per pass, so they never starve forwarding. Unlike
                // forwarded frames they are not dropped when TX is full: they
                // wait in their own buffer for the next pass, and the inject
                // ring backs up meanwhile, so a serving session is paced by
                // the port instead of losing its window to a full TX queue.
                // `is_empty` first: popping an empty ArrayQueue costs a
                // SeqCst fence, a plain load does not.
                if !inject.is_empty() {
                    let mut popped = 0;
                    while popped < dpdk::BURST_SIZE
                        && !inject_tx[0].is_full()
                        && !inject_tx[1].is_full()
                    {
                        let Some(i) = inject.pop() else { break };
                        popped += 1;
                        c.redirect.injected += 1;
                        // Cannot fail: neither buffer is full.
                        let _ = inject_tx[usize::from(i.side & 1)].push(i.mbuf);
                    }
                }
                for (side, buf) in inject_tx.iter_mut().enumerate() {
                    if !buf.is_empty() {
                        c.ports[side].tx_packets += ports[side].tx_burst(inject_queue, buf) as u64;
                    }
                }
            }
            for (side, port) in ports.iter().enumerate() {
                let out = side ^ 1;
                let start = tx[out].len();
                let room = tx[out].room();
                let n = port.rx_burst(queue, &mut tx[out]);
                more[side] = n > 0 && n == room;
                if n == 0 {
                    continue;
                }
                if start == 0 {
                    since[out] = now;
                }
                c.ports[side].rx_packets += n as u64;
                if bypass {
                    c.redirect.bypassed += n as u64;
                } else {
                    redirect_burst(
                        side,
                        start,
                        &mut tx[out],
                        &mut link,
                        copies.as_mut(),
                        &mut hits,
                        &mut c,
                    );
                }
                if tx[out].is_full() {
                    flush(ports[out], queue, &mut tx[out], &mut c.ports[out]);
                }
            }
            // End of the pass: send what arrived unless its port may have
            // more and the oldest frame is still young.
            for out in 0..2 {
                if !tx[out].is_empty()
                    && (!more[out ^ 1] || now.wrapping_sub(since[out]) >= drain_cycles)
                {
                    flush(ports[out], queue, &mut tx[out], &mut c.ports[out]);
                }
            }
        }
        link.ring.publish();
        flush_all(&ports, queue, &mut tx, &mut c);
        flush_all(&ports, inject_queue, &mut inject_tx, &mut c);
        shared.publish(&c);
        link.filter_counters.publish(&mut hits);
        c
    }
}

/// The filter's work on the frames a burst added to `buf` from index
/// `start`: copies go on the redirect ring (the original stays), trapped
/// frames move there.
///
/// Two passes, so that the common burst (nothing to redirect) costs only
/// the first stage: run the filter's first stage
/// ([`crate::filter::Table::may_match`]) over the burst into a bitmask;
/// then, only for the candidates, classify and look up. Only a trap moves
/// frames out of the TX buffer.
///
/// No software prefetch: every PMD here (net_null, net_pcap, af_packet,
/// virtio-user) hands over frames it just wrote or copied, so their first
/// line is in cache, and prefetching the burst cost 6% of the net_null rate
/// (0.77 vs 0.82 of testpmd). The loads of the first stage are independent
/// from frame to frame, so where a NIC's DMA left them in memory the core
/// overlaps the misses.
#[inline(always)]
fn redirect_burst(
    side: usize,
    start: usize,
    buf: &mut Burst,
    link: &mut SlowPathLink,
    mut copies: Option<&mut CopySource>,
    hits: &mut FilterCounters,
    c: &mut BridgeCounters,
) {
    let table = link.filter.load();
    let ring = &mut link.ring;
    let frames = buf.as_slice().get(start..).unwrap_or_default();
    // A burst holds at most 32 frames (dpdk::BURST_SIZE): one bit each.
    let candidates = table.may_match_burst(side, frames, |m| m.data());
    if candidates == 0 {
        return;
    }
    let r = &mut c.redirect;
    // Arrival time for the slow path (it merges the lcores' rings by it):
    // read at the first frame redirected, not once per pass or burst.
    let mut stamp = None;
    let mut traps = 0u32;
    // Classes of the trapped frames, handed over with them (filled only
    // when a burst traps something: trapped frames are rare).
    let mut trapped: Option<[Class; 32]> = None;
    let mut rest = candidates;
    while rest != 0 {
        let i = rest.trailing_zeros() as usize;
        rest &= rest - 1;
        let Some(m) = frames.get(i) else { break };
        let class = classify(m.data());
        let action = table.lookup(side, &class);
        hits.record(action);
        match action {
            Action::Forward => {}
            Action::Copy(_) => {
                // A copy in a buffer of its own (see `copy_pool`); none
                // when that pool is empty, counted as a dropped copy.
                let mbuf = match copies.as_deref_mut() {
                    Some(pool) if m.data().len() <= COPY_ROOM => pool.copy(m),
                    _ => Some(m.share()),
                };
                let Some(mbuf) = mbuf else {
                    r.copy_drops += 1;
                    continue;
                };
                let copy = Redirected {
                    mbuf,
                    side: side as u8,
                    tsc: *stamp.get_or_insert_with(dpdk::tsc),
                    trapped: false,
                    class,
                };
                match ring.push(copy) {
                    Ok(()) => r.copied += 1,
                    Err(_) => r.copy_drops += 1,
                }
            }
            Action::Trap(_) => {
                traps |= 1 << i;
                trapped.get_or_insert([Class::EMPTY; 32])[i] = class;
            }
        }
    }
    if let Some(classes) = trapped {
        trap(side, start, buf, ring, copies, traps, &classes, stamp, r);
    }
    // What this burst pushed becomes visible to the slow path at the start
    // of the next pass (`RedirectTx::publish`); the next push's slot is
    // fetched meanwhile.
    ring.prefetch_next();
}

/// Moves the frames of `buf` (from `start`) whose bit is set in `traps` to
/// the slow path: their copies in the copy pool go on the ring and the
/// frames themselves are freed, so that a flood of trapped frames waiting
/// for the slow path pins buffers of the copy pool, never of the pool the
/// receive queues fill from. Without a copy pool (or for a frame longer
/// than [`COPY_ROOM`]) the frame itself goes. Cold: trapped frames are rare.
#[cold]
#[allow(clippy::too_many_arguments)]
fn trap(
    side: usize,
    start: usize,
    buf: &mut Burst,
    ring: &mut RedirectTx,
    mut copies: Option<&mut CopySource>,
    traps: u32,
    classes: &[Class; 32],
    stamp: Option<u64>,
    r: &mut crate::counters::RedirectCounters,
) {
    let now = stamp.unwrap_or_else(dpdk::tsc);
    let mut i = 0u32;
    // Index of the frame `extract_from` hands over next (they come in order).
    let mut next = traps;
    buf.extract_from(
        start,
        |_, _| {
            let take = traps >> (i & 31) & 1 != 0;
            i += 1;
            take
        },
        |m| {
            let k = next.trailing_zeros() as usize;
            next &= next.wrapping_sub(1);
            let mbuf = match copies.as_deref_mut() {
                Some(pool) if m.data().len() <= COPY_ROOM => match pool.copy(&m) {
                    Some(c) => c,
                    None => {
                        // Pool empty: like a full ring, the frame is lost
                        // (the client asks again).
                        r.trap_drops += 1;
                        return;
                    }
                },
                _ => m,
            };
            match ring.push(Redirected {
                mbuf,
                side: side as u8,
                tsc: now,
                trapped: true,
                class: classes.get(k).copied().unwrap_or(Class::EMPTY),
            }) {
                Ok(()) => r.trapped += 1,
                Err(_) => r.trap_drops += 1,
            }
        },
    );
}

fn flush_all(ports: &[Port; 2], queue: u16, tx: &mut [Burst; 2], c: &mut BridgeCounters) {
    for ((port, buf), pc) in ports.iter().zip(tx.iter_mut()).zip(c.ports.iter_mut()) {
        flush(*port, queue, buf, pc);
    }
}

/// One tx burst of `buf`; what the driver does not take is freed and counted.
#[inline(always)]
fn flush(port: Port, queue: u16, buf: &mut Burst, c: &mut PortCounters) {
    if buf.is_empty() {
        return;
    }
    c.tx_packets += port.tx_burst(queue, buf) as u64;
    c.tx_dropped += buf.free_all() as u64;
}
