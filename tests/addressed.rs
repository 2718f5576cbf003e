//! Addressed mode end to end through virtio-user: bootcache owns an IPv4
//! address; clients ARP for it, ping it and send it their read requests. A
//! miss is fetched from the origin (played by the harness on the server
//! side with the sans-I/O TFTP server) by bootcache itself, once for all the
//! clients that asked for the file meanwhile; then they, and later clients,
//! are served from the cache.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bootcache_testbed::frames::{CLIENT_MAC, SERVER_MAC};
use bootcache_testbed::harness::{shared, wait_cached, Harness};
use bootcache_testbed::process::{Bootcache, Finished};
use bootcache_testbed::scenario::test_file;
use bootcache_testbed::tftp_client::send;
use dpdk::Burst;
use slowpath::tftp_client::{ClientOptions, ClientOutcome, ClientSession, Destination};
use slowpath::tftp_server::{error_response, ServerConfig, ServerSession};
use wire::frame::arp::{ArpFrameRepr, Operation};
use wire::frame::icmpv4::EchoFrameRepr;
use wire::frame::{MacAddr, UdpFrameRepr};
use wire::tftp::{ErrorCode, Packet};

const BOOTCACHE: &str = env!("CARGO_BIN_EXE_bootcache");
const ORIGIN: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
const OWN: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 5);
const OWN_MAC: [u8; 6] = [0x02, 0xbc, 0, 0, 0, 0x05];

/// Where clients send their requests, and who must answer them.
#[derive(Clone, Copy)]
struct Target {
    ip: Ipv4Addr,
    mac: [u8; 6],
}

/// bootcache's own address (addressed mode).
const BOOTCACHE_ITSELF: Target = Target {
    ip: OWN,
    mac: OWN_MAC,
};
/// The boot server (transparent intercept: bootcache answers as it).
const BOOT_SERVER: Target = Target {
    ip: ORIGIN,
    mac: SERVER_MAC,
};

/// bootcache in addressed mode with `extra` configuration.
fn start<'h>(h: &'h Harness, dir: &std::path::Path, extra: &str) -> Running<'h> {
    start_with(
        h,
        dir,
        &format!("{extra}\n[addressed]\naddress = \"{OWN}\"\nmac = \"02:bc:00:00:00:05\""),
    )
}

/// bootcache with the origin as boot server and `extra` configuration.
fn start_with<'h>(h: &'h Harness, dir: &std::path::Path, extra: &str) -> Running<'h> {
    let cfg = dir.join("bootcache.toml");
    let text = format!(
        "servers = [\"{ORIGIN}\"]\ncache_dir = \"{}\"\n{extra}\n",
        dir.join("cache").display()
    );
    std::fs::write(&cfg, text).unwrap();
    let prefix = format!("bca-{}", std::process::id());
    let bc = h
        .start_bootcache(
            BOOTCACHE.as_ref(),
            &prefix,
            &["--config", cfg.to_str().unwrap()],
        )
        .unwrap();
    Running { h, bc: Some(bc) }
}

/// A running bootcache that shows what it printed if the test fails.
struct Running<'h> {
    h: &'h Harness,
    bc: Option<Bootcache>,
}

impl Running<'_> {
    fn stop(mut self) -> Finished {
        self.h.stop_bootcache(self.bc.take().unwrap()).unwrap()
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Some(bc) = self.bc.take() {
            match self.h.stop_bootcache(bc) {
                Ok(fin) => eprintln!("bootcache stdout:\n{}\nstderr:\n{}", fin.stdout, fin.stderr),
                Err(e) => eprintln!("bootcache: {e:#}"),
            }
        }
    }
}

type OriginSession = ServerSession<Arc<Vec<u8>>>;

/// The boot server on the far side: answers ARP for its address and serves
/// its files with the sans-I/O TFTP server (no windowsize, like tftpd-hpa).
struct Origin {
    files: HashMap<String, Arc<Vec<u8>>>,
    /// By client: our TID, the client's MAC, the session.
    sessions: HashMap<SocketAddrV4, (u16, MacAddr, OriginSession)>,
    next_tid: u16,
    /// Read requests received: (from, file name).
    rrqs: Vec<(SocketAddrV4, String)>,
    data_bytes: u64,
    arp_replies: u64,
    /// Whether ARP requests for the origin are answered.
    answer_arp: bool,
    /// What the origin received and sent (TFTP opcode and block), for the
    /// failure report.
    events: Vec<String>,
}

