//! The driver of the serving endpoint (`bootcache-serve`'s
//! [`Endpoint`]): it owns what the endpoint must not — the inject ring and
//! the mempool frames are built in, the mapped cached files, the agent's
//! socket, the fleet's mirror, the clock — and feeds the endpoint trapped
//! frames (with the fast path's classification) and time, then does what
//! the endpoint asks: frames built into mbufs (a DATA block copied once,
//! from the mapping into the frame), filter rules, questions to the
//! validator, image-map records.
//!
//! What is served, and when, is the endpoint's: see `serve/src/endpoint.rs`.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use bootcache_agent::{Key, RequestId, Validator, ValidatorConfig, Verdict};
use bootcache_serve::endpoint::{
    self, Answer, Cache, CopyFacts, Endpoint, FetchRefused, Freshness, Landed, Taken, Ticket,
    Transmit, Trapped,
};
use dataplane::{FilterWriter, InjectRing, Injected, Redirected};
use dpdk::{MappedFile, Mbuf, Mempool};
use slowpath::imagemap::ServedFrom;
use slowpath::tftp_server::FileSource;
use slowpath::{CacheLogic, Entry, ServerConfig};
use wire::frame::{UdpFrameRepr, VlanScope};

mod turnaround;
pub(crate) use bootcache_serve::endpoint::OwnAddress;
pub(crate) use turnaround::Turnaround;

/// Most slots of the inject ring kept free (an eighth of a small ring) for
/// ARP, ping, errors and fetches when serving sessions fill it.
const INJECT_HEADROOM: usize = 64;

/// A cached file's mapping, shared by every session reading it (one
/// mapping per file, whatever the number of clients: a storm of requests
/// must not run into the kernel's limit on mappings). Its hold keeps the
/// entry from eviction and `bootcache cache rm` while the session lives.
pub(crate) struct CachedFile(Arc<MappedFile>, #[allow(dead_code)] slowpath::InUse);

impl FileSource for CachedFile {
    fn len(&self) -> u64 {
        self.0.bytes().len() as u64
    }

    fn bytes(&self, range: Range<u64>) -> &[u8] {
        &self.0.bytes()[range.start as usize..range.end as usize]
    }
}

/// The cache as the endpoint sees it: the filestore, and the mappings of
/// the files being served.
struct CacheView<'a> {
    logic: &'a mut CacheLogic,
    maps: &'a mut HashMap<PathBuf, Weak<MappedFile>>,
}

impl Cache for CacheView<'_> {
    type Entry = Entry;
    type File = CachedFile;

    fn lookup(&self, scope: VlanScope, server: std::net::Ipv4Addr, name: &str) -> Option<Entry> {
        self.logic.filestore().lookup(scope, server, name).cloned()
    }

    fn facts(&self, e: &Entry) -> CopyFacts {
        CopyFacts {
            name: e.name.clone(),
            size: e.size,
            sha256: e.sha256.0,
            last_seen: e.last_seen,
        }
    }

    fn check_verified(&mut self, e: &Entry) -> bool {
        self.logic.filestore_mut().check_verified(e)
    }

    fn open(&mut self, e: &Entry) -> Option<CachedFile> {
        let path = self.logic.filestore().path_of(e);
        let mapped = match self.maps.get(&path).and_then(Weak::upgrade) {
            Some(m) => Ok(m),
            None => MappedFile::open(&path).map(|m| {
                let m = Arc::new(m);
                // Mappings whose sessions all ended (the table stays as
                // small as the set of files being served).
                self.maps.retain(|_, w| w.strong_count() > 0);
                self.maps.insert(path.clone(), Arc::downgrade(&m));
                m
            }),
        };
        match mapped {
            Ok(f) if f.bytes().len() as u64 == e.size => {
                // Served now: the last use for eviction's LRU order.
                let held = self.logic.filestore_mut().hold(e, SystemTime::now());
                Some(CachedFile(f, held))
            }
            Ok(_) | Err(_) => {
                bootcache_metrics::warn_limited!(
                    "cache: {:?} cannot be mapped; forwarding to the origin",
                    e.name
                );
                None
            }
        }
    }

    fn is_publishing(&self, scope: VlanScope, server: std::net::Ipv4Addr, name: &str) -> bool {
        self.logic.filestore().is_publishing(scope, server, name)
    }
}

