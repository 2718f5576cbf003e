//! The client session against the crate's own [`ServerSession`] over a
//! simulated channel (loss, duplication, reordering) with a simulated clock,
//! plus scripted servers for what `ServerSession` never does.

use proptest::prelude::*;
use wire::tftp::TransferMode;

use super::*;
use crate::tftp_server::{Outcome, ServerConfig, ServerSession};

const CLIENT_PORT: u16 = 40000;
const SERVER_TID: u16 = 50000;

/// A file whose bytes depend on their offset, so a misplaced block shows.
fn file(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn opts(blksize: Option<u16>, windowsize: Option<u16>, ask_tsize: bool) -> ClientOptions {
    ClientOptions {
        blksize,
        windowsize,
        ask_tsize,
        timeout: Duration::from_millis(300),
        max_retries: 5,
        max_size: 1 << 30,
    }
}

fn server_config() -> ServerConfig {
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

/// A tiny deterministic PRNG (xorshift64*), seeded by proptest.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn percent(&mut self, p: u32) -> bool {
        self.next() % 100 < u64::from(p)
    }
}

#[derive(Debug)]
struct InFlight {
    to_server: bool,
    from_port: u16,
    to_port: u16,
    bytes: Vec<u8>,
}

/// Client and server joined by a simulated channel.
struct Sim {
    now: Instant,
    client: ClientSession,
    server: Option<ServerSession<Vec<u8>>>,
    /// `None`: the origin answers the RRQ with ERROR 1.
    file: Option<Vec<u8>>,
    config: ServerConfig,
    flight: Vec<InFlight>,
    rng: Rng,
    loss: u32,
    dup: u32,
    reorder: bool,
    /// What the client handed out, appended in order.
    got: Vec<u8>,
    /// Client packets sent, parsed: (destination, packet kind).
    sent: Vec<(Destination, Vec<u8>)>,
    server_done: Option<Outcome>,
}

impl Sim {
    fn new(file: Option<Vec<u8>>, options: ClientOptions) -> Sim {
        let now = Instant::now();
        Sim {
            now,
            client: ClientSession::new(now, "pxelinux.0", options).expect("rrq"),
            server: None,
            file,
            config: server_config(),
            flight: Vec::new(),
            rng: Rng(0x9E37_79B9_7F4A_7C15),
            loss: 0,
            dup: 0,
            reorder: false,
            got: Vec::new(),
            sent: Vec::new(),
            server_done: None,
        }
    }

    fn lossy(mut self, seed: u64, loss: u32, dup: u32, reorder: bool) -> Sim {
        self.rng = Rng(seed | 1);
        self.loss = loss;
        self.dup = dup;
        self.reorder = reorder;
        self
    }

    fn send(&mut self, p: InFlight) {
        if self.loss > 0 && self.rng.percent(self.loss) {
            return;
        }
        if self.dup > 0 && self.rng.percent(self.dup) {
            self.flight.push(InFlight {
                to_server: p.to_server,
                from_port: p.from_port,
                to_port: p.to_port,
                bytes: p.bytes.clone(),
            });
        }
        self.flight.push(p);
    }

    /// Pulls everything both ends have to send or hand out.
    fn drain(&mut self) {
        while let Some(t) = self.client.poll_transmit(self.now) {
            let to_port = match t.to {
                Destination::Origin => 69,
                Destination::Server => self.client.server_tid().expect("tid before ACK"),
                Destination::Stray(p) => p,
            };
            self.sent.push((t.to, t.payload.clone()));
            self.send(InFlight {
                to_server: true,
                from_port: CLIENT_PORT,
                to_port,
                bytes: t.payload,
            });
        }
        while let Some((offset, bytes)) = self.client.poll_data() {
            assert_eq!(offset, self.got.len() as u64, "data out of order");
            self.got.extend_from_slice(&bytes);
        }
        if let Some(server) = &mut self.server {
            let mut buf = vec![0; 70000];
            let mut out = Vec::new();
            while let Some(t) = server.poll_transmit(self.now) {
                let n = server.write(&t, &mut buf).expect("server emit");
                out.push(buf[..n].to_vec());
            }
            if server.is_finished() && self.server_done.is_none() {
                self.server_done = server.outcome();
            }
            for bytes in out {
                self.send(InFlight {
                    to_server: false,
                    from_port: SERVER_TID,
                    to_port: CLIENT_PORT,
                    bytes,
                });
            }
        }
    }

