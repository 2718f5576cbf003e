//! The endpoint driven with a simulated clock, loss and reordering: real
//! frames in (built and classified as the fast path does), frames out built
//! as the driver builds them, TFTP clients and (addressed mode) an origin
//! played by the test.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use wire::classify::classify;
use wire::frame::icmpv4::EchoFrameRepr;
use wire::frame::{ArpFrameRepr, MacAddr, UdpFrameRepr, VlanScope};
use wire::tftp::{ErrorCode, Packet};

use super::*;
use crate::tftp_client::ClientOptions;
use crate::tftp_server::tests::Rng;
use crate::tftp_server::{ServerConfig, ServerSession};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SERVER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const OWN: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
const OWN_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 5]);
const U: VlanScope = VlanScope::UNTAGGED;

type Key = (VlanScope, Ipv4Addr, String);

/// The cache: files by key, with their fill time.
#[derive(Default)]
struct FakeCache {
    files: HashMap<Key, (Arc<Vec<u8>>, SystemTime)>,
    publishing: HashSet<String>,
    unverified: HashSet<String>,
}

impl Cache for FakeCache {
    type Entry = Key;
    type File = Arc<Vec<u8>>;

    fn lookup(&self, scope: VlanScope, server: Ipv4Addr, name: &str) -> Option<Key> {
        let k = (scope, server, name.to_owned());
        self.files.contains_key(&k).then_some(k)
    }
    fn facts(&self, e: &Key) -> CopyFacts {
        CopyFacts {
            name: e.2.clone(),
            size: self.files[e].0.len(),
            sha256: [7; 32],
            last_seen: self.files[e].1,
        }
    }
    fn check_verified(&mut self, e: &Key) -> bool {
        !self.unverified.remove(&e.2)
    }
    fn open(&mut self, e: &Key) -> Option<Arc<Vec<u8>>> {
        self.files.get(e).map(|f| Arc::clone(&f.0))
    }
    fn is_publishing(&self, _: VlanScope, _: Ipv4Addr, name: &str) -> bool {
        self.publishing.contains(name)
    }
}

/// A lock-step TFTP client (RFC 1350 with blksize), as the test plays it.
struct Client {
    addr: SocketAddrV4,
    mac: MacAddr,
    server: Ipv4Addr,
    server_mac: MacAddr,
    name: String,
    blksize: u16,
    tid: Option<u16>,
    got: Vec<u8>,
    next_block: u16,
    done: bool,
    error: Option<(ErrorCode, String)>,
    last_sent: Vec<u8>,
    deadline: Instant,
    /// When the first DATA came.
    first_data: Option<Instant>,
}

impl Client {
    fn new(n: u8, server: Ipv4Addr, server_mac: MacAddr, name: &str, now: Instant) -> Client {
        Client {
            addr: SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, n), 2000 + u16::from(n)),
            mac: MacAddr([2, 0, 0, 1, 0, n]),
            server,
            server_mac,
            name: name.to_owned(),
            blksize: 1024,
            tid: None,
            got: Vec::new(),
            next_block: 1,
            done: false,
            error: None,
            last_sent: Vec::new(),
            deadline: now,
            first_data: None,
        }
    }

    fn rrq(&self) -> Vec<u8> {
        let mut p = vec![0, 1];
        p.extend_from_slice(self.name.as_bytes());
        p.extend_from_slice(b"\0octet\0blksize\0");
        p.extend_from_slice(self.blksize.to_string().as_bytes());
        p.push(0);
        p
    }

    /// The client's next packet as a frame: the RRQ at first, else the last
    /// one again (its timer expired).
    fn send(&mut self, now: Instant) -> Vec<u8> {
        if self.last_sent.is_empty() {
            self.last_sent = self.rrq();
        }
        self.deadline = now + Duration::from_millis(200);
        let port = match self.tid {
            Some(tid) if self.last_sent[1] != 1 => tid,
            _ => 69,
        };
        udp_frame(
            self.mac,
            self.server_mac,
            self.addr,
            SocketAddrV4::new(self.server, port),
            &self.last_sent,
        )
    }

    /// A frame for the client; the answer to send, if any.
    fn receive(&mut self, now: Instant, frame: &[u8]) -> Option<Vec<u8>> {
        let (repr, payload) = UdpFrameRepr::parse(frame).ok()?;
        let std::net::SocketAddr::V4(src) = repr.src() else {
            return None;
        };
        if self.done || *src.ip() != self.server || repr.dst() != self.addr.into() {
            return None;
        }
        if *self.tid.get_or_insert(src.port()) != src.port() {
            return None;
        }
        let ack = match Packet::parse(payload).ok()? {
            Packet::Oack(_) => 0,
            Packet::Data { block, payload } => {
                self.first_data.get_or_insert(now);
                if block == self.next_block {
                    self.got.extend_from_slice(payload);
                    self.next_block = self.next_block.wrapping_add(1);
                    if payload.len() < usize::from(self.blksize) {
                        self.done = true;
                    }
                }
                self.next_block.wrapping_sub(1)
            }
            Packet::Error { code, message } => {
                self.error = Some((code, String::from_utf8_lossy(message).into()));
                self.done = true;
                return None;
            }
            _ => return None,
        };
        self.last_sent = vec![0, 4, (ack >> 8) as u8, ack as u8];
        Some(self.send(now))
    }
}

