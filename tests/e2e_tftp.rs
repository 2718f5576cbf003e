//! End to end with real programs (issues 5 and 7): dnsmasq as the origin
//! TFTP server with bootcache-agent beside it in a server namespace, real
//! clients (curl, tftp-hpa's `tftp`) in a client namespace, bootcache
//! between them on `net_af_packet` ports over veth pairs. The origin's log
//! counts the transfers it really sent; sha256 checks what the clients got.
//!
//! Needs root and `scripts/setup` (dnsmasq, curl, tftp-hpa, hugepages).

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use bootcache_testbed::netns::{self, sha256_file, test_content, Topology};

const BOOTCACHE: &str = env!("CARGO_BIN_EXE_bootcache");
/// One topology at a time: each bootcache busy-polls a core of the two.
static SERIAL: Mutex<()> = Mutex::new(());

fn topology() -> Topology {
    netns::test_topology(&netns::Options {
        bootcache_bin: Some(BOOTCACHE.into()),
        ..Default::default()
    })
}

fn start_all(t: &mut Topology, agent_extra: &str) {
    t.start_origin().expect("dnsmasq");
    t.start_agent().expect("bootcache-agent");
    t.write_bootcache_config(agent_extra).unwrap();
    t.start_bootcache(&["--stats-interval", "1"])
        .expect("bootcache");
}

fn sha_of(bytes: &[u8], dir: &Path, name: &str) -> String {
    netns::sha256_bytes(bytes, dir, name).unwrap()
}

/// Issue 5: a 64 MiB file cold through bootcache from dnsmasq, then warm
/// with the same client and options and with tftp-hpa's lock-step RFC 1350
/// client: identical bytes, and the origin sent it exactly once.
#[test]
fn a_64_mib_file_cold_then_warm_from_the_cache_with_curl_and_tftp_hpa() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = topology();
    let content = test_content(64 << 20, 5);
    t.put_file("big.img", &content).unwrap();
    let want = sha_of(&content, &t.dir, "want");
    drop(content);
    start_all(&mut t, "");

    let out = t.dir.join("cold.img");
    let cold = t.curl_get("big.img", Some(1428), &out).unwrap();
    assert_eq!(sha256_file(&out).unwrap(), want, "cold transfer corrupted");
    assert_eq!(t.origin_count("big.img"), 1, "{:?}", t.origin_transfers());
    t.wait_stat("files", "in_store", 1, Duration::from_secs(20))
        .expect("the cold transfer was not cached");

    let out = t.dir.join("warm.img");
    let warm = t.curl_get("big.img", Some(1428), &out).unwrap();
    assert_eq!(sha256_file(&out).unwrap(), want, "warm transfer corrupted");
    t.wait_stat("serve", "completed", 1, Duration::from_secs(5))
        .expect("bootcache did not serve the warm curl read");
    assert_eq!(
        t.origin_count("big.img"),
        1,
        "the origin sent the file again: {:?}",
        t.origin_transfers()
    );

    let out = t.dir.join("warm-hpa.img");
    let hpa = t.tftp_hpa_get("big.img", &out).unwrap();
    assert_eq!(sha256_file(&out).unwrap(), want, "tftp-hpa warm corrupted");
    t.wait_stat("serve", "completed", 2, Duration::from_secs(5))
        .expect("bootcache did not serve the warm tftp-hpa read");
    assert_eq!(t.origin_count("big.img"), 1, "{:?}", t.origin_transfers());

    let fin = t.stop_bootcache().unwrap();
    assert_eq!(fin.code, Some(0), "bootcache exit: {}", fin.stderr);
    assert_eq!(netns::stat(&fin.stdout, "serve", "hits"), Some(2));
    // Only the cold read request went on to the origin.
    assert_eq!(netns::stat(&fin.stdout, "serve", "misses"), Some(1));
    eprintln!(
        "64 MiB: cold (origin, curl 1428) {:.2} s, warm (cache, curl 1428) {:.2} s, warm (cache, tftp-hpa 512) {:.2} s",
        cold.as_secs_f64(),
        warm.as_secs_f64(),
        hpa.as_secs_f64()
    );
}

