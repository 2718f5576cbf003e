//! `bootcache cache prefetch NAME --from SERVER`: reads a file from a boot
//! server by TFTP over a kernel UDP socket (the management side, as the
//! agent is reached), with the sans-I/O client session addressed mode
//! fetches with, into a temporary file of the cache, hashed as it arrives.
//! The session takes only contiguous blocks of the negotiated size and ends
//! `Completed` only when the last block came and the size is the `tsize`
//! the server announced: the same checks a followed transfer passes before
//! it is published.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use slowpath::{ClientOptions, ClientOutcome, ClientSession, Destination};

/// The TFTP port asked first.
pub(crate) const PORT: u16 = 69;
/// The largest file prefetched (the session's `max_size`).
const MAX_SIZE: u64 = 4 << 30;

/// A file fetched into the cache's `tmp/`.
pub(crate) struct Fetched {
    pub(crate) size: u64,
    pub(crate) sha256: [u8; 32],
}

/// Reads `name` from `server`:`port` into `out` (created; the caller
/// removes it on error).
pub(crate) fn fetch(out: &Path, server: Ipv4Addr, port: u16, name: &str) -> Result<Fetched> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("binding a UDP socket")?;
    let mut file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let options = ClientOptions {
        max_size: MAX_SIZE,
        ..ClientOptions::default()
    };
    let mut session = ClientSession::new(Instant::now(), name, options)
        .with_context(|| format!("{name:?}: cannot ask for it by TFTP"))?;
    let mut hash = Sha256::new();
    let mut written = 0u64;
    let mut buf = vec![0u8; 65_536];
    loop {
        let now = Instant::now();
        while let Some(t) = session.poll_transmit(now) {
            let to = match t.to {
                Destination::Origin => port,
                Destination::Server => session.server_tid().unwrap_or(port),
                Destination::Stray(p) => p,
            };
            socket
                .send_to(&t.payload, SocketAddrV4::new(server, to))
                .with_context(|| format!("sending to {server}:{to}"))?;
        }
        while let Some((offset, bytes)) = session.poll_data() {
            // The session hands out contiguous bytes from 0.
            if offset != written {
                bail!("{name:?}: TFTP client handed out bytes out of order");
            }
            file.write_all(&bytes)
                .with_context(|| format!("writing {}", out.display()))?;
            hash.update(&bytes);
            written += bytes.len() as u64;
        }
        if let Some(outcome) = session.outcome() {
            return match outcome {
                ClientOutcome::Completed { size } if *size == written => {
                    file.sync_all()
                        .with_context(|| format!("syncing {}", out.display()))?;
                    Ok(Fetched {
                        size: written,
                        sha256: hash.finalize().into(),
                    })
                }
                ClientOutcome::Completed { size } => {
                    bail!("{name:?}: {size} bytes announced, {written} received")
                }
                ClientOutcome::ServerError(code, msg) => {
                    bail!("{server} answered {name:?} with TFTP error {code:?}: {msg}")
                }
                ClientOutcome::TimedOut => {
                    bail!("{server}:{port} did not answer for {name:?} (no TFTP server, or no route from here)")
                }
                ClientOutcome::TooLarge => bail!("{name:?}: larger than {MAX_SIZE} bytes"),
                ClientOutcome::Protocol(e) => bail!("{server} broke TFTP for {name:?}: {e}"),
            };
        }
        let wait = session
            .poll_timeout()
            .map_or(Duration::from_millis(100), |t| {
                t.saturating_duration_since(now)
            })
            .max(Duration::from_millis(1));
        socket.set_read_timeout(Some(wait))?;
        match socket.recv_from(&mut buf) {
            Ok((n, std::net::SocketAddr::V4(from))) if *from.ip() == server => {
                session.handle_packet(Instant::now(), from.port(), &buf[..n]);
            }
            // Another host's datagram: not the server's.
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                session.handle_timeout(Instant::now());
            }
            Err(e) => return Err(e).context(format!("receiving from {server}")),
        }
    }
}
