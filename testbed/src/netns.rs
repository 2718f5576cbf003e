//! Real programs on one machine: a boot server and a PXE client in network
//! namespaces, bootcache between them on `net_af_packet` ports. Shared by
//! the PXE demo, the end-to-end tests and the serving benchmark.
//!
//! ```text
//!  client netns                root netns                       server netns
//!  qemu+iPXE ─ tap0 ┐                                          ┌ eth0 10.80.0.1  dnsmasq (DHCP, RA, TFTP)
//!                   br0 10.80.0.50 ── eth0 ═ veth ═ <p>-c ─ bootcache ─ <p>-s ═ veth ═┘
//!                                        port 0 (net_af_packet0)   port 1
//!                                              <p>-m 10.99.N.1 ═ veth ═ mgmt0 10.99.N.2  bootcache-agent
//! ```
//!
//! Everything created is recorded in a process-wide registry, so that a
//! signal handler ([`cleanup_all`]) can remove it as `Drop` would: only our
//! own PIDs are killed, only our own namespaces and links deleted.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::process::{self, Bootcache, Finished};

mod bridge;
mod clients;
mod nats;
mod origin;

pub use nats::*;

/// The boot server's address on the boot LAN (server namespace, `eth0`).
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 1);
/// The plain clients' address (client namespace, `br0`).
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 50);
/// bootcache's own address in addressed mode
/// ([`Topology::write_addressed_config`]).
pub const OWN_IP: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 5);
/// The nftables table of [`Topology::drop_client_acks`].
const LOSS_TABLE: &str = "bootcache_ack_loss";
/// What the test initrd prints on the serial console once its network is up.
pub const MARKER: &str = "BOOTCACHE-PXE-OK";
/// The qemu client's MAC address unless [`Topology::set_client_mac`] chose
/// another.
pub const CLIENT_MAC: &str = "52:54:00:b0:07:01";
/// The agent's UDP port on the management link.
pub const AGENT_PORT: u16 = 6969;
/// Where `scripts/pxe-images` leaves the kernel and initrd.
pub const DEFAULT_IMAGES: &str = "/var/cache/bootcache-pxe";
/// The iPXE script handed to iPXE clients (DHCP option 175) as boot file.
pub const IPXE_SCRIPT: &str = "boot.ipxe";
/// bootcache's redirect ring in the topology (slots), and its packet pool.
const REDIRECT_RING: u32 = 32768;
const MBUFS: &str = "65535";
/// The bridge lcore on CPU 1; the slow path (main lcore) may run on either
/// CPU, so that others' work on CPU 0 (clients, servers, other jobs) does
/// not starve it into dropping copies.
const LCORES: &str = "0@(0,1),1@1";

/// What a topology owns, for cleanup from `Drop` or a signal handler.
#[derive(Default, Clone)]
struct Owned {
    pids: Vec<u32>,
    namespaces: Vec<String>,
    links: Vec<String>,
}

static LIVE: Mutex<Option<HashMap<String, Owned>>> = Mutex::new(None);
/// Serialises topology creation: the management subnet is picked from what
/// the root namespace does not use yet.
static CREATE: Mutex<()> = Mutex::new(());
static SEQ: AtomicU32 = AtomicU32::new(0);

fn live<R>(f: impl FnOnce(&mut HashMap<String, Owned>) -> R) -> R {
    let mut g = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(HashMap::new))
}

/// Removes every live topology of this process: for signal handlers (Ctrl-C
/// in the demo), which then exit.
pub fn cleanup_all() {
    let all: Vec<Owned> = live(|m| m.drain().map(|(_, o)| o).collect());
    for o in all {
        teardown(&o);
    }
}

fn pid_alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Stops `pid` with SIGTERM, then SIGKILL after `grace`.
fn terminate(pid: u32, grace: Duration) {
    if !pid_alive(pid) {
        return;
    }
    signal(pid, "TERM");
    let t = Instant::now();
    while pid_alive(pid) && t.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(20));
    }
    if pid_alive(pid) {
        signal(pid, "KILL");
    }
}

fn teardown(o: &Owned) {
    for &pid in &o.pids {
        terminate(pid, Duration::from_secs(3));
    }
    for ns in &o.namespaces {
        let _ = quiet(Command::new("ip").args(["netns", "del", ns]));
    }
    for l in &o.links {
        let _ = quiet(Command::new("ip").args(["link", "del", l]));
    }
}

fn quiet(cmd: &mut Command) -> std::io::Result<std::process::ExitStatus> {
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).status()
}

/// Runs a command; an error carries its stderr.
fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

fn in_ns(ns: &str, script: &str) -> Result<String> {
    run(Command::new("ip").args(["netns", "exec", ns, "sh", "-ec", script]))
}

/// Checks what the topology needs; each failure is one line naming the fix.
pub fn check_prerequisites(pxe: bool) -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next().map(str::to_string));
    if uid.as_deref() != Some("0") {
        bail!("must run as root (network namespaces, veth pairs, hugepages): use sudo");
    }
    let mut tools = vec![
        ("ip", "iproute2"),
        ("ethtool", "ethtool"),
        ("dnsmasq", "dnsmasq-base"),
        ("curl", "curl"),
        ("tftp", "tftp-hpa"),
    ];
    if pxe {
        tools.push(("qemu-system-x86_64", "qemu-system-x86"));
    }
    for (tool, pkg) in tools {
        if !which(tool) {
            bail!("{tool} not found (Debian package {pkg}): run scripts/setup");
        }
    }
    if pxe && !Path::new("/usr/lib/ipxe/qemu/efi-virtio.rom").exists() {
        bail!(
            "qemu's iPXE ROM efi-virtio.rom missing (Debian package ipxe-qemu): run scripts/setup"
        );
    }
    let free = hugepages_free();
    if free < 300 {
        bail!(
            "{free} free 2 MiB hugepages; bootcache needs at least 300: run scripts/setup (or stop what holds them)"
        );
    }
    Ok(())
}

/// Finds `tool` on PATH or in the sbin directories (not on every PATH).
fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn which(tool: &str) -> bool {
    find_tool(tool).is_some()
}

fn hugepages_free() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// How to build a topology.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Name prefix of the namespaces and links (default: unique per process
    /// and topology, `bc<pid><letter>`). At most 9 characters.
    pub prefix: Option<String>,
    /// Keep the work directory (logs, cache) after `Drop`.
    pub keep_dir: bool,
    /// The bootcache binary (default: [`process::default_bootcache_bin`]);
    /// `bootcache-agent` is taken from the same directory.
    pub bootcache_bin: Option<PathBuf>,
    /// EAL `--lcores` of bootcache and of testpmd in its place (default:
    /// the main lcore on either CPU, the forwarding lcore on CPU 1).
    pub lcores: Option<String>,
    /// Run the programs in the namespaces (clients, origin) on these CPUs
    /// only (`taskset -c`), e.g. "0", away from the bridge's polling CPU.
    pub programs_cpus: Option<String>,
    /// Queue pairs of each `net_af_packet` port (`qpairs=N`; default 1):
    /// with N forwarding lcores in `lcores`, the kernel's packet fanout
    /// spreads flows over the queues.
    pub qpairs: Option<u16>,
}

