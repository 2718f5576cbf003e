//! Serving benchmark (issue 5): one file read through bootcache by a real
//! TFTP client, cold (from the origin, dnsmasq, while bootcache caches it)
//! and then warm (from bootcache's cache), with the same client and
//! options; prints both times and their ratio. Real programs in network
//! namespaces, bootcache on `net_af_packet` ports (see `bench/src/netns.rs`).
//!
//!   sudo ./target/release/bench-serve [--mib 64] [--client curl|tftp] [--blksize 1428] [--warm-rounds 3]

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bootcache_bench::netns::{self, Topology};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "bench-serve",
    about = "Warm (bootcache's cache) vs cold (origin) TFTP read of one file"
)]
struct Args {
    /// File size in MiB.
    #[arg(long, default_value_t = 64)]
    mib: usize,
    /// The client: curl (tftp://, --tftp-blksize) or tftp (tftp-hpa, 512-byte blocks, no options).
    #[arg(long, default_value = "curl")]
    client: String,
    /// curl's --tftp-blksize.
    #[arg(long, default_value_t = 1428)]
    blksize: u16,
    /// Warm reads (the median is reported).
    #[arg(long, default_value_t = 3)]
    warm_rounds: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-serve: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn read(t: &Topology, args: &Args, out: &std::path::Path) -> Result<Duration> {
    match args.client.as_str() {
        "curl" => t.curl_get("bench.img", Some(args.blksize), out),
        "tftp" => t.tftp_hpa_get("bench.img", out),
        other => bail!("--client {other}: curl or tftp"),
    }
}

fn run(args: &Args) -> Result<()> {
    netns::check_prerequisites(false)?;
    let mut t = Topology::create(&netns::Options::default())?;
    t.put_file("bench.img", &netns::test_content(args.mib << 20, 64))?;
    let want = netns::sha256_file(&t.tftp_root.join("bench.img"))?;
    t.start_origin()?;
    t.start_agent()?;
    t.write_bootcache_config("")?;
    t.start_bootcache(&["--stats-interval", "1"])?;
    let out = t.dir.join("read.img");
    let what = match args.client.as_str() {
        "curl" => format!("curl --tftp-blksize {}", args.blksize),
        _ => "tftp-hpa (512-byte blocks, no options)".to_string(),
    };

    let cold = read(&t, args, &out).context("cold read")?;
    if netns::sha256_file(&out)? != want || t.origin_count("bench.img") != 1 {
        bail!("cold read: wrong bytes or not from the origin");
    }
    t.wait_stat("files", "in_store", 1, Duration::from_secs(60))?;
    let mut warm = Vec::new();
    for i in 0..args.warm_rounds.max(1) {
        let d = read(&t, args, &out).context("warm read")?;
        if netns::sha256_file(&out)? != want {
            bail!("warm read {i}: wrong bytes");
        }
        warm.push(d);
        println!("warm read {}: {:.2} s", i + 1, d.as_secs_f64());
    }
    if t.origin_count("bench.img") != 1 {
        bail!("warm reads reached the origin: {:?}", t.origin_transfers());
    }
    warm.sort();
    let w = warm[warm.len() / 2];
    let fin = t.stop_bootcache()?;
    let hits = netns::stat(&fin.stdout, "serve", "hits").unwrap_or(0);
    println!(
        "{} MiB with {what}: cold (origin) {:.2} s = {:.1} MiB/s, warm (bootcache, median of {}) {:.2} s = {:.1} MiB/s, warm/cold time ratio {:.2} (serve hits {hits})",
        args.mib,
        cold.as_secs_f64(),
        args.mib as f64 / cold.as_secs_f64(),
        warm.len(),
        w.as_secs_f64(),
        args.mib as f64 / w.as_secs_f64(),
        w.as_secs_f64() / cold.as_secs_f64()
    );
    Ok(())
}