    fn deliver(&mut self, p: InFlight) {
        if !p.to_server {
            self.client.handle_packet(self.now, p.from_port, &p.bytes);
            return;
        }
        if p.to_port == 69 {
            // Retransmitted RRQs never reach the session (see tftp_server).
            if self.server.is_some() || self.server_done.is_some() {
                return;
            }
            let Ok(Packet::Rrq(req)) = Packet::parse(&p.bytes) else {
                panic!("not an RRQ to port 69");
            };
            assert_eq!(req.mode.kind(), TransferMode::Octet);
            match &self.file {
                Some(f) => {
                    self.server = Some(
                        ServerSession::new(self.now, &req, f.clone(), &self.config)
                            .expect("served"),
                    );
                }
                None => {
                    let bytes = error_response(ErrorCode::FileNotFound, "File not found");
                    self.server_done = Some(Outcome::ClientError(ErrorCode::NotDefined));
                    self.send(InFlight {
                        to_server: false,
                        from_port: SERVER_TID,
                        to_port: CLIENT_PORT,
                        bytes,
                    });
                }
            }
        } else if p.to_port == SERVER_TID {
            if let Some(s) = &mut self.server {
                s.handle_packet(self.now, &p.bytes);
            }
        }
    }

    /// Runs until the client has ended and the channel is empty.
    fn run(&mut self) -> ClientOutcome {
        self.drain();
        for _ in 0..10_000_000u64 {
            if !self.flight.is_empty() {
                let i = if self.reorder {
                    (self.rng.next() % self.flight.len() as u64) as usize
                } else {
                    0
                };
                let p = self.flight.remove(i);
                self.now += Duration::from_micros(10);
                self.deliver(p);
                self.drain();
                continue;
            }
            if let Some(o) = self.client.outcome() {
                return o.clone();
            }
            let next = [
                self.client.poll_timeout(),
                self.server.as_ref().and_then(|s| s.poll_timeout()),
            ]
            .into_iter()
            .flatten()
            .min()
            .expect("client neither ended nor waits for anything");
            self.now = self.now.max(next);
            self.client.handle_timeout(self.now);
            if let Some(s) = &mut self.server {
                s.handle_timeout(self.now);
            }
            self.drain();
        }
        panic!("simulation did not end");
    }

    fn acks_sent(&self) -> usize {
        self.sent
            .iter()
            .filter(|(_, b)| matches!(Packet::parse(b), Ok(Packet::Ack { .. })))
            .count()
    }
}

fn fetch(len: usize, options: ClientOptions) -> Sim {
    let f = file(len);
    let mut sim = Sim::new(Some(f.clone()), options);
    let outcome = sim.run();
    assert_eq!(
        outcome,
        ClientOutcome::Completed { size: len as u64 },
        "len {len}"
    );
    assert_eq!(sim.got, f, "len {len}");
    assert!(
        matches!(sim.server_done, Some(Outcome::Completed { bytes, .. }) if bytes == len as u64),
        "{:?}",
        sim.server_done
    );
    sim
}

#[test]
fn plain_rfc1350() {
    let sim = fetch(1300, opts(None, None, false));
    assert!(!sim.client.oack_received());
    assert_eq!(sim.client.blksize(), 512);
    // RRQ, then one ACK per block (3 blocks).
    assert_eq!(sim.sent[0].0, Destination::Origin);
    assert_eq!(sim.acks_sent(), 3);
    assert!(sim.sent[1..].iter().all(|(d, _)| *d == Destination::Server));
    assert_eq!(sim.client.server_tid(), Some(SERVER_TID));
}

