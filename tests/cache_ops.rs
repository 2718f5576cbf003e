//! The cache while it runs (issue 15 item 3), end to end with real
//! programs: dnsmasq as the origin, bootcache-agent, bootcache on
//! af_packet ports, curl as the client. A small quota (1,000,000 bytes,
//! watermarks 95 % / 90 %) is filled past its high watermark by real reads:
//! the least recently used file is evicted and counted, the one served
//! since stays. Then `bootcache cache ls --json | rm | verify | prefetch |
//! purge` through the running bridge's control socket; with the bridge
//! stopped `ls` and `rm` on the directory; and the one-line error when no
//! bridge answers but the directory is locked.
//!
//! Needs root and `scripts/setup` (dnsmasq, curl, hugepages).

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bootcache_testbed::netns::{self, sha256_file, test_content};

const BOOTCACHE: &str = env!("CARGO_BIN_EXE_bootcache");
const FILE_LEN: usize = 300_000;

/// `bootcache cache ARGS --cache-dir DIR`.
fn cache_cmd(dir: &Path, args: &[&str]) -> Output {
    Command::new(BOOTCACHE)
        .arg("cache")
        .args(args)
        .arg("--cache-dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running bootcache cache")
}

/// The JSON a successful `bootcache cache ... --json` printed.
fn json_of(o: &Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("one JSON object")
}

