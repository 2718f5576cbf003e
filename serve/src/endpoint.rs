//! The serving endpoint (figures 1d, 3d), sans-I/O: owns every session
//! serving a cache hit, every read request held for the validator, and, in
//! addressed mode, every origin fetch.
//!
//! The driver feeds it trapped frames, each with the fast path's
//! [`Class`] (nothing is parsed twice: an ACK to a session is found by the
//! class's addresses and ports alone), and time; it pulls what to do:
//! [`Endpoint::poll_transmit`] (frames described: a session's DATA names a
//! byte range of the cached file, which [`Endpoint::write`] copies into the
//! driver's buffer), [`Endpoint::poll_filter_update`],
//! [`Endpoint::poll_question`] (is this cached copy current? answered with
//! [`Endpoint::answer`]), [`Endpoint::poll_event`] and
//! [`Endpoint::poll_timeout`]. The cache is reached through the [`Cache`]
//! trait, passed to each call.
//!
//! Transparent intercept: a client's RRQ to a boot server for a cached,
//! current file is answered as that server would (its MAC and IP, a fresh
//! TID); anything else goes on to the origin unchanged ([`Taken::Forward`]).
//! Freshness: [`Freshness::MaxAge`] serves copies filled within that age;
//! [`Freshness::Ask`] holds the request and asks the validator.
//!
//! Addressed mode ([`OwnAddress`], in `addressed.rs`): bootcache's own
//! address answers ARP and ping, and read requests sent to it are served
//! from the cache or fetched from the origin first.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime};

use wire::classify::{Class, IpVersion, Kind};
use wire::frame::{MacAddr, UdpFrameRepr, VlanScope};
use wire::tftp::{Packet, Request};

use crate::tftp_server::{self, FileSource, Outcome, ServerConfig, ServerSession};
use crate::FilterUpdate;

mod addressed;
#[cfg(test)]
mod tests;

use addressed::Addressed;
pub use addressed::{AddressedCounters, OwnAddress};

/// First TID bootcache answers from; it walks up and wraps.
const TID_BASE: u16 = 49152;

/// A session's key: the client's VLANs, its address and port, our TID.
/// Two VLANs may hold two clients with one address and port.
pub type SessionKey = (VlanScope, SocketAddrV4, u16);

/// What the endpoint needs of the cache (the driver's filestore; a map in
/// tests).
pub trait Cache {
    /// A cached copy, as the cache names it.
    type Entry: Clone;
    /// A cached copy opened for reading.
    type File: FileSource;
    /// The copy of `name` from `server` on `scope`, if cached.
    fn lookup(&self, scope: VlanScope, server: Ipv4Addr, name: &str) -> Option<Self::Entry>;
    /// The copy's file name, SHA-256 and last fill or refresh.
    fn facts(&self, entry: &Self::Entry) -> CopyFacts;
    /// True when the copy was hashed since the cache was opened; false
    /// queues its re-hash (the origin answers meanwhile).
    fn check_verified(&mut self, entry: &Self::Entry) -> bool;
    /// The copy opened for reading; `None` when it cannot be (logged).
    fn open(&mut self, entry: &Self::Entry) -> Option<Self::File>;
    /// True while a file just fetched is on its way into the cache.
    fn is_publishing(&self, scope: VlanScope, server: Ipv4Addr, name: &str) -> bool;
}

/// What serving needs to know of a cached copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFacts {
    /// The file name as cached.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256.
    pub sha256: [u8; 32],
    /// When it was filled or last refreshed.
    pub last_seen: SystemTime,
}

/// How a cached copy is judged current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Served when filled or refreshed within this age (no agent).
    MaxAge(Duration),
    /// Each hit is held and a [`Question`] asked; `serve_when_unreachable`
    /// is the policy when the validator gets no answer.
    Ask {
        /// Serve the copy anyway when the agent does not answer.
        serve_when_unreachable: bool,
    },
}

/// Bounds of the tables serving keeps per client request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Sessions at once (`[limits] max_sessions`).
    pub sessions: usize,
    /// Requests held for the validator or an origin fetch at once
    /// (`[limits] max_held_requests`).
    pub held: usize,
    /// Origin fetches at once, addressed mode (`[limits] max_fetches`).
    pub fetches: usize,
    /// Bytes of files being fetched held in memory at once to stream them
    /// to their waiters (addressed mode); a fetch that would not fit is
    /// served once it is in the cache.
    pub stream_bytes: u64,
}

/// The endpoint's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// How sessions negotiate and retransmit.
    pub server: ServerConfig,
    /// How copies are judged current.
    pub freshness: Freshness,
    /// Table bounds.
    pub limits: Limits,
    /// Addressed mode: bootcache's own address.
    pub own: Option<OwnAddress>,
}

/// A frame the fast path trapped, with what it already knows of it.
#[derive(Debug, Clone, Copy)]
pub struct Trapped<'a> {
    /// The whole frame.
    pub frame: &'a [u8],
    /// The fast path's classification of `frame`.
    pub class: &'a Class,
    /// Bridge side it arrived on (0: clients, 1: boot server).
    pub side: u8,
    /// TSC at arrival (echoed in [`SessionFrame::ack_tsc`]).
    pub tsc: u64,
}

