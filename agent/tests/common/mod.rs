//! What the agent's integration tests share: the real `bootcache-agent`
//! binary on 127.0.0.1 and the library's `Validator` as the cache.

#![allow(dead_code)] // each test file uses its part

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use bootcache_agent::{Key, Validator, ValidatorConfig, Verdict};
use sha2::{Digest, Sha256};

/// The shared key, hex, as a key file holds it.
pub const KEY_HEX: &str = "5f1d3c2b4a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f001";

/// SHA-256 of `b`.
pub fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Kills the agent if a test fails half-way.
pub struct Agent {
    /// The agent process.
    pub child: Child,
    /// Its stdout after the ready line (until [`Agent::lines`] takes it).
    pub stdout: Option<BufReader<ChildStdout>>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Agent {
    /// Its stdout lines as they come, read on a thread of their own.
    pub fn lines(&mut self) -> mpsc::Receiver<String> {
        let stdout = self.stdout.take().expect("stdout not taken yet");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    }

    /// Sends the agent a signal (`-HUP`, `-TERM`).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} failed");
    }
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
        stdout: Some(stdout),
        addr,
    }
}

/// A key file holding [`KEY_HEX`] in `dir`, and the key.
pub fn key_file(dir: &Path) -> (std::path::PathBuf, Key) {
    let path = dir.join("agent.key");
    std::fs::write(&path, format!("{KEY_HEX}\n")).unwrap();
    (path, Key::from_file_contents(KEY_HEX.as_bytes()).unwrap())
}

/// A validator that asks the agent every time (no answer cache).
pub fn validator(key: &Key, retry_interval: Duration) -> Validator {
    let config = ValidatorConfig {
        retry_interval,
        max_tries: 3,
        ttl: Duration::ZERO,
        ..Default::default()
    };
    Validator::new(key.clone(), config, bootcache_agent::random_seed())
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