/// The management channel to the boot server's `bootcache-agent`.
pub(crate) struct AgentLink {
    validator: Validator,
    socket: UdpSocket,
    addr: SocketAddr,
    /// Policy when the agent does not answer: serve the copy anyway, or
    /// (default) forward to the origin.
    serve_when_unreachable: bool,
    /// The endpoint's question behind each validation.
    pending: HashMap<RequestId, Ticket>,
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
    /// This bridge's id and site (the serving policy's rules name them).
    pub(crate) id: String,
    /// Its site.
    pub(crate) site: String,
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
    /// The serving policy let the hit be served (a rule, or no rule).
    pub(crate) policy_serve: u64,
    /// The serving policy sent the hit to the origin.
    pub(crate) policy_origin: u64,
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

/// Bounds of the tables serving keeps per client request.
pub(crate) type ServeLimits = endpoint::Limits;

/// What the driver counts (the endpoint counts the rest).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FrameCounters {
    /// Frames built and handed to the fast path.
    pub(crate) frames: u64,
    /// Frames lost because no buffer or no ring slot was free.
    pub(crate) frame_drops: u64,
}

/// How copies are judged current: asking the agent when there is one,
/// else by their age.
fn freshness(agent: Option<&AgentLink>, max_age: Duration) -> Freshness {
    match agent {
        Some(a) => Freshness::Ask {
            serve_when_unreachable: a.serve_when_unreachable,
        },
        None => Freshness::MaxAge(max_age),
    }
}

/// The serving side of the slow path: the endpoint and its I/O.
pub(crate) struct Serve {
    pool: Mempool,
    inject: Arc<InjectRing>,
    endpoint: Endpoint<Entry, CachedFile>,
    agent: Option<AgentLink>,
    /// Mappings of the files being served, by path (dead entries pruned
    /// as files are opened).
    maps: HashMap<PathBuf, Weak<MappedFile>>,
    /// Frames built here.
    pub(crate) frames: FrameCounters,
    /// ACK-to-next-DATA turnarounds of the sessions.
    pub(crate) turnaround: Turnaround,
    /// The fleet's mirror, when `[fleet]` is configured.
    pub(crate) fleet: Option<FleetLink>,
    /// Held requests the endpoint gave back, to go on to the origin.
    forward: Vec<Redirected>,
    /// Ends of the fetches asked with [`Serve::fetch`] (at most
    /// `max_fetches`: each is a fetch that was under way).
    fetched: Vec<(String, Result<Landed, String>)>,
}

impl Serve {
    /// Serving with the agent's validation when `agent` is given, else with
    /// the `max_age` policy.
    pub(crate) fn new(
        pool: Mempool,
        inject: Arc<InjectRing>,
        max_age: Duration,
        agent: Option<AgentLink>,
        own: Option<OwnAddress>,
        limits: ServeLimits,
    ) -> Serve {
        let freshness = freshness(agent.as_ref(), max_age);
        Serve {
            pool,
            inject,
            endpoint: Endpoint::new(endpoint::Config {
                server: ServerConfig::default(),
                freshness,
                limits,
                own,
            }),
            agent,
            maps: HashMap::new(),
            frames: FrameCounters::default(),
            turnaround: Turnaround::new(dpdk::tsc_hz()),
            fleet: None,
            forward: Vec::new(),
            fetched: Vec::new(),
        }
    }

    /// Applies a reloaded configuration: the freshness policy (`max_age`,
    /// or the agent's `on_unreachable`) and the table bounds to requests
    /// from now on, and `agent`, when given, in place of the running link
    /// (a new address, key or timers). Questions out to the old link are
    /// answered "unreachable", so its policy decides: their answers would
    /// come to a socket that is gone.
    pub(crate) fn reconfigure(
        &mut self,
        now: Instant,
        logic: &mut CacheLogic,
        filter: &mut FilterWriter,
        max_age: Duration,
        limits: ServeLimits,
        agent: Option<AgentLink>,
    ) {
        let mut orphans = Vec::new();
        if let Some(new) = agent {
            if let Some(old) = self.agent.replace(new) {
                orphans.extend(old.pending.into_values());
            }
        }
        self.endpoint
            .reconfigure(freshness(self.agent.as_ref(), max_age), limits);
        let mut cache = CacheView {
            logic,
            maps: &mut self.maps,
        };
        for ticket in orphans {
            self.endpoint
                .answer(now, &mut cache, ticket, Answer::Unreachable);
        }
        self.drive(now, SystemTime::now(), logic, filter);
    }

