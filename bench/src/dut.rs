//! The device under test on the harness's virtio-user side: bootcache, or
//! `dpdk-testpmd --forward-mode=io` as the baseline, with the same EAL
//! options (lcores, memory, descriptors, burst size).

pub use bootcache_testbed::process::testpmd_io_args;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use bootcache_testbed::harness::Harness;
use bootcache_testbed::process::remove_hugepage_files;

/// Which device bridges the harness's two ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dut {
    /// The bootcache binary.
    Bootcache,
    /// `dpdk-testpmd --forward-mode=io`: plain forwarding, the reference.
    Testpmd,
}

impl Dut {
    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Dut::Bootcache => "bootcache",
            Dut::Testpmd => "testpmd-io",
        }
    }
}

/// How to start the device.
#[derive(Debug, Clone)]
pub struct DutConfig {
    /// The bootcache binary.
    pub bootcache_bin: PathBuf,
    /// EAL `--lcores` (the main lcore first; the forwarding lcore second).
    pub lcores: String,
    /// EAL `-m` megabytes.
    pub memory_mb: u32,
    /// bootcache's options after `--` (ignored for testpmd).
    pub bootcache_args: Vec<String>,
}

/// A running device under test.
pub struct DutProcess {
    child: Child,
    /// Which device.
    pub dut: Dut,
    /// Its DPDK file prefix.
    pub prefix: String,
    stdout_file: PathBuf,
}

/// Checks that hugepages are reserved and mounted; the message names the fix.
pub fn check_hugepages() -> Result<()> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    match hugepage_problem(&meminfo, &mounts) {
        Some(p) => bail!("{p}"),
        None => Ok(()),
    }
}

/// What is wrong with the hugepages, from `/proc/meminfo` and `/proc/mounts`
/// text: none reserved, too few free (the scenarios need 1 GiB), or
/// hugetlbfs not mounted.
pub fn hugepage_problem(meminfo: &str, mounts: &str) -> Option<String> {
    let field = |k: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (total, free) = (field("HugePages_Total:"), field("HugePages_Free:"));
    let page_kb = field("Hugepagesize:").max(1);
    if total == 0 {
        return Some(
            "no hugepages reserved: run scripts/setup (it reserves 2 GiB of 2 MiB pages)".into(),
        );
    }
    let need = (1u64 << 20) / page_kb; // 1 GiB
    if free < need {
        return Some(format!(
            "only {free} of {total} hugepages free, the benchmarks need {need} (1 GiB): run scripts/setup, or stop other DPDK processes"
        ));
    }
    let mounted = mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"));
    if !mounted {
        return Some("hugetlbfs is not mounted: run scripts/setup".into());
    }
    None
}

