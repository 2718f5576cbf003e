//! The Prometheus endpoint (`[metrics] listen`): a thread of its own on a
//! kernel socket serves `GET /metrics` as OpenMetrics. It never touches the
//! fast path or the worker: the worker publishes a [`Snapshot`] every
//! [`PUBLISH_PERIOD`] (built as the stats line is, from the per-lcore
//! counters' published copies) and a scrape encodes the latest one.
//! A reload that moves `[metrics] listen` binds the new address first,
//! then stops the old endpoint ([`Exporter`]'s drop); see [`bind_moving`]
//! for the one case where the old endpoint must stop first.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use bootcache_metrics::{openmetrics, Desc, Snapshot};

/// How often the worker publishes a snapshot for the exporter: fresher
/// than any sensible scrape interval (Prometheus's shortest is 1 s).
pub(crate) const PUBLISH_PERIOD: Duration = Duration::from_millis(500);
/// A request's head is at most this long; a longer one is refused.
const MAX_REQUEST: usize = 8192;
/// A client that sends nothing for this long is dropped (one connection
/// at a time: a silent client delays the next scrape by at most this).
const IO_TIMEOUT: Duration = Duration::from_secs(2);

const SCRAPES: Desc = Desc::counter(
    "metrics_scrapes",
    "scrapes",
    "Requests for /metrics answered",
);
const REFUSED: Desc = Desc::counter(
    "metrics_refused_requests",
    "refused",
    "Requests to the metrics endpoint refused (not GET /metrics, too long, too slow)",
);

/// The info metric's labels (version, configuration hash, mode).
pub(crate) type Info = Vec<(&'static str, String)>;

/// The latest snapshot, shared by the worker (writer) and the exporter.
#[derive(Debug, Default)]
pub(crate) struct Published {
    latest: ArcSwap<Snapshot>,
    info: ArcSwap<Info>,
    scrapes: AtomicU64,
    refused: AtomicU64,
}

impl Published {
    /// Replaces the info metric's labels (at start, and after a reload).
    pub(crate) fn set_info(&self, info: Info) {
        self.info.store(Arc::new(info));
    }

    /// Replaces the snapshot (the worker, every [`PUBLISH_PERIOD`]).
    pub(crate) fn publish(&self, s: Snapshot) {
        self.latest.store(Arc::new(s));
    }

    /// The latest snapshot with the endpoint's own counters.
    fn current(&self) -> Arc<Snapshot> {
        let mut s = Snapshot::clone(&self.latest.load());
        s.section("metrics")
            .value(SCRAPES, self.scrapes.load(Relaxed))
            .value(REFUSED, self.refused.load(Relaxed));
        Arc::new(s)
    }
}

/// A running endpoint; dropping it stops it.
#[derive(Debug)]
pub(crate) struct Exporter {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Joined on drop, so the address is free once the drop returns.
    thread: Option<std::thread::JoinHandle<()>>,
    /// Kept to start the endpoint again where a move was refused.
    published: Arc<Published>,
}

/// Binds `addr` (the error names it): at start, or first thing in a reload.
pub(crate) fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).with_context(|| format!("metrics: listen on {addr}"))
}

/// Serves `listener` on a thread of its own until the [`Exporter`] is dropped.
pub(crate) fn start(listener: TcpListener, published: Arc<Published>) -> Result<Exporter> {
    let addr = listener.local_addr().context("metrics: listen")?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let kept = Arc::clone(&published);
    let thread = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Relaxed) {
                    break;
                }
                match conn {
                    Ok(c) => {
                        if let Err(e) = answer(c, &published) {
                            published.refused.fetch_add(1, Relaxed);
                            log::debug!("metrics: {e}");
                        }
                    }
                    Err(e) => log::debug!("metrics: accept: {e}"),
                }
            }
        })
        .context("metrics: starting its thread")?;
    log::info!("metrics: OpenMetrics on http://{addr}/metrics");
    Ok(Exporter {
        addr,
        stop,
        thread: Some(thread),
        published: kept,
    })
}