    /// The endpoint (its counters, for the statistics line).
    pub(crate) fn endpoint(&self) -> &Endpoint<Entry, CachedFile> {
        &self.endpoint
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
        self.endpoint.active()
    }

    /// Fetches `name` through the server-side port into the cache for
    /// nobody waiting (the fleet's member): its frames leave with the next
    /// timer pass, its end comes from [`Serve::take_fetched`].
    pub(crate) fn fetch(&mut self, now: Instant, name: &str) -> Result<(), FetchRefused> {
        self.endpoint.fetch(now, name)
    }

    /// The fetches asked with [`Serve::fetch`] that ended since the last
    /// call: by name, what landed in the cache or why nothing did.
    pub(crate) fn take_fetched(&mut self) -> Vec<(String, Result<Landed, String>)> {
        std::mem::take(&mut self.fetched)
    }

    /// A trapped frame. `None` when serving took it; `Some` when it must go
    /// on to the origin (and to the cache fill).
    pub(crate) fn handle_trapped(
        &mut self,
        now: Instant,
        wall: SystemTime,
        r: Redirected,
        logic: &mut CacheLogic,
        filter: &mut FilterWriter,
    ) -> Option<Redirected> {
        let t = Trapped {
            frame: r.mbuf.data(),
            class: &r.class,
            side: r.side,
            tsc: r.tsc,
        };
        let mut cache = CacheView {
            logic,
            maps: &mut self.maps,
        };
        let taken = self.endpoint.handle(now, wall, &mut cache, t);
        if taken == Taken::Fill {
            // The fill follows a fetch like any transfer on the wire.
            logic.handle_frame(now, wall, r.side == 0, r.mbuf.data());
        }
        self.drive(now, wall, logic, filter);
        (taken == Taken::Forward).then_some(r)
    }

    /// Runs the endpoint's timers and sends what they produced.
    pub(crate) fn handle_timers(
        &mut self,
        now: Instant,
        logic: &mut CacheLogic,
        filter: &mut FilterWriter,
    ) {
        let mut cache = CacheView {
            logic,
            maps: &mut self.maps,
        };
        self.endpoint.handle_timeout(now, &mut cache);
        self.drive(now, SystemTime::now(), logic, filter);
    }

    /// Talks to the agent: reads answers, runs the validator's timers, and
    /// hands verdicts to the endpoint. Returns the held requests that must
    /// go on to the origin.
    pub(crate) fn poll_agent(
        &mut self,
        now: Instant,
        wall: SystemTime,
        logic: &mut CacheLogic,
        filter: &mut FilterWriter,
    ) -> Vec<Redirected> {
        if let Some(agent) = &mut self.agent {
            // Nothing asked, nothing to wait for: no syscall on this pass
            // (the loop runs it every few microseconds while serving).
            if !agent.pending.is_empty() {
                let mut buf = [0u8; 2048];
                while let Ok((n, _)) = agent.socket.recv_from(&mut buf) {
                    agent.validator.handle_datagram(now, wall, &buf[..n]);
                }
                // Retries run on the monotonic clock; `wall` only stamps
                // requests.
                if agent.validator.poll_timeout().is_some_and(|t| t <= now) {
                    agent.validator.handle_timeout(now, wall);
                }
                self.answer_verdicts(now, logic);
                self.drive(now, wall, logic, filter);
            }
        }
        std::mem::take(&mut self.forward)
    }