impl Origin {
    fn new(files: &[(&str, &Arc<Vec<u8>>)]) -> Origin {
        Origin {
            files: files
                .iter()
                .map(|(n, f)| (n.to_string(), Arc::clone(f)))
                .collect(),
            sessions: HashMap::new(),
            next_tid: 30000,
            rrqs: Vec::new(),
            data_bytes: 0,
            arp_replies: 0,
            answer_arp: true,
            events: Vec::new(),
        }
    }

    fn handle(&mut self, h: &Harness, now: Instant, frame: &[u8]) {
        if let Ok(arp) = ArpFrameRepr::parse(frame) {
            if self.answer_arp
                && arp.arp.operation == Operation::Request
                && arp.arp.target_ip == ORIGIN
            {
                let reply = arp.reply_to(MacAddr(SERVER_MAC)).unwrap();
                let mut buf = [0u8; 64];
                let n = reply.emit(&mut buf).unwrap();
                send(h, 1, &buf[..n]).unwrap();
                self.arp_replies += 1;
            }
            return;
        }
        let Ok((repr, payload)) = UdpFrameRepr::parse(frame) else {
            return;
        };
        let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (repr.src(), repr.dst()) else {
            return;
        };
        if *dst.ip() != ORIGIN {
            return;
        }
        self.events
            .push(format!("rx {src} -> {} {}", dst.port(), summary(payload)));
        if dst.port() == 69 {
            let Ok(Packet::Rrq(req)) = Packet::parse(payload) else {
                return;
            };
            let name = String::from_utf8_lossy(req.filename).into_owned();
            self.rrqs.push((src, name.clone()));
            let tid = self.next_tid;
            self.next_tid += 1;
            let Some(file) = self.files.get(&name) else {
                let err = error_response(ErrorCode::FileNotFound, "no such file");
                send_udp(
                    h,
                    1,
                    SERVER_MAC,
                    repr.src_mac.0,
                    SocketAddrV4::new(ORIGIN, tid),
                    src,
                    &err,
                );
                return;
            };
            let config = ServerConfig {
                offer_windowsize: false,
                ..ServerConfig::default()
            };
            let s = ServerSession::new(now, &req, Arc::clone(file), &config).unwrap();
            self.sessions.insert(src, (tid, repr.src_mac, s));
        } else if let Some((tid, _, s)) = self.sessions.get_mut(&src) {
            if *tid == dst.port() {
                s.handle_packet(now, payload);
            }
        }
        self.pump(h, now);
    }

    fn pump(&mut self, h: &Harness, now: Instant) {
        for (peer, (tid, mac, s)) in &mut self.sessions {
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
            }
            while let Some(t) = s.poll_transmit(now) {
                let mut buf = vec![0u8; t.payload_len()];
                let n = s.write(&t, &mut buf).unwrap();
                if n > 4 && buf[1] == 3 {
                    self.data_bytes += (n - 4) as u64;
                }
                self.events
                    .push(format!("tx {tid} -> {peer} {}", summary(&buf[..n])));
                send_udp(
                    h,
                    1,
                    SERVER_MAC,
                    mac.0,
                    SocketAddrV4::new(ORIGIN, *tid),
                    *peer,
                    &buf[..n],
                );
            }
        }
        self.sessions.retain(|_, (_, _, s)| !s.is_finished());
    }
}

fn send_udp(
    h: &Harness,
    side: usize,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
) {
    let repr = UdpFrameRepr::ipv4(MacAddr(src_mac), MacAddr(dst_mac), src, dst);
    let mut buf = vec![0u8; repr.buffer_len(payload.len()).max(60)];
    let n = repr.emit(&mut buf, payload).unwrap();
    send(h, side, &buf[..n.max(60)]).unwrap();
}

/// One client reading one file from bootcache's address.
struct Client {
    addr: SocketAddrV4,
    session: ClientSession,
    file: Vec<u8>,
}

