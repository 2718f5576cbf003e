//! Serving cache hits by transparent intercept (figures 1d, 3d): a client's
//! RRQ to a boot server is trapped by the fast path; when the filestore holds
//! the file and the copy is current, bootcache answers as the server would
//! (server MAC and IP, a fresh TID) from the memory-mapped file, and the
//! origin never sees the request. Otherwise the RRQ goes on to the origin
//! unchanged, and the cache fill follows that transfer as usual.
//!
//! Freshness (figures 1e, 7): with `[agent]` configured, each hit is checked
//! with the boot server's `bootcache-agent` ("is SHA-256 X still current for
//! F?", answers cached for `answer_ttl`); stale or unknown → the request goes
//! to the origin and the new transfer refreshes the cache; no answer →
//! `on_unreachable` (default: forward). Without an agent, `serve_max_age`: a
//! copy filled or refreshed within that many seconds is served.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bootcache_agent::{Key, RequestId, Validator, ValidatorConfig, Verdict};
use dataplane::{FilterWriter, InjectRing, Injected, Redirected};
use dpdk::{MappedFile, Mbuf, Mempool};
use slowpath::imagemap::ServedFrom;
use slowpath::tftp_server::Transmit;
use slowpath::{CacheLogic, Entry, FileSource, ServeOutcome, ServerConfig, ServerSession};
use wire::frame::{UdpFrameRepr, VlanScope};
use wire::tftp::Packet;

mod addressed;
mod held;
mod turnaround;
pub(crate) use addressed::{Addressed, OwnAddress};
use held::{HeldRequest, Request};
pub(crate) use turnaround::Turnaround;

/// Most slots of the inject ring kept free (an eighth of a small ring) for
/// ARP, ping, errors and fetches when serving sessions fill it.
const INJECT_HEADROOM: usize = 64;

/// First TID bootcache answers from; it walks up and wraps.
const TID_BASE: u16 = 49152;

/// A cached file, mapped.
/// A cached file's mapping, shared by every session reading it (one
/// mapping per file, whatever the number of clients: a storm of requests
/// must not run into the kernel's limit on mappings).
struct CachedFile(Arc<MappedFile>);

impl FileSource for CachedFile {
    fn len(&self) -> u64 {
        self.0.bytes().len() as u64
    }

    fn bytes(&self, range: Range<u64>) -> &[u8] {
        &self.0.bytes()[range.start as usize..range.end as usize]
    }
}

/// A session's key: the client's VLANs, its address and port, our TID.
/// Two VLANs may hold two clients with one address and port.
type SessionKey = (VlanScope, SocketAddrV4, u16);

struct Served {
    session: ServerSession<CachedFile>,
    /// Headers of the frames to the client: server MAC/IP (or bootcache's
    /// own, in addressed mode), our TID.
    reply: UdpFrameRepr,
    server: Ipv4Addr,
    /// Bridge side the client is on (where the frames go).
    side: u8,
    /// Whether filter rules were installed for the client's ACKs
    /// (transparent intercept; addressed mode's own-address rule needs none).
    rules: bool,
}

/// A request held while the agent is asked about its cached copy.
struct Parked {
    r: HeldRequest,
    entry: Entry,
}

enum Trapped {
    /// Taken care of (an ACK to a session, a retransmitted request).
    Consumed,
    /// Not ours: on to the origin.
    Forward,
    /// A read request for a cached file.
    Hit(Entry),
    /// Addressed mode: a read request for a file not in the cache; bootcache
    /// fetches it from the origin.
    Miss(String),
}

/// The management channel to the boot server's `bootcache-agent`.
pub(crate) struct AgentLink {
    validator: Validator,
    socket: UdpSocket,
    addr: SocketAddr,
    /// Policy when the agent does not answer: serve the copy anyway, or
    /// (default) forward to the origin.
    serve_when_unreachable: bool,
    pending: HashMap<RequestId, Parked>,
}

