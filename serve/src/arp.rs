//! ARP for addressed mode, sans-I/O: answers requests for bootcache's own
//! IPv4 address and resolves neighbours' MAC addresses (RFC 826), fed with
//! frames and time by the slow-path worker.
//!
//! - [`ArpResolver::handle_frame`] takes an ARP frame from either side of
//!   the bridge. A request for the own address is answered (on the side it
//!   came from, with its VLAN tags) and its sender learned; a reply to the
//!   own address is learned. Everything else is ignored: nothing is learned
//!   from frames not addressed to us.
//! - [`ArpResolver::resolve`] gives a known, fresh MAC address, or starts
//!   resolution: a broadcast, untagged request, retried every
//!   [`ArpConfig::retry`] up to [`ArpConfig::max_retries`] times, after
//!   which the address is reported by [`ArpResolver::poll_failed`].
//! - Learned entries live [`ArpConfig::entry_ttl`] from the last time they
//!   were learned; then [`ArpResolver::handle_timeout`] drops them and the
//!   next `resolve` asks again.
//!
//! Memory is bounded: at most [`ArpConfig::max_entries`] entries (resolved
//! and pending). When full, a new entry evicts the **oldest resolved** one
//! (the one that expires first); if every entry is a pending resolution the
//! new one is **refused**: learning is dropped, a resolution fails at once.
//! At most [`MAX_QUEUED_TRANSMITS`] frames wait for
//! [`ArpResolver::poll_transmit`]; past that they are dropped and counted.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use std::time::Instant;
//! use bootcache_serve::arp::{ArpConfig, ArpEvent, ArpResolver};
//! use wire::frame::{ArpFrameRepr, MacAddr};
//!
//! let me = MacAddr([0x02, 0xbc, 0, 0, 0, 1]);
//! let server = MacAddr([0x52, 0x54, 0, 0, 0, 2]);
//! let (my_ip, server_ip) = (Ipv4Addr::new(10, 0, 0, 10), Ipv4Addr::new(10, 0, 0, 1));
//! let mut arp = ArpResolver::new(ArpConfig::new(my_ip, me));
//! let now = Instant::now();
//!
//! // Unknown: a broadcast request goes out on side 1.
//! assert_eq!(arp.resolve(now, 1, server_ip), None);
//! let (side, request) = arp.poll_transmit().unwrap();
//! assert_eq!((side, ArpFrameRepr::parse(request.as_slice()).unwrap().arp.target_ip), (1, server_ip));
//!
//! // The server answers; the address is known from then on.
//! let reply = ArpFrameRepr::parse(request.as_slice()).unwrap().reply_to(server).unwrap();
//! let mut buf = [0u8; 64];
//! let len = reply.emit(&mut buf).unwrap();
//! assert_eq!(arp.handle_frame(now, 1, &buf[..len]), ArpEvent::Learned(server_ip));
//! assert_eq!(arp.resolve(now, 1, server_ip), Some(server));
//! ```

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use wire::frame::{ArpFrameRepr, ArpOperation, MacAddr};

/// Most frames waiting for [`ArpResolver::poll_transmit`]; more are dropped
/// ([`ArpCounters::tx_dropped`]).
pub const MAX_QUEUED_TRANSMITS: usize = 64;

/// Bytes an [`ArpFrameBuf`] holds: the largest ARP frame (QinQ, 50 bytes)
/// padded to the 60-byte Ethernet minimum fits.
pub const FRAME_BUF_LEN: usize = 64;

/// The resolver's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpConfig {
    /// The address bootcache owns and answers for.
    pub own_ip: Ipv4Addr,
    /// The MAC address it answers with and sends from.
    pub own_mac: MacAddr,
    /// How long a learned entry stays fresh (default 300 s).
    pub entry_ttl: Duration,
    /// Time between requests of one resolution (default 1 s).
    pub retry: Duration,
    /// Requests repeated after the first before giving up (default 3): a
    /// resolution fails `(1 + max_retries) × retry` after it started.
    pub max_retries: u32,
    /// Most entries, resolved and pending together (default 4096).
    pub max_entries: usize,
    /// Addresses learned from one side of the bridge only, as `(address,
    /// side)`: addressed mode pins the origin to the server side, so that
    /// a host on the client side claiming the origin's address (in ARP or
    /// in any frame) is ignored, never believed (default: none).
    pub pinned: Vec<(Ipv4Addr, u8)>,
}

