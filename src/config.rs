//! The TOML configuration file (`--config`): boot servers, the caching mark,
//! the cache directory and the resource bounds. Every field has a default;
//! a wrong field is refused with a message that names it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    /// Boot servers (TFTP/PXE) whose transfers are cached.
    pub(crate) servers: Vec<Ipv4Addr>,
    /// DSCP code point that marks frames to copy to the slow path (caching indicia).
    pub(crate) dscp: Option<u8>,
    /// Where verified files, the index and the image map live.
    pub(crate) cache_dir: PathBuf,
    /// Serve cache hits (transparent intercept) when the cached copy was
    /// filled or refreshed within this many seconds; unset: never serve,
    /// only fill. A trade-off: a file changed on the server within that
    /// time is served stale.
    pub(crate) serve_max_age: Option<u64>,
    /// The boot server's `bootcache-agent`: when set, every cache hit is
    /// validated with it before it is served.
    pub(crate) agent: Option<AgentConfig>,
    /// Addressed mode: bootcache owns an IPv4 address and answers requests
    /// sent to it, fetching misses from the origin itself.
    pub(crate) addressed: Option<AddressedConfig>,
    /// The fleet (issue 14): mirror the agent's verification table from a
    /// NATS JetStream bucket and validate hits against it locally.
    pub(crate) fleet: Option<FleetConfig>,
    /// Resource bounds.
    pub(crate) limits: Limits,
    /// `[cache]`: how cached files are keyed and checked.
    pub(crate) cache: CacheConfig,
    /// `[metrics]`: the Prometheus endpoint.
    pub(crate) metrics: MetricsConfig,
    /// The log level: "off", "error", "warn", "info" (default), "debug" or
    /// "trace". `RUST_LOG`, when set, decides instead.
    pub(crate) log_level: Option<String>,
}

/// `[metrics]`: where Prometheus scrapes bootcache.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MetricsConfig {
    /// `"ADDR:PORT"` of the management side (a kernel socket, not a DPDK
    /// port) serving OpenMetrics at `/metrics`; unset: no endpoint.
    pub(crate) listen: Option<std::net::SocketAddr>,
}

/// `[cache]`: how cached files are keyed and checked.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CacheConfig {
    /// Bytes per second the background scrub re-hashes cached files at
    /// (a size: "8M" is 8 MiB/s); 0 turns it off.
    pub(crate) scrub_rate: Size,
    /// One cache for every VLAN: a file filled on one VLAN is served on
    /// all. Off by default, where the VLAN tags are part of the cache key
    /// (two VLANs may hold two different servers at one address). Transfers
    /// and filter rules keep their VLAN either way.
    pub(crate) share_across_vlans: bool,
    /// Percent of `limits.cache_quota`: a new file that would take the
    /// cache past it evicts the least recently used files...
    pub(crate) high_watermark: u8,
    /// ...until the cache, with the new file, is at or below this percent.
    pub(crate) low_watermark: u8,
}

impl Default for CacheConfig {
    fn default() -> Self {
        // Gentle: a 1 GiB cache is checked every ~2 minutes, at well under
        // a tenth of one core.
        CacheConfig {
            scrub_rate: Size(8 << 20),
            share_across_vlans: false,
            high_watermark: 90,
            low_watermark: 80,
        }
    }
}

/// Addressed mode's settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddressedConfig {
    /// bootcache's own IPv4 address (on the clients' and the server's
    /// network: they are one segment, bridged).
    pub(crate) address: Ipv4Addr,
    /// The TFTP server misses are fetched from; default: the first of `servers`.
    #[serde(default)]
    pub(crate) origin: Option<Ipv4Addr>,
    /// The MAC bootcache answers ARP with, "aa:bb:cc:dd:ee:ff"; default:
    /// the client-side port's.
    #[serde(default)]
    pub(crate) mac: Option<String>,
    /// Block size fetches ask the origin for (must fit the MTU: 1468 for 1500).
    #[serde(default = "default_fetch_blksize")]
    pub(crate) fetch_blksize: u16,
    /// Window size fetches ask for (RFC 7440; servers without it answer lock-step).
    #[serde(default = "default_fetch_windowsize")]
    pub(crate) fetch_windowsize: u16,
}

