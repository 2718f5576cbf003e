//! Running `bootcache` as a child process on virtio-user ports and reading
//! its statistics: every bootcache the bench starts prints them as JSON
//! (`--stats-json`), read back through the metrics crate's one reader.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bootcache_metrics::Reader;

/// Per-port counters of bootcache's last statistics object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinalPortStats {
    /// Port id.
    pub port: u16,
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames transmitted.
    pub tx_packets: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Frames dropped because TX could not send them.
    pub tx_dropped: u64,
}

/// The ports (client side, then server side; port 0 is the client side)
/// of the last statistics object in `stdout` (none if there is none).
pub fn parse_final_stats(stdout: &str) -> Vec<FinalPortStats> {
    let Some(r) = Reader::last(stdout) else {
        return Vec::new();
    };
    ["client", "server"]
        .iter()
        .enumerate()
        .filter(|(_, side)| r.has(side))
        .map(|(port, side)| {
            let v = |k| r.get(side, k).unwrap_or(0);
            FinalPortStats {
                port: port as u16,
                rx_packets: v("rx"),
                rx_bytes: v("rx_bytes"),
                tx_packets: v("tx"),
                tx_bytes: v("tx_bytes"),
                tx_dropped: v("drop"),
            }
        })
        .collect()
}

/// A counter of bootcache's last statistics object in `stdout`: `section`
/// as in the stats line (`serve`, `files`, `transfers`, `redirect`), `key`
/// the counter in it; a per-lcore list reads as its sum.
pub fn stat(stdout: &str, section: &str, key: &str) -> Option<u64> {
    Reader::last(stdout)?.get(section, key)
}

/// The `bootcache` binary next to the running executable (target/<profile>/),
/// or `$BOOTCACHE_BIN`.
pub fn default_bootcache_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BOOTCACHE_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    // Test binaries live one level deeper, in target/<profile>/deps.
    [dir.join("bootcache"), dir.join("../bootcache")]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| dir.join("bootcache"))
}

/// A file for a child's output at `path`: our handle and the child's. Unless
/// `keep`, the name is removed at once (the handles keep the file).
fn output_file(path: &Path, keep: bool) -> Result<(std::fs::File, std::fs::File)> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let child = f.try_clone().context("duplicating an output file handle")?;
    if !keep {
        let _ = std::fs::remove_file(path);
    }
    Ok((f, child))
}

