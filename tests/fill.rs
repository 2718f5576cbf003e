//! Cache fill end to end: the harness plays a PXE client (side 0) and a
//! DHCP/TFTP server (side 1) on either side of a running bootcache and
//! exchanges real frames through it; then the cache directory must hold
//! byte-identical, verified files and an image map naming the client's files.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bootcache_testbed::harness::{assert_crossed, shared, Harness};
use bootcache_testbed::process::{Bootcache, Finished};
use bootcache_testbed::scenario::{
    captured_dhcp_exchange, test_file, tftp_read, Endpoints, TransferShape,
};
use sha2::{Digest, Sha256};
use slowpath::filestore::Filestore;
use slowpath::imagemap::ImageMap;
use wire::frame::VlanScope;

const BOOTCACHE: &str = env!("CARGO_BIN_EXE_bootcache");
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The address dnsmasq gave the client in the captured exchange.
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 115);

/// A fresh cache directory and a config naming it.
fn cache_dir(tag: &str, extra: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("bootcache-fill-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bootcache.toml");
    std::fs::write(
        &cfg,
        format!(
            "servers = [\"{SERVER}\"]\ncache_dir = \"{}\"\n{extra}",
            dir.join("cache").display()
        ),
    )
    .unwrap();
    (dir.join("cache"), cfg)
}

fn start(h: &Harness, tag: &str, cfg: &Path, extra: &[&str]) -> Bootcache {
    let prefix = format!("bcf-{tag}-{}", std::process::id());
    let mut args = vec!["--config", cfg.to_str().unwrap()];
    args.extend_from_slice(extra);
    h.start_bootcache(BOOTCACHE.as_ref(), &prefix, &args)
        .unwrap()
}

fn stop(h: &Harness, bc: Bootcache) -> Finished {
    h.stop_bootcache(bc).unwrap()
}

fn endpoints(client_port: u16) -> Endpoints {
    Endpoints {
        client: SocketAddrV4::new(CLIENT, client_port),
        server: SERVER,
        server_tid: 40000 + client_port % 1000,
    }
}

fn assert_cached(cache: &Path, name: &str, content: &[u8]) {
    let store = Filestore::open(cache).unwrap();
    let e = store
        .lookup(VlanScope::UNTAGGED, SERVER, name)
        .unwrap_or_else(|| panic!("{name} not cached"));
    assert_eq!(e.size, content.len() as u64, "{name} size");
    let sha: [u8; 32] = Sha256::digest(content).into();
    assert_eq!(e.sha256.0, sha, "{name} sha256");
    let on_disk = std::fs::read(store.path_of(e)).unwrap();
    assert!(
        on_disk == content,
        "{name}: cached bytes differ from the original"
    );
}

#[test]
fn pxe_boot_fills_the_cache_and_the_image_map_and_survives_a_restart() {
    let h = shared("fill");
    // The harness replays these 67,000 frames as fast as the bridge
    // forwards them (no drain timer paces it any more), faster than a
    // dev-build slow path sharing CPU 0 with the harness reassembles them:
    // the ring (and the pool behind it) holds the whole replay, so this test
    // checks reassembly, not the slow path's speed (fill benchmark).
    let (cache, cfg) = cache_dir("boot", "[limits]\nredirect_ring = 131072\n");
    let bc = start(&h, "boot", &cfg, &["--mbufs", "163839"]);

    let reps = h
        .replay(&captured_dhcp_exchange(), 64, Duration::from_secs(3))
        .unwrap();
    assert_crossed("DHCP/PXE", &reps);

    // NBP lock-step with 512-byte blocks (no options), the kernel with
    // blksize 1428 and windowsize 16, the initrd with blksize 1428 lock-step,
    // and a file over 65535 blocks (rollover) with windowsize 16.
    let files = [
        ("pxelinux.0", test_file(40_000, 1), TransferShape::RFC1350),
        (
            "boot/vmlinuz",
            test_file(2_000_000, 2),
            TransferShape {
                blksize: Some(1428),
                windowsize: 16,
                ..Default::default()
            },
        ),
        (
            "boot/initrd.img",
            test_file(700_000, 3),
            TransferShape {
                blksize: Some(1428),
                windowsize: 1,
                ..Default::default()
            },
        ),
        (
            "images/big.img",
            test_file(512 * 65_536 + 300, 4),
            TransferShape {
                blksize: Some(512),
                windowsize: 16,
                ..Default::default()
            },
        ),
    ];
    for (i, (name, content, shape)) in files.iter().enumerate() {
        let frames = tftp_read(endpoints(49152 + i as u16), name, content, *shape);
        let reps = h.replay(&frames, 256, Duration::from_secs(3)).unwrap();
        assert_crossed(name, &reps);
    }
    let fin = stop(&h, bc);
    eprintln!("{}", fin.stdout);
    for (name, content, _) in &files {
        assert_cached(&cache, name, content);
    }
    assert!(
        fin.stdout.contains("completed=4"),
        "final counters:\n{}",
        fin.stdout
    );

    let map = ImageMap::load(&cache).unwrap();
    let client = map.client_by_ip(CLIENT).expect("client in the image map");
    assert_eq!(client.mac, Some([0x02, 0x77, 0, 0, 0, 0x02]));
    for (name, _, _) in &files {
        assert!(
            client.file(SERVER, name).is_some(),
            "image map lacks {name}: {client:?}"
        );
    }

    // A restart keeps everything that was complete.
    let bc = start(&h, "boot2", &cfg, &[]);
    stop(&h, bc);
    for (name, content, _) in &files {
        assert_cached(&cache, name, content);
    }
    assert!(ImageMap::load(&cache)
        .unwrap()
        .client_by_ip(CLIENT)
        .is_some());
}