/// A boot LAN split by bootcache: server and client namespaces, the veth
/// pairs, the management link, and the programs running in them.
pub struct Topology {
    /// Name prefix of everything created.
    pub prefix: String,
    /// The boot server's namespace.
    pub server_ns: String,
    /// The clients' namespace.
    pub client_ns: String,
    /// Root-namespace end of the client veth: bootcache's port 0.
    pub client_link: String,
    /// Root-namespace end of the server veth: bootcache's port 1.
    pub server_link: String,
    /// Root-namespace end of the management link (not a DPDK port).
    pub mgmt_link: String,
    /// bootcache's address on the management link (root namespace).
    pub mgmt_root: Ipv4Addr,
    /// The agent's address on the management link (server namespace).
    pub mgmt_server: Ipv4Addr,
    /// Work directory: TFTP root, cache, logs, configuration.
    pub dir: PathBuf,
    /// The origin's TFTP root.
    pub tftp_root: PathBuf,
    /// bootcache's cache directory.
    pub cache_dir: PathBuf,
    keep_dir: bool,
    bootcache_bin: PathBuf,
    dnsmasq: Option<Child>,
    agent: Option<Child>,
    bootcache: Option<Bootcache>,
    bootcache_runs: u32,
    testpmd: Option<Child>,
    testpmd_runs: u32,
    bootcache_cmdline: String,
    lcores: String,
    qpairs: u16,
    programs_cpus: Option<String>,
    /// The next-server dnsmasq hands to clients (default: itself).
    next_server: Option<Ipv4Addr>,
    /// What the qemu client boots and dnsmasq hands it ([`Topology::set_firmware`]).
    firmware: Firmware,
    /// The origin's interface: `eth0`, or `br0` once a second site joined
    /// its LAN ([`Topology::join_origin_lan`]).
    origin_iface: &'static str,
    /// The qemu client's MAC address ([`Topology::set_client_mac`]).
    client_mac: String,
}

impl Topology {
    /// Creates the namespaces, links and addresses (no programs yet).
    pub fn create(opts: &Options) -> Result<Topology> {
        let _g = CREATE.lock().unwrap_or_else(|e| e.into_inner());
        let prefix = match &opts.prefix {
            Some(p) => {
                if p.is_empty() || p.len() > 9 || !p.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    bail!("topology prefix {p:?}: 1-9 letters or digits");
                }
                p.clone()
            }
            None => {
                let n = SEQ.fetch_add(1, Ordering::Relaxed);
                format!(
                    "bc{}{}",
                    std::process::id() % 100_000,
                    (b'a' + (n % 26) as u8) as char
                )
            }
        };
        let server_ns = format!("{prefix}-srv");
        let client_ns = format!("{prefix}-cli");
        let [client_link, server_link, mgmt_link] =
            ["c", "s", "m"].map(|s| format!("{prefix}-{s}"));
        let existing = ip(&["netns", "list"])?;
        for ns in [&server_ns, &client_ns] {
            if existing
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns))
            {
                bail!("network namespace {ns} already exists: another run is using it, or a crashed run left it (remove it: ip netns del {ns})");
            }
        }
        for l in [&client_link, &server_link, &mgmt_link] {
            if Path::new("/sys/class/net").join(l).exists() {
                bail!("network interface {l} already exists: another run is using it, or a crashed run left it (remove it: ip link del {l})");
            }
        }
        let addrs = ip(&["-4", "-o", "addr", "show"])?;
        let subnet = (0..=255u8)
            .find(|n| !addrs.contains(&format!("10.99.{n}.")))
            .ok_or_else(|| anyhow!("no free 10.99.N.0/30 management subnet"))?;
        let mgmt_root = Ipv4Addr::new(10, 99, subnet, 1);
        let mgmt_server = Ipv4Addr::new(10, 99, subnet, 2);

        let dir = std::env::temp_dir().join(format!("bootcache-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        let tftp_root = dir.join("tftp");
        let cache_dir = dir.join("cache");
        std::fs::create_dir_all(&tftp_root)
            .with_context(|| format!("creating {}", tftp_root.display()))?;
        std::fs::create_dir_all(&cache_dir)?;

        live(|m| {
            m.insert(
                prefix.clone(),
                Owned {
                    pids: vec![],
                    namespaces: vec![server_ns.clone(), client_ns.clone()],
                    links: vec![client_link.clone(), server_link.clone(), mgmt_link.clone()],
                },
            )
        });
        let t = Topology {
            prefix,
            server_ns,
            client_ns,
            client_link,
            server_link,
            mgmt_link,
            mgmt_root,
            mgmt_server,
            dir,
            tftp_root,
            cache_dir,
            // BOOTCACHE_KEEP_DIR=1 keeps the logs of a failing test.
            keep_dir: opts.keep_dir || std::env::var_os("BOOTCACHE_KEEP_DIR").is_some(),
            bootcache_bin: opts
                .bootcache_bin
                .clone()
                .unwrap_or_else(process::default_bootcache_bin),
            dnsmasq: None,
            agent: None,
            bootcache: None,
            bootcache_runs: 0,
            testpmd: None,
            testpmd_runs: 0,
            bootcache_cmdline: String::new(),
            lcores: opts.lcores.clone().unwrap_or_else(|| LCORES.to_string()),
            qpairs: opts.qpairs.unwrap_or(1).max(1),
            programs_cpus: opts.programs_cpus.clone(),
            next_server: None,
            firmware: Firmware::Ipxe,
            origin_iface: "eth0",
            client_mac: CLIENT_MAC.into(),
        };
        t.build().context("building the topology")?;
        Ok(t)
    }

    fn build(&self) -> Result<()> {
        let (s, c) = (&self.server_ns, &self.client_ns);
        ip(&["netns", "add", s])?;
        ip(&["netns", "add", c])?;
        let off = "tx off rx off sg off gso off tso off gro off";
        for (root, ns, inner) in [
            (&self.client_link, c, "eth0"),
            (&self.server_link, s, "eth0"),
            (&self.mgmt_link, s, "mgmt0"),
        ] {
            let peer = format!("{root}p");
            ip(&["link", "add", root, "type", "veth", "peer", "name", &peer])?;
            ip(&["link", "set", &peer, "netns", ns])?;
            in_ns(ns, &format!("ip link set {peer} name {inner}"))?;
            // The host's own IPv6 chatter (RS, MLD) must not enter the bridge.
            std::fs::write(format!("/proc/sys/net/ipv6/conf/{root}/disable_ipv6"), "1")
                .with_context(|| format!("disabling IPv6 on {root}"))?;
            let _ = quiet(
                Command::new("ethtool")
                    .args(["-K", root])
                    .args(off.split(' ')),
            );
            ip(&["link", "set", root, "up"])?;
        }
        ip(&[
            "addr",
            "add",
            &format!("{}/30", self.mgmt_root),
            "dev",
            &self.mgmt_link,
        ])?;
        // Offloads off on every sender: with TX checksum offload af_packet
        // hands DPDK partial checksums that UDP receivers drop.
        in_ns(
            s,
            &format!(
                "ip link set lo up
                 ethtool -K eth0 {off} >/dev/null 2>&1 || true
                 ethtool -K mgmt0 {off} >/dev/null 2>&1 || true
                 ip link set eth0 up; ip link set mgmt0 up
                 ip addr add {SERVER_IP}/24 dev eth0
                 ip -6 addr add fd00:80::1/64 dev eth0 nodad
                 ip addr add {}/30 dev mgmt0",
                self.mgmt_server
            ),
        )?;
        // The client side is a bridge: plain clients use its address, qemu's
        // NIC is the tap beside the veth.
        in_ns(
            c,
            &format!(
                "ip link set lo up
                 ip link add br0 type bridge forward_delay 0 stp_state 0
                 ip tuntap add dev tap0 mode tap
                 for i in eth0 tap0 br0; do ethtool -K $i {off} >/dev/null 2>&1 || true; done
                 ip link set eth0 master br0; ip link set tap0 master br0
                 ip link set eth0 up; ip link set tap0 up; ip link set br0 up
                 ip addr add {CLIENT_IP}/24 dev br0"
            ),
        )?;
        // The bridge's port goes through listening state; wait until it forwards.
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            let st = in_ns(c, "ip -o link show br0").unwrap_or_default();
            if st.contains("state UP") {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn own_pid(&self, pid: u32) {
        live(|m| {
            if let Some(o) = m.get_mut(&self.prefix) {
                o.pids.push(pid);
            }
        });
    }

    fn disown_pid(&self, pid: u32) {
        live(|m| {
            if let Some(o) = m.get_mut(&self.prefix) {
                o.pids.retain(|&p| p != pid);
            }
        });
    }

    /// A command run in the client namespace.
    pub fn client_cmd(&self, program: &str) -> Command {
        self.ns_cmd(&self.client_ns, program)
    }

    /// A command run in the server namespace.
    pub fn server_cmd(&self, program: &str) -> Command {
        self.ns_cmd(&self.server_ns, program)
    }

    fn ns_cmd(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]);
        if let Some(cpus) = &self.programs_cpus {
            c.args(["taskset", "-c", cpus]);
        }
        c.arg(program);
        c
    }

    fn spawn_logged(&self, mut cmd: Command, log: &Path) -> Result<Child> {
        let f =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        self.own_pid(child.id());
        Ok(child)
    }

    fn stop_child(&self, child: Option<Child>) {
        if let Some(mut ch) = child {
            terminate(ch.id(), Duration::from_secs(3));
            let _ = ch.wait();
            self.disown_pid(ch.id());
        }
    }
}

