//! Serving's tables are bounded, and one client address cannot take them
//! for itself (issue 13), end to end through virtio-user: a flood of read
//! requests for a cached file from one address, never acknowledged, gets
//! that address's share of serving sessions (the rest go on to the origin,
//! unchanged); a real client at another address is still served from the
//! cache, and every session reads one mapping of the file.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use bootcache_bench::harness::{shared, test_config};
use bootcache_bench::scenario::{test_file, udp_frame, Script};
use bootcache_bench::tftp_client::client_read;
use wire::tftp::{Mode, Options, Packet, Request};

const BOOTCACHE: &str = env!("CARGO_BIN_EXE_bootcache");
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 115);
const FLOODER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 66);
/// `[limits] max_sessions`; one address's share is a sixteenth, at least 4.
const MAX_SESSIONS: usize = 64;
const SHARE: usize = 4;
const FLOOD: u16 = 100;

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
    h.cold_fill(
        &cache,
        SocketAddrV4::new(CLIENT, 49152),
        SERVER,
        "boot/vmlinuz",
        &content,
    )
    .unwrap();

    // The flood: read requests from one address, each from a new port,
    // never acknowledged (the sessions it gets stay open, retransmitting).
    let rrq = Packet::Rrq(Request {
        filename: b"boot/vmlinuz",
        mode: Mode::OCTET,
        options: Options::default(),
    })
    .to_vec()
    .unwrap();
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