/// The names `cache ls --json` lists, sorted.
fn listed(dir: &Path) -> Vec<String> {
    let v = json_of(&cache_cmd(dir, &["ls", "--json"]));
    let mut names: Vec<String> = v["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// Waits until `cache ls` lists exactly `want` (sorted), for 10 s at most.
fn wait_listed(dir: &Path, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = listed(dir);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "listed {got:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the wall clock is past second `t` (the index keeps whole
/// seconds: two uses in one second are a tie).
fn after_second(t: u64) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        <= t
    {
        assert!(Instant::now() < deadline, "the clock does not advance");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A second dnsmasq, TFTP only, on the server's management address (what
/// `prefetch --via` reads from: the root namespace reaches the server
/// there, not on the boot LAN). Stopped by its PID on drop.
struct MgmtTftp(Child);

impl Drop for MgmtTftp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn eviction_and_operator_commands_on_a_running_bridge_and_on_the_directory() {
    let mut t = netns::test_topology(&netns::Options {
        bootcache_bin: Some(BOOTCACHE.into()),
        ..Default::default()
    });
    let names = ["a.img", "b.img", "c.img", "d.img", "e.img"];
    for (i, n) in names.iter().enumerate() {
        t.put_file(n, &test_content(FILE_LEN, 40 + i as u64))
            .unwrap();
    }
    t.start_origin().expect("dnsmasq");
    t.start_agent().expect("bootcache-agent");
    let cfg = t.write_bootcache_config("").unwrap();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    // Appended to [limits], then a [cache] table. No background scrub: it
    // would find the byte flipped below before `verify` is asked.
    text += "cache_quota = 1000000\nmax_file_size = 1000000\n\n[cache]\nhigh_watermark = 95\nlow_watermark = 90\nscrub_rate = 0\n";
    std::fs::write(&cfg, text).unwrap();
    t.start_bootcache(&["--stats-interval", "1"])
        .expect("bootcache");
    let dir = t.cache_dir.clone();
    let read = |name: &str| {
        let out = t.dir.join(format!("got-{name}"));
        t.curl_get(name, Some(1428), &out).unwrap();
        out
    };

    // a, b, c cold: 900,000 bytes, under the high watermark (950,000).
    for (i, n) in ["a.img", "b.img", "c.img"].iter().enumerate() {
        after_second(now_secs());
        read(n);
        t.wait_stat("files", "in_store", i as u64 + 1, Duration::from_secs(20))
            .expect("a cold read was not cached");
    }
    // a served from the cache: b is now the least recently used.
    after_second(now_secs());
    let out = read("a.img");
    assert_eq!(
        sha256_file(&out).unwrap(),
        netns::sha256_bytes(&test_content(FILE_LEN, 40), &t.dir, "want-a").unwrap()
    );
    assert_eq!(
        t.origin_count("a.img"),
        1,
        "the warm read reached the origin"
    );
    t.wait_stat("serve", "completed", 1, Duration::from_secs(10))
        .expect("the warm read was not served from the cache");
    // d cold: 1,200,000 > 950,000: b goes (900,000 ≤ the low watermark).
    after_second(now_secs());
    read("d.img");
    t.wait_stat("files", "evicted", 1, Duration::from_secs(20))
        .expect("nothing evicted");
    t.wait_stat("files", "cached", 4, Duration::from_secs(20))
        .expect("d was not cached");
    // The count goes up when the copy is handed to the writer; the index
    // lists it once the writer has renamed it into place (seen in CI).
    wait_listed(&dir, &["a.img", "c.img", "d.img"]);
    assert_eq!(t.bootcache_stat("files", "evicted"), Some(1));
    assert_eq!(
        t.bootcache_stat("files", "evicted_bytes"),
        Some(FILE_LEN as u64)
    );
    assert_eq!(
        std::fs::read_dir(dir.join("files")).unwrap().count(),
        3,
        "the evicted file's bytes are gone"
    );
    let log =
        std::fs::read_to_string(t.bootcache_log_dir().join("bootcache.err")).unwrap_or_default();
    assert!(
        log.contains("evicted 1 least recently used file(s)"),
        "{log}"
    );

    // ls through the bridge: the quota and what is used.
    let ls = json_of(&cache_cmd(&dir, &["ls", "--json"]));
    assert_eq!(ls["quota_bytes"], 1_000_000);
    assert_eq!(ls["used_bytes"], 3 * FILE_LEN as u64);

    // rm through the bridge.
    let rm = json_of(&cache_cmd(&dir, &["rm", "c.img", "--json"]));
    assert_eq!(rm["removed"].as_array().unwrap().len(), 1);
    assert_eq!(rm["removed_bytes"], FILE_LEN as u64);
    assert_eq!(listed(&dir), ["a.img", "d.img"]);
    let again = cache_cmd(&dir, &["rm", "c.img"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not cached"));

    // verify through the bridge: a byte flipped in d's file is found.
    let d = ls["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "d.img")
        .unwrap()["stored_as"]
        .as_str()
        .unwrap()
        .to_string();
    let path = dir.join("files").join(d);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let v = cache_cmd(&dir, &["verify", "--json"]);
    assert_eq!(
        v.status.code(),
        Some(1),
        "a removal exits 1: {}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(
        (v["files"].as_u64(), v["ok"].as_u64(), v["removed"].as_u64()),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(v["removed_files"][0]["name"], "d.img");
    assert_eq!(listed(&dir), ["a.img"]);

    // prefetch through the bridge, read from the server's management
    // address, cached as from the boot server: then a client's read of it
    // is a hit and the boot LAN's origin never sends it.
    let tftp = MgmtTftp(
        t.server_cmd(
            ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
                .into_iter()
                .find(|p| Path::new(p).exists())
                .expect("dnsmasq not found: run scripts/setup"),
        )
        .args(["--keep-in-foreground", "--conf-file=/dev/null", "--port=0"])
        .args(["--no-resolv", "--no-hosts", "--user=root", "--group=root"])
        .arg("--interface=mgmt0")
        .arg("--bind-interfaces")
        .arg("--enable-tftp")
        .arg(format!("--tftp-root={}", t.tftp_root.display()))
        .arg("--pid-file=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq on mgmt0"),
    );
    let server = netns::SERVER_IP.to_string();
    let via = t.mgmt_server.to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let p = loop {
        // Retried until the second dnsmasq listens.
        let o = cache_cmd(
            &dir,
            &[
                "prefetch", "e.img", "--from", &server, "--via", &via, "--json",
            ],
        );
        if o.status.success() || Instant::now() > deadline {
            break json_of(&o);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(tftp);
    assert_eq!(p["size"], FILE_LEN as u64);
    assert_eq!(p["published"], "new");
    let want_e = netns::sha256_bytes(&test_content(FILE_LEN, 44), &t.dir, "want-e").unwrap();
    assert_eq!(p["sha256"], want_e.as_str());
    wait_listed(&dir, &["a.img", "e.img"]);
    let out = read("e.img");
    assert_eq!(sha256_file(&out).unwrap(), want_e);
    assert_eq!(
        t.origin_count("e.img"),
        0,
        "the prefetched file came from the origin"
    );

    // purge through the bridge: nothing unused for an hour.
    let p = json_of(&cache_cmd(&dir, &["purge", "--older-than", "1h", "--json"]));
    assert_eq!(p["removed"].as_array().unwrap().len(), 0);

    let fin = t.stop_bootcache().unwrap();
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
    assert_eq!(netns::stat(&fin.stdout, "files", "removed"), Some(1));

    // No bridge: ls and rm on the directory, under its lock.
    assert_eq!(listed(&dir), ["a.img", "e.img"]);
    let rm = json_of(&cache_cmd(&dir, &["rm", "a.img", "--json"]));
    assert_eq!(rm["removed"][0]["name"], "a.img");
    assert_eq!(listed(&dir), ["e.img"]);

    // No bridge answers, but something holds the directory: one line.
    let lock = slowpath::DirLock::acquire(&dir).unwrap();
    let o = cache_cmd(&dir, &["purge"]);
    drop(lock);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("does not answer on"), "{err}");
    assert!(o.stdout.is_empty());
    assert_eq!(listed(&dir), ["e.img"], "nothing purged");
}