/// What became of a trapped frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The endpoint took it (answered, held, or dropped as a duplicate).
    Answered,
    /// Not ours: on to the origin unchanged (the cache fill sees it).
    Forward,
    /// Taken, and the cache fill must see it (the origin's answer to a fetch).
    Fill,
}

/// A packet of a serving session: headers `reply`, payload written by
/// [`Endpoint::write`] from the cached file.
#[derive(Debug, Clone)]
pub struct SessionFrame {
    /// The session.
    pub key: SessionKey,
    /// Bridge side to send it on.
    pub side: u8,
    /// Its headers (server or own MAC and IP, our TID, the client's VLANs).
    pub reply: UdpFrameRepr,
    /// The TFTP packet, described.
    pub packet: tftp_server::Transmit,
    /// For the first DATA answering a client's packet: that packet's
    /// receive TSC (the ACK-to-DATA turnaround).
    pub ack_tsc: Option<u64>,
}

/// A frame for the driver to build and send.
#[derive(Debug, Clone)]
pub enum Transmit {
    /// A serving session's packet.
    Session(SessionFrame),
    /// A UDP payload in `repr`'s headers (an ERROR, a fetch's packet).
    Udp {
        /// Bridge side.
        side: u8,
        /// Headers.
        repr: UdpFrameRepr,
        /// The TFTP packet.
        payload: Vec<u8>,
        /// The cache fill must see it (a fetch's request or ACK).
        fill: bool,
    },
    /// A whole frame (ARP, an echo reply).
    Frame {
        /// Bridge side.
        side: u8,
        /// The frame.
        frame: Vec<u8>,
    },
    /// A held request the cache does not answer: on to the origin, on the
    /// other side, as received (the cache fill sees it).
    Forward {
        /// Bridge side it arrived on.
        side: u8,
        /// The frame.
        frame: Box<[u8]>,
        /// Its receive TSC.
        tsc: u64,
    },
}

/// Names a held request's question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(u64);

/// Is the cached copy of `name` with `sha256` current? Answer with
/// [`Endpoint::answer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// What to answer with.
    pub ticket: Ticket,
    /// The file name.
    pub name: String,
    /// The cached copy's SHA-256.
    pub sha256: [u8; 32],
    /// The client asking (the fleet's serving policy decides per client).
    pub client: Ipv4Addr,
    /// Its MAC.
    pub client_mac: MacAddr,
}

/// The validator's answer to a [`Question`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The agent confirmed the copy.
    Current,
    /// The agent said stale or unknown.
    Stale,
    /// The agent did not answer.
    Unreachable,
    /// The validator was full (too many questions or waiters).
    Refused,
    /// The fleet's mirror decided (true: current) without the agent.
    Mirrored(bool),
}

/// What happened, for the image map and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A client started reading `name` from the cache.
    Served {
        /// The client.
        client: Ipv4Addr,
        /// Its MAC.
        client_mac: MacAddr,
        /// The server it asked (or bootcache's own address).
        server: Ipv4Addr,
        /// The file.
        name: String,
    },
    /// A fetch asked with [`Endpoint::fetch`] (no client waiting on it)
    /// ended: the copy that landed in the cache, or why none did.
    Fetched {
        /// The file, as asked.
        name: String,
        /// What the cache holds now under the fetch's key (its size and
        /// SHA-256: the caller checks them against what it expects), or
        /// the reason the fetch failed.
        result: Result<Landed, String>,
    },
}

/// A fetched file as it landed in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Landed {
    /// Its size.
    pub size: u64,
    /// Its SHA-256, as the cache recorded it.
    pub sha256: [u8; 32],
}

/// Why [`Endpoint::fetch`] did not start a fetch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchRefused {
    /// No own address (`[addressed]`): nothing can be fetched through the
    /// server-side port.
    #[error("bootcache owns no address on the segment ([addressed]): it cannot fetch through the server-side port")]
    NotAddressed,
    /// `[limits] max_fetches` fetches are under way (or no port is free).
    #[error("{0} fetches under way (max_fetches): try again")]
    Busy(usize),
    /// The name cannot be asked for by TFTP.
    #[error("{0:?} cannot be asked for by TFTP: {1}")]
    Name(String, String),
}

