//! Addressed mode (figures 1b, 3b): bootcache owns an IPv4 address on the
//! wire. It answers ARP and ping for it, and TFTP read requests sent to it:
//! a hit is served from the cache like a transparent one (validated the same
//! way); a miss, or a copy that is not current, is fetched from the origin
//! by bootcache itself, as a TFTP client through the server-side port. The
//! fetch's frames go through the cache fill like any transfer on the wire,
//! so the file lands in the filestore verified, and then every client that
//! asked for it meanwhile is served from there: concurrent requests for one
//! file share one origin fetch.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Instant, SystemTime};

use dataplane::{FilterWriter, InjectRing, Injected, Redirected};
use dpdk::Mbuf;
use slowpath::arp::{ArpConfig, ArpResolver};
use slowpath::tftp_client::{ClientOptions, ClientOutcome, ClientSession, Destination};
use slowpath::tftp_server::error_response;
use slowpath::CacheLogic;
use wire::classify::{classify, v4_mapped, IpVersion, Kind};
use wire::frame::icmpv4::EchoFrameRepr;
use wire::frame::{MacAddr, UdpFrameRepr, VlanScope};
use wire::tftp::{ErrorCode, Packet, TransferMode};

use super::held::build_raw;
use super::{HeldRequest, Request, Serve, ServeCounters, Trapped};

/// Local ports for origin fetches and error replies, picked at random (a
/// host that could guess a fetch's port could race the origin's answer).
const FETCH_PORT_BASE: u16 = 40960;
const FETCH_PORT_END: u16 = 49151;
/// Random picks tried before a scan of the whole range.
const PORT_TRIES: usize = 16;
const ETHERTYPE_ARP: u16 = 0x0806;
const PROTO_ICMP: u8 = 1;
/// Fetches go to the origin untagged, so the fill files what they bring
/// under the untagged scope, whatever VLAN the asking client is on.
const FETCH_SCOPE: VlanScope = VlanScope::UNTAGGED;

/// Who bootcache is in addressed mode.
#[derive(Debug, Clone)]
pub(crate) struct OwnAddress {
    /// Its IPv4 address.
    pub(crate) ip: Ipv4Addr,
    /// The MAC it answers ARP with and sends from.
    pub(crate) mac: MacAddr,
    /// The TFTP server misses are fetched from (a configured boot server).
    pub(crate) origin: Ipv4Addr,
    /// How fetches ask the origin (block size, window).
    pub(crate) fetch: ClientOptions,
}

/// What addressed mode did, for the operator.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AddressedCounters {
    /// Read requests sent to bootcache's address.
    pub(crate) requests: u64,
    /// Origin fetches started.
    pub(crate) fetches: u64,
    /// Requests answered "busy" because `[limits] max_fetches` fetches were
    /// under way.
    pub(crate) fetches_refused: u64,
    /// Requests that joined a fetch already under way.
    pub(crate) fetch_joins: u64,
    /// Fetches that brought the whole file.
    pub(crate) fetches_completed: u64,
    /// Fetches that failed (origin error, timeout, unresolved origin).
    pub(crate) fetches_failed: u64,
    /// Bytes fetched from the origin.
    pub(crate) fetched_bytes: u64,
    /// ERROR answers sent to clients.
    pub(crate) errors_sent: u64,
    /// Echo requests answered.
    pub(crate) pings: u64,
    /// Frames to the address that nothing here answers (other ports and
    /// protocols, malformed), dropped.
    pub(crate) dropped: u64,
}

/// One origin fetch and the requests waiting for it.
struct Fetch {
    session: ClientSession,
    /// Our UDP port (the fetch's TID).
    port: u16,
    /// The clients' read requests, served when the file is in the cache.
    waiters: Vec<HeldRequest>,
}

/// Addressed mode's state, owned by [`Serve`].
pub(crate) struct Addressed {
    pub(crate) own: OwnAddress,
    arp: ArpResolver,
    /// Fetches by file name.
    fetches: HashMap<String, Fetch>,
    /// Fetch file names by our port.
    ports: HashMap<u16, String>,
    /// Keyed hasher (random keys per process) drawing the ports.
    port_rng: std::collections::hash_map::RandomState,
    port_draws: u64,
    pub(crate) counters: AddressedCounters,
}

impl Addressed {
    /// Addressed mode as `own`, with nothing resolved or fetched yet.
    pub(crate) fn new(own: OwnAddress) -> Addressed {
        // The origin is believed on the server side only (issue 13).
        let mut cfg = ArpConfig::new(own.ip, own.mac);
        cfg.pinned = vec![(own.origin, 1)];
        let arp = ArpResolver::new(cfg);
        Addressed {
            own,
            arp,
            fetches: HashMap::new(),
            ports: HashMap::new(),
            port_rng: std::collections::hash_map::RandomState::new(),
            port_draws: 0,
            counters: AddressedCounters::default(),
        }
    }