/// One PXE boot of the qemu client.
#[derive(Debug)]
pub struct Boot {
    /// From qemu's start to its exit (or the timeout).
    pub elapsed: Duration,
    /// qemu was killed at the timeout.
    pub timed_out: bool,
    /// The marker line the initrd printed, if it did.
    pub marker: Option<String>,
    /// The whole serial console output.
    pub serial: String,
}

// VLANs (issue 13): boot LANs on VLANs of the one bridged segment, each
// with the same addresses, so that only the tags tell them apart. Kept in
// one block: `add_vlan` builds on a topology and registers what it creates
// with it (cleanup by `Drop` and `cleanup_all` as for the rest).

/// The boot server's address on every VLAN of [`Topology::add_vlan`]: the
/// same on each, as sites with overlapping subnets have it.
pub const VLAN_SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 81, 0, 1);
/// The client's address on every VLAN, the same on each too.
pub const VLAN_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 81, 0, 50);

/// The tc programs of a VLAN's switch port (compiled per VLAN with `VID`,
/// the access veth's `ACCESS` and the trunk's `TRUNK` ifindex): on the
/// trunk's ingress, frames of `VID` lose their tag and go to the access
/// link, others go on to the next filter; on the access link's ingress,
/// frames get the tag and go out of the trunk. The kernel has moved a
/// received tag into the packet's metadata before tc runs.
pub const VLAN_TC_PROGRAM: &str = r#"
#include <linux/bpf.h>
#include <linux/pkt_cls.h>

static long (*bpf_redirect)(__u32 ifindex, __u64 flags) = (void *)BPF_FUNC_redirect;
static long (*bpf_skb_vlan_push)(struct __sk_buff *skb, __be16 proto, __u16 tci) =
    (void *)BPF_FUNC_skb_vlan_push;
static long (*bpf_skb_vlan_pop)(struct __sk_buff *skb) = (void *)BPF_FUNC_skb_vlan_pop;

__attribute__((section("tc/trunk"), used)) int trunk(struct __sk_buff *skb)
{
    if (!skb->vlan_present || (skb->vlan_tci & 0x0fff) != VID)
        return TC_ACT_UNSPEC;
    if (bpf_skb_vlan_pop(skb))
        return TC_ACT_SHOT;
    return bpf_redirect(ACCESS, 0);
}

__attribute__((section("tc/access"), used)) int access(struct __sk_buff *skb)
{
    if (bpf_skb_vlan_push(skb, __builtin_bswap16(0x8100), VID))
        return TC_ACT_SHOT;
    return bpf_redirect(TRUNK, 0);
}

char _license[] __attribute__((section("license"), used)) = "GPL";
"#;

/// One VLAN of a topology: a server namespace with its own TFTP server
/// (dnsmasq, TFTP only) and root, and a client namespace.
#[derive(Debug)]
pub struct Vlan {
    /// The VLAN ID.
    pub vid: u16,
    /// The VLAN's boot server namespace (`eth0` is `eth0.<vid>` of the
    /// topology's server veth, [`VLAN_SERVER_IP`]).
    pub server_ns: String,
    /// The VLAN's client namespace (`eth0` is `br0.<vid>` of the client
    /// bridge, [`VLAN_CLIENT_IP`]).
    pub client_ns: String,
    /// Its TFTP server's root.
    pub tftp_root: PathBuf,
    /// Its TFTP server's log (every transfer).
    pub log: PathBuf,
}

impl Vlan {
    /// Writes `content` as `name` into this VLAN's TFTP root.
    pub fn put_file(&self, name: &str, content: &[u8]) -> Result<()> {
        let p = self.tftp_root.join(name);
        std::fs::write(&p, content).with_context(|| format!("writing {}", p.display()))
    }

    /// Transfers this VLAN's TFTP server sent or tried to send.
    pub fn origin_transfers(&self) -> Vec<String> {
        dnsmasq_transfers(&self.log, &self.tftp_root)
    }

    /// Transfers of `name` this VLAN's TFTP server sent so far.
    pub fn origin_count(&self, name: &str) -> usize {
        self.origin_transfers()
            .iter()
            .filter(|n| *n == name)
            .count()
    }
}