impl AgentLink {
    /// A link to the agent at `addr`, authenticating with `key`, asking as
    /// `config` says.
    pub(crate) fn new(
        addr: SocketAddr,
        key: Key,
        config: ValidatorConfig,
        serve_when_unreachable: bool,
        limits: ValidationLimits,
    ) -> std::io::Result<AgentLink> {
        let socket = UdpSocket::bind(if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        })?;
        socket.set_nonblocking(true)?;
        let config = ValidatorConfig {
            max_pending: limits.questions,
            max_waiters: limits.waiters,
            ..config
        };
        Ok(AgentLink {
            validator: Validator::new(key, config, bootcache_agent::random_seed()),
            socket,
            addr,
            serve_when_unreachable,
            pending: HashMap::new(),
        })
    }
}

/// The fleet's mirror of the agent's table (issue 14): while it is live,
/// hits are validated against it here, with no question to the agent.
pub(crate) struct FleetLink {
    /// The mirror, kept by its own NATS thread.
    pub(crate) mirror: bootcache_fleet::MirrorHandle,
    /// What serving decided with it.
    pub(crate) counters: FleetCounters,
}

/// Hits decided by the fleet's mirror.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FleetCounters {
    /// The mirror confirmed the copy: served without asking the agent.
    pub(crate) current: u64,
    /// The mirror said stale or unknown: sent to the origin.
    pub(crate) stale: u64,
    /// The mirror was not live: the agent was asked.
    pub(crate) fallbacks: u64,
}

/// Bounds of the validator's tables (`[limits] max_validations`,
/// `max_waiters_per_validation`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ValidationLimits {
    /// Distinct questions out to the agent at once.
    pub(crate) questions: usize,
    /// Held requests waiting on one question.
    pub(crate) waiters: usize,
}

/// What serving did, for the operator.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ServeCounters {
    /// Read requests answered from the cache.
    pub(crate) hits: u64,
    /// Read requests for files not in the cache (forwarded).
    pub(crate) misses: u64,
    /// Cached copies too old to serve, or stale or unknown for the agent (forwarded).
    pub(crate) stale: u64,
    /// Validations the agent did not answer.
    pub(crate) agent_unreachable: u64,
    /// Hits the agent confirmed current.
    pub(crate) validated_current: u64,
    /// Sessions that delivered the whole file.
    pub(crate) completed: u64,
    /// Sessions that ended otherwise: a UEFI size probe (a normal end), the
    /// client's ERROR, the client gone (timeout), or aborted.
    pub(crate) size_probes: u64,
    pub(crate) client_errors: u64,
    pub(crate) timeouts: u64,
    pub(crate) aborted: u64,
    /// File bytes delivered from the cache (acknowledged by clients).
    pub(crate) served_bytes: u64,
    /// Frames built and handed to the fast path.
    pub(crate) frames: u64,
    /// Frames lost because no buffer or no ring slot was free.
    pub(crate) frame_drops: u64,
    /// DATA and OACK packets of ended sessions sent again (a lost ACK, or
    /// a retransmission timer that expired early).
    pub(crate) retransmits: u64,
    /// Hits sent to the origin because the cached file was not hashed
    /// again since the cache was opened: its re-hash is queued on the
    /// writer thread (those that no longer matched: `files corrupt_removed`).
    pub(crate) rehashed: u64,
    /// Requests sent to the origin because serving had as many sessions as
    /// `[limits] max_sessions` allows (or the client had its share).
    pub(crate) sessions_refused: u64,
    /// Requests sent to the origin (or, in addressed mode, answered "busy")
    /// because as many were held for the agent or an origin fetch as
    /// `[limits] max_held_requests` allows (or the client had its share).
    pub(crate) held_refused: u64,
    /// Requests sent to the origin because the validator had as many
    /// questions out, or as many requests waiting on this one, as
    /// `[limits] max_validations` / `max_waiters_per_validation` allow.
    pub(crate) validations_refused: u64,
}