#[test]
fn rrq_carries_the_options() {
    let c = ClientSession::new(Instant::now(), "a/b.efi", opts(Some(1428), Some(8), true));
    let mut c = c.expect("rrq");
    let t = c.poll_transmit(Instant::now()).expect("rrq due");
    assert_eq!(t.to, Destination::Origin);
    let Ok(Packet::Rrq(r)) = Packet::parse(&t.payload) else {
        panic!("not an RRQ");
    };
    assert_eq!(r.filename, b"a/b.efi");
    assert_eq!(r.mode.kind(), TransferMode::Octet);
    assert_eq!(r.options.blksize, Some(1428));
    assert_eq!(r.options.windowsize, Some(8));
    assert_eq!(r.options.tsize, Some(0));
    assert!(c.poll_transmit(Instant::now()).is_none());
    assert!(ClientSession::new(Instant::now(), "", opts(None, None, false)).is_err());
    assert!(ClientSession::new(Instant::now(), "x", opts(Some(4), None, false)).is_err());
}

#[test]
fn blksize_and_tsize_oack() {
    let sim = fetch(5000, opts(Some(1024), None, true));
    assert!(sim.client.oack_received());
    assert_eq!(sim.client.blksize(), 1024);
    assert_eq!(sim.client.tsize(), Some(5000));
    // ACK 0, then 5 blocks.
    assert_eq!(sim.acks_sent(), 6);
}

#[test]
fn blksize_lowered_by_server() {
    let sim = fetch(10_000, opts(Some(8192), None, false));
    assert_eq!(sim.client.blksize(), 1468);
}

#[test]
fn windowsize_16() {
    let len = 100_000;
    let sim = fetch(len, opts(Some(512), Some(16), true));
    assert_eq!(sim.client.windowsize(), 16);
    let blocks = len / 512 + 1;
    // ACK 0, one per full window, one for the last block.
    assert_eq!(sim.acks_sent(), 1 + blocks / 16 + 1);
}

#[test]
fn empty_file() {
    let sim = fetch(0, opts(None, None, false));
    assert_eq!(sim.acks_sent(), 1);
    let sim = fetch(0, opts(Some(1024), Some(4), true));
    assert_eq!(sim.client.tsize(), Some(0));
}

#[test]
fn size_multiple_of_blksize() {
    let sim = fetch(4096, opts(Some(512), None, true));
    // ACK 0, 8 full blocks, the empty ninth.
    assert_eq!(sim.acks_sent(), 10);
    fetch(4096, opts(Some(512), Some(3), false));
    fetch(1024, opts(None, None, false));
}

#[test]
fn rollover_lock_step() {
    // 65537 blocks of 8 bytes, the last short: wraps 65535 → 0 → 1.
    let len = 8 * 65536 + 3;
    let sim = fetch(len, opts(Some(8), None, false));
    assert_eq!(sim.client.counters().blocks, 65537);
}

#[test]
fn rollover_windowed() {
    let len = 8 * 65540;
    fetch(len, opts(Some(8), Some(64), true));
}

#[test]
fn rollover_windowed_lossy() {
    let f = file(8 * 65600 + 5);
    let mut o = opts(Some(8), Some(32), true);
    o.max_retries = 50;
    let mut sim = Sim::new(Some(f.clone()), o).lossy(7, 1, 1, true);
    sim.config.max_retries = 50;
    let outcome = sim.run();
    assert_eq!(
        outcome,
        ClientOutcome::Completed {
            size: f.len() as u64
        }
    );
    assert_eq!(sim.got, f);
}