impl Topology {
    /// Adds VLAN `vid` (1–4094) and starts its TFTP server: namespace
    /// `<prefix>-s<vid>` ([`VLAN_SERVER_IP`]) hangs off the server namespace's
    /// `eth0`, `<prefix>-c<vid>` ([`VLAN_CLIENT_IP`]) off the client
    /// namespace's, each through a veth pair whose frames the kernel tags
    /// with `vid` on their way to the trunk (the `eth0` facing bootcache)
    /// and untags on their way back: a VLAN-aware switch port, done by
    /// [`VLAN_TC_PROGRAM`] (this machine's kernels lack 802.1Q devices and
    /// bridge VLAN filtering). Frames cross bootcache tagged.
    pub fn add_vlan(&self, vid: u16) -> Result<Vlan> {
        if !(1..=4094).contains(&vid) {
            bail!("VLAN ID {vid}: 1-4094");
        }
        let clang = find_tool("clang")
            .ok_or_else(|| anyhow!("clang not found (Debian package clang): run scripts/setup"))?;
        let v = Vlan {
            vid,
            server_ns: format!("{}-s{vid}", self.prefix),
            client_ns: format!("{}-c{vid}", self.prefix),
            tftp_root: self.dir.join(format!("tftp-vlan{vid}")),
            log: self.dir.join(format!("dnsmasq-vlan{vid}.log")),
        };
        std::fs::create_dir_all(&v.tftp_root)?;
        let source = self.dir.join("vlan_tc.c");
        std::fs::write(&source, VLAN_TC_PROGRAM)?;
        live(|m| {
            if let Some(o) = m.get_mut(&self.prefix) {
                o.namespaces
                    .extend([v.server_ns.clone(), v.client_ns.clone()]);
            }
        });
        let off = "tx off rx off sg off gso off tso off gro off";
        let access = format!("vl{vid}");
        for (trunk_ns, ns, addr, side) in [
            (&self.server_ns, &v.server_ns, VLAN_SERVER_IP, "s"),
            (&self.client_ns, &v.client_ns, VLAN_CLIENT_IP, "c"),
        ] {
            ip(&["netns", "add", ns])?;
            in_ns(
                trunk_ns,
                &format!(
                    "ip link add {access} type veth peer name {access}p
                     ip link set {access}p netns {ns}
                     ethtool -K {access} {off} >/dev/null 2>&1 || true
                     ip link set {access} up"
                ),
            )?;
            in_ns(
                ns,
                &format!(
                    "ip link set lo up
                     sysctl -qw net.ipv6.conf.all.disable_ipv6=1
                     ip link set {access}p name eth0
                     ethtool -K eth0 {off} >/dev/null 2>&1 || true
                     ip link set eth0 up
                     ip addr add {addr}/24 dev eth0"
                ),
            )?;
            let ifindex = |dev: &str| -> Result<u32> {
                let line = in_ns(trunk_ns, &format!("ip -o link show dev {dev}"))?;
                line.split(':')
                    .next()
                    .and_then(|n| n.trim().parse().ok())
                    .ok_or_else(|| anyhow!("no ifindex for {dev} in {trunk_ns}: {line}"))
            };
            let object = self.dir.join(format!("vlan_tc_{side}{vid}.o"));
            run(Command::new(&clang)
                .args(["-O2", "-target", "bpf", "-c"])
                // Debian keeps asm/ under the multiarch directory.
                .arg(format!(
                    "-I/usr/include/{}-linux-gnu",
                    std::env::consts::ARCH
                ))
                .arg(format!("-DVID={vid}"))
                .arg(format!("-DACCESS={}", ifindex(&access)?))
                .arg(format!("-DTRUNK={}", ifindex("eth0")?))
                .arg(&source)
                .arg("-o")
                .arg(&object))
            .context(
                "compiling the VLAN tc program (clang and the kernel headers: run scripts/setup)",
            )?;
            let o = object.display();
            // One trunk filter per VLAN, by preference: a frame of another
            // VLAN, or untagged, goes on to the next and then the stack.
            in_ns(
                trunk_ns,
                &format!(
                    "tc qdisc show dev eth0 | grep -q clsact || tc qdisc add dev eth0 clsact
                     tc filter add dev eth0 ingress pref {vid} bpf da obj {o} sec tc/trunk
                     tc qdisc add dev {access} clsact
                     tc filter add dev {access} ingress bpf da obj {o} sec tc/access"
                ),
            )?;
        }
        let conf = format!(
            "port=0\ninterface=eth0\nbind-interfaces\nno-resolv\nno-hosts\nuser=root\ngroup=root\n\
             log-facility={}\nenable-tftp\ntftp-root={}\n",
            v.log.display(),
            v.tftp_root.display(),
        );
        let conf_path = self.dir.join(format!("dnsmasq-vlan{vid}.conf"));
        std::fs::write(&conf_path, conf)?;
        let dnsmasq =
            find_tool("dnsmasq").ok_or_else(|| anyhow!("dnsmasq not found: run scripts/setup"))?;
        let mut cmd = self.ns_cmd(&v.server_ns, &dnsmasq.to_string_lossy());
        cmd.arg("--keep-in-foreground")
            .arg(format!("--conf-file={}", conf_path.display()))
            .arg("--pid-file=");
        let out = self.dir.join(format!("dnsmasq-vlan{vid}.out"));
        // Owned by the topology: stopped with it.
        self.spawn_logged(cmd, &out)?;
        wait_for_text(&v.log, "TFTP root is", Duration::from_secs(10)).map_err(|e| {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            anyhow!("dnsmasq on VLAN {vid} did not start: {e}: {}", text.trim())
        })?;
        Ok(v)
    }

    /// bootcache's configuration for the VLANs: [`VLAN_SERVER_IP`] as boot
    /// server, cache hits served while younger than an hour (no agent: one
    /// agent address cannot stand for a server per VLAN), and
    /// `share_across_vlans` as given.
    pub fn write_vlan_config(&self, share_across_vlans: bool) -> Result<PathBuf> {
        let p = self.dir.join("bootcache.toml");
        let text = format!(
            "servers = [\"{VLAN_SERVER_IP}\"]\ncache_dir = \"{}\"\nserve_max_age = 3600\n\n\
             [cache]\nshare_across_vlans = {share_across_vlans}\n\n[limits]\nredirect_ring = {REDIRECT_RING}\n",
            self.cache_dir.display(),
        );
        std::fs::write(&p, text)?;
        Ok(p)
    }

    /// Reads `name` with curl from VLAN `v`'s client, from its server.
    pub fn vlan_curl_get(
        &self,
        v: &Vlan,
        name: &str,
        blksize: Option<u16>,
        out: &Path,
    ) -> Result<Duration> {
        self.curl_get_in(&v.client_ns, VLAN_SERVER_IP, name, blksize, out)
    }

