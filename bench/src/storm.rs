//! A boot storm: N simulated PXE clients, each doing the whole exchange —
//! DHCP DISCOVER/OFFER/REQUEST/ACK, the NBP named in the ACK by TFTP, then a
//! boot image by TFTP — against a simulated boot server (DHCP + TFTP) on the
//! far side of the device under test. Clients and server are one
//! event-driven loop in one thread: every client and every server transfer
//! is a sans-I/O state machine (`slowpath::ClientSession`,
//! `slowpath::ServerSession`) fed with frames and time; frames are built
//! straight into mbufs and queued per port, with a bound on what waits.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dpdk::{Burst, Mbuf, Mempool, Port};
use slowpath::{
    ClientOptions, ClientOutcome, ClientSession, Destination, ServerConfig, ServerSession,
};
use wire::dhcp::{DhcpOption, MessageType, Repr as Dhcp};
use wire::frame::{MacAddr, UdpFrameRepr};
use wire::tftp::Packet;

use bootcache_testbed::frames::SERVER_MAC;
use bootcache_testbed::scenario::captured_dhcp_exchange;

/// The boot server's address (DHCP and TFTP).
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The NBP's name (what the DHCP ACK names).
pub const NBP_NAME: &str = "pxelinux.0";
/// The boot image's name.
pub const IMAGE_NAME: &str = "boot/storm.img";
const CLIENT_NBP_PORT: u16 = 49152;
const CLIENT_IMAGE_PORT: u16 = 49153;
const DHCP_TIMEOUT: Duration = Duration::from_secs(1);
const DHCP_RETRIES: u32 = 8;
/// Receive bursts per port per turn of the loop (drain before sending more).
const RX_BURSTS: usize = 16;
/// Transmit bursts per port per turn.
const TX_BURSTS: usize = 2;

/// The files the simulated server holds.
#[derive(Clone)]
pub struct BootFiles {
    /// The NBP.
    pub nbp: Arc<Vec<u8>>,
    /// The boot image.
    pub image: Arc<Vec<u8>>,
}

/// How clients read.
#[derive(Debug, Clone, Copy)]
pub struct ClientShape {
    /// blksize asked for.
    pub blksize: u16,
    /// windowsize asked for.
    pub windowsize: u16,
    /// Most frames waiting for a port per side before sessions are paused.
    pub max_pending: usize,
    /// Give up on the phase after this long.
    pub phase_timeout: Duration,
}

/// What one phase (a group of clients booting at once) measured.
#[derive(Debug, Clone, Default)]
pub struct PhaseReport {
    /// Clients started.
    pub clients: usize,
    /// Clients that received both files byte-identical.
    pub completed: usize,
    /// Clients that failed (timeout, error, wrong bytes); first reasons kept.
    pub failures: Vec<String>,
    /// Number of failed clients.
    pub failed: usize,
    /// Frames that reached the boot server (its side of the bridge) plus
    /// frames it sent.
    pub origin_frames: u64,
    /// Their bytes.
    pub origin_bytes: u64,
    /// Of those, DHCP frames and bytes.
    pub origin_dhcp_frames: u64,
    /// DHCP bytes.
    pub origin_dhcp_bytes: u64,
    /// Per-client completion time (DHCPDISCOVER to the image's last byte).
    pub completion: Vec<Duration>,
    /// File bytes delivered to clients.
    pub served_bytes: u64,
    /// From the first client's start to the last client's end.
    pub elapsed: Duration,
}

impl PhaseReport {
    /// Origin TFTP frames (all but DHCP).
    pub fn origin_tftp_frames(&self) -> u64 {
        self.origin_frames - self.origin_dhcp_frames
    }

    /// Origin TFTP bytes.
    pub fn origin_tftp_bytes(&self) -> u64 {
        self.origin_bytes - self.origin_dhcp_bytes
    }

    /// Completion-time percentile (0–1), or zero when nothing completed.
    pub fn completion_percentile(&self, q: f64) -> Duration {
        percentile(&self.completion, q)
    }

    /// Aggregate served Gbit/s over the phase.
    pub fn served_gbps(&self) -> f64 {
        self.served_bytes as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e9
    }
}

