//! Serving's tables are bounded, and one client address cannot take them
//! for itself (issue 13), end to end through virtio-user: a flood of read
//! requests for a cached file from one address, never acknowledged, gets
//! that address's share of serving sessions (the rest go on to the origin,
//! unchanged); a real client at another address is still served from the
//! cache, and every session reads one mapping of the file.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use bootcache_testbed::harness::{shared, test_config, Harness};
use bootcache_testbed::scenario::{test_file, udp_frame, Script};
use bootcache_testbed::tftp_client::client_read;
use wire::tftp::{Mode, Options, Packet, Request};

const BOOTCACHE: &str = env!("CARGO_BIN_EXE_bootcache");
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 115);
const FLOODER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 66);
/// `[limits] max_sessions`; one address's share is a sixteenth, at least 4.
const MAX_SESSIONS: usize = 64;
const SHARE: usize = 4;
const FLOOD: u16 = 100;

/// Caches `content` as boot/vmlinuz by a cold read through the bridge;
/// returns a read request for it (no options).
fn fill_vmlinuz(h: &Harness, cache: &std::path::Path, content: &[u8]) -> Vec<u8> {
    h.cold_fill(
        cache,
        SocketAddrV4::new(CLIENT, 49152),
        SERVER,
        "boot/vmlinuz",
        content,
    )
    .unwrap();
    Packet::Rrq(Request {
        filename: b"boot/vmlinuz",
        mode: Mode::OCTET,
        options: Options::default(),
    })
    .to_vec()
    .unwrap()
}

#[test]
fn a_flood_of_read_requests_from_one_address_gets_its_share_of_sessions() {
    let h = shared("bounds");
    let extra = format!("serve_max_age = 3600\n[limits]\nmax_sessions = {MAX_SESSIONS}\n");
    let (cache, cfg) = test_config("bounds", SERVER, &extra).unwrap();
    let bc = h
        .start_with_config(BOOTCACHE.as_ref(), "bounds", &cfg)
        .unwrap();

    // Cold: a first read fills the cache.
    let content = test_file(200_000, 9);
    let rrq = fill_vmlinuz(&h, &cache, &content);

    // The flood: read requests from one address, each from a new port,
    // never acknowledged (the sessions it gets stay open, retransmitting).
    let flood: Script = (0..FLOOD)
        .map(|i| {
            let from = SocketAddrV4::new(FLOODER, 20_000 + i);
            (0, udp_frame(0, from, SocketAddrV4::new(SERVER, 69), &rrq))
        })
        .collect();
    let reps = h.replay(&flood, 32, Duration::from_secs(2)).unwrap();
    assert_eq!(
        reps[0].received,
        u64::from(FLOOD) - SHARE as u64,
        "all but the flooder's share of sessions went on to the origin"
    );

    // Another client is served from the cache all the same.
    let mut opts = Options::default();
    opts.blksize = Some(1428);
    let warm = client_read(
        &h,
        SocketAddrV4::new(CLIENT, 50001),
        SERVER,
        "boot/vmlinuz",
        opts,
    )
    .unwrap();
    assert!(warm.file == content, "served bytes differ");
    assert!(
        warm.server_side_frames.is_empty(),
        "the warm read reached the server"
    );

    let fin = h.stop_bootcache(bc).unwrap();
    let refused = format!("sessions_refused={} ", u64::from(FLOOD) - SHARE as u64);
    assert!(fin.stdout.contains(&refused), "{}", fin.stdout);
    // The flooder's sessions, still retransmitting, read one mapping.
    assert!(fin.stdout.contains("mapped_files=1"), "{}", fin.stdout);
}

