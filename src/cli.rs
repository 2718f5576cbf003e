//! Command line: `bootcache [EAL options] -- [bootcache options]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// DPDK's headroom in front of every frame in an mbuf (RTE_PKTMBUF_HEADROOM).
pub(crate) const MBUF_HEADROOM: u16 = 128;
/// Default data room of each mbuf: a full 1518-byte frame plus DPDK's headroom.
pub(crate) const MBUF_DATA_ROOM: u16 = 2048 + MBUF_HEADROOM;
/// Ethernet header plus two VLAN tags (QinQ): what a frame adds to the MTU.
const L2_OVERHEAD: u32 = 14 + 8;

/// Checks that a frame of `mtu` bytes of IP fits one mbuf of `data_room`
/// (bootcache does not chain segments); the error is one line naming the fix.
pub(crate) fn check_mtu_fits(mtu: u16, data_room: u16) -> Result<(), String> {
    let frame = u32::from(mtu) + L2_OVERHEAD;
    let room = u32::from(data_room).saturating_sub(u32::from(MBUF_HEADROOM));
    if frame <= room {
        return Ok(());
    }
    Err(format!(
        "MTU {mtu} needs frames of up to {frame} bytes, but an mbuf holds {room} \
         (--mbuf-size {data_room}); use --mbuf-size {} or more (bootcache keeps each frame in one mbuf)",
        frame + u32::from(MBUF_HEADROOM)
    ))
}

const ABOUT: &str = "bootcache: a DPDK caching bridge for network boot.

Usage: bootcache [EAL options] -- [bootcache options]

