//! The redirect ring (figure 4, block 408): frames the filter selects go to
//! the slow path with their side and arrival time. Lock-free and bounded:
//! when it is full the copy is dropped and counted, and forwarding goes on.

use dpdk::Mbuf;

/// One frame handed to the slow path.
#[derive(Debug)]
pub struct Redirected {
    /// The frame: a zero-copy clone (refcount) of a forwarded frame, or the
    /// frame itself when it was trapped.
    pub mbuf: Mbuf,
    /// Bridge side it arrived on (0: clients, 1: boot server).
    pub side: u8,
    /// TSC at arrival (the burst's receive time).
    pub tsc: u64,
    /// True when the frame was trapped (not forwarded).
    pub trapped: bool,
}

/// Bounded lock-free queue from the fast-path lcore to the slow path. Only
/// one lcore pushes and one thread pops, so it is used as an SPSC ring.
pub type RedirectRing = crossbeam::queue::ArrayQueue<Redirected>;

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