fn udp_frame(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
) -> Vec<u8> {
    let repr = UdpFrameRepr::ipv4(src_mac, dst_mac, src, dst);
    let mut buf = vec![0; repr.buffer_len(payload.len()).max(60)];
    repr.emit(&mut buf, payload).unwrap();
    buf
}

/// A frame in flight.
struct Flight {
    frame: Vec<u8>,
    side: u8,
}

/// The simulated wire: an endpoint, its cache, clients on side 0, and in
/// addressed mode an origin on side 1.
struct Sim {
    ep: Endpoint<Key, Arc<Vec<u8>>>,
    cache: FakeCache,
    now: Instant,
    wall: SystemTime,
    rng: Rng,
    /// Percent of frames lost, each way.
    loss: u32,
    /// Extra delay up to this many µs (reorders frames).
    jitter_us: u64,
    /// Frames to the endpoint, by arrival time (and a sequence number).
    to_ep: BTreeMap<(Instant, u64), Flight>,
    /// Frames to the clients, by arrival time.
    to_clients: BTreeMap<(Instant, u64), Vec<u8>>,
    seq: u64,
    clients: Vec<Client>,
    forwarded: Vec<Vec<u8>>,
    updates: Vec<FilterUpdate>,
    questions: Vec<Question>,
    /// Frames the endpoint sent to the origin side, and that the fill saw.
    to_origin: Vec<Vec<u8>>,
    filled: usize,
    origin: Option<Origin>,
    /// Refuse every trap rule (a full filter).
    refuse_traps: bool,
}