/// Everything written to `f` so far, read without moving the offset the
/// child writes at.
fn read_output(f: &std::fs::File) -> String {
    use std::os::unix::fs::FileExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match f.read_at(&mut chunk, buf.len() as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A running bootcache child.
pub struct Bootcache {
    child: Child,
    /// Its DPDK `--file-prefix` (for dpdk-telemetry.py -f).
    pub file_prefix: String,
    /// Where its stdout and stderr go: files, not pipes, since nobody reads
    /// while it runs and a full pipe would stop it at its next log line.
    /// Read through these handles (with `pread`: the child shares their
    /// file offset), so the output survives whatever happens to the paths.
    output: [std::fs::File; 2],
}

/// Output of a bootcache run that has ended.
#[derive(Debug)]
pub struct Finished {
    /// Exit code (None when killed by a signal).
    pub code: Option<i32>,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
    /// Parsed final statistics, by port.
    pub ports: Vec<FinalPortStats>,
}

impl Bootcache {
    /// Starts `bin` with two virtio-user ports on `sockets` (client, server),
    /// lcores `lcores` and `app_args` after `--`.
    pub fn spawn(
        bin: &Path,
        sockets: [&Path; 2],
        file_prefix: &str,
        lcores: &str,
        app_args: &[&str],
    ) -> Result<Bootcache> {
        let mut cmd = Command::new(bin);
        cmd.args([
            "--lcores",
            lcores,
            "--file-prefix",
            file_prefix,
            "--single-file-segments",
            "--no-pci",
        ])
        .args(["-m", "256", "--log-level", "lib.eal:warning"]);
        for (i, s) in sockets.iter().enumerate() {
            cmd.arg("--vdev").arg(format!(
                "net_virtio_user{i},path={},queues=1,queue_size=1024",
                s.display()
            ));
        }
        cmd.arg("--").args(app_args).arg("--stats-json");
        let dir = std::env::temp_dir();
        let (out, child_out) =
            output_file(&dir.join(format!("bootcache-{file_prefix}.stdout")), false)?;
        let (err, child_err) =
            output_file(&dir.join(format!("bootcache-{file_prefix}.stderr")), false)?;
        let output = [out, err];
        cmd.stdin(Stdio::null()).stdout(child_out).stderr(child_err);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Bootcache {
            child,
            file_prefix: file_prefix.to_string(),
            output,
        })
    }

    /// Starts `bin` with its own EAL options `eal_args` (ports, memory)
    /// besides lcores and file prefix, `app_args` after `--`, and its stdout
    /// and stderr written to `log_dir/bootcache.out` and `bootcache.err`.
    pub fn spawn_logged(
        bin: &Path,
        file_prefix: &str,
        lcores: &str,
        eal_args: &[String],
        app_args: &[String],
        log_dir: &Path,
    ) -> Result<Bootcache> {
        let logs = [log_dir.join("bootcache.out"), log_dir.join("bootcache.err")];
        let (out_file, out) = output_file(&logs[0], true)?;
        let (err_file, err) = output_file(&logs[1], true)?;
        let child = Command::new(bin)
            .args(["--lcores", lcores, "--file-prefix", file_prefix])
            .args(eal_args)
            .arg("--")
            .args(app_args)
            .arg("--stats-json")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Bootcache {
            child,
            file_prefix: file_prefix.to_string(),
            output: [out_file, err_file],
        })
    }

    /// What it has written to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        read_output(&self.output[1])
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while it runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGINT (as Ctrl-C would) and collects its output.
    pub fn stop(mut self, timeout: Duration) -> Result<Finished> {
        if self.is_running() {
            let ok = Command::new("kill")
                .args(["-INT", &self.child.id().to_string()])
                .status()
                .context("running kill")?
                .success();
            if !ok {
                bail!("kill -INT {} failed", self.child.id());
            }
        }
        self.wait(timeout)
    }

    /// Waits for it to exit by itself (killing it after `timeout`).
    pub fn wait(mut self, timeout: Duration) -> Result<Finished> {
        let start = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait()? {
                break st;
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "bootcache (pid {}) did not exit within {timeout:?}",
                    self.child.id()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let [stdout, stderr] = [read_output(&self.output[0]), read_output(&self.output[1])];
        remove_hugepage_files(&self.file_prefix);
        let ports = parse_final_stats(&stdout);
        Ok(Finished {
            code: status.code(),
            stdout,
            stderr,
            ports,
        })
    }
}

impl Drop for Bootcache {
    fn drop(&mut self) {
        // Never leave a busy-polling child behind (e.g. when a test fails).
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        remove_hugepage_files(&self.file_prefix);
    }
}

/// Removes a finished DPDK process's hugepage files and runtime directory.
/// virtio-user needs `--single-file-segments`, which DPDK 22.11 will not
/// combine with `--huge-unlink`, so its page files outlive the process.
pub fn remove_hugepage_files(file_prefix: &str) {
    if file_prefix.is_empty() || file_prefix.contains('/') {
        return;
    }
    if let Ok(dir) = std::fs::read_dir("/dev/hugepages") {
        for e in dir.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{file_prefix}map_"))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{file_prefix}"));
}

/// testpmd's options (after `--`) for io forwarding in bootcache's shape:
/// `fwd` forwarding cores (one RX/TX queue pair per port each), 1024
/// descriptors, bursts of 32, started at once and not interactive.
pub fn testpmd_io_args(fwd: usize) -> Vec<String> {
    testpmd_io_args_burst(fwd, 32)
}

/// [`testpmd_io_args`] with `burst` frames per rx/tx burst (`--burst`).
pub fn testpmd_io_args_burst(fwd: usize, burst: u16) -> Vec<String> {
    let mut v: Vec<String> = [
        "--forward-mode=io",
        "--auto-start",
        // Non-interactive testpmd without a stats period waits for a key
        // on stdin; with one it runs until SIGINT.
        "--stats-period=3600",
    ]
    .map(String::from)
    .to_vec();
    v.push(format!("--nb-cores={fwd}"));
    if fwd > 1 {
        v.push(format!("--rxq={fwd}"));
        v.push(format!("--txq={fwd}"));
    }
    v.extend(["--rxd=1024", "--txd=1024"].map(String::from));
    v.push(format!("--burst={burst}"));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_final_statistics_lines() {
        let out = "bootcache: final statistics\n\
            {\"unix_ms\":1,\"client\":{\"rx\":5,\"rx_bytes\":300,\"tx\":4,\"tx_bytes\":256,\"drop\":1},\
            \"server\":{\"rx\":4,\"rx_bytes\":256,\"tx\":5,\"tx_bytes\":300,\"drop\":0},\"serve\":{\"hits\":3}}\n";
        assert_eq!(stat(out, "serve", "hits"), Some(3));
        assert_eq!(stat(out, "serve", "misses"), None);
        assert!(parse_final_stats("no statistics\n").is_empty());
        let p = parse_final_stats(out);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].rx_packets, 5);
        assert_eq!(p[0].tx_dropped, 1);
        assert_eq!(p[1].port, 1);
        assert_eq!(p[1].tx_bytes, 300);
    }
}