/// A server that wraps from 65535 to 1, in lock-step: the client follows.
#[test]
fn rollover_to_one() {
    let now = Instant::now();
    let mut c = ClientSession::new(now, "f", opts(Some(8), None, false)).expect("rrq");
    c.poll_transmit(now).expect("rrq");
    let mut oack = Options::default();
    oack.blksize = Some(8);
    c.handle_packet(now, SERVER_TID, &Packet::Oack(oack).to_vec().expect("oack"));
    c.poll_transmit(now).expect("ack 0");
    let blocks: u64 = 65537;
    let mut got = Vec::new();
    for abs in 1..=blocks {
        let wire = ((abs - 1) % 65535 + 1) as u16;
        let payload: Vec<u8> = if abs == blocks {
            vec![9; 3]
        } else {
            (0..8).map(|i| (abs as u8).wrapping_add(i)).collect()
        };
        let pkt = Packet::Data {
            block: wire,
            payload: &payload,
        }
        .to_vec()
        .expect("data");
        c.handle_packet(now, SERVER_TID, &pkt);
        let t = c.poll_transmit(now).expect("ack");
        assert_eq!(Packet::parse(&t.payload), Ok(Packet::Ack { block: wire }));
        while let Some((_, d)) = c.poll_data() {
            got.extend(d);
        }
    }
    assert_eq!(
        c.outcome(),
        Some(&ClientOutcome::Completed {
            size: 8 * 65536 + 3
        })
    );
    assert_eq!(got.len(), 8 * 65536 + 3);
}

#[test]
fn server_error_file_not_found() {
    let mut sim = Sim::new(None, opts(Some(1024), None, true));
    let outcome = sim.run();
    assert_eq!(
        outcome,
        ClientOutcome::ServerError(ErrorCode::FileNotFound, "File not found".into())
    );
    assert!(sim.got.is_empty());
    // Never answer an ERROR.
    assert_eq!(sim.sent.len(), 1);
    assert!(sim.client.is_finished());
}

fn data(block: u16, payload: &[u8]) -> Vec<u8> {
    Packet::Data { block, payload }.to_vec().expect("data")
}

fn parse_error(t: &ClientTransmit) -> ErrorCode {
    match Packet::parse(&t.payload) {
        Ok(Packet::Error { code, .. }) => code,
        other => panic!("not an ERROR: {other:?}"),
    }
}

#[test]
fn wrong_tid_gets_error_5() {
    let now = Instant::now();
    let mut c = ClientSession::new(now, "f", opts(None, None, false)).expect("rrq");
    c.poll_transmit(now).expect("rrq");
    c.handle_packet(now, SERVER_TID, &data(1, &[1; 512]));
    let ack = c.poll_transmit(now).expect("ack 1");
    assert_eq!(ack.to, Destination::Server);
    // A second server (a duplicated RRQ answered twice) sends DATA 1.
    c.handle_packet(now, 50001, &data(1, &[2; 512]));
    let t = c.poll_transmit(now).expect("error 5");
    assert_eq!(t.to, Destination::Stray(50001));
    assert_eq!(parse_error(&t), ErrorCode::UnknownTid);
    assert!(c.poll_transmit(now).is_none());
    // An ERROR from a stray is not answered and changes nothing.
    c.handle_packet(now, 50001, &error_response(ErrorCode::NotDefined, "x"));
    assert!(c.poll_transmit(now).is_none());
    assert!(c.outcome().is_none());
    // The transfer goes on.
    c.handle_packet(now, SERVER_TID, &data(2, &[3; 10]));
    assert_eq!(c.poll_transmit(now).expect("ack 2").to, Destination::Server);
    assert_eq!(c.outcome(), Some(&ClientOutcome::Completed { size: 522 }));
    assert_eq!(c.poll_data(), Some((0, vec![1; 512])));
    assert_eq!(c.poll_data(), Some((512, vec![3; 10])));
    assert_eq!(c.counters().stray_packets, 2);
}

#[test]
fn wrong_tid_in_simulation() {
    // Inject a stray mid-transfer against the real server.
    let f = file(3000);
    let mut sim = Sim::new(Some(f.clone()), opts(None, None, false));
    sim.drain();
    for _ in 0..3 {
        let p = sim.flight.remove(0);
        sim.deliver(p);
        sim.drain();
    }
    sim.client.handle_packet(sim.now, 1234, &data(2, &[0; 512]));
    sim.drain();
    assert!(sim.sent.iter().any(|(d, b)| *d == Destination::Stray(1234)
        && matches!(
            Packet::parse(b),
            Ok(Packet::Error {
                code: ErrorCode::UnknownTid,
                ..
            })
        )));
    // The stray's ERROR goes to port 1234, which nobody serves.
    assert_eq!(sim.run(), ClientOutcome::Completed { size: 3000 });
    assert_eq!(sim.got, f);
}