impl ArpConfig {
    /// The defaults for `own_ip` and `own_mac`.
    pub fn new(own_ip: Ipv4Addr, own_mac: MacAddr) -> Self {
        ArpConfig {
            own_ip,
            own_mac,
            entry_ttl: Duration::from_secs(300),
            retry: Duration::from_secs(1),
            max_retries: 3,
            max_entries: 4096,
            pinned: Vec::new(),
        }
    }
}

/// What [`ArpResolver::handle_frame`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpEvent {
    /// A request for the own address: the reply is queued for
    /// [`ArpResolver::poll_transmit`] and the sender learned (unless its
    /// address is unusable, as in an RFC 5227 probe from 0.0.0.0).
    Answered,
    /// A reply to the own address: its sender is now known.
    Learned(Ipv4Addr),
    /// Not ARP, malformed, not addressed to us, or from an unusable sender.
    Ignored,
}

/// One frame to send: a fixed buffer and its length.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ArpFrameBuf {
    bytes: [u8; FRAME_BUF_LEN],
    len: usize,
}

impl ArpFrameBuf {
    /// Emits `repr` (padded to 60 bytes); `None` if it cannot be built
    /// (bad VLAN tags).
    fn emit(repr: &ArpFrameRepr) -> Option<Self> {
        let mut bytes = [0u8; FRAME_BUF_LEN];
        let len = repr.emit(&mut bytes).ok()?;
        Some(ArpFrameBuf { bytes, len })
    }

    /// The frame's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The frame's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty frame (never built here).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl core::fmt::Debug for ArpFrameBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("ArpFrameBuf")
            .field(&self.as_slice())
            .finish()
    }
}

/// What the resolver has done since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArpCounters {
    /// Requests for the own address answered.
    pub requests_answered: u64,
    /// Requests sent (first tries and retries).
    pub requests_sent: u64,
    /// Replies to the own address learned.
    pub replies_learned: u64,
    /// Resolutions that gave up (or were refused at once: table full of
    /// pending resolutions, or an address that cannot be resolved).
    pub failed: u64,
    /// Frames ignored ([`ArpEvent::Ignored`]).
    pub ignored: u64,
    /// Resolved entries dropped when their TTL ran out.
    pub expired: u64,
    /// Resolved entries evicted to make room for a new entry.
    pub evicted: u64,
    /// Neighbours not learned because the table was full of pending
    /// resolutions.
    pub refused: u64,
    /// Frames dropped because [`MAX_QUEUED_TRANSMITS`] were waiting.
    pub tx_dropped: u64,
    /// ARP frames and learned addresses ignored because a pinned address
    /// ([`ArpConfig::pinned`]) came from the other side.
    pub wrong_side: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Known: fresh until the entry's deadline.
    Resolved(MacAddr),
    /// Being resolved on `side`; `sent` requests so far; the deadline is
    /// the next retry.
    Pending { side: u8, sent: u32 },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    state: State,
    deadline: Instant,
}

/// The sans-I/O ARP responder and resolver for one own address (see the
/// module documentation).
#[derive(Debug)]
pub struct ArpResolver {
    cfg: ArpConfig,
    entries: HashMap<Ipv4Addr, Entry>,
    /// Every entry's deadline, earliest first (expiry or next retry).
    deadlines: BTreeSet<(Instant, Ipv4Addr)>,
    transmit: VecDeque<(u8, ArpFrameBuf)>,
    failed: VecDeque<Ipv4Addr>,
    counters: ArpCounters,
}

