//! End to end: the real `bootcache-agent` binary on 127.0.0.1, a temp TFTP
//! root, and the library's `Validator` as the cache.

use std::io::Read;
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use bootcache_agent::replay::unix_ms;
use bootcache_agent::{encode_request, Envelope, Key, Request, RequestId, Verdict};

mod common;

use common::{key_file, sha, start, validate, validator};

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
    let (key_file, key) = key_file(keydir.path());

    let mut agent = start(root.path(), &key_file, &[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut v = validator(&key, Duration::from_millis(300));
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
    agent.signal("-TERM");
    let mut rest = String::new();
    agent
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut rest)
        .unwrap();
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