DPDK port 0 is the client side, port 1 the boot-server side. Every frame
received on one port is sent unchanged on the other. EAL options come first
(see DPDK's EAL parameters), for example:

  bootcache --lcores '0@0,1@1' --file-prefix bc \\
      --vdev 'net_virtio_user0,path=/tmp/c.sock' \\
      --vdev 'net_virtio_user1,path=/tmp/s.sock' --single-file-segments -- --stats-interval 1

At least two lcores are needed: the bridge runs on the first worker lcore,
the slow path (cache fill, image map) on the main lcore. SIGINT/SIGTERM stop
it and print statistics. RUST_LOG sets the log level.

Also (through a running bridge's control socket, else on the directory):
bootcache cache ls [--json] [--config FILE | --cache-dir DIR]
  lists the cached files and the image map (no DPDK needed).
bootcache cache rm NAME [--json] [...], bootcache cache purge [--older-than 7d]
  [--json] [...], bootcache cache prefetch NAME --from SERVER [--json] [...]
bootcache cache verify [--json] [--config FILE | --cache-dir DIR]
  hashes every cached file again, removes those that no longer match
  their index entry and exits 1 if any was (refused while a bridge runs
  on the directory).";

/// bootcache options (after `--`).
#[derive(Debug, Parser)]
#[command(name = "bootcache", version, about = ABOUT, long_about = None)]
pub(crate) struct Cli {
    /// Configuration file (TOML): boot servers, DSCP mark, cache directory, limits.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Cache directory (overrides the configuration's `cache_dir`).
    #[arg(long, value_name = "DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
    /// Print a statistics line every N seconds (0: only at exit).
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub(crate) stats_interval: u64,
    /// After each statistics line (every interval and at exit) print the
    /// same statistics as one JSON object on a line of its own:
    /// `{"unix_ms":…,"serve":{"hits":3,…},…}`.
    #[arg(long)]
    pub(crate) stats_json: bool,
    /// Longest time a frame may wait in a TX buffer while its port keeps
    /// delivering full bursts, in microseconds (frames never wait otherwise).
    #[arg(long, value_name = "US", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub(crate) drain_us: u64,
    /// Forward only (nothing copied or trapped) while the slow path has not
    /// beaten for this long, in milliseconds: a stuck cache never stops the segment.
    #[arg(long, value_name = "MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub(crate) slowpath_timeout_ms: u64,
    /// The slow path (the main lcore) has a CPU of its own (e.g. `--lcores
    /// 0@2,1@3`): while it serves a session from the cache it spins between
    /// polls. Without it, it yields between polls then (whatever else runs
    /// on its CPU goes first); either way it sleeps when nothing is served,
    /// backing off to 5 ms when idle.
    #[arg(long)]
    pub(crate) slowpath_poll: bool,
    /// Receive descriptors per port.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u16).range(64..=16384))]
    pub(crate) rx_desc: u16,
    /// Transmit descriptors per port.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u16).range(64..=16384))]
    pub(crate) tx_desc: u16,
    /// Packet buffers in the pool (must cover both ports' descriptors plus bursts in flight).
    #[arg(long, value_name = "N", default_value_t = 16383, value_parser = clap::value_parser!(u32).range(1024..=4_194_303))]
    pub(crate) mbufs: u32,
    /// Data room of each packet buffer in bytes, DPDK's 128-byte headroom
    /// included: must hold a whole frame of the MTU.
    #[arg(long, value_name = "BYTES", default_value_t = MBUF_DATA_ROOM, value_parser = clap::value_parser!(u16).range(1024..=65535))]
    pub(crate) mbuf_size: u16,
    /// MTU to set on both ports (driver default if not given).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u16).range(68..=9000))]
    pub(crate) mtu: Option<u16>,
    /// Testing aid: the slow path sleeps this long per redirected frame, so
    /// the redirect ring overflows (forwarding must not suffer).
    #[arg(long, value_name = "US", default_value_t = 0)]
    pub(crate) slowpath_throttle_us: u64,
    /// Testing aid: the slow path panics after handling this many redirected
    /// frames (once); it must recover while forwarding goes on.
    #[arg(long, value_name = "N", hide = true)]
    pub(crate) slowpath_panic_after: Option<u64>,
}

/// Where a `bootcache cache ...` command finds the cache directory.
#[derive(Debug, clap::Args)]
pub(crate) struct CacheDirArgs {
    /// The cache directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
    /// Take the cache directory from this configuration file.
    #[arg(long, value_name = "FILE", conflicts_with = "cache_dir")]
    pub(crate) config: Option<PathBuf>,
}

impl CacheDirArgs {
    /// The directory: `--cache-dir`, the configuration's `cache_dir`, or the
    /// default; it must exist (these commands never create a cache).
    pub(crate) fn resolve(&self) -> anyhow::Result<PathBuf> {
        let dir = match (&self.cache_dir, &self.config) {
            (Some(d), _) => d.clone(),
            (None, Some(c)) => crate::config::Config::load(c)?.cache_dir,
            (None, None) => crate::config::Config::default().cache_dir,
        };
        if !dir.is_dir() {
            anyhow::bail!(
                "no cache directory at {} (give --cache-dir or --config)",
                dir.display()
            );
        }
        Ok(dir)
    }
}

/// `bootcache cache ls` options.
#[derive(Debug, Parser)]
#[command(
    name = "bootcache cache ls",
    about = "List the filestore and the image map of a cache directory"
)]
pub(crate) struct CacheLs {
    /// Where the cache is.
    #[command(flatten)]
    pub(crate) dir: CacheDirArgs,
    /// One JSON object (used_bytes, quota_bytes, files) instead of the table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `bootcache cache rm` options.
#[derive(Debug, Parser)]
#[command(
    name = "bootcache cache rm",
    about = "Remove every cached file of a name (any server, any VLAN); refused while one is being served"
)]
pub(crate) struct CacheRm {
    /// Where the cache is.
    #[command(flatten)]
    pub(crate) dir: CacheDirArgs,
    /// The file name, as a client asks for it.
    #[arg(value_name = "NAME")]
    pub(crate) name: String,
    /// One JSON object instead of a line per file.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `bootcache cache purge` options.
#[derive(Debug, Parser)]
#[command(
    name = "bootcache cache purge",
    about = "Remove every cached file (or those not used for a while); files being served stay"
)]
pub(crate) struct CachePurge {
    /// Where the cache is.
    #[command(flatten)]
    pub(crate) dir: CacheDirArgs,
    /// Only files not served, verified or cached for this long (90s, 30m, 12h, 7d, 2w).
    #[arg(long, value_name = "DURATION", value_parser = slowpath::control::parse_duration)]
    pub(crate) older_than: Option<std::time::Duration>,
    /// One JSON object instead of a line per file.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `bootcache cache prefetch` options.
#[derive(Debug, Parser)]
#[command(
    name = "bootcache cache prefetch",
    about = "Read a file from a boot server by TFTP and cache it, as if a client had"
)]
pub(crate) struct CachePrefetch {
    /// Where the cache is.
    #[command(flatten)]
    pub(crate) dir: CacheDirArgs,
    /// The file name to read.
    #[arg(value_name = "NAME")]
    pub(crate) name: String,
    /// The boot server (IPv4) clients read it from: it is cached as from it.
    #[arg(long, value_name = "SERVER")]
    pub(crate) from: std::net::Ipv4Addr,
    /// Read it by TFTP (UDP port 69) at this address instead of SERVER (the
    /// server's management address, when the boot LAN is not reachable).
    /// Without it, a running bridge in addressed mode reads a file of its
    /// addressed origin through its server-side port.
    #[arg(long, value_name = "ADDR")]
    pub(crate) via: Option<std::net::Ipv4Addr>,
    /// One JSON object instead of a line.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `bootcache cache verify` options.
#[derive(Debug, Parser)]
#[command(
    name = "bootcache cache verify",
    about = "Hash every cached file again against the index; remove those that no longer match (exit 1 if any)"
)]
pub(crate) struct CacheVerify {
    /// Where the cache is.
    #[command(flatten)]
    pub(crate) dir: CacheDirArgs,
    /// One JSON object (files, bytes, ok, removed) instead of a line per file.
    #[arg(long)]
    pub(crate) json: bool,
}