/// What serving did, for the operator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeCounters {
    /// Read requests answered from the cache.
    pub hits: u64,
    /// Read requests for files not in the cache (forwarded or fetched).
    pub misses: u64,
    /// Cached copies too old to serve, or stale or unknown for the agent.
    pub stale: u64,
    /// Validations the agent did not answer.
    pub agent_unreachable: u64,
    /// Hits the agent confirmed current.
    pub validated_current: u64,
    /// Sessions that delivered the whole file.
    pub completed: u64,
    /// Sessions that ended with a UEFI size probe (a normal end).
    pub size_probes: u64,
    /// Sessions the client ended with an ERROR.
    pub client_errors: u64,
    /// Sessions whose client stopped answering.
    pub timeouts: u64,
    /// Sessions aborted.
    pub aborted: u64,
    /// File bytes delivered from the cache (acknowledged by clients).
    pub served_bytes: u64,
    /// DATA and OACK packets of ended sessions sent again.
    pub retransmits: u64,
    /// Hits sent to the origin because the cached file was not hashed
    /// again since the cache was opened.
    pub rehashed: u64,
    /// Requests sent to the origin because serving had `max_sessions`
    /// sessions (or the client had its share).
    pub sessions_refused: u64,
    /// Requests sent to the origin (or answered "busy") because
    /// `max_held_requests` were held (or the client had its share).
    pub held_refused: u64,
    /// Requests sent to the origin because the validator was full.
    pub validations_refused: u64,
    /// Hits sent to the origin because the filter had no room for the
    /// session's trap rule.
    pub filter_refused: u64,
}

/// A client's share of a table of `total` entries: a sixteenth, at least 4
/// (one host cannot take the table other clients need).
pub fn per_source(total: usize) -> usize {
    (total / 16).max(4).min(total)
}

/// A read request, kept as its bytes while it waits (the receive buffer
/// goes back to the pool at once), with its headers parsed once.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    frame: Box<[u8]>,
    side: u8,
    tsc: u64,
    /// The request's headers (the reply's are built from them).
    req: UdpFrameRepr,
    client: SocketAddrV4,
    server: Ipv4Addr,
    scope: VlanScope,
    /// Where the TFTP packet is in `frame`.
    payload: std::ops::Range<usize>,
    /// Addressed mode: the request was to bootcache's own address (answer
    /// from this MAC; fetch rather than forward).
    own_mac: Option<MacAddr>,
}

impl Held {
    /// The TFTP read request (parsed again from the kept bytes: the parsed
    /// form borrows the receive buffer, which was freed).
    fn rrq(&self) -> Option<Request<'_>> {
        match Packet::parse(self.frame.get(self.payload.clone())?) {
            Ok(Packet::Rrq(r)) => Some(r),
            _ => None,
        }
    }
}

/// What a session serves: a cached file, or one still being fetched.
pub enum Source<F> {
    /// A cached copy.
    Cached(F),
    /// A file being fetched (addressed mode): its size (the origin's
    /// `tsize`) and the bytes arrived so far. [`Endpoint::write`] copies
    /// its blocks from the fetch's buffer.
    Streamed {
        /// The file's size.
        len: u64,
        /// Bytes arrived, from the start.
        available: u64,
    },
}

impl<F: FileSource> FileSource for Source<F> {
    fn len(&self) -> u64 {
        match self {
            Source::Cached(f) => f.len(),
            Source::Streamed { len, .. } => *len,
        }
    }

    fn bytes(&self, range: std::ops::Range<u64>) -> &[u8] {
        match self {
            Source::Cached(f) => f.bytes(range),
            // Never asked: the endpoint writes streamed blocks itself.
            Source::Streamed { .. } => &[],
        }
    }

    fn available(&self) -> u64 {
        match self {
            Source::Cached(f) => f.available(),
            Source::Streamed { available, .. } => *available,
        }
    }
}

/// The bytes of a file being fetched, kept for the sessions streaming it.
pub(crate) struct Stream {
    buf: Vec<u8>,
    /// The size the origin announced (what the budget reserved).
    len: u64,
    /// The fetch is under way (the stream stays at least that long).
    fetching: bool,
}

/// A request held while the validator is asked about its cached copy.
struct Parked<E> {
    held: Held,
    entry: E,
    name: String,
}

/// One session serving a cache hit.
struct Served<F> {
    session: ServerSession<F>,
    reply: UdpFrameRepr,
    server: Ipv4Addr,
    side: u8,
    /// A trap rule was asked for (transparent intercept).
    rules: bool,
    /// Receive TSC of the client's packet not answered yet.
    ack_tsc: Option<u64>,
    /// Queued in `ready`.
    ready: bool,
    /// The request, until the client's first answer: forwarded if the
    /// filter refuses the trap rule.
    request: Option<Held>,
    /// The fetch whose bytes it streams (addressed mode), by file name.
    stream: Option<String>,
}

/// What transparent intercept and addressed mode share: sessions, held
/// requests, and the queues of outputs.
pub(crate) struct Core<E, F> {
    server_config: ServerConfig,
    freshness: Freshness,
    limits: Limits,
    sessions: HashMap<SessionKey, Served<Source<F>>>,
    /// Files being fetched whose bytes are streamed to their waiters as
    /// they arrive, by name.
    streams: HashMap<String, Stream>,
    /// Bytes the streams may still hold (`Limits::stream_bytes`).
    stream_room: u64,
    /// Sessions that may have something to send, oldest first.
    ready: VecDeque<SessionKey>,
    /// Requests under way per client address and port (sessions and held):
    /// a retransmitted RRQ of such a client is dropped.
    in_progress: HashMap<(VlanScope, SocketAddrV4), usize>,
    /// Sessions per client host.
    sessions_by_host: HashMap<(VlanScope, Ipv4Addr), usize>,
    /// Held requests per client host, and in all.
    held_by_host: HashMap<(VlanScope, Ipv4Addr), usize>,
    held_total: usize,
    parked: HashMap<Ticket, Parked<E>>,
    next_ticket: u64,
    questions: VecDeque<Question>,
    out: VecDeque<Transmit>,
    updates: VecDeque<FilterUpdate>,
    events: VecDeque<Event>,
    next_tid: u16,
    counters: ServeCounters,
}

