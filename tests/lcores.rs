//! Several forwarding lcores (issue 11): bootcache on two `net_af_packet`
//! ports with two queue pairs each (`qpairs=2`: the kernel's packet fanout
//! spreads flows over the queues) and two forwarding lcores. Real clients
//! (curl, tftp-hpa) read through it from dnsmasq: byte-identical, the cold
//! reads are cached although a read request and its transfer may arrive on
//! different lcores (the slow path merges the redirect rings by arrival
//! time), and the warm reads are served from the cache.
//!
//! Needs root and `scripts/setup` (dnsmasq, curl, tftp-hpa, hugepages).

use std::path::Path;
use std::time::Duration;

use bootcache_testbed::netns::{self, sha256_file, test_content, Topology};

const BOOTCACHE: &str = env!("CARGO_BIN_EXE_bootcache");

fn sha_of(bytes: &[u8], dir: &Path, name: &str) -> String {
    netns::sha256_bytes(bytes, dir, name).unwrap()
}

#[test]
fn two_forwarding_lcores_on_two_queue_pairs_fill_and_serve_byte_identical() {
    let mut t = netns::test_topology(&netns::Options {
        bootcache_bin: Some(BOOTCACHE.into()),
        // Main lcore (slow path) on either CPU, forwarding lcores on each.
        lcores: Some("0@(0,1),1@1,2@0".into()),
        qpairs: Some(2),
        ..Default::default()
    });
    let names = ["a.img", "b.img", "c.img", "d.img"];
    let mut want = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let content = test_content((1 << 20) + i * 777, 40 + i as u64);
        want.push(sha_of(&content, &t.dir, n));
        t.put_file(n, &content).unwrap();
    }
    t.start_origin().expect("dnsmasq");
    t.start_agent().expect("bootcache-agent");
    t.write_bootcache_config("").unwrap();
    t.start_bootcache(&["--stats-interval", "1"])
        .expect("bootcache");
    let out = t.dir.join("out");
    let read = |t: &Topology, n: &str, i: usize, hpa: bool| {
        if hpa {
            t.tftp_hpa_get(n, &out)
        } else {
            t.curl_get(n, Some(1428), &out)
        }
        .unwrap_or_else(|e| panic!("{n}: {e:#}\n{}", t.diagnostics()));
        assert_eq!(sha256_file(&out).unwrap(), want[i], "{n}: wrong bytes");
    };
    // Cold: every file from the origin, each cached.
    for (i, n) in names.iter().enumerate() {
        read(&t, n, i, i % 2 == 1);
    }
    t.wait_stat(
        "files",
        "in_store",
        names.len() as u64,
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", t.diagnostics()));
    // Warm: every file from the cache.
    for (i, n) in names.iter().enumerate() {
        read(&t, n, i, i % 2 == 0);
        assert_eq!(t.origin_count(n), 1, "{n}: {:?}", t.origin_transfers());
    }
    let fin = t.stop_bootcache().unwrap();
    assert_eq!(fin.code, Some(0), "bootcache exit: {}", fin.stderr);
    assert!(
        fin.stderr.contains("bridging on lcore 1,2"),
        "{}",
        fin.stderr
    );
    assert!(fin.stderr.contains("2 queue pair(s)"), "{}", fin.stderr);
    assert_eq!(
        netns::stat(&fin.stdout, "serve", "hits"),
        Some(names.len() as u64)
    );
    // The kernel spread the flows over both queues: both lcores forwarded.
    let per_lcore = bootcache_metrics::Reader::last(&fin.stdout)
        .unwrap_or_else(|| panic!("no statistics in {}", fin.stdout))
        .list("lcores", "rx");
    assert_eq!(per_lcore.len(), 2, "{}", fin.stdout);
    assert!(
        per_lcore.iter().all(|&n| n > 0),
        "an lcore forwarded nothing: {per_lcore:?}"
    );
}