fn default_fetch_blksize() -> u16 {
    1468
}

fn default_fetch_windowsize() -> u16 {
    16
}

impl AddressedConfig {
    /// The origin: `origin`, else the first boot server.
    pub(crate) fn origin(&self, servers: &[Ipv4Addr]) -> Option<Ipv4Addr> {
        self.origin.or_else(|| servers.first().copied())
    }

    /// The configured MAC, parsed.
    pub(crate) fn mac(&self) -> Result<Option<[u8; 6]>> {
        let Some(text) = &self.mac else {
            return Ok(None);
        };
        let bytes: Vec<u8> = text
            .split(':')
            .map(|b| u8::from_str_radix(b, 16))
            .collect::<Result<_, _>>()
            .ok()
            .filter(|v: &Vec<u8>| v.len() == 6 && text.len() == 17)
            .with_context(|| {
                format!("addressed.mac: {text:?} is not a MAC address like \"02:00:00:00:00:01\"")
            })?;
        let mac: [u8; 6] = bytes.try_into().unwrap_or_default();
        if mac[0] & 1 != 0 || mac == [0; 6] {
            bail!("addressed.mac: {text} is not a unicast address");
        }
        Ok(Some(mac))
    }
}

/// Where the agent is and how to talk to it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentConfig {
    /// UDP address of the agent, e.g. "192.0.2.10:6969".
    pub(crate) address: std::net::SocketAddr,
    /// File holding the shared key (at least 32 bytes, hex or raw).
    pub(crate) key_file: PathBuf,
    /// How long an answer is reused (absorbs boot storms), in seconds.
    #[serde(default = "default_answer_ttl")]
    pub(crate) answer_ttl: u64,
    /// When the agent does not answer: "forward" (default, never serve what
    /// could be stale) or "serve".
    #[serde(default)]
    pub(crate) on_unreachable: Unreachable,
    /// A question unanswered for this long is asked again, in ms (an agent
    /// across a slow link needs more than the default 500).
    #[serde(default = "default_retry_ms")]
    pub(crate) retry_ms: u64,
    /// Questions asked before the agent counts as unreachable (default 3).
    #[serde(default = "default_tries")]
    pub(crate) tries: u32,
}

fn default_answer_ttl() -> u64 {
    5
}

fn default_retry_ms() -> u64 {
    500
}

fn default_tries() -> u32 {
    3
}

/// The fleet's engine and the mirror's bounds.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct FleetConfig {
    /// NATS servers, e.g. ["nats://10.0.0.1:4222"].
    pub(crate) servers: Vec<String>,
    /// The key-value bucket the agent publishes to (its `--bucket`).
    #[serde(default = "default_bucket")]
    pub(crate) bucket: String,
    /// A NATS credentials file, if the servers require one.
    #[serde(default)]
    pub(crate) credentials: Option<PathBuf>,
    /// A user the servers know (with `password_file`).
    #[serde(default)]
    pub(crate) user: Option<String>,
    /// A file holding that user's password (first line).
    #[serde(default)]
    pub(crate) password_file: Option<PathBuf>,
    /// A file holding this bridge's NKEY user seed (`SU…`).
    #[serde(default)]
    pub(crate) nkey_file: Option<PathBuf>,
    /// The CA certificates (PEM) of the servers' TLS certificates; set,
    /// the connection must be TLS.
    #[serde(default)]
    pub(crate) tls_ca: Option<PathBuf>,
    /// The JetStream domain of the hub holding the buckets, when
    /// `servers` are a site's leaf node (e.g. "hub").
    #[serde(default)]
    pub(crate) js_domain: Option<String>,
    /// The mirror stops answering when the agent's heartbeat is older than
    /// this, in ms (the agent beats every 250 ms).
    #[serde(default = "default_max_silence_ms")]
    pub(crate) max_silence_ms: u64,
    /// Files the mirror holds at most (more are refused and counted).
    #[serde(default = "default_max_files")]
    pub(crate) max_files: usize,
    /// This bridge's id in the fleet (letters, digits, '-', '_'); default:
    /// the hostname, other characters made '-'.
    #[serde(default)]
    pub(crate) bridge_id: Option<String>,
    /// Its site (directives can name one); default "default".
    #[serde(default)]
    pub(crate) site: Option<String>,
    /// Files pre-staged by a directive (no copy to replace) are cached as
    /// from this boot server; default: the first of `servers`.
    #[serde(default)]
    pub(crate) origin: Option<Ipv4Addr>,
    /// Where this host reads a directed file by TFTP when the Object
    /// Store lacks it (the origin's management address, as `bootcache
    /// cache prefetch --via`); default: `origin`.
    #[serde(default)]
    pub(crate) tftp_via: Option<Ipv4Addr>,
}

