//! A real `bootcache-agent` beside a benchmark's simulated boot server: it
//! hashes the same files from a directory and answers bootcache's
//! freshness questions on loopback, so a benchmark pays for validation as a
//! deployment does and counts the agent's bytes as origin traffic.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// A running agent.
pub struct Agent {
    child: Child,
    log: PathBuf,
    /// Where it listens (loopback, a port the kernel chose).
    pub address: std::net::SocketAddr,
    /// The shared key's file (hex).
    pub key_file: PathBuf,
}

/// What the agent said when it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentReport {
    /// Datagrams received (questions, valid or not).
    pub received: u64,
    /// Answers "current".
    pub current: u64,
    /// Answers "stale" or "unknown".
    pub not_current: u64,
    /// UDP payload bytes received.
    pub bytes_received: u64,
    /// UDP payload bytes sent.
    pub bytes_sent: u64,
}

impl AgentReport {
    /// Both directions' bytes: what validation cost the boot server's link.
    pub fn bytes(&self) -> u64 {
        self.bytes_received + self.bytes_sent
    }
}

/// The agent binary: `$BOOTCACHE_AGENT_BIN`, else next to `bootcache_bin`.
pub fn agent_bin(bootcache_bin: &Path) -> PathBuf {
    std::env::var_os("BOOTCACHE_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            bootcache_bin
                .parent()
                .unwrap_or(Path::new("."))
                .join("bootcache-agent")
        })
}

impl Agent {
    /// Writes `files` (name → bytes) under `dir/root`, a fresh key in
    /// `dir/agent.key`, and starts `bin` on 127.0.0.1 with them; returns
    /// once it listens.
    pub fn start(bin: &Path, dir: &Path, files: &[(&str, &[u8])]) -> Result<Agent> {
        if !bin.exists() {
            bail!(
                "{} missing: build it (cargo build -p bootcache-agent)",
                bin.display()
            );
        }
        let root = dir.join("root");
        let _ = std::fs::remove_dir_all(&root);
        for (name, bytes) in files {
            let p = root.join(name);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
        }
        let key_file = dir.join("agent.key");
        let mut key = [0u8; 32];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .context("reading /dev/urandom")?;
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&key_file, hex).context("writing the agent key")?;
        let log = dir.join("agent.log");
        let out = std::fs::File::create(&log).context("creating the agent log")?;
        let child = Command::new(bin)
            .arg("--root")
            .arg(&root)
            .args(["--listen", "127.0.0.1:0", "--key-file"])
            .arg(&key_file)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut agent = Agent {
            child,
            log,
            address: ([127, 0, 0, 1], 0).into(),
            key_file,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&agent.log).unwrap_or_default();
            if let Some(addr) = text
                .lines()
                .find_map(|l| l.strip_prefix("bootcache-agent: listening on "))
            {
                agent.address = addr.trim().parse().context("the agent's ready line")?;
                return Ok(agent);
            }
            if let Ok(Some(st)) = agent.child.try_wait() {
                bail!("bootcache-agent exited ({st}): {text}");
            }
            if Instant::now() > deadline {
                bail!("bootcache-agent did not start in 30 s: {text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `[agent]` table for bootcache's configuration.
    pub fn config(&self) -> String {
        format!(
            "[agent]\naddress = \"{}\"\nkey_file = \"{}\"\n",
            self.address,
            self.key_file.display()
        )
    }

    /// Stops it (SIGINT) and reads its final counters.
    pub fn stop(mut self) -> Result<AgentReport> {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("bootcache-agent did not stop in 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let text = std::fs::read_to_string(&self.log).context("reading the agent log")?;
        parse_report(&text).ok_or_else(|| anyhow!("no final counters in the agent's log: {text}"))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The final `counters:`, `answers:` and `bytes:` lines of the agent's output.
fn parse_report(text: &str) -> Option<AgentReport> {
    let field = |line: &str, key: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
    };
    let last = |prefix: &str| text.lines().rev().find_map(|l| l.strip_prefix(prefix));
    let counters = last("bootcache-agent: counters: ")?;
    let answers = last("bootcache-agent: answers: ")?;
    let bytes = last("bootcache-agent: bytes: ")?;
    Some(AgentReport {
        received: field(counters, "received")?,
        current: field(answers, "current")?,
        not_current: field(answers, "stale")? + field(answers, "unknown")?,
        bytes_received: field(bytes, "received")?,
        bytes_sent: field(bytes, "sent")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_final_lines() {
        let text = "bootcache-agent: listening on 127.0.0.1:5\n\
            bootcache-agent: counters: received=4 accepted=3 dropped=1 (malformed=1 bad_mac=0 outside_window=0 replayed=0 replay_cache_full=0 unexpected=0)\n\
            bootcache-agent: answers: current=2 stale=1 unknown=0\n\
            bootcache-agent: bytes: received=400 sent=300\n";
        let r = parse_report(text).unwrap();
        assert_eq!(
            r,
            AgentReport {
                received: 4,
                current: 2,
                not_current: 1,
                bytes_received: 400,
                bytes_sent: 300
            }
        );
        assert_eq!(r.bytes(), 700);
        assert!(parse_report("bootcache-agent: listening on x\n").is_none());
    }
}
