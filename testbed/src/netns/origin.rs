//! The boot server side: dnsmasq (DHCP, TFTP), bootcache-agent, the TFTP root.

use super::*;

impl Topology {
    /// Path of the origin's log (dnsmasq: DHCP and TFTP).
    pub fn origin_log(&self) -> PathBuf {
        self.dir.join("dnsmasq.log")
    }

    /// Starts the origin: dnsmasq as DHCP server (iPXE clients get
    /// [`IPXE_SCRIPT`], or what [`Topology::set_firmware`] chose), IPv6 router advertiser (iPXE otherwise waits for
    /// IPv6 autoconfiguration) and TFTP server, logging every transfer.
    pub fn start_origin(&mut self) -> Result<()> {
        let d = &self.dir;
        // dhcp-boot=<file>,<server name>,<server address>: next-server.
        let next_server = self
            .next_server
            .map(|ip| format!(",,{ip}"))
            .unwrap_or_default();
        let conf = format!(
            "port=0\ninterface={iface}\nbind-interfaces\nno-resolv\nno-hosts\nuser=root\ngroup=root\n\
             log-facility={log}\ndhcp-leasefile={leases}\n\
             dhcp-range=10.80.0.100,10.80.0.199,255.255.255.0,1h\n\
             enable-ra\ndhcp-range=::,constructor:{iface},ra-only\n\
             {boot}enable-tftp\ntftp-root={root}\n",
            boot = self.firmware.dhcp_conf(&next_server),
            iface = self.origin_iface,
            log = self.origin_log().display(),
            leases = d.join("dnsmasq.leases").display(),
            root = self.tftp_root.display(),
        );
        let conf_path = d.join("dnsmasq.conf");
        std::fs::write(&conf_path, conf)?;
        let _ = std::fs::remove_file(self.origin_log());
        let dnsmasq =
            find_tool("dnsmasq").ok_or_else(|| anyhow!("dnsmasq not found: run scripts/setup"))?;
        let mut cmd = self.server_cmd(&dnsmasq.to_string_lossy());
        cmd.arg("--keep-in-foreground")
            .arg(format!("--conf-file={}", conf_path.display()))
            .arg("--pid-file=");
        let child = self.spawn_logged(cmd, &d.join("dnsmasq.out"))?;
        self.dnsmasq = Some(child);
        wait_for_text(&self.origin_log(), "TFTP root is", Duration::from_secs(10)).map_err(|e| {
            let out = std::fs::read_to_string(d.join("dnsmasq.out")).unwrap_or_default();
            anyhow!("dnsmasq did not start: {e}: {}", out.trim())
        })
    }

    /// Makes the next [`Topology::start_origin`] hand clients `ip` as their
    /// next-server (TFTP server), e.g. bootcache's own address in addressed
    /// mode, instead of dnsmasq itself.
    pub fn set_next_server(&mut self, ip: Ipv4Addr) {
        self.next_server = Some(ip);
    }

    /// Stops dnsmasq.
    pub fn stop_origin(&mut self) {
        let c = self.dnsmasq.take();
        self.stop_child(c);
    }

    /// Transfers the origin sent or tried to send, by file name relative to
    /// the TFTP root, in order (dnsmasq logs `sent <path> to <client>` or
    /// `failed sending <path> to <client>` when a transfer ends).
    pub fn origin_transfers(&self) -> Vec<String> {
        dnsmasq_transfers(&self.origin_log(), &self.tftp_root)
    }

    /// [`Topology::origin_count`] of each of `names`.
    pub fn origin_counts(&self, names: &[&str]) -> Vec<usize> {
        names.iter().map(|n| self.origin_count(n)).collect()
    }

    /// The addresses the origin sent `name` to (or tried to), in order:
    /// who read it (a client, or bootcache's own address fetching).
    pub fn origin_readers(&self, name: &str) -> Vec<String> {
        dnsmasq_transfer_peers(&self.origin_log(), &self.tftp_root)
            .into_iter()
            .filter(|(n, _)| n == name)
            .map(|(_, peer)| peer)
            .collect()
    }

    /// Origin transfers of `name` so far.
    pub fn origin_count(&self, name: &str) -> usize {
        self.origin_transfers()
            .iter()
            .filter(|n| *n == name)
            .count()
    }

