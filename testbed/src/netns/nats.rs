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
    /// The NATS URL of [`Topology::start_nats`]'s server.
    pub fn nats_url(&self) -> String {
        format!("nats://{}:{NATS_PORT}", self.mgmt_server)
    }

    /// Starts `nats-server` with JetStream in the server namespace on the
    /// management address, its storage in the work directory (kept across
    /// restarts of the server), and waits until it is ready.
    pub fn start_nats(&self) -> Result<NatsServer> {
        let tool = find_tool("nats-server").ok_or_else(|| {
            anyhow!("nats-server not found (Debian package nats-server): run scripts/setup")
        })?;
        let store = self.dir.join("jetstream");
        std::fs::create_dir_all(&store)?;
        let n = std::fs::read_dir(&self.dir)?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("nats-run"))
            .count();
        let log = self.dir.join(format!("nats-run{}.log", n + 1));
        let mut cmd = self.server_cmd(tool.to_str().unwrap_or("nats-server"));
        cmd.args(["-js", "-sd"])
            .arg(&store)
            .args(["-a", &self.mgmt_server.to_string()])
            .args(["-p", &NATS_PORT.to_string()])
            .args(["-n", &format!("bootcache-{}", self.prefix)]);
        let child = self.spawn_logged(cmd, &log)?;
        let mut server = NatsServer {
            child: Some(child),
            prefix: self.prefix.clone(),
            url: self.nats_url(),
            log: log.clone(),
        };
        if let Err(e) = wait_for_text(&log, "Server is ready", Duration::from_secs(15)) {
            server.stop();
            bail!("nats-server did not start: {e}");
        }
        Ok(server)
    }

    /// Starts the agent publishing to [`Topology::start_nats`]'s server.
    pub fn start_fleet_agent(&mut self) -> Result<()> {
        let url = self.nats_url();
        self.start_agent_with(&["--nats", &url, "--bucket", FLEET_BUCKET])
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
            "\n[fleet]\nservers = [\"{}\"]\nbucket = \"{FLEET_BUCKET}\"\n{fleet_extra}\n",
            self.nats_url()
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
            .args(["--nats", &self.nats_url(), "--bucket", FLEET_BUCKET])
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

/// The JetStream domain of the hub ([`Topology::start_nats_hub`]).
pub const NATS_HUB_DOMAIN: &str = "hub";
/// The hub's leaf node port (server namespace, every address).
pub const NATS_LEAF_PORT: u16 = 7422;
/// Site B's client address on the shared origin LAN ([`Topology::join_origin_lan`]).
pub const SITE_B_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 60);
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
                 ip addr add {SITE_B_WAN_IP}/24 dev br0"
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
        let conf = format!(
            "server_name: \"hub-{p}\"\nlisten: \"{m}:{NATS_PORT}\"\n\
             jetstream {{\n  store_dir: \"{s}\"\n  domain: {NATS_HUB_DOMAIN}\n}}\n\
             leafnodes {{\n  listen: \"0.0.0.0:{NATS_LEAF_PORT}\"\n}}\n",
            p = self.prefix,
            m = self.mgmt_server,
            s = store.display(),
        );
        self.start_nats_conf(&self.server_ns, "nats-hub", self.nats_url(), &conf, false)
    }

    /// A site's NATS leaf node in this topology's server namespace, for
    /// its bridge: clients on `listen:port`, no JetStream of its own (the
    /// JetStream API and the buckets' traffic cross the leaf connection
    /// to the hub at `hub`).
    pub fn start_nats_leaf(
        &self,
        listen: Ipv4Addr,
        port: u16,
        hub: Ipv4Addr,
    ) -> Result<NatsServer> {
        let conf = format!(
            "server_name: \"leaf-{p}-{port}\"\nlisten: \"{listen}:{port}\"\n\
             leafnodes {{\n  remotes: [ {{ url: \"nats-leaf://{hub}:{NATS_LEAF_PORT}\" }} ]\n}}\n",
            p = self.prefix,
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
             bridge_id = \"{bridge_id}\"\nsite = \"{site}\"\n",
            self.cache_dir.display(),
            agent.mgmt_server,
            agent.key_file()?.display()
        );
        std::fs::write(&p, text)?;
        Ok(p)
    }

    /// [`Topology::start_fleet_agent`] with more arguments (e.g.
    /// `--policy FILE`).
    pub fn start_fleet_agent_with(&mut self, extra: &[&str]) -> Result<()> {
        let url = self.nats_url();
        let mut args = vec!["--nats", &url, "--bucket", FLEET_BUCKET];
        args.extend_from_slice(extra);
        self.start_agent_with(&args)
    }
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
        let leaf_a = a.start_nats_leaf(a.mgmt_server, NATS_PORT + 1, Ipv4Addr::LOCALHOST)?;
        let leaf_b = b.start_nats_leaf(b.mgmt_server, NATS_PORT, SERVER_IP)?;
        for (name, content) in files {
            a.put_file(name, content)?;
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

    /// Replaces the agent's policy file at once (the agent never reads
    /// half of it).
    pub fn put_policy(&self, text: &str) -> Result<()> {
        let tmp = self.policy.with_extension("new");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.policy)?;
        Ok(())
    }
}