    /// The read requests waiting for fetches.
    pub(super) fn waiters(&self) -> impl Iterator<Item = &HeldRequest> {
        self.fetches.values().flat_map(|f| &f.waiters)
    }

    /// Fetches in progress.
    pub(crate) fn active_fetches(&self) -> usize {
        self.fetches.len()
    }

    /// ARP's counters, for the statistics line.
    pub(crate) fn arp_counters(&self) -> slowpath::arp::ArpCounters {
        self.arp.counters()
    }

    /// A random port of the fetch range.
    fn random_port(&mut self) -> u16 {
        use std::hash::BuildHasher;
        self.port_draws += 1;
        let span = u64::from(FETCH_PORT_END - FETCH_PORT_BASE) + 1;
        FETCH_PORT_BASE + (self.port_rng.hash_one(self.port_draws) % span) as u16
    }

    /// A free fetch port, at random: a few random picks, then a scan from a
    /// random start; `None` when every port of the range is in use (never
    /// a loop that spins).
    fn allocate_port(&mut self) -> Option<u16> {
        for _ in 0..PORT_TRIES {
            let p = self.random_port();
            if !self.ports.contains_key(&p) {
                return Some(p);
            }
        }
        let start = self.random_port();
        (start..=FETCH_PORT_END)
            .chain(FETCH_PORT_BASE..start)
            .find(|p| !self.ports.contains_key(p))
    }
}

impl Serve {
    /// True when `frame` is addressed to bootcache itself: IPv4 to its
    /// address, or ARP for it.
    pub(super) fn is_own(&self, frame: &[u8]) -> bool {
        let Some(a) = &self.addressed else {
            return false;
        };
        let c = classify(frame);
        c.dst_addr == v4_mapped(a.own.ip.octets())
            && (c.ip_version == Some(IpVersion::V4)
                || (c.kind == Kind::NonIp && c.ethertype == ETHERTYPE_ARP))
    }

    /// What a frame to bootcache's own address is; answers ARP, ping, ACKs
    /// to its sessions and the origin's packets to its fetches on the way.
    pub(super) fn classify_own(
        &mut self,
        now: Instant,
        r: &Redirected,
        logic: &mut CacheLogic,
        filter: &mut FilterWriter,
    ) -> Trapped {
        let Some(a) = &mut self.addressed else {
            return Trapped::Forward;
        };
        let frame = r.mbuf.data();
        let c = classify(frame);
        if c.kind == Kind::NonIp {
            a.arp.handle_frame(now, r.side, frame);
            self.send_arp();
            return Trapped::Consumed;
        }
        if c.kind == Kind::OtherIp && c.protocol == PROTO_ICMP {
            self.answer_ping(r);
            return Trapped::Consumed;
        }
        let (repr, payload) = match UdpFrameRepr::parse(frame) {
            Ok(p) => p,
            Err(e) => {
                log::debug!("addressed: dropped a frame to {}: {e}", a.own.ip);
                a.counters.dropped += 1;
                return Trapped::Forward;
            }
        };
        let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (repr.src(), repr.dst()) else {
            a.counters.dropped += 1;
            return Trapped::Forward;
        };
        // Whoever talks to us is a neighbour: no ARP needed to answer it.
        // (The origin only from the server side: see ArpConfig::pinned.)
        a.arp.learn_from(now, r.side, *src.ip(), repr.src_mac);
        let scope = repr.vlan_scope();
        if let Some(s) = self.sessions.get_mut(&(scope, src, dst.port())) {
            s.session.handle_packet(now, payload);
            self.pump((scope, src, dst.port()), now, Some(r.tsc));
            self.reap(filter);
            return Trapped::Consumed;
        }
        // The origin's answers count from the server side only: a host on
        // the client side can spoof its address, not the port it is on.
        if *src.ip() == a.own.origin && r.side == 1 {
            if let Some(name) = a.ports.get(&dst.port()).cloned() {
                // The fill follows the fetch like any transfer on the wire.
                logic.handle_frame(now, SystemTime::now(), false, frame);
                if let Some(f) = a.fetches.get_mut(&name) {
                    f.session.handle_packet(now, src.port(), payload);
                }
                self.pump_fetch(now, &name, logic, filter);
                return Trapped::Consumed;
            }
        }
        if dst.port() != 69 {
            log::debug!("addressed: dropped {src} -> {dst}: no session or fetch");
            a.counters.dropped += 1;
            return Trapped::Forward;
        }
        let req = match Packet::parse(payload) {
            Ok(Packet::Rrq(req)) => req,
            Ok(Packet::Wrq(_)) => {
                self.send_error(r, ErrorCode::AccessViolation, "bootcache serves reads only");
                return Trapped::Consumed;
            }
            _ => {
                a.counters.dropped += 1;
                return Trapped::Forward;
            }
        };
        let origin = a.own.origin;
        if self.in_progress(scope, src) {
            return Trapped::Consumed;
        }
        if let Some(a) = &mut self.addressed {
            a.counters.requests += 1;
        }
        if req.mode.kind() != TransferMode::Octet {
            self.send_error(
                r,
                ErrorCode::IllegalOperation,
                "bootcache serves octet mode only",
            );
            return Trapped::Consumed;
        }
        let Ok(name) = std::str::from_utf8(req.filename) else {
            self.send_error(r, ErrorCode::FileNotFound, "file name is not UTF-8");
            return Trapped::Consumed;
        };
        // One key (and one fetch) for every spelling of a file: "x", "/x"
        // and "./x" are the same to the origin.
        let Ok(name) = wire::tftp::normalize_name(name) else {
            self.send_error(r, ErrorCode::FileNotFound, "no such file under the root");
            return Trapped::Consumed;
        };
        let name = name.as_str();
        match logic.filestore().lookup(FETCH_SCOPE, origin, name) {
            Some(entry) => Trapped::Hit(entry.clone()),
            None => {
                self.counters.misses += 1;
                Trapped::Miss(name.to_string())
            }
        }
    }