/// What to do after looking at the command line.
pub(crate) enum Parsed {
    /// Run with these options.
    Run(Cli),
    /// `bootcache cache ls`.
    CacheLs(CacheLs),
    /// `bootcache cache verify`.
    CacheVerify(CacheVerify),
    /// `bootcache cache rm`.
    CacheRm(CacheRm),
    /// `bootcache cache purge`.
    CachePurge(CachePurge),
    /// `bootcache cache prefetch`.
    CachePrefetch(CachePrefetch),
    /// Help/version printed or the command line is wrong: exit with this code.
    Exit(ExitCode),
}

/// Splits argv at the first `--`: the EAL gets the part before it.
pub(crate) fn eal_args(argv: &[String]) -> Vec<String> {
    match argv.iter().position(|a| a == "--") {
        Some(i) => argv[..i].to_vec(),
        None => argv.to_vec(),
    }
}

/// Parses the bootcache options before the EAL starts, so a typo costs no
/// hugepage setup. `bootcache --help` (without `--`) shows our help too.
pub(crate) fn parse(argv: &[String]) -> Parsed {
    let prog = argv.first().cloned().unwrap_or_else(|| "bootcache".into());
    if argv.get(1).map(String::as_str) == Some("cache") {
        let sub = argv.get(2).map(String::as_str);
        let args = |name: &str| {
            std::iter::once(format!("bootcache cache {name}")).chain(argv[3..].iter().cloned())
        };
        return match sub {
            Some("ls") => CacheLs::try_parse_from(args("ls")).map(Parsed::CacheLs),
            Some("verify") => CacheVerify::try_parse_from(args("verify")).map(Parsed::CacheVerify),
            Some("rm") => CacheRm::try_parse_from(args("rm")).map(Parsed::CacheRm),
            Some("purge") => CachePurge::try_parse_from(args("purge")).map(Parsed::CachePurge),
            Some("prefetch") => {
                CachePrefetch::try_parse_from(args("prefetch")).map(Parsed::CachePrefetch)
            }
            _ => {
                eprintln!(
                    "bootcache: `bootcache cache` takes a command: ls, rm, purge, verify or prefetch"
                );
                return Parsed::Exit(ExitCode::from(2));
            }
        }
        .unwrap_or_else(clap_exit);
    }
    let app: Vec<String> = match argv.iter().position(|a| a == "--") {
        Some(i) => argv[i + 1..].to_vec(),
        None => argv[1..]
            .iter()
            .filter(|a| matches!(a.as_str(), "-h" | "--help" | "-V" | "--version"))
            .cloned()
            .collect(),
    };
    match Cli::try_parse_from(std::iter::once(prog).chain(app)) {
        Ok(cli) => Parsed::Run(cli),
        Err(e) => clap_exit(e),
    }
}

