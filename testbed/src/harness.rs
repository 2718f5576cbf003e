//! The vhost side of the wire: two `net_vhost` ports in this process whose
//! sockets a `bootcache` child opens as virtio-user ports.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dpdk::{Burst, Eal, Mbuf, Mempool, Port, PortConfig};

use crate::frames::test_frame;
use crate::process::{Bootcache, Finished};

/// Two vhost-user ports: index 0 faces bootcache's client-side port 0,
/// index 1 its server-side port 1.
pub struct Harness {
    /// The two vhost ports.
    pub ports: [Port; 2],
    /// The vhost-user socket paths bootcache must open, by side.
    pub sockets: [PathBuf; 2],
    /// Buffers for injected frames.
    pub pool: Mempool,
    /// This process's DPDK file prefix.
    pub file_prefix: String,
    _eal: Eal,
}

/// What one directed transfer saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferReport {
    /// Frames injected.
    pub sent: u64,
    /// Bytes injected.
    pub sent_bytes: u64,
    /// Frames that arrived on the far side.
    pub received: u64,
    /// Bytes that arrived.
    pub received_bytes: u64,
    /// Arrived frames that differed from what was sent at that position
    /// (first few indices kept).
    pub mismatches: Vec<u64>,
    /// Number of mismatching frames.
    pub mismatch_count: u64,
    /// Wall time from first send to last receive.
    pub elapsed: Duration,
}