    /// Sends the validator's questions and hands its verdicts to the endpoint.
    fn answer_verdicts(&mut self, now: Instant, logic: &mut CacheLogic) {
        let Some(agent) = &mut self.agent else {
            return;
        };
        while let Some(t) = agent.validator.poll_transmit() {
            if let Err(e) = agent.socket.send_to(&t.payload, t.destination) {
                log::debug!("agent {}: {e}", t.destination);
            }
        }
        let mut cache = CacheView {
            logic,
            maps: &mut self.maps,
        };
        while let Some((id, verdict)) = agent.validator.poll_result() {
            let Some(ticket) = agent.pending.remove(&id) else {
                continue;
            };
            let answer = match verdict {
                Verdict::Current(_) => Answer::Current,
                Verdict::Stale(_) | Verdict::Unknown => Answer::Stale,
                Verdict::Unreachable => Answer::Unreachable,
            };
            self.endpoint.answer(now, &mut cache, ticket, answer);
        }
    }

    /// Does what the endpoint asks until it has nothing more: filter rules
    /// first (a session's trap rule is in place before its first frame),
    /// questions, events, frames.
    fn drive(
        &mut self,
        now: Instant,
        wall: SystemTime,
        logic: &mut CacheLogic,
        filter: &mut FilterWriter,
    ) {
        loop {
            self.apply_filter_updates(filter);
            let asked = self.ask(now, wall, logic);
            while let Some(e) = self.endpoint.poll_event() {
                match e {
                    endpoint::Event::Served {
                        client,
                        client_mac,
                        server,
                        name,
                    } => logic.image_map_mut().record_file_from(
                        wall,
                        client,
                        Some(client_mac.0),
                        server,
                        &name,
                        ServedFrom::Cache,
                    ),
                    endpoint::Event::Fetched { name, result } => {
                        self.fetched.push((name, result));
                    }
                }
            }
            self.send(now, wall, logic);
            if !asked {
                break;
            }
            // Answers from the validator's cache or the fleet come at once.
            self.answer_verdicts(now, logic);
        }
    }

    /// Asks the fleet's mirror, or the validator, each question the
    /// endpoint has; true if any was asked.
    fn ask(&mut self, now: Instant, wall: SystemTime, logic: &mut CacheLogic) -> bool {
        let mut asked = false;
        while let Some(q) = self.endpoint.poll_question() {
            asked = true;
            // The fleet's mirror first: the serving policy, then, live, it
            // decides without the agent.
            if let Some(f) = &mut self.fleet {
                let client = bootcache_fleet::policy::Client {
                    mac: Some(q.client_mac.0),
                    arch: logic
                        .image_map()
                        .client_by_mac(q.client_mac.0)
                        .and_then(|c| c.arch),
                };
                let bridge = bootcache_fleet::policy::Bridge {
                    id: &f.id,
                    site: &f.site,
                };
                let policy = f.mirror.decide(&q.name, bridge, client);
                let answer = if policy.action == bootcache_fleet::policy::Action::Origin {
                    f.counters.policy_origin += 1;
                    log::debug!(
                        "{}: to the origin by the serving policy's rule {:?}",
                        q.name,
                        policy.rule
                    );
                    Some(Answer::Mirrored(false))
                } else {
                    f.counters.policy_serve += 1;
                    match f.mirror.verdict(now, &q.name, &q.sha256) {
                        Some(bootcache_fleet::Verdict::Current(_)) => {
                            f.counters.current += 1;
                            Some(Answer::Mirrored(true))
                        }
                        Some(_) => {
                            f.counters.stale += 1;
                            Some(Answer::Mirrored(false))
                        }
                        None => {
                            f.counters.fallbacks += 1;
                            None
                        }
                    }
                };
                if let Some(a) = answer {
                    let mut cache = CacheView {
                        logic,
                        maps: &mut self.maps,
                    };
                    self.endpoint.answer(now, &mut cache, q.ticket, a);
                    continue;
                }
            }
            let Some(agent) = &mut self.agent else {
                continue;
            };
            match agent
                .validator
                .validate(now, wall, agent.addr, &q.name, q.sha256)
            {
                Ok(id) => {
                    agent.pending.insert(id, q.ticket);
                }
                // The validator is full: the origin answers.
                Err(_) => {
                    let mut cache = CacheView {
                        logic,
                        maps: &mut self.maps,
                    };
                    self.endpoint
                        .answer(now, &mut cache, q.ticket, Answer::Refused);
                }
            }
        }
        asked
    }