    /// The shared agent key (created on first use).
    pub fn key_file(&self) -> Result<PathBuf> {
        let p = self.dir.join("agent.key");
        if !p.exists() {
            let mut buf = [0u8; 32];
            use std::io::Read;
            std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
            let hex = buf.iter().fold(String::new(), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            });
            std::fs::write(&p, hex)?;
        }
        Ok(p)
    }

    /// The `bootcache-agent` binary: `BOOTCACHE_AGENT_BIN`, or beside
    /// bootcache's.
    pub(super) fn agent_bin(&self) -> Result<PathBuf> {
        let bin = match std::env::var_os("BOOTCACHE_AGENT_BIN") {
            Some(p) => PathBuf::from(p),
            None => self
                .bootcache_bin
                .parent()
                .unwrap_or(Path::new("."))
                .join("bootcache-agent"),
        };
        if !bin.exists() {
            bail!(
                "{} missing: build it (cargo build -p bootcache-agent, or cargo test --workspace)",
                bin.display()
            );
        }
        Ok(bin)
    }

    /// Starts `bootcache-agent` in the server namespace on the management link.
    pub fn start_agent(&mut self) -> Result<()> {
        self.start_agent_with(&[])
    }

    /// [`Topology::start_agent`] with more arguments (e.g. `--nats URL`).
    pub fn start_agent_with(&mut self, extra: &[&str]) -> Result<()> {
        let bin = self.agent_bin()?;
        let key = self.key_file()?;
        let log = self.dir.join("agent.log");
        let mut cmd = self.server_cmd(bin.to_str().unwrap_or("bootcache-agent"));
        cmd.arg("--root")
            .arg(&self.tftp_root)
            .arg("--listen")
            .arg(format!("{}:{AGENT_PORT}", self.mgmt_server))
            .arg("--key-file")
            .arg(&key)
            .args(extra);
        let child = self.spawn_logged(cmd, &log)?;
        self.agent = Some(child);
        wait_for_text(&log, "listening on", Duration::from_secs(10))
            .map_err(|e| anyhow!("bootcache-agent did not start: {e}"))
    }

    /// How many lines of the agent's log (since it last started) contain
    /// `text`.
    pub fn agent_log_count(&self, text: &str) -> usize {
        std::fs::read_to_string(self.dir.join("agent.log"))
            .map(|s| s.lines().filter(|l| l.contains(text)).count())
            .unwrap_or(0)
    }

    /// Waits until `n` lines of the agent's log contain `text`: e.g. its
    /// `<file>: modified` line once it rehashed a changed file (after the
    /// file stayed quiet for its debounce interval).
    pub fn wait_agent_log(&self, text: &str, n: usize, timeout: Duration) -> Result<()> {
        let t = Instant::now();
        loop {
            let have = self.agent_log_count(text);
            if have >= n {
                return Ok(());
            }
            if t.elapsed() > timeout {
                bail!(
                    "{have} lines with {text:?} in the agent's log after {timeout:?}, expected {n}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the agent.
    pub fn stop_agent(&mut self) {
        let c = self.agent.take();
        self.stop_child(c);
    }

    /// Writes `content` as `name` into the origin's TFTP root (atomically,
    /// so the agent never hashes half a file).
    pub fn put_file(&self, name: &str, content: &[u8]) -> Result<()> {
        let p = self.tftp_root.join(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        let tmp = self.dir.join(format!(".put-{}", name.replace('/', "_")));
        std::fs::write(&tmp, content)?;
        std::fs::rename(&tmp, &p).with_context(|| format!("installing {}", p.display()))
    }

    /// Puts the PXE boot files into the TFTP root: the iPXE script, the
    /// kernel and initrd built by `scripts/pxe-images` in `images`.
    pub fn install_pxe_files(&self, images: &Path) -> Result<()> {
        self.install_pxe_images(images)?;
        self.install_ipxe_script("1")
    }

    /// The kernel and initrd only.
    pub fn install_pxe_images(&self, images: &Path) -> Result<()> {
        self.install_images_into(images, "")
    }

    /// The kernel and initrd as `<dir>vmlinuz` and `<dir>initrd.gz`.
    pub(super) fn install_images_into(&self, images: &Path, dir: &str) -> Result<()> {
        for f in ["vmlinuz", "initrd.gz"] {
            let src = images.join(f);
            let bytes = std::fs::read(&src).with_context(|| {
                format!(
                    "{} missing: run scripts/setup (it runs scripts/pxe-images)",
                    src.display()
                )
            })?;
            self.put_file(&format!("{dir}{f}"), &bytes)?;
        }
        Ok(())
    }

    /// The iPXE script: kernel and initrd over TFTP from the boot server;
    /// `variant` goes on the kernel command line and the initrd prints it
    /// with the marker, so a changed script is visible on the console.
    pub fn install_ipxe_script(&self, variant: &str) -> Result<()> {
        self.install_boot_config(Firmware::Ipxe, variant)
    }
}
