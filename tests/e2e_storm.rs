//! A storm of real TFTP clients through bootcache (issue 16 item 4): N
//! clients started at once in the client namespace — a mix of curl with
//! blksize 1428 and 512, tftp-hpa (RFC 1350, 512-byte blocks, no options)
//! and atftp with windowsize 16 — read one file whose copy bootcache
//! cached from a real origin (dnsmasq), with the real bootcache-agent
//! validating. Every client must get the file byte-identical; the origin
//! must send nothing during the storm, by its own log (transfers) and by
//! its interface's counter (bytes); the validation messages are counted
//! from the agent's own counters.
//!
//! `BOOTCACHE_STORM_CLIENTS` (default 50) and `BOOTCACHE_STORM_MIB`
//! (default 4) change the storm. Needs root and `scripts/setup`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bootcache_testbed::netns::{self, Topology, SERVER_IP};

const BOOTCACHE: &str = env!("CARGO_BIN_EXE_bootcache");
const NAME: &str = "storm.img";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v}: a number")))
        .unwrap_or(default)
}

/// Bytes the origin's interface sent so far (its kernel counter).
fn origin_tx_bytes(t: &Topology) -> u64 {
    let out = t
        .server_cmd("cat")
        .arg("/sys/class/net/eth0/statistics/tx_bytes")
        .output()
        .expect("reading the origin's counter");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("tx_bytes")
}

/// Client `i` of the storm: its label and command writing to `out`.
fn client(t: &Topology, i: usize, out: &Path) -> (&'static str, Command) {
    let url = format!("tftp://{SERVER_IP}/{NAME}");
    let curl = |blksize: &str| {
        let mut c = t.client_cmd("curl");
        c.args(["-sS", "--max-time", "300", "--tftp-blksize", blksize, "-o"])
            .arg(out)
            .arg(&url);
        c
    };
    match i % 4 {
        0 => ("curl blksize 1428", curl("1428")),
        1 => ("curl blksize 512", curl("512")),
        2 => {
            let mut c = t.client_cmd("timeout");
            c.args(["300", "tftp", "-m", "binary", &SERVER_IP.to_string()])
                .args(["-c", "get", NAME])
                .arg(out);
            ("tftp-hpa", c)
        }
        _ => {
            let mut c = t.client_cmd("timeout");
            c.args([
                "300",
                "atftp",
                "--option",
                "windowsize 16",
                "-g",
                "-r",
                NAME,
                "-l",
            ])
            .arg(out)
            .arg(SERVER_IP.to_string());
            ("atftp windowsize 16", c)
        }
    }
}

#[test]
fn a_storm_of_real_clients_is_served_from_the_cache_byte_identical() {
    let n = env_or("BOOTCACHE_STORM_CLIENTS", 50);
    let mib = env_or("BOOTCACHE_STORM_MIB", 4);
    let mut t = netns::test_topology(&netns::Options {
        bootcache_bin: Some(BOOTCACHE.into()),
        ..Default::default()
    });
    let have_atftp = Command::new("sh")
        .args(["-c", "command -v atftp"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        have_atftp,
        "atftp not found (Debian package atftp): run scripts/setup"
    );
    let content = netns::test_content(mib << 20, 16);
    let want = netns::sha256_bytes(&content, &t.dir, "want").unwrap();
    t.put_file(NAME, &content).unwrap();
    t.start_origin().unwrap();
    t.start_agent().unwrap();
    t.write_bootcache_config("").unwrap();
    t.start_bootcache(&["--stats-interval", "1"]).unwrap();

    // The fill: one cold read from the origin, cached.
    let out = t.dir.join("cold");
    t.curl_get(NAME, Some(1428), &out).unwrap();
    assert_eq!(netns::sha256_file(&out).unwrap(), want);
    t.wait_stat("files", "in_store", 1, Duration::from_secs(30))
        .unwrap();
    assert_eq!(t.origin_count(NAME), 1, "{:?}", t.origin_transfers());
    let completed = t.bootcache_stat("serve", "completed").unwrap_or(0);
    let tx_before = origin_tx_bytes(&t);

    // The storm: every client started before any is waited for.
    let start = Instant::now();
    let clients: Vec<(&str, PathBuf, Child)> = (0..n)
        .map(|i| {
            let out = t.dir.join(format!("storm-{i}"));
            let (label, mut cmd) = client(&t, i, &out);
            // atftp reports every out-of-window block it drops on stderr.
            let err = std::fs::File::create(out.with_extension("err")).expect("client log");
            let child = cmd
                .stdout(std::process::Stdio::null())
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {label}: {e}"));
            (label, out, child)
        })
        .collect();
    let mut failures = Vec::new();
    for (label, out, mut child) in clients {
        let st = child.wait().expect("waiting for a client");
        let got = netns::sha256_file(&out).unwrap_or_default();
        if !st.success() || got != want {
            let err = std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
            failures.push(format!(
                "{label} ({}): {st}, sha256 {got}: {}",
                out.display(),
                err.lines().last().unwrap_or("")
            ));
        }
    }
    let took = start.elapsed();
    let origin_bytes = origin_tx_bytes(&t) - tx_before;
    assert!(
        failures.is_empty(),
        "{} of {n} clients failed: {failures:#?}\n{}",
        failures.len(),
        t.diagnostics()
    );

    // The origin sent no file during the storm (its log), and next to no
    // bytes (its counter: ARP and router adverts only).
    assert_eq!(t.origin_count(NAME), 1, "{:?}", t.origin_transfers());
    assert!(
        origin_bytes < 64 << 10,
        "the origin sent {origin_bytes} bytes during the storm"
    );
    t.wait_stat(
        "serve",
        "completed",
        completed + n as u64,
        Duration::from_secs(10),
    )
    .unwrap();
    let misses = t.bootcache_stat("serve", "misses").unwrap_or(0);
    let validated = t.bootcache_stat("serve", "validated_current").unwrap_or(0);

    // The agent's own count of the validation messages it answered.
    t.stop_agent();
    let log = std::fs::read_to_string(t.dir.join("agent.log")).unwrap_or_default();
    let accepted: u64 = log
        .lines()
        .find_map(|l| {
            l.split_once("counters: received=")?
                .1
                .split_whitespace()
                .nth(1)?
                .strip_prefix("accepted=")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no counters line in the agent's log:\n{log}"));
    assert!(accepted >= 1, "the agent validated nothing");
    eprintln!(
        "storm: {n} clients, {mib} MiB each, all byte-identical in {:.1} s; origin sent {origin_bytes} bytes (no transfer) during it; \
         bootcache serve misses={misses} validated_current={validated}; the agent accepted {accepted} validation messages",
        took.as_secs_f64()
    );
    let fin = t.stop_bootcache().unwrap();
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
}
