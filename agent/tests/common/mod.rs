//! What the agent's integration tests share: the real `bootcache-agent`
//! binary on 127.0.0.1 and the library's `Validator` as the cache.

#![allow(dead_code)] // each test file uses its part

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use bootcache_agent::{Validator, Verdict};
use sha2::{Digest, Sha256};

/// The shared key, hex, as a key file holds it.
pub const KEY_HEX: &str = "5f1d3c2b4a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f001";

/// SHA-256 of `b`.
pub fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Kills the agent if a test fails half-way.
pub struct Agent {
    pub child: Child,
    pub stdout: BufReader<ChildStdout>,
    pub addr: SocketAddr,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the agent on `root` with `extra` options and waits for its ready line.
pub fn start(root: &Path, key_file: &Path, extra: &[&str]) -> Agent {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bootcache-agent"))
        .args(["--root", root.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .args(["--key-file", key_file.to_str().unwrap()])
        .args(["--window", "30", "--debounce-ms", "50"])
        .args(extra)
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
pub fn validate(
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