#[test]
fn timeouts_exhaust_retries() {
    let t0 = Instant::now();
    let mut o = opts(None, None, false);
    o.max_retries = 3;
    let mut c = ClientSession::new(t0, "f", o).expect("rrq");
    let mut rrqs = 0;
    let mut now = t0;
    while c.outcome().is_none() {
        while let Some(t) = c.poll_transmit(now) {
            assert_eq!(t.to, Destination::Origin);
            assert!(matches!(Packet::parse(&t.payload), Ok(Packet::Rrq(_))));
            rrqs += 1;
        }
        now = c.poll_timeout().expect("armed");
        // Early wake-ups change nothing.
        c.handle_timeout(now - Duration::from_millis(1));
        assert!(c.poll_transmit(now).is_none());
        c.handle_timeout(now);
    }
    assert_eq!(rrqs, 4);
    assert_eq!(c.outcome(), Some(&ClientOutcome::TimedOut));
    assert_eq!(now - t0, Duration::from_millis(1200));
    assert!(c.poll_timeout().is_none());
    assert!(c.is_finished());
}

#[test]
fn server_goes_silent_mid_transfer() {
    let t0 = Instant::now();
    let mut o = opts(None, None, false);
    o.max_retries = 2;
    let mut c = ClientSession::new(t0, "f", o).expect("rrq");
    c.poll_transmit(t0);
    c.handle_packet(t0, SERVER_TID, &data(1, &[1; 512]));
    let mut acks = Vec::new();
    let mut now = t0;
    while c.outcome().is_none() {
        while let Some(t) = c.poll_transmit(now) {
            acks.push(t.payload);
        }
        now = c.poll_timeout().expect("armed");
        c.handle_timeout(now);
    }
    let ack1 = Packet::Ack { block: 1 }.to_vec().expect("ack");
    assert_eq!(acks, vec![ack1; 3]);
    assert_eq!(c.outcome(), Some(&ClientOutcome::TimedOut));
}

#[test]
fn duplicate_data_re_acked_not_taken() {
    let now = Instant::now();
    let mut c = ClientSession::new(now, "f", opts(None, None, false)).expect("rrq");
    c.poll_transmit(now);
    c.handle_packet(now, SERVER_TID, &data(1, &[1; 512]));
    c.poll_transmit(now).expect("ack 1");
    c.handle_packet(now, SERVER_TID, &data(1, &[1; 512]));
    let t = c.poll_transmit(now).expect("re-ack");
    assert_eq!(Packet::parse(&t.payload), Ok(Packet::Ack { block: 1 }));
    // Once until progress.
    c.handle_packet(now, SERVER_TID, &data(1, &[1; 512]));
    assert!(c.poll_transmit(now).is_none());
    assert_eq!(c.counters().duplicate_blocks, 2);
    assert_eq!(c.poll_data(), Some((0, vec![1; 512])));
    assert_eq!(c.poll_data(), None);
}

