//! SIGHUP: the configuration file read again and applied where it can
//! change live. [`diff`] (no I/O) says what changed, what is applied and
//! what waits for a restart; the worker applies it between two batches of
//! frames (`Worker::reload`), the fast path getting its new filter table
//! through the usual publish. An invalid file changes nothing.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;

use crate::config::Config;
use crate::exporter::{Exporter, Info};

/// What a reload changes, against the running configuration.
#[derive(Debug)]
pub(crate) struct Diff {
    /// Changed fields applied live, by their name in the file.
    pub(crate) live: Vec<&'static str>,
    /// Changed fields the running bridge was built around: kept as they
    /// were until a restart.
    pub(crate) restart: Vec<&'static str>,
    /// What runs after the reload: the new file, but the running values
    /// of the fields in `restart`.
    pub(crate) effective: Config,
}

impl Diff {
    /// Whether `field` (a name in `live`) changed.
    pub(crate) fn has(&self, field: &str) -> bool {
        self.live.contains(&field)
    }
}

/// Whether the slow path serves (transparent or addressed).
fn serving(c: &Config) -> bool {
    c.serve_max_age.is_some() || c.agent.is_some() || c.addressed.is_some()
}

/// The running configuration `old` against the file's `new`.
pub(crate) fn diff(old: &Config, new: &Config) -> Diff {
    let mut e = new.clone();
    let mut restart = Vec::new();
    // Ports, lcores and mbufs are options of the command line, never read
    // again; these are the file's fields the bridge is built around.
    macro_rules! keep {
        ($name:literal, $($f:ident).+) => {
            if old.$($f).+ != e.$($f).+ {
                restart.push($name);
                e.$($f).+ = old.$($f).+.clone();
            }
        };
    }
    keep!("dscp", dscp);
    keep!("cache_dir", cache_dir);
    keep!("addressed", addressed);
    keep!("fleet", fleet);
    keep!("limits.max_filter_entries", limits.max_filter_entries);
    keep!("limits.redirect_ring", limits.redirect_ring);
    keep!("cache.share_across_vlans", cache.share_across_vlans);
    // Serving, and validation by an agent, are set up at start: turning
    // either on or off waits for a restart (their settings change live).
    if old.agent.is_some() != e.agent.is_some() {
        restart.push("agent");
        e.agent = old.agent.clone();
    }
    if serving(old) != serving(&e) {
        restart.push("serve_max_age");
        e.serve_max_age = old.serve_max_age;
    }
    // Addressed mode's origin defaults to the first server: it stays the
    // one the bridge fetches from.
    if let (Some(a), Some(ea)) = (&old.addressed, &mut e.addressed) {
        let was = a.origin(&old.servers);
        if ea.origin(&e.servers) != was {
            restart.push("addressed.origin");
            ea.origin = was;
        }
    }
    let mut live = Vec::new();
    macro_rules! live {
        ($name:literal, $($f:ident).+) => {
            if old.$($f).+ != e.$($f).+ {
                live.push($name);
            }
        };
    }
    live!("servers", servers);
    live!("serve_max_age", serve_max_age);
    live!("agent", agent);
    live!("limits.max_transfers", limits.max_transfers);
    live!("limits.max_file_size", limits.max_file_size);
    live!("limits.cache_quota", limits.cache_quota);
    live!("limits.max_sessions", limits.max_sessions);
    live!("limits.max_held_requests", limits.max_held_requests);
    live!("limits.max_fetches", limits.max_fetches);
    live!("limits.max_validations", limits.max_validations);
    live!(
        "limits.max_waiters_per_validation",
        limits.max_waiters_per_validation
    );
    live!("cache.scrub_rate", cache.scrub_rate);
    live!("cache.high_watermark", cache.high_watermark);
    live!("cache.low_watermark", cache.low_watermark);
    live!("metrics.listen", metrics.listen);
    live!("log_level", log_level);
    Diff {
        live,
        restart,
        effective: e,
    }
}

/// Reads the configuration as at start: the file (defaults without
/// one), then `--cache-dir`.
pub(crate) fn load(path: Option<&Path>, cache_dir: Option<&Path>) -> Result<Config> {
    let mut cfg = match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(d) = cache_dir {
        cfg.cache_dir = d.to_path_buf();
    }
    Ok(cfg)
}

/// Sets the log level from the configuration, unless `RUST_LOG` decides.
pub(crate) fn apply_log_level(cfg: &Config) {
    if std::env::var_os("RUST_LOG").is_none() {
        log::set_max_level(cfg.log_level());
    }
}

/// The configuration's fingerprint for `bootcache_info`: the first 16 hex
/// digits of the SHA-256 of its parsed form (comments and order of the
/// file do not change it; `--cache-dir` does).
pub(crate) fn config_hash(cfg: &Config) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("{cfg:?}").as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The labels of `bootcache_info`.
pub(crate) fn info(cfg: &Config, mode: &'static str) -> Info {
    vec![
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("config_hash", config_hash(cfg)),
        ("mode", mode.to_string()),
    ]
}