/// Binds `addr` for a reload that moves the endpoint. The new address is
/// bound while `old` still serves, so a refused address changes nothing.
/// Only where `old` itself holds the port (the same port on another
/// address: Linux refuses `0.0.0.0:P` beside `127.0.0.1:P`) is it stopped
/// first; if the new address is still refused, `old` starts again on its
/// own address and the error is returned.
pub(crate) fn bind_moving(addr: SocketAddr, old: &mut Option<Exporter>) -> Result<TcpListener> {
    let refused = match TcpListener::bind(addr) {
        Ok(l) => return Ok(l),
        Err(e) => e,
    };
    let in_the_way = refused.kind() == std::io::ErrorKind::AddrInUse
        && old.as_ref().is_some_and(|o| o.addr.port() == addr.port());
    let Some(previous) = old.take_if(|_| in_the_way) else {
        return Err(refused).with_context(|| format!("metrics: listen on {addr}"));
    };
    let (was, published) = (previous.addr, Arc::clone(&previous.published));
    drop(previous);
    match TcpListener::bind(addr) {
        Ok(l) => Ok(l),
        Err(e) => {
            *old = Some(start(bind(was)?, published)?);
            Err(e).with_context(|| format!("metrics: listen on {addr} (kept {was})"))
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        // The thread waits in accept(): a connection wakes it to see the flag.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        match TcpStream::connect_timeout(&wake, IO_TIMEOUT) {
            // Woken: it answers at most the scrape in hand (IO_TIMEOUT).
            Ok(_) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
            // Not woken: it would wait in accept() for ever; left behind.
            Err(e) => log::warn!("metrics: stopping the endpoint on {}: {e}", self.addr),
        }
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    NotAllowed,
}

/// The route of a request head (`GET /metrics HTTP/1.1`; a query string
/// is ignored).
fn route(head: &str) -> Route {
    let mut words = head.split_whitespace();
    match (words.next(), words.next()) {
        (Some("GET"), Some(path)) if path.split('?').next() == Some("/metrics") => Route::Metrics,
        (Some("GET"), _) => Route::NotFound,
        _ => Route::NotAllowed,
    }
}

fn answer(mut c: TcpStream, published: &Published) -> Result<()> {
    c.set_read_timeout(Some(IO_TIMEOUT))?;
    c.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut n = 0;
    while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        if n == buf.len() {
            respond(
                &mut c,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )?;
            anyhow::bail!("request head over {MAX_REQUEST} bytes");
        }
        let got = c.read(&mut buf[n..])?;
        if got == 0 {
            anyhow::bail!("connection closed before the request's end");
        }
        n += got;
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    match route(head.lines().next().unwrap_or("")) {
        Route::Metrics => {
            let body = openmetrics::encode(published.current(), &published.info.load());
            respond(&mut c, "200 OK", openmetrics::CONTENT_TYPE, &body)?;
            published.scrapes.fetch_add(1, Relaxed);
            Ok(())
        }
        Route::NotFound => {
            respond(&mut c, "404 Not Found", "text/plain", "see /metrics\n")?;
            anyhow::bail!("not /metrics");
        }
        Route::NotAllowed => {
            respond(&mut c, "405 Method Not Allowed", "text/plain", "")?;
            anyhow::bail!("not a GET");
        }
    }
}

fn respond(c: &mut TcpStream, status: &str, content_type: &str, body: &str) -> Result<()> {
    write!(
        c,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    c.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reload from `127.0.0.1:P` to `0.0.0.0:P` moves the endpoint (the
    /// old one stops first); where the new address stays refused, the old
    /// endpoint serves again on its address.
    #[test]
    fn a_move_to_the_same_port_on_another_address() {
        let published = Arc::new(Published::default());
        let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = first.local_addr().unwrap().port();
        let mut old = Some(start(first, Arc::clone(&published)).unwrap());
        let any = SocketAddr::from(([0, 0, 0, 0], port));
        let moved = bind_moving(any, &mut old).unwrap();
        assert!(old.is_none());
        assert_eq!(moved.local_addr().unwrap(), any);
        drop(moved);

        // Held by someone else on 127.0.0.2: refused even with ours gone.
        let mut old = Some(start(bind(([127, 0, 0, 1], port).into()).unwrap(), published).unwrap());
        let squatter = TcpListener::bind(("127.0.0.2", port)).unwrap();
        let e = bind_moving(any, &mut old).unwrap_err();
        assert!(format!("{e:#}").contains("kept 127.0.0.1"), "{e:#}");
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(c, "GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        drop(squatter);
        // Another address and port: the old endpoint stays untouched.
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = other.local_addr().unwrap();
        assert!(bind_moving(taken, &mut old).is_err());
        assert!(old.is_some());
    }

    #[test]
    fn only_get_metrics_is_served() {
        assert_eq!(route("GET /metrics HTTP/1.1"), Route::Metrics);
        assert_eq!(route("GET /metrics?x=1 HTTP/1.1"), Route::Metrics);
        assert_eq!(route("GET / HTTP/1.1"), Route::NotFound);
        assert_eq!(route("GET /metricsx HTTP/1.1"), Route::NotFound);
        assert_eq!(route("POST /metrics HTTP/1.1"), Route::NotAllowed);
        assert_eq!(route(""), Route::NotAllowed);
    }

    /// A real socket on loopback: a scrape gets the published snapshot
    /// and the info line, a wrong path a 404, and both are counted.
    #[test]
    fn a_scrape_reads_the_published_snapshot() {
        let published = Arc::new(Published::default());
        let mut s = Snapshot::default();
        s.section("serve").value(crate::stats::SERVE_ACTIVE, 3);
        published.publish(s);
        published.set_info(vec![("version", "9.9".into())]);
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let exporter = start(listener, Arc::clone(&published)).unwrap();
        let get = |path: &str| {
            let mut c = TcpStream::connect(addr).unwrap();
            write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).unwrap();
            out
        };
        let out = get("/metrics");
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(out.contains("bootcache_serve_sessions_active 3"), "{out}");
        assert!(out.contains("bootcache_info{version=\"9.9\"} 1"), "{out}");
        assert!(get("/").starts_with("HTTP/1.1 404"));
        let out = get("/metrics");
        assert!(out.contains("bootcache_metrics_scrapes_total 1"), "{out}");
        assert!(
            out.contains("bootcache_metrics_refused_requests_total 1"),
            "{out}"
        );
        // A reload's new hash shows at the next scrape.
        published.set_info(vec![("config_hash", "abc".into())]);
        assert!(get("/metrics").contains("bootcache_info{config_hash=\"abc\"} 1"));
        // Stopped: the address is free and nobody answers.
        drop(exporter);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while bind(addr).is_err() {
            assert!(std::time::Instant::now() < deadline, "{addr} still bound");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(TcpStream::connect(addr).is_err());
    }
}