#[test]
fn gap_acks_last_in_order_once() {
    let now = Instant::now();
    let mut c = ClientSession::new(now, "f", opts(Some(8), Some(4), false)).expect("rrq");
    c.poll_transmit(now);
    let mut oack = Options::default();
    oack.blksize = Some(8);
    oack.windowsize = Some(4);
    c.handle_packet(now, SERVER_TID, &Packet::Oack(oack).to_vec().expect("oack"));
    let t = c.poll_transmit(now).expect("ack 0");
    assert_eq!(Packet::parse(&t.payload), Ok(Packet::Ack { block: 0 }));
    c.handle_packet(now, SERVER_TID, &data(1, &[1; 8]));
    assert!(c.poll_transmit(now).is_none());
    // Block 2 lost.
    c.handle_packet(now, SERVER_TID, &data(3, &[3; 8]));
    let t = c.poll_transmit(now).expect("gap ack");
    assert_eq!(Packet::parse(&t.payload), Ok(Packet::Ack { block: 1 }));
    c.handle_packet(now, SERVER_TID, &data(4, &[4; 8]));
    assert!(c.poll_transmit(now).is_none());
    // The server resends from 2.
    for b in 2..=5u16 {
        c.handle_packet(now, SERVER_TID, &data(b, &[b as u8; 8]));
    }
    let t = c.poll_transmit(now).expect("window ack");
    assert_eq!(Packet::parse(&t.payload), Ok(Packet::Ack { block: 5 }));
    assert_eq!(c.received_bytes(), 40);
}

fn oack_reply(asked: ClientOptions, granted: Options<'static>) -> (ClientSession, ClientTransmit) {
    let now = Instant::now();
    let mut c = ClientSession::new(now, "f", asked).expect("rrq");
    c.poll_transmit(now);
    c.handle_packet(
        now,
        SERVER_TID,
        &Packet::Oack(granted).to_vec().expect("oack"),
    );
    let t = c.poll_transmit(now).expect("reply");
    (c, t)
}

#[test]
fn oack_larger_than_asked_is_refused() {
    let mut o = Options::default();
    o.blksize = Some(2048);
    let (c, t) = oack_reply(opts(Some(1024), None, false), o);
    assert_eq!(parse_error(&t), ErrorCode::OptionNegotiation);
    assert_eq!(
        c.outcome(),
        Some(&ClientOutcome::Protocol(ProtocolError::OptionIncreased))
    );
    let mut o = Options::default();
    o.windowsize = Some(9);
    let (c, t) = oack_reply(opts(None, Some(8), false), o);
    assert_eq!(parse_error(&t), ErrorCode::OptionNegotiation);
    assert_eq!(
        c.outcome(),
        Some(&ClientOutcome::Protocol(ProtocolError::OptionIncreased))
    );
}

#[test]
fn oack_with_unrequested_option_is_refused() {
    let mut o = Options::default();
    o.windowsize = Some(4);
    let (c, t) = oack_reply(opts(Some(1024), None, true), o);
    assert_eq!(parse_error(&t), ErrorCode::OptionNegotiation);
    assert_eq!(
        c.outcome(),
        Some(&ClientOutcome::Protocol(ProtocolError::UnrequestedOption))
    );
}

#[test]
fn oack_subset_is_fine() {
    let mut o = Options::default();
    o.tsize = Some(100);
    let (c, t) = oack_reply(opts(Some(1024), Some(8), true), o);
    assert_eq!(Packet::parse(&t.payload), Ok(Packet::Ack { block: 0 }));
    assert_eq!(
        (c.blksize(), c.windowsize(), c.tsize()),
        (512, 1, Some(100))
    );
}

#[test]
fn tsize_over_cap_is_disk_full() {
    let mut asked = opts(None, None, true);
    asked.max_size = 1000;
    let mut o = Options::default();
    o.tsize = Some(1001);
    let (c, t) = oack_reply(asked, o);
    assert_eq!(parse_error(&t), ErrorCode::DiskFull);
    assert_eq!(c.outcome(), Some(&ClientOutcome::TooLarge));
}

#[test]
fn data_over_cap_is_disk_full() {
    let mut o = opts(None, None, false);
    o.max_size = 1000;
    let mut sim = Sim::new(Some(file(1500)), o);
    assert_eq!(sim.run(), ClientOutcome::TooLarge);
    assert_eq!(sim.got.len(), 512);
    assert_eq!(
        sim.server_done,
        Some(Outcome::ClientError(ErrorCode::DiskFull))
    );
    // Exactly at the cap is fine.
    let mut o = opts(None, None, false);
    o.max_size = 1500;
    let mut sim = Sim::new(Some(file(1500)), o);
    assert_eq!(sim.run(), ClientOutcome::Completed { size: 1500 });
}

