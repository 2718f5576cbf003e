//! bootcache (or testpmd, its baseline) between the namespaces: configuration, start, statistics, stop.

use super::*;

impl Topology {
    /// bootcache's configuration file: the origin as boot server, the cache,
    /// a redirect ring deep enough to ride out the slow path losing its CPU
    /// for a while on a loaded two-CPU machine (copies dropped there lose the
    /// whole transfer's caching),
    /// the agent on the management link, and `agent_extra` TOML lines in
    /// its `[agent]` table (e.g. `answer_ttl = 0`).
    pub fn write_bootcache_config(&self, agent_extra: &str) -> Result<PathBuf> {
        let p = self.dir.join("bootcache.toml");
        let text = format!(
            "servers = [\"{SERVER_IP}\"]\ncache_dir = \"{}\"\n\n[agent]\naddress = \"{}:{AGENT_PORT}\"\nkey_file = \"{}\"\n{agent_extra}\n\n[limits]\nredirect_ring = {REDIRECT_RING}\n",
            self.cache_dir.display(),
            self.mgmt_server,
            self.key_file()?.display()
        );
        std::fs::write(&p, text)?;
        Ok(p)
    }

    /// bootcache's configuration for addressed mode: as
    /// [`Topology::write_bootcache_config`], and bootcache owns [`OWN_IP`]
    /// (clients ask it; it fetches misses from the origin, validated by
    /// the agent).
    pub fn write_addressed_config(&self) -> Result<PathBuf> {
        let p = self.write_bootcache_config("")?;
        let mut text = std::fs::read_to_string(&p)?;
        text += &format!("\n[addressed]\naddress = \"{OWN_IP}\"\nmac = \"02:bc:00:00:00:05\"\n");
        std::fs::write(&p, text)?;
        Ok(p)
    }

    /// bootcache's configuration for cache fill alone: the origin as boot
    /// server, the cache and the redirect ring as in
    /// [`Topology::write_bootcache_config`], but no agent and no
    /// `serve_max_age`, so nothing is served: every read goes to the origin
    /// and is copied to the cache.
    pub fn write_fill_only_config(&self) -> Result<PathBuf> {
        let p = self.dir.join("bootcache.toml");
        let text = format!(
            "servers = [\"{SERVER_IP}\"]\ncache_dir = \"{}\"\n\n[limits]\nredirect_ring = {REDIRECT_RING}\n",
            self.cache_dir.display(),
        );
        std::fs::write(&p, text)?;
        Ok(p)
    }

    /// EAL options of a DPDK program on the two veths (bootcache, or
    /// testpmd as its baseline), besides lcores and file prefix.
    pub(super) fn port_eal_args(&self) -> Vec<String> {
        [
            "--no-pci",
            "-m",
            "512",
            "--huge-unlink",
            "--log-level",
            "lib.eal:warning",
            "--vdev",
            &format!(
                "net_af_packet0,iface={},qpairs={}",
                self.client_link, self.qpairs
            ),
            "--vdev",
            &format!(
                "net_af_packet1,iface={},qpairs={}",
                self.server_link, self.qpairs
            ),
        ]
        .map(String::from)
        .to_vec()
    }

    /// The command line the last [`Topology::start_bootcache`] ran.
    pub fn bootcache_cmdline(&self) -> &str {
        &self.bootcache_cmdline
    }

    /// The command line of `dpdk-testpmd --forward-mode=io` on the same two
    /// `net_af_packet` ports as bootcache, with bootcache's shape: the same
    /// EAL options and lcores (one forwarding lcore on CPU 1), 1024
    /// descriptors, bursts of 32, as many mbufs; not interactive.
    pub fn testpmd_args(&self) -> Vec<String> {
        let mut v: Vec<String> = [
            "--lcores",
            &self.lcores,
            "--file-prefix",
            &format!("bct-{}", self.prefix),
        ]
        .map(String::from)
        .to_vec();
        v.extend(self.port_eal_args());
        v.push("--".to_string());
        v.extend(crate::process::testpmd_io_args(1));
        v.push(format!("--total-num-mbufs={MBUFS}"));
        v
    }