    /// A request the cache does not answer: in addressed mode (a request to
    /// bootcache itself) it waits for an origin fetch; otherwise it goes on
    /// to the origin (returned).
    pub(super) fn not_served(
        &mut self,
        now: Instant,
        r: Redirected,
        name: &str,
        logic: &mut CacheLogic,
    ) -> Option<Redirected> {
        if !self.is_own(r.mbuf.data()) {
            return Some(r);
        }
        if let Some(held) = HeldRequest::new(r) {
            self.join_fetch(now, held, name, logic);
        }
        None
    }

    /// Adds the request in `r` to the fetch of `name`, starting one if none
    /// is under way.
    pub(super) fn join_fetch(
        &mut self,
        now: Instant,
        r: HeldRequest,
        name: &str,
        logic: &mut CacheLogic,
    ) {
        // Waiting requests are held like those asked about: bounded, and
        // one client's share of the bound (a flood of requests for names
        // the origin never answers must not crowd out other clients).
        if !self.held_room(&r) {
            self.counters.held_refused += 1;
            self.send_error(&r, ErrorCode::NotDefined, "bootcache is busy, try again");
            return;
        }
        let max_fetches = self.limits.fetches;
        let Some(a) = &mut self.addressed else {
            return;
        };
        if let Some(f) = a.fetches.get_mut(name) {
            a.counters.fetch_joins += 1;
            f.waiters.push(r);
            return;
        }
        let session = match ClientSession::new(now, name, a.own.fetch.clone()) {
            Ok(s) => s,
            Err(e) => {
                log::info!("addressed: cannot fetch {name:?}: {e}");
                self.send_error(&r, ErrorCode::FileNotFound, "file name not accepted");
                return;
            }
        };
        if a.fetches.len() >= max_fetches {
            a.counters.fetches_refused += 1;
            log::debug!("addressed: {max_fetches} fetches under way; {name:?} refused");
            self.send_error(&r, ErrorCode::NotDefined, "bootcache is busy, try again");
            return;
        }
        let Some(port) = a.allocate_port() else {
            log::warn!("addressed: no free fetch port for {name:?}");
            self.send_error(&r, ErrorCode::NotDefined, "bootcache is busy, try again");
            return;
        };
        a.counters.fetches += 1;
        log::info!(
            "addressed: fetching {name:?} from {} for a client",
            a.own.origin
        );
        a.ports.insert(port, name.to_string());
        a.fetches.insert(
            name.to_string(),
            Fetch {
                session,
                port,
                waiters: vec![r],
            },
        );
        // No filter rules to install: the own-address rule traps the
        // origin's answers. Its end is handled by the timers' pump.
        self.pump_fetch_inner(now, name, logic);
    }

