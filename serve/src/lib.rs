//! bootcache's serving endpoint, sans-I/O (see quinn-proto): what answers
//! TFTP read requests from the cache, and in addressed mode fetches misses
//! from the origin.
//!
//! - [`endpoint::Endpoint`]: owns every serving session, held request and
//!   fetch. Inputs are trapped frames (already classified by the fast path)
//!   and time; outputs are polled: frames to send (described, built by the
//!   driver), filter updates, questions for the validator, events, and the
//!   next timeout.
//! - [`tftp_server`]: the TFTP server session that serves one cache hit.
//! - [`tftp_client`]: the TFTP client session that fetches a miss from the
//!   origin (addressed mode).
//! - [`arp`]: ARP for addressed mode's own address.
//! - [`FilterUpdate`]: the header-filter changes the tracker and serving ask
//!   for.
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

use std::net::{Ipv4Addr, SocketAddrV4};

use wire::frame::VlanScope;

pub mod arp;
pub mod endpoint;
pub mod tftp_client;
pub mod tftp_server;

/// Header-filter rule changes the fast path needs for the transfers tracked.
///
/// The filter holds at most one dynamic rule per (VLAN scope, server IP,
/// client): `Expect`, `Pin` and `Trap` replace its rule, `Remove` deletes it.
/// The tracker asks for copies (`Expect`, `Pin`); serving a cache hit asks
/// for a trap (`Trap`) so that the client's ACKs come to its session only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterUpdate {
    /// Copy frames from `server` (any port) to `client`, and back: the server
    /// has not answered yet, so its TID is unknown.
    Expect {
        /// The VLANs the transfer is on.
        scope: VlanScope,
        /// The boot server's address.
        server: Ipv4Addr,
        /// The client's address and port.
        client: SocketAddrV4,
    },
    /// Copy frames of the 5-tuple `server` (IP and TID) ↔ `client`.
    Pin {
        /// The VLANs the transfer is on.
        scope: VlanScope,
        /// The boot server's address and TID.
        server: SocketAddrV4,
        /// The client's address and port.
        client: SocketAddrV4,
    },
    /// Trap (not copy) frames of the 5-tuple `server` (IP and TID) ↔
    /// `client`: a session serving a cache hit answers them, the origin
    /// must not see them.
    Trap {
        /// The VLANs the client is on.
        scope: VlanScope,
        /// The boot server's address (which the session answers as) and the
        /// session's TID.
        server: SocketAddrV4,
        /// The client's address and port.
        client: SocketAddrV4,
    },
    /// The transfer is over: drop the pair's rule.
    Remove {
        /// The VLANs the transfer is on.
        scope: VlanScope,
        /// The boot server's address.
        server: Ipv4Addr,
        /// The client's address and port.
        client: SocketAddrV4,
    },
}

impl FilterUpdate {
    /// The VLANs the rule is on.
    pub fn scope(&self) -> VlanScope {
        match *self {
            FilterUpdate::Expect { scope, .. }
            | FilterUpdate::Pin { scope, .. }
            | FilterUpdate::Trap { scope, .. }
            | FilterUpdate::Remove { scope, .. } => scope,
        }
    }
}