/// Runs `clients` against bootcache's own address.
fn run(h: &Harness, origin: &mut Origin, clients: &mut [Client]) -> Vec<Option<ClientOutcome>> {
    run_against(h, origin, clients, BOOTCACHE_ITSELF)
}

/// Runs `clients`, sending to `target`, with `origin` on the far side until
/// all have ended (or 60 s passed); every answer must come from `target`.
/// Returns how each ended.
fn run_against(
    h: &Harness,
    origin: &mut Origin,
    clients: &mut [Client],
    target: Target,
) -> Vec<Option<ClientOutcome>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut burst = Burst::new();
    for c in clients.iter_mut() {
        flush_client(h, c, Instant::now(), target);
    }
    while Instant::now() < deadline && clients.iter().any(|c| c.session.outcome().is_none()) {
        let now = Instant::now();
        if h.ports[1].rx_burst(0, &mut burst) > 0 {
            for m in burst.drain() {
                origin.handle(h, now, m.data());
            }
        }
        origin.pump(h, now);
        if h.ports[0].rx_burst(0, &mut burst) > 0 {
            for m in burst.drain() {
                let Ok((repr, payload)) = UdpFrameRepr::parse(m.data()) else {
                    continue;
                };
                let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (repr.src(), repr.dst()) else {
                    continue;
                };
                let Some(c) = clients.iter_mut().find(|c| c.addr == dst) else {
                    continue;
                };
                assert_eq!(*src.ip(), target.ip, "answer to {dst} from another address");
                assert_eq!(
                    repr.src_mac.0, target.mac,
                    "answer to {dst} from another MAC"
                );
                c.session.handle_packet(now, src.port(), payload);
                flush_client(h, c, now, target);
            }
        }
        for c in clients.iter_mut() {
            if c.session.poll_timeout().is_some_and(|t| t <= now) {
                c.session.handle_timeout(now);
                flush_client(h, c, now, target);
            }
        }
    }
    let outcomes: Vec<_> = clients
        .iter()
        .map(|c| c.session.outcome().cloned())
        .collect();
    if outcomes
        .iter()
        .any(|o| !matches!(o, Some(ClientOutcome::Completed { .. })))
    {
        let tail = origin.events.len().saturating_sub(60);
        eprintln!(
            "origin's last events:\n{}",
            origin.events[tail..].join("\n")
        );
        eprintln!(
            "harness: pool available {}; ports {:?} {:?}",
            h.pool.available(),
            h.ports[0].stats().ok(),
            h.ports[1].stats().ok()
        );
        for (i, c) in clients.iter().enumerate().take(5) {
            eprintln!(
                "client {i}: {} bytes, {:?}, {:?}",
                c.file.len(),
                c.session.counters(),
                c.session.outcome()
            );
        }
    }
    outcomes
}

/// A TFTP packet in a few words: opcode and block.
fn summary(payload: &[u8]) -> String {
    match Packet::parse(payload) {
        Ok(Packet::Data { block, payload }) => format!("DATA {block} ({} bytes)", payload.len()),
        Ok(Packet::Ack { block }) => format!("ACK {block}"),
        Ok(p) => format!("{:?}", p.opcode()),
        Err(e) => format!("malformed: {e}"),
    }
}

fn flush_client(h: &Harness, c: &mut Client, now: Instant, target: Target) {
    while let Some((offset, bytes)) = c.session.poll_data() {
        assert_eq!(offset as usize, c.file.len());
        c.file.extend_from_slice(&bytes);
    }
    while let Some(t) = c.session.poll_transmit(now) {
        let port = match t.to {
            Destination::Origin => 69,
            Destination::Server => c.session.server_tid().unwrap_or(69),
            Destination::Stray(p) => p,
        };
        send_udp(
            h,
            0,
            CLIENT_MAC,
            target.mac,
            c.addr,
            SocketAddrV4::new(target.ip, port),
            &t.payload,
        );
    }
}

fn clients(names: &[(&str, ClientOptions)], first_port: u16) -> Vec<Client> {
    names
        .iter()
        .enumerate()
        .map(|(i, (name, o))| Client {
            addr: SocketAddrV4::new(
                Ipv4Addr::new(10, 78, 0, 100 + i as u8),
                first_port + i as u16,
            ),
            // Patient clients (PXE ROMs retry for a minute): a loaded CI
            // machine must not fail the test by scheduling alone.
            session: ClientSession::new(
                Instant::now(),
                name,
                ClientOptions {
                    max_retries: 12,
                    ..o.clone()
                },
            )
            .unwrap(),
            file: Vec::new(),
        })
        .collect()
}

