//! Issue 12, end to end with real programs: a read served from the cache
//! recovers from lost ACKs in milliseconds (the retransmission timer follows
//! the measured round trip), and bootcache reports the ACK-to-next-DATA
//! turnaround of what it served. dnsmasq is the origin, curl the client,
//! nftables in the client namespace drops a share of the client's ACKs.
//!
//! Needs root and `scripts/setup` (dnsmasq, curl, nftables, hugepages).

use std::time::Duration;

use bootcache_testbed::netns::{self, sha256_file, test_content};

const BOOTCACHE: &str = env!("CARGO_BIN_EXE_bootcache");

#[test]
fn lost_acks_cost_milliseconds_and_the_turnaround_is_reported() {
    let mut t = netns::test_topology(&netns::Options {
        bootcache_bin: Some(BOOTCACHE.into()),
        ..Default::default()
    });
    // 734 blocks of 1428 bytes.
    let content = test_content(1 << 20, 12);
    t.put_file("boot.img", &content).unwrap();
    let want = netns::sha256_bytes(&content, &t.dir, "want").unwrap();
    t.start_origin().expect("dnsmasq");
    t.start_agent().expect("bootcache-agent");
    t.write_bootcache_config("").unwrap();
    t.start_bootcache(&["--stats-interval", "1"])
        .expect("bootcache");

    let out = t.dir.join("read.img");
    t.curl_get("boot.img", Some(1428), &out).expect("cold read");
    assert_eq!(sha256_file(&out).unwrap(), want, "cold read corrupted");
    t.wait_stat("files", "in_store", 1, Duration::from_secs(30))
        .expect("the cold read was not cached");

    t.drop_client_acks(10).expect("nftables");
    let warm = t.curl_get("boot.img", Some(1428), &out).expect("warm read");
    assert_eq!(sha256_file(&out).unwrap(), want, "warm read corrupted");
    assert_eq!(t.origin_count("boot.img"), 1, "{:?}", t.origin_transfers());
    let dropped = t.client_acks_dropped();
    // 10% of ~734 ACKs: fewer than 20 would be a broken rule, not chance.
    assert!(dropped >= 20, "only {dropped} ACKs dropped");
    // Each lost ACK used to cost the 1 s default timeout (dnsmasq takes
    // about 2 s): now a timer of a few milliseconds. 50 ms each is loose
    // enough for a loaded machine and far below a second.
    assert!(
        warm < Duration::from_millis(50) * dropped as u32,
        "warm read took {warm:?} with {dropped} ACKs dropped"
    );
    // (`serve retransmits` is added when a session ends: much later if the
    // last ACK was the one lost, when the session gives up after curl's
    // long timeout; not waited for here.)
    t.wait_stat("turnaround", "samples", 500, Duration::from_secs(5))
        .expect("turnarounds not reported");
    let p50 = t.bootcache_stat("turnaround", "p50_ns").unwrap();
    let p99 = t.bootcache_stat("turnaround", "p99_ns").unwrap();
    assert!(0 < p50 && p50 <= p99, "p50 {p50} ns, p99 {p99} ns");
    t.stop_bootcache().unwrap();
}