    /// Sends what the fetch of `name` has to send and finishes it if it ended.
    fn pump_fetch(
        &mut self,
        now: Instant,
        name: &str,
        logic: &mut CacheLogic,
        filter: &mut FilterWriter,
    ) {
        if let Some(outcome) = self.pump_fetch_inner(now, name, logic) {
            self.finish_fetch(now, name, outcome, logic, filter);
        }
    }

    /// Sends what the fetch has to send (once the origin's MAC is known);
    /// returns its outcome once it ended.
    fn pump_fetch_inner(
        &mut self,
        now: Instant,
        name: &str,
        logic: &mut CacheLogic,
    ) -> Option<ClientOutcome> {
        let a = self.addressed.as_mut()?;
        let origin = a.own.origin;
        let origin_mac = a.arp.resolve(now, 1, origin);
        let (own_ip, own_mac) = (a.own.ip, a.own.mac);
        let f = a.fetches.get_mut(name)?;
        // The bytes go to the cache through the fill; the session's own
        // copy of them is not needed.
        while f.session.poll_data().is_some() {}
        if let Some(origin_mac) = origin_mac {
            while let Some(t) = f.session.poll_transmit(now) {
                let port = match t.to {
                    Destination::Origin => 69,
                    Destination::Server => f.session.server_tid().unwrap_or(69),
                    Destination::Stray(p) => p,
                };
                let repr = UdpFrameRepr::ipv4(
                    own_mac,
                    origin_mac,
                    SocketAddrV4::new(own_ip, f.port),
                    SocketAddrV4::new(origin, port),
                );
                let Some(m) = build_udp(&self.pool, &repr, &t.payload) else {
                    self.counters.frame_drops += 1;
                    continue; // the session retransmits on its timer
                };
                logic.handle_frame(now, SystemTime::now(), true, m.data());
                push_frame(&self.inject, &mut self.counters, m, 1);
            }
        } else if f.session.poll_timeout().is_none() {
            log::debug!("addressed: fetch of {name:?} waits for {origin}'s MAC");
        }
        let outcome = f.session.outcome().cloned();
        self.send_arp();
        outcome
    }

    /// A fetch ended: its waiters are served from the cache, or told why not.
    fn finish_fetch(
        &mut self,
        now: Instant,
        name: &str,
        outcome: ClientOutcome,
        logic: &mut CacheLogic,
        filter: &mut FilterWriter,
    ) {
        let Some(a) = &mut self.addressed else {
            return;
        };
        let Some(f) = a.fetches.remove(name) else {
            return;
        };
        a.ports.remove(&f.port);
        let origin = a.own.origin;
        let wall = SystemTime::now();
        let (code, message) = match outcome {
            // On its way into the cache (the writer thread puts the bytes in
            // place): the fetch and its waiters stay until it is there. Its
            // session has ended; this is asked again at every pass.
            ClientOutcome::Completed { .. }
                if logic.filestore().is_publishing(FETCH_SCOPE, origin, name) =>
            {
                a.ports.insert(f.port, name.to_owned());
                a.fetches.insert(name.to_owned(), f);
                return;
            }
            ClientOutcome::Completed { size } => {
                a.counters.fetches_completed += 1;
                a.counters.fetched_bytes += size;
                match logic.filestore().lookup(FETCH_SCOPE, origin, name).cloned() {
                    Some(entry) => {
                        log::info!(
                            "addressed: fetched {name:?} ({size} bytes); serving {} request(s)",
                            f.waiters.len()
                        );
                        for w in f.waiters {
                            if !self.start_session(now, wall, &w, &entry, logic, filter) {
                                self.send_error(&w, ErrorCode::NotDefined, "cannot serve the file");
                            }
                        }
                        return;
                    }
                    None => (
                        ErrorCode::DiskFull,
                        "the file could not be cached (see bootcache's limits)".to_string(),
                    ),
                }
            }
            ClientOutcome::ServerError(code, msg) => (code, msg),
            ClientOutcome::TimedOut => (
                ErrorCode::NotDefined,
                format!("the boot server {origin} did not answer"),
            ),
            ClientOutcome::TooLarge => (ErrorCode::DiskFull, "file too large".to_string()),
            ClientOutcome::Protocol(e) => {
                (ErrorCode::NotDefined, format!("boot server error: {e}"))
            }
        };
        a.counters.fetches_failed += 1;
        log::info!("addressed: fetch of {name:?} failed: {message}");
        for w in &f.waiters {
            self.send_error(w, code, &message);
        }
    }