/// The `q` quantile of `v` (nearest rank), zero when empty.
pub fn percentile(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort();
    let rank = ((q.clamp(0.0, 1.0) * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// Client `i`'s MAC: 02:bc:10:00:hi:lo.
pub fn client_mac(i: usize) -> [u8; 6] {
    [0x02, 0xbc, 0x10, (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

/// Client `i`'s address, 10.78.0.10 upwards.
pub fn client_ip(i: usize) -> Ipv4Addr {
    let v = 10 + i as u32;
    Ipv4Addr::new(10, 78, (v >> 8) as u8, v as u8)
}

fn client_index(mac: &[u8]) -> Option<usize> {
    (mac.len() >= 6 && mac[..3] == [0x02, 0xbc, 0x10])
        .then(|| (usize::from(mac[3]) << 16) | (usize::from(mac[4]) << 8) | usize::from(mac[5]))
}

fn ip_index(ip: Ipv4Addr) -> Option<usize> {
    let o = ip.octets();
    if o[0] != 10 || o[1] != 78 {
        return None;
    }
    (((u32::from(o[2]) << 8) | u32::from(o[3])) as usize).checked_sub(10)
}

enum Phase {
    Idle,
    Discover,
    Request,
    Nbp(Box<ClientSession>),
    Image(Box<ClientSession>),
    Done,
    Failed,
}

struct Client {
    phase: Phase,
    xid: u32,
    deadline: Option<Instant>,
    retries: u32,
    started: Option<Instant>,
    /// Offset up to which the current file's bytes were checked.
    checked: u64,
    queued: bool,
}

struct Served {
    session: ServerSession<Arc<Vec<u8>>>,
    reply: UdpFrameRepr,
    key: (SocketAddrV4, u16),
    queued: bool,
}

/// The simulation of one phase.
struct Sim<'a> {
    ports: [Port; 2],
    pool: &'a Mempool,
    files: BootFiles,
    shape: ClientShape,
    /// The captured DHCP exchange's UDP payloads: DISCOVER, OFFER, REQUEST, ACK.
    dhcp: Vec<Vec<u8>>,
    first: usize,
    clients: Vec<Client>,
    sessions: Vec<Option<Served>>,
    free: Vec<usize>,
    by_key: HashMap<(SocketAddrV4, u16), usize>,
    next_tid: u16,
    pending: [VecDeque<Mbuf>; 2],
    tx: [Burst; 2],
    dirty_clients: VecDeque<usize>,
    dirty_sessions: VecDeque<usize>,
    report: PhaseReport,
    finished: usize,
}

/// Runs `n` clients (indices `first..first + n`) booting at once through the
/// device between `ports` (0: client side, 1: server side); the simulated
/// server answers on port 1.
pub fn run_phase(
    ports: [Port; 2],
    pool: &Mempool,
    files: &BootFiles,
    shape: ClientShape,
    first: usize,
    n: usize,
) -> Result<PhaseReport> {
    let dhcp = captured_dhcp_exchange()
        .into_iter()
        .map(|(_, f)| {
            UdpFrameRepr::parse(&f)
                .map(|(_, p)| p.to_vec())
                .context("captured DHCP frame")
        })
        .collect::<Result<Vec<_>>>()?;
    anyhow::ensure!(dhcp.len() == 4, "captured DHCP exchange has 4 messages");
    let mut sim = Sim {
        ports,
        pool,
        files: files.clone(),
        shape,
        dhcp,
        first,
        clients: (0..n)
            .map(|i| Client {
                phase: Phase::Idle,
                xid: 0x5700_0000 ^ (first + i) as u32,
                deadline: None,
                retries: 0,
                started: None,
                checked: 0,
                queued: false,
            })
            .collect(),
        sessions: Vec::new(),
        free: Vec::new(),
        by_key: HashMap::new(),
        next_tid: 40000,
        pending: [VecDeque::new(), VecDeque::new()],
        tx: [Burst::new(), Burst::new()],
        dirty_clients: VecDeque::new(),
        dirty_sessions: VecDeque::new(),
        report: PhaseReport {
            clients: n,
            ..PhaseReport::default()
        },
        finished: 0,
    };
    sim.run()?;
    Ok(sim.report)
}

impl Sim<'_> {
    fn run(&mut self) -> Result<()> {
        let t0 = Instant::now();
        for i in 0..self.clients.len() {
            self.clients[i].started = Some(t0);
            self.send_dhcp(i, MessageType::Discover)?;
            self.clients[i].phase = Phase::Discover;
            self.clients[i].deadline = Some(t0 + DHCP_TIMEOUT);
        }
        let mut rx = Burst::new();
        let mut next_timers = t0;
        let give_up = t0 + self.shape.phase_timeout;
        while self.finished < self.clients.len() {
            let now = Instant::now();
            // Receive first and most: a device whose transmit ring towards
            // us is full drops frames.
            for side in 0..2 {
                for _ in 0..RX_BURSTS {
                    if self.ports[side].rx_burst(0, &mut rx) == 0 {
                        break;
                    }
                    for m in rx.drain() {
                        self.handle_rx(side, m.data(), now)?;
                    }
                }
            }
            self.pump(now)?;
            self.flush();
            if now >= next_timers {
                self.timers(now)?;
                next_timers = now + Duration::from_millis(1);
                if now >= give_up {
                    for i in 0..self.clients.len() {
                        self.fail(i, "phase timed out", now);
                    }
                }
            }
        }
        self.report.elapsed = t0.elapsed();
        // Let the last ACKs leave and drop what still arrives.
        let end = Instant::now() + Duration::from_millis(50);
        while Instant::now() < end {
            self.flush();
            for p in &self.ports {
                if p.rx_burst(0, &mut rx) > 0 {
                    rx.free_all();
                }
            }
        }
        for b in &mut self.tx {
            b.free_all();
        }
        self.pending = [VecDeque::new(), VecDeque::new()];
        Ok(())
    }

    fn handle_rx(&mut self, side: usize, frame: &[u8], now: Instant) -> Result<()> {
        let parsed = UdpFrameRepr::parse(frame);
        if side == 1 {
            self.report.origin_frames += 1;
            self.report.origin_bytes += frame.len() as u64;
        }
        let Ok((repr, payload)) = parsed else {
            return Ok(());
        };
        let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (repr.src(), repr.dst()) else {
            return Ok(());
        };
        if side == 1 {
            if dst.port() == 67 {
                self.report.origin_dhcp_frames += 1;
                self.report.origin_dhcp_bytes += frame.len() as u64;
                return self.server_dhcp(payload);
            }
            if *dst.ip() != SERVER_IP {
                return Ok(());
            }
            if dst.port() == 69 {
                return self.server_rrq(now, repr.src_mac, src, payload);
            }
            if let Some(&k) = self.by_key.get(&(src, dst.port())) {
                if let Some(s) = self.sessions[k].as_mut() {
                    s.session.handle_packet(now, payload);
                    self.mark_session(k);
                }
            }
            return Ok(());
        }
        // Client side.
        if dst.port() == 68 {
            return self.client_dhcp(now, payload);
        }
        if *src.ip() != SERVER_IP {
            return Ok(());
        }
        let Some(i) = ip_index(*dst.ip()).and_then(|g| g.checked_sub(self.first)) else {
            return Ok(());
        };
        let Some(c) = self.clients.get_mut(i) else {
            return Ok(());
        };
        match &mut c.phase {
            Phase::Nbp(s) if dst.port() == CLIENT_NBP_PORT => {
                s.handle_packet(now, src.port(), payload)
            }
            Phase::Image(s) if dst.port() == CLIENT_IMAGE_PORT => {
                s.handle_packet(now, src.port(), payload)
            }
            _ => return Ok(()),
        }
        self.mark_client(i);
        Ok(())
    }

    fn mark_client(&mut self, i: usize) {
        if !self.clients[i].queued {
            self.clients[i].queued = true;
            self.dirty_clients.push_back(i);
        }
    }

    fn mark_session(&mut self, k: usize) {
        if let Some(s) = self.sessions[k].as_mut() {
            if !s.queued {
                s.queued = true;
                self.dirty_sessions.push_back(k);
            }
        }
    }

    /// The client's DHCP message of type `t` (DISCOVER or REQUEST), from
    /// the captured one with this client's xid, MAC and address.
    fn send_dhcp(&mut self, i: usize, t: MessageType) -> Result<()> {
        let g = self.first + i;
        let mac = client_mac(g);
        let ip = client_ip(g).octets();
        let tpl = if t == MessageType::Discover { 0 } else { 2 };
        let mut d = Dhcp::parse(&self.dhcp[tpl]).context("captured DHCP request")?;
        d.xid = self.clients[i].xid;
        d.chaddr[..6].copy_from_slice(&mac);
        for o in &mut d.options {
            if let DhcpOption::Other { code: 50, data } = o {
                *data = &ip;
            }
        }
        let mut buf = vec![0u8; d.buffer_len()];
        let n = d.emit(&mut buf).context("emitting DHCP")?;
        let src = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68);
        let dst = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
        self.queue(0, MacAddr(mac), MacAddr([0xff; 6]), src, dst, &buf[..n]);
        Ok(())
    }

    fn server_dhcp(&mut self, payload: &[u8]) -> Result<()> {
        let Ok(req) = Dhcp::parse(payload) else {
            return Ok(());
        };
        let reply_type = match req.message_type() {
            Some(MessageType::Discover) => 1,
            Some(MessageType::Request) => 3,
            _ => return Ok(()),
        };
        let Some(g) = client_index(&req.chaddr) else {
            return Ok(());
        };
        let (xid, chaddr) = (req.xid, req.chaddr);
        let mut d = Dhcp::parse(&self.dhcp[reply_type]).context("captured DHCP reply")?;
        d.xid = xid;
        d.chaddr = chaddr;
        d.yiaddr = client_ip(g);
        d.siaddr = SERVER_IP;
        let mut buf = vec![0u8; d.buffer_len()];
        let n = d.emit(&mut buf).context("emitting DHCP")?;
        let src = SocketAddrV4::new(SERVER_IP, 67);
        let dst = SocketAddrV4::new(client_ip(g), 68);
        let mac = client_mac(g);
        self.report.origin_dhcp_frames += 1;
        let len = self.queue(1, MacAddr(SERVER_MAC), MacAddr(mac), src, dst, &buf[..n]);
        self.report.origin_dhcp_bytes += len as u64;
        Ok(())
    }

    fn client_dhcp(&mut self, now: Instant, payload: &[u8]) -> Result<()> {
        let Ok(d) = Dhcp::parse(payload) else {
            return Ok(());
        };
        let Some(i) = client_index(&d.chaddr).and_then(|g| g.checked_sub(self.first)) else {
            return Ok(());
        };
        let Some(c) = self.clients.get(i) else {
            return Ok(());
        };
        if d.xid != c.xid {
            return Ok(());
        }
        match (d.message_type(), &c.phase) {
            (Some(MessageType::Offer), Phase::Discover) => {
                self.send_dhcp(i, MessageType::Request)?;
                let c = &mut self.clients[i];
                c.phase = Phase::Request;
                c.deadline = Some(now + DHCP_TIMEOUT);
                c.retries = 0;
            }
            (Some(MessageType::Ack), Phase::Request) => {
                let name = d
                    .bootfile()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_else(|| NBP_NAME.to_string());
                let s = self.client_session(now, &name)?;
                let c = &mut self.clients[i];
                c.phase = Phase::Nbp(Box::new(s));
                c.deadline = None;
                c.checked = 0;
                self.mark_client(i);
            }
            _ => {}
        }
        Ok(())
    }

    fn client_session(&self, now: Instant, name: &str) -> Result<ClientSession> {
        let opts = ClientOptions {
            blksize: Some(self.shape.blksize),
            windowsize: (self.shape.windowsize > 1).then_some(self.shape.windowsize),
            ask_tsize: true,
            timeout: Duration::from_secs(1),
            max_retries: 8,
            max_size: 1 << 34,
        };
        ClientSession::new(now, name, opts).context("client read request")
    }

    fn server_rrq(
        &mut self,
        now: Instant,
        mac: MacAddr,
        client: SocketAddrV4,
        payload: &[u8],
    ) -> Result<()> {
        let Ok(Packet::Rrq(req)) = Packet::parse(payload) else {
            return Ok(());
        };
        // A retransmitted request of a transfer in progress.
        if self.by_key.keys().any(|(c, _)| *c == client) {
            return Ok(());
        }
        let file = match std::str::from_utf8(req.filename) {
            Ok(NBP_NAME) => Arc::clone(&self.files.nbp),
            Ok(IMAGE_NAME) => Arc::clone(&self.files.image),
            _ => return Ok(()),
        };
        let Ok(session) = ServerSession::new(now, &req, file, &ServerConfig::default()) else {
            return Ok(());
        };
        let tid = loop {
            let t = self.next_tid;
            self.next_tid = if t >= 65000 { 40000 } else { t + 1 };
            if !self.by_key.contains_key(&(client, t)) {
                break t;
            }
        };
        let reply = UdpFrameRepr::ipv4(
            MacAddr(SERVER_MAC),
            mac,
            SocketAddrV4::new(SERVER_IP, tid),
            client,
        );
        let served = Served {
            session,
            reply,
            key: (client, tid),
            queued: false,
        };
        let k = match self.free.pop() {
            Some(k) => {
                self.sessions[k] = Some(served);
                k
            }
            None => {
                self.sessions.push(Some(served));
                self.sessions.len() - 1
            }
        };
        self.by_key.insert((client, tid), k);
        self.mark_session(k);
        Ok(())
    }

    /// Lets dirty clients and sessions send, while the ports' queues have room.
    fn pump(&mut self, now: Instant) -> Result<()> {
        let max = self.shape.max_pending;
        let n = self.dirty_sessions.len();
        for _ in 0..n {
            if self.pending[1].len() >= max {
                break;
            }
            let Some(k) = self.dirty_sessions.pop_front() else {
                break;
            };
            let Some(mut s) = self.sessions[k].take() else {
                continue;
            };
            s.queued = false;
            let mut blocked = false;
            while self.pending[1].len() < max {
                let Some(t) = s.session.poll_transmit(now) else {
                    break;
                };
                let hl = s.reply.header_len();
                let len = hl + t.payload_len();
                let mut m = Mbuf::alloc(self.pool).context("storm pool exhausted")?;
                let buf = m.append(len as u16).context("frame larger than an mbuf")?;
                let n = s.session.write(&t, &mut buf[hl..]).context("TFTP write")?;
                s.reply.emit_in_place(buf, n).context("frame emit")?;
                self.report.origin_frames += 1;
                self.report.origin_bytes += len as u64;
                self.pending[1].push_back(m);
            }
            if self.pending[1].len() >= max {
                blocked = true;
            }
            if s.session.is_finished() {
                self.by_key.remove(&s.key);
                self.free.push(k);
            } else {
                self.sessions[k] = Some(s);
                if blocked {
                    self.mark_session(k);
                }
            }
        }
        let n = self.dirty_clients.len();
        for _ in 0..n {
            if self.pending[0].len() >= max {
                break;
            }
            let Some(i) = self.dirty_clients.pop_front() else {
                break;
            };
            self.clients[i].queued = false;
            self.pump_client(i, now)?;
        }
        Ok(())
    }

    fn pump_client(&mut self, i: usize, now: Instant) -> Result<()> {
        let g = self.first + i;
        let (mac, ip) = (client_mac(g), client_ip(g));
        let mut phase = std::mem::replace(&mut self.clients[i].phase, Phase::Idle);
        let (s, port, expect) = match &mut phase {
            Phase::Nbp(s) => (s, CLIENT_NBP_PORT, Arc::clone(&self.files.nbp)),
            Phase::Image(s) => (s, CLIENT_IMAGE_PORT, Arc::clone(&self.files.image)),
            _ => {
                self.clients[i].phase = phase;
                return Ok(());
            }
        };
        let me = SocketAddrV4::new(ip, port);
        while let Some(t) = s.poll_transmit(now) {
            let dport = match t.to {
                Destination::Origin => 69,
                Destination::Server => s.server_tid().unwrap_or(69),
                Destination::Stray(p) => p,
            };
            let dst = SocketAddrV4::new(SERVER_IP, dport);
            self.queue(0, MacAddr(mac), MacAddr(SERVER_MAC), me, dst, &t.payload);
        }
        let mut corrupt = false;
        while let Some((off, data)) = s.poll_data() {
            let c = &mut self.clients[i];
            let end = off as usize + data.len();
            if off != c.checked || expect.get(off as usize..end) != Some(&data[..]) {
                corrupt = true;
            }
            c.checked = end as u64;
        }
        let outcome = s.outcome().cloned();
        let is_image = matches!(phase, Phase::Image(_));
        self.clients[i].phase = phase;
        if corrupt {
            self.fail(i, "received bytes differ from the file", now);
            return Ok(());
        }
        match outcome {
            None => {}
            Some(ClientOutcome::Completed { size }) => {
                if size != expect.len() as u64 || self.clients[i].checked != size {
                    self.fail(i, "short file", now);
                    return Ok(());
                }
                self.report.served_bytes += size;
                if is_image {
                    let c = &mut self.clients[i];
                    c.phase = Phase::Done;
                    let t = c.started.map(|s| now - s).unwrap_or_default();
                    self.report.completion.push(t);
                    self.report.completed += 1;
                    self.finished += 1;
                } else {
                    let s = self.client_session(now, IMAGE_NAME)?;
                    let c = &mut self.clients[i];
                    c.phase = Phase::Image(Box::new(s));
                    c.checked = 0;
                    self.mark_client(i);
                }
            }
            Some(other) => self.fail(i, &format!("TFTP {other:?}"), now),
        }
        Ok(())
    }

    fn fail(&mut self, i: usize, why: &str, _now: Instant) {
        let c = &mut self.clients[i];
        if matches!(c.phase, Phase::Done | Phase::Failed) {
            return;
        }
        let what = match c.phase {
            Phase::Idle | Phase::Discover | Phase::Request => "DHCP",
            Phase::Nbp(_) => "NBP",
            Phase::Image(_) => "image",
            _ => "",
        };
        c.phase = Phase::Failed;
        self.finished += 1;
        self.report.failed += 1;
        if self.report.failures.len() < 5 {
            self.report
                .failures
                .push(format!("client {}: {what}: {why}", self.first + i));
        }
    }

    fn timers(&mut self, now: Instant) -> Result<()> {
        for i in 0..self.clients.len() {
            let c = &mut self.clients[i];
            let resend = match &mut c.phase {
                Phase::Discover | Phase::Request if c.deadline.is_some_and(|d| d <= now) => {
                    c.retries += 1;
                    c.deadline = Some(now + DHCP_TIMEOUT);
                    Some(if matches!(c.phase, Phase::Discover) {
                        MessageType::Discover
                    } else {
                        MessageType::Request
                    })
                }
                Phase::Nbp(s) | Phase::Image(s) => {
                    if s.poll_timeout().is_some_and(|t| t <= now) {
                        s.handle_timeout(now);
                        self.mark_client(i);
                    }
                    None
                }
                _ => None,
            };
            if let Some(t) = resend {
                if self.clients[i].retries > DHCP_RETRIES {
                    self.fail(i, "no DHCP answer", now);
                } else {
                    self.send_dhcp(i, t)?;
                }
            }
        }
        for k in 0..self.sessions.len() {
            let due = self.sessions[k]
                .as_ref()
                .is_some_and(|s| s.session.poll_timeout().is_some_and(|t| t <= now));
            if due {
                if let Some(s) = self.sessions[k].as_mut() {
                    s.session.handle_timeout(now);
                }
                self.mark_session(k);
            }
        }
        Ok(())
    }

    /// Builds a UDP frame into an mbuf and queues it on `side`; returns its length.
    fn queue(
        &mut self,
        side: usize,
        smac: MacAddr,
        dmac: MacAddr,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        payload: &[u8],
    ) -> usize {
        let repr = UdpFrameRepr::ipv4(smac, dmac, src, dst);
        let len = repr.buffer_len(payload.len());
        let Ok(mut m) = Mbuf::alloc(self.pool) else {
            return 0; // the sender's timer sends it again
        };
        let Some(buf) = m.append(len as u16) else {
            return 0;
        };
        if repr.emit(buf, payload).is_err() {
            return 0;
        }
        if side == 1 {
            self.report.origin_frames += 1;
            self.report.origin_bytes += len as u64;
        }
        self.pending[side].push_back(m);
        len
    }

    /// Hands queued frames to the ports, at most [`TX_BURSTS`] bursts per
    /// side per turn (what they refuse stays queued).
    fn flush(&mut self) {
        for side in 0..2 {
            let b = &mut self.tx[side];
            for _ in 0..TX_BURSTS {
                while !b.is_full() {
                    let Some(m) = self.pending[side].pop_front() else {
                        break;
                    };
                    let _ = b.push(m);
                }
                if b.is_empty() || self.ports[side].tx_burst(0, b) == 0 || !b.is_empty() {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addresses_map_back_to_their_index() {
        for i in [0, 1, 255, 256, 999, 65_000] {
            assert_eq!(client_index(&client_mac(i)), Some(i));
            assert_eq!(ip_index(client_ip(i)), Some(i));
        }
        assert_eq!(client_index(&bootcache_testbed::frames::CLIENT_MAC), None);
        assert_eq!(ip_index(SERVER_IP), None);
    }

    #[test]
    fn completion_percentiles_use_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        let r = PhaseReport {
            served_bytes: 125_000_000,
            elapsed: Duration::from_secs(1),
            origin_frames: 10,
            origin_dhcp_frames: 4,
            origin_bytes: 1000,
            origin_dhcp_bytes: 400,
            ..PhaseReport::default()
        };
        assert!((r.served_gbps() - 1.0).abs() < 1e-9);
        assert_eq!(r.origin_tftp_frames(), 6);
        assert_eq!(r.origin_tftp_bytes(), 600);
    }
}

/// The storm scenario's parameters.
#[derive(Debug, Clone)]
pub struct StormConfig {
    /// Client counts, one storm each.
    pub clients: Vec<usize>,
    /// NBP size in bytes.
    pub nbp_size: usize,
    /// Boot image size in bytes.
    pub image_size: usize,
    /// How clients read.
    pub shape: ClientShape,
}

impl StormConfig {
    /// The full run or the quick one.
    pub fn new(quick: bool) -> StormConfig {
        let shape = ClientShape {
            blksize: 1428,
            windowsize: 16,
            max_pending: 8192,
            phase_timeout: Duration::from_secs(if quick { 60 } else { 300 }),
        };
        StormConfig {
            clients: vec![10, 100, 1000],
            nbp_size: if quick { 16 << 10 } else { 46_000 },
            // A real boot image (kernel + initrd) is tens of MiB.
            image_size: if quick { 64 << 10 } else { 64 << 20 },
            shape,
        }
    }
}

/// One device's storm of N clients.
#[derive(Debug, Clone)]
pub struct StormRow {
    /// Clients in the storm.
    pub n: usize,
    /// The device.
    pub dut: crate::dut::Dut,
    /// bootcache only: the single client that filled the cache.
    pub cold: Option<PhaseReport>,
    /// The N clients at once (warm for bootcache; from the origin for testpmd).
    pub storm: PhaseReport,
    /// bootcache's serving counters (`serve hits=… frame_drops=…`), if any.
    pub serve_stats: String,
    /// bootcache only: what its agent answered, cold and warm together.
    pub agent: Option<crate::agent::AgentReport>,
}

/// Everything the scenario measured.
#[derive(Debug, Clone, Default)]
pub struct StormResults {
    /// One row per (N, device).
    pub rows: Vec<StormRow>,
    /// The summary table.
    pub table: crate::results::Table,
}

/// Runs the storm for each N, bootcache (cold then warm) and testpmd.
pub fn run(
    h: &bootcache_testbed::harness::Harness,
    base: &crate::dut::DutConfig,
    cfg: &StormConfig,
    work: &std::path::Path,
    out: &std::path::Path,
) -> Result<StormResults> {
    use crate::dut::{Dut, DutConfig, DutProcess};
    use bootcache_testbed::process::stat;
    let pool = Mempool::create("storm_pool", 65535, 256, 2048 + 128, -1)
        .context("storm mbuf pool (hugepages: run scripts/setup)")?;
    let files = BootFiles {
        nbp: Arc::new(bootcache_testbed::scenario::test_file(cfg.nbp_size, 11)),
        image: Arc::new(bootcache_testbed::scenario::test_file(cfg.image_size, 12)),
    };
    let mut res = StormResults::default();
    for &n in &cfg.clients {
        for dut in [Dut::Bootcache, Dut::Testpmd] {
            let cache = work.join(format!("storm-cache-{n}"));
            // bootcache validates every hit with a real agent (answers
            // reused for `answer_ttl`, as deployed); testpmd has none.
            let agent = if dut == Dut::Bootcache {
                let bin = crate::agent::agent_bin(&base.bootcache_bin);
                Some(crate::agent::Agent::start(
                    &bin,
                    &work.join(format!("storm-agent-{n}")),
                    &[(NBP_NAME, &files.nbp[..]), (IMAGE_NAME, &files.image[..])],
                )?)
            } else {
                None
            };
            let mut args = crate::dut::write_config(
                &work.join("storm.toml"),
                &cache,
                &format!(
                    "[limits]\nmax_transfers = 4096\nredirect_ring = 32768\n{}",
                    agent.as_ref().map(|a| a.config()).unwrap_or_default()
                ),
            )?;
            args.extend(["--mbufs".into(), "65535".into()]);
            let dcfg = DutConfig {
                // Serving is slow-path work: it gets the device's CPU with
                // the bridge, not the generator's (where it would starve the
                // clients, whose receive ring then overflows).
                lcores: "0@1,1@1".into(),
                memory_mb: 1024,
                bootcache_args: args,
                ..base.clone()
            };
            let prefix = format!("bb-st-{}-{}", dut.name(), std::process::id());
            let p = DutProcess::start(h, dut, &dcfg, &prefix)?;
            let cold = if dut == Dut::Bootcache {
                let c = run_phase(h.ports, &pool, &files, cfg.shape, 0, 1)?;
                // Publishing is asynchronous: the warm storm starts once the
                // cache lists both files.
                for (name, f) in [(NBP_NAME, &files.nbp), (IMAGE_NAME, &files.image)] {
                    let size = f.len() as u64;
                    bootcache_testbed::harness::wait_cached(
                        &cache,
                        SERVER_IP,
                        name,
                        size,
                        Duration::from_secs(10),
                    )?;
                }
                Some(c)
            } else {
                None
            };
            // A large storm outlasts the default timeout: allow every
            // client's bytes at 50 MB/s on top of it.
            let mut shape = cfg.shape;
            let bytes = (n * (cfg.nbp_size + cfg.image_size)) as f64;
            shape.phase_timeout += Duration::from_secs_f64(bytes / 50e6);
            let storm = run_phase(h.ports, &pool, &files, shape, 1, n)?;
            let text = p.stop(h)?;
            let agent = agent.map(crate::agent::Agent::stop).transpose()?;
            if std::env::var_os("BOOTCACHE_BENCH_DEBUG").is_some() {
                eprintln!("{} said:\n{text}", dut.name());
            }
            let _ = std::fs::remove_dir_all(&cache);
            let serve_stats = if dut == Dut::Bootcache {
                let ports = bootcache_testbed::process::parse_final_stats(&text);
                format!(
                    "serve hits={} completed={} other_endings={} frame_drops={} misses={}; client-side port tx_dropped={}",
                    stat(&text, "serve", "hits").unwrap_or(0),
                    stat(&text, "serve", "completed").unwrap_or(0),
                    ["size_probes", "client_errors", "timeouts", "aborted"]
                        .iter()
                        .map(|k| stat(&text, "serve", k).unwrap_or(0))
                        .sum::<u64>(),
                    stat(&text, "serve", "frame_drops").unwrap_or(0),
                    stat(&text, "serve", "misses").unwrap_or(0),
                    ports.first().map_or(0, |p| p.tx_dropped),
                )
            } else {
                String::new()
            };
            let row = StormRow {
                n,
                dut,
                cold,
                storm,
                serve_stats,
                agent,
            };
            print_row(&row);
            res.rows.push(row);
        }
    }
    res.table = tables(cfg, &res.rows, out)?;
    Ok(res)
}

fn ms(d: Duration) -> String {
    crate::results::f(d.as_secs_f64() * 1e3, 1)
}

fn print_row(r: &StormRow) {
    let line = |what: &str, p: &PhaseReport| {
        println!(
            "  N={:<5} {:10} {:5}: {}/{} booted, origin {} frames {} bytes (TFTP {} B, DHCP {} B), completion p50 {} p99 {} max {} ms, {:.2} Gbit/s served in {:.2} s{}",
            r.n,
            r.dut.name(),
            what,
            p.completed,
            p.clients,
            p.origin_frames,
            p.origin_bytes,
            p.origin_tftp_bytes(),
            p.origin_dhcp_bytes,
            ms(p.completion_percentile(0.5)),
            ms(p.completion_percentile(0.99)),
            ms(p.completion_percentile(1.0)),
            p.served_gbps(),
            p.elapsed.as_secs_f64(),
            if p.failures.is_empty() {
                String::new()
            } else {
                format!("; failures: {}", p.failures.join("; "))
            }
        )
    };
    if let Some(c) = &r.cold {
        line("cold", c);
    }
    line(if r.cold.is_some() { "warm" } else { "all" }, &r.storm);
    if !r.serve_stats.is_empty() {
        println!("  N={:<5} bootcache {}", r.n, r.serve_stats);
    }
    if let Some(a) = &r.agent {
        println!(
            "  N={:<5} bootcache agent: {} questions, {} answered current, {} not, {} bytes (counted as origin bytes)",
            r.n,
            a.received,
            a.current,
            a.not_current,
            a.bytes()
        );
    }
}

fn tables(
    cfg: &StormConfig,
    rows: &[StormRow],
    out: &std::path::Path,
) -> Result<crate::results::Table> {
    use crate::results::{f, Table};
    let mut raw = Table::new(&[
        "clients",
        "device",
        "phase",
        "booted",
        "failed",
        "origin_frames",
        "origin_bytes",
        "origin_tftp_bytes",
        "origin_dhcp_bytes",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "served_gbps",
        "elapsed_s",
    ]);
    for r in rows {
        let phases: Vec<(&str, &PhaseReport)> = match &r.cold {
            Some(c) => vec![("cold", c), ("warm", &r.storm)],
            None => vec![("origin", &r.storm)],
        };
        for (what, p) in phases {
            raw.push(vec![
                r.n.to_string(),
                r.dut.name().into(),
                what.into(),
                p.completed.to_string(),
                p.failed.to_string(),
                p.origin_frames.to_string(),
                p.origin_bytes.to_string(),
                p.origin_tftp_bytes().to_string(),
                p.origin_dhcp_bytes.to_string(),
                ms(p.completion_percentile(0.5)),
                ms(p.completion_percentile(0.99)),
                ms(p.completion_percentile(1.0)),
                f(p.served_gbps(), 3),
                f(p.elapsed.as_secs_f64(), 3),
            ]);
        }
    }
    raw.write(out, "storm-phases")?;
    let one_boot = (cfg.nbp_size + cfg.image_size) as f64;
    let mut t = Table::new(&[
        "clients",
        "bootcache_origin_bytes",
        "bootcache_origin_tftp_bytes",
        "agent_bytes",
        "tftp_vs_one_cold_boot",
        "total_vs_one_cold_boot",
        "testpmd_origin_bytes",
        "cold_ms",
        "warm_p50_ms",
        "warm_p99_ms",
        "testpmd_p50_ms",
        "testpmd_p99_ms",
        "warm_gbps",
        "testpmd_gbps",
        "booted",
    ]);
    for &n in &cfg.clients {
        let b = rows.iter().find(|r| r.n == n && r.cold.is_some());
        let tp = rows.iter().find(|r| r.n == n && r.cold.is_none());
        let (Some(b), Some(tp)) = (b, tp) else {
            continue;
        };
        let cold = b.cold.as_ref().expect("bootcache row has a cold phase");
        // The agent's datagrams cross the boot server's link too.
        let total = cold.origin_bytes + b.storm.origin_bytes + b.agent.map_or(0, |a| a.bytes());
        let tftp = cold.origin_tftp_bytes() + b.storm.origin_tftp_bytes();
        t.push(vec![
            n.to_string(),
            total.to_string(),
            tftp.to_string(),
            b.agent.map_or(0, |a| a.bytes()).to_string(),
            f(tftp as f64 / cold.origin_tftp_bytes().max(1) as f64, 4),
            f(total as f64 / cold.origin_bytes.max(1) as f64, 4),
            tp.storm.origin_bytes.to_string(),
            ms(cold.completion_percentile(1.0)),
            ms(b.storm.completion_percentile(0.5)),
            ms(b.storm.completion_percentile(0.99)),
            ms(tp.storm.completion_percentile(0.5)),
            ms(tp.storm.completion_percentile(0.99)),
            f(b.storm.served_gbps(), 2),
            f(tp.storm.served_gbps(), 2),
            format!("{}/{} {}/{}", b.storm.completed, n, tp.storm.completed, n),
        ]);
    }
    let _ = one_boot;
    t.write(out, "storm")?;
    Ok(t)
}
