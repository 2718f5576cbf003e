//! The server session against simulated clients (lock-step like tftp-hpa,
//! windowed like atftp), over a simulated channel that loses, duplicates and
//! reorders packets, with a simulated clock. Every packet the session emits is
//! parsed back with [`Packet::parse`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use proptest::prelude::*;
use wire::tftp::{Mode, Options};

use super::*;

/// A file whose bytes depend on their offset, so a misplaced block shows.
fn file(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn request(options: Options<'static>) -> Request<'static> {
    Request {
        filename: b"pxelinux.0",
        mode: Mode::OCTET,
        options,
    }
}

fn opts(
    blksize: Option<u16>,
    tsize: bool,
    timeout: Option<u8>,
    windowsize: Option<u16>,
) -> Options<'static> {
    let mut o = Options::default();
    o.blksize = blksize;
    o.tsize = tsize.then_some(0);
    o.timeout = timeout;
    o.windowsize = windowsize;
    o
}

fn config() -> ServerConfig {
    ServerConfig {
        max_blksize: 1468,
        offer_windowsize: true,
        max_windowsize: 64,
        default_timeout: Duration::from_millis(200),
        initial_rto: Duration::from_secs(1),
        min_rto: Duration::from_millis(5),
        max_retries: 5,
        max_stall: Duration::from_secs(30),
    }
}

/// What the session put on the wire, parsed back from the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Wire {
    Oack(Options<'static>),
    Data { block: u16, payload: Vec<u8> },
    Error(ErrorCode),
}

/// Emits `t` through the session and parses the bytes; checks the length
/// agrees with [`Transmit::payload_len`].
fn emit<F: FileSource>(s: &ServerSession<F>, t: &Transmit) -> (Vec<u8>, Wire) {
    let mut buf = vec![0xAA; 70000];
    let n = s.write(t, &mut buf).expect("emit");
    assert_eq!(n, t.payload_len(), "{t:?}");
    buf.truncate(n);
    let wire = match Packet::parse(&buf).expect("session emitted a malformed packet") {
        Packet::Oack(o) => {
            let mut owned = Options::default();
            owned.blksize = o.blksize;
            owned.timeout = o.timeout;
            owned.tsize = o.tsize;
            owned.windowsize = o.windowsize;
            assert!(o.unknown.is_empty());
            Wire::Oack(owned)
        }
        Packet::Data { block, payload } => {
            if let Transmit::Data { block: b, range } = t {
                assert_eq!(*b, block);
                assert_eq!(payload, s.file().bytes(range.clone()));
            } else {
                panic!("{t:?} emitted as DATA");
            }
            Wire::Data {
                block,
                payload: payload.to_vec(),
            }
        }
        Packet::Error { code, .. } => Wire::Error(code),
        p => panic!("server sent {p:?}"),
    };
    (buf, wire)
}

/// Everything the session wants to send now.
fn drain<F: FileSource>(s: &mut ServerSession<F>, now: Instant) -> Vec<Wire> {
    let mut out = Vec::new();
    while let Some(t) = s.poll_transmit(now) {
        out.push(emit(s, &t).1);
    }
    out
}

fn ack(block: u16) -> Vec<u8> {
    Packet::Ack { block }.to_vec().unwrap()
}

fn error(code: ErrorCode) -> Vec<u8> {
    error_response(code, "client says no")
}

fn data_blocks(w: &[Wire]) -> Vec<(u16, usize)> {
    w.iter()
        .map(|w| match w {
            Wire::Data { block, payload } => (*block, payload.len()),
            other => panic!("expected DATA, got {other:?}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The simulated client and channel.

/// A client: lock-step (window 1) ACKs every block and re-ACKs a duplicate of
/// the previous one (tftp-hpa, the classic Sorcerer's Apprentice trigger);
/// windowed ACKs every `window` in-order blocks and, on a gap, the last
/// in-order block (RFC 7440, atftp).
#[derive(Debug)]
struct Client {
    asked_options: bool,
    /// Answer the OACK with ERROR 8 (UEFI size probe).
    probe: bool,
    blksize: usize,
    window: u64,
    started: bool,
    /// Next block expected (absolute, from 1).
    expected: u64,
    since_ack: u64,
    data: Vec<u8>,
    done: bool,
    gone: bool,
    tsize: Option<u64>,
    last_ack: Option<u16>,
    timeout: Duration,
    deadline: Option<Instant>,
    retries: u32,
    /// Wire block numbers seen in order, to check rollover.
    saw_rollover: bool,
    errors: Vec<ErrorCode>,
}

impl Client {
    fn new(options: &Options<'_>, probe: bool, now: Instant, timeout: Duration) -> Client {
        Client {
            asked_options: !options.is_empty(),
            probe,
            blksize: 512,
            window: 1,
            started: false,
            expected: 1,
            since_ack: 0,
            data: Vec::new(),
            done: false,
            gone: false,
            tsize: None,
            last_ack: None,
            timeout,
            // Waits for the first answer to its RRQ.
            deadline: Some(now + Duration::from_secs(3)),
            retries: 0,
            saw_rollover: false,
            errors: Vec::new(),
        }
    }

    fn send_ack(&mut self, now: Instant, block: u16, out: &mut Vec<Vec<u8>>) {
        self.last_ack = Some(block);
        self.since_ack = 0;
        self.retries = 0;
        self.deadline = Some(now + self.timeout);
        out.push(ack(block));
    }

    fn on_packet(&mut self, now: Instant, bytes: &[u8], out: &mut Vec<Vec<u8>>) {
        if self.gone {
            return;
        }
        match Packet::parse(bytes).expect("client got a malformed packet") {
            Packet::Oack(o) => {
                assert!(self.asked_options, "OACK to a request without options");
                if self.probe {
                    self.gone = true;
                    out.push(error(ErrorCode::OptionNegotiation));
                    return;
                }
                if self.expected > 1 {
                    return; // a late duplicate OACK
                }
                self.started = true;
                self.blksize = o.blksize.map_or(512, usize::from);
                self.window = o.windowsize.map_or(1, u64::from);
                self.tsize = o.tsize;
                self.send_ack(now, 0, out);
            }
            Packet::Data { block, payload } => {
                if !self.started {
                    // No OACK: the server ignored the options (RFC 2347).
                    self.started = true;
                }
                let want = self.expected as u16;
                if block == want && !self.done {
                    assert!(payload.len() <= self.blksize);
                    if block == 0 {
                        self.saw_rollover = true;
                    }
                    self.data.extend_from_slice(payload);
                    self.expected += 1;
                    self.since_ack += 1;
                    if payload.len() < self.blksize {
                        self.done = true;
                        self.send_ack(now, block, out);
                        // Dally, re-ACKing a repeated last block, then leave.
                        self.deadline = Some(now + self.timeout * 3);
                    } else if self.since_ack >= self.window {
                        self.send_ack(now, block, out);
                    }
                } else if block == want.wrapping_sub(1) && self.window == 1 {
                    self.send_ack(now, block, out);
                } else if self.window > 1 && !self.done {
                    // A gap (or an old block): ACK the last in-order block.
                    self.send_ack(now, want.wrapping_sub(1), out);
                }
            }
            Packet::Error { code, .. } => {
                self.errors.push(code);
                self.gone = true;
            }
            p => panic!("client got {p:?}"),
        }
    }

    fn on_timeout(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) {
        match self.deadline {
            Some(d) if now >= d && !self.gone => {}
            _ => return,
        }
        if self.done || self.retries >= 8 {
            self.gone = true;
            self.deadline = None;
            return;
        }
        self.retries += 1;
        self.deadline = Some(now + self.timeout);
        if let Some(b) = self.last_ack {
            out.push(ack(b));
        }
    }
}

/// A tiny deterministic PRNG (xorshift64*), so proptest can shrink seeds
/// (the endpoint's tests use it too).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn percent(&mut self, p: u32) -> bool {
        self.next() % 100 < u64::from(p)
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Impair {
    loss: u32,
    /// Loss of the client's packets only (ACKs), in percent, on top of `loss`.
    ack_loss: u32,
    dup: u32,
    /// Extra random delay, up to this many milliseconds: reorders packets.
    jitter_ms: u64,
    /// How long the client waits before it ACKs again (default 350 ms).
    client_timeout: Option<Duration>,
}

/// A packet in flight: arrival time, sequence number (ties keep send order),
/// whether it goes to the client, the bytes.
type InFlight = Reverse<(Instant, u64, bool, Vec<u8>)>;

/// Packets in flight, by arrival time.
struct Channel {
    rng: Rng,
    impair: Impair,
    seq: u64,
    queue: BinaryHeap<InFlight>,
}

impl Channel {
    fn send(&mut self, now: Instant, to_client: bool, bytes: Vec<u8>) {
        if self.rng.percent(self.impair.loss) {
            return;
        }
        if !to_client && self.rng.percent(self.impair.ack_loss) {
            return;
        }
        let copies = if self.rng.percent(self.impair.dup) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = if self.impair.jitter_ms == 0 {
                0
            } else {
                self.rng.next() % (self.impair.jitter_ms * 1000)
            };
            let at = now + Duration::from_micros(500 + jitter);
            self.seq += 1;
            self.queue
                .push(Reverse((at, self.seq, to_client, bytes.clone())));
        }
    }
}

struct Run {
    outcome: Outcome,
    client: Client,
    counters: SessionCounters,
    /// Everything the server sent, in order.
    wire: Vec<Wire>,
    /// ACKs that reached the server.
    acks_delivered: u64,
}

/// Plays a whole transfer and returns how it ended.
fn simulate(
    file: &[u8],
    options: Options<'static>,
    config: &ServerConfig,
    impair: Impair,
    seed: u64,
    probe: bool,
) -> Run {
    let t0 = Instant::now();
    let mut now = t0;
    let req = request(options.clone());
    let mut server = ServerSession::new(now, &req, file, config).unwrap();
    let client_timeout = impair.client_timeout.unwrap_or(Duration::from_millis(350));
    let mut client = Client::new(&options, probe, now, client_timeout);
    let mut net = Channel {
        rng: Rng(seed | 1),
        impair,
        seq: 0,
        queue: BinaryHeap::new(),
    };
    let mut wire = Vec::new();
    let mut acks_delivered = 0;
    let mut to_server = Vec::new();
    for _ in 0..10_000_000u64 {
        while let Some(t) = server.poll_transmit(now) {
            let (bytes, w) = emit(&server, &t);
            wire.push(w);
            net.send(now, true, bytes);
        }
        for p in to_server.drain(..) {
            net.send(now, false, p);
        }
        if server.is_finished() && (client.gone || net.queue.is_empty()) {
            break;
        }
        let next = [
            net.queue.peek().map(|Reverse(p)| p.0),
            server.poll_timeout(),
            client.deadline.filter(|_| !client.gone),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else { break };
        now = now.max(next);
        while net.queue.peek().is_some_and(|Reverse(p)| p.0 <= now) {
            let Reverse((_, _, to_client, bytes)) = net.queue.pop().unwrap();
            if to_client {
                client.on_packet(now, &bytes, &mut to_server);
            } else {
                acks_delivered += u64::from(bytes[1] == 4);
                server.handle_packet(now, &bytes);
            }
        }
        server.handle_timeout(now);
        client.on_timeout(now, &mut to_server);
    }
    Run {
        outcome: server.outcome().expect("the session never ended"),
        client,
        counters: server.counters(),
        wire,
        acks_delivered,
    }
}

fn perfect(file: &[u8], options: Options<'static>) -> Run {
    simulate(file, options, &config(), Impair::default(), 1, false)
}

fn assert_completed(run: &Run, file: &[u8]) {
    assert!(
        matches!(run.outcome, Outcome::Completed { bytes, .. } if bytes == file.len() as u64),
        "{:?}",
        run.outcome
    );
    assert!(run.client.done);
    assert!(
        run.client.data == file,
        "client reassembled a different file"
    );
}

// ---------------------------------------------------------------------------
// Negotiation.

#[test]
fn no_options_is_lock_step_512_without_oack() {
    let f = file(1300);
    let run = perfect(&f, Options::default());
    assert_completed(&run, &f);
    assert_eq!(data_blocks(&run.wire), [(1, 512), (2, 512), (3, 276)]);
    assert_eq!(run.counters.blocks_sent, 3);
    assert_eq!(run.counters.retransmits, 0);
    assert_eq!(run.counters.payload_bytes, 1300);
}

#[test]
fn lock_step_sends_one_block_per_ack() {
    let f = file(2000);
    let now = Instant::now();
    let mut s = ServerSession::new(now, &request(Options::default()), &f[..], &config()).unwrap();
    assert_eq!(data_blocks(&drain(&mut s, now)), [(1, 512)]);
    assert_eq!(drain(&mut s, now), []);
    s.handle_packet(now, &ack(1));
    assert_eq!(data_blocks(&drain(&mut s, now)), [(2, 512)]);
}

#[test]
fn blksize_1428_is_granted() {
    let f = file(5000);
    let run = perfect(&f, opts(Some(1428), false, None, None));
    assert_completed(&run, &f);
    assert_eq!(run.wire[0], Wire::Oack(opts(Some(1428), false, None, None)));
    assert_eq!(
        data_blocks(&run.wire[1..]),
        [(1, 1428), (2, 1428), (3, 1428), (4, 716)]
    );
}

#[test]
fn blksize_larger_than_max_is_lowered() {
    let f = file(10_000);
    let run = perfect(&f, opts(Some(8192), false, None, None));
    assert_completed(&run, &f);
    assert_eq!(run.wire[0], Wire::Oack(opts(Some(1468), false, None, None)));
    assert!(data_blocks(&run.wire[1..]).iter().all(|(_, n)| *n <= 1468));
    assert_eq!(data_blocks(&run.wire[1..])[0], (1, 1468));
}

#[test]
fn blksize_within_limits_is_not_raised() {
    let o = opts(Some(8), false, None, None);
    let n = Negotiated::new(&o, 100, &config());
    assert_eq!(n.blksize, 8);
    // A configured maximum below 8 still grants the RFC minimum.
    let cfg = ServerConfig {
        max_blksize: 2,
        ..config()
    };
    let n = Negotiated::new(&opts(Some(512), false, None, None), 100, &cfg);
    assert_eq!(n.blksize, 8);
}

#[test]
fn tsize_is_the_file_size() {
    let f = file(123_457);
    let run = perfect(&f, opts(Some(1468), true, None, None));
    assert_completed(&run, &f);
    assert_eq!(
        run.wire[0],
        Wire::Oack(opts(Some(1468), false, None, None).with_tsize(123_457))
    );
    assert_eq!(run.client.tsize, Some(123_457));
}

trait WithTsize {
    fn with_tsize(self, n: u64) -> Self;
}

impl WithTsize for Options<'static> {
    fn with_tsize(mut self, n: u64) -> Self {
        self.tsize = Some(n);
        self
    }
}

#[test]
fn timeout_option_is_echoed_and_used() {
    let f = file(100);
    let now = Instant::now();
    let req = request(opts(None, false, Some(3), None));
    let mut s = ServerSession::new(now, &req, &f[..], &config()).unwrap();
    assert_eq!(
        drain(&mut s, now),
        [Wire::Oack(opts(None, false, Some(3), None))]
    );
    // Before any round trip is measured: the initial timer (1 s), not the
    // 3 s asked for; 3 s is the ceiling the backoff stops at.
    let mut at = now + Duration::from_secs(1);
    assert_eq!(s.poll_timeout(), Some(at));
    for wait in [2, 3, 3] {
        s.handle_timeout(at);
        drain(&mut s, at);
        at += Duration::from_secs(wait);
        assert_eq!(s.poll_timeout(), Some(at));
    }
}

/// Issue 13: a client asking `timeout 255` that never acknowledges holds
/// its session for `max_stall` (30 s), not `max_retries` × 255 s.
#[test]
fn a_silent_client_is_given_up_after_max_stall_whatever_its_timeout() {
    let f = file(100);
    let now = Instant::now();
    let req = request(opts(None, false, Some(255), None));
    let mut s = ServerSession::new(now, &req, &f[..], &config()).unwrap();
    drain(&mut s, now);
    let mut at = now;
    while let Some(t) = s.poll_timeout() {
        at = t;
        s.handle_timeout(at);
        drain(&mut s, at);
    }
    assert!(s.is_finished());
    let held = at.duration_since(now);
    assert!(
        held >= Duration::from_secs(30) && held < Duration::from_secs(30 + 255),
        "held {held:?}"
    );
    assert!(held <= Duration::from_secs(64), "held {held:?}");
}

#[test]
fn unknown_options_alone_get_plain_data() {
    let f = file(600);
    let mut o = Options::default();
    o.unknown.push(wire::tftp::UnknownOption {
        name: b"multicast",
        value: b"",
    });
    let run = perfect(&f, o);
    assert_completed(&run, &f);
    assert_eq!(data_blocks(&run.wire), [(1, 512), (2, 88)]);
}

#[test]
fn windowsize_is_left_out_unless_offered() {
    let cfg = ServerConfig {
        offer_windowsize: false,
        ..config()
    };
    // Asked alongside blksize: the OACK has blksize only.
    let n = Negotiated::new(&opts(Some(1024), false, None, Some(16)), 5, &cfg);
    assert_eq!(
        n.oack,
        Some(Oack {
            blksize: Some(1024),
            ..Oack::default()
        })
    );
    assert_eq!(n.windowsize, 1);
    // Asked alone: no OACK at all.
    let n = Negotiated::new(&opts(None, false, None, Some(16)), 5, &cfg);
    assert_eq!(n.oack, None);
    assert_eq!((n.blksize, n.windowsize), (512, 1));
    // Granted, but lowered to the maximum.
    let n = Negotiated::new(&opts(None, false, None, Some(500)), 5, &config());
    assert_eq!(n.windowsize, 64);
    assert_eq!(n.oack.unwrap().windowsize, Some(64));
}

#[test]
fn netascii_is_refused() {
    let mut req = request(Options::default());
    req.mode = Mode::NETASCII;
    let f = file(10);
    let err = ServerSession::new(Instant::now(), &req, &f[..], &config()).unwrap_err();
    assert_eq!(err, Refusal::UnsupportedMode(TransferMode::Netascii));
    assert_eq!(err.error_code(), ErrorCode::IllegalOperation);
}

// ---------------------------------------------------------------------------
// Windows.

#[test]
fn windowsize_16_sends_16_blocks_then_waits() {
    let f = file(1468 * 40 + 5);
    let now = Instant::now();
    let req = request(opts(Some(1468), false, None, Some(16)));
    let mut s = ServerSession::new(now, &req, &f[..], &config()).unwrap();
    assert!(matches!(&drain(&mut s, now)[..], [Wire::Oack(_)]));
    s.handle_packet(now, &ack(0));
    let w = data_blocks(&drain(&mut s, now));
    assert_eq!(
        w.iter().map(|b| b.0).collect::<Vec<_>>(),
        (1..=16).collect::<Vec<_>>()
    );
    s.handle_packet(now, &ack(16));
    let w = data_blocks(&drain(&mut s, now));
    assert_eq!(w.first().map(|b| b.0), Some(17));
    assert_eq!(w.len(), 16);
    assert_eq!(s.counters().retransmits, 0);

    let run = perfect(&f, opts(Some(1468), true, None, Some(16)));
    assert_completed(&run, &f);
    assert_eq!(run.counters.retransmits, 0);
    // 41 blocks: two full windows and a partial one, one ACK each, plus ACK 0.
    assert_eq!(run.acks_delivered, 4);
}

#[test]
fn partial_window_ack_resends_from_the_next_block() {
    let f = file(512 * 20);
    let now = Instant::now();
    let req = request(opts(None, false, None, Some(8)));
    let mut s = ServerSession::new(now, &req, &f[..], &config()).unwrap();
    drain(&mut s, now);
    s.handle_packet(now, &ack(0));
    assert_eq!(drain(&mut s, now).len(), 8);
    // The client saw a gap after block 3.
    s.handle_packet(now, &ack(3));
    let w = data_blocks(&drain(&mut s, now));
    assert_eq!(
        w.iter().map(|b| b.0).collect::<Vec<_>>(),
        (4..=11).collect::<Vec<_>>()
    );
    assert_eq!(s.counters().retransmits, 5, "blocks 4–8 went out twice");
    // A late ACK for a block of the first flight still counts.
    s.handle_packet(now, &ack(10));
    let w = data_blocks(&drain(&mut s, now));
    assert_eq!(w.first().map(|b| b.0), Some(11));
}

// ---------------------------------------------------------------------------
// UEFI size probe, errors, illegal packets.

#[test]
fn uefi_size_probe_is_a_normal_end() {
    let f = file(4_000_000);
    let run = simulate(
        &f,
        opts(Some(1468), true, None, None),
        &config(),
        Impair::default(),
        1,
        true,
    );
    assert_eq!(run.outcome, Outcome::SizeProbe);
    assert_eq!(
        run.wire,
        [Wire::Oack(
            opts(Some(1468), false, None, None).with_tsize(4_000_000)
        )]
    );
    assert_eq!(run.counters.blocks_sent, 0);
}

#[test]
fn error_8_during_data_is_a_client_error() {
    let f = file(2000);
    let now = Instant::now();
    let mut s = ServerSession::new(
        now,
        &request(opts(None, true, None, None)),
        &f[..],
        &config(),
    )
    .unwrap();
    drain(&mut s, now);
    s.handle_packet(now, &ack(0));
    drain(&mut s, now);
    s.handle_packet(now, &error(ErrorCode::OptionNegotiation));
    assert_eq!(
        s.outcome(),
        Some(Outcome::ClientError(ErrorCode::OptionNegotiation))
    );
}

#[test]
fn client_error_mid_transfer_ends_silently() {
    let f = file(5000);
    let now = Instant::now();
    let mut s = ServerSession::new(now, &request(Options::default()), &f[..], &config()).unwrap();
    drain(&mut s, now);
    s.handle_packet(now, &ack(1));
    drain(&mut s, now);
    s.handle_packet(now, &error(ErrorCode::DiskFull));
    assert_eq!(s.outcome(), Some(Outcome::ClientError(ErrorCode::DiskFull)));
    assert!(s.is_finished());
    assert_eq!(drain(&mut s, now), [], "an ERROR is never answered");
    assert_eq!(s.poll_timeout(), None);
    // Even an ERROR without its NUL ends the session.
    let mut s = ServerSession::new(now, &request(Options::default()), &f[..], &config()).unwrap();
    drain(&mut s, now);
    s.handle_packet(now, &[0, 5, 0, 3, b'x']);
    assert_eq!(s.outcome(), Some(Outcome::ClientError(ErrorCode::DiskFull)));
}

#[test]
fn illegal_packets_get_error_4() {
    let f = file(5000);
    let data = Packet::Data {
        block: 1,
        payload: b"hi",
    }
    .to_vec()
    .unwrap();
    let rrq = Packet::Rrq(request(Options::default())).to_vec().unwrap();
    let oack = Packet::Oack(opts(Some(512), false, None, None))
        .to_vec()
        .unwrap();
    for bad in [
        data,
        rrq,
        oack,
        vec![0, 4, 0],
        vec![0, 9, 0, 0],
        vec![],
        ack(1).into_iter().chain([0]).collect(),
    ] {
        let now = Instant::now();
        let mut s =
            ServerSession::new(now, &request(Options::default()), &f[..], &config()).unwrap();
        drain(&mut s, now);
        s.handle_packet(now, &bad);
        assert_eq!(
            s.outcome(),
            Some(Outcome::Aborted(AbortReason::IllegalPacket)),
            "{bad:?}"
        );
        assert!(!s.is_finished());
        assert_eq!(
            drain(&mut s, now),
            [Wire::Error(ErrorCode::IllegalOperation)]
        );
        assert!(s.is_finished());
        // Nothing more once ended, whatever arrives.
        s.handle_packet(now, &ack(1));
        s.handle_timeout(now + Duration::from_secs(60));
        assert_eq!(drain(&mut s, now), []);
    }
}

#[test]
fn abort_sends_the_callers_error() {
    let f = file(5000);
    let now = Instant::now();
    let mut s = ServerSession::new(now, &request(Options::default()), &f[..], &config()).unwrap();
    drain(&mut s, now);
    s.abort(ErrorCode::NotDefined, "shutting down");
    assert_eq!(drain(&mut s, now), [Wire::Error(ErrorCode::NotDefined)]);
    assert_eq!(
        s.outcome(),
        Some(Outcome::Aborted(AbortReason::Local(ErrorCode::NotDefined)))
    );
}

#[test]
fn error_response_parses_back() {
    let v = error_response(ErrorCode::FileNotFound, "no such file\0junk");
    assert_eq!(
        Packet::parse(&v).unwrap(),
        Packet::Error {
            code: ErrorCode::FileNotFound,
            message: b"no such file"
        }
    );
    // A named code passed as Unknown is normalised, not refused.
    let v = error_response(ErrorCode::Unknown(1), "");
    assert_eq!(v, [0, 5, 0, 1, 0]);
    let mut small = [0u8; 3];
    assert!(write_error(ErrorCode::FileNotFound, "x", &mut small).is_err());
}

// ---------------------------------------------------------------------------
// Block boundaries and rollover.

#[test]
fn size_multiple_of_blksize_ends_with_an_empty_block() {
    let f = file(1024);
    let run = perfect(&f, Options::default());
    assert_completed(&run, &f);
    assert_eq!(data_blocks(&run.wire), [(1, 512), (2, 512), (3, 0)]);

    let run = perfect(&[], Options::default());
    assert_completed(&run, &[]);
    assert_eq!(data_blocks(&run.wire), [(1, 0)]);

    let f = file(1468 * 16);
    let run = perfect(&f, opts(Some(1468), false, None, Some(16)));
    assert_completed(&run, &f);
    assert_eq!(data_blocks(&run.wire[1..]).last(), Some(&(17, 0)));
}

#[test]
fn block_numbers_roll_over_to_zero() {
    // 70 000 blocks of 8 bytes, lock-step.
    let f = file(8 * 70_000 + 3);
    let run = perfect(&f, opts(Some(8), false, None, None));
    assert_completed(&run, &f);
    assert!(run.client.saw_rollover);
    let blocks = data_blocks(&run.wire[1..]);
    assert_eq!(blocks.len(), 70_001);
    assert_eq!(blocks[65_534], (65_535, 8));
    assert_eq!(blocks[65_535], (0, 8));
    assert_eq!(blocks[65_536], (1, 8));
    assert_eq!(blocks.last(), Some(&(70_001u64 as u16, 3)));
    assert_eq!(run.counters.retransmits, 0);
}

#[test]
fn windowed_rollover_under_loss() {
    let f = file(8 * 66_000);
    let cfg = ServerConfig {
        max_retries: 20,
        ..config()
    };
    let impair = Impair {
        loss: 2,
        dup: 2,
        jitter_ms: 2,
        ..Impair::default()
    };
    let run = simulate(
        &f,
        opts(Some(8), false, None, Some(16)),
        &cfg,
        impair,
        7,
        false,
    );
    assert_completed(&run, &f);
    assert!(run.client.saw_rollover);
}

// ---------------------------------------------------------------------------
// Duplicate ACKs and timeouts.

#[test]
fn duplicate_acks_never_trigger_retransmits() {
    let f = file(512 * 10);
    let now = Instant::now();
    let mut s = ServerSession::new(now, &request(Options::default()), &f[..], &config()).unwrap();
    drain(&mut s, now);
    s.handle_packet(now, &ack(1));
    assert_eq!(data_blocks(&drain(&mut s, now)), [(2, 512)]);
    for _ in 0..3 {
        s.handle_packet(now, &ack(1));
        assert_eq!(drain(&mut s, now), []);
    }
    // ACK 0 and an ACK for a block never sent are ignored too.
    s.handle_packet(now, &ack(0));
    s.handle_packet(now, &ack(7));
    assert_eq!(drain(&mut s, now), []);
    let c = s.counters();
    assert_eq!((c.duplicate_acks, c.retransmits, c.blocks_sent), (5, 0, 2));

    // Windowed: a repeated full-window ACK sends nothing.
    let req = request(opts(None, false, None, Some(4)));
    let mut s = ServerSession::new(now, &req, &f[..], &config()).unwrap();
    drain(&mut s, now);
    s.handle_packet(now, &ack(0));
    s.handle_packet(now, &ack(0));
    assert_eq!(drain(&mut s, now).len(), 4);
    s.handle_packet(now, &ack(4));
    assert_eq!(drain(&mut s, now).len(), 4);
    s.handle_packet(now, &ack(4));
    s.handle_packet(now, &ack(2));
    assert_eq!(drain(&mut s, now), []);
    assert_eq!(s.counters().retransmits, 0);

    // The same through a duplicating channel with a tftp-hpa-like client,
    // which re-ACKs every duplicate block: no retransmission without loss,
    // as long as the channel's delays stay below the timeout.
    let f = file(512 * 200 + 1);
    let impair = Impair {
        loss: 0,
        dup: 50,
        jitter_ms: 5,
        ..Impair::default()
    };
    let run = simulate(&f, Options::default(), &config(), impair, 3, false);
    assert_completed(&run, &f);
    // The adaptive timer may expire when a delay beats the round trips
    // measured so far; every retransmission is such an expiry, none is a
    // duplicate ACK's.
    assert!(
        run.counters.retransmits <= run.counters.timeouts,
        "{:?}",
        run.counters
    );
    assert!(run.counters.duplicate_acks > 50, "{:?}", run.counters);
}

/// A session serving `f` to a client without options (lock-step).
fn lock_step<'a>(f: &'a [u8], now: Instant, cfg: &ServerConfig) -> ServerSession<&'a [u8]> {
    ServerSession::new(now, &request(Options::default()), f, cfg).unwrap()
}

#[test]
fn timeouts_back_off_to_the_timeout_then_give_up() {
    let f = file(512 * 3);
    let t0 = Instant::now();
    let cfg = config();
    let mut s = lock_step(&f, t0, &cfg);
    drain(&mut s, t0);
    // A round trip of 1 ms: the timer drops to its 5 ms floor.
    let t1 = t0 + Duration::from_millis(1);
    s.handle_packet(t1, &ack(1));
    assert_eq!(s.rto(), cfg.min_rto);
    assert_eq!(data_blocks(&drain(&mut s, t1)), [(2, 512)]);
    // Early wake-ups do nothing.
    s.handle_timeout(t1 + cfg.min_rto / 2);
    assert_eq!(drain(&mut s, t1), []);
    // Doubling from 5 ms up to the 200 ms timeout, then max_retries + 1
    // expiries of the full timeout.
    let ms = Duration::from_millis;
    let mut waits = vec![ms(5), ms(10), ms(20), ms(40), ms(80), ms(160)];
    waits.extend(std::iter::repeat_n(ms(200), cfg.max_retries as usize + 1));
    let mut now = t1;
    for (i, wait) in waits.iter().enumerate() {
        let at = s.poll_timeout().unwrap();
        assert_eq!(at - now, *wait, "expiry {i}");
        now = at;
        s.handle_timeout(now);
        if i + 1 < waits.len() {
            assert_eq!(data_blocks(&drain(&mut s, now)), [(2, 512)], "expiry {i}");
        }
    }
    assert_eq!(s.outcome(), Some(Outcome::TimedOut { acked_bytes: 512 }));
    assert!(s.is_finished());
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(drain(&mut s, now), []);
    let c = s.counters();
    let expiries = waits.len() as u64;
    assert_eq!((c.retransmits, c.timeouts), (expiries - 1, expiries));
}

#[test]
fn the_timer_follows_the_measured_round_trip() {
    let f = file(512 * 100);
    let t0 = Instant::now();
    let cfg = config();
    let mut s = lock_step(&f, t0, &cfg);
    // Nothing measured yet: the timeout.
    assert_eq!(s.rto(), cfg.default_timeout);
    assert_eq!(s.smoothed_rtt(), None);
    let rtt = Duration::from_millis(20);
    let mut now = t0;
    let mut rtos = Vec::new();
    for block in 1..=40u16 {
        assert_eq!(data_blocks(&drain(&mut s, now))[0].0, block);
        now += rtt;
        s.handle_packet(now, &ack(block));
        rtos.push(s.rto());
    }
    // RFC 6298: the first sample gives RTT + 4 * RTT / 2; the variation
    // then decays by a quarter per sample towards the RTT itself.
    assert_eq!(rtos[0], rtt * 3);
    assert_eq!(rtos[1], rtt + rtt / 2 * 3 / 4 * 4);
    assert!(rtos.windows(2).all(|w| w[1] <= w[0]), "{rtos:?}");
    assert!(rtos[39] >= rtt && rtos[39] < rtt + Duration::from_millis(1));
    assert_eq!(s.smoothed_rtt(), Some(rtt));
    // A lost ACK costs the measured timer, not the 200 ms timeout.
    let sent = now;
    assert_eq!(data_blocks(&drain(&mut s, now))[0].0, 41);
    assert_eq!(s.poll_timeout(), Some(sent + rtos[39]));
    // A slower path raises the timer, up to the timeout and no further.
    for block in 41..=60u16 {
        now += Duration::from_millis(150);
        s.handle_packet(now, &ack(block));
        drain(&mut s, now);
    }
    assert_eq!(s.rto(), cfg.default_timeout);
}

#[test]
fn the_floor_holds_on_a_fast_path_and_the_timeout_caps_it() {
    let f = file(512 * 10);
    let t0 = Instant::now();
    let cfg = ServerConfig {
        min_rto: Duration::from_millis(5),
        ..config()
    };
    let mut s = lock_step(&f, t0, &cfg);
    let mut now = t0;
    for block in 1..=5u16 {
        drain(&mut s, now);
        now += Duration::from_micros(30);
        s.handle_packet(now, &ack(block));
    }
    assert_eq!(s.rto(), Duration::from_millis(5));
    assert_eq!(s.smoothed_rtt(), Some(Duration::from_micros(30)));
    // A floor above the timeout (timeout 1 s, floor 2 s) is the timeout.
    let cfg = ServerConfig {
        min_rto: Duration::from_secs(2),
        ..config()
    };
    let req = request(opts(None, false, Some(1), None));
    let mut s = ServerSession::new(t0, &req, &f[..], &cfg).unwrap();
    drain(&mut s, t0);
    s.handle_packet(t0, &ack(0));
    assert_eq!(s.rto(), Duration::from_secs(1));
}

#[test]
fn no_round_trip_is_sampled_from_a_block_sent_twice() {
    let f = file(512 * 10);
    let t0 = Instant::now();
    let cfg = config();
    let mut s = lock_step(&f, t0, &cfg);
    let ms = Duration::from_millis;
    let mut now = t0;
    for block in 1..=3u16 {
        drain(&mut s, now);
        now += ms(1);
        s.handle_packet(now, &ack(block));
    }
    let (srtt, rto) = (s.smoothed_rtt(), s.rto());
    assert_eq!(srtt, Some(ms(1)));
    assert_eq!(rto, cfg.min_rto);
    // Block 4's ACK is late: it expires, is sent again, and the ACK that
    // comes 60 ms after the first copy (1 ms after the second) is ambiguous.
    assert_eq!(data_blocks(&drain(&mut s, now)), [(4, 512)]);
    now = s.poll_timeout().unwrap();
    s.handle_timeout(now);
    assert_eq!(data_blocks(&drain(&mut s, now)), [(4, 512)]);
    assert_eq!(s.rto(), rto * 2);
    now += ms(1);
    s.handle_packet(now, &ack(4));
    assert_eq!(s.smoothed_rtt(), srtt, "sampled a retransmitted block");
    // The backed-off timer stays until a block sent once is acknowledged.
    assert_eq!(s.rto(), rto * 2);
    assert_eq!(data_blocks(&drain(&mut s, now)), [(5, 512)]);
    now += ms(1);
    s.handle_packet(now, &ack(5));
    assert_eq!(s.smoothed_rtt(), srtt);
    assert_eq!(s.rto(), rto);
}

#[test]
fn a_window_is_timed_and_resent_from_its_first_unacknowledged_block() {
    let f = file(512 * 40);
    let t0 = Instant::now();
    let cfg = config();
    let req = request(opts(None, false, None, Some(4)));
    let mut s = ServerSession::new(t0, &req, &f[..], &cfg).unwrap();
    let ms = Duration::from_millis;
    // OACK to ACK 0 is the first sample.
    drain(&mut s, t0);
    let mut now = t0 + ms(2);
    s.handle_packet(now, &ack(0));
    assert_eq!(s.smoothed_rtt(), Some(ms(2)));
    // The window's ACK times its first block.
    let blocks = |w: Vec<Wire>| data_blocks(&w).iter().map(|b| b.0).collect::<Vec<_>>();
    assert_eq!(blocks(drain(&mut s, now)), [1, 2, 3, 4]);
    now += ms(2);
    s.handle_packet(now, &ack(4));
    let rto = s.rto();
    assert_eq!(s.smoothed_rtt(), Some(ms(2)));
    assert_eq!(blocks(drain(&mut s, now)), [5, 6, 7, 8]);
    // The ACK is lost: after one timer (not the timeout) the window is
    // sent again from its first block.
    assert_eq!(s.poll_timeout(), Some(now + rto));
    now += rto;
    s.handle_timeout(now);
    assert_eq!(blocks(drain(&mut s, now)), [5, 6, 7, 8]);
    // The client missed 7: it ACKs 6 (no sample: the window was sent
    // twice) and the window goes on from 7.
    now += ms(1);
    s.handle_packet(now, &ack(6));
    assert_eq!(s.smoothed_rtt(), Some(ms(2)));
    assert_eq!(blocks(drain(&mut s, now)), [7, 8, 9, 10]);
    // 9 is the first block sent once since: ACK 10 samples it.
    now += ms(1);
    s.handle_packet(now, &ack(10));
    assert_eq!(s.smoothed_rtt(), Some((ms(2) * 7 + ms(1)) / 8));
}

#[test]
fn lost_acks_cost_a_round_trip_not_the_timeout() {
    // 400 lock-step blocks, 5% of the client's ACKs lost, a 5 s timeout on
    // both ends (a client that waits as long as the server would).
    let f = file(512 * 400);
    let cfg = ServerConfig {
        default_timeout: Duration::from_secs(5),
        ..config()
    };
    let impair = Impair {
        ack_loss: 5,
        client_timeout: Some(Duration::from_secs(5)),
        ..Impair::default()
    };
    let run = simulate(&f, Options::default(), &cfg, impair, 11, false);
    assert_completed(&run, &f);
    let c = run.counters;
    assert!(c.timeouts >= 10, "too few losses to mean anything: {c:?}");
    // A round trip is 1 ms: 400 of them, plus a timer of a few ms per loss.
    let Outcome::Completed { elapsed, .. } = run.outcome else {
        unreachable!()
    };
    let budget = Duration::from_millis(400) + cfg.min_rto * 4 * c.timeouts as u32;
    assert!(elapsed < budget, "{elapsed:?} for {c:?}");
}

#[test]
fn progress_resets_the_retry_budget() {
    let f = file(512 * 20);
    let mut now = Instant::now();
    let cfg = config();
    let mut s = ServerSession::new(now, &request(Options::default()), &f[..], &cfg).unwrap();
    drain(&mut s, now);
    // Each block needs max_retries retransmissions, yet the transfer goes on.
    for block in 1..=20u16 {
        for _ in 0..cfg.max_retries {
            now = s.poll_timeout().unwrap();
            s.handle_timeout(now);
            assert_eq!(data_blocks(&drain(&mut s, now))[0].0, block);
        }
        s.handle_packet(now, &ack(block));
        drain(&mut s, now);
    }
    s.handle_packet(now, &ack(21));
    assert!(matches!(
        s.outcome(),
        Some(Outcome::Completed { bytes: 10240, .. })
    ));
}

#[test]
fn lost_oack_is_retransmitted() {
    let f = file(100);
    let t0 = Instant::now();
    let req = request(opts(None, true, None, None));
    let mut s = ServerSession::new(t0, &req, &f[..], &config()).unwrap();
    let first = drain(&mut s, t0);
    let now = s.poll_timeout().unwrap();
    s.handle_timeout(now);
    assert_eq!(drain(&mut s, now), first);
    assert_eq!(s.counters().retransmits, 1);
    // A stray ACK 1 before ACK 0 does not start the data.
    s.handle_packet(now, &ack(1));
    assert_eq!(drain(&mut s, now), []);
    s.handle_packet(now, &ack(0));
    assert_eq!(data_blocks(&drain(&mut s, now)), [(1, 100)]);
    s.handle_packet(now + Duration::from_millis(5), &ack(1));
    assert_eq!(
        s.outcome(),
        Some(Outcome::Completed {
            bytes: 100,
            elapsed: now + Duration::from_millis(5) - t0
        })
    );
}

#[test]
fn client_gone_ends_timed_out_in_simulation() {
    let f = file(512 * 50);
    let impair = Impair {
        loss: 100,
        ..Impair::default()
    };
    let run = simulate(&f, Options::default(), &config(), impair, 5, false);
    assert_eq!(run.outcome, Outcome::TimedOut { acked_bytes: 0 });
    assert_eq!(run.counters.blocks_sent, 6);
}

// ---------------------------------------------------------------------------
// Random impairment: the client gets exactly the file, or the session times
// out with the client holding a prefix of it; never a wrong file.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn lossy_channel_never_yields_a_wrong_file(
        len in 0usize..6000,
        blksize in prop::sample::select(vec![None, Some(8u16), Some(64), Some(512), Some(9000)]),
        window in prop::option::of(1u16..12),
        tsize in any::<bool>(),
        loss in 0u32..30,
        dup in 0u32..30,
        jitter_ms in 0u64..40,
        seed in any::<u64>(),
    ) {
        let cfg = ServerConfig { max_blksize: 1024, max_retries: 6, ..config() };
        let f = file(len);
        let impair = Impair { loss, dup, jitter_ms, ..Impair::default() };
        let run = simulate(&f, opts(blksize, tsize, None, window), &cfg, impair, seed, false);
        match run.outcome {
            Outcome::Completed { bytes, .. } => {
                prop_assert_eq!(bytes, len as u64);
                prop_assert!(run.client.done);
                prop_assert!(run.client.data == f, "wrong file");
            }
            Outcome::TimedOut { acked_bytes } => {
                prop_assert!(loss > 0, "timed out on a lossless channel");
                prop_assert!(f.starts_with(&run.client.data), "wrong prefix");
                prop_assert!(acked_bytes <= run.client.data.len() as u64);
            }
            other => prop_assert!(false, "unexpected outcome {:?}", other),
        }
        // No duplicate ACK may cause a send: retransmissions come only from
        // timeouts (a whole window each) or partial-window ACKs.
        if window.is_none() {
            prop_assert!(run.counters.retransmits <= run.counters.timeouts);
        }
        for w in &run.wire {
            if let Wire::Data { payload, .. } = w {
                prop_assert!(payload.len() <= 1024);
            }
        }
    }
}