fn default_bucket() -> String {
    "bootcache".into()
}

fn default_max_silence_ms() -> u64 {
    1000
}

fn default_max_files() -> usize {
    65536
}

impl FleetConfig {
    /// `bridge_id`, or the hostname made an id.
    pub(crate) fn bridge_id(&self) -> String {
        self.bridge_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            bootcache_fleet::doc::sanitize_id(host.trim())
        })
    }

    /// `site`, or "default".
    pub(crate) fn site(&self) -> String {
        self.site.clone().unwrap_or_else(|| "default".into())
    }

    /// The NATS side's configuration.
    pub(crate) fn nats(&self) -> bootcache_fleet::NatsConfig {
        bootcache_fleet::NatsConfig {
            servers: self.servers.clone(),
            bucket: self.bucket.clone(),
            credentials: self.credentials.clone(),
            js_domain: self.js_domain.clone(),
            user: self.user.clone(),
            password_file: self.password_file.clone(),
            nkey_file: self.nkey_file.clone(),
            tls_ca: self.tls_ca.clone(),
        }
    }
}

/// Policy when the agent does not answer.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Unreachable {
    /// Forward the request to the origin.
    #[default]
    Forward,
    /// Serve the cached copy anyway.
    Serve,
}

/// Resource bounds; sizes are bytes, or strings with a K/M/G/T suffix (powers of 1024).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Limits {
    /// TFTP transfers followed at once.
    pub(crate) max_transfers: usize,
    /// Largest file cached.
    pub(crate) max_file_size: Size,
    /// Total bytes of cached files.
    pub(crate) cache_quota: Size,
    /// Dynamic header-filter entries (two per followed transfer at most).
    pub(crate) max_filter_entries: usize,
    /// Slots of the redirect ring between fast and slow path (power of two).
    pub(crate) redirect_ring: usize,
    /// Clients served from the cache at once; one client address gets at
    /// most a sixteenth (at least 4). Past either, requests go to the origin.
    pub(crate) max_sessions: usize,
    /// Read requests held while the agent is asked or an origin fetch
    /// runs (addressed mode); one client address gets at most a sixteenth
    /// (at least 4). Past either, requests go to the origin (addressed
    /// mode: a TFTP ERROR "busy").
    pub(crate) max_held_requests: usize,
    /// Origin fetches at once (addressed mode); past it, a TFTP ERROR
    /// "busy".
    pub(crate) max_fetches: usize,
    /// Distinct questions out to the agent at once; past it, requests go
    /// to the origin.
    pub(crate) max_validations: usize,
    /// Held requests waiting on one question to the agent; past it, the
    /// request goes to the origin.
    pub(crate) max_waiters_per_validation: usize,
}

/// A byte count written as a number or as e.g. "4G".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "SizeRepr")]
pub(crate) struct Size(pub(crate) u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    Bytes(u64),
    Text(String),
}

impl TryFrom<SizeRepr> for Size {
    type Error = String;
    fn try_from(r: SizeRepr) -> Result<Size, String> {
        match r {
            SizeRepr::Bytes(n) => Ok(Size(n)),
            SizeRepr::Text(t) => parse_size(&t).map(Size),
        }
    }
}

