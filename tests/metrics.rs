//! The operator's view (issue 15): a real Prometheus server (Debian's
//! `prometheus`, its own temporary configuration and storage, on loopback)
//! scrapes bootcache's `[metrics] listen` endpoint every second while curl
//! reads a file cold through bootcache from dnsmasq and then warm from the
//! cache; Prometheus's query API must then answer the bytes served from
//! the cache, and they must be what bootcache's own statistics say.
//!
//! Needs root and `scripts/setup` (prometheus, dnsmasq, curl, hugepages).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bootcache_testbed::netns::{self, sha256_file, test_content};

const BOOTCACHE: &str = env!("CARGO_BIN_EXE_bootcache");
const FILE_LEN: usize = 4 << 20;

/// A free TCP port on loopback (bound and released: nothing else on this
/// machine picks ports in this range on purpose).
fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    l.local_addr().unwrap()
}

/// `GET path` on `addr`: the status line and the body.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(String, String)> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(c, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut out = String::new();
    c.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    Ok((
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    ))
}

/// Prometheus, stopped by its PID (and its storage removed) on drop.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second; waits until it is ready.
    fn start(dir: &Path, target: SocketAddr) -> Prometheus {
        let bin = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!("prometheus not found (Debian package prometheus): run scripts/setup")
            });
        let dir = dir.join("prometheus");
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: bootcache\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        let p = Prometheus { child, dir, addr };
        p.wait(Duration::from_secs(30), "ready", || {
            http_get(p.addr, "/-/ready")
                .ok()
                .filter(|(status, _)| status.contains(" 200"))
        });
        p
    }

    /// Polls `f` until it gives a value, or panics with Prometheus's log.
    fn wait<T>(&self, timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let t = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            if t.elapsed() > timeout {
                let log =
                    std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                panic!("prometheus: not {what} after {timeout:?}; its log ends:\n{tail:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The value of an instant query's single sample, if it has one.
    fn query(&self, promql: &str) -> Option<f64> {
        let q: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (_, body) = http_get(self.addr, &format!("/api/v1/query?query={q}")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let result = v["data"]["result"].as_array()?;
        match result.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Prometheus scrapes bootcache through a cold and a warm read; its query
/// API answers the bytes served from the cache (the warm read's file),
/// equal to bootcache's own count, and the info metric names the version.
#[test]
fn prometheus_scrapes_bytes_served_from_the_cache() {
    let mut t = netns::test_topology(&netns::Options {
        bootcache_bin: Some(BOOTCACHE.into()),
        ..Default::default()
    });
    let content = test_content(FILE_LEN, 15);
    t.put_file("metrics.img", &content).unwrap();
    t.start_origin().expect("dnsmasq");
    t.start_agent().expect("bootcache-agent");
    let listen = free_port();
    let cfg = t.write_bootcache_config("").unwrap();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text += &format!("\n[metrics]\nlisten = \"{listen}\"\n");
    std::fs::write(&cfg, text).unwrap();
    t.start_bootcache(&["--stats-interval", "1"])
        .expect("bootcache");
    let prom = Prometheus::start(&t.dir, listen);
    prom.wait(Duration::from_secs(15), "scraping bootcache", || {
        prom.query("up{job=\"bootcache\"}").filter(|&v| v == 1.0)
    });

    let out = t.dir.join("cold.img");
    t.curl_get("metrics.img", Some(1428), &out).unwrap();
    t.wait_stat("files", "in_store", 1, Duration::from_secs(20))
        .expect("the cold read was not cached");
    let out = t.dir.join("warm.img");
    t.curl_get("metrics.img", Some(1428), &out).unwrap();
    assert_eq!(
        sha256_file(&out).unwrap(),
        netns::sha256_bytes(&content, &t.dir, "want").unwrap()
    );
    assert_eq!(
        t.origin_count("metrics.img"),
        1,
        "the warm read reached the origin"
    );

    // Served bytes are counted when the client's last ACK arrives; the
    // next scrape (1 s) brings them to Prometheus.
    let served = prom.wait(
        Duration::from_secs(20),
        "answering the served bytes",
        || {
            prom.query("bootcache_cache_served_bytes_total")
                .filter(|&v| v >= FILE_LEN as f64)
        },
    );
    assert_eq!(served, FILE_LEN as f64, "one warm read of the file");
    let origin = prom
        .query("bootcache_origin_served_bytes_total")
        .unwrap_or(0.0);
    assert_eq!(origin, FILE_LEN as f64, "one cold read from the origin");
    let hits = prom
        .query("bootcache_serve_requests_total{result=\"hit\"}")
        .unwrap_or(0.0);
    assert_eq!(hits, 1.0);
    let info = prom.query(&format!(
        "bootcache_info{{version=\"{}\",mode=\"serve\"}}",
        env!("CARGO_PKG_VERSION")
    ));
    assert_eq!(info, Some(1.0), "bootcache_info with version and mode");
    let rx = prom
        .query("sum(bootcache_port_rx_frames_total)")
        .unwrap_or(0.0);
    assert!(rx > 1000.0, "the ports' frames: {rx}");

    let fin = t.stop_bootcache().unwrap();
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
    assert_eq!(
        netns::stat(&fin.stdout, "serve", "served_bytes"),
        Some(FILE_LEN as u64),
        "bootcache's own count"
    );
}