/// The serving side of the slow path.
pub(crate) struct Serve {
    pool: Mempool,
    inject: Arc<InjectRing>,
    config: ServerConfig,
    max_age: Duration,
    agent: Option<AgentLink>,
    sessions: HashMap<SessionKey, Served>,
    next_tid: u16,
    pub(crate) counters: ServeCounters,
    /// ACK-to-next-DATA turnarounds of the sessions.
    pub(crate) turnaround: Turnaround,
    /// Addressed mode, when configured.
    pub(crate) addressed: Option<Addressed>,
    /// Sessions with frames to send that waited for room in the inject
    /// ring (the port is slower than the sessions' windows); sent first on
    /// the next pass.
    blocked: std::collections::HashSet<SessionKey>,
    /// Mappings of the files being served, by path (dead entries pruned
    /// as sessions end).
    maps: HashMap<std::path::PathBuf, std::sync::Weak<MappedFile>>,
    limits: ServeLimits,
    /// The fleet's mirror, when `[fleet]` is configured.
    pub(crate) fleet: Option<FleetLink>,
}

/// Bounds of the tables serving keeps per client request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServeLimits {
    /// Sessions at once (`[limits] max_sessions`).
    pub(crate) sessions: usize,
    /// Requests held for the agent or an origin fetch at once (`[limits]
    /// max_held_requests`).
    pub(crate) held: usize,
    /// Origin fetches at once, addressed mode (`[limits] max_fetches`).
    pub(crate) fetches: usize,
}

impl Serve {
    /// Serving with the agent's validation when `agent` is given, else with
    /// the `max_age` policy.
    pub(crate) fn new(
        pool: Mempool,
        inject: Arc<InjectRing>,
        max_age: Duration,
        agent: Option<AgentLink>,
        addressed: Option<Addressed>,
        limits: ServeLimits,
    ) -> Serve {
        Serve {
            pool,
            inject,
            config: ServerConfig::default(),
            max_age,
            agent,
            sessions: HashMap::new(),
            next_tid: TID_BASE,
            counters: ServeCounters::default(),
            turnaround: Turnaround::new(dpdk::tsc_hz()),
            addressed,
            blocked: std::collections::HashSet::new(),
            maps: HashMap::new(),
            limits,
            fleet: None,
        }
    }

    /// Asks the fleet's mirror about a hit: `Some(serve)` when it is live,
    /// `None` to ask the agent (no mirror, or not live).
    fn fleet_verdict(&mut self, now: Instant, entry: &Entry) -> Option<bool> {
        let f = self.fleet.as_mut()?;
        match f.mirror.verdict(now, &entry.name, &entry.sha256.0) {
            Some(bootcache_fleet::Verdict::Current(_)) => {
                f.counters.current += 1;
                Some(true)
            }
            Some(_) => {
                f.counters.stale += 1;
                Some(false)
            }
            None => {
                f.counters.fallbacks += 1;
                None
            }
        }
    }

    /// The mapping of `path`, shared with the sessions already reading it.
    fn mapping(&mut self, path: &std::path::Path) -> std::io::Result<Arc<MappedFile>> {
        if let Some(m) = self.maps.get(path).and_then(std::sync::Weak::upgrade) {
            return Ok(m);
        }
        let m = Arc::new(MappedFile::open(path)?);
        // Mappings whose sessions all ended (the table stays as small as
        // the set of files being served).
        self.maps.retain(|_, w| w.strong_count() > 0);
        self.maps.insert(path.to_owned(), Arc::downgrade(&m));
        Ok(m)
    }

    /// Files mapped for serving right now.
    pub(crate) fn mapped_files(&self) -> usize {
        self.maps.values().filter(|w| w.strong_count() > 0).count()
    }

    /// The largest clock difference seen between the agent's answers and
    /// this host, in ms (0 without an agent).
    pub(crate) fn agent_skew_ms(&self) -> u64 {
        self.agent.as_ref().map_or(0, |a| a.validator.max_skew_ms())
    }

    /// Sessions in progress.
    pub(crate) fn active(&self) -> usize {
        self.sessions.len()
    }

