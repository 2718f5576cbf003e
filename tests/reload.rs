//! Reload (issue 15 item 4): SIGHUP makes a running bootcache read its
//! configuration file again. A boot server added to it is followed and
//! cached from the next read on; an invalid file is refused with one log
//! line naming the field, and the running configuration goes on; pings
//! across the bridge all along never miss an answer.
//!
//! Needs root and `scripts/setup` (dnsmasq, curl, ping, hugepages).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bootcache_testbed::netns::{self, sha256_file, test_content, SERVER_IP};

const BOOTCACHE: &str = env!("CARGO_BIN_EXE_bootcache");

/// `ping` from the client namespace to the origin, every 10 ms: stopped
/// with SIGINT (it then prints its summary), killed if the test fails.
struct Ping(Option<Child>);

impl Ping {
    fn start(t: &netns::Topology) -> Ping {
        let child = t
            .client_cmd("ping")
            // -w: never outlives a test that lost track of it.
            .args(["-n", "-i", "0.01", "-w", "120", &SERVER_IP.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ping (iputils-ping) in the client namespace");
        Ping(Some(child))
    }

    /// Stops it; (transmitted, received).
    fn stop(mut self) -> (u64, u64) {
        let child = self.0.take().unwrap();
        let ok = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ping exited early");
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        // "N packets transmitted, M received, ..."
        let summary = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("no ping summary: {text}"));
        let mut nums = summary
            .split(|c: char| !c.is_ascii_digit())
            .filter(|w| !w.is_empty())
            .map(|w| w.parse::<u64>().unwrap());
        (nums.next().unwrap(), nums.next().unwrap())
    }
}

impl Drop for Ping {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Lines of bootcache's log that contain `text`.
fn log_lines(t: &netns::Topology, text: &str) -> Vec<String> {
    std::fs::read_to_string(t.bootcache_log_dir().join("bootcache.err"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(text))
        .map(String::from)
        .collect()
}

#[test]
fn sighup_adds_a_server_refuses_a_bad_file_and_forwarding_never_stops() {
    let mut t = netns::test_topology(&netns::Options {
        bootcache_bin: Some(BOOTCACHE.into()),
        ..Default::default()
    });
    let files = ["before.img", "added.img", "kept.img"];
    for (i, name) in files.iter().enumerate() {
        t.put_file(name, &test_content(256 << 10, 40 + i as u64))
            .unwrap();
    }
    t.start_origin().expect("dnsmasq");
    // Cache fill only, and the origin not among the boot servers yet.
    let cfg = t.write_fill_only_config().unwrap();
    let with_origin = std::fs::read_to_string(&cfg).unwrap();
    let without = with_origin.replace(&format!("\"{SERVER_IP}\""), "\"192.0.2.99\"");
    assert_ne!(without, with_origin);
    std::fs::write(&cfg, &without).unwrap();
    t.start_bootcache(&["--stats-interval", "1"])
        .expect("bootcache");
    let ping = Ping::start(&t);
    let read = |t: &netns::Topology, name: &str| {
        let out = t.dir.join(name);
        t.curl_get(name, Some(1428), &out)
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", t.diagnostics()));
        assert_eq!(
            sha256_file(&out).unwrap(),
            sha256_file(&t.tftp_root.join(name)).unwrap(),
            "{name}"
        );
    };
    read(&t, "before.img");

    // The origin added: SIGHUP, and its next transfer is followed and cached.
    std::fs::write(&cfg, &with_origin).unwrap();
    t.signal_bootcache("HUP").unwrap();
    t.wait_stat("config", "reloads", 1, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", t.diagnostics()));
    assert_eq!(
        log_lines(&t, "config reload: applied servers").len(),
        1,
        "{}",
        t.diagnostics()
    );
    read(&t, "added.img");
    t.wait_stat("files", "in_store", 1, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\n{}", t.diagnostics()));

    // An invalid file: refused in one line naming the field; the bridge
    // runs on with what it had (the origin still cached).
    std::fs::write(&cfg, format!("{with_origin}max_transfers = 0\n")).unwrap();
    t.signal_bootcache("HUP").unwrap();
    t.wait_stat("config", "reloads_failed", 1, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", t.diagnostics()));
    let refused = log_lines(&t, "limits.max_transfers");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains("config reload refused"), "{refused:?}");
    read(&t, "kept.img");
    t.wait_stat("files", "in_store", 2, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\n{}", t.diagnostics()));
    // Only the reads after the server was added were followed.
    assert_eq!(t.bootcache_stat("transfers", "seen"), Some(2));
    assert_eq!(t.bootcache_stat("config", "reloads"), Some(1));

    // Forwarding never stopped: every ping answered (the one in flight
    // when ping was stopped aside).
    let (sent, received) = ping.stop();
    eprintln!("pings: {received} of {sent} answered");
    assert!(sent >= 50, "only {sent} pings sent");
    assert!(
        received + 1 >= sent,
        "{received} of {sent} pings answered across two reloads"
    );
    let fin = t.stop_bootcache().unwrap();
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
}