impl DutProcess {
    /// Starts `dut` on the harness's sockets, waits until both links are up
    /// and drops what arrived before.
    pub fn start(h: &Harness, dut: Dut, cfg: &DutConfig, prefix: &str) -> Result<DutProcess> {
        let mut cmd = match dut {
            Dut::Bootcache => Command::new(&cfg.bootcache_bin),
            Dut::Testpmd => Command::new("dpdk-testpmd"),
        };
        cmd.args(["--lcores", &cfg.lcores, "--file-prefix", prefix, "--no-pci"])
            .args(["-m", &cfg.memory_mb.to_string(), "--single-file-segments"])
            .args(["--log-level", "lib.eal:warning"]);
        for (i, s) in h.sockets.iter().enumerate() {
            cmd.arg("--vdev").arg(format!(
                "net_virtio_user{i},path={},queues=1,queue_size=1024",
                s.display()
            ));
        }
        cmd.arg("--");
        match dut {
            Dut::Bootcache => {
                // Statistics as JSON, read back with `process::stat`.
                cmd.args(&cfg.bootcache_args).arg("--stats-json");
            }
            Dut::Testpmd => {
                cmd.args(testpmd_io_args(1));
            }
        }
        let stdout_file = std::env::temp_dir().join(format!("{prefix}.out"));
        let out = std::fs::File::create(&stdout_file)
            .with_context(|| format!("creating {}", stdout_file.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::null())
            .env("RUST_LOG", "warn");
        let child = cmd.spawn().with_context(|| match dut {
            Dut::Bootcache => format!("starting {}", cfg.bootcache_bin.display()),
            Dut::Testpmd => "starting dpdk-testpmd (run scripts/setup)".to_string(),
        })?;
        let mut p = DutProcess {
            child,
            dut,
            prefix: prefix.to_string(),
            stdout_file,
        };
        let up = h.wait_link_up(Duration::from_secs(30), || {
            matches!(p.child.try_wait(), Ok(None))
        });
        if let Err(e) = up {
            let out = p.output();
            bail!(
                "{}: {e}; it printed: {}",
                dut.name(),
                out.lines().last().unwrap_or("")
            );
        }
        p.wait_forwarding(h)?;
        Ok(p)
    }

    /// Waits until a frame sent on the client side comes out of the server
    /// side (a device forwards only some time after its link is up), then
    /// drops whatever arrived.
    fn wait_forwarding(&mut self, h: &Harness) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut frame = Vec::new();
        bootcache_testbed::frames::test_frame(0, 0, 64, &mut frame);
        let mut rx = dpdk::Burst::new();
        while Instant::now() < deadline {
            let mut tx = dpdk::Burst::new();
            let _ = tx.push(dpdk::Mbuf::from_bytes(&h.pool, &frame)?);
            h.ports[0].tx_burst(0, &mut tx);
            let until = Instant::now() + Duration::from_millis(20);
            while Instant::now() < until {
                if h.ports[1].rx_burst(0, &mut rx) > 0 {
                    rx.free_all();
                    std::thread::sleep(Duration::from_millis(20));
                    h.drain();
                    return Ok(());
                }
            }
            if !matches!(self.child.try_wait(), Ok(None)) {
                bail!("{} exited while starting", self.dut.name());
            }
        }
        bail!(
            "{} does not forward 20 s after its link came up",
            self.dut.name()
        )
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.stdout_file).unwrap_or_default()
    }

    /// Stops the device as Ctrl-C would (killing it after 10 s), removes its
    /// hugepage files, waits for the harness's links to go down, and returns
    /// what it printed (bootcache: its final statistics).
    pub fn stop(mut self, h: &Harness) -> Result<String> {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let out = self.output();
        h.wait_link_down(Duration::from_secs(10))?;
        Ok(out)
    }
}

impl Drop for DutProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        remove_hugepage_files(&self.prefix);
        let _ = std::fs::remove_file(&self.stdout_file);
    }
}

/// Writes a bootcache configuration to `path`: the boot server 10.77.0.1,
/// the cache in `cache` (emptied first), then `rest` (more settings and
/// `[limits]`); returns bootcache's arguments for it.
pub fn write_config(path: &Path, cache: &Path, rest: &str) -> Result<Vec<String>> {
    let _ = std::fs::remove_dir_all(cache);
    let text = format!(
        "servers = [\"10.77.0.1\"]\ncache_dir = \"{}\"\n{rest}",
        cache.display()
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(vec!["--config".into(), path.display().to_string()])
}

/// The bootcache binary next to this executable, or `$BOOTCACHE_BIN`, checked.
pub fn bootcache_bin(explicit: Option<&Path>) -> Result<PathBuf> {
    let bin = explicit
        .map(Path::to_path_buf)
        .unwrap_or_else(bootcache_testbed::process::default_bootcache_bin);
    if !bin.exists() {
        bail!(
            "no bootcache binary at {} (cargo build --release, or --bootcache PATH)",
            bin.display()
        );
    }
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hugepage_problems_name_scripts_setup() {
        let mounts = "hugetlbfs /dev/hugepages hugetlbfs rw,relatime 0 0\n";
        let mem = |total: u32, free: u32| {
            format!("MemTotal: 1 kB\nHugePages_Total: {total}\nHugePages_Free: {free}\nHugepagesize: 2048 kB\n")
        };
        assert_eq!(hugepage_problem(&mem(1024, 1024), mounts), None);
        for (m, mnt) in [
            (mem(0, 0), mounts),
            (mem(1024, 100), mounts),
            (mem(1024, 1024), ""),
        ] {
            let p = hugepage_problem(&m, mnt).expect("a problem");
            assert!(p.contains("scripts/setup"), "{p}");
            assert!(!p.contains('\n'), "one line: {p}");
        }
    }
}