    /// A trapped frame. `None` when serving took it (answered it, or holds
    /// it while the agent is asked); `Some` when it must go on to the origin
    /// (and to the cache fill).
    pub(crate) fn handle_trapped(
        &mut self,
        now: Instant,
        wall: SystemTime,
        r: Redirected,
        logic: &mut CacheLogic,
        filter: &mut FilterWriter,
    ) -> Option<Redirected> {
        let own = self.is_own(r.mbuf.data());
        let trapped = if own {
            self.classify_own(now, &r, logic, filter)
        } else {
            self.classify_trapped(now, &r, logic, filter)
        };
        // The fleet's mirror first: live, it decides without the agent.
        let trapped = match trapped {
            Trapped::Hit(entry) => match self.fleet_verdict(now, &entry) {
                Some(true) if self.start_session(now, wall, &r, &entry, logic, filter) => {
                    return None;
                }
                Some(serve) => {
                    if !serve {
                        self.counters.stale += 1;
                    }
                    return self.not_served(now, r, &entry.name, logic);
                }
                None => Trapped::Hit(entry),
            },
            t => t,
        };
        match trapped {
            Trapped::Consumed => None,
            // Nobody else is addressed by a frame to bootcache's own address.
            Trapped::Forward if own => None,
            Trapped::Forward => Some(r),
            Trapped::Miss(name) => {
                if let Some(held) = HeldRequest::new(r) {
                    self.join_fetch(now, held, &name, logic);
                }
                None
            }
            Trapped::Hit(entry) if self.agent.is_some() && !self.held_room(&r) => {
                // Past the bound (or this client's share of it) the origin
                // answers.
                self.counters.held_refused += 1;
                self.not_served(now, r, &entry.name, logic)
            }
            Trapped::Hit(entry) => match &mut self.agent {
                Some(agent) => {
                    match agent.validator.validate(
                        now,
                        wall,
                        agent.addr,
                        &entry.name,
                        entry.sha256.0,
                    ) {
                        Ok(id) => {
                            if let Some(held) = HeldRequest::new(r) {
                                agent.pending.insert(id, Parked { r: held, entry });
                            }
                            None
                        }
                        // The validator is full: the origin answers, as
                        // past `held_room`.
                        Err(_) => {
                            self.counters.validations_refused += 1;
                            self.not_served(now, r, &entry.name, logic)
                        }
                    }
                }
                None => {
                    let fresh =
                        wall.duration_since(entry.last_seen).unwrap_or_default() <= self.max_age;
                    if !fresh {
                        self.counters.stale += 1;
                        return self.not_served(now, r, &entry.name, logic);
                    }
                    if self.start_session(now, wall, &r, &entry, logic, filter) {
                        None
                    } else {
                        self.not_served(now, r, &entry.name, logic)
                    }
                }
            },
        }
    }

    /// Talks to the agent: sends queued questions, reads answers, runs the
    /// validator's timers, and acts on verdicts. Returns the held requests
    /// that must go on to the origin.
    pub(crate) fn poll_agent(
        &mut self,
        now: Instant,
        wall: SystemTime,
        logic: &mut CacheLogic,
        filter: &mut FilterWriter,
    ) -> Vec<Redirected> {
        let Some(agent) = &mut self.agent else {
            return Vec::new();
        };
        // Nothing asked, nothing to wait for: no syscall on this pass (the
        // loop runs it every few microseconds while serving).
        if agent.pending.is_empty() {
            return Vec::new();
        }
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = agent.socket.recv_from(&mut buf) {
            agent.validator.handle_datagram(now, wall, &buf[..n]);
        }
        // Retries run on the monotonic clock (a wall clock stepped back
        // must not hold requests forever); `wall` only stamps requests.
        if agent.validator.poll_timeout().is_some_and(|t| t <= now) {
            agent.validator.handle_timeout(now, wall);
        }
        while let Some(t) = agent.validator.poll_transmit() {
            if let Err(e) = agent.socket.send_to(&t.payload, t.destination) {
                log::debug!("agent {}: {e}", t.destination);
            }
        }
        let mut verdicts = Vec::new();
        while let Some((id, verdict)) = agent.validator.poll_result() {
            if let Some(p) = agent.pending.remove(&id) {
                verdicts.push((p, verdict));
            }
        }
        let serve_unreachable = agent.serve_when_unreachable;
        let mut forward = Vec::new();
        for (p, verdict) in verdicts {
            let serve = match verdict {
                Verdict::Current(_) => {
                    self.counters.validated_current += 1;
                    true
                }
                Verdict::Stale(_) | Verdict::Unknown => {
                    self.counters.stale += 1;
                    false
                }
                Verdict::Unreachable => {
                    self.counters.agent_unreachable += 1;
                    serve_unreachable
                }
            };
            if !(serve && self.start_session(now, wall, &p.r, &p.entry, logic, filter)) {
                if self.is_own(p.r.data()) {
                    self.join_fetch(now, p.r, &p.entry.name, logic);
                } else if let Some(r) = p.r.into_redirected(&self.pool) {
                    forward.push(r);
                } else {
                    self.counters.frame_drops += 1; // the client asks again
                }
            }
        }
        forward
    }

