//! Serving from the cache by transparent intercept, end to end through
//! virtio-user: a first read fills the cache through the bridge; a second
//! client's read of the same file is answered by bootcache itself, as if the
//! boot server had answered, and nothing reaches the server side.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use bootcache_testbed::harness::{assert_crossed, shared, Harness};
use bootcache_testbed::process::Bootcache;
use bootcache_testbed::scenario::{test_file, udp_frame};
use bootcache_testbed::tftp_client::{client_read, ClientRead};
use slowpath::imagemap::{ImageMap, ServedFrom};
use wire::tftp::{Mode, Options, Packet, Request};

const BOOTCACHE: &str = env!("CARGO_BIN_EXE_bootcache");
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 115);

/// Starts bootcache with the boot server, a cache in `dir` and `extra`
/// configuration (the serving policy).
fn start(h: &Harness, dir: &std::path::Path, tag: &str, extra: &str) -> Bootcache {
    let cfg = dir.join("bootcache.toml");
    let text = format!(
        "servers = [\"{SERVER}\"]\ncache_dir = \"{}\"\n{extra}",
        dir.join("cache").display()
    );
    std::fs::write(&cfg, text).unwrap();
    let prefix = format!("bcs-{tag}-{}", std::process::id());
    h.start_bootcache(
        BOOTCACHE.as_ref(),
        &prefix,
        &["--config", cfg.to_str().unwrap()],
    )
    .unwrap()
}

/// A first client's read of `name` crosses to the origin (scripted server
/// on the far side) and fills the cache in `dir`; returns once the cache's
/// index lists it.
fn cold_fill(h: &Harness, dir: &std::path::Path, client_port: u16, name: &str, content: &[u8]) {
    let client = SocketAddrV4::new(CLIENT, client_port);
    h.cold_fill(&dir.join("cache"), client, SERVER, name, content)
        .unwrap();
}

fn read(
    h: &Harness,
    client: SocketAddrV4,
    server: Ipv4Addr,
    name: &str,
    options: Options<'_>,
) -> ClientRead {
    client_read(h, client, server, name, options).unwrap()
}

/// A read request for `name` from the client at `port` to the server.
fn rrq_frame(port: u16, name: &[u8]) -> Vec<u8> {
    let p = Packet::Rrq(Request {
        filename: name,
        mode: Mode::OCTET,
        options: Options::default(),
    });
    udp_frame(
        0,
        SocketAddrV4::new(CLIENT, port),
        SocketAddrV4::new(SERVER, 69),
        &p.to_vec().unwrap(),
    )
}

