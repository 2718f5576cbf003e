//! The redirect rings (figure 4, block 408): frames the filter selects go
//! to the slow path with their side and arrival time, one ring per
//! forwarding lcore. Lock-free and bounded: when a ring is full the copy is
//! dropped and counted, and forwarding goes on.

use std::sync::Mutex;

use dpdk::spsc::{self, Consumer, Producer};
use dpdk::{Burst, Mbuf, Mempool};
use wire::classify::Class;

/// One frame handed to the slow path.
///
/// Aligned to a cache line, so that a ring slot (128 bytes) shares no line
/// with the next one: the fast path prefetches the next slot for writing
/// ([`RedirectTx::prefetch_next`]) while the slow path reads this one.
#[derive(Debug)]
#[repr(align(64))]
pub struct Redirected {
    /// The frame: a copy of a forwarded or trapped frame in a buffer of
    /// the lcore's copy pool (see [`copy_pool`]; a zero-copy clone, or the
    /// trapped frame itself, when there is no pool or it is too long).
    pub mbuf: Mbuf,
    /// Bridge side it arrived on (0: clients, 1: boot server).
    pub side: u8,
    /// TSC at arrival: read when the fast path redirected it, within the
    /// pass that received it.
    pub tsc: u64,
    /// True when the frame was trapped (not forwarded).
    pub trapped: bool,
    /// The filter's classification of the frame, handed over so that the
    /// slow path does not parse the headers again.
    pub class: Class,
}

/// Most bursts of given-back copies freed per call of
/// [`RedirectTx::free_given_back`]: 256 buffers, a few µs, so a large
/// give-back never stalls forwarding for long.
pub const GIVE_BACK_BURSTS: usize = 8;

/// The connection of one forwarding lcore to the slow path, both ways: a
/// bounded ring of redirected frames, and one back for the copies the slow
/// path is done with. Each is single-producer/single-consumer
/// ([`dpdk::spsc`]): its slots are written by one thread only, and the
/// fast path makes a burst's frames visible with one release store.
///
/// Why copies come back: freed by the slow path, a buffer would go to the
/// slow path's mempool cache and reach the forwarding lcore again through
/// the pool's ring, its header last written by the other core: every copy
/// would cost the forwarding lcore cache misses on reuse (measured when
/// copies shared the forwarded frame's buffer: 0.8% of a pcap mix copied
/// cost ~7% of the forwarding rate). Given back and freed by the
/// forwarding lcore in bulk at its housekeeping tick, the buffer stays in
/// that lcore's mempool cache.
pub fn redirect_ring(capacity: usize) -> (RedirectTx, RedirectRx) {
    let (frames_tx, frames_rx) = spsc::channel(capacity);
    let (done_tx, done_rx) = spsc::channel(capacity);
    (
        RedirectTx {
            frames: frames_tx,
            done: done_rx,
        },
        RedirectRx {
            frames: frames_rx,
            done: done_tx,
        },
    )
}

/// The forwarding lcore's end of its redirect ring ([`redirect_ring`]).
#[derive(Debug)]
pub struct RedirectTx {
    frames: Producer<Redirected>,
    done: Consumer<Mbuf>,
}

/// The slow path's end of one forwarding lcore's redirect ring.
#[derive(Debug)]
pub struct RedirectRx {
    frames: Consumer<Redirected>,
    done: Producer<Mbuf>,
}

impl RedirectTx {
    /// Puts a frame on the ring for the slow path, visible at the next
    /// [`RedirectTx::publish`]; gives it back when the ring is full.
    #[inline(always)]
    // The value comes back by value when the ring is full: boxing it would
    // allocate per frame, and the caller only drops it.
    #[allow(clippy::result_large_err)]
    pub fn push(&mut self, r: Redirected) -> Result<(), Redirected> {
        self.frames.push(r)
    }

    /// Makes the frames pushed so far visible to the slow path: a store
    /// fence for the copies' streaming stores ([`dpdk::CopySource::copy`])
    /// and one release store; nothing when nothing was pushed. The bridge
    /// calls it once per pass, before receiving, so the fence finds the
    /// previous pass's copies written out instead of waiting for them.
    #[inline(always)]
    pub fn publish(&mut self) {
        if self.frames.has_unpublished() {
            dpdk::store_fence();
            self.frames.publish();
        }
    }

