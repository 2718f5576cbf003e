//! A bounded single-producer/single-consumer ring of values, for handing
//! frames from one forwarding lcore to the slow path (and back).
//!
//! Why not crossbeam's `ArrayQueue`: it is multi-producer, so every push
//! takes a locked compare-exchange on the tail and reads the slot's stamp,
//! a line the consumer wrote last (a cache miss per value). Here the slots
//! are written only by the one producer; it reads the consumer's index only
//! when its cached copy says the ring looks full, and makes what it pushed
//! visible with one release store of the tail ([`Producer::publish`]), per
//! burst rather than per value. The consumer likewise reads the tail only
//! when its cached copy says the ring looks empty.
//!
//! Why not DPDK's `rte_ring` (created SP/SC): it holds pointers, and a
//! redirected frame is a value of ~90 bytes (the mbuf, side, arrival time,
//! classification); carrying that through pointers would need a second pool
//! of records or the mbuf's private area. A ring of values is also safe to
//! use from code without `unsafe`, and is the same few loads and stores.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::sync::Arc;

/// A value on a line of its own (two lines: x86 fetches lines in pairs), so
/// that the producer's and the consumer's indices never share one.
#[repr(align(128))]
struct Padded(AtomicUsize);

struct Shared<T> {
    /// Count of values the consumer has taken (written by the consumer).
    head: Padded,
    /// Count of values the producer has published (written by the producer).
    tail: Padded,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
}

// SAFETY: a slot is accessed by one thread at a time: the producer writes
// slots in `[tail, head + capacity)`, which the consumer never reads, and the
// consumer reads slots in `[head, tail)`, which the producer never writes;
// the release/acquire pairs on `tail` and `head` order those accesses. So
// sharing `Shared` only moves `T` values between the two threads: `T: Send`
// is enough.
unsafe impl<T: Send> Sync for Shared<T> {}
// SAFETY: as above; `Shared` owns the `T`s it holds.
unsafe impl<T: Send> Send for Shared<T> {}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Both ends are gone (this is the last `Arc`), and the producer
        // published everything it pushed when it was dropped.
        let head = self.head.0.load(Relaxed);
        let tail = self.tail.0.load(Relaxed);
        let mut i = head;
        while i != tail {
            let slot = self.slots[i & self.mask].get();
            // SAFETY: slots in `[head, tail)` hold values published by the
            // producer and not taken by the consumer; each is dropped once.
            unsafe { (*slot).assume_init_drop() };
            i = i.wrapping_add(1);
        }
    }
}

/// The producing end of a ring made by [`channel`].
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    /// Count of values pushed (published or not).
    tail: usize,
    /// The tail as last published.
    published: usize,
    /// The consumer's head as last read.
    head: usize,
}

/// The consuming end of a ring made by [`channel`].
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    /// Count of values taken.
    head: usize,
    /// The producer's tail as last read.
    tail: usize,
}

/// A ring of at least `capacity` values (rounded up to a power of two, at
/// least 1): the producing end for one thread, the consuming end for another.
pub fn channel<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let cap = capacity.max(1).next_power_of_two();
    let slots = (0..cap)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    let shared = Arc::new(Shared {
        head: Padded(AtomicUsize::new(0)),
        tail: Padded(AtomicUsize::new(0)),
        slots,
        mask: cap - 1,
    });
    (
        Producer {
            shared: Arc::clone(&shared),
            tail: 0,
            published: 0,
            head: 0,
        },
        Consumer {
            shared,
            head: 0,
            tail: 0,
        },
    )
}

impl<T> Producer<T> {
    /// Puts `v` in the ring, not yet visible to the consumer (see
    /// [`Producer::publish`]); gives it back when the ring is full.
    #[inline(always)]
    pub fn push(&mut self, v: T) -> Result<(), T> {
        let cap = self.shared.mask + 1;
        if self.tail.wrapping_sub(self.head) >= cap {
            // Looks full: only now read what the consumer has taken.
            self.head = self.shared.head.0.load(Acquire);
            if self.tail.wrapping_sub(self.head) >= cap {
                return Err(v);
            }
        }
        let slot = self.shared.slots[self.tail & self.shared.mask].get();
        // SAFETY: the slot is outside `[head, tail)` as the consumer last
        // published `head` (acquire above, or earlier), so the consumer has
        // finished reading it and will not read it before the tail passes
        // it; only this producer writes slots. It holds no value (taken or
        // never written), so nothing is overwritten without a drop.
        unsafe { (*slot).write(v) };
        self.tail = self.tail.wrapping_add(1);
        Ok(())
    }