impl ArpResolver {
    /// A resolver with an empty table. A `max_entries` of 0 is taken as 1,
    /// a `retry` under 1 ms as 1 ms.
    pub fn new(mut cfg: ArpConfig) -> Self {
        cfg.max_entries = cfg.max_entries.max(1);
        cfg.retry = cfg.retry.max(Duration::from_millis(1));
        ArpResolver {
            cfg,
            entries: HashMap::new(),
            deadlines: BTreeSet::new(),
            transmit: VecDeque::new(),
            failed: VecDeque::new(),
            counters: ArpCounters::default(),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &ArpConfig {
        &self.cfg
    }

    /// An ARP frame that arrived on `side` (0 or 1; any value is echoed
    /// back as is). Learns the sender if the frame is addressed to us (a
    /// request for `own_ip`, or a reply to `own_ip`); answers requests for
    /// `own_ip` on the same side, with the request's VLAN tags, unicast to
    /// the requester. Never panics on any input.
    pub fn handle_frame(&mut self, now: Instant, side: u8, frame: &[u8]) -> ArpEvent {
        let event = self.handle(now, side, frame);
        if event == ArpEvent::Ignored {
            self.counters.ignored += 1;
        }
        event
    }

    fn handle(&mut self, now: Instant, side: u8, frame: &[u8]) -> ArpEvent {
        let Ok(repr) = ArpFrameRepr::parse(frame) else {
            return ArpEvent::Ignored;
        };
        let arp = repr.arp;
        let sender_ok = !repr.src_mac.is_multicast()
            && !arp.sender_mac.is_multicast()
            && arp.sender_mac != MacAddr([0; 6])
            && arp.sender_mac != self.cfg.own_mac
            && arp.sender_ip != self.cfg.own_ip;
        if !sender_ok || arp.target_ip != self.cfg.own_ip {
            return ArpEvent::Ignored;
        }
        if !self.side_ok(side, arp.sender_ip) {
            self.counters.wrong_side += 1;
            return ArpEvent::Ignored;
        }
        match arp.operation {
            ArpOperation::Request => {
                let Some(reply) = repr
                    .reply_to(self.cfg.own_mac)
                    .and_then(|r| ArpFrameBuf::emit(&r))
                else {
                    return ArpEvent::Ignored;
                };
                if self.usable(arp.sender_ip) {
                    self.insert(now, arp.sender_ip, arp.sender_mac);
                }
                self.queue(side, reply);
                self.counters.requests_answered += 1;
                ArpEvent::Answered
            }
            ArpOperation::Reply if self.usable(arp.sender_ip) => {
                self.insert(now, arp.sender_ip, arp.sender_mac);
                self.counters.replies_learned += 1;
                ArpEvent::Learned(arp.sender_ip)
            }
            _ => ArpEvent::Ignored,
        }
    }

    /// [`Self::learn`] of what a frame received on `side` says, unless
    /// `ip` is pinned to the other side ([`ArpConfig::pinned`]): then it is
    /// ignored and counted.
    pub fn learn_from(&mut self, now: Instant, side: u8, ip: Ipv4Addr, mac: MacAddr) {
        if self.side_ok(side, ip) {
            self.learn(now, ip, mac);
        } else {
            self.counters.wrong_side += 1;
        }
    }

    /// False when `ip` is pinned to a side other than `side`.
    fn side_ok(&self, side: u8, ip: Ipv4Addr) -> bool {
        self.cfg.pinned.iter().all(|&(p, s)| p != ip || s == side)
    }

    /// Learn a neighbour from elsewhere (e.g. an IPv4 frame from it to us).
    /// Unusable addresses (unspecified, broadcast, multicast, our own) and
    /// group MAC addresses are ignored. Completes a pending resolution.
    pub fn learn(&mut self, now: Instant, ip: Ipv4Addr, mac: MacAddr) {
        if self.usable(ip) && !mac.is_multicast() && mac != MacAddr([0; 6]) {
            self.insert(now, ip, mac);
        }
    }

    /// The MAC for `ip` if known and fresh; otherwise starts resolution on
    /// `side` (queues a broadcast request unless one is in flight) and
    /// returns `None`. An address that cannot be resolved (unspecified,
    /// broadcast, multicast, our own) fails at once, as does a new one when
    /// the table is full of pending resolutions: see
    /// [`ArpResolver::poll_failed`].
    pub fn resolve(&mut self, now: Instant, side: u8, ip: Ipv4Addr) -> Option<MacAddr> {
        match self.entries.get(&ip).map(|e| (e.state, e.deadline)) {
            Some((State::Resolved(mac), deadline)) if deadline > now => return Some(mac),
            Some((State::Pending { .. }, _)) => return None,
            Some((State::Resolved(_), _)) => {}
            None if !self.usable(ip) || !self.make_room() => {
                self.fail(ip);
                return None;
            }
            None => {}
        }
        self.send_request(now, ip, side, 0);
        None
    }

    /// The next address whose resolution gave up since the last call (the
    /// caller fails what waited on it).
    pub fn poll_failed(&mut self) -> Option<Ipv4Addr> {
        self.failed.pop_front()
    }

    /// The next frame to send, with the side to send it on.
    pub fn poll_transmit(&mut self) -> Option<(u8, ArpFrameBuf)> {
        self.transmit.pop_front()
    }

    /// When [`ArpResolver::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(t, _)| t)
    }

    /// Retries pending requests that are due, gives up on those past
    /// `max_retries`, and drops expired entries.
    pub fn handle_timeout(&mut self, now: Instant) {
        // What is due now, taken first: a retry is due again only later.
        let due: Vec<Ipv4Addr> = self
            .deadlines
            .iter()
            .take_while(|&&(deadline, _)| deadline <= now)
            .map(|&(_, ip)| ip)
            .collect();
        for ip in due {
            let Some(entry) = self.entries.get(&ip).copied() else {
                continue;
            };
            match entry.state {
                State::Resolved(_) => {
                    self.remove(ip);
                    self.counters.expired += 1;
                }
                State::Pending { side, sent } if sent <= self.cfg.max_retries => {
                    self.send_request(now, ip, side, sent);
                }
                State::Pending { .. } => {
                    self.remove(ip);
                    self.fail(ip);
                }
            }
        }
    }

    /// What the resolver has done so far.
    pub fn counters(&self) -> ArpCounters {
        self.counters
    }

    /// Entries in the table, resolved and pending.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// An address a neighbour can have: not unspecified, broadcast,
    /// multicast or our own.
    fn usable(&self, ip: Ipv4Addr) -> bool {
        !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip == self.cfg.own_ip)
    }

