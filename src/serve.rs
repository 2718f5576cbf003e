//! Serving cache hits by transparent intercept (figures 1d, 3d): a client's
//! RRQ to a boot server is trapped by the fast path; when the filestore holds
//! the file and the copy is fresh enough, bootcache answers as the server
//! would (server MAC and IP, a fresh TID) from the memory-mapped file, and
//! the origin never sees the request. Otherwise the RRQ goes on to the origin
//! unchanged, and the cache fill follows that transfer as usual.
//!
//! Freshness, for now: `serve_max_age` — a copy filled or refreshed within
//! that many seconds is served (the agent-validated policy comes with the
//! agent integration).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dataplane::{FilterWriter, InjectRing, Injected};
use dpdk::{MappedFile, Mbuf, Mempool};
use slowpath::imagemap::ServedFrom;
use slowpath::{CacheLogic, FileSource, ServeOutcome, ServerConfig, ServerSession};
use wire::frame::{IpRepr, UdpFrameRepr};
use wire::tftp::Packet;

/// First TID bootcache answers from; it walks up and wraps.
const TID_BASE: u16 = 49152;

/// A cached file, mapped.
struct CachedFile(MappedFile);

impl FileSource for CachedFile {
    fn len(&self) -> u64 {
        self.0.bytes().len() as u64
    }

    fn bytes(&self, range: Range<u64>) -> &[u8] {
        &self.0.bytes()[range.start as usize..range.end as usize]
    }
}

struct Served {
    session: ServerSession<CachedFile>,
    /// Headers of the frames to the client: server MAC/IP, our TID.
    reply: UdpFrameRepr,
    server: Ipv4Addr,
}

/// What serving did, for the operator.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ServeCounters {
    /// Read requests answered from the cache.
    pub(crate) hits: u64,
    /// Read requests for files not in the cache (forwarded).
    pub(crate) misses: u64,
    /// Cached copies too old to serve (forwarded).
    pub(crate) stale: u64,
    /// Sessions that delivered the whole file.
    pub(crate) completed: u64,
    /// Sessions that ended otherwise (client error, timeout, size probe).
    pub(crate) other_endings: u64,
    /// Frames built and handed to the fast path.
    pub(crate) frames: u64,
    /// Frames lost because no buffer or no ring slot was free.
    pub(crate) frame_drops: u64,
}

/// The serving side of the slow path.
pub(crate) struct Serve {
    pool: Mempool,
    inject: Arc<InjectRing>,
    config: ServerConfig,
    max_age: Duration,
    sessions: HashMap<(SocketAddrV4, u16), Served>,
    next_tid: u16,
    pub(crate) counters: ServeCounters,
}

impl Serve {
    pub(crate) fn new(pool: Mempool, inject: Arc<InjectRing>, max_age: Duration) -> Serve {
        Serve {
            pool,
            inject,
            config: ServerConfig::default(),
            max_age,
            sessions: HashMap::new(),
            next_tid: TID_BASE,
            counters: ServeCounters::default(),
        }
    }

    /// Sessions in progress.
    pub(crate) fn active(&self) -> usize {
        self.sessions.len()
    }

    /// A trapped frame from `side`. True when serving consumed it; false
    /// when it must go on to the origin (and to the cache fill).
    pub(crate) fn handle_trapped(
        &mut self,
        now: Instant,
        wall: SystemTime,
        side: u8,
        frame: &[u8],
        logic: &mut CacheLogic,
        filter: &mut FilterWriter,
    ) -> bool {
        if side != 0 {
            return false;
        }
        let Ok((repr, payload)) = UdpFrameRepr::parse(frame) else {
            return false;
        };
        let (std::net::SocketAddr::V4(client), std::net::SocketAddr::V4(dst)) =
            (repr.src(), repr.dst())
        else {
            return false;
        };
        if let Some(s) = self.sessions.get_mut(&(client, dst.port())) {
            s.session.handle_packet(now, payload);
            self.pump((client, dst.port()), now);
            self.reap(filter);
            return true;
        }
        if dst.port() != 69 {
            return false;
        }
        // A retransmitted RRQ of a session in progress: the session answers on its own timer.
        if self.sessions.keys().any(|(c, _)| *c == client) {
            return true;
        }
        let Ok(Packet::Rrq(req)) = Packet::parse(payload) else {
            return false;
        };
        let Ok(name) = std::str::from_utf8(req.filename) else {
            return false;
        };
        let server = *dst.ip();
        let Some(entry) = logic.filestore().lookup(server, name).cloned() else {
            self.counters.misses += 1;
            return false;
        };
        let age = wall.duration_since(entry.last_seen).unwrap_or_default();
        if age > self.max_age {
            self.counters.stale += 1;
            return false;
        }
        let file = match MappedFile::open(&logic.filestore().path_of(&entry)) {
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
        let tid = self.allocate_tid(client);
        // The client's ACKs and ERRORs to our TID must come to us, not the origin.
        let (srv, cli) = (
            std::net::IpAddr::V4(server),
            std::net::SocketAddr::V4(client),
        );
        let installed = filter
            .expect(srv, cli)
            .and_then(|_| filter.pin(SocketAddrV4::new(server, tid).into(), cli))
            .and_then(|_| filter.set_trap(srv, cli, true));
        if let Err(e) = installed {
            log::warn!("cache hit for {name:?} not served: {e}");
            let _ = filter.remove(srv, cli);
            return false;
        }
        filter.publish();
        let mut reply = UdpFrameRepr::ipv4(
            repr.dst_mac,
            repr.src_mac,
            SocketAddrV4::new(server, tid),
            client,
        );
        if let IpRepr::Ipv4(ip) = &mut reply.ip {
            ip.ttl = 64;
        }
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
            (client, tid),
            Served {
                session,
                reply,
                server,
            },
        );
        self.pump((client, tid), now);
        true
    }

    /// Runs the sessions' timers.
    pub(crate) fn handle_timers(&mut self, now: Instant, filter: &mut FilterWriter) {
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
            self.pump(key, now);
        }
        self.reap(filter);
    }

    /// Sends whatever the session has to send, as frames to the client.
    fn pump(&mut self, key: (SocketAddrV4, u16), now: Instant) {
        let Some(s) = self.sessions.get_mut(&key) else {
            return;
        };
        while let Some(t) = s.session.poll_transmit(now) {
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
            match self.inject.push(Injected { mbuf: m, side: 0 }) {
                Ok(()) => self.counters.frames += 1,
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
            match s.session.outcome() {
                Some(ServeOutcome::Completed { bytes, elapsed }) => {
                    self.counters.completed += 1;
                    log::info!(
                        "served {bytes} bytes to {} from the cache in {elapsed:?}",
                        key.0
                    );
                }
                other => {
                    self.counters.other_endings += 1;
                    log::info!("cache session with {} ended: {other:?}", key.0);
                }
            }
            filter.remove(
                std::net::IpAddr::V4(s.server),
                std::net::SocketAddr::V4(key.0),
            );
        }
        filter.publish();
    }

    fn allocate_tid(&mut self, client: SocketAddrV4) -> u16 {
        loop {
            let tid = self.next_tid;
            self.next_tid = if self.next_tid == u16::MAX {
                TID_BASE
            } else {
                self.next_tid + 1
            };
            if !self.sessions.contains_key(&(client, tid)) {
                return tid;
            }
        }
    }
}