    /// What a trapped frame is.
    fn classify_trapped(
        &mut self,
        now: Instant,
        r: &Redirected,
        logic: &mut CacheLogic,
        filter: &mut FilterWriter,
    ) -> Trapped {
        if r.side != 0 {
            return Trapped::Forward;
        }
        let Ok((repr, payload)) = UdpFrameRepr::parse(r.mbuf.data()) else {
            return Trapped::Forward;
        };
        let (SocketAddr::V4(client), SocketAddr::V4(dst)) = (repr.src(), repr.dst()) else {
            return Trapped::Forward;
        };
        let scope = repr.vlan_scope();
        if let Some(s) = self.sessions.get_mut(&(scope, client, dst.port())) {
            s.session.handle_packet(now, payload);
            self.pump((scope, client, dst.port()), now, Some(r.tsc));
            self.reap(filter);
            return Trapped::Consumed;
        }
        if dst.port() != 69 {
            return Trapped::Forward;
        }
        if self.in_progress(scope, client) {
            return Trapped::Consumed;
        }
        let Ok(Packet::Rrq(req)) = Packet::parse(payload) else {
            return Trapped::Forward;
        };
        let Ok(name) = std::str::from_utf8(req.filename) else {
            return Trapped::Forward;
        };
        match logic.filestore().lookup(scope, *dst.ip(), name) {
            Some(entry) => Trapped::Hit(entry.clone()),
            None => {
                self.counters.misses += 1;
                Trapped::Forward
            }
        }
    }

    /// True when `client` on `scope` has a request under way: a session
    /// serving it, or its RRQ held for the agent or for an origin fetch. A
    /// retransmitted RRQ of such a client is dropped: the first one is
    /// being taken care of.
    fn in_progress(&self, scope: VlanScope, client: SocketAddrV4) -> bool {
        self.held()
            .any(|h| (h.scope(), h.client()) == (scope, client))
            || self
                .sessions
                .keys()
                .any(|&(s, c, _)| (s, c) == (scope, client))
    }

    /// Every request held, for the agent or for an origin fetch.
    fn held(&self) -> impl Iterator<Item = &HeldRequest> {
        self.agent
            .iter()
            .flat_map(|a| a.pending.values().map(|p| &p.r))
            .chain(self.addressed.iter().flat_map(|a| a.waiters()))
    }

    /// Room for one more held request from the sender of `r`: under
    /// `[limits] max_held_requests`, and under that client's share of it
    /// (one host, an address on a VLAN, cannot take the table for itself).
    fn held_room(&self, r: &impl Request) -> bool {
        let Ok((repr, _)) = UdpFrameRepr::parse(r.data()) else {
            return false;
        };
        let (scope, client) = (repr.vlan_scope(), repr.src().ip());
        let (mut total, mut from_client) = (0, 0);
        for h in self.held() {
            total += 1;
            from_client +=
                usize::from((h.scope(), std::net::IpAddr::V4(*h.client().ip())) == (scope, client));
        }
        total < self.limits.held && from_client < slowpath::limits::per_source(self.limits.held)
    }

