//! A TFTP client for the client side of the harness: it reads a file from
//! whoever answers through the bridge (bootcache serving from its cache, or
//! the origin if something else answers) and records what reached the
//! server side meanwhile.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use dpdk::{Burst, Mbuf};
use wire::frame::UdpFrameRepr;
use wire::tftp::{Mode, Options, Packet, Request};

use crate::frames::{CLIENT_MAC, SERVER_MAC};
use crate::harness::Harness;
use crate::scenario::udp_frame;

/// Sends one frame on `side`, retrying until the port takes it.
pub fn send(h: &Harness, side: usize, frame: &[u8]) -> Result<()> {
    let mut b = Burst::new();
    let _ = b.push(Mbuf::from_bytes(&h.pool, frame)?);
    while h.ports[side].tx_burst(0, &mut b) == 0 {}
    Ok(())
}

/// What a client read directly against the bridge got.
pub struct ClientRead {
    /// The bytes received.
    pub file: Vec<u8>,
    /// The source the answers came from (the server's IP and its TID).
    pub answered_by: Option<SocketAddrV4>,
    /// Whether the answer began with an OACK.
    pub oack: bool,
    /// Frames that came out on the server side meanwhile.
    pub server_side_frames: Vec<Vec<u8>>,
    /// Wall time of the read.
    pub elapsed: Duration,
}

/// A TFTP client on the client side (lock-step, or windowed if asked),
/// talking to `SERVER` through the bridge; also collects whatever leaves on
/// the server side.
pub fn client_read(
    h: &Harness,
    client: SocketAddrV4,
    server: Ipv4Addr,
    name: &str,
    options: Options<'_>,
) -> Result<ClientRead> {
    let started = Instant::now();
    let rrq = Packet::Rrq(Request {
        filename: name.as_bytes(),
        mode: Mode::OCTET,
        options: options.clone(),
    });
    send(
        h,
        0,
        &udp_frame(0, client, SocketAddrV4::new(server, 69), &rrq.to_vec()?),
    )?;
    let window = options.windowsize.unwrap_or(1);
    let mut out = ClientRead {
        file: Vec::new(),
        answered_by: None,
        oack: false,
        server_side_frames: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let mut blksize = 512usize;
    let mut expected: u16 = 1;
    let mut in_window = 0u16;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut inb = Burst::new();
    while Instant::now() < deadline {
        if h.ports[1].rx_burst(0, &mut inb) > 0 {
            out.server_side_frames
                .extend(inb.drain().map(|m| m.data().to_vec()));
        }
        if h.ports[0].rx_burst(0, &mut inb) == 0 {
            continue;
        }
        for m in inb.drain() {
            let Ok((repr, payload)) = UdpFrameRepr::parse(m.data()) else {
                continue;
            };
            let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (repr.src(), repr.dst()) else {
                continue;
            };
            if dst != client {
                continue;
            }
            ensure!(
                repr.src_mac.0 == SERVER_MAC,
                "answer without the server's MAC"
            );
            ensure!(
                repr.dst_mac.0 == CLIENT_MAC,
                "answer not to the client's MAC"
            );
            out.answered_by = Some(src);
            let ack = |block: u16| {
                udp_frame(
                    0,
                    client,
                    src,
                    &wire::tftp::Packet::Ack { block }
                        .to_vec()
                        .unwrap_or_default(),
                )
            };
            match Packet::parse(payload).context("invalid TFTP from the bridge")? {
                Packet::Oack(o) => {
                    out.oack = true;
                    blksize = usize::from(o.blksize.unwrap_or(512));
                    send(h, 0, &ack(0))?;
                }
                Packet::Data { block, payload } => {
                    if block != expected {
                        continue; // a retransmission or out of window: wait
                    }
                    out.file.extend_from_slice(payload);
                    expected = expected.wrapping_add(1);
                    in_window += 1;
                    let last = payload.len() < blksize;
                    if in_window == window || last {
                        send(h, 0, &ack(block))?;
                        in_window = 0;
                    }
                    if last {
                        // Let anything else still in flight arrive.
                        std::thread::sleep(Duration::from_millis(200));
                        let mut late = Burst::new();
                        if h.ports[1].rx_burst(0, &mut late) > 0 {
                            out.server_side_frames
                                .extend(late.drain().map(|m| m.data().to_vec()));
                        }
                        out.elapsed = started.elapsed();
                        return Ok(out);
                    }
                }
                Packet::Error { code, message } => {
                    bail!("ERROR {code:?} {:?}", String::from_utf8_lossy(message))
                }
                other => bail!("unexpected {other:?}"),
            }
        }
    }
    bail!(
        "client read of {name} did not finish ({} bytes so far)",
        out.file.len()
    );
}
