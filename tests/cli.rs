//! The command line: wrong options, too few ports, EAL failures → one clear
//! line and a non-zero exit, before anything runs.

use std::process::{Command, Output};

const BOOTCACHE: &str = env!("CARGO_BIN_EXE_bootcache");

fn run(args: &[&str]) -> Output {
    Command::new(BOOTCACHE)
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap()
}

/// EAL options for a hugepage-free run with `lcores` and net_null ports,
/// then `extra` (e.g. `--` and bootcache options).
fn null_eal(tag: &str, lcores: &str, ports: usize, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--no-huge",
        "-m",
        "256",
        "--no-shconf",
        "--no-pci",
        "--no-telemetry",
        "--lcores",
        lcores,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend([
        "--file-prefix".to_string(),
        format!("bct-{tag}-{}", std::process::id()),
    ]);
    for i in 0..ports {
        a.extend(["--vdev".to_string(), format!("net_null{i}")]);
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn run_owned(args: &[String]) -> Output {
    Command::new(BOOTCACHE)
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap()
}

/// The last stderr line (DPDK's own EAL log lines may precede ours).
fn last_line(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .last()
        .unwrap_or("")
        .to_string()
}

#[test]
fn help_documents_every_option() {
    let o = run(&["--help"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for opt in [
        "--stats-interval",
        "--drain-us",
        "--rx-desc",
        "--tx-desc",
        "--mbufs",
        "--mtu",
        "--config",
        "--cache-dir",
        "--slowpath-throttle-us",
        "cache ls",
        "cache verify",
        "[EAL options] --",
    ] {
        assert!(text.contains(opt), "--help lacks {opt}");
    }
}

#[test]
fn unknown_option_is_one_line() {
    let o = run(&["--no-huge", "--", "--frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--frobnicate"), "{err}");
}

#[test]
fn out_of_range_value_is_one_line() {
    let o = run(&["--", "--rx-desc", "3"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--rx-desc"), "{err}");
}

#[test]
fn too_few_ports_is_refused() {
    let o = run_owned(&null_eal("cli0", "0@0,1@1", 1, &[]));
    assert!(!o.status.success());
    let line = last_line(&o);
    assert!(line.starts_with("bootcache: needs 2 DPDK ports"), "{line}");
    assert!(line.contains("found 1"), "{line}");
}

#[test]
fn missing_worker_lcore_is_refused() {
    let o = run_owned(&null_eal("cli1", "0@0", 2, &[]));
    assert!(!o.status.success());
    assert!(
        last_line(&o).contains("needs a worker lcore"),
        "{}",
        last_line(&o)
    );
}

#[test]
fn eal_failure_is_one_clear_line() {
    let o = run(&[
        "--no-huge",
        "--no-shconf",
        "--lcores",
        "0@0,1@1",
        "--vdev",
        "net_doesnotexist0",
    ]);
    assert!(!o.status.success());
    let line = last_line(&o);
    assert!(
        line.starts_with("bootcache: EAL initialisation failed"),
        "{line}"
    );
}

#[test]
fn sigterm_stops_cleanly_with_statistics() {
    let o = run_until(
        "cli2",
        "0@0,1@1",
        &["--stats-interval", "1"],
        &[],
        |out, _| forwarded_plenty(out),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_forwarded_both_ways(&o);
}

/// net_null generates frames endlessly: both sides forwarded plenty, and
/// what one port received is what the other sent or dropped.
fn assert_forwarded_both_ways(o: &Output) {
    let stats = bootcache_testbed::process::parse_final_stats(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(stats.len(), 2);
    for side in 0..2 {
        assert!(stats[side].rx_packets > 1000, "{stats:?}");
        assert_eq!(
            stats[side].rx_packets,
            stats[side ^ 1].tx_packets + stats[side ^ 1].tx_dropped
        );
    }
}

#[test]
fn cache_ls_lists_an_empty_cache_and_refuses_a_missing_one() {
    let dir = std::env::temp_dir().join(format!("bootcache-ls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let o = run(&["cache", "ls", "--cache-dir", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("(0 files, 0 bytes)"), "{out}");
    assert!(out.contains("image map: 0 clients"), "{out}");
    let o = run(&["cache", "ls", "--cache-dir", "/nonexistent/bootcache"]);
    assert!(!o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1);
}

#[test]
fn a_bad_config_is_one_line_naming_the_field() {
    let dir = std::env::temp_dir().join(format!("bootcache-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bad.toml");
    std::fs::write(
        &cfg,
        "servers = [\"10.0.0.1\"]\n[limits]\nmax_file_size = \"12Q\"\n",
    )
    .unwrap();
    let o = run(&["--no-huge", "--", "--config", cfg.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("limits.max_file_size"), "{err}");
    // A missing file says which.
    let o = run(&["--", "--config", "/nonexistent.toml"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent.toml"));
}

#[test]
fn an_mtu_larger_than_an_mbuf_is_one_line_naming_mbuf_size() {
    let o = run_owned(&null_eal("cli3", "0@0,1@1", 2, &["--", "--mtu", "9000"]));
    assert!(!o.status.success());
    let line = last_line(&o);
    assert!(line.starts_with("bootcache: "), "{line}");
    assert!(line.contains("--mbuf-size 9150"), "{line}");
    // With room for it, the same MTU is accepted (net_null takes any MTU).
    let o = run_owned(&null_eal(
        "cli4",
        "0@0,1@1",
        2,
        &["--", "--mtu", "9000", "--mbuf-size", "9150", "--help"],
    ));
    assert!(o.status.success(), "{}", last_line(&o));
}

/// Runs bootcache on net_null ports until `done(stdout, stderr)` holds
/// (polled; a test fails after 30 s without it), stops it with SIGTERM and
/// returns its output; `env` is added to its environment.
fn run_until(
    tag: &str,
    lcores: &str,
    app: &[&str],
    env: &[(&str, &str)],
    done: impl FnMut(&str, &str) -> bool,
) -> Output {
    run_until_with(tag, lcores, app, env, |_| {}, done)
}

/// [`run_until`], with `setup` run on the cache path before bootcache starts.
fn run_until_with(
    tag: &str,
    lcores: &str,
    app: &[&str],
    env: &[(&str, &str)],
    setup: impl FnOnce(&std::path::Path),
    mut done: impl FnMut(&str, &str) -> bool,
) -> Output {
    let dir = std::env::temp_dir().join(format!("bootcache-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cache = dir.join("cache");
    setup(&cache);
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    // Statistics as JSON too: read back with `process::stat`.
    let mut extra = vec!["--", "--cache-dir", cache.to_str().unwrap(), "--stats-json"];
    extra.extend(app);
    let mut child = Command::new(BOOTCACHE)
        .args(null_eal(tag, lcores, 2, &extra))
        .envs(env.iter().copied())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let start = std::time::Instant::now();
    loop {
        let (out, err) = (read(&out_path), read(&err_path));
        if done(&out, &err) {
            break;
        }
        if start.elapsed() > std::time::Duration::from_secs(30)
            || !matches!(child.try_wait(), Ok(None))
        {
            let _ = child.kill();
            panic!("bootcache never reached the awaited state:\n{err}\n{out}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let o = Output {
        status,
        stdout: read(&out_path).into_bytes(),
        stderr: read(&err_path).into_bytes(),
    };
    let _ = std::fs::remove_dir_all(&dir);
    o
}

/// A periodic stats line shows both ports received over 1,000 frames.
fn forwarded_plenty(out: &str) -> bool {
    ["client", "server"]
        .iter()
        .all(|side| bootcache_testbed::netns::stat(out, side, "rx").is_some_and(|n| n > 1000))
}

#[test]
fn two_worker_lcores_forward_on_two_queue_pairs() {
    let o = run_until(
        "cli5",
        "0@0,1@1,2@1",
        &["--stats-interval", "1"],
        &[],
        |out, _| forwarded_plenty(out),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("bridging on lcore 1,2"), "{err}");
    assert!(err.contains("2 queue pair(s)"), "{err}");
    assert_forwarded_both_ways(&o);
}

/// systemd's notify protocol on a socket of the test's own: READY=1 once
/// forwarding runs, WATCHDOG=1 at half of WATCHDOG_USEC while it does,
/// STOPPING=1 at the end.
#[test]
fn systemd_gets_ready_watchdog_pings_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let path = std::env::temp_dir().join(format!("bootcache-notify-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let pings = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&pings);
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let stop = msg.contains("STOPPING=1");
            if msg.contains("WATCHDOG=1") {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            got.push(msg);
            if stop {
                break;
            }
        }
        got
    });
    let o = run_until(
        "cli6",
        "0@0,1@1",
        &[],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
        |_, _| pings.load(std::sync::atomic::Ordering::Relaxed) >= 5,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = reader.join().unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(got[0].contains("READY=1"), "{got:?}");
    let pings = got.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(
        pings >= 5,
        "{pings} watchdog pings in 1.5 s at 100 ms: {got:?}"
    );
    assert!(got.last().unwrap().contains("STOPPING=1"), "{got:?}");
}

/// Frames waiting in a redirect ring hold buffers of their lcore's copy
/// pool, sized from the ring: a ring larger than the main pool leaves room
/// for is not capped (it takes nothing from the receive queues' pool); a
/// pool that cannot cover the descriptors is refused.
#[test]
fn a_redirect_ring_larger_than_the_main_pool_leaves_is_sized_from_its_copy_pool() {
    let o = run_until("cli7", "0@0,1@1", &["--mbufs", "5000"], &[], |_, err| {
        err.contains("bridging on lcore")
    });
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("bridging on lcore"), "{err}");
    assert!(!err.contains("capped to"), "{err}");
    let o = run_owned(&null_eal("cli8", "0@0,1@1", 2, &["--", "--mbufs", "4100"]));
    assert!(!o.status.success());
    assert!(last_line(&o).contains("raise --mbufs"), "{}", last_line(&o));
}

/// A cache that cannot be opened at start (here its path is a file) does
/// not keep the segment down: bootcache forwards only, says why, and opens
/// the cache once the path is usable.
#[test]
fn an_unopenable_cache_forwards_only_until_it_can_be_opened() {
    // run_until's cache path for this tag.
    let cache = std::env::temp_dir()
        .join(format!("bootcache-cli9-{}", std::process::id()))
        .join("cache");
    let mut opened_dir = false;
    let o = run_until_with(
        "cli9",
        "0@0,1@1",
        &["--stats-interval", "1"],
        &[],
        |path| std::fs::write(path, b"not a directory").unwrap(),
        |out, err| {
            // Once bootcache forwards on its placeholder, the path becomes
            // usable: the next retry (every 2 s) opens it.
            if err.contains("bridging on lcore") && cache.is_file() {
                std::fs::remove_file(&cache).unwrap();
            }
            opened_dir |= cache.join("files").is_dir();
            err.contains("cache opened")
                && bootcache_testbed::netns::stat(out, "failopen", "degraded") == Some(0)
        },
    );
    let err = String::from_utf8_lossy(&o.stderr);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("forwarding only until it can be opened"),
        "{err}"
    );
    assert!(opened_dir, "the real cache was not created");
    assert_forwarded_both_ways(&o);
    assert_eq!(
        bootcache_testbed::netns::stat(&out, "failopen", "degraded_periods"),
        Some(1),
        "{out}"
    );
}

/// A cache in `dir` holding `files` (name, content) from 192.0.2.1, filled
/// through the filestore as the bridge fills it.
fn cache_with(dir: &std::path::Path, files: &[(&str, &[u8])]) -> slowpath::Filestore {
    let mut store = slowpath::Filestore::open(dir).unwrap();
    for (i, (name, content)) in files.iter().enumerate() {
        let path = store.tmp_dir().join(format!("t{i}"));
        let mut r = slowpath::reassembly::Reassembly::create(path, 512, None, u64::MAX).unwrap();
        let mut blocks: Vec<&[u8]> = content.chunks(512).collect();
        if content.len() % 512 == 0 {
            blocks.push(&[]);
        }
        for (n, b) in blocks.iter().enumerate() {
            r.insert(n as u64 + 1, b).unwrap();
        }
        let done = r.finish().unwrap();
        store
            .publish(
                std::time::SystemTime::now(),
                (
                    wire::frame::VlanScope::UNTAGGED,
                    std::net::Ipv4Addr::new(192, 0, 2, 1),
                ),
                name,
                done.file,
                done.size,
                done.sha256,
            )
            .unwrap();
    }
    // Publishing is done by the cache's writer thread: wait for it.
    store.sync();
    store
}

/// `bootcache cache verify`: a clean cache exits 0; a byte flipped on disk
/// (same size, so loading the index alone cannot see it) is found, the
/// file and its entry are removed, and it exits 1; run again, the cache is
/// clean.
#[test]
fn cache_verify_removes_a_flipped_byte_and_exits_1() {
    let dir = tempfile_dir("verify");
    let store = cache_with(
        &dir,
        &[
            ("pxelinux.0", &[7u8; 3000]),
            ("boot/vmlinuz", &[9u8; 70_000]),
        ],
    );
    let kernel = store
        .lookup(
            wire::frame::VlanScope::UNTAGGED,
            std::net::Ipv4Addr::new(192, 0, 2, 1),
            "boot/vmlinuz",
        )
        .unwrap()
        .clone();
    let kernel_path = store.path_of(&kernel);
    drop(store);
    let d = dir.to_str().unwrap();

    let o = run(&["cache", "verify", "--cache-dir", d]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        out.lines().filter(|l| l.ends_with(": ok")).count(),
        2,
        "{out}"
    );
    assert!(
        out.contains("2 files, 73000 bytes: 2 ok, 0 removed"),
        "{out}"
    );

    let mut bytes = std::fs::read(&kernel_path).unwrap();
    bytes[40_000] ^= 0x01;
    std::fs::write(&kernel_path, bytes).unwrap();
    let o = run(&["cache", "verify", "--json", "--cache-dir", d]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.lines().count(), 1, "one JSON object: {out}");
    for field in [
        "\"files\":2,",
        "\"bytes\":73000,",
        "\"ok\":1,",
        "\"removed\":1,",
        "\"unreadable\":0,",
        "\"name\":\"boot/vmlinuz\"",
        "\"reason\":\"mismatch\"",
    ] {
        assert!(out.contains(field), "{field} not in {out}");
    }
    assert!(!kernel_path.exists(), "the corrupt file is still there");
    let listed = slowpath::filestore::read_index(&dir).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "pxelinux.0");

    let o = run(&["cache", "verify", "--cache-dir", d]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("1 files, 3000 bytes: 1 ok, 0 removed"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh directory under the temp dir for this test process.
fn tempfile_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bootcache-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// While a bridge runs on a cache directory, `cache verify` goes through
/// its control socket (the bridge hashes, nothing is refused); while
/// something else holds the directory (a verify), a starting bridge
/// forwards only and opens its cache once the lock is free.
#[test]
fn cache_verify_goes_through_a_running_bridge_and_the_bridge_waits_for_a_lock() {
    let cache = std::env::temp_dir()
        .join(format!("bootcache-cli10-{}", std::process::id()))
        .join("cache");
    let held = std::cell::RefCell::new(None);
    let mut refusal = None;
    let o = run_until_with(
        "cli10",
        "0@0,1@1",
        &["--stats-interval", "1"],
        &[],
        |path| {
            std::fs::create_dir_all(path).unwrap();
            *held.borrow_mut() = Some(slowpath::DirLock::acquire(path).unwrap());
        },
        |out, err| {
            if err.contains("bridging on lcore") {
                // Forwarding without the cache so far: let it go.
                held.borrow_mut().take();
            }
            if refusal.is_none() && err.contains("cache opened") {
                refusal = Some(run(&[
                    "cache",
                    "verify",
                    "--cache-dir",
                    cache.to_str().unwrap(),
                ]));
            }
            refusal.is_some() && forwarded_plenty(out)
        },
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("forwarding only until it can be opened"),
        "{err}"
    );
    assert!(err.contains("locked by pid"), "{err}");
    let r = refusal.unwrap();
    let out = String::from_utf8_lossy(&r.stdout);
    assert_eq!(
        r.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(
        out.contains(&format!(
            "verified {}: 0 files, 0 bytes: 0 ok, 0 removed",
            cache.display()
        )),
        "{out}"
    );
}