impl TransferReport {
    /// Received frames per second.
    pub fn pps(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The test process's one harness (one EAL per process), started on first
/// use with its sockets in a temporary directory named after `tag`; tests
/// take turns through the lock.
pub fn shared(tag: &str) -> std::sync::MutexGuard<'static, Harness> {
    static H: std::sync::OnceLock<std::sync::Mutex<Harness>> = std::sync::OnceLock::new();
    let m = H.get_or_init(|| {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("bootcache-{tag}-{pid}"));
        std::fs::create_dir_all(&dir).expect("harness socket directory");
        let h = Harness::start(&dir, &format!("bc{tag}-h-{pid}"), "0@0")
            .expect("harness start (hugepages reserved? run scripts/setup)");
        std::sync::Mutex::new(h)
    });
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Test assertion: every frame of every direction crossed, byte-identical
/// and in order.
pub fn assert_crossed(what: &str, reps: &[TransferReport]) {
    for (side, r) in reps.iter().enumerate() {
        assert_eq!(
            r.received,
            r.sent,
            "{what}: from side {side}, {} frames lost",
            r.sent - r.received
        );
        assert_eq!(
            r.mismatch_count, 0,
            "{what}: from side {side}, frames changed or reordered at {:?}",
            r.mismatches
        );
    }
}

/// A fresh directory for one end-to-end test under the temp dir (named by
/// `tag` and this process, never a harness's socket directory), holding a
/// configuration for `server` with its cache in `cache/` and `extra` TOML
/// after it. Returns (cache directory, configuration file).
pub fn test_config(tag: &str, server: Ipv4Addr, extra: &str) -> Result<(PathBuf, PathBuf)> {
    let dir = std::env::temp_dir().join(format!("bootcache-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let cache = dir.join("cache");
    let cfg = dir.join("bootcache.toml");
    let text = format!(
        "servers = [\"{server}\"]\ncache_dir = \"{}\"\n{extra}",
        cache.display()
    );
    std::fs::write(&cfg, text).with_context(|| format!("writing {}", cfg.display()))?;
    Ok((cache, cfg))
}

/// Waits until the cache in `cache_dir` lists `name` from `server`, `size`
/// bytes long: publishing is asynchronous (the slow path writes the index
/// after the transfer's last block has crossed). Reads the index as
/// `bootcache cache ls` does, changing nothing; fails after `timeout`.
pub fn wait_cached(
    cache_dir: &Path,
    server: Ipv4Addr,
    name: &str,
    size: u64,
    timeout: Duration,
) -> Result<()> {
    let start = Instant::now();
    loop {
        // A missing or half-replaced index reads as "not yet".
        let entries = slowpath::filestore::read_index(cache_dir).unwrap_or_default();
        if entries
            .iter()
            .any(|e| e.server == server && e.name == name && e.size == size)
        {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!(
                "{name} ({size} bytes from {server}) not in {}'s index after {timeout:?}; it lists {:?}",
                cache_dir.display(),
                entries.iter().map(|e| (&e.name, e.size)).collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Harness {
    /// Starts `bootcache` with `--config cfg` on this harness's ports
    /// (file prefix from `tag` and this process).
    pub fn start_with_config(&self, bootcache: &Path, tag: &str, cfg: &Path) -> Result<Bootcache> {
        let prefix = format!("bcx-{tag}-{}", std::process::id());
        let cfg = cfg.to_str().context("configuration path is not UTF-8")?;
        self.start_bootcache(bootcache, &prefix, &["--config", cfg])
    }

    /// A whole scripted TFTP read of `content` as `name` from `server` by
    /// `client` (its TID `client_port`, blksize 1428, lock-step) through the
    /// bridge, every frame crossing; returns once the cache in `cache`
    /// lists the file (bootcache caching it, as a cold read does).
    pub fn cold_fill(
        &self,
        cache: &Path,
        client: std::net::SocketAddrV4,
        server: Ipv4Addr,
        name: &str,
        content: &[u8],
    ) -> Result<()> {
        let ep = crate::scenario::Endpoints {
            client,
            server,
            server_tid: 40000 + client.port() % 1000,
        };
        let shape = crate::scenario::TransferShape {
            blksize: Some(1428),
            windowsize: 1,
            ..Default::default()
        };
        let script = crate::scenario::tftp_read(ep, name, content, shape);
        let reps = self.replay(&script, 256, Duration::from_secs(3))?;
        for (side, r) in reps.iter().enumerate() {
            if r.received != r.sent || r.mismatch_count != 0 {
                bail!(
                    "cold read of {name}: from side {side}, {} of {} frames arrived, {} differed",
                    r.received,
                    r.sent,
                    r.mismatch_count
                );
            }
        }
        wait_cached(
            cache,
            server,
            name,
            content.len() as u64,
            Duration::from_secs(10),
        )
    }

    /// Initialises the EAL in this process (once) with two vhost ports whose
    /// sockets are created in `dir`, and starts them.
    pub fn start(dir: &Path, file_prefix: &str, lcores: &str) -> Result<Harness> {
        let sockets = [dir.join("client.sock"), dir.join("server.sock")];
        for s in &sockets {
            let _ = std::fs::remove_file(s);
        }
        let mut args: Vec<String> = [
            "bootcache-harness",
            "--lcores",
            lcores,
            "--file-prefix",
            file_prefix,
            "--huge-unlink",
            "--no-pci",
            "-m",
            "256",
            "--log-level",
            "lib.eal:warning",
            "--log-level",
            "lib.vhost.config:warning",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (i, s) in sockets.iter().enumerate() {
            args.push("--vdev".into());
            args.push(format!("net_vhost{i},iface={},queues=1", s.display()));
        }
        let eal = Eal::init(args).context("harness EAL init")?.eal;
        let pool = Mempool::create("harness_pool", 16383, 256, 2048 + 128, -1)?;
        let ports = [Port::new(0)?, Port::new(1)?];
        for p in &ports {
            p.configure(&PortConfig::default(), &pool)?;
            p.start()?;
        }
        Ok(Harness {
            ports,
            sockets,
            pool,
            file_prefix: file_prefix.to_string(),
            _eal: eal,
        })
    }

    /// The socket paths as `&Path`s, by side.
    pub fn socket_paths(&self) -> [&Path; 2] {
        [&self.sockets[0], &self.sockets[1]]
    }

    /// Waits until both vhost ports see their virtio-user peer, while
    /// `peer_alive()` says the peer process still runs.
    pub fn wait_link_up(
        &self,
        timeout: Duration,
        mut peer_alive: impl FnMut() -> bool,
    ) -> Result<()> {
        let start = Instant::now();
        loop {
            if self
                .ports
                .iter()
                .all(|p| p.link().map(|l| l.up).unwrap_or(false))
            {
                return Ok(());
            }
            if !peer_alive() {
                bail!("the peer exited before connecting to the vhost-user sockets");
            }
            if start.elapsed() > timeout {
                bail!("vhost ports not connected after {timeout:?} (did bootcache start?)");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `bin` (bootcache) on this harness's sockets with lcores
    /// `0@0,1@1` and `args` after `--`, waits until both links are up and
    /// drops whatever arrived before. If it exits first, the error carries
    /// the last line it printed on stderr.
    pub fn start_bootcache(
        &self,
        bin: &Path,
        file_prefix: &str,
        args: &[&str],
    ) -> Result<Bootcache> {
        let mut bc = Bootcache::spawn(bin, self.socket_paths(), file_prefix, "0@0,1@1", args)?;
        if let Err(e) = self.wait_link_up(Duration::from_secs(30), || bc.is_running()) {
            let fin = bc.wait(Duration::from_secs(2))?;
            bail!(
                "{e}: bootcache said: {}",
                fin.stderr.lines().last().unwrap_or("").trim()
            );
        }
        // The links come up when the virtio-user ports start, a moment
        // before bootcache polls them: frames sent in between were seen
        // lost (rarely) on a loaded machine. Wait until it bridges.
        let t = Instant::now();
        while !bc.stderr_so_far().contains("bridging on lcore") {
            if !bc.is_running() || t.elapsed() > Duration::from_secs(30) {
                let fin = bc.wait(Duration::from_secs(2))?;
                bail!(
                    "bootcache did not start bridging: {}",
                    fin.stderr.lines().last().unwrap_or("").trim()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.drain();
        Ok(bc)
    }

    /// Stops bootcache as Ctrl-C would, requires a clean exit (status 0 and
    /// its final statistics) and waits until both links are down.
    pub fn stop_bootcache(&self, bc: Bootcache) -> Result<Finished> {
        let fin = bc.stop(Duration::from_secs(30))?;
        if fin.code != Some(0) || fin.ports.len() != 2 {
            bail!(
                "bootcache exited with {:?}; stderr:\n{}",
                fin.code,
                fin.stderr
            );
        }
        self.wait_link_down(Duration::from_secs(10))?;
        Ok(fin)
    }

    /// Waits until both vhost ports lost their peer (bootcache exited).
    pub fn wait_link_down(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        while self
            .ports
            .iter()
            .any(|p| p.link().map(|l| l.up).unwrap_or(false))
        {
            if start.elapsed() > timeout {
                bail!("vhost ports still connected after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Drops whatever is waiting on both ports (e.g. the peer's own frames).
    pub fn drain(&self) -> u64 {
        let mut b = Burst::new();
        let mut n = 0;
        for p in &self.ports {
            while p.rx_burst(0, &mut b) > 0 {
                n += b.free_all() as u64;
            }
        }
        n
    }

    /// Sends `count` frames from side `from`, frame `i` built by `make(i, buf)`,
    /// and checks that the far side receives each one byte-identical and in
    /// order. At most `window` frames are in flight, so a bridge that keeps up
    /// never has to drop. Gives up `idle` after the last arrival.
    pub fn transfer<F>(
        &self,
        from: usize,
        count: u64,
        window: u64,
        idle: Duration,
        mut make: F,
    ) -> Result<TransferReport>
    where
        F: FnMut(u64, &mut Vec<u8>),
    {
        let (tx_port, rx_port) = (self.ports[from], self.ports[from ^ 1]);
        let mut rep = TransferReport::default();
        let mut frame = Vec::with_capacity(2048);
        let mut expect = Vec::with_capacity(2048);
        let mut out = Burst::new();
        let mut inb = Burst::new();
        let start = Instant::now();
        let mut last_progress = Instant::now();
        while rep.received < count {
            // Fill and send while the window allows.
            while rep.sent + (out.len() as u64) < count
                && rep.sent + (out.len() as u64) < rep.received + window
                && !out.is_full()
            {
                let seq = rep.sent + out.len() as u64;
                make(seq, &mut frame);
                let m = Mbuf::from_bytes(&self.pool, &frame).context("harness pool exhausted")?;
                rep.sent_bytes += frame.len() as u64;
                out.push(m).ok();
            }
            let n = tx_port.tx_burst(0, &mut out);
            rep.sent += n as u64;
            if rx_port.rx_burst(0, &mut inb) > 0 {
                for m in inb.drain() {
                    make(rep.received, &mut expect);
                    if m.data() != expect.as_slice() {
                        rep.mismatch_count += 1;
                        if rep.mismatches.len() < 16 {
                            rep.mismatches.push(rep.received);
                        }
                    }
                    rep.received += 1;
                    rep.received_bytes += u64::from(m.pkt_len());
                }
                last_progress = Instant::now();
            } else if n > 0 {
                last_progress = Instant::now();
            } else if last_progress.elapsed() > idle {
                break;
            }
        }
        rep.sent_bytes -= out
            .as_slice()
            .iter()
            .map(|m| u64::from(m.pkt_len()))
            .sum::<u64>();
        rep.elapsed = start.elapsed();
        Ok(rep)
    }

    /// Replays a scripted exchange: each frame enters on its side, in order,
    /// at most `window` in flight; checks that each direction's frames come
    /// out of the other side byte-identical and in order. Returns the reports
    /// per entry side.
    pub fn replay(
        &self,
        frames: &[(usize, Vec<u8>)],
        window: u64,
        idle: Duration,
    ) -> Result<[TransferReport; 2]> {
        let mut reps = [TransferReport::default(), TransferReport::default()];
        // Expected arrivals per entry side, as indices into `frames`.
        let by_side: [Vec<usize>; 2] =
            [0, 1].map(|side| (0..frames.len()).filter(|&i| frames[i].0 == side).collect());
        let mut next = 0usize;
        let mut inb = Burst::new();
        let start = Instant::now();
        let mut last_progress = Instant::now();
        let total = frames.len() as u64;
        let received = |r: &[TransferReport; 2]| r[0].received + r[1].received;
        while received(&reps) < total {
            let mut progressed = false;
            while next < frames.len() && (next as u64) < received(&reps) + window {
                let (side, f) = &frames[next];
                let answers = next > 0 && frames[next - 1].0 != *side;
                if answers && received(&reps) < next as u64 {
                    break;
                }
                let mut one = Burst::new();
                one.push(Mbuf::from_bytes(&self.pool, f).context("harness pool exhausted")?)
                    .ok();
                if self.ports[*side].tx_burst(0, &mut one) == 0 {
                    break; // ring full: retry after receiving
                }
                reps[*side].sent += 1;
                reps[*side].sent_bytes += f.len() as u64;
                next += 1;
                progressed = true;
            }
            for out_side in 0..2 {
                let entry = out_side ^ 1;
                if self.ports[out_side].rx_burst(0, &mut inb) == 0 {
                    continue;
                }
                progressed = true;
                for m in inb.drain() {
                    let r = &mut reps[entry];
                    let ok = by_side[entry]
                        .get(r.received as usize)
                        .is_some_and(|&i| m.data() == frames[i].1.as_slice());
                    if !ok {
                        r.mismatch_count += 1;
                        if r.mismatches.len() < 16 {
                            r.mismatches.push(r.received);
                        }
                    }
                    r.received += 1;
                    r.received_bytes += u64::from(m.pkt_len());
                }
            }
            if progressed {
                last_progress = Instant::now();
            } else if last_progress.elapsed() > idle {
                break;
            }
        }
        for r in &mut reps {
            r.elapsed = start.elapsed();
        }
        Ok(reps)
    }

    /// Sends every frame of `frames` into side `from` as fast as the port
    /// takes them (no window: frames the bridge keeps never hold the next
    /// back), then waits until `arrivals` frames came out of the other side
    /// and returns them; fails after `timeout` without them. For floods paced
    /// by a marker frame the bridge is known to pass on after the others.
    pub fn send_then_await(
        &self,
        from: usize,
        frames: &[Vec<u8>],
        arrivals: usize,
        timeout: Duration,
    ) -> Result<Vec<Vec<u8>>> {
        let (tx_port, rx_port) = (self.ports[from], self.ports[from ^ 1]);
        let mut got = Vec::new();
        let mut inb = Burst::new();
        let mut receive = |got: &mut Vec<Vec<u8>>| {
            if rx_port.rx_burst(0, &mut inb) > 0 {
                got.extend(inb.drain().map(|m| m.data().to_vec()));
            }
        };
        let start = Instant::now();
        for f in frames {
            let mut one = Burst::new();
            one.push(Mbuf::from_bytes(&self.pool, f).context("harness pool exhausted")?)
                .ok();
            while tx_port.tx_burst(0, &mut one) == 0 {
                receive(&mut got);
                if start.elapsed() > timeout {
                    bail!("side {from} took no frame for {timeout:?}");
                }
            }
        }
        while got.len() < arrivals {
            receive(&mut got);
            if start.elapsed() > timeout {
                bail!(
                    "{} of {arrivals} frames out of side {} after {timeout:?}",
                    got.len(),
                    from ^ 1
                );
            }
        }
        Ok(got)
    }

    /// [`Harness::transfer`] of harness test frames of length `len(i)`.
    pub fn transfer_test_frames(
        &self,
        from: usize,
        count: u64,
        window: u64,
        len: impl Fn(u64) -> usize,
    ) -> Result<TransferReport> {
        self.transfer(from, count, window, Duration::from_secs(2), |i, buf| {
            test_frame(from, i, len(i), buf)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_cached_fails_once_its_deadline_passes() {
        let dir = std::env::temp_dir().join(format!("bootcache-no-cache-{}", std::process::id()));
        let server = Ipv4Addr::new(10, 77, 0, 1);
        let t = Instant::now();
        let e = wait_cached(&dir, server, "pxelinux.0", 1, Duration::from_millis(50)).unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert!(e.to_string().contains("pxelinux.0"), "{e}");
    }
}
