//! Fail open (issue 11): whatever happens to the cache — a full file
//! system, a read-only one, a slow path stalled for seconds, a panic in it —
//! real clients keep getting their bytes through bootcache, nothing partial
//! is published, and the cache comes back when the cause goes away.
//!
//! Real programs in network namespaces (dnsmasq origin, bootcache-agent,
//! curl), bootcache on `net_af_packet` ports; the cache directory is a small
//! tmpfs this test mounts, fills, remounts read-only and grows.
//!
//! Needs root and `scripts/setup` (dnsmasq, curl, hugepages).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// A tmpfs mounted on the cache directory; unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        mount(
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            dir,
        );
        Tmpfs(dir.to_path_buf())
    }

    fn remount(&self, opts: &str) {
        mount(&["-o", &format!("remount,{opts}")], &self.0);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount(args: &[&str], dir: &Path) {
    let st = Command::new("mount")
        .args(args)
        .arg(dir)
        .status()
        .expect("running mount");
    assert!(st.success(), "mount {args:?} {} failed", dir.display());
}

fn sha_of(bytes: &[u8], dir: &Path, name: &str) -> String {
    netns::sha256_bytes(bytes, dir, name).unwrap()
}

/// Waits until bootcache's `section key` equals `want`.
fn wait_value(t: &Topology, section: &str, key: &str, want: u64, timeout: Duration) {
    let start = Instant::now();
    loop {
        let have = t.bootcache_stat(section, key);
        if have == Some(want) {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "bootcache's {section} {key} is {have:?} after {timeout:?}, expected {want}\n{}",
            t.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads `name` with curl (blksize 1428) and checks the bytes.
fn read_ok(t: &Topology, name: &str, want: &str) {
    let out = t.dir.join("out");
    let _ = std::fs::remove_file(&out);
    t.curl_get(name, Some(1428), &out)
        .unwrap_or_else(|e| panic!("reading {name}: {e:#}\n{}", t.diagnostics()));
    assert_eq!(&sha256_file(&out).unwrap(), want, "{name}: wrong bytes");
}

/// Every file the index names is whole and has the SHA-256 the index says;
/// nothing else is in `files/`.
fn assert_nothing_partial(cache: &Path) -> usize {
    let entries = slowpath::filestore::read_index(cache).expect("reading index.json");
    let mut stored = Vec::new();
    for e in &entries {
        let path = cache.join("files").join(&e.stored_as);
        assert_eq!(
            std::fs::metadata(&path).map(|m| m.len()).ok(),
            Some(e.size),
            "{} in the index but not whole on disk",
            e.name
        );
        assert_eq!(sha256_file(&path).unwrap(), e.sha256.to_hex(), "{}", e.name);
        stored.push(e.stored_as.clone());
    }
    for f in std::fs::read_dir(cache.join("files")).unwrap() {
        let name = f.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            stored.contains(&name),
            "{name} in files/ but not in the index"
        );
    }
    entries.len()
}

/// A cache on a tmpfs too small for the file being read, then read-only:
/// the clients get every byte from the origin meanwhile, bootcache says it
/// is degraded, publishes nothing partial, and caches again once space
/// returns and the file system is writable.
#[test]
fn a_full_or_read_only_cache_costs_the_cache_never_the_clients() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = topology();
    let fs = Tmpfs::mount(&t.cache_dir, "3m");
    let big = test_content(8 << 20, 21);
    let small = test_content(1 << 20, 22);
    let (big_sha, small_sha) = (sha_of(&big, &t.dir, "b"), sha_of(&small, &t.dir, "s"));
    t.put_file("big.img", &big).unwrap();
    t.put_file("small.img", &small).unwrap();
    drop((big, small));
    t.start_origin().expect("dnsmasq");
    t.start_agent().expect("bootcache-agent");
    t.write_bootcache_config("").unwrap();
    t.start_bootcache(&["--stats-interval", "1"])
        .expect("bootcache");

    // Full: 8 MiB do not fit in 3 MiB. The client is not affected; the
    // transfer's partial copy is discarded, so the space comes back and the
    // probe finds the cache writable again a moment later.
    read_ok(&t, "big.img", &big_sha);
    t.wait_stat("failopen", "degraded_periods", 1, Duration::from_secs(10))
        .expect("a full cache did not degrade bootcache");
    assert_eq!(t.bootcache_stat("files", "in_store"), Some(0));
    assert_eq!(t.origin_count("big.img"), 1, "{:?}", t.origin_transfers());
    assert_eq!(assert_nothing_partial(&t.cache_dir), 0);

    // Space returns: the next read of the big file is cached.
    fs.remount("size=64m");
    wait_value(&t, "failopen", "degraded", 0, Duration::from_secs(10));
    read_ok(&t, "big.img", &big_sha);
    t.wait_stat("files", "in_store", 1, Duration::from_secs(20))
        .expect("the file was not cached after space returned");

    // Read-only: the warm file is not served (forward only) but the client
    // still gets it, from the origin; nothing new is published.
    fs.remount("ro");
    read_ok(&t, "small.img", &small_sha);
    wait_value(&t, "failopen", "degraded", 1, Duration::from_secs(10));
    read_ok(&t, "big.img", &big_sha);
    assert_eq!(
        t.origin_count("big.img"),
        3,
        "while degraded the origin serves: {:?}",
        t.origin_transfers()
    );
    fs.remount("rw");
    wait_value(&t, "failopen", "degraded", 0, Duration::from_secs(10));
    read_ok(&t, "small.img", &small_sha);
    t.wait_stat("files", "in_store", 2, Duration::from_secs(20))
        .expect("the file was not cached after the file system became writable");
    // Served from the cache again.
    read_ok(&t, "big.img", &big_sha);
    assert_eq!(t.origin_count("big.img"), 3, "{:?}", t.origin_transfers());

    let fin = t.stop_bootcache().unwrap();
    assert_eq!(fin.code, Some(0), "bootcache exit: {}", fin.stderr);
    assert!(netns::stat(&fin.stdout, "failopen", "degraded_periods").unwrap_or(0) >= 2);
    assert!(
        fin.stderr.contains("cache degraded, forwarding only"),
        "{}",
        fin.stderr
    );
    assert_eq!(assert_nothing_partial(&t.cache_dir), 2);
}

/// The slow path stalled on purpose (3 s per redirected frame, far past
/// the 500 ms heartbeat timeout): the trapped read request waits, the fast
/// path stops trapping, and the client's retransmitted request reaches the
/// origin, which serves the file.
#[test]
fn a_stalled_slow_path_lets_read_requests_reach_the_origin() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = topology();
    let content = test_content(1 << 20, 23);
    let want = sha_of(&content, &t.dir, "w");
    t.put_file("k.img", &content).unwrap();
    t.start_origin().expect("dnsmasq");
    t.start_agent().expect("bootcache-agent");
    t.write_bootcache_config("").unwrap();
    t.start_bootcache(&["--stats-interval", "1", "--slowpath-throttle-us", "3000000"])
        .expect("bootcache");
    read_ok(&t, "k.img", &want);
    assert_eq!(t.origin_count("k.img"), 1, "{:?}", t.origin_transfers());
    let fin = t.stop_bootcache().unwrap();
    assert_eq!(fin.code, Some(0), "bootcache exit: {}", fin.stderr);
    let periods = netns::stat(&fin.stdout, "failopen", "bypass_periods").unwrap_or(0);
    assert!(periods >= 1, "never bypassed: {}", fin.stdout);
    assert!(netns::stat(&fin.stdout, "failopen", "bypassed").unwrap_or(0) > 0);
}

/// A panic in the slow path (the testing aid panics once, at the 20th
/// redirected frame, in the middle of the first transfer): the client still
/// gets its bytes, the slow path reopens the cache and the next read is
/// cached and then served from it.
#[test]
fn a_panicking_slow_path_recovers_while_forwarding_goes_on() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = topology();
    let content = test_content(2 << 20, 24);
    let want = sha_of(&content, &t.dir, "w");
    t.put_file("p.img", &content).unwrap();
    t.start_origin().expect("dnsmasq");
    t.start_agent().expect("bootcache-agent");
    t.write_bootcache_config("").unwrap();
    t.start_bootcache(&["--stats-interval", "1", "--slowpath-panic-after", "20"])
        .expect("bootcache");
    read_ok(&t, "p.img", &want);
    wait_value(&t, "failopen", "restarts", 1, Duration::from_secs(10));
    // The panic cost that transfer's caching; the next read is cached.
    if t.bootcache_stat("files", "in_store") == Some(0) {
        read_ok(&t, "p.img", &want);
        t.wait_stat("files", "in_store", 1, Duration::from_secs(20))
            .expect("nothing cached after the slow path recovered");
    }
    let before = t.origin_count("p.img");
    read_ok(&t, "p.img", &want);
    assert_eq!(
        t.origin_count("p.img"),
        before,
        "not served from the cache after recovery: {:?}",
        t.origin_transfers()
    );
    let fin = t.stop_bootcache().unwrap();
    assert_eq!(fin.code, Some(0), "bootcache exit: {}", fin.stderr);
    assert!(fin.stderr.contains("slow path panicked"), "{}", fin.stderr);
    assert_eq!(netns::stat(&fin.stdout, "failopen", "restarts"), Some(1));
}