    /// Makes every value pushed so far visible to the consumer: one release
    /// store, nothing when there is nothing new.
    #[inline(always)]
    pub fn publish(&mut self) {
        if self.published != self.tail {
            self.shared.tail.0.store(self.tail, Release);
            self.published = self.tail;
        }
    }

    /// True when values were pushed since the last [`Producer::publish`].
    #[inline(always)]
    pub fn has_unpublished(&self) -> bool {
        self.published != self.tail
    }

    /// Values the ring holds at most.
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// Prefetches the slot the next push writes, for writing. The consumer
    /// last read that slot's lines on its own core; without this the next
    /// push waits for them (with 1% of frames copied, the stores of the
    /// push were 1.3% of the forwarding thread on the pcap mix, perf).
    /// Worth it for slots of whole cache lines (`T` aligned to 64), which
    /// no other slot shares.
    #[inline(always)]
    pub fn prefetch_next(&self) {
        let slot = self.shared.slots[self.tail & self.shared.mask].get();
        let base = slot as *const u8;
        let mut off = 0;
        while off < std::mem::size_of::<T>() {
            crate::prefetch_write(base.wrapping_add(off));
            off += 64;
        }
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        // What was pushed is then dropped with the ring, or taken.
        self.publish();
    }
}

impl<T> Consumer<T> {
    /// The oldest published value, if any.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        if self.head == self.tail {
            // Looks empty: only now read what the producer has published.
            self.tail = self.shared.tail.0.load(Acquire);
            if self.head == self.tail {
                return None;
            }
        }
        let slot = self.shared.slots[self.head & self.shared.mask].get();
        // SAFETY: the slot is in `[head, tail)`: the producer wrote it before
        // its release store of a tail past it, which the acquire load above
        // (or an earlier one) saw, and will not write it again before this
        // consumer's release store of `head` past it below. The value is
        // moved out once: `head` moves past the slot.
        let v = unsafe { (*slot).assume_init_read() };
        self.head = self.head.wrapping_add(1);
        self.shared.head.0.store(self.head, Release);
        Some(v)
    }

    /// True when no published value is waiting (reads the producer's tail).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.head == self.shared.tail.0.load(Acquire)
    }

    /// Values the ring holds at most.
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }
}

impl<T> std::fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.capacity())
            .field("pushed", &self.tail)
            .field("published", &self.published)
            .finish()
    }
}