/// Help/version → print and exit 0; a wrong command line → one line, exit 2.
fn clap_exit(e: clap::Error) -> Parsed {
    if !e.use_stderr() {
        let _ = e.print();
        return Parsed::Exit(ExitCode::SUCCESS);
    }
    let first = bootcache_agent::usage::one_line(&e);
    eprintln!(
        "bootcache: {first} (bootcache --help lists the options; EAL options go before `--`)"
    );
    Parsed::Exit(ExitCode::from(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn splits_eal_and_app_arguments() {
        let a = args("bootcache -l 0,1 --vdev net_null0 -- --stats-interval 3");
        assert_eq!(eal_args(&a), args("bootcache -l 0,1 --vdev net_null0"));
        match parse(&a) {
            Parsed::Run(cli) => assert_eq!(cli.stats_interval, 3),
            _ => panic!("valid command line refused"),
        }
    }

    #[test]
    fn without_separator_app_options_are_defaults() {
        match parse(&args("bootcache -l 0,1")) {
            Parsed::Run(cli) => {
                assert_eq!(cli.drain_us, 100);
                assert_eq!(cli.mtu, None);
            }
            _ => panic!("refused"),
        }
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            "--drain-us 0",
            "--rx-desc 10",
            "--bogus",
            "--mtu 20",
            "--mbufs x",
            "--slowpath-timeout-ms 0",
            "--mbuf-size 100",
        ] {
            let a = args(&format!("bootcache -- {bad}"));
            assert!(matches!(parse(&a), Parsed::Exit(_)), "{bad} accepted");
        }
    }
}

#[cfg(test)]
mod mtu_tests {
    use super::*;

    #[test]
    fn default_mbuf_holds_a_1500_mtu_with_qinq_but_not_jumbo() {
        assert!(check_mtu_fits(1500, MBUF_DATA_ROOM).is_ok());
        assert!(check_mtu_fits(2026, MBUF_DATA_ROOM).is_ok());
        let e = check_mtu_fits(2027, MBUF_DATA_ROOM).unwrap_err();
        assert!(e.contains("--mbuf-size 2177"), "{e}");
        let e = check_mtu_fits(9000, MBUF_DATA_ROOM).unwrap_err();
        assert!(e.contains("--mbuf-size 9150"), "{e}");
        assert!(!e.contains('\n'));
        assert!(check_mtu_fits(9000, 9150).is_ok());
    }
}

#[cfg(test)]
mod cache_ls_tests {
    use super::*;

    #[test]
    fn cache_ls_parses_and_refuses_unknown_commands() {
        let a: Vec<String> = ["bootcache", "cache", "ls", "--cache-dir", "/x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(
            matches!(parse(&a), Parsed::CacheLs(ls) if ls.dir.cache_dir.as_deref() == Some(std::path::Path::new("/x")))
        );
        let a: Vec<String> = [
            "bootcache",
            "cache",
            "verify",
            "--json",
            "--cache-dir",
            "/x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert!(
            matches!(parse(&a), Parsed::CacheVerify(v) if v.json && v.dir.cache_dir.as_deref() == Some(std::path::Path::new("/x")))
        );
        let a: Vec<String> = ["bootcache", "cache", "rm"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(matches!(parse(&a), Parsed::Exit(_)), "rm needs a NAME");
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<String>>();
        assert!(matches!(
            parse(&words(&["bootcache", "cache", "rm", "x", "--json"])),
            Parsed::CacheRm(r) if r.name == "x" && r.json
        ));
        assert!(matches!(
            parse(&words(&["bootcache", "cache", "purge", "--older-than", "7d"])),
            Parsed::CachePurge(p) if p.older_than == Some(std::time::Duration::from_secs(604_800))
        ));
        assert!(matches!(
            parse(&words(&[
                "bootcache",
                "cache",
                "purge",
                "--older-than",
                "soon"
            ])),
            Parsed::Exit(_)
        ));
        assert!(matches!(
            parse(&words(&["bootcache", "cache", "prefetch", "a", "--from", "10.0.0.1"])),
            Parsed::CachePrefetch(p) if p.name == "a" && p.from == std::net::Ipv4Addr::new(10, 0, 0, 1)
        ));
        assert!(matches!(
            parse(&words(&["bootcache", "cache", "prefetch", "a"])),
            Parsed::Exit(_),
        ));
        let a: Vec<String> = [
            "bootcache",
            "cache",
            "ls",
            "--cache-dir",
            "/x",
            "--config",
            "/y",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert!(matches!(parse(&a), Parsed::Exit(_)));
    }
}
