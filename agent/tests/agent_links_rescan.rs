//! Issue 13 (item 5), against the real `bootcache-agent` process on a temp
//! TFTP root: a symbolic link answers with what it points to now (its
//! target rewritten, the link retargeted), and a full rescan of a big tree
//! does not hold the answers asked while it runs.

use std::net::UdpSocket;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant, SystemTime};

use bootcache_agent::replay::unix_ms;
use bootcache_agent::{Validator, Verdict};

mod common;

use common::{key_file, sha, start, validate, validator, Agent};

/// Asks until `ok(verdict)` holds; fails after 10 s.
fn until(
    v: &mut Validator,
    sock: &UdpSocket,
    agent: &Agent,
    file: &str,
    h: [u8; 32],
    what: &str,
    ok: impl Fn(&Verdict) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = validate(v, sock, agent.addr, file, h);
        if ok(&got) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {got:?} after 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The next line starting with `prefix`, within `wait`.
fn line_with(lines: &Receiver<String>, prefix: &str, wait: Duration) -> Option<String> {
    let deadline = Instant::now() + wait;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(l) if l.starts_with(prefix) => return Some(l),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// The value of `key=` in a `key=value` line.
fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

#[test]
fn a_link_answers_with_what_it_points_to_now() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir(r.join("images")).unwrap();
    std::fs::write(r.join("images/vmlinuz-1"), b"kernel one").unwrap();
    std::fs::write(r.join("images/vmlinuz-2"), b"kernel two").unwrap();
    symlink("images/vmlinuz-1", r.join("vmlinuz")).unwrap();
    std::fs::write(outside.path().join("secret"), b"not served").unwrap();
    symlink(outside.path().join("secret"), r.join("escape")).unwrap();
    let keydir = tempfile::tempdir().unwrap();
    let (key_path, key) = key_file(keydir.path());
    let mut agent = start(r, &key_path, &[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut v = validator(&key, Duration::from_millis(300));

    assert!(matches!(
        validate(&mut v, &sock, agent.addr, "vmlinuz", sha(b"kernel one")),
        Verdict::Current(s) if s.size == 10
    ));
    // Leaves the root: never vouched for.
    assert_eq!(
        validate(&mut v, &sock, agent.addr, "escape", sha(b"not served")),
        Verdict::Unknown
    );

    // The target rewritten in place: the link's answer moves with it (it
    // kept the old hash before issue 13).
    std::fs::write(r.join("images/vmlinuz-1"), b"kernel one, patched").unwrap();
    until(
        &mut v,
        &sock,
        &agent,
        "vmlinuz",
        sha(b"kernel one"),
        "the link after its target changed",
        |got| matches!(got, Verdict::Stale(s) if s.sha256 == sha(b"kernel one, patched")),
    );

    // Retargeted atomically (`ln -s` to a new name, renamed over the link).
    symlink("images/vmlinuz-2", r.join("vmlinuz.new")).unwrap();
    std::fs::rename(r.join("vmlinuz.new"), r.join("vmlinuz")).unwrap();
    until(
        &mut v,
        &sock,
        &agent,
        "vmlinuz",
        sha(b"kernel two"),
        "the link after it was retargeted",
        |got| matches!(got, Verdict::Current(s) if s.size == 10),
    );

    let lines = agent.lines();
    agent.signal("-TERM");
    let table = line_with(&lines, "bootcache-agent: table:", Duration::from_secs(10))
        .expect("the table line at exit");
    assert_eq!(field(&table, "links"), 1, "{table}");
    assert_eq!(field(&table, "links_outside_root"), 1, "{table}");
    assert!(agent.child.wait().unwrap().success());
}

/// Files of the big tree: 20 directories of 100 files of 64 KiB.
const DIRS: usize = 20;
const PER_DIR: usize = 100;
const SIZE: usize = 64 << 10;

/// Writes the tree; returns each file's name and SHA-256.
fn big_tree(root: &Path) -> Vec<(String, [u8; 32])> {
    let mut files = Vec::new();
    for d in 0..DIRS {
        std::fs::create_dir(root.join(format!("d{d:02}"))).unwrap();
        for f in 0..PER_DIR {
            let name = format!("d{d:02}/f{f:03}.img");
            let mut content = vec![(d * PER_DIR + f) as u8; SIZE];
            content[..name.len()].copy_from_slice(name.as_bytes());
            std::fs::write(root.join(&name), &content).unwrap();
            files.push((name, sha(&content)));
        }
    }
    files
}

/// SIGHUP starts a full rescan in the background; the questions asked
/// meanwhile are answered from the table as it was. Measured with the
/// agent's own timestamps of the scan (its `rescan ... started_ms=
/// finished_ms=` line, wall clock ms, taken by the scanning thread)
/// against the wall-clock times each question was asked and answered:
/// some questions were asked and answered entirely inside the scan, which
/// a scan holding the table would not allow (checked: with the write lock
/// held across the scan, none is). Latencies are printed, not asserted.
#[test]
fn a_rescan_of_a_big_tree_does_not_hold_answers() {
    let root = tempfile::tempdir().unwrap();
    let files = big_tree(root.path());
    let keydir = tempfile::tempdir().unwrap();
    let (key_path, key) = key_file(keydir.path());
    let mut agent = start(root.path(), &key_path, &[]);
    let lines = agent.lines();
    // The rescan every start runs once the watch is armed.
    line_with(&lines, "bootcache-agent: rescan", Duration::from_secs(120))
        .expect("the first rescan's line");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut v = validator(&key, Duration::from_secs(2));

    let hup_ms = unix_ms(SystemTime::now());
    agent.signal("-HUP");
    // (asked, answered) wall-clock ms, and latency.
    let mut answers: Vec<(u64, u64, Duration)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let report = loop {
        let (name, h) = &files[answers.len() % files.len()];
        let asked = unix_ms(SystemTime::now());
        let t = Instant::now();
        let got = validate(&mut v, &sock, agent.addr, name, *h);
        let took = t.elapsed();
        assert!(
            matches!(got, Verdict::Current(s) if s.size == SIZE as u64),
            "{name}: {got:?} during the rescan"
        );
        answers.push((asked, unix_ms(SystemTime::now()), took));
        if let Ok(l) = lines.try_recv() {
            if l.starts_with("bootcache-agent: rescan") && field(&l, "started_ms") >= hup_ms {
                break l;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no rescan line 120 s after SIGHUP"
        );
    };
    let (started, finished) = (field(&report, "started_ms"), field(&report, "finished_ms"));
    assert_eq!(field(&report, "files"), (DIRS * PER_DIR) as u64, "{report}");
    let during: Vec<Duration> = answers
        .iter()
        // Strictly inside, whole milliseconds: an answer in the scan's
        // first or last millisecond may have slipped in before or after it.
        .filter(|(asked, answered, _)| *asked > started && *answered < finished)
        .map(|(_, _, took)| *took)
        .collect();
    let mut lat: Vec<Duration> = answers.iter().map(|a| a.2).collect();
    lat.sort();
    println!(
        "rescan of {} files ({} MiB): {} ms; {} questions answered, {} of them asked and answered during the rescan; latency p50 {} µs, p99 {} µs, max {} µs",
        DIRS * PER_DIR,
        (DIRS * PER_DIR * SIZE) >> 20,
        finished - started,
        answers.len(),
        during.len(),
        lat[lat.len() / 2].as_micros(),
        lat[lat.len() * 99 / 100].as_micros(),
        lat[lat.len() - 1].as_micros(),
    );
    assert!(
        during.len() >= 5,
        "only {} answers inside a {} ms rescan",
        during.len(),
        finished - started
    );
}