    /// Starts serving the RRQ in `frame` from the cached `entry`; false if
    /// it cannot be served (the caller forwards it).
    fn start_session(
        &mut self,
        now: Instant,
        wall: SystemTime,
        r: &impl Request,
        entry: &Entry,
        logic: &mut CacheLogic,
        filter: &mut FilterWriter,
    ) -> bool {
        let Ok((repr, payload)) = UdpFrameRepr::parse(r.data()) else {
            return false;
        };
        let (SocketAddr::V4(client), SocketAddr::V4(dst)) = (repr.src(), repr.dst()) else {
            return false;
        };
        let Ok(Packet::Rrq(req)) = Packet::parse(payload) else {
            return false;
        };
        let server = *dst.ip();
        let scope = repr.vlan_scope();
        let name = entry.name.as_str();
        let from_client = self
            .sessions
            .keys()
            .filter(|(s, c, _)| (*s, c.ip()) == (scope, client.ip()))
            .count();
        if self.sessions.len() >= self.limits.sessions
            || from_client >= slowpath::limits::per_source(self.limits.sessions)
        {
            self.counters.sessions_refused += 1;
            return false;
        }
        // Verified stays verified: a file this process did not hash (the
        // cache was reopened) is hashed on the writer thread before its
        // first client; meanwhile the origin answers (never a wait here).
        // One that no longer matches is removed there.
        if !logic.filestore_mut().check_verified(entry) {
            self.counters.rehashed += 1;
            return false;
        }
        let file = match self.mapping(&logic.filestore().path_of(entry)) {
            Ok(f) if f.bytes().len() as u64 == entry.size => CachedFile(f),
            Ok(_) | Err(_) => {
                log::warn!(
                    "cache: {name:?} from {server} cannot be mapped; forwarding to the origin"
                );
                return false;
            }
        };
        let Ok(session) = ServerSession::new(now, &req, file, &self.config) else {
            return false; // e.g. netascii: the origin answers
        };
        let tid = self.allocate_tid(scope, client);
        // Addressed mode: the client asked bootcache itself, whose address
        // traps everything sent to it; no rules needed.
        let own_mac = self
            .addressed
            .as_ref()
            .filter(|a| a.own.ip == server)
            .map(|a| a.own.mac);
        if own_mac.is_none() {
            // The client's ACKs and ERRORs to our TID must come to us, not the origin.
            let (srv, cli) = (std::net::IpAddr::V4(server), SocketAddr::V4(client));
            let installed = filter
                .expect(scope, srv, cli)
                .and_then(|_| filter.pin(scope, SocketAddrV4::new(server, tid).into(), cli))
                .and_then(|_| filter.set_trap(scope, srv, cli, true));
            if let Err(e) = installed {
                log::warn!("cache hit for {name:?} not served: {e}");
                let _ = filter.remove(scope, srv, cli);
                return false;
            }
            filter.publish();
        }
        let mut reply = UdpFrameRepr::ipv4(
            own_mac.unwrap_or(repr.dst_mac),
            repr.src_mac,
            SocketAddrV4::new(server, tid),
            client,
        );
        reply.outer_vlan = repr.outer_vlan;
        reply.inner_vlan = repr.inner_vlan;
        self.counters.hits += 1;
        logic.image_map_mut().record_file_from(
            wall,
            *client.ip(),
            Some(repr.src_mac.0),
            server,
            name,
            ServedFrom::Cache,
        );
        log::info!(
            "serving {name:?} ({} bytes) to {client} from the cache",
            entry.size
        );
        self.sessions.insert(
            (scope, client, tid),
            Served {
                session,
                reply,
                server,
                side: r.side(),
                rules: own_mac.is_none(),
            },
        );
        self.pump((scope, client, tid), now, None);
        true
    }