    /// Starts `dpdk-testpmd --forward-mode=io` ([`Topology::testpmd_args`])
    /// instead of bootcache on the two veths and waits until it forwards.
    pub fn start_testpmd(&mut self) -> Result<()> {
        retry_fanout_collision(|| self.start_testpmd_once())
    }

    pub(super) fn start_testpmd_once(&mut self) -> Result<()> {
        if self.bootcache.is_some() || self.testpmd.is_some() {
            bail!("a bridge already runs on the veths");
        }
        let tool = find_tool("dpdk-testpmd").ok_or_else(|| {
            anyhow!("dpdk-testpmd not found (Debian package dpdk): run scripts/setup")
        })?;
        self.testpmd_runs += 1;
        let log = self
            .dir
            .join(format!("testpmd-run{}.log", self.testpmd_runs));
        let mut cmd = Command::new(tool);
        cmd.args(self.testpmd_args());
        let mut child = self.spawn_logged(cmd, &log)?;
        let t = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("io packet forwarding") {
                break;
            }
            if !matches!(child.try_wait(), Ok(None)) || t.elapsed() > Duration::from_secs(30) {
                self.stop_child(Some(child));
                bail!(
                    "dpdk-testpmd did not start forwarding: {}",
                    last_lines(&text, 6)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.testpmd = Some(child);
        Ok(())
    }

    /// Stops testpmd (SIGTERM, then SIGKILL) and removes its runtime files.
    pub fn stop_testpmd(&mut self) {
        let c = self.testpmd.take();
        self.stop_child(c);
        process::remove_hugepage_files(&format!("bct-{}", self.prefix));
    }

    /// Starts bootcache on the two veths (net_af_packet) and waits until it
    /// bridges. `app_args` go after the configuration.
    pub fn start_bootcache(&mut self, app_args: &[&str]) -> Result<()> {
        retry_fanout_collision(|| self.start_bootcache_once(app_args))
    }

    pub(super) fn start_bootcache_once(&mut self, app_args: &[&str]) -> Result<()> {
        if self.bootcache.is_some() {
            bail!("bootcache already runs");
        }
        let bin = self.bootcache_bin.clone();
        if !bin.exists() {
            bail!("{} missing: cargo build first", bin.display());
        }
        let cfg = self.dir.join("bootcache.toml");
        if !cfg.exists() {
            self.write_bootcache_config("")?;
        }
        self.bootcache_runs += 1;
        let log_dir = self
            .dir
            .join(format!("bootcache-run{}", self.bootcache_runs));
        std::fs::create_dir_all(&log_dir)?;
        if self.testpmd.is_some() {
            bail!("testpmd runs on the veths: stop it first");
        }
        let eal = self.port_eal_args();
        let mut app = vec![
            "--config".to_string(),
            cfg.display().to_string(),
            "--mbufs".to_string(),
            MBUFS.to_string(),
        ];
        app.extend(app_args.iter().map(|s| s.to_string()));
        let prefix = format!("bce-{}", self.prefix);
        self.bootcache_cmdline = std::iter::once(bin.display().to_string())
            .chain(["--lcores", &self.lcores, "--file-prefix", &prefix].map(String::from))
            .chain(eal.iter().cloned())
            .chain(std::iter::once("--".to_string()))
            .chain(app.iter().cloned())
            .map(|a| shell_word(&a))
            .collect::<Vec<_>>()
            .join(" ");
        let mut bc = Bootcache::spawn_logged(&bin, &prefix, &self.lcores, &eal, &app, &log_dir)?;
        self.own_pid(bc.pid());
        let t = Instant::now();
        loop {
            let err = bc.stderr_so_far();
            if err.contains("bridging on lcore") {
                break;
            }
            if !bc.is_running() || t.elapsed() > Duration::from_secs(30) {
                let pid = bc.pid();
                let fin = bc.stop(Duration::from_secs(5));
                self.disown_pid(pid);
                let text = fin.map(|f| f.stderr).unwrap_or(err);
                bail!("bootcache did not start bridging: {}", last_lines(&text, 8));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.bootcache = Some(bc);
        Ok(())
    }

    /// A counter from the last statistics object the running (or last)
    /// bootcache printed (start it with `--stats-interval 1`); see [`stat`].
    pub fn bootcache_stat(&self, section: &str, key: &str) -> Option<u64> {
        let out = std::fs::read_to_string(self.bootcache_log_dir().join("bootcache.out")).ok()?;
        stat(&out, section, key)
    }

    /// Waits until bootcache's counter `section key` reaches `n`, e.g.
    /// `files in_store` after a cold transfer (publishing is asynchronous).
    pub fn wait_stat(&self, section: &str, key: &str, n: u64, timeout: Duration) -> Result<()> {
        let t = Instant::now();
        loop {
            let have = self.bootcache_stat(section, key);
            if have.is_some_and(|h| h >= n) {
                return Ok(());
            }
            if t.elapsed() > timeout {
                // The usual cause: the slow path lost its CPU (a loaded
                // machine) and the copies of a transfer were dropped.
                let drops = self.bootcache_stat("redirect", "copy_drops");
                let discarded = self.bootcache_stat("transfers", "discarded");
                bail!(
                    "bootcache's {section} {key} is {have:?} after {timeout:?}, expected {n} \
                     (copy_drops={drops:?}, transfers discarded={discarded:?}; copies are dropped when \
                     the slow path cannot keep up, e.g. on a machine loaded by other jobs; \
                     needs --stats-interval 1)"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What to look at when a step failed: the last lines of bootcache's
    /// log and statistics, of the origin's log (router adverts left out)
    /// and of the agent's log.
    pub fn diagnostics(&self) -> String {
        let tail = |path: PathBuf, n: usize, skip: &[&str]| {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| !skip.iter().any(|s| l.contains(s)))
                .collect();
            let from = lines.len().saturating_sub(n);
            format!("--- {} ---\n{}\n", path.display(), lines[from..].join("\n"))
        };
        let bc = self.bootcache_log_dir();
        [
            tail(bc.join("bootcache.out"), 1, &[]),
            tail(bc.join("bootcache.err"), 12, &["EAL", "TELEMETRY"]),
            tail(self.origin_log(), 12, &["RTR-"]),
            tail(self.dir.join("agent.log"), 6, &[]),
        ]
        .concat()
    }

    /// The running bootcache's log directory (stdout, stderr).
    pub fn bootcache_log_dir(&self) -> PathBuf {
        self.dir
            .join(format!("bootcache-run{}", self.bootcache_runs))
    }

    /// Stops bootcache (SIGINT, as Ctrl-C) and returns its output with the
    /// final statistics.
    pub fn stop_bootcache(&mut self) -> Result<Finished> {
        let bc = self
            .bootcache
            .take()
            .ok_or_else(|| anyhow!("bootcache is not running"))?;
        let pid = bc.pid();
        let fin = bc.stop(Duration::from_secs(15));
        self.disown_pid(pid);
        fin
    }

    /// Sends `sig` (`HUP`: reload the configuration) to the running
    /// bootcache; an error if it is not running any more.
    pub fn signal_bootcache(&mut self, sig: &str) -> Result<()> {
        let bc = self
            .bootcache
            .as_mut()
            .ok_or_else(|| anyhow!("bootcache was not started"))?;
        if !bc.is_running() {
            bail!("bootcache exited: {}", last_lines(&bc.stderr_so_far(), 8));
        }
        signal(bc.pid(), sig);
        Ok(())
    }
}