/// The serving endpoint. See the module doc.
pub struct Endpoint<E, F> {
    core: Core<E, F>,
    own: Option<Addressed>,
}

impl<E: Clone, F: FileSource> Endpoint<E, F> {
    /// An endpoint serving as `config` says, with nothing under way.
    pub fn new(config: Config) -> Endpoint<E, F> {
        Endpoint {
            core: Core {
                server_config: config.server,
                freshness: config.freshness,
                limits: config.limits,
                sessions: HashMap::new(),
                streams: HashMap::new(),
                stream_room: config.limits.stream_bytes,
                ready: VecDeque::new(),
                in_progress: HashMap::new(),
                sessions_by_host: HashMap::new(),
                held_by_host: HashMap::new(),
                held_total: 0,
                parked: HashMap::new(),
                next_ticket: 0,
                questions: VecDeque::new(),
                out: VecDeque::new(),
                updates: VecDeque::new(),
                events: VecDeque::new(),
                next_tid: TID_BASE,
                counters: ServeCounters::default(),
            },
            own: config.own.map(Addressed::new),
        }
    }

    /// Replaces the freshness policy and the table bounds (a reload of the
    /// configuration). They apply to requests from now on: sessions and
    /// held requests under way are not cut short (past a lower bound, new
    /// requests go to the origin until enough end). `stream_bytes` is kept.
    pub fn reconfigure(&mut self, freshness: Freshness, limits: Limits) {
        let core = &mut self.core;
        core.freshness = freshness;
        core.limits = Limits {
            stream_bytes: core.limits.stream_bytes,
            ..limits
        };
    }

    /// What serving did.
    pub fn counters(&self) -> &ServeCounters {
        &self.core.counters
    }

    /// Addressed mode's counters and ARP's, when configured.
    pub fn addressed_counters(&self) -> Option<(AddressedCounters, crate::arp::ArpCounters)> {
        self.own.as_ref().map(|a| (a.counters, a.arp_counters()))
    }

    /// Origin fetches under way (addressed mode).
    pub fn active_fetches(&self) -> usize {
        self.own.as_ref().map_or(0, Addressed::active_fetches)
    }

    /// Sessions in progress.
    pub fn active(&self) -> usize {
        self.core.sessions.len()
    }

    /// Requests held for the validator or a fetch.
    pub fn held(&self) -> usize {
        self.core.held_total
    }

    /// A trapped frame.
    /// `now` runs the timers; `wall` judges a copy's age
    /// ([`Freshness::MaxAge`]).
    pub fn handle(
        &mut self,
        now: Instant,
        wall: SystemTime,
        cache: &mut impl Cache<Entry = E, File = F>,
        t: Trapped<'_>,
    ) -> Taken {
        if let Some(a) = &mut self.own {
            if a.is_own(t.class) {
                return a.handle(&mut self.core, now, wall, cache, t);
            }
        }
        self.core.handle_transparent(now, wall, cache, t)
    }

    /// Runs the timers: sessions' retransmissions, and in addressed mode
    /// ARP's and the fetches' (a fetch that brought its file serves its
    /// waiters once the cache holds it).
    pub fn handle_timeout(&mut self, now: Instant, cache: &mut impl Cache<Entry = E, File = F>) {
        if let Some(a) = &mut self.own {
            a.handle_timeout(&mut self.core, now, cache);
        }
        let core = &mut self.core;
        let due: Vec<SessionKey> = core
            .sessions
            .iter()
            .filter(|(_, s)| s.session.poll_timeout().is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            if let Some(s) = core.sessions.get_mut(&key) {
                s.session.handle_timeout(now);
            }
            core.mark_ready(key);
        }
        core.reap();
    }