#[test]
fn a_second_client_is_served_from_the_cache_and_the_server_sees_nothing() {
    let h = shared("serve");
    let dir = std::env::temp_dir().join(format!("bootcache-serve-{}-cache", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bc = start(&h, &dir, "max-age", "serve_max_age = 3600\n");

    // Cold: the first client's read crosses to the origin (the RRQ is
    // trapped, found missing, and handed on unchanged) and fills the cache.
    let content = test_file(300_000, 7);
    cold_fill(&h, &dir, 49152, "boot/vmlinuz", &content);

    // Warm, lock-step with options: answered by bootcache as the server.
    let mut opts = Options::default();
    opts.blksize = Some(1428);
    opts.tsize = Some(0);
    let warm = read(
        &h,
        SocketAddrV4::new(CLIENT, 50001),
        SERVER,
        "boot/vmlinuz",
        opts,
    );
    assert!(
        warm.file == content,
        "served bytes differ ({} of {} bytes)",
        warm.file.len(),
        content.len()
    );
    assert!(warm.oack);
    let by = warm.answered_by.unwrap();
    assert_eq!(*by.ip(), SERVER);
    assert_ne!(by.port(), 69);
    assert!(
        warm.server_side_frames.is_empty(),
        "{} frames reached the server",
        warm.server_side_frames.len()
    );

    // Warm, RFC 1350 (no options) and windowed (windowsize 16, which the
    // origin was never asked for).
    let plain = read(
        &h,
        SocketAddrV4::new(CLIENT, 50002),
        SERVER,
        "boot/vmlinuz",
        Options::default(),
    );
    assert!(plain.file == content && !plain.oack);
    let mut w = Options::default();
    w.blksize = Some(1024);
    w.windowsize = Some(16);
    let windowed = read(
        &h,
        SocketAddrV4::new(CLIENT, 50003),
        SERVER,
        "boot/vmlinuz",
        w,
    );
    assert!(windowed.file == content && windowed.oack);
    assert!(plain.server_side_frames.is_empty() && windowed.server_side_frames.is_empty());

    // A file the cache lacks: the RRQ reaches the server side unchanged.
    let miss = Packet::Rrq(Request {
        filename: b"not/cached.img",
        mode: Mode::OCTET,
        options: Options::default(),
    });
    let rrq = udp_frame(
        0,
        SocketAddrV4::new(CLIENT, 50004),
        SocketAddrV4::new(SERVER, 69),
        &miss.to_vec().unwrap(),
    );
    let reps = h.replay(&[(0, rrq)], 1, Duration::from_secs(3)).unwrap();
    assert_crossed("RRQ for a missing file", &reps);

    let fin = h.stop_bootcache(bc).unwrap();
    eprintln!("{}", fin.stdout);
    assert!(fin.stdout.contains("serve hits=3"), "{}", fin.stdout);
    assert!(
        fin.stdout.contains(
            "completed=3 size_probes=0 client_errors=0 timeouts=0 aborted=0 served_bytes=900000 "
        ),
        "{}",
        fin.stdout
    );
    let map = ImageMap::load(&dir.join("cache")).unwrap();
    let f = map
        .client_by_ip(CLIENT)
        .and_then(|c| c.file(SERVER, "boot/vmlinuz"))
        .expect("in the image map");
    assert_eq!(f.served_from, ServedFrom::Cache);
}

/// The real agent logic (`bootcache_agent::Responder` over a `Table` of a
/// TFTP root) on a loopback UDP socket in a thread, as `bootcache-agent`
/// runs it; the table is refreshed by the test instead of by inotify.
struct InProcessAgent {
    addr: std::net::SocketAddr,
    table: std::sync::Arc<std::sync::RwLock<bootcache_agent::Table>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Datagrams the responder dropped because their HMAC did not verify.
    bad_mac: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcessAgent {
    fn start(root: &std::path::Path, key: &[u8]) -> InProcessAgent {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, RwLock};
        let table = Arc::new(RwLock::new(bootcache_agent::Table::scan(root).unwrap()));
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut responder = bootcache_agent::Responder::new(
            bootcache_agent::Key::new(key.to_vec()).unwrap(),
            Duration::from_secs(30),
            4096,
            1,
        );
        let bad_mac = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (t, s, b) = (Arc::clone(&table), Arc::clone(&stop), Arc::clone(&bad_mac));
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let table = t.read().unwrap();
                if let Some(answer) =
                    responder.handle(std::time::SystemTime::now(), &buf[..n], |f, sha| {
                        table.query(f, sha)
                    })
                {
                    let _ = socket.send_to(&answer, from);
                }
                b.store(responder.counters().bad_mac, Ordering::Relaxed);
            }
        });
        InProcessAgent {
            addr,
            table,
            stop,
            bad_mac,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

#[test]
fn hits_are_validated_with_the_agent_stale_bad_hmac_and_unreachable_go_to_the_origin() {
    let h = shared("serve");
    let dir = std::env::temp_dir().join(format!("bootcache-serve-agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let root = dir.join("tftproot");
    std::fs::create_dir_all(root.join("boot")).unwrap();
    let content = test_file(200_000, 9);
    std::fs::write(root.join("boot/initrd.img"), &content).unwrap();
    let key = [0x5au8; 32];
    std::fs::write(dir.join("agent.key"), key).unwrap();
    let mut agent = InProcessAgent::start(&root, &key);
    let agent_cfg = format!(
        "[agent]\naddress = \"{}\"\nkey_file = \"{}\"\nanswer_ttl = 0\n",
        agent.addr,
        dir.join("agent.key").display()
    );
    let bc = start(&h, &dir, "agent", &agent_cfg);

    // Cold: fills the cache through the bridge.
    cold_fill(&h, &dir, 49160, "boot/initrd.img", &content);

    // Current for the agent: served from the cache, the server sees nothing.
    let warm = read(
        &h,
        SocketAddrV4::new(CLIENT, 50010),
        SERVER,
        "boot/initrd.img",
        Options::default(),
    );
    assert!(warm.file == content);
    assert!(warm.server_side_frames.is_empty());

    // The file changes on the server: the agent says stale, the RRQ goes to the origin.
    std::fs::write(root.join("boot/initrd.img"), test_file(200_000, 10)).unwrap();
    agent
        .table
        .write()
        .unwrap()
        .refresh("boot/initrd.img")
        .unwrap();
    let rrq = |port: u16| rrq_frame(port, b"boot/initrd.img");
    let reps = h
        .replay(&[(0, rrq(50011))], 1, Duration::from_secs(5))
        .unwrap();
    assert_crossed("RRQ for a stale copy", &reps);

    // A cache with the wrong key: the agent drops its questions (bad HMAC,
    // counted) and never answers, so the hit is not served (default policy).
    let fin = h.stop_bootcache(bc).unwrap();
    assert!(
        fin.stdout.contains("serve hits=1 ") && fin.stdout.contains("stale=1 "),
        "{}",
        fin.stdout
    );
    std::fs::write(dir.join("wrong.key"), [0xa5u8; 32]).unwrap();
    let wrong_cfg = agent_cfg.replace("agent.key", "wrong.key");
    let bc = start(&h, &dir, "agent-wrong-key", &wrong_cfg);
    let before = agent.bad_mac.load(std::sync::atomic::Ordering::Relaxed);
    std::fs::write(root.join("boot/initrd.img"), &content).unwrap();
    agent
        .table
        .write()
        .unwrap()
        .refresh("boot/initrd.img")
        .unwrap();
    let reps = h
        .replay(&[(0, rrq(50013))], 1, Duration::from_secs(8))
        .unwrap();
    assert_crossed("RRQ validated with a wrong key", &reps);
    let dropped = agent.bad_mac.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(
        dropped >= 1,
        "the agent accepted a question under a wrong key"
    );
    let fin = h.stop_bootcache(bc).unwrap();
    assert!(
        fin.stdout.contains("serve hits=0 ") && fin.stdout.contains("agent_unreachable=1"),
        "{}",
        fin.stdout
    );
    let bc = start(&h, &dir, "agent-again", &agent_cfg);

    // The agent is gone: after its retries, the RRQ goes to the origin (default policy).
    agent.stop();
    let reps = h
        .replay(&[(0, rrq(50012))], 1, Duration::from_secs(8))
        .unwrap();
    assert_crossed("RRQ with the agent unreachable", &reps);

    let fin = h.stop_bootcache(bc).unwrap();
    eprintln!("{}", fin.stdout);
    assert!(
        fin.stdout.contains("serve hits=0 ") && fin.stdout.contains("agent_unreachable=1"),
        "{}",
        fin.stdout
    );
}

/// Issue 13: the validator's tables are bounded. With room for one
/// question and one waiter on it, and an agent that never answers, a
/// second read request for the same cached file is refused by the
/// validator and goes to the origin at once, untouched
/// (`validations_refused`), overtaking the first, which is held until its
/// question gives up (`agent_unreachable`) and then goes there too.
#[test]
fn validations_past_the_validators_bounds_go_to_the_origin() {
    let h = shared("serve");
    let dir = std::env::temp_dir().join(format!("bootcache-serve-vbounds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("agent.key"), [0x5au8; 32]).unwrap();
    // Bound, never read: the agent's questions go unanswered.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let cfg = format!(
        "[agent]\naddress = \"{}\"\nkey_file = \"{}\"\nanswer_ttl = 0\n\
         [limits]\nmax_validations = 1\nmax_waiters_per_validation = 1\n",
        silent.local_addr().unwrap(),
        dir.join("agent.key").display()
    );
    let bc = start(&h, &dir, "vbounds", &cfg);
    let content = test_file(50_000, 11);
    cold_fill(&h, &dir, 49170, "boot/vmlinuz", &content);

    let reps = h
        .replay(
            &[
                (0, rrq_frame(50020, b"boot/vmlinuz")),
                (0, rrq_frame(50021, b"boot/vmlinuz")),
            ],
            2,
            Duration::from_secs(8),
        )
        .unwrap();
    assert_eq!(reps[0].received, 2, "both requests reach the origin");
    // Both crossed, in the other order: the second was not held.
    assert_eq!(reps[0].mismatch_count, 2, "{:?}", reps[0]);

    let fin = h.stop_bootcache(bc).unwrap();
    for want in [
        "serve hits=0 ",
        "agent_unreachable=1 ",
        "held_refused=0 ",
        "validations_refused=1 ",
    ] {
        assert!(fin.stdout.contains(want), "no {want:?} in {}", fin.stdout);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
