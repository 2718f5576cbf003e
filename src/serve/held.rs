//! Read requests that wait (for the agent's answer or an origin fetch),
//! kept as their bytes: the receive buffer goes back to the pool at once,
//! so a flood of requests that are never answered cannot drain the pool
//! the ports receive into (a frame of a few hundred bytes instead of a
//! 2 KiB buffer each, and never one the fast path needs).

use std::net::{SocketAddr, SocketAddrV4};

use dataplane::Redirected;
use dpdk::{Mbuf, Mempool};
use wire::frame::{UdpFrameRepr, VlanScope};

/// A trapped frame serving answers: its bytes and the side it came in on.
pub(crate) trait Request {
    /// The whole frame.
    fn data(&self) -> &[u8];
    /// Bridge side it arrived on (0: clients, 1: boot server).
    fn side(&self) -> u8;
}

impl Request for Redirected {
    fn data(&self) -> &[u8] {
        self.mbuf.data()
    }
    fn side(&self) -> u8 {
        self.side
    }
}

/// A read request held while something is asked or fetched.
#[derive(Debug)]
pub(crate) struct HeldRequest {
    frame: Box<[u8]>,
    side: u8,
    tsc: u64,
    /// The requesting client and its VLAN scope (its share of the held
    /// requests; the check for retransmitted requests), parsed once.
    client: SocketAddrV4,
    scope: VlanScope,
}

impl HeldRequest {
    /// Keeps the bytes of the IPv4 UDP request in `r` and frees its buffer;
    /// `None` for anything else.
    pub(crate) fn new(r: Redirected) -> Option<HeldRequest> {
        let (repr, _) = UdpFrameRepr::parse(r.mbuf.data()).ok()?;
        let SocketAddr::V4(client) = repr.src() else {
            return None;
        };
        Some(HeldRequest {
            frame: r.mbuf.data().into(),
            side: r.side,
            tsc: r.tsc,
            client,
            scope: repr.vlan_scope(),
        })
    }

    /// The requesting client's address and port.
    pub(crate) fn client(&self) -> SocketAddrV4 {
        self.client
    }

    /// The VLAN scope the request came on.
    pub(crate) fn scope(&self) -> VlanScope {
        self.scope
    }

    /// The request in a new buffer from `pool`, as it was received (to go
    /// on to the origin); `None` when the pool is empty (the client asks
    /// again).
    pub(crate) fn into_redirected(self, pool: &Mempool) -> Option<Redirected> {
        Some(Redirected {
            mbuf: build_raw(pool, &self.frame)?,
            side: self.side,
            tsc: self.tsc,
            trapped: true,
        })
    }
}

impl Request for HeldRequest {
    fn data(&self) -> &[u8] {
        &self.frame
    }
    fn side(&self) -> u8 {
        self.side
    }
}

/// A copy of `frame` in a new buffer.
pub(super) fn build_raw(pool: &Mempool, frame: &[u8]) -> Option<Mbuf> {
    let mut m = Mbuf::alloc(pool).ok()?;
    m.append(u16::try_from(frame.len()).ok()?)?
        .copy_from_slice(frame);
    Some(m)
}