#[test]
fn data_beyond_tsize_is_refused() {
    let mut o = Options::default();
    o.tsize = Some(10);
    let (mut c, _ack0) = oack_reply(opts(None, None, true), o);
    let now = Instant::now();
    c.handle_packet(now, SERVER_TID, &data(1, &[0; 11]));
    assert_eq!(
        parse_error(&c.poll_transmit(now).expect("error")),
        ErrorCode::IllegalOperation
    );
    assert_eq!(
        c.outcome(),
        Some(&ClientOutcome::Protocol(ProtocolError::SizeMismatch))
    );
}

#[test]
fn oversized_block_and_illegal_packets() {
    let now = Instant::now();
    let mut c = ClientSession::new(now, "f", opts(None, None, false)).expect("rrq");
    c.poll_transmit(now);
    c.handle_packet(now, SERVER_TID, &data(1, &[0; 513]));
    assert_eq!(
        parse_error(&c.poll_transmit(now).expect("err")),
        ErrorCode::IllegalOperation
    );
    assert_eq!(
        c.outcome(),
        Some(&ClientOutcome::Protocol(ProtocolError::OversizedBlock))
    );

    let mut c = ClientSession::new(now, "f", opts(None, None, false)).expect("rrq");
    c.poll_transmit(now);
    // Garbage before any reply is ignored (no TID yet).
    c.handle_packet(now, SERVER_TID, &[0, 9, 9]);
    assert!(c.poll_transmit(now).is_none());
    c.handle_packet(now, SERVER_TID, &data(1, &[0; 512]));
    c.poll_transmit(now);
    c.handle_packet(
        now,
        SERVER_TID,
        &Packet::Ack { block: 1 }.to_vec().expect("ack"),
    );
    assert_eq!(
        parse_error(&c.poll_transmit(now).expect("err")),
        ErrorCode::IllegalOperation
    );
    assert_eq!(
        c.outcome(),
        Some(&ClientOutcome::Protocol(ProtocolError::IllegalPacket))
    );
}

#[test]
fn dally_re_acks_last_block() {
    let now = Instant::now();
    let mut c = ClientSession::new(now, "f", opts(None, None, false)).expect("rrq");
    c.poll_transmit(now);
    c.handle_packet(now, SERVER_TID, &data(1, &[5; 7]));
    c.poll_transmit(now).expect("ack");
    assert!(c.poll_timeout().is_none());
    c.handle_packet(now, SERVER_TID, &data(1, &[5; 7]));
    let t = c.poll_transmit(now).expect("re-ack");
    assert_eq!(Packet::parse(&t.payload), Ok(Packet::Ack { block: 1 }));
    assert_eq!(c.poll_data(), Some((0, vec![5; 7])));
    assert!(c.is_finished());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Over a lossy, duplicating, reordering channel the client ends with
    /// exactly the file or a failure, never a wrong file.
    #[test]
    fn lossy_channel_never_yields_a_wrong_file(
        len in prop_oneof![0usize..3000, 3000usize..40_000],
        blksize in prop::option::of(8u16..1500),
        windowsize in prop::option::of(1u16..24),
        ask_tsize in any::<bool>(),
        loss in 0u32..30,
        dup in 0u32..20,
        reorder in any::<bool>(),
        retries in 2u32..12,
        seed in any::<u64>(),
    ) {
        let f = file(len);
        let mut o = opts(blksize, windowsize, ask_tsize);
        o.max_retries = retries;
        let mut sim = Sim::new(Some(f.clone()), o).lossy(seed, loss, dup, reorder);
        sim.config.max_retries = retries;
        match sim.run() {
            ClientOutcome::Completed { size } => {
                prop_assert_eq!(size, len as u64);
                prop_assert_eq!(&sim.got, &f);
            }
            ClientOutcome::TimedOut => {
                prop_assert!(f.starts_with(&sim.got), "prefix so far must be right");
            }
            other => prop_assert!(false, "unexpected outcome {:?}", other),
        }
    }
}