#[test]
fn an_overflowing_redirect_ring_loses_no_forwarded_frame_and_publishes_no_partial_file() {
    let h = shared("fill");
    let (cache, cfg) = cache_dir("overflow", "[limits]\nredirect_ring = 64\n");
    // The slow path sleeps per redirected frame, so the 64-slot ring overflows.
    let bc = start(&h, "overflow", &cfg, &["--slowpath-throttle-us", "2000"]);
    let content = test_file(1428 * 400, 9);
    let shape = TransferShape {
        blksize: Some(1428),
        windowsize: 16,
        ..Default::default()
    };
    let frames = tftp_read(endpoints(50000), "throttled.img", &content, shape);
    let reps = h.replay(&frames, 512, Duration::from_secs(3)).unwrap();
    assert_crossed("throttled transfer", &reps);
    let fin = stop(&h, bc);
    let drops: u64 = bootcache_testbed::process::stat(&fin.stdout, "redirect", "copy_drops")
        .unwrap_or_else(|| panic!("no copy_drops counter in:\n{}", fin.stdout));
    assert!(drops > 0, "the ring never overflowed:\n{}", fin.stdout);
    assert!(
        Filestore::open(&cache)
            .unwrap()
            .lookup(VlanScope::UNTAGGED, SERVER, "throttled.img")
            .is_none(),
        "a partial file was published"
    );
    for side in 0..2 {
        assert_eq!(fin.ports[side].tx_dropped, 0);
    }
}

#[test]
fn blksize_8192_over_a_1500_mtu_is_fragmented_and_still_cached() {
    let h = shared("fill");
    let (cache, cfg) = cache_dir("frag", "");
    let bc = start(&h, "frag", &cfg, &[]);
    // Every 8192-byte DATA block crosses as six IPv4 fragments: the first
    // (ports visible) and five later ones the bridge copies by address.
    let files = [("images/frag-ls.img", 1), ("images/frag-w16.img", 16)];
    let contents: Vec<Vec<u8>> = (0..files.len())
        .map(|i| test_file(1_000_000, 20 + i as u8))
        .collect();
    for (i, ((name, window), content)) in files.iter().zip(&contents).enumerate() {
        let shape = TransferShape {
            blksize: Some(8192),
            windowsize: *window,
            fragment_mtu: Some(1500),
            ..Default::default()
        };
        let frames = tftp_read(endpoints(51000 + i as u16), name, content, shape);
        assert!(
            frames.iter().all(|(_, f)| f.len() <= 1514),
            "{name}: a frame over the MTU"
        );
        let reps = h.replay(&frames, 256, Duration::from_secs(3)).unwrap();
        assert_crossed(name, &reps);
    }
    let fin = stop(&h, bc);
    eprintln!("{}", fin.stdout);
    for ((name, _), content) in files.iter().zip(&contents) {
        assert_cached(&cache, name, content);
    }
    assert!(
        fin.stdout.contains("completed=2"),
        "final counters:\n{}",
        fin.stdout
    );
    // 2 files x 123 blocks of 8192 bytes, each block a datagram in fragments.
    let reassembled: u64 =
        bootcache_testbed::process::stat(&fin.stdout, "defrag", "reassembled").unwrap_or(0);
    assert!(
        reassembled >= 2 * 122,
        "defragmented datagrams: {reassembled}\n{}",
        fin.stdout
    );
}
