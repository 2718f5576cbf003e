//! The fleet: a NATS JetStream server beside the agent.

use super::*;

// ---- The fleet (issue 14): a NATS JetStream server beside the agent, in
// the server namespace on the management link, for the agent to publish
// its table to and bootcache to mirror it from.

/// The NATS server's port on the management link.
pub const NATS_PORT: u16 = 4222;
/// The verification table's bucket in the topology.
pub const FLEET_BUCKET: &str = "bootcache";

/// A `nats-server -js` started by [`Topology::start_nats`]; stopped by
/// PID with [`NatsServer::stop`] or on drop.
pub struct NatsServer {
    child: Option<Child>,
    prefix: String,
    /// Its client URL, `nats://<management address>:4222`.
    pub url: String,
    /// Its log.
    pub log: PathBuf,
}

impl NatsServer {
    /// Stops the server (SIGTERM, then SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut ch) = self.child.take() {
            terminate(ch.id(), Duration::from_secs(3));
            let _ = ch.wait();
            live(|m| {
                if let Some(o) = m.get_mut(&self.prefix) {
                    o.pids.retain(|&p| p != ch.id());
                }
            });
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Topology {
    /// The NATS URL of [`Topology::start_nats`]'s server (`tls://` once
    /// [`Topology::enable_nats_tls`] was called).
    pub fn nats_url(&self) -> String {
        let scheme = if self.nats_tls().is_some() {
            "tls"
        } else {
            "nats"
        };
        format!("{scheme}://{}:{NATS_PORT}", self.mgmt_server)
    }

    /// Starts `nats-server` with JetStream in the server namespace on the
    /// management address, its storage in the work directory (kept across
    /// restarts of the server), authorization on ([`NatsAuth`]: the agent
    /// and commands by user and password, bridges by NKEY) and TLS if
    /// [`Topology::enable_nats_tls`] was called; waits until it is ready.
    pub fn start_nats(&self) -> Result<NatsServer> {
        let store = self.dir.join("jetstream");
        std::fs::create_dir_all(&store)?;
        let n = std::fs::read_dir(&self.dir)?
            .flatten()
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with("nats-run") && n.ends_with(".log")
            })
            .count();
        let auth = self.nats_auth()?;
        let tls = self.nats_tls().map_or(String::new(), |t| {
            format!(
                "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
                t.cert.display(),
                t.key.display()
            )
        });
        let conf = format!(
            "server_name: \"bootcache-{p}\"\nlisten: \"{m}:{NATS_PORT}\"\n\
             jetstream {{\n  store_dir: \"{s}\"\n}}\n{a}{tls}",
            p = self.prefix,
            m = self.mgmt_server,
            s = store.display(),
            a = auth.server_conf(),
        );
        let name = format!("nats-run{}", n + 1);
        self.start_nats_conf(&self.server_ns, &name, self.nats_url(), &conf, false)
    }

    /// The credentials of this topology's NATS servers (created on first
    /// use in the work directory).
    pub fn nats_auth(&self) -> Result<NatsAuth> {
        let dir = self.dir.join("nats-auth");
        let password_file = dir.join("password");
        let nkey_file = dir.join("bridge.nk");
        let leaf_file = dir.join("leaf-password");
        if !nkey_file.exists() {
            std::fs::create_dir_all(&dir)?;
            std::fs::write(&password_file, random_hex()?)?;
            std::fs::write(&leaf_file, random_hex()?)?;
            let kp = nkeys::KeyPair::new_user();
            let seed = kp.seed().map_err(|e| anyhow!("an NKEY seed: {e}"))?;
            std::fs::write(&nkey_file, seed)?;
        }
        let seed = std::fs::read_to_string(&nkey_file)?;
        let nkey_public = nkeys::KeyPair::from_seed(seed.trim())
            .map_err(|e| anyhow!("{}: {e}", nkey_file.display()))?
            .public_key();
        Ok(NatsAuth {
            user: NATS_USER.into(),
            password: std::fs::read_to_string(&password_file)?,
            password_file,
            nkey_file,
            nkey_public,
            leaf_password: std::fs::read_to_string(&leaf_file)?,
        })
    }

    /// Makes this topology's next [`Topology::start_nats`] require TLS
    /// with a certificate for the management address, signed by a CA made
    /// here with `openssl` ([`NatsTls`]); [`Topology::nats_url`] says
    /// `tls://` from then on.
    pub fn enable_nats_tls(&self) -> Result<NatsTls> {
        let dir = self.dir.join("nats-tls");
        std::fs::create_dir_all(&dir)?;
        let t = NatsTls {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        let ext = dir.join("server.ext");
        std::fs::write(
            &ext,
            format!(
                "subjectAltName=IP:{}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
                self.mgmt_server
            ),
        )?;
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let (ca_key, csr) = (dir.join("ca.key"), dir.join("server.csr"));
        let openssl = |args: &[&str], key: &Path, out: &Path| {
            run(Command::new("openssl")
                .args(args)
                .arg("-keyout")
                .arg(key)
                .arg("-out")
                .arg(out))
            .context("openssl (Debian package openssl): run scripts/setup")
        };
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-days", "2", "-subj", "/CN=bootcache test CA"],
            ]
            .concat(),
            &ca_key,
            &t.ca,
        )?;
        openssl(
            &[&["req"][..], &ec, &["-subj", "/CN=nats"]].concat(),
            &t.key,
            &csr,
        )?;
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&t.ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&t.cert))?;
        Ok(t)
    }

    /// The TLS files of [`Topology::enable_nats_tls`], if it was called.
    pub fn nats_tls(&self) -> Option<NatsTls> {
        let dir = self.dir.join("nats-tls");
        let t = NatsTls {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        t.cert.exists().then_some(t)
    }

    /// The engine options of `bootcache-agent` (the agent and its
    /// commands) for [`Topology::start_nats`]'s server: `--nats URL`,
    /// `--bucket`, the user and password, the CA if TLS.
    pub fn agent_nats_args(&self) -> Result<Vec<String>> {
        let a = self.nats_auth()?;
        let mut v = vec![
            "--nats".to_string(),
            self.nats_url(),
            "--bucket".into(),
            FLEET_BUCKET.into(),
            "--nats-user".into(),
            a.user,
            "--nats-password-file".into(),
            a.password_file.display().to_string(),
        ];
        if let Some(t) = self.nats_tls() {
            v.extend(["--nats-tls-ca".into(), t.ca.display().to_string()]);
        }
        Ok(v)
    }

    /// Starts the agent publishing to [`Topology::start_nats`]'s server.
    pub fn start_fleet_agent(&mut self) -> Result<()> {
        self.start_fleet_agent_with(&[])
    }

    /// bootcache's configuration with the agent (`agent_extra` in its
    /// table, as [`Topology::write_bootcache_config`]) and the fleet's
    /// mirror of [`FLEET_BUCKET`] on [`Topology::start_nats`]'s server.
    pub fn write_fleet_config(&self, agent_extra: &str) -> Result<PathBuf> {
        self.write_fleet_member_config(agent_extra, "")
    }

    /// [`Topology::write_fleet_config`] with `fleet_extra` TOML lines in
    /// its `[fleet]` table (e.g. `bridge_id = "a"`).
    pub fn write_fleet_member_config(
        &self,
        agent_extra: &str,
        fleet_extra: &str,
    ) -> Result<PathBuf> {
        let p = self.write_bootcache_config(agent_extra)?;
        let mut text = std::fs::read_to_string(&p)?;
        text += &format!(
            "\n[fleet]\nservers = [\"{}\"]\nbucket = \"{FLEET_BUCKET}\"\n{}{fleet_extra}\n",
            self.nats_url(),
            self.bridge_nats_toml()?
        );
        std::fs::write(&p, text)?;
        Ok(p)
    }

    /// Runs a fleet command of `bootcache-agent` (`fleet`, `cache`)
    /// against [`Topology::start_nats`]'s server with the shared key, in
    /// the server namespace; its standard output.
    pub fn fleet_command(&self, command: &str, args: &[&str]) -> Result<String> {
        let bin = self.agent_bin()?;
        let mut cmd = self.server_cmd(bin.to_str().unwrap_or("bootcache-agent"));
        cmd.arg(command)
            .args(self.agent_nats_args()?)
            .arg("--key-file")
            .arg(self.key_file()?)
            .args(args);
        let out = cmd.output()?;
        if !out.status.success() {
            bail!(
                "bootcache-agent {command}: {}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `bootcache-agent fleet --json`, parsed.
    pub fn fleet_json(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_str(
            &self.fleet_command("fleet", &["--json"])?,
        )?)
    }

    /// Polls [`Topology::fleet_json`] until `ok` holds of it; the last
    /// listing in the error.
    pub fn wait_fleet(
        &self,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        let t = Instant::now();
        loop {
            let v = self.fleet_json()?;
            if ok(&v) {
                return Ok(v);
            }
            if t.elapsed() > timeout {
                bail!("{what}: not after {timeout:?}; bootcache-agent fleet --json said:\n{v:#}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The origin's TFTP root served on the server's management address by a
/// second dnsmasq (TFTP only; [`Topology::start_mgmt_tftp`]): what a
/// bridge host reads a directed file from when the Object Store lacks it
/// (`[fleet] tftp_via`), as `bootcache cache prefetch --via`. Stopped by
/// PID on drop.
pub struct MgmtTftp {
    server: NatsServer,
    root: PathBuf,
}

impl MgmtTftp {
    /// Transfers it sent or tried to send, by name under the root.
    pub fn transfers(&self) -> Vec<String> {
        dnsmasq_transfers(&self.server.log, &self.root)
    }

    /// Transfers of `name` so far.
    pub fn count(&self, name: &str) -> usize {
        self.transfers().iter().filter(|n| *n == name).count()
    }
}

impl Topology {
    /// Starts [`MgmtTftp`] on `mgmt0` of the server namespace (the
    /// origin's files, its own log) and waits until it serves.
    pub fn start_mgmt_tftp(&self) -> Result<MgmtTftp> {
        let dnsmasq =
            find_tool("dnsmasq").ok_or_else(|| anyhow!("dnsmasq not found: run scripts/setup"))?;
        let log = self.dir.join("dnsmasq-mgmt.log");
        let _ = std::fs::remove_file(&log);
        let mut cmd = self.server_cmd(&dnsmasq.to_string_lossy());
        cmd.args(["--keep-in-foreground", "--conf-file=/dev/null", "--port=0"])
            .args(["--no-resolv", "--no-hosts", "--user=root", "--group=root"])
            .args(["--interface=mgmt0", "--bind-interfaces", "--enable-tftp"])
            .arg(format!("--tftp-root={}", self.tftp_root.display()))
            .arg(format!("--log-facility={}", log.display()))
            .arg("--pid-file=");
        let child = self.spawn_logged(cmd, &self.dir.join("dnsmasq-mgmt.out"))?;
        let server = NatsServer {
            child: Some(child),
            prefix: self.prefix.clone(),
            url: format!("tftp://{}", self.mgmt_server),
            log: log.clone(),
        };
        wait_for_text(&log, "TFTP root is", Duration::from_secs(10))
            .map_err(|e| anyhow!("dnsmasq on mgmt0 did not start: {e}"))?;
        Ok(MgmtTftp {
            server,
            root: self.tftp_root.clone(),
        })
    }
}

/// The JetStream domain of the hub ([`Topology::start_nats_hub`]).
pub const NATS_HUB_DOMAIN: &str = "hub";
/// The hub's leaf node port (server namespace, every address).
pub const NATS_LEAF_PORT: u16 = 7422;
/// Site B's client address on the shared origin LAN ([`Topology::join_origin_lan`]).
pub const SITE_B_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 60);
/// Site B's qemu client's MAC address ([`TwoSites::start_pxe`]): site A's
/// is [`CLIENT_MAC`]; both are on the origin's one LAN.
pub const SITE_B_CLIENT_MAC: &str = "52:54:00:b0:07:02";
/// Site B's server namespace's address on the origin LAN (its leaf node
/// reaches the hub from it).
pub const SITE_B_WAN_IP: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 2);

/// Two sites, one origin (issue 14 item 7): this topology is site A with
/// the origin, its agent and the NATS hub in its server namespace; a
/// second topology is site B, whose bridge's server side is joined to the
/// origin's LAN by a veth between the two server namespaces (L2 bridges
/// on both ends), so both bridges stand between their clients and the one
/// origin. Each site has its own NATS leaf node.
impl Topology {
    /// Joins `site`'s server side to this topology's origin LAN: here
    /// `eth0` moves under a bridge `br0` (the origin's addresses with it;
    /// [`Topology::start_origin`] then listens there), in `site`'s server
    /// namespace `eth0` and the link here are bridged and lose the
    /// origin's address (it answers for nothing but [`SITE_B_WAN_IP`]),
    /// and `site`'s clients take `client_ip`. Call before starting the
    /// origin.
    pub fn join_origin_lan(&mut self, site: &Topology, client_ip: Ipv4Addr) -> Result<()> {
        self.join_origin_lan_as(site, client_ip, SITE_B_WAN_IP)
    }

    /// [`Topology::join_origin_lan`] with `wan_ip` for `site`'s server
    /// namespace instead of [`SITE_B_WAN_IP`]: more than two sites on the
    /// one LAN, each with an address of its own.
    pub fn join_origin_lan_as(
        &mut self,
        site: &Topology,
        client_ip: Ipv4Addr,
        wan_ip: Ipv4Addr,
    ) -> Result<()> {
        let off = "tx off rx off sg off gso off tso off gro off";
        let wan = format!("{}-w", site.prefix);
        let peer = format!("{}-wp", site.prefix);
        if self.origin_iface != "br0" {
            in_ns(
                &self.server_ns,
                &format!(
                    "ip link add br0 type bridge forward_delay 0 stp_state 0
                     ethtool -K br0 {off} >/dev/null 2>&1 || true
                     ip addr del {SERVER_IP}/24 dev eth0
                     ip -6 addr del fd00:80::1/64 dev eth0
                     ip link set eth0 master br0
                     ip link set br0 up
                     ip addr add {SERVER_IP}/24 dev br0
                     ip -6 addr add fd00:80::1/64 dev br0 nodad"
                ),
            )?;
            self.origin_iface = "br0";
        }
        ip(&["link", "add", &wan, "type", "veth", "peer", "name", &peer])?;
        ip(&["link", "set", &wan, "netns", &self.server_ns])?;
        ip(&["link", "set", &peer, "netns", &site.server_ns])?;
        in_ns(
            &self.server_ns,
            &format!(
                "ethtool -K {wan} {off} >/dev/null 2>&1 || true
                 ip link set {wan} master br0; ip link set {wan} up"
            ),
        )?;
        in_ns(
            &site.server_ns,
            &format!(
                "ip addr flush dev eth0
                 ip link add br0 type bridge forward_delay 0 stp_state 0
                 for i in {peer} br0; do ethtool -K $i {off} >/dev/null 2>&1 || true; done
                 ip link set eth0 master br0; ip link set {peer} master br0
                 ip link set {peer} up; ip link set br0 up
                 ip addr add {wan_ip}/24 dev br0"
            ),
        )?;
        in_ns(
            &site.client_ns,
            &format!("ip addr del {CLIENT_IP}/24 dev br0; ip addr add {client_ip}/24 dev br0"),
        )?;
        Ok(())
    }

    /// Starts `nats-server -c` with configuration `conf` in `ns`, as
    /// `name` (its log and configuration in the work directory), and
    /// waits until it is ready and, if `leaf`, its leaf node connection
    /// to the hub is up.
    pub(super) fn start_nats_conf(
        &self,
        ns: &str,
        name: &str,
        url: String,
        conf: &str,
        leaf: bool,
    ) -> Result<NatsServer> {
        let tool = find_tool("nats-server").ok_or_else(|| {
            anyhow!("nats-server not found (Debian package nats-server): run scripts/setup")
        })?;
        let conf_path = self.dir.join(format!("{name}.conf"));
        std::fs::write(&conf_path, conf)?;
        let log = self.dir.join(format!("{name}.log"));
        let mut cmd = self.ns_cmd(ns, tool.to_str().unwrap_or("nats-server"));
        cmd.arg("-c").arg(&conf_path);
        let child = self.spawn_logged(cmd, &log)?;
        let mut server = NatsServer {
            child: Some(child),
            prefix: self.prefix.clone(),
            url,
            log: log.clone(),
        };
        let ready =
            wait_for_text(&log, "Server is ready", Duration::from_secs(15)).and_then(|()| {
                if leaf {
                    wait_for_text(&log, "Leafnode connection created", Duration::from_secs(15))
                } else {
                    Ok(())
                }
            });
        if let Err(e) = ready {
            server.stop();
            bail!("{name} did not start: {e}");
        }
        Ok(server)
    }

    /// The NATS hub in the server namespace: clients (the agent) on the
    /// management address at [`NATS_PORT`] as [`Topology::nats_url`],
    /// JetStream (domain `hub`, storage in the work directory) holding
    /// every bucket, leaf nodes accepted on [`NATS_LEAF_PORT`].
    pub fn start_nats_hub(&self) -> Result<NatsServer> {
        let store = self.dir.join("jetstream");
        std::fs::create_dir_all(&store)?;
        let auth = self.nats_auth()?;
        let conf = format!(
            "server_name: \"hub-{p}\"\nlisten: \"{m}:{NATS_PORT}\"\n\
             jetstream {{\n  store_dir: \"{s}\"\n  domain: {NATS_HUB_DOMAIN}\n}}\n\
             leafnodes {{\n  listen: \"0.0.0.0:{NATS_LEAF_PORT}\"\n  \
             authorization {{ user: \"{NATS_LEAF_USER}\", password: \"{lp}\" }}\n}}\n{a}",
            p = self.prefix,
            m = self.mgmt_server,
            s = store.display(),
            lp = auth.leaf_password,
            a = auth.server_conf(),
        );
        self.start_nats_conf(&self.server_ns, "nats-hub", self.nats_url(), &conf, false)
    }

    /// A site's NATS leaf node in this topology's server namespace, for
    /// its bridge: clients on `listen:port`, no JetStream of its own (the
    /// JetStream API and the buckets' traffic cross the leaf connection
    /// to the hub at `hub`). `hub_owner` is the topology whose
    /// [`Topology::start_nats_hub`] runs the hub: its credentials are the
    /// fleet's (the leaf's clients, and the leaf's own connection).
    pub fn start_nats_leaf(
        &self,
        listen: Ipv4Addr,
        port: u16,
        hub: Ipv4Addr,
        hub_owner: &Topology,
    ) -> Result<NatsServer> {
        let auth = hub_owner.nats_auth()?;
        let conf = format!(
            "server_name: \"leaf-{p}-{port}\"\nlisten: \"{listen}:{port}\"\n\
             leafnodes {{\n  remotes: [ {{ url: \"nats-leaf://{NATS_LEAF_USER}:{lp}@{hub}:{NATS_LEAF_PORT}\" }} ]\n}}\n{a}",
            p = self.prefix,
            lp = auth.leaf_password,
            a = auth.server_conf(),
        );
        let name = format!("nats-leaf-{port}");
        let url = format!("nats://{listen}:{port}");
        self.start_nats_conf(&self.server_ns, &name, url, &conf, true)
    }

    /// bootcache's configuration for a bridge of the fleet: this
    /// topology's cache, `agent`'s agent (its address and key) as the
    /// fallback, the fleet's engine at `nats` (the site's leaf node),
    /// `bridge_id` and `site`.
    pub fn write_site_config(
        &self,
        agent: &Topology,
        nats: &str,
        bridge_id: &str,
        site: &str,
    ) -> Result<PathBuf> {
        let p = self.dir.join("bootcache.toml");
        let text = format!(
            "servers = [\"{SERVER_IP}\"]\ncache_dir = \"{}\"\n\n\
             [agent]\naddress = \"{}:{AGENT_PORT}\"\nkey_file = \"{}\"\n\n\
             [limits]\nredirect_ring = {REDIRECT_RING}\n\n\
             [fleet]\nservers = [\"{nats}\"]\nbucket = \"{FLEET_BUCKET}\"\n\
             js_domain = \"{NATS_HUB_DOMAIN}\"\n\
             bridge_id = \"{bridge_id}\"\nsite = \"{site}\"\n{auth}",
            self.cache_dir.display(),
            agent.mgmt_server,
            agent.key_file()?.display(),
            auth = agent.bridge_nats_toml()?,
        );
        std::fs::write(&p, text)?;
        Ok(p)
    }

    /// [`Topology::start_fleet_agent`] with more arguments (e.g.
    /// `--policy FILE`).
    pub fn start_fleet_agent_with(&mut self, extra: &[&str]) -> Result<()> {
        let mut args = self.agent_nats_args()?;
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.start_agent_with(&args)
    }

    /// The `[fleet]` lines that authenticate a bridge to this topology's
    /// NATS servers: its NKEY seed, and the CA if TLS.
    pub fn bridge_nats_toml(&self) -> Result<String> {
        let a = self.nats_auth()?;
        let mut t = format!("nkey_file = \"{}\"\n", a.nkey_file.display());
        if let Some(tls) = self.nats_tls() {
            t += &format!("tls_ca = \"{}\"\n", tls.ca.display());
        }
        Ok(t)
    }
}

/// The user the agent and its commands connect as.
pub const NATS_USER: &str = "bootcache-agent";
/// The user leaf nodes connect to the hub as.
pub const NATS_LEAF_USER: &str = "leaf";

/// A topology's NATS credentials ([`Topology::nats_auth`]), as deployed:
/// the agent and operators' commands by user and password, bridges by an
/// NKEY (the servers keep only its public key), leaf nodes to the hub by
/// a user and password of their own.
#[derive(Debug, Clone)]
pub struct NatsAuth {
    /// The agent's user.
    pub user: String,
    /// Its password.
    pub password: String,
    /// The file holding it.
    pub password_file: PathBuf,
    /// The bridges' NKEY seed file.
    pub nkey_file: PathBuf,
    /// Its public key (`U…`), in the servers' configuration.
    pub nkey_public: String,
    /// The leaf nodes' password at the hub.
    pub leaf_password: String,
}

impl NatsAuth {
    /// The servers' `authorization` block (nats-server 2.9 syntax).
    pub fn server_conf(&self) -> String {
        format!(
            "authorization {{\n  users = [\n    {{ user: \"{}\", password: \"{}\" }}\n    {{ nkey: \"{}\" }}\n  ]\n}}\n",
            self.user, self.password, self.nkey_public
        )
    }
}

/// The TLS files of [`Topology::enable_nats_tls`].
#[derive(Debug, Clone)]
pub struct NatsTls {
    /// The CA's certificate (what clients trust: `tls_ca`).
    pub ca: PathBuf,
    /// The server's certificate (for the management address).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

/// 32 random bytes, hex.
fn random_hex() -> Result<String> {
    let mut buf = [0u8; 32];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The two-site fleet of issue 14 item 7, running: site A (the origin,
/// the agent with its serving policy file, the NATS hub, site A's leaf
/// node and bridge `bridge-a` of site `site-a`) and site B (its leaf node
/// and bridge `bridge-b` of `site-b`), both bridges mirroring through
/// their leaves ([`Topology::join_origin_lan`]). Dropping it stops
/// everything.
pub struct TwoSites {
    // Declared first: stopped before the topologies go.
    _servers: Vec<NatsServer>,
    /// Site A, with the origin.
    pub a: Topology,
    /// Site B.
    pub b: Topology,
    /// The agent's `--policy` file (empty at start).
    pub policy: PathBuf,
}

/// Whether `bridge` of a `bootcache-agent fleet --json` listing holds
/// `name` with `sha` (hex), current against the table.
pub fn holds_current(v: &serde_json::Value, bridge: &str, name: &str, sha: &str) -> bool {
    v["bridges"]
        .as_array()
        .and_then(|bs| bs.iter().find(|b| b["id"] == bridge))
        .and_then(|b| b["holdings"].as_array())
        .is_some_and(|h| {
            h.iter()
                .any(|h| h["name"] == name && h["sha256"] == sha && h["state"] == "current")
        })
}

impl TwoSites {
    /// Builds both sites and starts every program; `files` are put into
    /// the origin's root first. bootcache runs with `--stats-interval 1`.
    pub fn start(opts: &Options, files: &[(&str, &[u8])]) -> Result<TwoSites> {
        TwoSites::start_with(opts, files, None)
    }

    /// [`TwoSites::start`] ready for an iPXE boot at each site: what a boot
    /// needs checked first ([`check_prerequisites`]), the iPXE script and
    /// the kernel and initrd in `images` put into the origin's root
    /// ([`Topology::install_pxe_files`]), site B's qemu client on
    /// [`SITE_B_CLIENT_MAC`]. Both sites' clients get their DHCP answer
    /// from the one dnsmasq through their own bridge.
    pub fn start_pxe(opts: &Options, files: &[(&str, &[u8])], images: &Path) -> Result<TwoSites> {
        check_prerequisites(true)?;
        TwoSites::start_with(opts, files, Some(images))
    }

    fn start_with(opts: &Options, files: &[(&str, &[u8])], pxe: Option<&Path>) -> Result<TwoSites> {
        let mut a = Topology::create(opts)?;
        // Site B's forwarding lcore on the other CPU than site A's.
        let mut b = Topology::create(&Options {
            prefix: opts.prefix.as_ref().map(|p| format!("{p}b")),
            lcores: Some("0@(0,1),1@0".into()),
            ..opts.clone()
        })?;
        a.join_origin_lan(&b, SITE_B_CLIENT_IP)?;
        let hub = a.start_nats_hub()?;
        // Site A's leaf beside the hub (its own address and port), site
        // B's in site B's server namespace, reaching the hub over the LAN.
        let leaf_a = a.start_nats_leaf(a.mgmt_server, NATS_PORT + 1, Ipv4Addr::LOCALHOST, &a)?;
        let leaf_b = b.start_nats_leaf(b.mgmt_server, NATS_PORT, SERVER_IP, &a)?;
        for (name, content) in files {
            a.put_file(name, content)?;
        }
        if let Some(images) = pxe {
            a.install_pxe_files(images)?;
            b.set_client_mac(SITE_B_CLIENT_MAC);
        }
        let policy = a.dir.join("policy.toml");
        std::fs::write(&policy, "")?;
        a.start_origin()?;
        let p = policy.display().to_string();
        a.start_fleet_agent_with(&["--policy", &p])?;
        a.write_site_config(&a, &leaf_a.url, "bridge-a", "site-a")?;
        b.write_site_config(&a, &leaf_b.url, "bridge-b", "site-b")?;
        a.start_bootcache(&["--stats-interval", "1"])
            .context("bootcache at site A")?;
        b.start_bootcache(&["--stats-interval", "1"])
            .context("bootcache at site B")?;
        Ok(TwoSites {
            _servers: vec![leaf_b, leaf_a, hub],
            a,
            b,
            policy,
        })
    }

    /// Stops the hub (the engine, for every bridge: the leaves stay up
    /// with nothing behind them).
    pub fn stop_hub(&mut self) {
        if let Some(hub) = self._servers.last_mut() {
            hub.stop();
        }
    }

    /// Starts the hub again after [`TwoSites::stop_hub`] (its storage
    /// kept; the leaves reconnect to it).
    pub fn restart_hub(&mut self) -> Result<()> {
        let hub = self.a.start_nats_hub()?;
        if let Some(h) = self._servers.last_mut() {
            *h = hub;
        }
        Ok(())
    }

    /// Replaces the agent's policy file at once (the agent never reads
    /// half of it).
    pub fn put_policy(&self, text: &str) -> Result<()> {
        let tmp = self.policy.with_extension("new");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.policy)?;
        Ok(())
    }
}