/// Issue 7 (b)–(e) with real clients on a 3 MiB file: blksize 512 and 1428
/// with tsize, cold and warm; bootcache restarted (still served from the
/// cache); the file changed on the server (the client gets the new one,
/// from the origin, and then from the refreshed cache); the agent stopped
/// (the origin serves, nothing stale is served).
#[test]
fn restart_change_on_the_server_and_agent_down() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = topology();
    let v1 = test_content(3 << 20, 11);
    let v1_sha = sha_of(&v1, &t.dir, "v1");
    t.put_file("boot/kernel", &v1).unwrap();
    // Answers are not reused: every read asks the agent again.
    start_all(&mut t, "answer_ttl = 0");
    let out = t.dir.join("out");
    let get = |t: &Topology, how: &str| {
        match how {
            "tftp" => t.tftp_hpa_get("boot/kernel", &out),
            "512" => t.curl_get("boot/kernel", Some(512), &out),
            _ => t.curl_get("boot/kernel", Some(1428), &out),
        }
        .unwrap_or_else(|e| panic!("{how} read: {e:#}"));
        sha256_file(&out).unwrap()
    };

    // (b) Cold with tftp-hpa (512, no options), warm with curl at 512 and
    // 1428 (both with tsize).
    assert_eq!(get(&t, "tftp"), v1_sha);
    assert_eq!(t.origin_count("boot/kernel"), 1);
    t.wait_stat("files", "in_store", 1, Duration::from_secs(20))
        .unwrap();
    assert_eq!(get(&t, "512"), v1_sha);
    assert_eq!(get(&t, "1428"), v1_sha);
    assert_eq!(
        t.origin_count("boot/kernel"),
        1,
        "{:?}",
        t.origin_transfers()
    );
    t.wait_stat("serve", "completed", 2, Duration::from_secs(5))
        .unwrap();

    // (d) bootcache restarted: the cache survives, reads are still served.
    let fin = t.stop_bootcache().unwrap();
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
    t.start_bootcache(&["--stats-interval", "1"]).unwrap();
    // Served once hashed again (issue 13: on the writer thread, right
    // after the start; a request before that goes to the origin).
    t.wait_stat("files", "verified", 1, Duration::from_secs(20))
        .unwrap();
    assert_eq!(get(&t, "1428"), v1_sha);
    assert_eq!(
        t.origin_count("boot/kernel"),
        1,
        "{:?}",
        t.origin_transfers()
    );
    t.wait_stat("serve", "completed", 1, Duration::from_secs(5))
        .unwrap();

    // (c) The file changes on the server: the agent says the copy is stale,
    // the read goes to the origin, the client gets the new bytes and the
    // cache is refreshed; the next read is served the new version.
    let v2 = test_content(3 << 20, 12);
    let v2_sha = sha_of(&v2, &t.dir, "v2");
    let rehashed = t.agent_log_count("boot/kernel: modified");
    t.put_file("boot/kernel", &v2).unwrap();
    // The agent rehashes once the file stayed quiet for its debounce.
    t.wait_agent_log(
        "boot/kernel: modified",
        rehashed + 1,
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(get(&t, "1428"), v2_sha, "the client got the stale file");
    assert_eq!(
        t.origin_count("boot/kernel"),
        2,
        "{:?}",
        t.origin_transfers()
    );
    t.wait_stat("files", "replaced", 1, Duration::from_secs(20))
        .unwrap();
    assert_eq!(get(&t, "512"), v2_sha);
    assert_eq!(
        t.origin_count("boot/kernel"),
        2,
        "{:?}",
        t.origin_transfers()
    );

    // (e) The agent stops: nothing can be validated, reads go to the origin
    // and still succeed.
    t.stop_agent();
    assert_eq!(get(&t, "1428"), v2_sha);
    assert_eq!(get(&t, "tftp"), v2_sha);
    assert_eq!(
        t.origin_count("boot/kernel"),
        4,
        "{:?}",
        t.origin_transfers()
    );
    let fin = t.stop_bootcache().unwrap();
    assert!(
        netns::stat(&fin.stdout, "serve", "agent_unreachable").unwrap_or(0) >= 2,
        "{}",
        fin.stdout.lines().last().unwrap_or("")
    );
}

/// Bad input and cleanup (issue 7): a namespace name already taken is one
/// clear error that leaves the other owner's namespace alone; a topology
/// leaves no namespace, link or process behind when dropped.
#[test]
fn a_taken_name_is_a_clear_error_and_nothing_is_left_behind() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = netns::check_prerequisites(false) {
        panic!("end-to-end prerequisites: {e:#}");
    }
    let prefix = format!("bt{}", std::process::id() % 100_000);
    let opts = netns::Options {
        prefix: Some(prefix.clone()),
        bootcache_bin: Some(BOOTCACHE.into()),
        ..Default::default()
    };
    let ns = format!("{prefix}-srv");
    let ip = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ip(&["netns", "add", &ns]);
    let err = Topology::create(&opts)
        .err()
        .expect("a taken name must fail");
    let msg = format!("{err:#}");
    ip(&["netns", "del", &ns]);
    assert!(
        msg.contains("already exists") && msg.contains(&format!("ip netns del {ns}")),
        "{msg}"
    );

    let mut t = Topology::create(&opts).unwrap();
    t.start_origin().unwrap();
    t.start_agent().unwrap();
    t.start_bootcache(&[]).unwrap();
    let dir = t.dir.clone();
    drop(t);
    let left = ip(&["netns", "list"]);
    assert!(!left.contains(&prefix), "namespaces left: {left}");
    for l in ["c", "s", "m"] {
        let link = format!("{prefix}-{l}");
        assert!(
            !Path::new("/sys/class/net").join(&link).exists(),
            "{link} left"
        );
    }
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(
        !ps.lines().any(|l| l.contains(&*dir.to_string_lossy())),
        "processes left: {}",
        ps.lines()
            .filter(|l| l.contains(&*dir.to_string_lossy()))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(!dir.exists(), "{} left", dir.display());
}