    /// Learns `ip` at `mac`, fresh for the TTL from `now`, if there is room.
    fn insert(&mut self, now: Instant, ip: Ipv4Addr, mac: MacAddr) {
        if !self.entries.contains_key(&ip) && !self.make_room() {
            self.counters.refused += 1;
            return;
        }
        self.set(ip, State::Resolved(mac), now);
    }

    /// Makes room for one more entry: evicts the oldest resolved one if the
    /// table is full. False if it is full of pending resolutions.
    fn make_room(&mut self) -> bool {
        if self.entries.len() < self.cfg.max_entries {
            return true;
        }
        let oldest = self.deadlines.iter().find_map(|&(_, ip)| {
            matches!(self.entries.get(&ip)?.state, State::Resolved(_)).then_some(ip)
        });
        match oldest {
            Some(ip) => {
                self.remove(ip);
                self.counters.evicted += 1;
                true
            }
            None => false,
        }
    }

    /// Stores `state` for `ip` with the deadline its state implies from
    /// `now` (expiry when resolved, next retry when pending).
    fn set(&mut self, ip: Ipv4Addr, state: State, now: Instant) {
        let wait = match state {
            State::Resolved(_) => self.cfg.entry_ttl,
            State::Pending { .. } => self.cfg.retry,
        };
        let deadline = now.checked_add(wait).unwrap_or(now);
        let old = self.entries.insert(ip, Entry { state, deadline });
        if let Some(old) = old {
            self.deadlines.remove(&(old.deadline, ip));
        }
        self.deadlines.insert((deadline, ip));
    }

    fn remove(&mut self, ip: Ipv4Addr) {
        if let Some(old) = self.entries.remove(&ip) {
            self.deadlines.remove(&(old.deadline, ip));
        }
    }

    /// Queues request number `sent + 1` for `ip` and counts it in the entry.
    fn send_request(&mut self, now: Instant, ip: Ipv4Addr, side: u8, sent: u32) {
        let request = ArpFrameRepr::request(self.cfg.own_mac, self.cfg.own_ip, ip);
        if let Some(frame) = ArpFrameBuf::emit(&request) {
            self.queue(side, frame);
            self.counters.requests_sent += 1;
        }
        let state = State::Pending {
            side,
            sent: sent.saturating_add(1),
        };
        self.set(ip, state, now);
    }

    fn queue(&mut self, side: u8, frame: ArpFrameBuf) {
        if self.transmit.len() < MAX_QUEUED_TRANSMITS {
            self.transmit.push_back((side, frame));
        } else {
            self.counters.tx_dropped += 1;
        }
    }

    /// Reports `ip` to [`ArpResolver::poll_failed`] (the queue keeps at most
    /// `max_entries` addresses, dropping the oldest).
    fn fail(&mut self, ip: Ipv4Addr) {
        self.counters.failed += 1;
        if self.failed.len() >= self.cfg.max_entries {
            self.failed.pop_front();
        }
        self.failed.push_back(ip);
    }
}

#[cfg(test)]
mod tests;