    /// Runs the sessions' timers.
    pub(crate) fn handle_timers(
        &mut self,
        now: Instant,
        logic: &mut CacheLogic,
        filter: &mut FilterWriter,
    ) {
        self.handle_own_timers(now, logic, filter);
        for key in std::mem::take(&mut self.blocked) {
            self.pump(key, now, None);
        }
        let due: Vec<_> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.session.poll_timeout().is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            if let Some(s) = self.sessions.get_mut(&key) {
                s.session.handle_timeout(now);
            }
            self.pump(key, now, None);
        }
        self.reap(filter);
    }

    /// Sends whatever the session has to send, as frames to the client.
    /// `ack_tsc`: the receive TSC of the client's packet that this answers;
    /// the first DATA pushed records the turnaround.
    fn pump(&mut self, key: SessionKey, now: Instant, mut ack_tsc: Option<u64>) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        loop {
            // Leave the rest of the window in the session while the ring is
            // (nearly) full: a frame pushed into a full ring would be lost
            // and cost the client a retransmission timeout.
            let headroom = (self.inject.capacity() / 8).min(INJECT_HEADROOM);
            if self.inject.len() + headroom >= self.inject.capacity() {
                self.blocked.insert(key);
                break;
            }
            let Some(t) = s.session.poll_transmit(now) else {
                break;
            };
            let hl = s.reply.header_len();
            let len = hl + t.payload_len();
            let Ok(mut m) = Mbuf::alloc(&self.pool) else {
                self.counters.frame_drops += 1;
                continue; // the session retransmits on its timer
            };
            let built = u16::try_from(len)
                .ok()
                .and_then(|l| m.append(l))
                .map(|buf| {
                    s.session
                        .write(&t, &mut buf[hl..])
                        .ok()
                        .and_then(|n| s.reply.emit_in_place(buf, n).ok())
                });
            if !matches!(built, Some(Some(_))) {
                self.counters.frame_drops += 1;
                continue;
            }
            match self.inject.push(Injected {
                mbuf: m,
                side: s.side,
            }) {
                Ok(()) => {
                    self.counters.frames += 1;
                    if let (Some(at), Transmit::Data { .. }) = (ack_tsc, &t) {
                        self.turnaround.record_tsc(at, dpdk::tsc());
                        ack_tsc = None;
                    }
                }
                Err(_) => self.counters.frame_drops += 1,
            }
        }
    }

    /// Frees finished sessions and their filter rules.
    fn reap(&mut self, filter: &mut FilterWriter) {
        let done: Vec<_> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.session.is_finished())
            .map(|(k, _)| *k)
            .collect();
        if done.is_empty() {
            return;
        }
        for key in done {
            let Some(s) = self.sessions.remove(&key) else {
                continue;
            };
            let c = &mut self.counters;
            c.retransmits += s.session.counters().retransmits;
            match s.session.outcome() {
                Some(ServeOutcome::Completed { bytes, elapsed }) => {
                    c.completed += 1;
                    c.served_bytes += bytes;
                    log::info!(
                        "served {bytes} bytes to {} ({}) from the cache in {elapsed:?}",
                        key.1,
                        key.0
                    );
                }
                other => {
                    match other {
                        Some(ServeOutcome::SizeProbe) => c.size_probes += 1,
                        Some(ServeOutcome::ClientError(_)) => c.client_errors += 1,
                        Some(ServeOutcome::TimedOut { acked_bytes }) => {
                            c.timeouts += 1;
                            c.served_bytes += acked_bytes;
                        }
                        Some(ServeOutcome::Aborted(_)) | None => c.aborted += 1,
                        Some(ServeOutcome::Completed { .. }) => {}
                    }
                    log::info!("cache session with {} ({}) ended: {other:?}", key.1, key.0);
                }
            }
            if s.rules {
                filter.remove(
                    key.0,
                    std::net::IpAddr::V4(s.server),
                    std::net::SocketAddr::V4(key.1),
                );
            }
        }
        filter.publish();
    }

    fn allocate_tid(&mut self, scope: VlanScope, client: SocketAddrV4) -> u16 {
        loop {
            let tid = self.next_tid;
            self.next_tid = if self.next_tid == u16::MAX {
                TID_BASE
            } else {
                self.next_tid + 1
            };
            if !self.sessions.contains_key(&(scope, client, tid)) {
                return tid;
            }
        }
    }
}
