//! Addressed mode with real programs (issue 12): bootcache owns an address
//! on the boot LAN, and dnsmasq (DHCP) tells clients to use it as their
//! TFTP server (next-server). The first reads and the first iPXE boot are
//! fetched by bootcache from the real origin (dnsmasq's TFTP server on the
//! server side) and cached; the second reads and boot are served from the
//! cache, the origin's log showing no transfer; a file changed on the
//! origin reaches the next client (bootcache-agent says the copy is stale).
//!
//! Needs root and `scripts/setup` (dnsmasq, curl, tftp-hpa, qemu-system-x86,
//! ipxe-qemu, the kernel and initrd built by `scripts/pxe-images`).

use std::time::Duration;

use bootcache_testbed::netns::{self, sha256_file, test_content, Topology, OWN_IP, PXE_FILES};

const BOOTCACHE: &str = env!("CARGO_BIN_EXE_bootcache");
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

fn counts(t: &Topology) -> Vec<usize> {
    t.origin_counts(&PXE_FILES)
}

#[test]
fn clients_told_to_use_bootcache_are_served_from_the_origin_then_from_the_cache() {
    let mut t = netns::pxe_test_topology(&netns::Options {
        bootcache_bin: Some(BOOTCACHE.into()),
        ..Default::default()
    });
    let v1 = test_content(2 << 20, 31);
    t.put_file("plain.img", &v1).unwrap();
    let want_v1 = netns::sha256_bytes(&v1, &t.dir, "v1").unwrap();
    t.set_next_server(OWN_IP);
    t.start_origin().unwrap();
    t.start_agent().unwrap();
    t.write_addressed_config().unwrap();
    t.start_bootcache(&["--stats-interval", "1"]).unwrap();

    // Plain clients ask bootcache's address: curl and tftp-hpa at once for
    // a file not in the cache. One fetch from the origin, streamed to both
    // while it runs (read-while-writing), identical bytes.
    let (cold_curl, cold_tftp) = (t.dir.join("cold.curl"), t.dir.join("cold.tftp"));
    std::thread::scope(|s| {
        let curl = s.spawn(|| t.curl_get_from(OWN_IP, "plain.img", Some(1428), &cold_curl));
        let tftp = s.spawn(|| t.tftp_hpa_get_from(OWN_IP, "plain.img", &cold_tftp));
        for (who, r) in [("curl", curl.join()), ("tftp-hpa", tftp.join())] {
            if let Err(e) = r.expect("client thread") {
                panic!("cold {who}: {e:#}\n{}", t.diagnostics());
            }
        }
    });
    assert_eq!(
        sha256_file(&cold_curl).unwrap(),
        want_v1,
        "cold curl corrupted"
    );
    assert_eq!(
        sha256_file(&cold_tftp).unwrap(),
        want_v1,
        "cold tftp-hpa corrupted"
    );
    assert_eq!(t.origin_count("plain.img"), 1, "{:?}", t.origin_transfers());
    t.wait_stat("addressed", "streamed", 1, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("no client was streamed to: {e:#}\n{}", t.diagnostics()));
    let out = t.dir.join("plain.read");
    t.wait_stat("files", "in_store", 1, Duration::from_secs(30))
        .unwrap();
    t.tftp_hpa_get_from(OWN_IP, "plain.img", &out)
        .unwrap_or_else(|e| panic!("warm tftp: {e:#}\n{}", t.diagnostics()));
    assert_eq!(sha256_file(&out).unwrap(), want_v1, "warm read corrupted");
    assert_eq!(
        t.origin_count("plain.img"),
        1,
        "the warm read reached the origin: {:?}",
        t.origin_transfers()
    );

    // iPXE, next-server = bootcache: the first boot is fetched, the second
    // is served from the cache.
    t.boot_to_marker("cold", "1", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(counts(&t), [1, 1, 1], "{:?}", t.origin_transfers());
    t.wait_stat("files", "in_store", 4, Duration::from_secs(30))
        .unwrap();
    t.boot_to_marker("warm", "1", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        counts(&t),
        [1, 1, 1],
        "the origin sent files on the warm boot: {:?}",
        t.origin_transfers()
    );
    assert_eq!(t.bootcache_stat("addressed", "fetches"), Some(4));

    // The file changes on the origin: the agent says the copy is stale,
    // and the next client gets the new bytes, fetched again.
    let v2 = test_content(2 << 20, 32);
    let want_v2 = netns::sha256_bytes(&v2, &t.dir, "v2").unwrap();
    let seen = t.agent_log_count("plain.img: modified");
    t.put_file("plain.img", &v2).unwrap();
    t.wait_agent_log("plain.img: modified", seen + 1, Duration::from_secs(10))
        .unwrap();
    t.curl_get_from(OWN_IP, "plain.img", Some(1428), &out)
        .unwrap_or_else(|e| panic!("read after the change: {e:#}\n{}", t.diagnostics()));
    assert_eq!(
        sha256_file(&out).unwrap(),
        want_v2,
        "the old copy was served"
    );
    assert_eq!(t.origin_count("plain.img"), 2, "{:?}", t.origin_transfers());
    let fin = t.stop_bootcache().unwrap();
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
}
