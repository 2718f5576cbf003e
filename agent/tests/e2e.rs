//! End to end: the real `bootcache-agent` binary on 127.0.0.1, a temp TFTP
//! root, and the library's `Validator` as the cache.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use bootcache_agent::replay::unix_ms;
use bootcache_agent::{
    encode_request, Envelope, Key, Request, RequestId, Validator, ValidatorConfig, Verdict,
};
use sha2::{Digest, Sha256};

const KEY_HEX: &str = "5f1d3c2b4a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f001";

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Kills the agent if a test fails half-way.
struct Agent {
    child: Child,
    stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(root: &Path, key_file: &Path) -> Agent {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bootcache-agent"))
        .args(["--root", root.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .args(["--key-file", key_file.to_str().unwrap()])
        .args(["--window", "30", "--debounce-ms", "50"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn bootcache-agent");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).expect("ready line");
    let addr = line
        .trim()
        .strip_prefix("bootcache-agent: listening on ")
        .unwrap_or_else(|| panic!("unexpected ready line {line:?}"))
        .parse()
        .unwrap();
    Agent {
        child,
        stdout,
        addr,
    }
}

/// Drives the sans-I/O validator over a real socket until it yields a verdict.
fn validate(
    v: &mut Validator,
    sock: &UdpSocket,
    agent: SocketAddr,
    file: &str,
    h: [u8; 32],
) -> Verdict {
    let id = v
        .validate(Instant::now(), SystemTime::now(), agent, file, h)
        .expect("room for a question");
    let mut buf = [0u8; 2048];
    loop {
        while let Some(tx) = v.poll_transmit() {
            sock.send_to(&tx.payload, tx.destination).unwrap();
        }
        if let Some((got, verdict)) = v.poll_result() {
            assert_eq!(got, id);
            return verdict;
        }
        let deadline = v.poll_timeout().expect("question pending");
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        sock.set_read_timeout(Some(wait)).unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                v.handle_datagram(Instant::now(), SystemTime::now(), &buf[..n]);
            }
            Err(_) => v.handle_timeout(Instant::now(), SystemTime::now()),
        }
    }
}

fn expect_silence(sock: &UdpSocket, what: &str) {
    sock.set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    let mut buf = [0u8; 2048];
    if let Ok((n, _)) = sock.recv_from(&mut buf) {
        panic!("{what}: got a {n}-byte answer, expected none");
    }
}

#[test]
fn agent_answers_follows_changes_and_ignores_forgeries() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("boot")).unwrap();
    std::fs::write(root.path().join("pxelinux.0"), b"nbp v1").unwrap();
    std::fs::write(root.path().join("boot/vmlinuz"), b"kernel").unwrap();
    let keydir = tempfile::tempdir().unwrap();
    let key_file = keydir.path().join("agent.key");
    std::fs::write(&key_file, format!("{KEY_HEX}\n")).unwrap();
    let key = Key::from_file_contents(KEY_HEX.as_bytes()).unwrap();

    let mut agent = start(root.path(), &key_file);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let config = ValidatorConfig {
        retry_interval: Duration::from_millis(300),
        max_tries: 3,
        ttl: Duration::ZERO, // every validation asks the agent
        ..Default::default()
    };
    let mut v = Validator::new(key.clone(), config, bootcache_agent::random_seed());
    let a = agent.addr;

    assert!(matches!(
        validate(&mut v, &sock, a, "/pxelinux.0", sha(b"nbp v1")),
        Verdict::Current(s) if s.size == 6
    ));
    assert!(matches!(
        validate(&mut v, &sock, a, "boot/vmlinuz", sha(b"old kernel")),
        Verdict::Stale(s) if s.sha256 == sha(b"kernel")
    ));
    assert_eq!(
        validate(&mut v, &sock, a, "missing.efi", sha(b"x")),
        Verdict::Unknown
    );
    assert_eq!(
        validate(&mut v, &sock, a, "../etc/passwd", sha(b"x")),
        Verdict::Unknown
    );

    // The file changes on the server: the verdict turns stale.
    std::fs::write(root.path().join("pxelinux.0"), b"nbp v2, longer").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match validate(&mut v, &sock, a, "pxelinux.0", sha(b"nbp v1")) {
            Verdict::Stale(s) => {
                assert_eq!(s.sha256, sha(b"nbp v2, longer"));
                assert_eq!(s.size, 14);
                break;
            }
            other => assert!(
                Instant::now() < deadline,
                "still {other:?} 5 s after the change"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // Unauthenticated traffic gets no answer.
    let raw = |nonce: u64, k: &Key, ts: SystemTime| {
        encode_request(
            &Request {
                envelope: Envelope {
                    timestamp_ms: unix_ms(ts),
                    nonce,
                    request_id: RequestId(77),
                },
                file: "pxelinux.0".into(),
                sha256: sha(b"nbp v1"),
            },
            k,
        )
    };
    sock.send_to(b"not a bootcache datagram", a).unwrap();
    expect_silence(&sock, "garbage");
    let wrong = Key::new(vec![0x42; 32]).unwrap();
    sock.send_to(&raw(1, &wrong, SystemTime::now()), a).unwrap();
    expect_silence(&sock, "wrong key");
    let old = SystemTime::now() - Duration::from_secs(120);
    sock.send_to(&raw(2, &key, old), a).unwrap();
    expect_silence(&sock, "old timestamp");

    // A replayed authentic request is answered once.
    let once = raw(3, &key, SystemTime::now());
    sock.send_to(&once, a).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = sock.recv_from(&mut buf).expect("first copy is answered");
    let resp = bootcache_agent::decode_response(&buf[..n], &key).unwrap();
    assert_eq!(resp.envelope.request_id, RequestId(77));
    sock.send_to(&once, a).unwrap();
    expect_silence(&sock, "replay");

    // SIGTERM: counters printed, clean exit.
    let status = Command::new("kill")
        .args(["-TERM", &agent.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    agent.stdout.read_to_string(&mut rest).unwrap();
    let exit = agent.child.wait().unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(rest.contains("counters:"), "{rest}");
    assert!(rest.contains("bad_mac=1"), "{rest}");
    assert!(rest.contains("malformed=1"), "{rest}");
    assert!(rest.contains("outside_window=1"), "{rest}");
    assert!(rest.contains("replayed=1"), "{rest}");
}

#[test]
fn bad_key_file_is_one_clear_line() {
    let root = tempfile::tempdir().unwrap();
    let key_file = root.path().join("short.key");
    std::fs::write(&key_file, "abcd\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bootcache-agent"))
        .args(["--root", root.path().to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .args(["--key-file", key_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--key-file") && err.contains("at least 32"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_bootcache-agent"))
        .args(["--root", root.path().join("nope").to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .args([
            "--key-file",
            root.path().join("missing.key").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("cannot read --key-file"), "{err}");
}