    /// Reads `name` with tftp-hpa's `tftp` from VLAN `v`'s client.
    pub fn vlan_tftp_hpa_get(&self, v: &Vlan, name: &str, out: &Path) -> Result<Duration> {
        self.tftp_hpa_get_in(&v.client_ns, VLAN_SERVER_IP, name, out)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Some(bc) = self.bootcache.take() {
            let pid = bc.pid();
            let _ = bc.stop(Duration::from_secs(10));
            self.disown_pid(pid);
        }
        self.stop_testpmd();
        self.stop_agent();
        self.stop_origin();
        let owned = live(|m| m.remove(&self.prefix));
        if let Some(o) = owned {
            teardown(&o);
        }
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The last `n` lines of `text`, on one line.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

/// `arg` as one shell word (quoted when it holds anything but plain
/// characters), for printing commands that can be pasted.
pub fn shell_word(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=.,/:@+%".contains(&b));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// The TFTP transfers a dnsmasq logged in `log`, by path relative to `root`.
fn dnsmasq_transfers(log: &Path, root: &Path) -> Vec<String> {
    dnsmasq_transfer_peers(log, root)
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

/// [`dnsmasq_transfers`] with the address each was sent to.
fn dnsmasq_transfer_peers(log: &Path, root: &Path) -> Vec<(String, String)> {
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let root = format!("{}/", root.display());
    log.lines()
        .filter_map(|l| {
            let rest = l.split_once("dnsmasq-tftp")?.1;
            let path = rest
                .split_once(": sent ")
                .or_else(|| rest.split_once(": failed sending "))?
                .1;
            let (path, peer) = path.rsplit_once(" to ")?;
            let name = path.strip_prefix(&root).unwrap_or(path).to_string();
            Some((name, peer.trim().to_string()))
        })
        .collect()
}

fn timed(cmd: &mut Command) -> Result<Duration> {
    let t = Instant::now();
    run(cmd)?;
    Ok(t.elapsed())
}

fn wait_for_text(path: &Path, text: &str, timeout: Duration) -> Result<()> {
    let t = Instant::now();
    loop {
        if std::fs::read_to_string(path).is_ok_and(|s| s.contains(text)) {
            return Ok(());
        }
        if t.elapsed() > timeout {
            bail!("no {text:?} in {} after {timeout:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A counter of bootcache's last JSON statistics object (the harness
/// starts it with `--stats-json`): the one reader, in `process`.
pub use crate::process::stat;

/// SHA-256 of a file, hex (via `sha256sum`: the files are tens of MiB).
pub fn sha256_file(path: &Path) -> Result<String> {
    let out = run(Command::new("sha256sum").arg(path))?;
    out.split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("sha256sum {}: no output", path.display()))
}

/// A topology for an end-to-end test: the prerequisites are checked first
/// (a missing program or too few hugepages fails the test with its
/// one-line cause, never skips it), then the namespaces are created.
pub fn test_topology(opts: &Options) -> Topology {
    if let Err(e) = check_prerequisites(false) {
        panic!("end-to-end prerequisites: {e:#}");
    }
    Topology::create(opts).unwrap_or_else(|e| panic!("creating the namespaces: {e:#}"))
}

/// The files an iPXE boot of the test client loads, in order.
pub const PXE_FILES: [&str; 3] = [IPXE_SCRIPT, "vmlinuz", "initrd.gz"];

/// A topology for a PXE boot test: the prerequisites (qemu, iPXE, the
/// images of `scripts/pxe-images` in `BOOTCACHE_PXE_DIR` or
/// [`DEFAULT_IMAGES`]) checked as [`test_topology`] does, the namespaces
/// created and the PXE files installed on the origin.
pub fn pxe_test_topology(opts: &Options) -> Topology {
    if let Err(e) = check_prerequisites(true) {
        panic!("end-to-end prerequisites: {e:#}");
    }
    let t = Topology::create(opts).unwrap_or_else(|e| panic!("creating the namespaces: {e:#}"));
    t.install_pxe_files(&pxe_images_dir())
        .unwrap_or_else(|e| panic!("installing the PXE files: {e:#}"));
    t
}

/// Where the kernel and initrd of `scripts/pxe-images` are:
/// `BOOTCACHE_PXE_DIR`, or [`DEFAULT_IMAGES`].
pub fn pxe_images_dir() -> PathBuf {
    std::env::var_os("BOOTCACHE_PXE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| DEFAULT_IMAGES.into())
}

/// A new version of the initrd in `images`: the original with a second
/// archive appended whose `/init` (the kernel unpacks the archives in
/// order, the later file replacing the earlier) prints `initrd=<variant>`
/// at the end of the marker line, so a booted guest shows which initrd
/// bytes it ran. Made with gzip and cpio's reader; the archive itself is
/// written here ([`newc_archive`]).
pub fn initrd_variant(images: &Path, variant: &str) -> Result<Vec<u8>> {
    let initrd = images.join("initrd.gz");
    let old = std::fs::read(&initrd).with_context(|| {
        format!(
            "{} missing: run scripts/setup (it runs scripts/pxe-images)",
            initrd.display()
        )
    })?;
    let script = format!(
        "gzip -dc {} | cpio -i --quiet --to-stdout init",
        shell_word(&initrd.to_string_lossy())
    );
    let init = run(Command::new("sh").args(["-c", &script]))
        .context("reading /init from the initrd (gzip, cpio: run scripts/setup)")?;
    let line_end = "kernel=$(uname -r)\"";
    if !init.contains(line_end) {
        bail!("{}: its /init prints no marker line ending in {line_end}: run scripts/pxe-images again", initrd.display());
    }
    let init = init.replace(line_end, &format!("kernel=$(uname -r) initrd={variant}\""));
    let cpio = newc_archive(&[("init", 0o100_755, init.as_bytes())]);
    let mut gzip = Command::new("gzip")
        .args(["-9n"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("gzip (Debian package gzip)")?;
    let mut stdin = gzip.stdin.take().context("gzip's stdin")?;
    // The archive is a few kB: gzip reads it all before its output fills a pipe.
    std::io::Write::write_all(&mut stdin, &cpio)?;
    drop(stdin);
    let out = gzip.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "gzip failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut new = old;
    new.extend(out.stdout);
    Ok(new)
}

/// A cpio archive in the kernel's initramfs format (`newc`: ASCII headers,
/// names and data padded to 4 bytes, a `TRAILER!!!` entry last, zeros to
/// a whole 512-byte block) of
/// `(name, mode, content)` files.
pub fn newc_archive(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let pad = |out: &mut Vec<u8>| out.resize(out.len().next_multiple_of(4), 0);
    let trailer: (&str, u32, &[u8]) = ("TRAILER!!!", 0, &[]);
    for (ino, (name, mode, data)) in files.iter().chain([&trailer]).enumerate() {
        // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
        // rdevmajor, rdevminor, namesize (with its NUL), check.
        let fields = [
            ino as u32 + 1,
            *mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        pad(&mut out);
        out.extend_from_slice(data);
        pad(&mut out);
    }
    // Whole 512-byte blocks, as cpio writes them (its reader wants them).
    out.resize(out.len().next_multiple_of(512), 0);
    out
}

/// SHA-256 of `bytes`, hex, the way [`sha256_file`] prints it (through a
/// scratch file in `dir`: the tests compare against `sha256sum`'s output).
pub fn sha256_bytes(bytes: &[u8], dir: &Path, name: &str) -> Result<String> {
    let p = dir.join(name);
    std::fs::write(&p, bytes)?;
    let s = sha256_file(&p);
    let _ = std::fs::remove_file(&p);
    s
}

/// `len` bytes of deterministic pseudo-random content (xorshift), distinct
/// per `seed`: incompressible and quick to make.
pub fn test_content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

// ---------------------------------------------------------------------------
// Boot firmware (issue 16): what each real firmware needs from the origin
// (DHCP answer, files in the TFTP root) and from qemu.

/// OVMF's code and variable-store template (Debian package `ovmf`).
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// iPXE for UEFI, driving the NIC through the firmware's SNP (package `ipxe`).
const IPXE_EFI: &str = "/usr/lib/ipxe/snponly.efi";
/// pxelinux and its one mandatory module (packages `pxelinux`, `syslinux-common`).
const PXELINUX: &str = "/usr/lib/PXELINUX/pxelinux.0";
const LDLINUX: &str = "/usr/lib/syslinux/modules/bios/ldlinux.c32";
/// GRUB's BIOS modules, `grub-mknetdir`'s input (package `grub-pc-bin`).
const GRUB_PC: &str = "/usr/lib/grub/i386-pc";

/// A real boot firmware and network boot program the qemu client runs; each
/// keeps its files in its own directory of the TFTP root, so that its first
/// boot is cold even when another firmware booted before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Firmware {
    /// SeaBIOS and qemu's iPXE ROM: [`IPXE_SCRIPT`] → kernel + initrd.
    #[default]
    Ipxe,
    /// OVMF (EDK2's own PXE, which probes each file's size first) →
    /// iPXE's `snponly.efi` → `uefi/boot.ipxe` → kernel (EFI stub) + initrd.
    Uefi,
    /// SeaBIOS and the iPXE ROM → `pxelinux.0` → `ldlinux.c32` →
    /// `pxelinux.cfg/default` → kernel + initrd.
    Pxelinux,
    /// SeaBIOS and the iPXE ROM → GRUB's `core.0` (i386-pc, from
    /// `grub-mknetdir`) → its modules and `grub.cfg` → kernel + initrd.
    Grub,
}

impl Firmware {
    /// Every firmware, in the order the tests and the README list them.
    pub const ALL: [Firmware; 4] = [
        Firmware::Ipxe,
        Firmware::Uefi,
        Firmware::Pxelinux,
        Firmware::Grub,
    ];

    /// The name on the command line (`--firmware`).
    pub fn name(self) -> &'static str {
        match self {
            Firmware::Ipxe => "ipxe",
            Firmware::Uefi => "uefi",
            Firmware::Pxelinux => "pxelinux",
            Firmware::Grub => "grub",
        }
    }

    /// The firmware called `name` ([`Firmware::name`]).
    pub fn from_name(name: &str) -> Result<Firmware> {
        Firmware::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| anyhow!("unknown firmware {name:?}: one of ipxe, uefi, pxelinux, grub"))
    }

    /// What boots, in a few words.
    pub fn describe(self) -> &'static str {
        match self {
            Firmware::Ipxe => "SeaBIOS + iPXE ROM",
            Firmware::Uefi => "OVMF UEFI PXE → iPXE snponly.efi",
            Firmware::Pxelinux => "SeaBIOS + iPXE ROM → pxelinux",
            Firmware::Grub => "SeaBIOS + iPXE ROM → GRUB i386-pc",
        }
    }

    /// Its directory in the TFTP root, with a trailing `/` (iPXE's files
    /// stay in the root, where the older tests expect them).
    pub fn dir(self) -> &'static str {
        match self {
            Firmware::Ipxe => "",
            Firmware::Uefi => "uefi/",
            Firmware::Pxelinux => "pxelinux/",
            Firmware::Grub => "grub/",
        }
    }

    /// The configuration it reads over TFTP (boot script or menu), relative
    /// to the TFTP root.
    pub fn config_file(self) -> String {
        let name = match self {
            Firmware::Ipxe | Firmware::Uefi => IPXE_SCRIPT,
            Firmware::Pxelinux => "pxelinux.cfg/default",
            Firmware::Grub => "grub.cfg",
        };
        format!("{}{name}", self.dir())
    }

    /// The files every boot loads over TFTP that the origin logs as sent,
    /// in order (GRUB also loads some of its modules, not listed).
    pub fn boot_files(self) -> Vec<String> {
        let d = self.dir();
        let first: &[&str] = match self {
            Firmware::Ipxe => &[],
            Firmware::Uefi => &["snponly.efi"],
            Firmware::Pxelinux => &["pxelinux.0", "ldlinux.c32"],
            Firmware::Grub => &["i386-pc/core.0"],
        };
        let mut v: Vec<String> = first.iter().map(|f| format!("{d}{f}")).collect();
        v.push(self.config_file());
        v.extend(["vmlinuz", "initrd.gz"].map(|f| format!("{d}{f}")));
        v
    }

    /// dnsmasq's lines choosing the boot file (`next_server`: the
    /// `,,<address>` suffix of `dhcp-boot`, or empty).
    fn dhcp_conf(self, next_server: &str) -> String {
        match self {
            Firmware::Ipxe => {
                format!("dhcp-match=set:ipxe,175\ndhcp-boot=tag:ipxe,{IPXE_SCRIPT}{next_server}\n")
            }
            // UEFI clients say their architecture in option 93 (7: x64 EFI
            // BC, 9: x64 EFI); iPXE, once loaded, says it is iPXE (175) and
            // gets the script instead.
            Firmware::Uefi => format!(
                "dhcp-match=set:ipxe,175\n\
                 dhcp-match=set:efi64,option:client-arch,7\n\
                 dhcp-match=set:efi64,option:client-arch,9\n\
                 dhcp-boot=tag:efi64,tag:!ipxe,uefi/snponly.efi{next_server}\n\
                 dhcp-boot=tag:ipxe,{}{next_server}\n",
                self.config_file()
            ),
            // The BIOS ROM is iPXE, which runs any PXE boot program it is given.
            Firmware::Pxelinux => format!("dhcp-boot=pxelinux/pxelinux.0{next_server}\n"),
            Firmware::Grub => format!("dhcp-boot=grub/i386-pc/core.0{next_server}\n"),
        }
    }

    /// The configuration's text: the kernel and initrd over TFTP with the
    /// command line whose `bcvariant=` the initrd prints with the marker.
    fn config_text(self, variant: &str) -> String {
        // The kernel prints on the serial console only; quiet keeps the log
        // short. no_timer_check: under emulation on a loaded host the
        // guest's IO-APIC timer check can miss its ticks and panic ("IO-APIC
        // + timer doesn't work", seen once in CI at load average 12).
        let args = format!("console=ttyS0 quiet panic=-1 no_timer_check bcvariant={variant}");
        let d = self.dir();
        let efi = if self == Firmware::Uefi {
            "initrd=initrd.gz "
        } else {
            ""
        };
        match self {
            // Debian's iPXE for EFI hands the initrd to the kernel's EFI
            // stub as a file the stub loads by the name `initrd=` gives.
            Firmware::Ipxe | Firmware::Uefi => format!(
                "#!ipxe\n\
                 kernel tftp://${{next-server}}/{d}vmlinuz {efi}{args}\n\
                 initrd tftp://${{next-server}}/{d}initrd.gz\n\
                 boot\n"
            ),
            // Relative names: pxelinux prefixes the directory it came from.
            Firmware::Pxelinux => format!(
                "DEFAULT linux\nPROMPT 0\nTIMEOUT 0\n\
                 LABEL linux\n  KERNEL vmlinuz\n  INITRD initrd.gz\n  APPEND {args}\n"
            ),
            // GRUB's root is the TFTP server it came from.
            Firmware::Grub => format!(
                "set timeout=0\n\
                 linux /{d}vmlinuz {args}\n\
                 initrd /{d}initrd.gz\n\
                 boot\n"
            ),
        }
    }

    /// What it needs installed on this machine; each missing piece is one
    /// line naming the package.
    pub fn check(self) -> Result<()> {
        let need: &[(&str, &str)] = match self {
            Firmware::Ipxe => &[],
            Firmware::Uefi => &[(OVMF_CODE, "ovmf"), (OVMF_VARS, "ovmf"), (IPXE_EFI, "ipxe")],
            Firmware::Pxelinux => &[(PXELINUX, "pxelinux"), (LDLINUX, "syslinux-common")],
            Firmware::Grub => &[(GRUB_PC, "grub-pc-bin")],
        };
        for (path, pkg) in need {
            if !Path::new(path).exists() {
                bail!("{path} missing (Debian package {pkg}): run scripts/setup");
            }
        }
        if self == Firmware::Grub && !which("grub-mknetdir") {
            bail!("grub-mknetdir not found (Debian package grub-common): run scripts/setup");
        }
        Ok(())
    }

    /// qemu's machine, memory, firmware and NIC for boot `tag` (UEFI's
    /// variable store is copied into `dir`, fresh for each boot).
    fn qemu_args(self, accel: &str, dir: &Path, tag: &str, mac: &str) -> Result<Vec<String>> {
        let mac = format!("mac={mac}");
        let v: Vec<String> = match self {
            Firmware::Ipxe | Firmware::Pxelinux | Firmware::Grub => [
                "-machine",
                &format!("pc,accel={accel}"),
                "-m",
                "256",
                "-boot",
                "n",
                "-device",
                &format!("virtio-net-pci,netdev=n0,{mac}"),
            ]
            .map(String::from)
            .to_vec(),
            Firmware::Uefi => {
                let vars = dir.join(format!("OVMF_VARS-{tag}.fd"));
                std::fs::copy(OVMF_VARS, &vars)
                    .with_context(|| format!("copying {OVMF_VARS} (Debian package ovmf)"))?;
                [
                    "-machine",
                    &format!("q35,accel={accel}"),
                    "-m",
                    "512",
                    "-drive",
                    &format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
                    "-drive",
                    &format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
                    // No option ROM: EDK2's own virtio-net driver and PXE,
                    // as on a machine whose NIC has no iPXE.
                    "-device",
                    &format!("virtio-net-pci,netdev=n0,{mac},romfile=,bootindex=1"),
                ]
                .map(String::from)
                .to_vec()
            }
        };
        Ok(v)
    }
}

impl Topology {
    /// Makes the next [`Topology::start_origin`] hand clients `fw`'s boot
    /// file and [`Topology::boot_pxe`] boot qemu with `fw`.
    pub fn set_firmware(&mut self, fw: Firmware) {
        self.firmware = fw;
    }

    /// Makes [`Topology::boot_pxe`]'s qemu client use `mac` (two sites on
    /// one LAN: one MAC address each, as two machines have).
    pub fn set_client_mac(&mut self, mac: &str) {
        self.client_mac = mac.into();
    }

    /// The firmware [`Topology::set_firmware`] chose.
    pub fn firmware(&self) -> Firmware {
        self.firmware
    }

    /// Puts `fw`'s files into its directory of the TFTP root: its boot
    /// program, the kernel and initrd of `scripts/pxe-images` in `images`,
    /// and its configuration with `bcvariant=1`.
    pub fn install_firmware_files(&self, fw: Firmware, images: &Path) -> Result<()> {
        fw.check()?;
        let d = fw.dir();
        self.install_images_into(images, d)?;
        let copy = |src: &str, name: &str| -> Result<()> {
            let bytes = std::fs::read(src).with_context(|| format!("reading {src}"))?;
            self.put_file(&format!("{d}{name}"), &bytes)
        };
        match fw {
            Firmware::Ipxe => {}
            Firmware::Uefi => copy(IPXE_EFI, "snponly.efi")?,
            Firmware::Pxelinux => {
                copy(PXELINUX, "pxelinux.0")?;
                copy(LDLINUX, "ldlinux.c32")?;
            }
            Firmware::Grub => {
                // core.0 with the PXE and TFTP drivers built in; its prefix
                // (the modules, grub.cfg) is grub/ on the same server.
                let out = run(Command::new("grub-mknetdir")
                    .arg(format!("--net-directory={}", self.tftp_root.display()))
                    .arg("--subdir=grub")
                    .args(["-d", GRUB_PC]));
                out.context("grub-mknetdir")?;
            }
        }
        self.install_boot_config(fw, "1")
    }

    /// `fw`'s configuration with `bcvariant=variant` on the kernel command
    /// line (the initrd prints it with the marker).
    pub fn install_boot_config(&self, fw: Firmware, variant: &str) -> Result<()> {
        self.put_file(&fw.config_file(), fw.config_text(variant).as_bytes())
    }
}

/// The TFTP requests, option acknowledgements and errors on the client
/// side's wire ([`Topology::capture_tftp`]): `tcpdump` in the client
/// namespace writes them (DATA and ACK filtered out) to a pcap file.
pub struct TftpCapture {
    child: Child,
    pcap: PathBuf,
}

impl Topology {
    /// Starts capturing the TFTP control packets on the client side
    /// (requests, OACKs, errors; not DATA or ACK): what the firmware asks
    /// and what the server — origin or bootcache — answers.
    pub fn capture_tftp(&self, tag: &str) -> Result<TftpCapture> {
        let tcpdump = find_tool("tcpdump").ok_or_else(|| {
            anyhow!("tcpdump not found (Debian package tcpdump): run scripts/setup")
        })?;
        let pcap = self.dir.join(format!("tftp-{tag}.pcap"));
        let mut cmd = self.ns_cmd_plain(&self.client_ns, &tcpdump.to_string_lossy());
        // udp[8:2] is the TFTP opcode: 3 DATA, 4 ACK.
        cmd.args(["-i", "br0", "-U", "-s", "400", "-w"])
            .arg(&pcap)
            .arg("udp and not port 67 and not port 68 and not port 546 and not port 547 and udp[8:2] != 3 and udp[8:2] != 4");
        let log = self.dir.join(format!("tcpdump-{tag}.log"));
        let child = self.spawn_logged(cmd, &log)?;
        wait_for_text(&log, "listening on", Duration::from_secs(10))
            .map_err(|e| anyhow!("tcpdump did not start: {e}"))?;
        Ok(TftpCapture { child, pcap })
    }

    /// Stops `cap` and returns what it saw, one line a packet in wire order
    /// (`RRQ <file> <options>` from the client, `OACK <options>` and
    /// `ERROR <code> <message>` from either side, with the sender's
    /// address), repeated packets (retransmissions) once.
    pub fn tftp_captured(&self, cap: TftpCapture) -> Result<Vec<String>> {
        // SIGINT: tcpdump flushes the file and exits.
        terminate(cap.child.id(), Duration::from_secs(3));
        let mut child = cap.child;
        let _ = child.wait();
        self.disown_pid(child.id());
        let bytes =
            std::fs::read(&cap.pcap).with_context(|| format!("reading {}", cap.pcap.display()))?;
        let mut lines: Vec<String> = Vec::new();
        for frame in pcap_frames(&bytes)? {
            let Some(line) = tftp_summary(frame) else {
                continue;
            };
            if lines.last() != Some(&line) {
                lines.push(line);
            }
        }
        Ok(lines)
    }
}

/// The option exchanges in [`Topology::tftp_captured`]'s lines: each
/// distinct (options a request asked, what answered it) with how many
/// requests it was. Sizes are left out (`tsize=<size>`), so requests for
/// different files that were treated alike count together; a size probe
/// shows as an OACK the client ended with ERROR 8.
pub fn option_exchanges(lines: &[String]) -> Vec<(String, String, usize)> {
    // "<from> RRQ <file> <options>" → "<options>".
    let body = |l: &str| -> String {
        let words: Vec<&str> = l.split_whitespace().collect();
        let skip = if words.get(1) == Some(&"RRQ") { 3 } else { 2 };
        let opts: Vec<String> = words
            .iter()
            .skip(skip)
            .map(|w| match w.split_once('=') {
                Some(("tsize", v)) if v != "0" => "tsize=<size>".to_string(),
                _ => w.to_string(),
            })
            .collect();
        if opts.is_empty() {
            "no options".to_string()
        } else {
            opts.join(" ")
        }
    };
    let mut out: Vec<(String, String, usize)> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if !l.contains(" RRQ ") {
            continue;
        }
        let asked = body(l);
        let rest = &lines[i + 1..];
        let answered = match rest.iter().position(|n| !n.contains(" RRQ ")) {
            Some(j) if rest[j].contains(" OACK") => {
                let probe = rest.get(j + 1).is_some_and(|n| n.contains(" ERROR 8"));
                format!(
                    "OACK {}{}",
                    body(&rest[j]),
                    if probe {
                        ", then the client's ERROR 8 (size probe)"
                    } else {
                        ""
                    }
                )
            }
            Some(j) if rest[j].contains(" ERROR ") => {
                let code = rest[j].split_whitespace().nth(2).unwrap_or("?");
                format!("ERROR {code}")
            }
            // No OACK: the server took none of the options (DATA follows,
            // not captured).
            _ => "no OACK".to_string(),
        };
        match out
            .iter_mut()
            .find(|(a, b, _)| *a == asked && *b == answered)
        {
            Some(e) => e.2 += 1,
            None => out.push((asked, answered, 1)),
        }
    }
    out
}

/// The frames of a classic pcap file in this machine's byte order (what
/// tcpdump writes).
fn pcap_frames(bytes: &[u8]) -> Result<Vec<&[u8]>> {
    let u32_at = |i: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(bytes.get(i..i + 4)?.try_into().ok()?))
    };
    if u32_at(0) != Some(0xa1b2_c3d4) {
        bail!("not a pcap file in this machine's byte order (microsecond timestamps)");
    }
    let mut frames = Vec::new();
    let mut i = 24;
    while let Some(len) = u32_at(i + 8) {
        let start = i + 16;
        let end = start + len as usize;
        // A record cut short: tcpdump was stopped while writing it.
        let Some(f) = bytes.get(start..end) else {
            break;
        };
        frames.push(f);
        i = end;
    }
    Ok(frames)
}

/// One line for a TFTP control packet in an Ethernet frame, if it is one.
fn tftp_summary(frame: &[u8]) -> Option<String> {
    use wire::tftp::Packet;
    let (udp, payload) = wire::frame::UdpFrameRepr::parse(frame).ok()?;
    let opts = |o: &wire::tftp::Options<'_>| {
        let mut s = String::new();
        for (name, v) in [
            ("blksize", o.blksize.map(u64::from)),
            ("timeout", o.timeout.map(u64::from)),
            ("tsize", o.tsize),
            ("windowsize", o.windowsize.map(u64::from)),
        ] {
            if let Some(v) = v {
                let _ = write!(s, " {name}={v}");
            }
        }
        for u in &o.unknown {
            let _ = write!(
                s,
                " {}={}",
                String::from_utf8_lossy(u.name),
                String::from_utf8_lossy(u.value)
            );
        }
        s
    };
    let from = udp.src().ip();
    Some(match Packet::parse(payload).ok()? {
        Packet::Rrq(r) => format!(
            "{from} RRQ {}{}",
            String::from_utf8_lossy(r.filename),
            opts(&r.options)
        ),
        Packet::Oack(o) => format!("{from} OACK{}", opts(&o)),
        Packet::Error { code, message } => format!(
            "{from} ERROR {} {}",
            u16::from(code),
            String::from_utf8_lossy(message)
        ),
        _ => return None,
    })
}

/// Runs `start` again (at most three more times) when DPDK's af_packet
/// driver refused to set `PACKET_FANOUT`: DPDK 22.11 derives the fanout
/// group id from `(pid ^ ifindex) & 0xffff`, so two DPDK processes on
/// different veths collide whenever their pids differ exactly as their
/// interfaces' indexes do (the kernel then answers EINVAL). A new process
/// has a new pid, hence another group id. Seen once in CI with two bridges
/// started side by side.
fn retry_fanout_collision(mut start: impl FnMut() -> Result<()>) -> Result<()> {
    let mut attempt = 0;
    loop {
        match start() {
            Err(e) if attempt < 3 && format!("{e:#}").contains("PACKET_FANOUT") => {
                attempt += 1;
                log::warn!(
                    "af_packet fanout group id collided (pid ^ ifindex); starting again: {e:#}"
                );
            }
            r => return r,
        }
    }
}

/// Ctrl-C or SIGTERM: the children get SIGINT from the terminal too;
/// removes what is left (namespaces, links, any process still running)
/// and exits. For the demos.
pub fn cleanup_on_signals() {
    match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    eprintln!("demo: signal {sig}, cleaning up");
                    cleanup_all();
                    std::process::exit(130);
                }
            });
        }
        Err(e) => eprintln!(
            "demo: cannot install signal handlers ({e}); Ctrl-C may leave namespaces behind"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_quote_only_when_needed() {
        assert_eq!(shell_word("--lcores"), "--lcores");
        assert_eq!(
            shell_word("net_af_packet0,iface=x-c"),
            "net_af_packet0,iface=x-c"
        );
        assert_eq!(shell_word("0@(0,1),1@1"), "'0@(0,1),1@1'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn option_exchanges_group_requests_and_see_size_probes() {
        let wire: Vec<String> = [
            "10.80.0.108 RRQ uefi/snponly.efi blksize=1468 tsize=0 windowsize=4",
            "10.80.0.1 OACK blksize=1468 tsize=173792 windowsize=4",
            "10.80.0.108 ERROR 8 User aborted the transfer",
            "10.80.0.108 RRQ uefi/snponly.efi blksize=1468 windowsize=4",
            "10.80.0.1 OACK blksize=1468 windowsize=4",
            "10.80.0.108 RRQ a blksize=1432 tsize=0",
            "10.80.0.1 OACK blksize=1432 tsize=156",
            "10.80.0.108 RRQ b blksize=1432 tsize=0",
            "10.80.0.1 OACK blksize=1432 tsize=14190528",
            "10.80.0.108 RRQ c.cfg blksize=1432 tsize=0",
            "10.80.0.1 ERROR 1 file c.cfg not found",
            "10.80.0.108 RRQ d",
        ]
        .map(String::from)
        .to_vec();
        let ex = option_exchanges(&wire);
        let s = |a: &str, b: &str, n| (a.to_string(), b.to_string(), n);
        assert_eq!(
            ex,
            [
                s(
                    "blksize=1468 tsize=0 windowsize=4",
                    "OACK blksize=1468 tsize=<size> windowsize=4, then the client's ERROR 8 (size probe)",
                    1
                ),
                s("blksize=1468 windowsize=4", "OACK blksize=1468 windowsize=4", 1),
                s("blksize=1432 tsize=0", "OACK blksize=1432 tsize=<size>", 2),
                s("blksize=1432 tsize=0", "ERROR 1", 1),
                s("no options", "no OACK", 1),
            ]
        );
    }

    #[test]
    fn tftp_control_packets_are_summarised_from_frames() {
        use wire::frame::{MacAddr, UdpFrameRepr};
        use wire::tftp::{Packet, Request};
        let rrq = b"\x00\x01vmlinuz\x00octet\x00blksize\x001024\x00tsize\x000\x00";
        let repr = UdpFrameRepr::ipv4(
            MacAddr([2, 0, 0, 0, 0, 1]),
            MacAddr([2, 0, 0, 0, 0, 2]),
            "10.80.0.108:2000".parse().unwrap(),
            "10.80.0.1:69".parse().unwrap(),
        );
        let mut frame = vec![0u8; repr.buffer_len(rrq.len())];
        repr.emit(&mut frame, rrq).unwrap();
        assert_eq!(
            tftp_summary(&frame).as_deref(),
            Some("10.80.0.108 RRQ vmlinuz blksize=1024 tsize=0")
        );
        assert!(matches!(
            Packet::parse(rrq),
            Ok(Packet::Rrq(Request { .. }))
        ));
        // DATA is not a control packet; a truncated frame is nothing.
        let data = b"\x00\x03\x00\x01abc";
        let mut frame = vec![0u8; repr.buffer_len(data.len())];
        repr.emit(&mut frame, data).unwrap();
        assert_eq!(tftp_summary(&frame), None);
        assert_eq!(tftp_summary(&frame[..20]), None);
        // A pcap file: header, one record, a record cut short.
        let mut pcap = 0xa1b2_c3d4u32.to_ne_bytes().to_vec();
        pcap.resize(24, 0);
        for len in [frame.len() as u32, 99] {
            pcap.extend([0u8; 8]);
            pcap.extend(len.to_ne_bytes());
            pcap.extend(len.to_ne_bytes());
            pcap.extend(&frame);
        }
        assert_eq!(pcap_frames(&pcap).unwrap(), [frame.as_slice()]);
        assert!(pcap_frames(b"not a pcap").is_err());
    }

    #[test]
    fn a_newc_archive_reads_back_with_cpio() {
        let a = newc_archive(&[
            ("init", 0o100_755, b"#!/bin/sh\necho hi\n"),
            ("x", 0o100_644, b"abcde"),
        ]);
        assert_eq!(a.len() % 512, 0);
        assert!(a.starts_with(b"070701"));
        let dir = std::env::temp_dir().join(format!("testbed-newc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.cpio");
        std::fs::write(&p, &a).unwrap();
        let list = run(Command::new("cpio")
            .args(["-t", "-v", "--quiet", "-F"])
            .arg(&p))
        .unwrap();
        assert!(
            list.lines().next().unwrap().starts_with("-rwxr-xr-x"),
            "{list}"
        );
        assert!(list.contains(" init\n") && list.contains(" x\n"), "{list}");
        let x = run(Command::new("cpio")
            .args(["-i", "--quiet", "--to-stdout", "-F"])
            .arg(&p)
            .arg("x"))
        .unwrap();
        assert_eq!(x, "abcde");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn test_content_is_deterministic_and_distinct() {
        assert_eq!(test_content(1000, 1), test_content(1000, 1));
        assert_ne!(test_content(1000, 1), test_content(1000, 2));
        assert_eq!(test_content(1001, 3).len(), 1001);
    }
}