fn parse_size(t: &str) -> Result<u64, String> {
    let t = t.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (t, 1u64),
        Some((i, _)) => {
            let unit = t[i..].trim().to_ascii_uppercase();
            let unit = unit
                .strip_suffix("IB")
                .or_else(|| unit.strip_suffix('B'))
                .unwrap_or(&unit);
            let mult = match unit {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => return Err(format!("unknown size unit in {t:?} (use K, M, G or T)")),
            };
            (&t[..i], mult)
        }
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{t:?} is not a size (e.g. 4096, \"512M\", \"4G\")"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{t:?} is too large"))
}

impl Default for Config {
    fn default() -> Self {
        Config {
            servers: Vec::new(),
            dscp: None,
            cache_dir: PathBuf::from("/var/lib/bootcache"),
            serve_max_age: None,
            agent: None,
            addressed: None,
            fleet: None,
            limits: Limits::default(),
            cache: CacheConfig::default(),
            metrics: MetricsConfig::default(),
            log_level: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_transfers: 1024,
            max_file_size: Size(4 << 30),
            cache_quota: Size(64 << 30),
            max_filter_entries: 65536,
            redirect_ring: 4096,
            max_sessions: 4096,
            max_held_requests: 1024,
            max_fetches: 64,
            max_validations: 256,
            max_waiters_per_validation: 1024,
        }
    }
}

impl Config {
    /// The slow path's resource bounds.
    pub(crate) fn slowpath_limits(&self) -> slowpath::CacheLimits {
        slowpath::CacheLimits {
            max_transfers: self.limits.max_transfers,
            max_file_size: self.limits.max_file_size.0,
            quota_bytes: self.limits.cache_quota.0,
            scrub_rate: self.cache.scrub_rate.0,
            share_across_vlans: self.cache.share_across_vlans,
            watermarks: slowpath::Watermarks::new(
                self.cache.high_watermark,
                self.cache.low_watermark,
            )
            .unwrap_or_default(),
            ..slowpath::CacheLimits::default()
        }
    }

    /// Boot servers: `servers`, plus addressed mode's origin if not among them.
    pub(crate) fn boot_servers(&self) -> Vec<Ipv4Addr> {
        let mut v = self.servers.clone();
        if let Some(o) = self
            .addressed
            .as_ref()
            .and_then(|a| a.origin(&self.servers))
        {
            if !v.contains(&o) {
                v.push(o);
            }
        }
        v
    }

    /// Reads and checks a configuration file.
    pub(crate) fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("config {}", path.display()))
    }

    /// Parses and checks configuration text.
    pub(crate) fn parse(text: &str) -> Result<Config> {
        let cfg: Config =
            toml::from_str(text).map_err(|e| anyhow::anyhow!(one_line_toml_error(text, &e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The log level (`log_level`, default info).
    pub(crate) fn log_level(&self) -> log::LevelFilter {
        self.log_level
            .as_deref()
            .and_then(|l| l.parse().ok())
            .unwrap_or(log::LevelFilter::Info)
    }

    fn validate(&self) -> Result<()> {
        if let Some(l) = &self.log_level {
            if l.parse::<log::LevelFilter>().is_err() {
                bail!("log_level: {l:?} is not one of off, error, warn, info, debug, trace");
            }
        }
        if let Some(d) = self.dscp {
            if d > 63 {
                bail!("dscp: {d} is not a DSCP code point (0..=63)");
            }
        }
        for s in &self.servers {
            if s.is_unspecified() || s.is_broadcast() || s.is_multicast() {
                bail!("servers: {s} cannot be a boot server address");
            }
        }
        if let Some(a) = &self.agent {
            if !(1..=60_000).contains(&a.retry_ms) {
                bail!("agent.retry_ms: must be from 1 to 60000 (ms)");
            }
            if !(1..=20).contains(&a.tries) {
                bail!("agent.tries: must be from 1 to 20");
            }
        }
        if let Some(f) = &self.fleet {
            if self.agent.is_none() {
                bail!("fleet: needs [agent]: its key_file verifies the table, and it is asked while the mirror is not live");
            }
            bootcache_fleet::check_config(&f.nats()).map_err(|e| anyhow::anyhow!("fleet.{e}"))?;
            if !(100..=60_000).contains(&f.max_silence_ms) {
                bail!("fleet.max_silence_ms: must be from 100 to 60000 (ms)");
            }
            if f.max_files == 0 {
                bail!("fleet.max_files: must be at least 1");
            }
            for (field, v) in [("bridge_id", &f.bridge_id), ("site", &f.site)] {
                if let Some(v) = v {
                    if !bootcache_fleet::doc::valid_id(v) {
                        bail!("fleet.{field}: {v:?} must be 1-64 letters, digits, '-' or '_'");
                    }
                }
            }
            if let Some(o) = f.origin {
                if !self.servers.contains(&o) {
                    bail!("fleet.origin: {o} is not one of `servers`");
                }
            }
        }
        if self.serve_max_age == Some(0) {
            bail!("serve_max_age: 0 would never serve; leave it out to disable serving");
        }
        if let Some(a) = &self.addressed {
            let ip = a.address;
            if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback() {
                bail!("addressed.address: {ip} cannot be bootcache's own address");
            }
            let Some(origin) = a.origin(&self.servers) else {
                bail!("addressed.origin: needed (or list the boot server in `servers`): misses are fetched from it");
            };
            if origin == ip || self.servers.contains(&ip) {
                bail!(
                    "addressed.address: {ip} is a boot server's address; bootcache needs its own"
                );
            }
            if origin.is_unspecified() || origin.is_broadcast() || origin.is_multicast() {
                bail!("addressed.origin: {origin} cannot be a boot server address");
            }
            if !(8..=65464).contains(&a.fetch_blksize) {
                bail!(
                    "addressed.fetch_blksize: {} is outside 8..=65464",
                    a.fetch_blksize
                );
            }
            if a.fetch_windowsize == 0 {
                bail!("addressed.fetch_windowsize: must be at least 1");
            }
            a.mac()?;
        }
        if self.cache_dir.as_os_str().is_empty() {
            bail!("cache_dir: must not be empty");
        }
        let c = &self.cache;
        if slowpath::Watermarks::new(c.high_watermark, c.low_watermark).is_none() {
            bail!("cache.high_watermark, cache.low_watermark: percent of the quota, 0 < low <= high <= 100");
        }
        let l = &self.limits;
        if l.max_transfers == 0 {
            bail!("limits.max_transfers: must be at least 1");
        }
        if l.max_file_size.0 == 0 {
            bail!("limits.max_file_size: must be at least 1 byte");
        }
        if l.cache_quota.0 < l.max_file_size.0 {
            bail!("limits.cache_quota: smaller than limits.max_file_size, so no file of that size could be cached");
        }
        if l.max_filter_entries < 2 {
            bail!("limits.max_filter_entries: must be at least 2");
        }
        if l.max_sessions == 0 || l.max_held_requests == 0 || l.max_fetches == 0 {
            bail!("limits.max_sessions, limits.max_held_requests and limits.max_fetches: must be at least 1");
        }
        if l.max_validations == 0 || l.max_waiters_per_validation == 0 {
            bail!(
                "limits.max_validations and limits.max_waiters_per_validation: must be at least 1"
            );
        }
        if !(64..=1 << 20).contains(&l.redirect_ring) || !l.redirect_ring.is_power_of_two() {
            bail!("limits.redirect_ring: must be a power of two from 64 to 1048576");
        }
        Ok(())
    }
}

/// toml's errors are multi-line with a source excerpt; make one line that
/// starts with the field (`table.key`) the error points at.
fn one_line_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else { return msg };
    let before = &text[..span.start.min(text.len())];
    let line_no = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}: {msg} (line {line_no})"),
        (None, Some(k)) => format!("{k}: {msg} (line {line_no})"),
        _ => format!("{msg} (line {line_no})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn metrics_listen_parses_and_a_bad_address_names_the_field() {
        let c = Config::parse("[metrics]\nlisten = \"127.0.0.1:9977\"\n").unwrap();
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9977".parse().unwrap()));
        let e = Config::parse("[metrics]\nlisten = \"localhost\"\n").unwrap_err();
        assert!(e.to_string().contains("metrics.listen"), "{e}");
        let e = Config::parse("[metrics]\nport = 9\n").unwrap_err();
        assert!(e.to_string().contains("port"), "{e}");
    }

    #[test]
    fn full_file_parses() {
        let c = Config::parse(
            r#"
            servers = ["10.1.0.1", "10.1.0.2"]
            dscp = 46
            cache_dir = "/srv/cache"
            [limits]
            max_transfers = 10
            max_file_size = "512M"
            cache_quota = 1073741824
            max_filter_entries = 100
            redirect_ring = 1024
            max_validations = 8
            max_waiters_per_validation = 16
            [cache]
            share_across_vlans = true
            "#,
        )
        .unwrap();
        assert!(c.cache.share_across_vlans);
        assert_eq!(c.servers.len(), 2);
        assert_eq!(c.limits.max_validations, 8);
        assert_eq!(c.limits.max_waiters_per_validation, 16);
        assert_eq!(c.dscp, Some(46));
        assert_eq!(c.limits.max_file_size, Size(512 << 20));
        assert_eq!(c.limits.cache_quota, Size(1 << 30));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("dscp = 64", "dscp"),
            ("log_level = \"loud\"", "log_level"),
            ("servers = [\"10.0.0\"]", "servers"),
            ("servers = [\"255.255.255.255\"]", "servers"),
            ("cache_dri = \"/x\"", "cache_dri"),
            ("[limits]\nmax_transfers = 0", "limits.max_transfers"),
            ("serve_max_age = 0", "serve_max_age"),
            (
                "[agent]\naddress = \"10.0.0.1\"\nkey_file = \"/k\"",
                "agent.address",
            ),
            (
                "[agent]\naddress = \"10.0.0.1:1\"\nkey_file = \"/k\"\non_unreachable = \"maybe\"",
                "agent.on_unreachable",
            ),
            ("serve_max_age = -5", "serve_max_age"),
            ("[limits]\nmax_file_size = \"4Q\"", "4Q"),
            ("[limits]\nredirect_ring = 1000", "limits.redirect_ring"),
            ("[limits]\ncache_quota = \"1M\"", "limits.cache_quota"),
            ("[limits]\nbogus = 1", "bogus"),
            ("[cache]\nscrub_rate = \"fast\"", "fast"),
            ("[cache]\nscrub_rate = -1", "cache.scrub_rate"),
            ("[cache]\nscrub = 1", "scrub"),
            ("[limits]\nmax_validations = 0", "limits.max_validations"),
            (
                "[limits]\nmax_waiters_per_validation = 0",
                "limits.max_waiters_per_validation",
            ),
            ("[addressed]\naddress = \"10.0.0.5\"", "addressed.origin"),
            (
                "servers = [\"10.0.0.1\"]\n[addressed]\naddress = \"10.0.0.1\"",
                "addressed.address",
            ),
            (
                "servers = [\"10.0.0.1\"]\n[addressed]\naddress = \"224.0.0.1\"",
                "addressed.address",
            ),
            (
                "servers = [\"10.0.0.1\"]\n[addressed]\naddress = \"10.0.0.5\"\nmac = \"01:00:00:00:00:01\"",
                "addressed.mac",
            ),
            (
                "servers = [\"10.0.0.1\"]\n[addressed]\naddress = \"10.0.0.5\"\nmac = \"02:00:00:00:01\"",
                "addressed.mac",
            ),
            (
                "servers = [\"10.0.0.1\"]\n[addressed]\naddress = \"10.0.0.5\"\nfetch_blksize = 4",
                "addressed.fetch_blksize",
            ),
            ("[addressed]\naddres = \"10.0.0.5\"", "addres"),
            ("[fleet]\nservers = [\"nats://127.0.0.1:4222\"]", "fleet"),
            (
                "[agent]\naddress = \"10.0.0.1:1\"\nkey_file = \"/k\"\n[fleet]\nservers = [\"http://x:4222\"]",
                "fleet.servers",
            ),
            (
                "[agent]\naddress = \"10.0.0.1:1\"\nkey_file = \"/k\"\n[fleet]\nservers = [\"nats://x\"]",
                "fleet.servers",
            ),
            (
                "[agent]\naddress = \"10.0.0.1:1\"\nkey_file = \"/k\"\n[fleet]\nservers = []",
                "fleet.servers",
            ),
            (
                "[agent]\naddress = \"10.0.0.1:1\"\nkey_file = \"/k\"\n[fleet]\nservers = [\"nats://x:4222\"]\nbucket = \"a.b\"",
                "fleet.bucket",
            ),
            (
                "[agent]\naddress = \"10.0.0.1:1\"\nkey_file = \"/k\"\n[fleet]\nservers = [\"nats://x:4222\"]\ncredentials = \"/nonexistent/creds\"",
                "fleet.credentials",
            ),
            (
                "[agent]\naddress = \"10.0.0.1:1\"\nkey_file = \"/k\"\n[fleet]\nservers = [\"nats://x:4222\"]\nmax_silence_ms = 5",
                "fleet.max_silence_ms",
            ),
            (
                "[agent]\naddress = \"10.0.0.1:1\"\nkey_file = \"/k\"\n[fleet]\nservers = [\"nats://x:4222\"]\nbridge_id = \"a.b\"",
                "fleet.bridge_id",
            ),
            (
                "[agent]\naddress = \"10.0.0.1:1\"\nkey_file = \"/k\"\n[fleet]\nservers = [\"nats://x:4222\"]\nsite = \"\"",
                "fleet.site",
            ),
            (
                "[agent]\naddress = \"10.0.0.1:1\"\nkey_file = \"/k\"\n[fleet]\nservers = [\"nats://x:4222\"]\norigin = \"10.9.9.9\"",
                "fleet.origin",
            ),
            (
                "[agent]\naddress = \"10.0.0.1:1\"\nkey_file = \"/k\"\n[fleet]\nserver = [\"nats://x:4222\"]",
                "server",
            ),
        ];
        for (text, field) in cases {
            let err = format!("{:#}", Config::parse(text).unwrap_err());
            assert!(err.contains(field), "{text:?} → {err}");
            assert!(!err.contains('\n'), "multi-line error for {text:?}: {err}");
        }
    }

    #[test]
    fn watermarks_default_to_90_and_80_and_are_checked() {
        let c = Config::parse("").unwrap();
        assert_eq!(
            c.slowpath_limits().watermarks,
            slowpath::Watermarks::new(90, 80).unwrap()
        );
        let c = Config::parse("[cache]\nhigh_watermark = 70\nlow_watermark = 50").unwrap();
        assert_eq!(
            c.slowpath_limits().watermarks,
            slowpath::Watermarks::new(70, 50).unwrap()
        );
        for bad in [
            "high_watermark = 50",
            "low_watermark = 0",
            "high_watermark = 101",
        ] {
            let e = Config::parse(&format!("[cache]\n{bad}")).unwrap_err();
            assert!(format!("{e:#}").contains("cache.high_watermark"), "{e:#}");
        }
    }

    #[test]
    fn scrub_rate_is_a_size_and_zero_turns_it_off() {
        let c = Config::parse("[cache]\nscrub_rate = \"50MiB\"").unwrap();
        assert_eq!(c.cache.scrub_rate, Size(50 << 20));
        assert_eq!(c.slowpath_limits().scrub_rate, 50 << 20);
        let c = Config::parse("[cache]\nscrub_rate = 0").unwrap();
        assert_eq!(c.slowpath_limits().scrub_rate, 0);
        assert_eq!(Config::default().cache.scrub_rate, Size(8 << 20));
    }

    #[test]
    fn the_shipped_example_parses() {
        let c = Config::parse(include_str!("../dist/bootcache.example.toml")).unwrap();
        assert_eq!(c.servers, vec![Ipv4Addr::new(192, 0, 2, 10)]);
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.cache_dir, Config::default().cache_dir);
    }

    #[test]
    fn addressed_mode_adds_its_origin_to_the_boot_servers() {
        let c = Config::parse(
            "servers = [\"10.0.0.1\"]\n[addressed]\naddress = \"10.0.0.5\"\norigin = \"10.0.0.9\"\nmac = \"02:00:00:00:00:05\"",
        )
        .unwrap();
        let a = c.addressed.as_ref().unwrap();
        assert_eq!(a.mac().unwrap(), Some([2, 0, 0, 0, 0, 5]));
        assert_eq!((a.fetch_blksize, a.fetch_windowsize), (1468, 16));
        assert_eq!(
            c.boot_servers(),
            vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 9)]
        );
        let c =
            Config::parse("servers = [\"10.0.0.1\"]\n[addressed]\naddress = \"10.0.0.5\"").unwrap();
        assert_eq!(
            c.addressed.unwrap().origin(&c.servers),
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
    }

    #[test]
    fn log_level_defaults_to_info() {
        assert_eq!(Config::default().log_level(), log::LevelFilter::Info);
        let c = Config::parse("log_level = \"debug\"").unwrap();
        assert_eq!(c.log_level(), log::LevelFilter::Debug);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