    /// When [`Endpoint::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sessions = self
            .core
            .sessions
            .values()
            .filter_map(|s| s.session.poll_timeout())
            .min();
        let own = self.own.as_ref().and_then(|a| a.poll_timeout());
        match (sessions, own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next frame to send. `sessions`: whether there is room for the
    /// sessions' DATA (false keeps them queued, in the sessions, while the
    /// driver's ring is nearly full; ARP, errors and fetches still come).
    pub fn poll_transmit(&mut self, now: Instant, sessions: bool) -> Option<Transmit> {
        if let Some(t) = self.core.out.pop_front() {
            return Some(t);
        }
        if !sessions {
            return None;
        }
        let core = &mut self.core;
        while let Some(&key) = core.ready.front() {
            let Some(s) = core.sessions.get_mut(&key) else {
                core.ready.pop_front();
                continue;
            };
            match s.session.poll_transmit(now) {
                Some(packet) => {
                    let ack_tsc = match packet {
                        tftp_server::Transmit::Data { .. } => s.ack_tsc.take(),
                        _ => None,
                    };
                    return Some(Transmit::Session(SessionFrame {
                        key,
                        side: s.side,
                        reply: s.reply,
                        packet,
                        ack_tsc,
                    }));
                }
                None => {
                    s.ready = false;
                    s.ack_tsc = None;
                    core.ready.pop_front();
                }
            }
        }
        None
    }

    /// Writes the UDP payload of a session's packet into `buf`; its
    /// length. `None` when `buf` is too small or the session is gone
    /// (polled frames are written at once, before the session can end).
    pub fn write(&self, f: &SessionFrame, buf: &mut [u8]) -> Option<usize> {
        let s = self.core.sessions.get(&f.key)?;
        match (&s.stream, &f.packet) {
            // A streamed block comes from the fetch's bytes.
            (Some(name), tftp_server::Transmit::Data { block, range }) => {
                let st = self.core.streams.get(name)?;
                let bytes = st
                    .buf
                    .get(usize::try_from(range.start).ok()?..usize::try_from(range.end).ok()?)?;
                let out = buf.get_mut(..wire::tftp::HEADER_LEN + bytes.len())?;
                out[..wire::tftp::HEADER_LEN].copy_from_slice(&tftp_server::data_header(*block));
                out[wire::tftp::HEADER_LEN..].copy_from_slice(bytes);
                Some(out.len())
            }
            _ => s.session.write(&f.packet, buf).ok(),
        }
    }

    /// The next change the header filter needs.
    pub fn poll_filter_update(&mut self) -> Option<FilterUpdate> {
        self.core.updates.pop_front()
    }

    /// The filter could not take `update` (full): the session it was for
    /// ends before sending anything, and its request goes on to the origin.
    pub fn filter_refused(&mut self, update: FilterUpdate) {
        let FilterUpdate::Trap {
            scope,
            server,
            client,
        } = update
        else {
            return;
        };
        let core = &mut self.core;
        let key = (scope, client, server.port());
        let Some(mut s) = core.sessions.remove(&key) else {
            return;
        };
        core.session_gone(key);
        core.counters.hits = core.counters.hits.saturating_sub(1);
        core.counters.filter_refused += 1;
        core.updates.push_back(FilterUpdate::Remove {
            scope,
            server: *server.ip(),
            client,
        });
        if let Some(h) = s.request.take() {
            core.out.push_back(Transmit::Forward {
                side: h.side,
                frame: h.frame,
                tsc: h.tsc,
            });
        }
    }

    /// The next question for the validator.
    pub fn poll_question(&mut self) -> Option<Question> {
        self.core.questions.pop_front()
    }

    /// The validator's answer to the question `ticket`: the held request is
    /// served, or goes on to the origin (fetched, in addressed mode).
    pub fn answer(
        &mut self,
        now: Instant,
        cache: &mut impl Cache<Entry = E, File = F>,
        ticket: Ticket,
        answer: Answer,
    ) {
        let core = &mut self.core;
        let Some(p) = core.parked.remove(&ticket) else {
            return;
        };
        core.release_held(&p.held);
        let c = &mut core.counters;
        let serve = match answer {
            Answer::Current => {
                c.validated_current += 1;
                true
            }
            Answer::Stale | Answer::Mirrored(false) => {
                c.stale += 1;
                false
            }
            Answer::Mirrored(true) => true,
            Answer::Unreachable => {
                c.agent_unreachable += 1;
                matches!(
                    core.freshness,
                    Freshness::Ask {
                        serve_when_unreachable: true
                    }
                )
            }
            Answer::Refused => {
                c.validations_refused += 1;
                false
            }
        };
        if serve && core.start_session(now, cache, &p.held, &p.entry) {
            return;
        }
        match (&mut self.own, p.held.own_mac) {
            (Some(a), Some(_)) => a.join_fetch(core, now, p.held, &p.name),
            _ => core.out.push_back(Transmit::Forward {
                side: p.held.side,
                frame: p.held.frame,
                tsc: p.held.tsc,
            }),
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.core.events.pop_front()
    }

    /// Fetches `name` (normalised) from the origin through the server-side
    /// port into the cache, with no client waiting (the fleet's
    /// directives): started, or joined to the fetch of `name` under way.
    /// It counts against `max_fetches` like a client's; its end comes as
    /// [`Event::Fetched`] once the file is in the cache (or the fetch
    /// failed). Clients asking for the file meanwhile join it.
    pub fn fetch(&mut self, now: Instant, name: &str) -> Result<(), FetchRefused> {
        let Some(a) = &mut self.own else {
            return Err(FetchRefused::NotAddressed);
        };
        a.fetch_detached(&mut self.core, now, name)
    }
}

/// What to do with a hit.
enum Decision {
    /// Served, or held for the validator.
    Taken,
    /// Not served: forward (transparent) or fetch (addressed).
    NotServed(Held),
}

impl<E: Clone, F: FileSource> Core<E, F> {
    /// A trapped frame that is not to bootcache's own address.
    fn handle_transparent(
        &mut self,
        now: Instant,
        wall: SystemTime,
        cache: &mut impl Cache<Entry = E, File = F>,
        t: Trapped<'_>,
    ) -> Taken {
        let c = t.class;
        if t.side != 0 || c.kind != Kind::Udp || c.ip_version != Some(IpVersion::V4) {
            return Taken::Forward;
        }
        let (Some(src), Some(dst)) = (c.src_v4(), c.dst_v4()) else {
            return Taken::Forward;
        };
        let client = SocketAddrV4::new(src, c.src_port);
        let scope = VlanScope::new(c.outer_vlan, c.inner_vlan);
        if self.session_packet(now, (scope, client, c.dst_port), t) {
            return Taken::Answered;
        }
        if c.dst_port != 69 {
            return Taken::Forward;
        }
        if self.in_progress.contains_key(&(scope, client)) {
            return Taken::Answered;
        }
        let Some((held, Some(name))) = Held::parse(t, None) else {
            return Taken::Forward;
        };
        let Some(entry) = cache.lookup(scope, dst, &name) else {
            self.counters.misses += 1;
            return Taken::Forward;
        };
        match self.hit(now, wall, cache, held, entry) {
            Decision::Taken => Taken::Answered,
            Decision::NotServed(_) => Taken::Forward,
        }
    }

    /// A client's packet to the session `key`, if there is one.
    fn session_packet(&mut self, now: Instant, key: SessionKey, t: Trapped<'_>) -> bool {
        let Some(s) = self.sessions.get_mut(&key) else {
            return false;
        };
        let c = t.class;
        let start = usize::from(c.payload_offset);
        let payload = t
            .frame
            .get(start..start + usize::from(c.payload_len))
            .unwrap_or_default();
        s.session.handle_packet(now, payload);
        s.ack_tsc = Some(t.tsc);
        // The client answered: its trap rule is in place.
        s.request = None;
        self.mark_ready(key);
        self.reap();
        true
    }

    /// A read request for a cached copy: served now, held for the
    /// validator, or not served.
    fn hit(
        &mut self,
        now: Instant,
        wall: SystemTime,
        cache: &mut impl Cache<Entry = E, File = F>,
        held: Held,
        entry: E,
    ) -> Decision {
        match self.freshness {
            Freshness::MaxAge(max_age) => {
                let facts = cache.facts(&entry);
                let fresh = wall.duration_since(facts.last_seen).unwrap_or_default() <= max_age;
                if !fresh {
                    self.counters.stale += 1;
                    return Decision::NotServed(held);
                }
                if self.start_session(now, cache, &held, &entry) {
                    Decision::Taken
                } else {
                    Decision::NotServed(held)
                }
            }
            Freshness::Ask { .. } => {
                if !self.held_room(held.scope, *held.client.ip()) {
                    // Past the bound (or this client's share of it) the
                    // origin answers.
                    self.counters.held_refused += 1;
                    return Decision::NotServed(held);
                }
                let facts = cache.facts(&entry);
                let ticket = Ticket(self.next_ticket);
                self.next_ticket += 1;
                self.hold(&held);
                self.questions.push_back(Question {
                    ticket,
                    name: facts.name.clone(),
                    sha256: facts.sha256,
                    client: *held.client.ip(),
                    client_mac: held.req.src_mac,
                });
                self.parked.insert(
                    ticket,
                    Parked {
                        held,
                        entry,
                        name: facts.name,
                    },
                );
                Decision::Taken
            }
        }
    }

    /// Room for one more held request from `client` on `scope`: under
    /// `max_held_requests`, and under that host's share of it.
    fn held_room(&self, scope: VlanScope, client: Ipv4Addr) -> bool {
        let mine = self
            .held_by_host
            .get(&(scope, client))
            .copied()
            .unwrap_or(0);
        self.held_total < self.limits.held && mine < per_source(self.limits.held)
    }

    /// Counts `h` as held (and its client as having a request under way).
    fn hold(&mut self, h: &Held) {
        self.held_total += 1;
        *self
            .held_by_host
            .entry((h.scope, *h.client.ip()))
            .or_default() += 1;
        *self.in_progress.entry((h.scope, h.client)).or_default() += 1;
    }

    /// Undoes [`Core::hold`].
    fn release_held(&mut self, h: &Held) {
        self.held_total -= 1;
        decrement(&mut self.held_by_host, (h.scope, *h.client.ip()));
        decrement(&mut self.in_progress, (h.scope, h.client));
    }

    /// Undoes the accounting of the session `key` (removed).
    fn session_gone(&mut self, key: SessionKey) {
        decrement(&mut self.sessions_by_host, (key.0, *key.1.ip()));
        decrement(&mut self.in_progress, (key.0, key.1));
    }

    /// Room for one more session for the client of `h` (counted when not).
    fn session_room(&mut self, h: &Held) -> bool {
        let mine = self
            .sessions_by_host
            .get(&(h.scope, *h.client.ip()))
            .copied()
            .unwrap_or(0);
        if self.sessions.len() >= self.limits.sessions || mine >= per_source(self.limits.sessions) {
            self.counters.sessions_refused += 1;
            return false;
        }
        true
    }

    /// Starts serving the request `h` from the cached `entry`; false if it
    /// cannot be served (the caller forwards or fetches it).
    fn start_session(
        &mut self,
        now: Instant,
        cache: &mut impl Cache<Entry = E, File = F>,
        h: &Held,
        entry: &E,
    ) -> bool {
        if !self.session_room(h) {
            return false;
        }
        // Verified stays verified: a file this process did not hash (the
        // cache was reopened) is hashed before its first client; meanwhile
        // the origin answers (never a wait here).
        if !cache.check_verified(entry) {
            self.counters.rehashed += 1;
            return false;
        }
        let Some(file) = cache.open(entry) else {
            return false;
        };
        let name = cache.facts(entry).name;
        self.open_session(now, h, Source::Cached(file), name, None)
    }

    /// Starts a session serving `h` from `source`; `stream`: the fetch it
    /// streams. False if it cannot be served.
    fn open_session(
        &mut self,
        now: Instant,
        h: &Held,
        source: Source<F>,
        name: String,
        stream: Option<String>,
    ) -> bool {
        let Some(rrq) = h.rrq() else {
            return false;
        };
        let Ok(session) = ServerSession::new(now, &rrq, source, &self.server_config) else {
            return false; // e.g. netascii: the origin answers
        };
        let tid = self.allocate_tid(h.scope, h.client);
        let rules = h.own_mac.is_none();
        if rules {
            // The client's ACKs and ERRORs to our TID must come to us, not
            // the origin. (Addressed mode: the own-address rule traps them.)
            self.updates.push_back(FilterUpdate::Trap {
                scope: h.scope,
                server: SocketAddrV4::new(h.server, tid),
                client: h.client,
            });
        }
        let mut reply = UdpFrameRepr::ipv4(
            h.own_mac.unwrap_or(h.req.dst_mac),
            h.req.src_mac,
            SocketAddrV4::new(h.server, tid),
            h.client,
        );
        reply.outer_vlan = h.req.outer_vlan;
        reply.inner_vlan = h.req.inner_vlan;
        self.counters.hits += 1;
        log::info!(
            "serving {name:?} ({} bytes) to {} from the {}",
            session.file().len(),
            h.client,
            if stream.is_some() {
                "fetch under way"
            } else {
                "cache"
            }
        );
        self.events.push_back(Event::Served {
            client: *h.client.ip(),
            client_mac: h.req.src_mac,
            server: h.server,
            name,
        });
        let key = (h.scope, h.client, tid);
        self.sessions.insert(
            key,
            Served {
                session,
                reply,
                server: h.server,
                side: h.side,
                rules,
                ack_tsc: None,
                ready: false,
                request: rules.then(|| h.clone()),
                stream,
            },
        );
        *self
            .sessions_by_host
            .entry((h.scope, *h.client.ip()))
            .or_default() += 1;
        *self.in_progress.entry((h.scope, h.client)).or_default() += 1;
        self.mark_ready(key);
        true
    }

    /// Queues the session `key` for [`Endpoint::poll_transmit`].
    fn mark_ready(&mut self, key: SessionKey) {
        if let Some(s) = self.sessions.get_mut(&key) {
            if !s.ready {
                s.ready = true;
                self.ready.push_back(key);
            }
        }
    }

    /// Frees finished sessions and their filter rules.
    fn reap(&mut self) {
        let done: Vec<SessionKey> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.session.is_finished() && !s.ready)
            .map(|(k, _)| *k)
            .collect();
        for key in done {
            let Some(s) = self.sessions.remove(&key) else {
                continue;
            };
            self.session_gone(key);
            let c = &mut self.counters;
            c.retransmits += s.session.counters().retransmits;
            match s.session.outcome() {
                Some(Outcome::Completed { bytes, elapsed }) => {
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
                        Some(Outcome::SizeProbe) => c.size_probes += 1,
                        Some(Outcome::ClientError(_)) => c.client_errors += 1,
                        Some(Outcome::TimedOut { acked_bytes }) => {
                            c.timeouts += 1;
                            c.served_bytes += acked_bytes;
                        }
                        Some(Outcome::Aborted(_)) | None => c.aborted += 1,
                        Some(Outcome::Completed { .. }) => {}
                    }
                    log::info!("cache session with {} ({}) ended: {other:?}", key.1, key.0);
                }
            }
            if s.rules {
                self.updates.push_back(FilterUpdate::Remove {
                    scope: key.0,
                    server: s.server,
                    client: key.1,
                });
            }
            if let Some(name) = s.stream {
                self.drop_stream_if_unused(&name);
            }
        }
    }