    /// Addressed mode's timers: ARP retries and expiry, fetch retransmits.
    pub(super) fn handle_own_timers(
        &mut self,
        now: Instant,
        logic: &mut CacheLogic,
        filter: &mut FilterWriter,
    ) {
        let Some(a) = &mut self.addressed else {
            return;
        };
        if a.arp.poll_timeout().is_some_and(|t| t <= now) {
            a.arp.handle_timeout(now);
        }
        let mut unresolved = false;
        while let Some(ip) = a.arp.poll_failed() {
            unresolved |= ip == a.own.origin;
        }
        let names: Vec<String> = a.fetches.keys().cloned().collect();
        for name in names {
            let Some(a) = &mut self.addressed else {
                return;
            };
            if unresolved {
                let msg = format!("the boot server {} does not answer ARP", a.own.origin);
                self.finish_fetch(
                    now,
                    &name,
                    ClientOutcome::ServerError(ErrorCode::NotDefined, msg),
                    logic,
                    filter,
                );
                continue;
            }
            if let Some(f) = a.fetches.get_mut(&name) {
                if f.session.poll_timeout().is_some_and(|t| t <= now) {
                    log::debug!(
                        "addressed: fetch of {name:?} timed out at {} bytes; asking again",
                        f.session.received_bytes()
                    );
                    f.session.handle_timeout(now);
                }
            }
            // Also sends what waited for the origin's MAC.
            self.pump_fetch(now, &name, logic, filter);
        }
        self.send_arp();
    }

    /// Sends what ARP has queued (answers, requests).
    fn send_arp(&mut self) {
        let Some(a) = &mut self.addressed else {
            return;
        };
        while let Some((side, frame)) = a.arp.poll_transmit() {
            let Some(m) = build_raw(&self.pool, frame.as_slice()) else {
                self.counters.frame_drops += 1;
                continue;
            };
            push_frame(&self.inject, &mut self.counters, m, side);
        }
    }

    /// Answers an ICMP echo request to bootcache's address.
    fn answer_ping(&mut self, r: &Redirected) {
        let Some(a) = &mut self.addressed else {
            return;
        };
        let Ok((req, data)) = EchoFrameRepr::parse(r.mbuf.data()) else {
            a.counters.dropped += 1;
            return;
        };
        let Some(reply) = req.reply() else {
            a.counters.dropped += 1;
            return;
        };
        let Ok(mut m) = Mbuf::alloc(&self.pool) else {
            self.counters.frame_drops += 1;
            return;
        };
        let len = r.mbuf.data().len().max(60);
        let built = u16::try_from(len)
            .ok()
            .and_then(|l| m.append(l))
            .and_then(|buf| {
                buf.fill(0);
                reply.emit(buf, data).ok()
            });
        if built.is_none() {
            a.counters.dropped += 1;
            return;
        }
        a.counters.pings += 1;
        push_frame(&self.inject, &mut self.counters, m, r.side);
    }

    /// Answers the read request in `r` with a TFTP ERROR from bootcache's
    /// address (from a fresh port, as a server answers a request it refuses).
    fn send_error(&mut self, r: &impl Request, code: ErrorCode, message: &str) {
        let Some(a) = &mut self.addressed else {
            return;
        };
        let Ok((req, _)) = UdpFrameRepr::parse(r.data()) else {
            return;
        };
        let SocketAddr::V4(client) = req.src() else {
            return;
        };
        // One frame, nothing to receive: any port of the range will do.
        let port = a.random_port();
        let mut repr = UdpFrameRepr::ipv4(
            a.own.mac,
            req.src_mac,
            SocketAddrV4::new(a.own.ip, port),
            client,
        );
        repr.outer_vlan = req.outer_vlan;
        repr.inner_vlan = req.inner_vlan;
        a.counters.errors_sent += 1;
        let Some(m) = build_udp(&self.pool, &repr, &error_response(code, message)) else {
            self.counters.frame_drops += 1;
            return;
        };
        push_frame(&self.inject, &mut self.counters, m, r.side());
    }
}

/// Hands a frame to the fast path's TX on `side`, counting it.
fn push_frame(inject: &InjectRing, counters: &mut ServeCounters, m: Mbuf, side: u8) {
    match inject.push(Injected { mbuf: m, side }) {
        Ok(()) => counters.frames += 1,
        Err(_) => counters.frame_drops += 1,
    }
}

/// A frame with `repr`'s headers around `payload`, in a new buffer.
fn build_udp(pool: &dpdk::Mempool, repr: &UdpFrameRepr, payload: &[u8]) -> Option<Mbuf> {
    let mut m = Mbuf::alloc(pool).ok()?;
    let len = repr.buffer_len(payload.len()).max(60);
    let buf = m.append(u16::try_from(len).ok()?)?;
    buf.fill(0);
    repr.emit(buf, payload).ok()?;
    Some(m)
}
