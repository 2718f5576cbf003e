//! Addressed mode (figures 1b, 3b): bootcache owns an IPv4 address on the
//! wire. It answers ARP and ping for it, and TFTP read requests sent to it:
//! a hit is served from the cache like a transparent one (validated the same
//! way); a miss, or a copy that is not current, is fetched from the origin
//! by bootcache itself, as a TFTP client through the server-side port. The
//! fetch's frames go through the cache fill like any transfer on the wire
//! (the driver feeds them to it: [`Taken::Fill`], `Transmit::Udp { fill }`),
//! so the file lands in the cache verified, and then every client that
//! asked for it meanwhile is served from there: concurrent requests for one
//! file share one origin fetch. A fetch may also be asked with no client
//! waiting ([`Addressed::fetch_detached`]: the fleet's directives); its end
//! is told as [`Event::Fetched`].

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Instant, SystemTime};

use wire::classify::{v4_mapped, Class, IpVersion, Kind};
use wire::frame::icmpv4::EchoFrameRepr;
use wire::frame::{MacAddr, UdpFrameRepr, VlanScope};
use wire::tftp::{ErrorCode, Packet, TransferMode};

use super::{Cache, Core, Decision, Event, FetchRefused, Held, Landed, Taken, Transmit, Trapped};
use crate::arp::{ArpConfig, ArpCounters, ArpResolver};
use crate::tftp_client::{ClientOptions, ClientOutcome, ClientSession, Destination};
use crate::tftp_server::error_response;
use crate::tftp_server::FileSource;

/// Local ports for origin fetches and error replies, picked at random (a
/// host that could guess a fetch's port could race the origin's answer).
const FETCH_PORT_BASE: u16 = 40960;
const FETCH_PORT_END: u16 = 49151;
/// Random picks tried before a scan of the whole range.
const PORT_TRIES: usize = 16;
const ETHERTYPE_ARP: u16 = 0x0806;
const PROTO_ICMP: u8 = 1;
/// What a client is told when a bound keeps its request from a fetch.
const BUSY: &str = "bootcache is busy, try again";
/// Fetches go to the origin untagged, so the fill files what they bring
/// under the untagged scope, whatever VLAN the asking client is on.
pub(crate) const FETCH_SCOPE: VlanScope = VlanScope::UNTAGGED;

/// Who bootcache is in addressed mode.
#[derive(Debug, Clone)]
pub struct OwnAddress {
    /// Its IPv4 address.
    pub ip: Ipv4Addr,
    /// The MAC it answers ARP with and sends from.
    pub mac: MacAddr,
    /// The TFTP server misses are fetched from (a configured boot server).
    pub origin: Ipv4Addr,
    /// How fetches ask the origin (block size, window).
    pub fetch: ClientOptions,
}

/// What addressed mode did, for the operator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddressedCounters {
    /// Read requests sent to bootcache's address.
    pub requests: u64,
    /// Origin fetches started.
    pub fetches: u64,
    /// Requests answered "busy" because `[limits] max_fetches` fetches were
    /// under way.
    pub fetches_refused: u64,
    /// Requests that joined a fetch already under way.
    pub fetch_joins: u64,
    /// Fetches that brought the whole file.
    pub fetches_completed: u64,
    /// Fetches that failed (origin error, timeout, unresolved origin).
    pub fetches_failed: u64,
    /// Bytes fetched from the origin.
    pub fetched_bytes: u64,
    /// Requests served from a fetch while it was under way (streamed).
    pub streamed: u64,
    /// ERROR answers sent to clients.
    pub errors_sent: u64,
    /// Echo requests answered.
    pub pings: u64,
    /// Frames to the address that nothing here answers (other ports and
    /// protocols, malformed), dropped.
    pub dropped: u64,
}

/// One origin fetch and the requests waiting for it.
struct Fetch {
    session: ClientSession,
    /// Our UDP port (the fetch's TID).
    port: u16,
    /// The clients' read requests, served when the file is in the cache.
    waiters: Vec<Held>,
    /// When the session ended (seen by [`Addressed::pump_fetch`]).
    ended: Option<Instant>,
    /// Whether streaming was considered (once the origin's size is known).
    stream_tried: bool,
    /// Asked with no client waiting (the fleet): its end is an event.
    detached: bool,
}