    /// Keeps the bytes of the fetch of `name` (`len`: the origin's `tsize`)
    /// to stream them; false past [`Limits::stream_bytes`].
    fn start_stream(&mut self, name: &str, len: u64) -> bool {
        if self.streams.contains_key(name) || len > self.stream_room {
            return false;
        }
        self.stream_room -= len;
        self.streams.insert(
            name.to_owned(),
            Stream {
                // Grown as the bytes come: reserving `len` at once would
                // hold memory the origin may never send.
                buf: Vec::new(),
                len,
                fetching: true,
            },
        );
        true
    }

    /// Bytes of the fetch of `name` at `offset`: kept, and the sessions
    /// streaming it go on. Bytes past the announced size are not kept (the
    /// fetch fails on them).
    fn stream_data(&mut self, name: &str, offset: u64, bytes: &[u8]) {
        let Some(st) = self.streams.get_mut(name) else {
            return;
        };
        let end = offset + bytes.len() as u64;
        if offset != st.buf.len() as u64 || end > st.len {
            return;
        }
        st.buf.extend_from_slice(bytes);
        let keys: Vec<SessionKey> = self
            .sessions
            .iter_mut()
            .filter(|(_, s)| s.stream.as_deref() == Some(name))
            .map(|(k, s)| {
                if let Source::Streamed { available, .. } = s.session.file_mut() {
                    *available = end;
                }
                *k
            })
            .collect();
        for k in keys {
            self.mark_ready(k);
        }
    }