impl<T> std::fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.capacity())
            .field("taken", &self.head)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;
    use std::sync::atomic::AtomicUsize;

    /// Counts its drops, to check that no value is dropped twice or leaked.
    #[derive(Debug)]
    struct Counted(u64, Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_add(1, Relaxed);
        }
    }

    #[test]
    fn capacity_rounds_up_to_a_power_of_two() {
        assert_eq!(channel::<u8>(0).0.capacity(), 1);
        assert_eq!(channel::<u8>(1).0.capacity(), 1);
        assert_eq!(channel::<u8>(5).1.capacity(), 8);
        assert_eq!(channel::<u8>(4096).1.capacity(), 4096);
    }

    #[test]
    fn full_and_empty_edges() {
        let (mut p, mut c) = channel(4);
        assert_eq!(c.pop(), None);
        assert!(c.is_empty());
        assert!(!p.has_unpublished());
        for i in 0..4 {
            p.push(i).unwrap();
            p.prefetch_next();
        }
        assert!(p.has_unpublished());
        // Full: the value comes back, nothing is overwritten.
        assert_eq!(p.push(99), Err(99));
        // Not published yet: the consumer sees nothing.
        assert_eq!(c.pop(), None);
        p.publish();
        assert!(!p.has_unpublished());
        assert!(!c.is_empty());
        assert_eq!(c.pop(), Some(0));
        // One slot free again, once the producer re-reads the head.
        p.push(4).unwrap();
        assert_eq!(p.push(100), Err(100));
        p.publish();
        assert_eq!(
            (1..=4).map(|_| c.pop().unwrap()).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert_eq!(c.pop(), None);
        assert!(c.is_empty());
    }

    #[test]
    fn wraps_around_many_times() {
        let (mut p, mut c) = channel(8);
        let mut next = 0u64;
        for i in 0..10_000u64 {
            p.push(i).unwrap();
            if i % 3 == 0 {
                p.publish();
                while let Some(v) = c.pop() {
                    assert_eq!(v, next);
                    next += 1;
                }
            }
        }
        p.publish();
        while let Some(v) = c.pop() {
            assert_eq!(v, next);
            next += 1;
        }
        assert_eq!(next, 10_000);
    }

    #[test]
    fn values_left_in_the_ring_are_dropped_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut p, mut c) = channel(8);
        for i in 0..6 {
            p.push(Counted(i, Arc::clone(&drops))).unwrap();
        }
        p.publish();
        drop(c.pop());
        drop(c.pop());
        assert_eq!(drops.load(Relaxed), 2);
        // Two more pushed but never published: the producer's drop
        // publishes them, so the ring drops them too.
        p.push(Counted(6, Arc::clone(&drops))).unwrap();
        drop(p);
        assert_eq!(drops.load(Relaxed), 2);
        drop(c);
        assert_eq!(drops.load(Relaxed), 7);
    }

    /// Two threads: every value arrives once, in order, whatever the
    /// capacity and burst size; the producer spins when full.
    fn two_threads(cap: usize, burst: usize, n: u64) {
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut p, mut c) = channel(cap);
        let d = Arc::clone(&drops);
        let producer = std::thread::spawn(move || {
            // A value the full ring gave back, pushed again next time.
            let mut held: Option<Counted> = None;
            let mut i = 0;
            while i < n {
                for _ in 0..burst {
                    if i == n {
                        break;
                    }
                    let v = held.take().unwrap_or_else(|| Counted(i, Arc::clone(&d)));
                    match p.push(v) {
                        Ok(()) => i += 1,
                        Err(v) => {
                            held = Some(v);
                            break;
                        }
                    }
                }
                p.publish();
                if held.is_some() {
                    // Full: let the consumer run (the two threads may
                    // share a CPU on a loaded machine).
                    std::thread::yield_now();
                }
            }
        });
        let mut next = 0u64;
        while next < n {
            match c.pop() {
                Some(v) => {
                    assert_eq!(v.0, next, "out of order");
                    next += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert_eq!(c.pop().map(|v| v.0), None, "more values than sent");
        drop(c);
        assert_eq!(drops.load(Relaxed), n as usize, "drops");
    }

    #[test]
    fn two_threads_small_ring_keep_order_and_count() {
        two_threads(2, 32, 20_000);
    }

    #[test]
    fn two_threads_large_ring_keep_order_and_count() {
        two_threads(4096, 32, 200_000);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u8),
        Publish,
        Pop(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u8..40).prop_map(Op::Push),
            Just(Op::Publish),
            (1u8..40).prop_map(Op::Pop),
        ]
    }

    proptest! {
        /// Against a model: a queue of published values and a count of
        /// unpublished ones; a push fails exactly when pushed-but-not-taken
        /// reaches the capacity.
        #[test]
        fn behaves_like_a_bounded_queue(cap in 1usize..20, ops in proptest::collection::vec(op(), 1..200)) {
            let (mut p, mut c) = channel(cap);
            let cap = p.capacity();
            let mut visible: VecDeque<u64> = VecDeque::new();
            let mut pending: VecDeque<u64> = VecDeque::new();
            let mut next = 0u64;
            for op in ops {
                match op {
                    Op::Push(k) => for _ in 0..k {
                        let r = p.push(next);
                        if visible.len() + pending.len() == cap {
                            prop_assert_eq!(r, Err(next));
                        } else {
                            prop_assert_eq!(r, Ok(()));
                            pending.push_back(next);
                        }
                        next += 1;
                    },
                    Op::Publish => {
                        p.publish();
                        visible.extend(pending.drain(..));
                    }
                    Op::Pop(k) => for _ in 0..k {
                        prop_assert_eq!(c.pop(), visible.pop_front());
                    },
                }
                prop_assert_eq!(c.is_empty(), visible.is_empty());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Two threads with random capacities and bursts.
        #[test]
        fn two_threads_any_shape(cap in 1usize..64, burst in 1usize..40) {
            two_threads(cap, burst, 5_000);
        }
    }
}
