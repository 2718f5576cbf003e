//! Direction is the root of trust (issue 13), end to end through
//! virtio-user: a host on the client side that plays both ends of a TFTP
//! transfer — its own read request, then the server's answers spoofed from
//! the server's address, DSCP-marked as the server marks what it wants
//! cached — gets nothing cached, while the same transfer from the real
//! server side is cached byte for byte. And verified stays verified: a
//! cached copy corrupted on disk is hashed again before its first client
//! after a restart, and removed.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use bootcache_testbed::harness::{assert_crossed, shared, test_config, Harness};
use bootcache_testbed::process::Finished;
use bootcache_testbed::scenario::{
    test_file, tftp_read, udp_frame, Endpoints, Script, TransferShape,
};
use bootcache_testbed::tftp_client::client_read;
use slowpath::filestore::Filestore;
use wire::frame::{ipv4, VlanScope};
use wire::tftp::{Mode, Options, Packet, Request};

const BOOTCACHE: &str = env!("CARGO_BIN_EXE_bootcache");
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 115);
/// The caching mark the configuration names (Expedited Forwarding).
const MARK: u8 = 46;

/// Runs bootcache while `frames` are replayed through it; its final output.
fn run(h: &Harness, tag: &str, cfg: &Path, frames: &Script) -> Finished {
    let bc = h.start_with_config(BOOTCACHE.as_ref(), tag, cfg).unwrap();
    let reps = h.replay(frames, 64, Duration::from_secs(3)).unwrap();
    assert_crossed(tag, &reps);
    h.stop_bootcache(bc).unwrap()
}

/// The server's frames of `script` marked with the caching DSCP (IPv4
/// header checksum redone), as the boot server marks what it wants cached.
fn marked(script: Script) -> Script {
    script
        .into_iter()
        .map(|(side, mut f)| {
            if side == 1 {
                let mut p = ipv4::Packet::new_unchecked(&mut f[14..]);
                p.set_dscp_ecn(MARK, 0);
                p.fill_checksum();
            }
            (side, f)
        })
        .collect()
}

fn read(name: &str, content: &[u8], client_port: u16) -> Script {
    let ep = Endpoints {
        client: SocketAddrV4::new(CLIENT, client_port),
        server: SERVER,
        server_tid: 40000 + client_port % 1000,
    };
    let shape = TransferShape {
        blksize: Some(1428),
        windowsize: 4,
        ..Default::default()
    };
    tftp_read(ep, name, content, shape)
}

/// `script` with every frame entering on the client side: the attacker's
/// own request and ACKs, and the server's answers spoofed.
fn all_from_the_client_side(script: Script) -> Script {
    script.into_iter().map(|(_, f)| (0, f)).collect()
}

#[test]
fn server_answers_spoofed_on_the_client_side_are_never_cached() {
    let h = shared("trust");
    let (cache, cfg) = test_config("trust", SERVER, &format!("dscp = {MARK}\n")).unwrap();
    let poison = test_file(300_000, 0xe1);
    let real = test_file(300_000, 0x17);
    // Marked and unmarked spoofed transfers, under two names.
    let mut attack = all_from_the_client_side(marked(read("grubx64.efi", &poison, 49152)));
    attack.extend(all_from_the_client_side(read("vmlinuz", &poison, 49153)));
    let fin = run(&h, "spoof", &cfg, &attack);
    let store = Filestore::open(&cache).unwrap();
    assert!(
        store
            .lookup(VlanScope::UNTAGGED, SERVER, "grubx64.efi")
            .is_none()
            && store
                .lookup(VlanScope::UNTAGGED, SERVER, "vmlinuz")
                .is_none(),
        "a transfer played from the client side was cached; final output:\n{}",
        fin.stdout
    );
    assert_eq!(store.len(), 0);
    // The same name from the real server side, marked: cached as sent (the
    // test can see a cached file).
    let fin = run(&h, "real", &cfg, &marked(read("grubx64.efi", &real, 49154)));
    let store = Filestore::open(&cache).unwrap();
    let e = store
        .lookup(VlanScope::UNTAGGED, SERVER, "grubx64.efi")
        .unwrap_or_else(|| panic!("the real transfer was not cached:\n{}", fin.stdout));
    assert!(std::fs::read(store.path_of(e)).unwrap() == real);
}