    /// Serves `h` from the stream of `name`; false if there is none or no
    /// room for a session.
    fn stream_to(&mut self, now: Instant, h: &Held, name: &str) -> bool {
        let Some(st) = self.streams.get(name) else {
            return false;
        };
        let source = Source::Streamed {
            len: st.len,
            available: st.buf.len() as u64,
        };
        self.session_room(h) && self.open_session(now, h, source, name.into(), Some(name.into()))
    }

    /// The fetch of `name` ended. Succeeded: its sessions go on from the
    /// bytes kept. Failed: each of them ends, its client told `error` (a
    /// TFTP ERROR payload) from the session's TID; how many.
    fn end_stream(&mut self, name: &str, error: Option<&[u8]>) -> usize {
        let Some(st) = self.streams.get_mut(name) else {
            return 0;
        };
        st.fetching = false;
        let mut told = 0;
        if let Some(error) = error {
            let keys: Vec<SessionKey> = self
                .sessions
                .iter()
                .filter(|(_, s)| s.stream.as_deref() == Some(name))
                .map(|(k, _)| *k)
                .collect();
            for key in keys {
                let Some(s) = self.sessions.remove(&key) else {
                    continue;
                };
                self.session_gone(key);
                self.counters.aborted += 1;
                self.out.push_back(Transmit::Udp {
                    side: s.side,
                    repr: s.reply,
                    payload: error.to_vec(),
                    fill: false,
                });
                told += 1;
            }
        }
        self.drop_stream_if_unused(name);
        told
    }