/// Sends `frame` from the client side and returns the first frame that
/// comes back on the client side.
fn ask(h: &Harness, frame: &[u8]) -> Option<Vec<u8>> {
    let mut burst = Burst::new();
    // Asked again each second, as ARP and ping do: the slow path may still
    // be starting on a loaded machine.
    for _ in 0..5 {
        send(h, 0, frame).unwrap();
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if h.ports[0].rx_burst(0, &mut burst) > 0 {
                return burst.drain().next().map(|m| m.data().to_vec());
            }
        }
    }
    None
}

#[test]
fn addressed_mode_answers_arp_and_ping_fetches_misses_once_and_serves_hits() {
    let h = shared("addressed");
    let dir =
        std::env::temp_dir().join(format!("bootcache-addressed-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bc = start(&h, &dir, "serve_max_age = 3600");

    // ARP: who has OWN? Answered with the configured MAC; other addresses
    // are not bootcache's (the request crosses to the server side instead).
    let who_has = ArpFrameRepr::request(MacAddr(CLIENT_MAC), Ipv4Addr::new(10, 78, 0, 100), OWN);
    let mut buf = [0u8; 64];
    let n = who_has.emit(&mut buf).unwrap();
    let Some(reply) = ask(&h, &buf[..n]) else {
        let fin = bc.stop();
        panic!(
            "no ARP reply; bootcache said:\n{}\n{}",
            fin.stdout, fin.stderr
        );
    };
    let reply = ArpFrameRepr::parse(&reply).unwrap();
    assert_eq!(reply.arp.operation, Operation::Reply);
    assert_eq!(
        (reply.arp.sender_ip, reply.arp.sender_mac),
        (OWN, MacAddr(OWN_MAC))
    );
    assert_eq!(reply.dst_mac, MacAddr(CLIENT_MAC));

    // Ping.
    let echo = EchoFrameRepr {
        src_mac: MacAddr(CLIENT_MAC),
        dst_mac: MacAddr(OWN_MAC),
        outer_vlan: None,
        inner_vlan: None,
        src_ip: Ipv4Addr::new(10, 78, 0, 100),
        dst_ip: OWN,
        ident: 7,
        seq: 1,
        is_request: true,
    };
    let mut buf = [0u8; 128];
    let n = echo.emit(&mut buf, b"bootcache ping").unwrap();
    let pong = ask(&h, &buf[..n]).expect("an echo reply");
    let (pong, data) = EchoFrameRepr::parse(&pong).unwrap();
    assert!(!pong.is_request);
    assert_eq!((pong.src_ip, pong.ident, pong.seq), (OWN, 7, 1));
    assert_eq!(data, b"bootcache ping");

    let kernel = Arc::new(test_file(700_000, 3));
    let initrd = Arc::new(test_file(200_000, 4));
    let mut origin = Origin::new(&[("boot/vmlinuz", &kernel), ("boot/initrd", &initrd)]);

    // Cold: five clients ask for the kernel at once, two for the initrd,
    // with different options; one missing file. The origin must see one
    // read request per file.
    let lockstep = ClientOptions {
        blksize: None,
        ask_tsize: false,
        ..ClientOptions::default()
    };
    let windowed = ClientOptions {
        windowsize: Some(16),
        ..ClientOptions::default()
    };
    let cold = [
        ("boot/vmlinuz", ClientOptions::default()),
        ("boot/vmlinuz", lockstep.clone()),
        ("boot/vmlinuz", windowed.clone()),
        ("boot/vmlinuz", ClientOptions::default()),
        ("boot/vmlinuz", lockstep.clone()),
        ("boot/initrd", ClientOptions::default()),
        ("boot/initrd", windowed.clone()),
        ("no/such/file", ClientOptions::default()),
    ];
    let mut cs = clients(&cold, 2000);
    let outcomes = run(&h, &mut origin, &mut cs);
    for (i, c) in cs.iter().enumerate().take(7) {
        let want = if i < 5 { &kernel } else { &initrd };
        assert!(
            matches!(outcomes[i], Some(ClientOutcome::Completed { .. })),
            "client {i}: {:?}",
            outcomes[i]
        );
        assert!(
            c.file == **want,
            "client {i}: {} bytes differ",
            c.file.len()
        );
    }
    assert!(
        matches!(
            &outcomes[7],
            Some(ClientOutcome::ServerError(ErrorCode::FileNotFound, _))
        ),
        "{:?}",
        outcomes[7]
    );
    let mut asked: Vec<&str> = origin.rrqs.iter().map(|(_, n)| n.as_str()).collect();
    asked.sort_unstable();
    assert_eq!(asked, ["boot/initrd", "boot/vmlinuz", "no/such/file"]);
    assert!(origin.rrqs.iter().all(|(from, _)| *from.ip() == OWN));
    // Retransmissions (on a loaded machine) count too.
    assert!(origin.data_bytes >= (kernel.len() + initrd.len()) as u64);

    // Warm: three more clients; nothing reaches the origin.
    let before = (origin.rrqs.len(), origin.data_bytes);
    let warm = [
        ("boot/vmlinuz", windowed),
        ("boot/vmlinuz", lockstep),
        ("boot/initrd", ClientOptions::default()),
    ];
    let mut cs = clients(&warm, 3000);
    let outcomes = run(&h, &mut origin, &mut cs);
    for (i, c) in cs.iter().enumerate() {
        let want = if i < 2 { &kernel } else { &initrd };
        assert!(
            matches!(outcomes[i], Some(ClientOutcome::Completed { .. })),
            "{outcomes:?}"
        );
        assert!(c.file == **want, "warm client {i} got different bytes");
    }
    assert_eq!(
        (origin.rrqs.len(), origin.data_bytes),
        before,
        "the origin was asked again"
    );

    let fin = bc.stop();
    eprintln!("{}", fin.stdout);
    for want in [
        "fetches=3 fetch_joins=5",
        "fetches_completed=2 fetches_failed=1",
        "origin_bytes=900000 ",
        "served_bytes=5500000 ",
        "pings=",
        "arp_answered=",
        "own-address=",
    ] {
        assert!(
            fin.stdout.contains(want),
            "missing {want:?} in {}",
            fin.stdout
        );
    }
    assert!(
        origin.arp_replies >= 1,
        "bootcache never resolved the origin"
    );
}

#[test]
fn a_copy_past_max_age_is_fetched_again_and_an_unresolvable_origin_gives_an_error() {
    let h = shared("addressed");
    let dir = std::env::temp_dir().join(format!("bootcache-addressed-age-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bc = start(&h, &dir, "serve_max_age = 1");
    let old = Arc::new(test_file(100_000, 5));
    let mut origin = Origin::new(&[("pxelinux.0", &old)]);
    let mut cs = clients(&[("pxelinux.0", ClientOptions::default())], 4000);
    run(&h, &mut origin, &mut cs);
    assert!(
        cs[0].file == *old,
        "cold read got {} bytes",
        cs[0].file.len()
    );

    // The file changes on the server; once the copy is older than
    // serve_max_age, the next request is fetched again and gets the new one.
    std::thread::sleep(Duration::from_millis(1500));
    let new = Arc::new(test_file(120_000, 6));
    origin.files.insert("pxelinux.0".into(), Arc::clone(&new));
    let mut cs = clients(&[("pxelinux.0", ClientOptions::default())], 4100);
    let outcomes = run(&h, &mut origin, &mut cs);
    if cs[0].file != *new {
        let fin = bc.stop();
        panic!(
            "after the change: {} bytes, {outcomes:?}\n{}\n{}",
            cs[0].file.len(),
            fin.stdout,
            fin.stderr
        );
    }
    assert_eq!(origin.rrqs.len(), 2);

    let fin = bc.stop();
    assert!(
        fin.stdout.contains("fetches=2 fetch_joins=0"),
        "{}",
        fin.stdout
    );
    assert!(
        fin.stdout.contains("files cached=1 refreshed=0 replaced=1"),
        "{}",
        fin.stdout
    );
    // A fresh bootcache (no ARP entry) and an origin that does not answer
    // ARP: the client gets an ERROR that says so.
    let bc = start(&h, &dir, "serve_max_age = 1");
    origin.answer_arp = false;
    // The second fetch's session ends here: the client can finish (served
    // from the fetch under way) before the origin has the last ACK, and
    // on a loaded machine the session's retransmission then reached the
    // fresh bootcache, which learned the origin's address from it (a UDP
    // frame from the server side) and fetched (seen once in CI).
    origin.sessions.clear();
    let mut cs = clients(&[("pxelinux.0", ClientOptions::default())], 4200);
    std::thread::sleep(Duration::from_millis(1500));
    let outcomes = run(&h, &mut origin, &mut cs);
    match &outcomes[0] {
        Some(ClientOutcome::ServerError(ErrorCode::NotDefined, msg)) => {
            assert!(msg.contains("ARP"), "{msg}")
        }
        other => panic!("expected an ERROR naming ARP, got {other:?}"),
    }
    let fin = bc.stop();
    assert!(fin.stdout.contains("fetches_failed=1"), "{}", fin.stdout);
    assert!(fin.stdout.contains("arp_failed=1"), "{}", fin.stdout);
}

/// Four files, 100 clients at once, with a mix of options.
fn hundred_clients(first_port: u16) -> (Vec<Arc<Vec<u8>>>, Vec<Client>) {
    let files: Vec<Arc<Vec<u8>>> = (0..4u8)
        .map(|i| Arc::new(test_file(256_000 + usize::from(i) * 1000, 20 + i)))
        .collect();
    let options = [
        ClientOptions::default(),
        ClientOptions {
            blksize: None,
            ask_tsize: false,
            ..ClientOptions::default()
        },
        ClientOptions {
            windowsize: Some(16),
            ..ClientOptions::default()
        },
    ];
    let names: Vec<String> = (0..100).map(|i| format!("boot/file{}", i % 4)).collect();
    let asks: Vec<(&str, ClientOptions)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), options[i % 3].clone()))
        .collect();
    (files, clients(&asks, first_port))
}

fn assert_all_identical(files: &[Arc<Vec<u8>>], cs: &[Client], outcomes: &[Option<ClientOutcome>]) {
    for (i, c) in cs.iter().enumerate() {
        assert!(
            matches!(outcomes[i], Some(ClientOutcome::Completed { .. })),
            "client {i}: {:?}",
            outcomes[i]
        );
        assert!(
            c.file == *files[i % 4],
            "client {i}: its {} bytes differ",
            c.file.len()
        );
    }
}

#[test]
fn a_hundred_concurrent_clients_get_byte_identical_files_in_both_modes() {
    let h = shared("addressed");
    let dir = std::env::temp_dir().join(format!("bootcache-addressed-100-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (files, _) = hundred_clients(0);
    let names: Vec<String> = (0..4).map(|i| format!("boot/file{i}")).collect();
    let refs: Vec<(&str, &Arc<Vec<u8>>)> = names.iter().map(String::as_str).zip(&files).collect();
    let mut origin = Origin::new(&refs);

    // Transparent intercept: one cold read per file fills the cache through
    // the bridge, then 100 clients at once are served as the boot server.
    let bc = start_with(&h, &dir, "serve_max_age = 3600");
    let cold: Vec<(&str, ClientOptions)> = names
        .iter()
        .map(|n| (n.as_str(), ClientOptions::default()))
        .collect();
    let mut cs = clients(&cold, 5000);
    let outcomes = run_against(&h, &mut origin, &mut cs, BOOT_SERVER);
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Some(ClientOutcome::Completed { .. }))),
        "{outcomes:?}"
    );
    // Publishing is asynchronous: the warm reads need all four in the cache.
    let cache = dir.join("cache");
    for (name, file) in names.iter().zip(&files) {
        let size = file.len() as u64;
        wait_cached(&cache, ORIGIN, name, size, Duration::from_secs(10)).unwrap();
    }
    let before = origin.rrqs.len();
    let (_, mut cs) = hundred_clients(6000);
    let outcomes = run_against(&h, &mut origin, &mut cs, BOOT_SERVER);
    assert_all_identical(&files, &cs, &outcomes);
    assert_eq!(
        origin.rrqs.len(),
        before,
        "warm requests reached the boot server"
    );
    let fin = bc.stop();
    assert!(fin.stdout.contains("serve hits=100 "), "{}", fin.stdout);

    // Addressed mode, cold cache: 100 clients at once, one origin fetch per file.
    std::fs::remove_dir_all(dir.join("cache")).unwrap();
    let bc = start(&h, &dir, "serve_max_age = 3600");
    let before = origin.rrqs.len();
    let (_, mut cs) = hundred_clients(7000);
    let outcomes = run(&h, &mut origin, &mut cs);
    assert_all_identical(&files, &cs, &outcomes);
    assert_eq!(
        origin.rrqs.len() - before,
        4,
        "{:?}",
        &origin.rrqs[before..]
    );
    let fin = bc.stop();
    assert!(
        fin.stdout.contains("fetches=4 fetch_joins=96"),
        "{}",
        fin.stdout
    );
}