    /// Applies the endpoint's rule changes; a trap rule the filter cannot
    /// take ends its session (the request goes on to the origin).
    fn apply_filter_updates(&mut self, filter: &mut FilterWriter) {
        let mut changed = false;
        while let Some(u) = self.endpoint.poll_filter_update() {
            changed = true;
            if let Err(e) = crate::worker::apply_update(filter, u) {
                bootcache_metrics::warn_limited!("cache hit not served: header filter: {e}");
                self.endpoint.filter_refused(u);
            }
        }
        if changed {
            filter.publish();
        }
    }

    /// Builds and pushes the endpoint's frames while the inject ring has
    /// room (sessions' DATA leave a headroom for everything else: a frame
    /// pushed into a full ring would be lost and cost the client a
    /// retransmission timeout).
    fn send(&mut self, now: Instant, wall: SystemTime, logic: &mut CacheLogic) {
        loop {
            let headroom = (self.inject.capacity() / 8).min(INJECT_HEADROOM);
            let room = self.inject.len() + headroom < self.inject.capacity();
            let Some(t) = self.endpoint.poll_transmit(now, room) else {
                return;
            };
            match t {
                Transmit::Session(f) => {
                    let hl = f.reply.header_len();
                    let len = hl + f.packet.payload_len();
                    let built = Mbuf::alloc(&self.pool).ok().and_then(|mut m| {
                        let buf = m.append(u16::try_from(len).ok()?)?;
                        let n = self.endpoint.write(&f, &mut buf[hl..])?;
                        f.reply.emit_in_place(buf, n).ok()?;
                        Some(m)
                    });
                    // A lost frame: the session sends it again on its timer.
                    let Some(m) = built else {
                        self.frames.frame_drops += 1;
                        continue;
                    };
                    if self.push(m, f.side) {
                        if let Some(at) = f.ack_tsc {
                            self.turnaround.record_tsc(at, dpdk::tsc());
                        }
                    }
                }
                Transmit::Udp {
                    side,
                    repr,
                    payload,
                    fill,
                } => {
                    let Some(m) = build_udp(&self.pool, &repr, &payload) else {
                        self.frames.frame_drops += 1;
                        continue;
                    };
                    if fill {
                        logic.handle_frame(now, wall, true, m.data());
                    }
                    self.push(m, side);
                }
                Transmit::Frame { side, frame } => match build_raw(&self.pool, &frame) {
                    Some(m) => {
                        self.push(m, side);
                    }
                    None => self.frames.frame_drops += 1,
                },
                Transmit::Forward { side, frame, tsc } => match build_raw(&self.pool, &frame) {
                    Some(mbuf) => self.forward.push(Redirected {
                        mbuf,
                        side,
                        tsc,
                        trapped: true,
                        class: wire::classify::classify(&frame),
                    }),
                    // The client asks again.
                    None => self.frames.frame_drops += 1,
                },
            }
        }
    }

    /// Hands a frame to the fast path's TX on `side`, counting it.
    fn push(&mut self, mbuf: Mbuf, side: u8) -> bool {
        match self.inject.push(Injected { mbuf, side }) {
            Ok(()) => {
                self.frames.frames += 1;
                true
            }
            Err(_) => {
                self.frames.frame_drops += 1;
                false
            }
        }
    }
}

impl crate::control::PortFetcher for Serve {
    fn start_fetch(&mut self, name: &str) -> Result<(), String> {
        self.fetch(Instant::now(), name).map_err(|e| e.to_string())
    }
}

/// A frame with `repr`'s headers around `payload`, in a new buffer.
fn build_udp(pool: &Mempool, repr: &UdpFrameRepr, payload: &[u8]) -> Option<Mbuf> {
    let mut m = Mbuf::alloc(pool).ok()?;
    let len = repr.buffer_len(payload.len()).max(60);
    let buf = m.append(u16::try_from(len).ok()?)?;
    buf.fill(0);
    repr.emit(buf, payload).ok()?;
    Some(m)
}

/// A copy of `frame` in a new buffer.
fn build_raw(pool: &Mempool, frame: &[u8]) -> Option<Mbuf> {
    let mut m = Mbuf::alloc(pool).ok()?;
    m.append(u16::try_from(frame.len()).ok()?)?
        .copy_from_slice(frame);
    Some(m)
}