    /// Frees the stream of `name` once its fetch ended and no session
    /// reads it.
    fn drop_stream_if_unused(&mut self, name: &str) {
        let Some(st) = self.streams.get(name) else {
            return;
        };
        if st.fetching
            || self
                .sessions
                .values()
                .any(|s| s.stream.as_deref() == Some(name))
        {
            return;
        }
        self.stream_room += st.len;
        self.streams.remove(name);
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

impl Held {
    /// The IPv4 UDP request in `t`, its headers parsed once; `None` for
    /// anything else.
    fn headers(t: Trapped<'_>, own_mac: Option<MacAddr>) -> Option<Held> {
        let (req, payload) = UdpFrameRepr::parse(t.frame).ok()?;
        let (std::net::SocketAddr::V4(client), std::net::SocketAddr::V4(dst)) =
            (req.src(), req.dst())
        else {
            return None;
        };
        // The payload is a part of the frame: where it starts.
        let start = (payload.as_ptr() as usize).checked_sub(t.frame.as_ptr() as usize)?;
        Some(Held {
            frame: t.frame.into(),
            side: t.side,
            tsc: t.tsc,
            scope: req.vlan_scope(),
            req,
            client,
            server: *dst.ip(),
            payload: start..start + payload.len(),
            own_mac,
        })
    }

    /// The read request in `t` with its file name (`None` when not
    /// UTF-8); `None` for anything but an IPv4 TFTP RRQ.
    fn parse(t: Trapped<'_>, own_mac: Option<MacAddr>) -> Option<(Held, Option<String>)> {
        let h = Held::headers(t, own_mac)?;
        let rrq = h.rrq()?;
        let name = std::str::from_utf8(rrq.filename).ok().map(str::to_owned);
        Some((h, name))
    }
}

/// Decrements a per-key count, dropping the key at zero (the tables stay
/// as small as what is under way).
fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
    if let std::collections::hash_map::Entry::Occupied(mut o) = map.entry(key) {
        *o.get_mut() -= 1;
        if *o.get() == 0 {
            o.remove();
        }
    }
}