/// Requests held for the agent keep their bytes, not the buffers the ports
/// receive into (issue 13): with the agent silent and a pool that has
/// fewer spare buffers than requests held, forwarding goes on as before,
/// every frame crossing; one address still gets only its share of the held
/// requests, the rest going on to the origin.
#[test]
fn held_requests_leave_the_receive_buffers_to_the_ports() {
    const HELD_MAX: usize = 4096;
    const HELD_SHARE: usize = HELD_MAX / 16;
    const FLOODERS: u8 = 12;
    const EACH: u16 = 250;
    let h = shared("bounds");
    // An agent that never answers (the questions are read by no one): the
    // requests are held for tries × retry_ms, far longer than this test
    // (all waiting on one question: the validator's waiter bound is raised
    // to the held bound, which is what this test is about).
    let agent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (cache, cfg) = test_config("bounds-held", SERVER, "").unwrap();
    let key_file = cfg.with_file_name("agent.key");
    std::fs::write(&key_file, [0x5au8; 32]).unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap()
        + &format!(
            "[agent]\naddress = \"{}\"\nkey_file = \"{}\"\nretry_ms = 20000\ntries = 3\n[limits]\nmax_held_requests = {HELD_MAX}\nmax_waiters_per_validation = {HELD_MAX}\n",
            agent.local_addr().unwrap(),
            key_file.display()
        );
    std::fs::write(&cfg, text).unwrap();
    // 4608 buffers: the 4096 descriptors of the two ports and 512 spare,
    // fewer than the requests held below.
    let prefix = format!("bcx-held-{}", std::process::id());
    let bc = h
        .start_bootcache(
            BOOTCACHE.as_ref(),
            &prefix,
            &["--config", cfg.to_str().unwrap(), "--mbufs", "4608"],
        )
        .unwrap();

    let rrq = fill_vmlinuz(&h, &cache, &test_file(100_000, 3));

    // Held: the share of a marker address first, then 12 addresses × 250
    // requests, in chunks smaller than the redirect ring; each chunk ends
    // with one more request from the marker address, which is past its
    // share and so goes on to the origin: its arrival shows the slow path
    // took the chunk (one queue, in order).
    let to = SocketAddrV4::new(SERVER, 69);
    let marker = Ipv4Addr::new(10, 77, 1, 200);
    let mut marker_port = 20_000u16;
    let mut next_marker = || {
        marker_port += 1;
        udp_frame(0, SocketAddrV4::new(marker, marker_port), to, &rrq)
    };
    let mut chunks: Vec<Vec<Vec<u8>>> = vec![(0..=HELD_SHARE).map(|_| next_marker()).collect()];
    let flood: Vec<Vec<u8>> = (0..FLOODERS)
        .flat_map(|host| (0..EACH).map(move |port| (host, port)))
        .map(|(host, port)| {
            let from = SocketAddrV4::new(Ipv4Addr::new(10, 77, 1, 10 + host), 30_000 + port);
            udp_frame(0, from, to, &rrq)
        })
        .collect();
    for chunk in flood.chunks(200) {
        chunks.push(chunk.iter().cloned().chain([next_marker()]).collect());
    }
    for (i, chunk) in chunks.iter().enumerate() {
        let out = h
            .send_then_await(0, chunk, 1, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("chunk {i}: {e}"));
        assert_eq!(out, [chunk.last().unwrap().clone()], "chunk {i}");
    }
    let held = HELD_SHARE as u64 + u64::from(FLOODERS) * u64::from(EACH);
    let refused = chunks.len() as u64;

    // The validator asked the (silent) agent: the requests are held.
    let mut buf = [0u8; 2048];
    agent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    agent
        .recv_from(&mut buf)
        .expect("bootcache asked the agent");

    // Forwarding both ways is untouched by the requests held.
    for side in [0, 1] {
        let rep = h.transfer_test_frames(side, 5000, 64, |_| 1000).unwrap();
        assert_eq!(
            (rep.received, rep.mismatch_count),
            (5000, 0),
            "from side {side} while {held} requests are held"
        );
    }

    let fin = h.stop_bootcache(bc).unwrap();
    assert!(
        fin.stdout.contains(&format!("held_refused={refused} ")),
        "{}",
        fin.stdout
    );
}