/// Addressed mode's tables are bounded (issue 13): past `[limits]
/// max_fetches` fetches under way, and past one client address's share of
/// the requests held for them, a request is answered with a TFTP ERROR
/// "busy" at once; the origin sees only the fetches allowed.
#[test]
fn fetches_and_the_requests_waiting_for_them_are_bounded() {
    let h = shared("addressed");
    let dir = std::env::temp_dir().join(format!("bootcache-addressed-lim-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // A share of max_held_requests is a sixteenth, at least 4.
    let bc = start(
        &h,
        &dir,
        "serve_max_age = 3600\n[limits]\nmax_fetches = 2\nmax_held_requests = 64",
    );
    // The origin answers ARP, never a read request: fetches stay under way.
    let mut origin = Origin::new(&[]);
    let a = Ipv4Addr::new(10, 78, 0, 100);
    let b = Ipv4Addr::new(10, 78, 0, 101);
    let rrq = |name: &str| {
        Packet::Rrq(wire::tftp::Request {
            filename: name.as_bytes(),
            mode: wire::tftp::Mode::OCTET,
            options: wire::tftp::Options::default(),
        })
        .to_vec()
        .unwrap()
    };
    // Client a: six files, two fetches allowed, four refused. Client b: six
    // requests for a file being fetched, its share (4) waits, two refused.
    let mut requests: Vec<(SocketAddrV4, Vec<u8>)> = (0..6u16)
        .map(|i| (SocketAddrV4::new(a, 5000 + i), rrq(&format!("f{i}"))))
        .collect();
    requests.extend((0..6u16).map(|i| (SocketAddrV4::new(b, 6000 + i), rrq("f0"))));
    let to = SocketAddrV4::new(OWN, 69);
    let mut busy = Vec::new();
    let mut fetched = std::collections::BTreeSet::new();
    let mut burst = Burst::new();
    // All at once: one queue, taken in order (the order decides which are
    // refused).
    for (from, payload) in &requests {
        send_udp(&h, 0, CLIENT_MAC, OWN_MAC, *from, to, payload);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while (busy.len() < 6 || fetched.len() < 2) && Instant::now() < deadline {
        let now = Instant::now();
        if h.ports[1].rx_burst(0, &mut burst) > 0 {
            for m in burst.drain() {
                if let Ok((repr, payload)) = UdpFrameRepr::parse(m.data()) {
                    if let Ok(Packet::Rrq(req)) = Packet::parse(payload) {
                        assert_eq!(repr.dst(), SocketAddr::V4(SocketAddrV4::new(ORIGIN, 69)));
                        fetched.insert(String::from_utf8_lossy(req.filename).into_owned());
                    }
                    continue;
                }
                origin.handle(&h, now, m.data());
            }
        }
        if h.ports[0].rx_burst(0, &mut burst) > 0 {
            for m in burst.drain() {
                let Ok((repr, payload)) = UdpFrameRepr::parse(m.data()) else {
                    continue;
                };
                if let Ok(Packet::Error { message, .. }) = Packet::parse(payload) {
                    let message = String::from_utf8_lossy(message);
                    assert!(message.contains("busy"), "{message}");
                    busy.push(repr.dst());
                }
            }
        }
    }
    let fin = bc.stop();
    assert_eq!(
        fetched.into_iter().collect::<Vec<_>>(),
        ["f0", "f1"],
        "the origin was asked for"
    );
    let expected: Vec<SocketAddr> = [2, 3, 4, 5]
        .map(|i| SocketAddr::V4(SocketAddrV4::new(a, 5000 + i)))
        .into_iter()
        .chain([4, 5].map(|i| SocketAddr::V4(SocketAddrV4::new(b, 6000 + i))))
        .collect();
    assert_eq!(busy, expected, "answered busy\n{}", fin.stdout);
    assert!(fin.stdout.contains("fetches_refused=4"), "{}", fin.stdout);
    assert!(fin.stdout.contains("held_refused=2 "), "{}", fin.stdout);
    assert!(
        fin.stdout.contains("fetches=2 fetch_joins=4"),
        "{}",
        fin.stdout
    );
}

/// Direction is the root of trust in addressed mode too (issue 13): while
/// a fetch waits for the origin, a host on the client side claims the
/// origin's address by ARP and answers the fetch itself from the origin's
/// address on every port of the fetch range. None of it is believed: the
/// origin is resolved and heard on the server side only, and the client
/// gets (and the cache keeps) the origin's bytes.
#[test]
fn the_origin_is_believed_on_the_server_side_only() {
    const EVIL_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 0x66];
    let h = shared("addressed");
    let dir =
        std::env::temp_dir().join(format!("bootcache-addressed-spoof-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bc = start(&h, &dir, "serve_max_age = 3600");
    let real = Arc::new(test_file(150_000, 8));
    let mut origin = Origin::new(&[("pxelinux.0", &real)]);
    // The origin is slow to answer ARP: the fetch waits.
    origin.answer_arp = false;
    let mut cs = clients(&[("pxelinux.0", ClientOptions::default())], 4300);
    flush_client(&h, &mut cs[0], Instant::now(), BOOTCACHE_ITSELF);

    // The attacker, on the client side: "the origin is at EVIL_MAC" ...
    let poison = ArpFrameRepr::request(MacAddr(OWN_MAC), OWN, ORIGIN)
        .reply_to(MacAddr(EVIL_MAC))
        .unwrap();
    let mut buf = [0u8; 64];
    let n = poison.emit(&mut buf).unwrap();
    send(&h, 0, &buf[..n]).unwrap();
    // ... and the origin's one and last DATA block on every fetch port.
    let evil = Packet::Data {
        block: 1,
        payload: b"evil",
    }
    .to_vec()
    .unwrap();
    for port in 40960..=49151u16 {
        send_udp(
            &h,
            0,
            EVIL_MAC,
            OWN_MAC,
            SocketAddrV4::new(ORIGIN, 30000),
            SocketAddrV4::new(OWN, port),
            &evil,
        );
    }

    // Now the real origin answers, on the server side.
    origin.answer_arp = true;
    let outcomes = run(&h, &mut origin, &mut cs);
    assert!(
        matches!(outcomes[0], Some(ClientOutcome::Completed { .. })),
        "{outcomes:?}"
    );
    assert!(
        cs[0].file == *real,
        "the client got {} other bytes",
        cs[0].file.len()
    );
    assert_eq!(origin.rrqs.len(), 1, "one fetch, from the origin");
    let fin = bc.stop();
    // Both the ARP claim and the spoofed answers were counted and dropped.
    let arp_wrong_side = addressed_stat(&fin.stdout, "wrong_side");
    assert!(arp_wrong_side >= 1, "{}", fin.stdout);
    // Every spoofed answer was dropped by the slow path, or before it
    // when the burst overflowed the redirect ring.
    let trap_drops = bootcache_testbed::netns::stat(&fin.stdout, "redirect", "trap_drops").unwrap();
    assert!(
        addressed_stat(&fin.stdout, "dropped") + trap_drops >= 8192,
        "{}",
        fin.stdout
    );
    let entries = slowpath::filestore::read_index(&dir.join("cache")).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0].size,
        real.len() as u64,
        "the cache holds another file"
    );
}

/// The last value of `key` in the `addressed` section of the final
/// statistics.
fn addressed_stat(stdout: &str, key: &str) -> u64 {
    bootcache_testbed::netns::stat(stdout, "addressed", key)
        .unwrap_or_else(|| panic!("no addressed {key} in:\n{stdout}"))
}
