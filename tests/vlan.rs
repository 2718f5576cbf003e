//! VLANs are part of every key (issue 13), end to end with real programs:
//! two VLANs (100 and 200) of the one segment bootcache bridges, each with
//! its own boot server — dnsmasq as TFTP server in a namespace of its own,
//! both at the SAME address, each with a file of the same name and other
//! content — and its own client namespace, both clients at the same address
//! too. curl and tftp-hpa's `tftp` read through bootcache on
//! `net_af_packet` ports; each VLAN's client must get its own server's
//! bytes, cold (from the origin) and warm (from the cache: that origin's
//! log shows no second transfer), and the cache holds two files.
//!
//! Needs root and `scripts/setup` (dnsmasq, curl, tftp-hpa, hugepages).

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bootcache_testbed::netns::{self, sha256_file, test_content, Topology, Vlan, VLAN_SERVER_IP};
use slowpath::filestore::{read_index, Entry};

const BOOTCACHE: &str = env!("CARGO_BIN_EXE_bootcache");
/// One topology at a time: each bootcache busy-polls a core of the two.
static SERIAL: Mutex<()> = Mutex::new(());
const NAME: &str = "vlan.img";

fn topology() -> Topology {
    netns::test_topology(&netns::Options {
        bootcache_bin: Some(BOOTCACHE.into()),
        ..Default::default()
    })
}

/// The two VLANs, each server holding its own `NAME`; returns the SHA-256
/// each client must get.
fn two_vlans(t: &Topology, same_content: bool) -> ([Vlan; 2], [String; 2]) {
    let vlans = [100, 200].map(|vid| {
        t.add_vlan(vid)
            .unwrap_or_else(|e| panic!("VLAN {vid}: {e:#}"))
    });
    let shas = [0, 1].map(|i| {
        let seed = if same_content { 7 } else { 100 + i as u64 };
        let content = test_content(3 << 20, seed);
        vlans[i].put_file(NAME, &content).unwrap();
        netns::sha256_bytes(&content, &t.dir, "want").unwrap()
    });
    (vlans, shas)
}

/// Waits until the cache's index lists `n` entries of `NAME`.
fn wait_entries(cache: &Path, n: usize, timeout: Duration) -> Vec<Entry> {
    let t = Instant::now();
    loop {
        // A half-replaced index reads as "not yet".
        let entries: Vec<Entry> = read_index(cache)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.name == NAME && e.server == VLAN_SERVER_IP)
            .collect();
        if entries.len() >= n {
            return entries;
        }
        assert!(
            t.elapsed() < timeout,
            "{} entries of {NAME} in the cache after {timeout:?}, expected {n}: {entries:?}",
            entries.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read(t: &Topology, v: &Vlan, how: &str, tag: &str) -> String {
    let out = t.dir.join(format!("{tag}-vlan{}.img", v.vid));
    match how {
        "curl" => t.vlan_curl_get(v, NAME, Some(1428), &out),
        _ => t.vlan_tftp_hpa_get(v, NAME, &out),
    }
    .unwrap_or_else(|e| panic!("{how} on VLAN {}: {e:#}\n{}", v.vid, t.diagnostics()));
    sha256_file(&out).unwrap()
}

/// Two servers at one address on VLANs 100 and 200: each client gets its
/// own server's file, cold and warm; the warm reads come from the cache
/// (neither origin sends a second time), which holds two files.
#[test]
fn two_vlans_with_one_server_address_get_their_own_files_cold_and_warm() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = topology();
    let (vlans, want) = two_vlans(&t, false);
    assert_ne!(want[0], want[1]);
    t.write_vlan_config(false).unwrap();
    t.start_bootcache(&["--stats-interval", "1"])
        .expect("bootcache");

    // Cold: curl on VLAN 100, tftp-hpa on VLAN 200.
    assert_eq!(read(&t, &vlans[0], "curl", "cold"), want[0]);
    assert_eq!(read(&t, &vlans[1], "tftp", "cold"), want[1]);
    for v in &vlans {
        assert_eq!(
            v.origin_count(NAME),
            1,
            "VLAN {}: {:?}",
            v.vid,
            v.origin_transfers()
        );
    }
    let entries = wait_entries(&t.cache_dir, 2, Duration::from_secs(30));
    let mut vids: Vec<(u16, u16)> = entries
        .iter()
        .map(|e| (e.vlan.outer, e.vlan.inner))
        .collect();
    vids.sort();
    assert_eq!(vids, [(100, 0), (200, 0)], "{entries:?}");
    assert!(entries.iter().all(|e| !e.shared));
    assert_ne!(entries[0].sha256, entries[1].sha256);

    // Warm, the clients swapped: each VLAN still gets its own bytes, from
    // the cache.
    assert_eq!(read(&t, &vlans[0], "tftp", "warm"), want[0]);
    assert_eq!(read(&t, &vlans[1], "curl", "warm"), want[1]);
    t.wait_stat("serve", "completed", 2, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", t.diagnostics()));
    for v in &vlans {
        assert_eq!(
            v.origin_count(NAME),
            1,
            "VLAN {}'s origin sent the file again: {:?}",
            v.vid,
            v.origin_transfers()
        );
    }

    let fin = t.stop_bootcache().unwrap();
    assert_eq!(fin.code, Some(0), "bootcache exit: {}", fin.stderr);
    assert_eq!(netns::stat(&fin.stdout, "serve", "hits"), Some(2));
    assert_eq!(netns::stat(&fin.stdout, "serve", "misses"), Some(2));
    assert_eq!(netns::stat(&fin.stdout, "files", "in_store"), Some(2));
}

/// `[cache] share_across_vlans = true`: a file filled on VLAN 100 is served
/// on VLAN 200 from the cache (VLAN 200's origin never sends it); one file.
#[test]
fn shared_across_vlans_one_fill_serves_both() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = topology();
    let (vlans, want) = two_vlans(&t, true);
    t.write_vlan_config(true).unwrap();
    t.start_bootcache(&["--stats-interval", "1"])
        .expect("bootcache");

    assert_eq!(read(&t, &vlans[0], "curl", "cold"), want[0]);
    let entries = wait_entries(&t.cache_dir, 1, Duration::from_secs(30));
    assert!(entries[0].shared, "{entries:?}");
    assert_eq!(read(&t, &vlans[1], "curl", "warm"), want[1]);
    t.wait_stat("serve", "completed", 1, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", t.diagnostics()));
    assert_eq!(vlans[0].origin_count(NAME), 1);
    assert_eq!(
        vlans[1].origin_count(NAME),
        0,
        "{:?}",
        vlans[1].origin_transfers()
    );

    let fin = t.stop_bootcache().unwrap();
    assert_eq!(fin.code, Some(0), "bootcache exit: {}", fin.stderr);
    assert_eq!(netns::stat(&fin.stdout, "serve", "hits"), Some(1));
    assert_eq!(netns::stat(&fin.stdout, "files", "in_store"), Some(1));
}
