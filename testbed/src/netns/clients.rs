//! The clients: curl, atftp, tftp-hpa, qemu with the boot firmware, ACK loss.

use super::*;

impl Topology {
    /// Drops `percent`% of the client's TFTP ACKs (opcode 4, to the
    /// server at any port but 69) as they leave the client namespace's veth
    /// (nftables, egress hook), counting them. Not in the output hook: a
    /// packet dropped there fails the client's sendto (EPERM), which curl
    /// takes for a fatal error.
    pub fn drop_client_acks(&self, percent: u32) -> Result<()> {
        let script = format!(
            "nft add table netdev {LOSS_TABLE} && \\
             nft add chain netdev {LOSS_TABLE} out '{{ type filter hook egress device eth0 priority 0; }}' && \\
             nft add rule netdev {LOSS_TABLE} out ip daddr {SERVER_IP} udp dport != 69 @th,64,16 4 numgen random mod 100 '<' {percent} counter drop"
        );
        let out = self
            .ns_cmd_plain(&self.client_ns, "sh")
            .args(["-c", &script])
            .output()
            .context("nft (Debian package nftables: run scripts/setup)")?;
        if !out.status.success() {
            bail!(
                "nft: {} (Debian package nftables: run scripts/setup)",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// ACKs [`Topology::drop_client_acks`] dropped so far.
    pub fn client_acks_dropped(&self) -> u64 {
        let out = self
            .ns_cmd_plain(&self.client_ns, "nft")
            .args(["list", "table", "netdev", LOSS_TABLE])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        out.split_once("counter packets ")
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// A command in namespace `ns`, on any CPU (setup, not a measured program).
    pub(super) fn ns_cmd_plain(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    /// Reads `name` with curl (`tftp://`, blksize option when given; curl
    /// always asks for tsize) from the client namespace into `out`.
    pub fn curl_get(&self, name: &str, blksize: Option<u16>, out: &Path) -> Result<Duration> {
        self.curl_get_in(&self.client_ns, SERVER_IP, name, blksize, out)
    }

    /// [`Topology::curl_get`] from the TFTP server at `host`.
    pub fn curl_get_from(
        &self,
        host: Ipv4Addr,
        name: &str,
        blksize: Option<u16>,
        out: &Path,
    ) -> Result<Duration> {
        self.curl_get_in(&self.client_ns, host, name, blksize, out)
    }

    /// [`Topology::curl_get`] from namespace `ns`, from `server`.
    pub(super) fn curl_get_in(
        &self,
        ns: &str,
        server: Ipv4Addr,
        name: &str,
        blksize: Option<u16>,
        out: &Path,
    ) -> Result<Duration> {
        let mut cmd = self.ns_cmd(ns, "curl");
        cmd.args(["-sS", "--max-time", "300", "-o"]).arg(out);
        if let Some(b) = blksize {
            cmd.args(["--tftp-blksize", &b.to_string()]);
        }
        cmd.arg(format!("tftp://{server}/{name}"));
        timed(&mut cmd)
    }

    /// Reads `name` with atftp, asking for `blksize` and `windowsize`
    /// (RFC 7440: a windowed read) into `out`.
    pub fn atftp_get(
        &self,
        name: &str,
        blksize: u16,
        windowsize: u16,
        out: &Path,
    ) -> Result<Duration> {
        let mut cmd = self.ns_cmd(&self.client_ns, "timeout");
        cmd.args(["300", "atftp", "--option"])
            .arg(format!("blksize {blksize}"))
            .arg("--option")
            .arg(format!("windowsize {windowsize}"))
            .args(["-g", "-r", name, "-l"])
            .arg(out)
            .arg(SERVER_IP.to_string());
        let _ = std::fs::remove_file(out);
        let d = timed(&mut cmd)?;
        if !out.exists() {
            bail!("atftp get {name}: no file written");
        }
        Ok(d)
    }

    /// Reads `name` with tftp-hpa's `tftp` (binary mode, no options: RFC 1350
    /// lock-step with 512-byte blocks) into `out`.
    pub fn tftp_hpa_get(&self, name: &str, out: &Path) -> Result<Duration> {
        self.tftp_hpa_get_in(&self.client_ns, SERVER_IP, name, out)
    }

    /// [`Topology::tftp_hpa_get`] from the TFTP server at `host`.
    pub fn tftp_hpa_get_from(&self, host: Ipv4Addr, name: &str, out: &Path) -> Result<Duration> {
        self.tftp_hpa_get_in(&self.client_ns, host, name, out)
    }

    /// [`Topology::tftp_hpa_get`] from namespace `ns`, from `server`.
    pub(super) fn tftp_hpa_get_in(
        &self,
        ns: &str,
        server: Ipv4Addr,
        name: &str,
        out: &Path,
    ) -> Result<Duration> {
        let mut cmd = self.ns_cmd(ns, "timeout");
        cmd.args([
            "300",
            "tftp",
            "-m",
            "binary",
            &server.to_string(),
            "-c",
            "get",
            name,
        ])
        .arg(out);
        let _ = std::fs::remove_file(out);
        let d = timed(&mut cmd)?;
        if !out.exists() {
            bail!("tftp get {name}: no file written");
        }
        Ok(d)
    }

    /// [`Topology::boot_pxe`], required to succeed: the marker on the serial
    /// console with `bcvariant=variant` (the iPXE script's variant) and a
    /// DHCP lease; otherwise an error with the console, what the origin
    /// sent and [`Topology::diagnostics`].
    pub fn boot_to_marker(&self, tag: &str, variant: &str, timeout: Duration) -> Result<Boot> {
        let b = self.boot_pxe(tag, timeout)?;
        let Some(marker) = b.marker.clone() else {
            bail!(
                "boot {tag}: no {MARKER} on the serial console after {:.0?} (timed out: {}); console:\n{}\norigin sent: {:?}\n{}",
                b.elapsed,
                b.timed_out,
                b.serial,
                self.origin_transfers(),
                self.diagnostics()
            );
        };
        if !marker.contains(&format!("variant={variant} ")) {
            bail!("boot {tag}: variant {variant} expected: {marker}");
        }
        if !marker.contains("ip=10.80.0.") {
            bail!("boot {tag}: no DHCP lease: {marker}");
        }
        eprintln!("boot {tag}: {:.1} s: {marker}", b.elapsed.as_secs_f64());
        Ok(b)
    }

    /// Boots a qemu PXE client (virtio-net on `tap0`; the firmware
    /// [`Topology::set_firmware`] chose, by default SeaBIOS and the iPXE
    /// ROM) and waits until it powers off or `timeout` passes; `tag` names the serial log.
    pub fn boot_pxe(&self, tag: &str, timeout: Duration) -> Result<Boot> {
        let serial = self.dir.join(format!("serial-{tag}.log"));
        let _ = std::fs::remove_file(&serial);
        // Software emulation by default: on these VMs /dev/kvm exists but a
        // guest under KVM crashes in iPXE. BOOTCACHE_QEMU_ACCEL=kvm opts in.
        let accel = std::env::var("BOOTCACHE_QEMU_ACCEL").unwrap_or_else(|_| "tcg".into());
        let mut cmd = self.client_cmd("qemu-system-x86_64");
        cmd.args(
            self.firmware
                .qemu_args(&accel, &self.dir, tag, &self.client_mac)?,
        );
        // SeaBIOS runs the NIC's option ROM (iPXE) only when a VGA device
        // exists: keep qemu's default VGA, shown nowhere.
        cmd.args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-netdev",
            "tap,id=n0,ifname=tap0,script=no,downscript=no,vnet_hdr=off",
            "-serial",
        ])
        .arg(format!("file:{}", serial.display()))
        // SeaBIOS's debug port: which option ROMs ran, what it booted.
        .arg("-chardev")
        .arg(format!(
            "file,id=bios,path={}",
            self.dir.join(format!("bios-{tag}.log")).display()
        ))
        .args(["-device", "isa-debugcon,iobase=0x402,chardev=bios"]);
        let qlog = self.dir.join(format!("qemu-{tag}.log"));
        let t = Instant::now();
        let mut child = self.spawn_logged(cmd, &qlog)?;
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break Some(st);
            }
            if t.elapsed() > timeout {
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let elapsed = t.elapsed();
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.disown_pid(child.id());
        let serial_text = std::fs::read_to_string(&serial).unwrap_or_default();
        let marker = serial_text
            .lines()
            .find(|l| l.contains(MARKER))
            .map(|l| l.trim().to_string());
        if status.is_some_and(|s| !s.success()) {
            let q = std::fs::read_to_string(&qlog).unwrap_or_default();
            bail!("qemu failed: {}", q.trim());
        }
        Ok(Boot {
            elapsed,
            timed_out: status.is_none(),
            marker,
            serial: serial_text,
        })
    }
}