    /// Frames the ring holds at most (each way).
    pub fn capacity(&self) -> usize {
        self.frames.capacity()
    }

    /// Prefetches the slot the next push writes, for writing (see
    /// [`dpdk::spsc::Producer::prefetch_next`]).
    #[inline(always)]
    pub fn prefetch_next(&self) {
        self.frames.prefetch_next();
    }

    /// Frees what the slow path gave back, up to [`GIVE_BACK_BURSTS`]
    /// bursts, in bulk frees into this lcore's mempool cache; returns how
    /// many.
    ///
    /// Called at the bridge's 100 µs tick: one burst a tick (320,000 a
    /// second) was barely above the copy rate of the bench's pcap mix, so
    /// after each wake-up of the slow path its copies queued here for
    /// milliseconds, and the lcore's mempool cache ran dry and refilled
    /// from the pool's ring with buffers no cache held.
    #[inline]
    pub fn free_given_back(&mut self, buf: &mut Burst) -> usize {
        let mut freed = 0;
        for _ in 0..GIVE_BACK_BURSTS {
            while !buf.is_full() {
                let Some(m) = self.done.pop() else { break };
                // Cannot fail: the buffer is not full.
                drop(buf.push(m));
            }
            if buf.is_empty() {
                break;
            }
            freed += buf.free_all();
        }
        freed
    }
}

impl RedirectRx {
    /// The oldest redirected frame.
    pub fn pop(&mut self) -> Option<Redirected> {
        self.frames.pop()
    }

    /// Frames the ring holds at most (each way).
    pub fn capacity(&self) -> usize {
        self.frames.capacity()
    }

    /// A copy the slow path has read goes back to the lcore that made it,
    /// to be freed there. When that ring is full it is freed here.
    pub fn give_back(&mut self, m: Mbuf) {
        drop(self.done.push(m));
        self.done.publish();
    }
}

/// Longest frame copied into a buffer of the copy pool ([`copy_pool`]);
/// a longer one (jumbo MTU) goes to the slow path as a zero-copy clone.
pub const COPY_ROOM: usize = 2048;

/// The pool a forwarding lcore copies the frames it gives the slow path
/// into, for the lcore on `queue` whose ring holds `capacity` frames; the
/// same pool again for the same queue (a pool lives as long as the
/// process). `None`, with a log line, when there is no memory for it: the
/// lcore then hands over zero-copy clones, as before.
///
/// Why a pool of its own: a zero-copy clone shares its buffer with the
/// forwarded frame, the slow path reads it whole on another CPU, and when
/// the buffer comes round to the PMD again every line it writes must first
/// be taken back from that CPU's cache (on the bench's pcap mix, ~5 cycles
/// a frame over testpmd with 1% copied). A copy written with non-temporal
/// stores keeps the forwarded buffers on this CPU.
pub fn copy_pool(queue: u16, capacity: usize) -> Option<Mempool> {
    static POOLS: Mutex<Vec<(u16, Mempool)>> = Mutex::new(Vec::new());
    let mut pools = POOLS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(&(_, p)) = pools.iter().find(|(q, _)| *q == queue) {
        return Some(p);
    }
    // Every slot of the ring, plus what waits to be freed and the lcore's
    // mempool cache; a power of two less one suits the pool's ring.
    let n = (capacity + 1024).next_power_of_two() - 1;
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    match Mempool::create(
        &format!("bc_copies_{queue}"),
        n,
        256,
        COPY_ROOM as u16 + 128,
        -1,
    ) {
        Ok(p) => {
            pools.push((queue, p));
            Some(p)
        }
        Err(e) => {
            log::warn!(
                "queue {queue}: no pool for copies ({e}): the slow path reads shared buffers"
            );
            None
        }
    }
}

/// A frame the slow path built (a cache hit's answer) for the fast path to send.
#[derive(Debug)]
pub struct Injected {
    /// The frame.
    pub mbuf: Mbuf,
    /// Bridge side to transmit it on (0: towards the clients).
    pub side: u8,
}

/// Bounded lock-free queue from the slow path to the fast path's TX.
pub type InjectRing = crossbeam::queue::ArrayQueue<Injected>;