/// The origin of addressed mode: a real server session per request.
struct Origin {
    files: HashMap<String, Vec<u8>>,
    sessions: Vec<(SocketAddrV4, u16, ServerSession<Vec<u8>>)>,
    requests: usize,
    /// Answer every request with this error.
    error: Option<(ErrorCode, &'static str)>,
    /// Send this error after this many blocks instead of the rest.
    fail_after: Option<(usize, ErrorCode, &'static str)>,
    blocks_sent: usize,
    /// When a transfer completed.
    completed_at: Option<Instant>,
}

impl Sim {
    fn new(freshness: Freshness, own: Option<OwnAddress>) -> Sim {
        Sim {
            ep: Endpoint::new(Config {
                server: ServerConfig::default(),
                freshness,
                limits: Limits {
                    sessions: 64,
                    held: 64,
                    fetches: 8,
                    stream_bytes: 1 << 20,
                },
                own,
            }),
            cache: FakeCache::default(),
            now: Instant::now(),
            wall: SystemTime::now(),
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            loss: 0,
            jitter_us: 0,
            to_ep: BTreeMap::new(),
            to_clients: BTreeMap::new(),
            seq: 0,
            clients: Vec::new(),
            forwarded: Vec::new(),
            updates: Vec::new(),
            questions: Vec::new(),
            to_origin: Vec::new(),
            filled: 0,
            origin: None,
            refuse_traps: false,
        }
    }

    fn cache_file(&mut self, scope: VlanScope, server: Ipv4Addr, name: &str, bytes: Vec<u8>) {
        self.cache
            .files
            .insert((scope, server, name.into()), (Arc::new(bytes), self.wall));
    }

    fn delay(&mut self) -> Duration {
        let j = if self.jitter_us > 0 {
            self.rng.next() % self.jitter_us
        } else {
            0
        };
        Duration::from_micros(100 + j)
    }

    fn send_to_endpoint(&mut self, frame: Vec<u8>, side: u8) {
        if self.rng.percent(self.loss) {
            return;
        }
        let at = self.now + self.delay();
        self.seq += 1;
        self.to_ep.insert((at, self.seq), Flight { frame, side });
    }

    fn send_to_client(&mut self, frame: Vec<u8>) {
        if self.rng.percent(self.loss) {
            return;
        }
        let at = self.now + self.delay();
        self.seq += 1;
        self.to_clients.insert((at, self.seq), frame);
    }

    /// Handles one frame as the driver does.
    fn deliver(&mut self, f: Flight) -> Taken {
        let class = classify(&f.frame);
        let t = Trapped {
            frame: &f.frame,
            class: &class,
            side: f.side,
            tsc: 1,
        };
        let taken = self.ep.handle(self.now, self.wall, &mut self.cache, t);
        match taken {
            Taken::Forward => self.forwarded.push(f.frame),
            Taken::Fill => self.filled += 1,
            Taken::Answered => {}
        }
        self.drain();
        taken
    }

    /// Does what the endpoint asks, as the driver does.
    fn drain(&mut self) {
        while let Some(u) = self.ep.poll_filter_update() {
            if self.refuse_traps && matches!(u, FilterUpdate::Trap { .. }) {
                self.ep.filter_refused(u);
            }
            self.updates.push(u);
        }
        while let Some(q) = self.ep.poll_question() {
            self.questions.push(q);
        }
        while let Some(t) = self.ep.poll_transmit(self.now, true) {
            match t {
                Transmit::Session(f) => {
                    let hl = f.reply.header_len();
                    let mut buf = vec![0; hl + f.packet.payload_len()];
                    let n = self.ep.write(&f, &mut buf[hl..]).unwrap();
                    f.reply.emit_in_place(&mut buf, n).unwrap();
                    self.send_to_client(buf);
                }
                Transmit::Udp {
                    side,
                    repr,
                    payload,
                    ..
                } => {
                    let mut buf = vec![0; repr.buffer_len(payload.len()).max(60)];
                    repr.emit(&mut buf, &payload).unwrap();
                    if side == 1 {
                        self.to_origin.push(buf);
                    } else {
                        self.send_to_client(buf);
                    }
                }
                Transmit::Frame { side, frame } => {
                    if side == 1 {
                        self.to_origin.push(frame);
                    } else {
                        self.send_to_client(frame);
                    }
                }
                Transmit::Forward { frame, .. } => self.forwarded.push(frame.into()),
            }
        }
    }

    /// Plays the origin (addressed mode): answers ARP, serves requests.
    fn run_origin(&mut self) {
        let Some(mut o) = self.origin.take() else {
            return;
        };
        for frame in std::mem::take(&mut self.to_origin) {
            if let Ok(req) = ArpFrameRepr::parse(&frame) {
                let reply = req.reply_to(SERVER_MAC).unwrap();
                let mut buf = vec![0; reply.buffer_len()];
                reply.emit(&mut buf).unwrap();
                self.send_to_endpoint(buf, 1);
                continue;
            }
            let Ok((repr, payload)) = UdpFrameRepr::parse(&frame) else {
                continue;
            };
            let std::net::SocketAddr::V4(from) = repr.src() else {
                continue;
            };
            let std::net::SocketAddr::V4(to) = repr.dst() else {
                continue;
            };
            if to.port() == 69 {
                let Ok(Packet::Rrq(rrq)) = Packet::parse(payload) else {
                    continue;
                };
                o.requests += 1;
                let tid = 30000 + o.requests as u16;
                if let Some((code, msg)) = o.error {
                    let err = crate::tftp_server::error_response(code, msg);
                    let f = udp_frame(
                        SERVER_MAC,
                        OWN_MAC,
                        SocketAddrV4::new(SERVER, tid),
                        from,
                        &err,
                    );
                    self.send_to_endpoint(f, 1);
                    continue;
                }
                let name = String::from_utf8_lossy(rrq.filename).into_owned();
                let file = o.files[&name].clone();
                // The fill follows the transfer and publishes at its end.
                self.cache.publishing.insert(name);
                let s = ServerSession::new(self.now, &rrq, file, &ServerConfig::default()).unwrap();
                o.sessions.push((from, tid, s));
            } else if let Some((_, _, s)) = o
                .sessions
                .iter_mut()
                .find(|(c, t, _)| *c == from && *t == to.port())
            {
                s.handle_packet(self.now, payload);
            }
        }
        let mut out = Vec::new();
        for (client, tid, s) in &mut o.sessions {
            if s.poll_timeout().is_some_and(|t| t <= self.now) {
                s.handle_timeout(self.now);
            }
            while let Some(t) = s.poll_transmit(self.now) {
                if let tftp_server::Transmit::Data { .. } = t {
                    o.blocks_sent += 1;
                    if let Some((n, code, msg)) = o.fail_after {
                        if o.blocks_sent > n {
                            let err = crate::tftp_server::error_response(code, msg);
                            out.push(udp_frame(
                                SERVER_MAC,
                                OWN_MAC,
                                SocketAddrV4::new(SERVER, *tid),
                                *client,
                                &err,
                            ));
                            s.abort(code, "gone");
                            while s.poll_transmit(self.now).is_some() {}
                            break;
                        }
                    }
                }
                let mut buf = vec![0; t.payload_len()];
                let n = s.write(&t, &mut buf).unwrap();
                buf.truncate(n);
                out.push(udp_frame(
                    SERVER_MAC,
                    OWN_MAC,
                    SocketAddrV4::new(SERVER, *tid),
                    *client,
                    &buf,
                ));
            }
            // The fill publishes what the origin sent once it is complete.
            if let Some(Outcome::Completed { .. }) = s.outcome() {
                o.completed_at.get_or_insert(self.now);
                let name = o.files.keys().next().cloned().unwrap_or_default();
                let bytes = o.files[&name].clone();
                self.cache.publishing.remove(&name);
                self.cache
                    .files
                    .entry((U, SERVER, name))
                    .or_insert((Arc::new(bytes), self.wall));
            }
        }
        o.sessions.retain(|(_, _, s)| !s.is_finished());
        for f in out {
            self.send_to_endpoint(f, 1);
        }
        self.origin = Some(o);
    }

    /// Runs everything until every client is done or `limit` passed.
    fn run(&mut self, limit: Duration) {
        let end = self.now + limit;
        for i in 0..self.clients.len() {
            let f = self.clients[i].send(self.now);
            self.send_to_endpoint(f, 0);
        }
        while self.now < end && !self.clients.iter().all(|c| c.done) {
            self.step();
        }
    }

    /// One tick of 100 µs of simulated time: frames delivered, timers
    /// run, the origin and the clients answer.
    fn step(&mut self) {
        self.now += Duration::from_micros(100);
        self.wall += Duration::from_micros(100);
        while let Some(e) = self.to_ep.first_entry() {
            if e.key().0 > self.now {
                break;
            }
            let f = e.remove();
            self.deliver(f);
        }
        self.ep.handle_timeout(self.now, &mut self.cache);
        self.drain();
        self.run_origin();
        while let Some(e) = self.to_clients.first_entry() {
            if e.key().0 > self.now {
                break;
            }
            let frame = e.remove();
            for i in 0..self.clients.len() {
                if let Some(a) = self.clients[i].receive(self.now, &frame) {
                    self.send_to_endpoint(a, 0);
                }
            }
        }
        for i in 0..self.clients.len() {
            if !self.clients[i].done && self.clients[i].deadline <= self.now {
                let f = self.clients[i].send(self.now);
                self.send_to_endpoint(f, 0);
            }
        }
    }
}

fn file(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn max_age() -> Freshness {
    Freshness::MaxAge(Duration::from_secs(60))
}

#[test]
fn transparent_hits_survive_loss_and_reordering() {
    for seed in 1..6u64 {
        let mut sim = Sim::new(max_age(), None);
        sim.rng = Rng(seed * 0x1234_5678_9abc_def1);
        sim.loss = 10;
        sim.jitter_us = 3000;
        let data = file(70_000, seed as u8);
        sim.cache_file(U, SERVER, "boot.img", data.clone());
        let now = sim.now;
        for n in 1..4 {
            sim.clients
                .push(Client::new(n, SERVER, SERVER_MAC, "boot.img", now));
        }
        sim.run(Duration::from_secs(120));
        for c in &sim.clients {
            assert!(c.done, "seed {seed}: client {} not done", c.addr);
            assert_eq!(c.error, None);
            assert!(
                c.got == data,
                "seed {seed}: client {} got other bytes",
                c.addr
            );
        }
        // No request went to the origin (only packets of ended sessions,
        // as their rules are gone), each session trapped and released its
        // rule.
        for f in &sim.forwarded {
            let (r, _) = UdpFrameRepr::parse(f).unwrap();
            assert_ne!(r.dst().port(), 69, "seed {seed}: a request was forwarded");
        }
        let traps = sim
            .updates
            .iter()
            .filter(|u| matches!(u, FilterUpdate::Trap { .. }))
            .count();
        assert_eq!(traps, 3, "{:?}", sim.updates);
        // Let the sessions see their last ACKs, or time out.
        for _ in 0..200 {
            sim.now += Duration::from_millis(100);
            let f: Vec<_> = std::mem::take(&mut sim.to_ep).into_values().collect();
            for f in f {
                sim.deliver(f);
            }
            sim.ep.handle_timeout(sim.now, &mut sim.cache);
            sim.drain();
        }
        assert_eq!(sim.ep.active(), 0);
        let removes = sim
            .updates
            .iter()
            .filter(|u| matches!(u, FilterUpdate::Remove { .. }))
            .count();
        assert_eq!(removes, 3);
        assert_eq!(sim.ep.counters().hits, 3);
        assert!(sim.ep.counters().retransmits > 0, "10% loss, no resend?");
    }
}

#[test]
fn misses_stale_copies_and_duplicates_go_the_right_way() {
    let mut sim = Sim::new(max_age(), None);
    let now = sim.now;
    sim.cache_file(U, SERVER, "old", vec![1; 100]);
    // Filled two minutes ago: too old for a 60 s max age.
    sim.cache
        .files
        .get_mut(&(U, SERVER, "old".into()))
        .unwrap()
        .1 -= Duration::from_secs(120);
    let mut miss = Client::new(1, SERVER, SERVER_MAC, "missing", now);
    let mut old = Client::new(2, SERVER, SERVER_MAC, "old", now);
    for c in [&mut miss, &mut old] {
        let f = c.send(now);
        assert_eq!(sim.deliver(Flight { frame: f, side: 0 }), Taken::Forward);
    }
    // Frames from the server side, and other ports, are the origin's.
    let f = udp_frame(
        SERVER_MAC,
        miss.mac,
        SocketAddrV4::new(SERVER, 69),
        miss.addr,
        b"x",
    );
    assert_eq!(sim.deliver(Flight { frame: f, side: 1 }), Taken::Forward);
    let c = sim.ep.counters();
    assert_eq!((c.misses, c.stale, c.hits), (1, 1, 0));
    // A request answered from the cache: its retransmission is dropped.
    sim.cache_file(U, SERVER, "new", vec![2; 100]);
    let mut c3 = Client::new(3, SERVER, SERVER_MAC, "new", now);
    let f = c3.send(now);
    assert_eq!(
        sim.deliver(Flight {
            frame: f.clone(),
            side: 0
        }),
        Taken::Answered
    );
    assert_eq!(sim.deliver(Flight { frame: f, side: 0 }), Taken::Answered);
    assert_eq!(sim.ep.counters().hits, 1);
    assert_eq!(sim.ep.active(), 1);
    // A copy not hashed since the cache was opened: the origin answers.
    sim.cache_file(U, SERVER, "unhashed", vec![3; 100]);
    sim.cache.unverified.insert("unhashed".into());
    let f = Client::new(4, SERVER, SERVER_MAC, "unhashed", now).send(now);
    assert_eq!(sim.deliver(Flight { frame: f, side: 0 }), Taken::Forward);
    assert_eq!(sim.ep.counters().rehashed, 1);
}

#[test]
fn held_requests_wait_for_the_validator() {
    let mut sim = Sim::new(
        Freshness::Ask {
            serve_when_unreachable: false,
        },
        None,
    );
    let now = sim.now;
    let data = file(5000, 9);
    sim.cache_file(U, SERVER, "f", data.clone());
    let mut a = Client::new(1, SERVER, SERVER_MAC, "f", now);
    let mut b = Client::new(2, SERVER, SERVER_MAC, "f", now);
    let mut c = Client::new(3, SERVER, SERVER_MAC, "f", now);
    let (fa, fb, fc) = (a.send(now), b.send(now), c.send(now));
    for f in [&fa, &fb, &fc] {
        assert_eq!(
            sim.deliver(Flight {
                frame: f.clone(),
                side: 0
            }),
            Taken::Answered
        );
    }
    // A retransmitted request is not asked about twice.
    sim.deliver(Flight { frame: fa, side: 0 });
    assert_eq!(sim.questions.len(), 3);
    assert_eq!(sim.ep.held(), 3);
    assert!(sim
        .questions
        .iter()
        .all(|q| q.name == "f" && q.sha256 == [7; 32]));
    let q: Vec<_> = sim.questions.drain(..).collect();
    sim.ep
        .answer(now, &mut sim.cache, q[0].ticket, Answer::Current);
    sim.ep
        .answer(now, &mut sim.cache, q[1].ticket, Answer::Stale);
    sim.ep
        .answer(now, &mut sim.cache, q[2].ticket, Answer::Unreachable);
    // An answer for nothing held is ignored.
    sim.ep
        .answer(now, &mut sim.cache, q[2].ticket, Answer::Current);
    sim.drain();
    assert_eq!(sim.ep.held(), 0);
    // The stale and the unreachable requests go on as they came.
    assert_eq!(sim.forwarded, vec![fb, fc]);
    let k = sim.ep.counters();
    assert_eq!(
        (k.validated_current, k.stale, k.agent_unreachable, k.hits),
        (1, 1, 1, 1)
    );
    // The current one is served.
    sim.clients.push(a);
    sim.clients[0].last_sent.clear();
    let frames: Vec<_> = std::mem::take(&mut sim.to_clients).into_values().collect();
    for f in frames {
        if let Some(ack) = sim.clients[0].receive(sim.now, &f) {
            sim.send_to_endpoint(ack, 0);
        }
    }
    sim.clients[0].deadline = sim.now + Duration::from_secs(10);
    let end = sim.now + Duration::from_secs(10);
    while !sim.clients[0].done && sim.now < end {
        sim.now += Duration::from_millis(1);
        let f: Vec<_> = std::mem::take(&mut sim.to_ep).into_values().collect();
        for f in f {
            sim.deliver(f);
        }
        let frames: Vec<_> = std::mem::take(&mut sim.to_clients).into_values().collect();
        for f in frames {
            if let Some(ack) = sim.clients[0].receive(sim.now, &f) {
                sim.send_to_endpoint(ack, 0);
            }
        }
    }
    assert!(sim.clients[0].got == data);
}

#[test]
fn held_requests_are_bounded_per_client_host() {
    let mut sim = Sim::new(
        Freshness::Ask {
            serve_when_unreachable: false,
        },
        None,
    );
    sim.ep.core.limits.held = 8; // a host's share: 4
    let now = sim.now;
    sim.cache_file(U, SERVER, "f", vec![0; 10]);
    for port in 0..5u16 {
        let mut c = Client::new(1, SERVER, SERVER_MAC, "f", now);
        c.addr.set_port(3000 + port);
        let f = c.send(now);
        let want = if port < 4 {
            Taken::Answered
        } else {
            Taken::Forward
        };
        assert_eq!(
            sim.deliver(Flight { frame: f, side: 0 }),
            want,
            "port {port}"
        );
    }
    assert_eq!(sim.ep.counters().held_refused, 1);
    // Another host still has room.
    let f = Client::new(2, SERVER, SERVER_MAC, "f", now).send(now);
    assert_eq!(sim.deliver(Flight { frame: f, side: 0 }), Taken::Answered);
}

#[test]
fn reconfigure_applies_to_new_requests_and_keeps_sessions_under_way() {
    let mut sim = Sim::new(max_age(), None);
    let now = sim.now;
    sim.cache_file(U, SERVER, "f", vec![7; 100]);
    sim.cache.files.get_mut(&(U, SERVER, "f".into())).unwrap().1 -= Duration::from_secs(120);
    // Two minutes old: stale for 60 s, current for an hour.
    let f = Client::new(1, SERVER, SERVER_MAC, "f", now).send(now);
    assert_eq!(sim.deliver(Flight { frame: f, side: 0 }), Taken::Forward);
    let limits = Limits {
        sessions: 1,
        held: 64,
        fetches: 8,
        stream_bytes: 0,
    };
    sim.ep
        .reconfigure(Freshness::MaxAge(Duration::from_secs(3600)), limits);
    let f = Client::new(2, SERVER, SERVER_MAC, "f", now).send(now);
    assert_eq!(sim.deliver(Flight { frame: f, side: 0 }), Taken::Answered);
    // One session at most now: the next host goes to the origin, the
    // session under way goes on.
    let f = Client::new(3, SERVER, SERVER_MAC, "f", now).send(now);
    assert_eq!(sim.deliver(Flight { frame: f, side: 0 }), Taken::Forward);
    assert_eq!(sim.ep.active(), 1);
    let c = sim.ep.counters();
    assert_eq!((c.stale, c.sessions_refused), (1, 1));
    // stream_bytes is not the configuration's: kept.
    assert_eq!(sim.ep.core.limits.stream_bytes, 1 << 20);
}

#[test]
fn a_refused_trap_rule_sends_the_request_to_the_origin() {
    let mut sim = Sim::new(max_age(), None);
    sim.refuse_traps = true;
    let now = sim.now;
    sim.cache_file(U, SERVER, "f", vec![0; 10]);
    let f = Client::new(1, SERVER, SERVER_MAC, "f", now).send(now);
    sim.deliver(Flight {
        frame: f.clone(),
        side: 0,
    });
    assert_eq!(sim.forwarded, vec![f]);
    assert!(sim.to_clients.is_empty(), "the session sent nothing");
    assert_eq!(sim.ep.active(), 0);
    assert_eq!(sim.ep.counters().filter_refused, 1);
    assert_eq!(sim.ep.counters().hits, 0);
}

fn own() -> OwnAddress {
    OwnAddress {
        ip: OWN,
        mac: OWN_MAC,
        origin: SERVER,
        fetch: ClientOptions {
            blksize: Some(1428),
            ..Default::default()
        },
    }
}

fn addressed_sim(files: &[(&str, Vec<u8>)]) -> Sim {
    let mut sim = Sim::new(max_age(), Some(own()));
    sim.origin = Some(Origin {
        files: files
            .iter()
            .map(|(n, b)| (n.to_string(), b.clone()))
            .collect(),
        sessions: Vec::new(),
        requests: 0,
        error: None,
        fail_after: None,
        blocks_sent: 0,
        completed_at: None,
    });
    sim
}

#[test]
fn addressed_miss_is_fetched_once_and_served_to_every_waiter() {
    for seed in 1..4u64 {
        let data = file(200_000, 3);
        let mut sim = addressed_sim(&[("pxe/ipxe.efi", data.clone())]);
        // Odd seeds: no room to stream, served once cached.
        if seed % 2 == 1 {
            sim.ep.core.stream_room = 0;
        }
        sim.rng = Rng(seed);
        sim.loss = 5;
        sim.jitter_us = 2000;
        let now = sim.now;
        for n in 1..4 {
            sim.clients
                .push(Client::new(n, OWN, OWN_MAC, "/pxe/ipxe.efi", now));
        }
        sim.run(Duration::from_secs(300));
        for c in &sim.clients {
            assert!(c.done && c.error.is_none(), "seed {seed}: {:?}", c.error);
            assert!(c.got == data, "seed {seed}: other bytes");
        }
        let o = sim.origin.as_ref().unwrap();
        assert_eq!(o.requests, 1, "seed {seed}: one fetch for every client");
        let (a, _) = sim.ep.addressed_counters().unwrap();
        assert_eq!(a.fetches, 1);
        assert!(sim.filled > 0, "the fill saw the origin's frames");
        // No filter rules: the own-address rule traps everything.
        assert!(sim.updates.is_empty());
        assert!(sim.forwarded.is_empty());
    }
}

#[test]
fn a_failed_fetch_sends_every_waiter_the_origins_error() {
    let mut sim = addressed_sim(&[]);
    sim.origin.as_mut().unwrap().error = Some((ErrorCode::FileNotFound, "no such file here"));
    let now = sim.now;
    for n in 1..3 {
        sim.clients.push(Client::new(n, OWN, OWN_MAC, "gone", now));
    }
    sim.run(Duration::from_secs(30));
    for c in &sim.clients {
        assert_eq!(
            c.error,
            Some((ErrorCode::FileNotFound, "no such file here".into()))
        );
    }
    assert_eq!(sim.ep.addressed_counters().unwrap().0.fetches_failed, 1);
    assert_eq!(sim.ep.held(), 0);
}

#[test]
fn addressed_answers_arp_ping_and_refuses_writes() {
    let mut sim = addressed_sim(&[]);
    let now = sim.now;
    let c = Client::new(1, OWN, OWN_MAC, "x", now);
    let req = ArpFrameRepr::request(c.mac, *c.addr.ip(), OWN);
    let mut buf = vec![0; req.buffer_len()];
    req.emit(&mut buf).unwrap();
    assert_eq!(
        sim.deliver(Flight {
            frame: buf,
            side: 0
        }),
        Taken::Answered
    );
    let reply: Vec<_> = std::mem::take(&mut sim.to_clients).into_values().collect();
    let reply = ArpFrameRepr::parse(&reply[0]).unwrap();
    assert_eq!((reply.arp.sender_ip, reply.arp.sender_mac), (OWN, OWN_MAC));
    // Ping.
    let echo = EchoFrameRepr {
        src_mac: c.mac,
        dst_mac: OWN_MAC,
        outer_vlan: None,
        inner_vlan: None,
        src_ip: *c.addr.ip(),
        dst_ip: OWN,
        ident: 7,
        seq: 1,
        is_request: true,
    };
    let mut buf = vec![0; echo.buffer_len(8).max(60)];
    echo.emit(&mut buf, b"12345678").unwrap();
    assert_eq!(
        sim.deliver(Flight {
            frame: buf,
            side: 0
        }),
        Taken::Answered
    );
    let reply: Vec<_> = std::mem::take(&mut sim.to_clients).into_values().collect();
    let (reply, data) = EchoFrameRepr::parse(&reply[0]).unwrap();
    assert!(!reply.is_request);
    assert_eq!(
        (reply.dst_ip, reply.seq, &data[..8]),
        (*c.addr.ip(), 1, &b"12345678"[..])
    );
    // A write request: ERROR 2; another port: dropped, never forwarded.
    let wrq = udp_frame(
        c.mac,
        OWN_MAC,
        c.addr,
        SocketAddrV4::new(OWN, 69),
        b"\0\x02f\0octet\0",
    );
    assert_eq!(
        sim.deliver(Flight {
            frame: wrq,
            side: 0
        }),
        Taken::Answered
    );
    let other = udp_frame(c.mac, OWN_MAC, c.addr, SocketAddrV4::new(OWN, 80), b"x");
    assert_eq!(
        sim.deliver(Flight {
            frame: other,
            side: 0
        }),
        Taken::Answered
    );
    let err: Vec<_> = std::mem::take(&mut sim.to_clients).into_values().collect();
    let (_, p) = UdpFrameRepr::parse(&err[0]).unwrap();
    assert!(matches!(
        Packet::parse(p),
        Ok(Packet::Error {
            code: ErrorCode::AccessViolation,
            ..
        })
    ));
    let (a, _) = sim.ep.addressed_counters().unwrap();
    assert_eq!((a.pings, a.errors_sent, a.dropped), (1, 1, 1));
    assert!(sim.forwarded.is_empty());
}

#[test]
fn a_miss_streams_to_its_waiters_before_the_fetch_ends() {
    let data = file(1_000_000, 5);
    let mut sim = addressed_sim(&[("big", data.clone())]);
    sim.jitter_us = 500;
    let now = sim.now;
    for n in 1..3 {
        sim.clients.push(Client::new(n, OWN, OWN_MAC, "big", now));
    }
    sim.run(Duration::from_secs(300));
    let done = sim.origin.as_ref().unwrap().completed_at.expect("fetched");
    for c in &sim.clients {
        assert!(c.done && c.error.is_none(), "{:?}", c.error);
        assert!(c.got == data, "other bytes");
        let first = c.first_data.unwrap();
        // Served while the fetch ran, long before its end.
        assert!(
            first + Duration::from_millis(50) < done,
            "first block {:?} before the fetch's end",
            done - first
        );
    }
    assert_eq!(sim.origin.as_ref().unwrap().requests, 1);
    assert_eq!(sim.ep.addressed_counters().unwrap().0.streamed, 2);
    // The stream's memory is given back once every session ended.
    for _ in 0..100 {
        sim.now += Duration::from_millis(100);
        sim.ep.handle_timeout(sim.now, &mut sim.cache);
        sim.drain();
    }
    assert!(sim.ep.core.streams.is_empty());
    assert_eq!(sim.ep.core.stream_room, 1 << 20);
}

#[test]
fn a_fetch_failing_mid_stream_sends_its_clients_the_origins_error() {
    let mut sim = addressed_sim(&[("big", file(300_000, 1))]);
    sim.origin.as_mut().unwrap().fail_after =
        Some((40, ErrorCode::AccessViolation, "origin went away"));
    let now = sim.now;
    for n in 1..3 {
        sim.clients.push(Client::new(n, OWN, OWN_MAC, "big", now));
    }
    sim.run(Duration::from_secs(60));
    for c in &sim.clients {
        assert!(!c.got.is_empty(), "streamed some blocks first");
        assert_eq!(
            c.error,
            Some((ErrorCode::AccessViolation, "origin went away".into()))
        );
    }
    assert_eq!(sim.ep.active(), 0);
    assert!(sim.ep.core.streams.is_empty());
}

/// Runs `sim` (no clients needed) until the endpoint tells the end of a
/// fetch asked with [`Endpoint::fetch`], or `limit`; the events seen.
fn run_until_fetched(sim: &mut Sim, limit: Duration) -> Vec<Event> {
    let end = sim.now + limit;
    for i in 0..sim.clients.len() {
        let f = sim.clients[i].send(sim.now);
        sim.send_to_endpoint(f, 0);
    }
    let mut events = Vec::new();
    while sim.now < end {
        sim.step();
        events.extend(std::iter::from_fn(|| sim.ep.poll_event()));
        let fetched = events.iter().any(|e| matches!(e, Event::Fetched { .. }));
        if fetched && sim.clients.iter().all(|c| c.done) {
            break;
        }
    }
    events
}

fn fetched(events: &[Event]) -> Vec<(String, Result<Landed, String>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Fetched { name, result } => Some((name.clone(), result.clone())),
            Event::Served { .. } => None,
        })
        .collect()
}

#[test]
fn a_fetch_for_nobody_lands_in_the_cache_and_is_told_once() {
    for seed in 1..5u64 {
        let data = file(300_000, 9);
        let mut sim = addressed_sim(&[("images/vmlinuz", data.clone())]);
        sim.rng = Rng(seed);
        sim.loss = 5;
        sim.jitter_us = 2000;
        let now = sim.now;
        assert_eq!(sim.ep.fetch(now, "images/vmlinuz"), Ok(()));
        let events = run_until_fetched(&mut sim, Duration::from_secs(300));
        let landed = Landed {
            size: data.len() as u64,
            sha256: [7; 32],
        };
        assert_eq!(
            fetched(&events),
            vec![("images/vmlinuz".to_string(), Ok(landed))],
            "seed {seed}"
        );
        // One fetch (its request may reach the origin twice when the
        // first answer is lost).
        assert!(sim.filled > 0, "the fill saw the origin's frames");
        let (a, _) = sim.ep.addressed_counters().unwrap();
        assert_eq!((a.fetches, a.fetches_completed), (1, 1), "seed {seed}");
        // Nobody waited: nothing held, no bytes kept in memory, no
        // client served.
        assert_eq!(sim.ep.held(), 0);
        assert_eq!(sim.ep.active_fetches(), 0);
        assert!(sim.ep.core.streams.is_empty());
        assert_eq!(sim.ep.core.stream_room, 1 << 20);
        assert_eq!(sim.ep.counters().hits, 0);
    }
}

#[test]
fn a_client_joins_a_fetch_for_nobody_and_is_served() {
    let data = file(200_000, 4);
    let mut sim = addressed_sim(&[("f", data.clone())]);
    sim.loss = 3;
    sim.jitter_us = 1000;
    let now = sim.now;
    assert_eq!(sim.ep.fetch(now, "f"), Ok(()));
    // Asked again (the member tried again): the one fetch.
    assert_eq!(sim.ep.fetch(now, "f"), Ok(()));
    sim.clients.push(Client::new(1, OWN, OWN_MAC, "f", now));
    let events = run_until_fetched(&mut sim, Duration::from_secs(300));
    let c = &sim.clients[0];
    assert!(c.done && c.error.is_none(), "{:?}", c.error);
    assert!(c.got == data, "other bytes");
    assert_eq!(fetched(&events).len(), 1, "{events:?}");
    assert!(fetched(&events)[0].1.is_ok());
    assert_eq!(sim.origin.as_ref().unwrap().requests, 1);
    let (a, _) = sim.ep.addressed_counters().unwrap();
    assert_eq!((a.fetches, a.fetch_joins), (1, 2));
}

#[test]
fn a_failed_fetch_for_nobody_is_told_with_the_origins_reason() {
    let mut sim = addressed_sim(&[]);
    sim.origin.as_mut().unwrap().error = Some((ErrorCode::FileNotFound, "no such file here"));
    let now = sim.now;
    assert_eq!(sim.ep.fetch(now, "gone"), Ok(()));
    let events = run_until_fetched(&mut sim, Duration::from_secs(30));
    let f = fetched(&events);
    assert_eq!(f.len(), 1, "{events:?}");
    let err = f[0].1.clone().unwrap_err();
    assert!(err.contains("no such file here"), "{err}");
    assert_eq!(sim.ep.addressed_counters().unwrap().0.fetches_failed, 1);
    assert_eq!(sim.ep.active_fetches(), 0);
}

#[test]
fn an_origin_that_never_answers_ends_a_fetch_for_nobody() {
    let mut sim = addressed_sim(&[("f", file(10, 1))]);
    sim.loss = 100;
    let now = sim.now;
    assert_eq!(sim.ep.fetch(now, "f"), Ok(()));
    let events = run_until_fetched(&mut sim, Duration::from_secs(120));
    let f = fetched(&events);
    assert_eq!(f.len(), 1, "{events:?}");
    assert!(f[0].1.is_err(), "{f:?}");
    assert_eq!(sim.ep.active_fetches(), 0);
}

#[test]
fn fetches_for_nobody_are_bounded_and_need_an_address() {
    let mut sim = addressed_sim(&[]);
    let now = sim.now;
    // Sim's max_fetches is 8.
    for i in 0..8 {
        assert_eq!(sim.ep.fetch(now, &format!("f{i}")), Ok(()));
    }
    assert_eq!(sim.ep.fetch(now, "f8"), Err(FetchRefused::Busy(8)));
    assert_eq!(sim.ep.addressed_counters().unwrap().0.fetches_refused, 1);
    // A fetch under way is joined, even at the bound.
    assert_eq!(sim.ep.fetch(now, "f3"), Ok(()));
    // One key per file: the caller normalises.
    assert!(matches!(
        sim.ep.fetch(now, "/f9"),
        Err(FetchRefused::Name(..))
    ));
    assert_eq!(sim.ep.active_fetches(), 8);
    let mut plain = Sim::new(max_age(), None);
    assert_eq!(plain.ep.fetch(now, "f"), Err(FetchRefused::NotAddressed));
}