/// Addressed mode's state.
pub(crate) struct Addressed {
    own: OwnAddress,
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
        Addressed {
            arp: ArpResolver::new(cfg),
            own,
            fetches: HashMap::new(),
            ports: HashMap::new(),
            port_rng: std::collections::hash_map::RandomState::new(),
            port_draws: 0,
            counters: AddressedCounters::default(),
        }
    }

    /// Fetches in progress.
    pub(crate) fn active_fetches(&self) -> usize {
        self.fetches.len()
    }

    /// ARP's counters.
    pub(crate) fn arp_counters(&self) -> ArpCounters {
        self.arp.counters()
    }

    /// True when the frame classified as `c` is addressed to bootcache
    /// itself: IPv4 to its address, or ARP for it.
    pub(crate) fn is_own(&self, c: &Class) -> bool {
        c.dst_addr == v4_mapped(self.own.ip.octets())
            && (c.ip_version == Some(IpVersion::V4)
                || (c.kind == Kind::NonIp && c.ethertype == ETHERTYPE_ARP))
    }

    /// When ARP or a fetch next needs [`Addressed::handle_timeout`].
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        // An ended fetch waits for the cache to hold its file: asked at
        // every pass from its end on.
        let fetches = self
            .fetches
            .values()
            .filter_map(|f| f.ended.or_else(|| f.session.poll_timeout()));
        fetches.chain(self.arp.poll_timeout()).min()
    }

    /// A frame to bootcache's own address. Never forwarded: nobody else is
    /// addressed by it.
    pub(crate) fn handle<E: Clone, F: FileSource>(
        &mut self,
        core: &mut Core<E, F>,
        now: Instant,
        wall: SystemTime,
        cache: &mut impl Cache<Entry = E, File = F>,
        t: Trapped<'_>,
    ) -> Taken {
        let c = t.class;
        if c.kind == Kind::NonIp {
            self.arp.handle_frame(now, t.side, t.frame);
            self.send_arp(core);
            return Taken::Answered;
        }
        if c.kind == Kind::OtherIp && c.protocol == PROTO_ICMP {
            self.answer_ping(core, t);
            return Taken::Answered;
        }
        let (Kind::Udp, Some(src), Some(_)) = (c.kind, c.src_v4(), c.dst_v4()) else {
            self.counters.dropped += 1;
            return Taken::Answered;
        };
        let src = SocketAddrV4::new(src, c.src_port);
        let Some(src_mac) = t.frame.get(6..12).and_then(|m| <[u8; 6]>::try_from(m).ok()) else {
            self.counters.dropped += 1;
            return Taken::Answered;
        };
        // Whoever talks to us is a neighbour: no ARP needed to answer it.
        // (The origin only from the server side: see ArpConfig::pinned.)
        self.arp
            .learn_from(now, t.side, *src.ip(), MacAddr(src_mac));
        let scope = VlanScope::new(c.outer_vlan, c.inner_vlan);
        if core.session_packet(now, (scope, src, c.dst_port), t) {
            return Taken::Answered;
        }
        // The origin's answers count from the server side only: a host on
        // the client side can spoof its address, not the port it is on.
        if *src.ip() == self.own.origin && t.side == 1 {
            if let Some(name) = self.ports.get(&c.dst_port).cloned() {
                let start = usize::from(c.payload_offset);
                let payload = t
                    .frame
                    .get(start..start + usize::from(c.payload_len))
                    .unwrap_or_default();
                if let Some(f) = self.fetches.get_mut(&name) {
                    f.session.handle_packet(now, src.port(), payload);
                }
                self.pump_fetch(core, now, &name);
                // The fill follows the fetch like any transfer on the wire.
                return Taken::Fill;
            }
        }
        if c.dst_port != 69 {
            log::debug!(
                "addressed: dropped {src} -> port {}: no session or fetch",
                c.dst_port
            );
            self.counters.dropped += 1;
            return Taken::Answered;
        }
        self.request(core, now, wall, cache, t, scope, src)
    }

    /// A packet to bootcache's TFTP port.
    #[allow(clippy::too_many_arguments)]
    fn request<E: Clone, F: FileSource>(
        &mut self,
        core: &mut Core<E, F>,
        now: Instant,
        wall: SystemTime,
        cache: &mut impl Cache<Entry = E, File = F>,
        t: Trapped<'_>,
        scope: VlanScope,
        src: SocketAddrV4,
    ) -> Taken {
        let start = usize::from(t.class.payload_offset);
        let payload = t
            .frame
            .get(start..start + usize::from(t.class.payload_len))
            .unwrap_or_default();
        let mode = match Packet::parse(payload) {
            Ok(Packet::Rrq(req)) => req.mode.kind(),
            Ok(Packet::Wrq(_)) => {
                if let Some(h) = Held::headers(t, Some(self.own.mac)) {
                    self.send_error(
                        core,
                        &h,
                        ErrorCode::AccessViolation,
                        "bootcache serves reads only",
                    );
                }
                return Taken::Answered;
            }
            _ => {
                self.counters.dropped += 1;
                return Taken::Answered;
            }
        };
        if core.in_progress.contains_key(&(scope, src)) {
            return Taken::Answered;
        }
        self.counters.requests += 1;
        let Some((h, name)) = Held::parse(t, Some(self.own.mac)) else {
            // Headers the classifier took and the parser refused.
            self.counters.dropped += 1;
            return Taken::Answered;
        };
        if mode != TransferMode::Octet {
            self.send_error(
                core,
                &h,
                ErrorCode::IllegalOperation,
                "bootcache serves octet mode only",
            );
            return Taken::Answered;
        }
        let Some(name) = name else {
            self.send_error(core, &h, ErrorCode::FileNotFound, "file name is not UTF-8");
            return Taken::Answered;
        };
        // One key (and one fetch) for every spelling of a file: "x", "/x"
        // and "./x" are the same to the origin.
        let Ok(name) = wire::tftp::normalize_name(&name) else {
            self.send_error(
                core,
                &h,
                ErrorCode::FileNotFound,
                "no such file under the root",
            );
            return Taken::Answered;
        };
        match cache.lookup(FETCH_SCOPE, self.own.origin, &name) {
            Some(entry) => {
                if let Decision::NotServed(h) = core.hit(now, wall, cache, h, entry) {
                    self.join_fetch(core, now, h, &name);
                }
            }
            None => {
                core.counters.misses += 1;
                self.join_fetch(core, now, h, &name);
            }
        }
        Taken::Answered
    }

    /// Adds the request `h` to the fetch of `name`, starting one if none
    /// is under way.
    pub(crate) fn join_fetch<E: Clone, F: FileSource>(
        &mut self,
        core: &mut Core<E, F>,
        now: Instant,
        h: Held,
        name: &str,
    ) {
        // Waiting requests are held like those asked about: bounded, and
        // one client's share of the bound (a flood of requests for names
        // the origin never answers must not crowd out other clients).
        if !core.held_room(h.scope, *h.client.ip()) {
            core.counters.held_refused += 1;
            self.send_error(core, &h, ErrorCode::NotDefined, BUSY);
            return;
        }
        if let Some(f) = self.fetches.get_mut(name) {
            self.counters.fetch_joins += 1;
            // Streamed from what arrived so far, or served once cached.
            if core.stream_to(now, &h, name) {
                self.counters.streamed += 1;
            } else {
                core.hold(&h);
                f.waiters.push(h);
            }
            return;
        }
        match self.start_fetch(core, now, name, Some(h.clone())) {
            Ok(()) => {}
            Err(FetchRefused::Name(..)) => {
                self.send_error(core, &h, ErrorCode::FileNotFound, "file name not accepted")
            }
            Err(_) => self.send_error(core, &h, ErrorCode::NotDefined, BUSY),
        }
    }

    /// Fetches `name` into the cache for nobody waiting (the fleet): a
    /// fetch of its own, or the one under way. Told at its end as
    /// [`Event::Fetched`].
    pub(crate) fn fetch_detached<E: Clone, F: FileSource>(
        &mut self,
        core: &mut Core<E, F>,
        now: Instant,
        name: &str,
    ) -> Result<(), FetchRefused> {
        // One key per file: the caller gives the name as the cache keeps it.
        if wire::tftp::normalize_name(name).as_deref() != Ok(name) {
            return Err(FetchRefused::Name(
                name.into(),
                "not a normalised name".into(),
            ));
        }
        if let Some(f) = self.fetches.get_mut(name) {
            self.counters.fetch_joins += 1;
            f.detached = true;
            return Ok(());
        }
        self.start_fetch(core, now, name, None)
    }

    /// Starts the fetch of `name`, for the request `waiter` (held from
    /// now on), or for nobody (detached).
    fn start_fetch<E: Clone, F: FileSource>(
        &mut self,
        core: &mut Core<E, F>,
        now: Instant,
        name: &str,
        waiter: Option<Held>,
    ) -> Result<(), FetchRefused> {
        let session = ClientSession::new(now, name, self.own.fetch.clone()).map_err(|e| {
            log::info!("addressed: cannot fetch {name:?}: {e}");
            FetchRefused::Name(name.into(), e.to_string())
        })?;
        if self.fetches.len() >= core.limits.fetches {
            self.counters.fetches_refused += 1;
            log::debug!(
                "addressed: {} fetches under way; {name:?} refused",
                core.limits.fetches
            );
            return Err(FetchRefused::Busy(core.limits.fetches));
        }
        let Some(port) = self.allocate_port() else {
            bootcache_metrics::warn_limited!("addressed: no free fetch port for {name:?}");
            return Err(FetchRefused::Busy(self.fetches.len()));
        };
        self.counters.fetches += 1;
        log::info!(
            "addressed: fetching {name:?} from {} for {}",
            self.own.origin,
            if waiter.is_some() {
                "a client"
            } else {
                "the fleet"
            }
        );
        if let Some(h) = &waiter {
            core.hold(h);
        }
        self.ports.insert(port, name.to_string());
        self.fetches.insert(
            name.to_string(),
            Fetch {
                session,
                port,
                detached: waiter.is_none(),
                waiters: waiter.into_iter().collect(),
                ended: None,
                stream_tried: false,
            },
        );
        // No filter rules to install: the own-address rule traps the
        // origin's answers.
        self.pump_fetch(core, now, name);
        Ok(())
    }

    /// Queues what the fetch of `name` has to send (once the origin's MAC
    /// is known). Its end is handled by [`Addressed::handle_timeout`] (the
    /// driver feeds the fill after this returns).
    fn pump_fetch<E: Clone, F: FileSource>(
        &mut self,
        core: &mut Core<E, F>,
        now: Instant,
        name: &str,
    ) {
        let origin = self.own.origin;
        let origin_mac = self.arp.resolve(now, 1, origin);
        let (own_ip, own_mac) = (self.own.ip, self.own.mac);
        if let Some(f) = self.fetches.get_mut(name) {
            // Once the origin told the size, the bytes are kept and
            // streamed to the waiters as they come (read-while-writing: a
            // large miss does not outlast their retries). The cache gets
            // them through the fill either way. A fetch nobody waits for
            // then (the fleet's) keeps no bytes: a client joining it later
            // is served once it is cached.
            if !f.stream_tried {
                if let Some(len) = f.session.tsize() {
                    f.stream_tried = true;
                    if !f.waiters.is_empty() && core.start_stream(name, len) {
                        let mut wait = Vec::new();
                        for w in std::mem::take(&mut f.waiters) {
                            core.release_held(&w);
                            if core.stream_to(now, &w, name) {
                                self.counters.streamed += 1;
                            } else {
                                core.hold(&w);
                                wait.push(w);
                            }
                        }
                        f.waiters = wait;
                    }
                }
            }
            while let Some((offset, bytes)) = f.session.poll_data() {
                core.stream_data(name, offset, &bytes);
            }
            if let Some(origin_mac) = origin_mac {
                while let Some(t) = f.session.poll_transmit(now) {
                    let port = match t.to {
                        Destination::Origin => 69,
                        Destination::Server => f.session.server_tid().unwrap_or(69),
                        Destination::Stray(p) => p,
                    };
                    core.out.push_back(Transmit::Udp {
                        side: 1,
                        repr: UdpFrameRepr::ipv4(
                            own_mac,
                            origin_mac,
                            SocketAddrV4::new(own_ip, f.port),
                            SocketAddrV4::new(origin, port),
                        ),
                        payload: t.payload,
                        fill: true,
                    });
                }
            } else if f.session.poll_timeout().is_none() {
                log::debug!("addressed: fetch of {name:?} waits for {origin}'s MAC");
            }
            if f.session.is_finished() && f.ended.is_none() {
                f.ended = Some(now);
            }
        }
        self.send_arp(core);
    }

    /// A fetch ended: its waiters are served from the cache, or told why
    /// not. `false` when its file is still on its way into the cache (the
    /// fetch stays; asked again at the next pass).
    fn finish_fetch<E: Clone, F: FileSource>(
        &mut self,
        core: &mut Core<E, F>,
        now: Instant,
        cache: &mut impl Cache<Entry = E, File = F>,
        name: &str,
        outcome: ClientOutcome,
    ) -> bool {
        let origin = self.own.origin;
        if matches!(outcome, ClientOutcome::Completed { .. })
            && cache.is_publishing(FETCH_SCOPE, origin, name)
        {
            return false;
        }
        let Some(f) = self.fetches.remove(name) else {
            return true;
        };
        self.ports.remove(&f.port);
        for w in &f.waiters {
            core.release_held(w);
        }
        let (code, message) = match outcome {
            ClientOutcome::Completed { size } => {
                core.end_stream(name, None);
                self.counters.fetches_completed += 1;
                self.counters.fetched_bytes += size;
                match cache.lookup(FETCH_SCOPE, origin, name) {
                    Some(entry) => {
                        if f.detached {
                            let facts = cache.facts(&entry);
                            core.events.push_back(Event::Fetched {
                                name: name.to_owned(),
                                result: Ok(Landed {
                                    size: facts.size,
                                    sha256: facts.sha256,
                                }),
                            });
                        }
                        log::info!(
                            "addressed: fetched {name:?} ({size} bytes); serving {} request(s)",
                            f.waiters.len()
                        );
                        for w in f.waiters {
                            if !core.start_session(now, cache, &w, &entry) {
                                self.send_error(
                                    core,
                                    &w,
                                    ErrorCode::NotDefined,
                                    "cannot serve the file",
                                );
                            }
                        }
                        return true;
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
        self.counters.fetches_failed += 1;
        log::info!("addressed: fetch of {name:?} failed: {message}");
        if f.detached {
            core.events.push_back(Event::Fetched {
                name: name.to_owned(),
                result: Err(format!(
                    "from {origin} through the server-side port: {message}"
                )),
            });
        }
        // The clients it streamed to get the origin's error too.
        let told = core.end_stream(name, Some(&error_response(code, &message)));
        self.counters.errors_sent += told as u64;
        for w in &f.waiters {
            self.send_error(core, w, code, &message);
        }
        true
    }

    /// ARP retries and expiry, fetch retransmits and ends.
    pub(crate) fn handle_timeout<E: Clone, F: FileSource>(
        &mut self,
        core: &mut Core<E, F>,
        now: Instant,
        cache: &mut impl Cache<Entry = E, File = F>,
    ) {
        if self.arp.poll_timeout().is_some_and(|t| t <= now) {
            self.arp.handle_timeout(now);
        }
        let mut unresolved = false;
        while let Some(ip) = self.arp.poll_failed() {
            unresolved |= ip == self.own.origin;
        }
        let names: Vec<String> = self.fetches.keys().cloned().collect();
        for name in names {
            if unresolved {
                let msg = format!("the boot server {} does not answer ARP", self.own.origin);
                let outcome = ClientOutcome::ServerError(ErrorCode::NotDefined, msg);
                self.finish_fetch(core, now, cache, &name, outcome);
                continue;
            }
            let Some(f) = self.fetches.get_mut(&name) else {
                continue;
            };
            if f.session.poll_timeout().is_some_and(|t| t <= now) {
                log::debug!(
                    "addressed: fetch of {name:?} timed out at {} bytes; asking again",
                    f.session.received_bytes()
                );
                f.session.handle_timeout(now);
            }
            // Also sends what waited for the origin's MAC.
            self.pump_fetch(core, now, &name);
            let outcome = self
                .fetches
                .get(&name)
                .and_then(|f| f.session.outcome().cloned());
            if let Some(outcome) = outcome {
                self.finish_fetch(core, now, cache, &name, outcome);
            }
        }
        self.send_arp(core);
    }

    /// Queues what ARP has to send (answers, requests).
    fn send_arp<E: Clone, F: FileSource>(&mut self, core: &mut Core<E, F>) {
        while let Some((side, frame)) = self.arp.poll_transmit() {
            core.out.push_back(Transmit::Frame {
                side,
                frame: frame.as_slice().to_vec(),
            });
        }
    }

    /// Answers an ICMP echo request to bootcache's address.
    fn answer_ping<E: Clone, F: FileSource>(&mut self, core: &mut Core<E, F>, t: Trapped<'_>) {
        let Ok((req, data)) = EchoFrameRepr::parse(t.frame) else {
            self.counters.dropped += 1;
            return;
        };
        let Some(reply) = req.reply() else {
            self.counters.dropped += 1;
            return;
        };
        let mut frame = vec![0; t.frame.len().max(60)];
        if reply.emit(&mut frame, data).is_err() {
            self.counters.dropped += 1;
            return;
        }
        self.counters.pings += 1;
        core.out.push_back(Transmit::Frame {
            side: t.side,
            frame,
        });
    }

    /// Answers the request `h` with a TFTP ERROR from bootcache's address
    /// (from a fresh port, as a server answers a request it refuses).
    fn send_error<E: Clone, F: FileSource>(
        &mut self,
        core: &mut Core<E, F>,
        h: &Held,
        code: ErrorCode,
        message: &str,
    ) {
        // One frame, nothing to receive: any port of the range will do.
        let port = self.random_port();
        let mut repr = UdpFrameRepr::ipv4(
            self.own.mac,
            h.req.src_mac,
            SocketAddrV4::new(self.own.ip, port),
            h.client,
        );
        repr.outer_vlan = h.req.outer_vlan;
        repr.inner_vlan = h.req.inner_vlan;
        self.counters.errors_sent += 1;
        core.out.push_back(Transmit::Udp {
            side: h.side,
            repr,
            payload: error_response(code, message),
            fill: false,
        });
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