/// What the worker keeps to reload: where the file is, what runs, and
/// what reloads did.
pub(crate) struct State {
    /// Set by SIGHUP.
    pub(crate) flag: Arc<AtomicBool>,
    /// `--config`, if given.
    pub(crate) path: Option<PathBuf>,
    /// `--cache-dir`, if given (it overrides the file's at every load).
    pub(crate) cache_dir: Option<PathBuf>,
    /// The running configuration.
    pub(crate) current: Config,
    /// `bootcache_info`'s mode.
    pub(crate) mode: &'static str,
    /// The Prometheus endpoint, when `[metrics] listen` is set.
    pub(crate) exporter: Option<Exporter>,
    /// Reloads applied.
    pub(crate) ok: u64,
    /// Reloads refused (the running configuration kept).
    pub(crate) failed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text).unwrap()
    }

    #[test]
    fn nothing_changed_nothing_to_do() {
        let c = parse("servers = [\"10.0.0.1\"]\nserve_max_age = 60");
        let d = diff(&c, &c.clone());
        assert!(d.live.is_empty() && d.restart.is_empty(), "{d:?}");
        assert_eq!(d.effective, c);
    }

    #[test]
    fn servers_policies_limits_metrics_and_log_level_apply_live() {
        let old = parse("servers = [\"10.0.0.1\"]\nserve_max_age = 60");
        let new = parse(
            r#"
            servers = ["10.0.0.1", "10.0.0.2"]
            serve_max_age = 600
            log_level = "debug"
            [limits]
            max_transfers = 10
            cache_quota = "8G"
            max_file_size = "1G"
            max_sessions = 7
            [cache]
            scrub_rate = 0
            [metrics]
            listen = "127.0.0.1:9100"
            "#,
        );
        let d = diff(&old, &new);
        assert_eq!(
            d.live,
            [
                "servers",
                "serve_max_age",
                "limits.max_transfers",
                "limits.max_file_size",
                "limits.cache_quota",
                "limits.max_sessions",
                "cache.scrub_rate",
                "metrics.listen",
                "log_level"
            ]
        );
        assert!(d.restart.is_empty(), "{d:?}");
        assert_eq!(d.effective, new);
        assert_ne!(config_hash(&d.effective), config_hash(&old));
    }

    #[test]
    fn what_the_bridge_is_built_around_waits_for_a_restart() {
        let old = parse("servers = [\"10.0.0.1\"]\ncache_dir = \"/a\"");
        let new = parse(
            r#"
            servers = ["10.0.0.1"]
            cache_dir = "/b"
            dscp = 46
            serve_max_age = 60
            [limits]
            redirect_ring = 1024
            max_filter_entries = 100
            max_transfers = 5
            [cache]
            share_across_vlans = true
            "#,
        );
        let d = diff(&old, &new);
        assert_eq!(
            d.restart,
            [
                "dscp",
                "cache_dir",
                "limits.max_filter_entries",
                "limits.redirect_ring",
                "cache.share_across_vlans",
                "serve_max_age"
            ]
        );
        // The rest applies; the kept fields run as they were.
        assert_eq!(d.live, ["limits.max_transfers"]);
        let e = &d.effective;
        assert_eq!(e.cache_dir, old.cache_dir);
        assert_eq!((e.dscp, e.serve_max_age), (None, None));
        assert_eq!(e.limits.redirect_ring, old.limits.redirect_ring);
        assert_eq!(e.limits.max_transfers, 5);
        // Diffed again, the same file says the same: still pending.
        assert_eq!(diff(e, &new).restart, d.restart);
    }

    #[test]
    fn the_agent_changes_live_but_not_on_or_off() {
        let agent = |addr: &str| {
            parse(&format!(
                "servers = [\"10.0.0.1\"]\n[agent]\naddress = \"{addr}\"\nkey_file = \"/k\""
            ))
        };
        let d = diff(&agent("10.0.0.1:6969"), &agent("10.0.0.2:6969"));
        assert_eq!((d.live.as_slice(), d.restart.len()), (&["agent"][..], 0));
        let none = parse("servers = [\"10.0.0.1\"]");
        let d = diff(&agent("10.0.0.1:6969"), &none);
        assert_eq!(d.restart, ["agent"]);
        assert!(d.live.is_empty(), "{d:?}");
        assert_eq!(d.effective.agent, agent("10.0.0.1:6969").agent);
    }

    #[test]
    fn addressed_mode_keeps_the_origin_it_fetches_from() {
        let old = parse("servers = [\"10.0.0.1\"]\n[addressed]\naddress = \"10.0.0.5\"");
        let new =
            parse("servers = [\"10.0.0.9\", \"10.0.0.1\"]\n[addressed]\naddress = \"10.0.0.5\"");
        let d = diff(&old, &new);
        assert_eq!(d.live, ["servers"]);
        assert_eq!(d.restart, ["addressed.origin"]);
        let a = d.effective.addressed.as_ref().unwrap();
        assert_eq!(a.origin(&d.effective.servers), Some([10, 0, 0, 1].into()));
    }

    #[test]
    fn an_invalid_file_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[limits]\nmax_sessions = 0\n").unwrap();
        let e = format!("{:#}", load(Some(&p), None).unwrap_err());
        assert!(e.contains("limits.max_sessions"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        std::fs::write(&p, "servers = [\"10.0.0.1\"]\n").unwrap();
        let c = load(Some(&p), Some(Path::new("/x"))).unwrap();
        assert_eq!(c.cache_dir, Path::new("/x"));
    }
}