/// Verified stays verified (issue 13): after a restart every cached file
/// is hashed again on the writer thread (no request waits for it: until
/// then a request goes on to the origin). One whose bytes changed on disk
/// (same size) is removed; an intact one is served. And the background
/// scrub finds a file changed while bootcache runs, with no request at all.
#[test]
fn a_file_corrupted_on_disk_is_never_served_after_a_restart() {
    let h = shared("trust");
    // The scrub off at first: the pass over what the cache held alone.
    let (cache, cfg) = test_config(
        "rehash",
        SERVER,
        "serve_max_age = 3600\n[cache]\nscrub_rate = 0\n",
    )
    .unwrap();
    let intact = test_file(100_000, 0x21);
    let damaged = test_file(100_000, 0x22);
    let bc = h
        .start_with_config(BOOTCACHE.as_ref(), "rehash1", &cfg)
        .unwrap();
    let client = |port| SocketAddrV4::new(CLIENT, port);
    h.cold_fill(&cache, client(49160), SERVER, "intact.efi", &intact)
        .unwrap();
    h.cold_fill(&cache, client(49161), SERVER, "damaged.efi", &damaged)
        .unwrap();
    h.stop_bootcache(bc).unwrap();

    // One bit flips in a cached copy.
    let flip = |path: &Path| {
        let mut bytes = std::fs::read(path).unwrap();
        bytes[50_000] ^= 0x01;
        std::fs::write(path, bytes).unwrap();
    };
    let path_of = |name: &str| {
        let store = Filestore::open(&cache).unwrap();
        let path = store.path_of(store.lookup(VlanScope::UNTAGGED, SERVER, name).unwrap());
        path
    };
    // While bootcache is down.
    let path = path_of("damaged.efi");
    flip(&path);

    let bc = h
        .start_with_config(BOOTCACHE.as_ref(), "rehash2", &cfg)
        .unwrap();
    // Both hashed again: the damaged copy gone from disk, the intact one
    // reported (the worker logs it when it takes the result in).
    let matched = format!("\"intact.efi\" from {SERVER}: hashed again, matches");
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait("re-hashes not done", &|| {
        !path.exists() && bc.stderr_so_far().contains(&matched)
    });
    let mut opts = Options::default();
    opts.blksize = Some(1428);
    let warm = client_read(&h, client(50010), SERVER, "intact.efi", opts).unwrap();
    assert!(warm.file == intact && warm.server_side_frames.is_empty());
    let rrq = Packet::Rrq(Request {
        filename: b"damaged.efi",
        mode: Mode::OCTET,
        options: Options::default(),
    })
    .to_vec()
    .unwrap();
    let frame = udp_frame(0, client(50011), SocketAddrV4::new(SERVER, 69), &rrq);
    let reps = h.replay(&[(0, frame)], 1, Duration::from_secs(3)).unwrap();
    assert_crossed("RRQ for the damaged copy (to the origin)", &reps);
    let fin = h.stop_bootcache(bc).unwrap();
    assert!(fin.stdout.contains("corrupt_removed=1 "), "{}", fin.stdout);
    assert!(fin.stdout.contains("rehashed_files=2 "), "{}", fin.stdout);
    let store = Filestore::open(&cache).unwrap();
    assert!(store
        .lookup(VlanScope::UNTAGGED, SERVER, "damaged.efi")
        .is_none());
    drop(store);

    // The scrub on: a bit flipped in the verified copy while bootcache
    // runs is found with no request, and the file removed.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("scrub_rate = 0", "scrub_rate = \"64M\"")).unwrap();
    let path = path_of("intact.efi");
    let bc = h
        .start_with_config(BOOTCACHE.as_ref(), "rehash3", &cfg)
        .unwrap();
    wait("not hashed again", &|| {
        bc.stderr_so_far().contains(&matched)
    });
    flip(&path);
    wait("the scrub did not remove it", &|| !path.exists());
    let fin = h.stop_bootcache(bc).unwrap();
    assert!(fin.stdout.contains("corrupt_removed=1 "), "{}", fin.stdout);
    assert!(
        netns_stat(&fin.stdout, "scrubbed_files") >= 1,
        "{}",
        fin.stdout
    );
    assert!(Filestore::open(&cache).unwrap().is_empty());
}

/// A counter of bootcache's last statistics line.
fn netns_stat(stdout: &str, key: &str) -> u64 {
    bootcache_testbed::netns::stat(stdout, "persist", key).unwrap_or(0)
}
