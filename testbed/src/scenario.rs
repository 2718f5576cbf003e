//! Scripted PXE/TFTP exchanges as the frames that cross the bridge, in wire
//! order, each tagged with the side it enters on (0: from the client, 1: from
//! the server). The harness replays them; the result is what a real TFTP
//! client and server would put on the wire for a clean transfer.

use std::net::{Ipv4Addr, SocketAddrV4};

use wire::frame::{ipv4, MacAddr, UdpFrameRepr};
use wire::tftp::{Mode, Options, Packet, Request};

use crate::frames::{CLIENT_MAC, SERVER_MAC};

/// Side a frame enters the bridge on.
pub type Side = usize;

/// Frames in wire order, each with the side it enters on.
pub type Script = Vec<(Side, Vec<u8>)>;

/// Frames to blast per side (index = side), cycled through.
pub type Mix = [Vec<Vec<u8>>; 2];

/// The endpoints of a scripted TFTP read.
#[derive(Debug, Clone, Copy)]
pub struct Endpoints {
    /// Client IP and its TFTP port (its TID).
    pub client: SocketAddrV4,
    /// Server IP; requests go to port 69.
    pub server: Ipv4Addr,
    /// The server's transfer port (its TID).
    pub server_tid: u16,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            client: SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 49152),
            server: Ipv4Addr::new(10, 77, 0, 1),
            server_tid: 50000,
        }
    }
}

/// How the scripted server negotiates and sends.
#[derive(Debug, Clone, Copy)]
pub struct TransferShape {
    /// blksize asked and granted (None: RFC 1350, 512-byte blocks, no OACK).
    pub blksize: Option<u16>,
    /// windowsize asked and granted (1: lock-step).
    pub windowsize: u16,
    /// Ask for and announce tsize.
    pub tsize: bool,
    /// After block 65535 the server sends block 0 (true) or block 1.
    pub wrap_to_zero: bool,
    /// Link MTU on the server's side: frames whose IP packet is longer
    /// (DATA with a large blksize) are sent as IPv4 fragments, as a server's
    /// IP stack would (None: every frame whole).
    pub fragment_mtu: Option<usize>,
}

impl TransferShape {
    /// A PXE ROM's read of its NBP: RFC 1350 (512-byte blocks, no options),
    /// lock-step.
    pub const RFC1350: TransferShape = TransferShape {
        blksize: None,
        windowsize: 1,
        tsize: false,
        wrap_to_zero: true,
        fragment_mtu: None,
    };
}

impl Default for TransferShape {
    fn default() -> Self {
        TransferShape {
            blksize: Some(1428),
            windowsize: 1,
            tsize: true,
            wrap_to_zero: true,
            fragment_mtu: None,
        }
    }
}

/// One Ethernet/IPv4/UDP frame entering on `from` (harness MACs), with checksums.
pub fn udp_frame(from: Side, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let (smac, dmac) = if from == 0 {
        (CLIENT_MAC, SERVER_MAC)
    } else {
        (SERVER_MAC, CLIENT_MAC)
    };
    let repr = UdpFrameRepr::ipv4(MacAddr(smac), MacAddr(dmac), src, dst);
    let mut buf = vec![0u8; repr.buffer_len(payload.len())];
    let n = repr
        .emit(&mut buf, payload)
        .expect("frame fits its own buffer");
    buf.truncate(n);
    buf
}

/// An untagged IPv4 `frame` as fragments of at most `mtu` bytes of IP packet
/// each (the header copied into every one, identification `ident`, DF clear,
/// 8-byte-aligned offsets, MF on all but the last, header checksums redone);
/// the UDP checksum stays what it was, computed over the whole datagram. A
/// frame that fits, or is not IPv4, comes back whole.
///
/// Panics if `mtu` cannot hold the IP header and 8 bytes of data.
pub fn fragment_ipv4(frame: &[u8], mtu: usize, ident: u16) -> Vec<Vec<u8>> {
    let (eth, ip) = frame.split_at(14.min(frame.len()));
    let Ok(packet) = ipv4::Packet::new_checked(ip) else {
        return vec![frame.to_vec()];
    };
    let total = usize::from(packet.total_len());
    if eth[12..14] != [0x08, 0x00] || total <= mtu {
        return vec![frame.to_vec()];
    }
    let ihl = packet.header_len();
    assert!(mtu >= ihl + 8, "MTU {mtu} too small to fragment");
    let (header, data) = ip[..total].split_at(ihl);
    let step = (mtu - ihl) / 8 * 8;
    data.chunks(step)
        .enumerate()
        .map(|(i, chunk)| {
            let mut f = [eth, header, chunk].concat();
            let mut p = ipv4::Packet::new_unchecked(&mut f[14..]);
            p.set_total_len((ihl + chunk.len()) as u16);
            p.set_ident(ident);
            let offset = i * step;
            p.set_fragment(false, offset + chunk.len() < data.len(), offset as u16);
            p.fill_checksum();
            f
        })
        .collect()
}

fn tftp(p: &Packet<'_>) -> Vec<u8> {
    p.to_vec().expect("scripted TFTP packets are valid")
}

/// The frames of one complete TFTP read of `file` named `name`.
pub fn tftp_read(ep: Endpoints, name: &str, file: &[u8], shape: TransferShape) -> Script {
    let server69 = SocketAddrV4::new(ep.server, 69);
    let server_tid = SocketAddrV4::new(ep.server, ep.server_tid);
    let mut out = Vec::new();
    let mut asked = Options::default();
    asked.blksize = shape.blksize;
    asked.tsize = shape.tsize.then_some(0);
    asked.windowsize = (shape.windowsize > 1).then_some(shape.windowsize);
    let rrq = Packet::Rrq(Request {
        filename: name.as_bytes(),
        mode: Mode::OCTET,
        options: asked.clone(),
    });
    out.push((0, udp_frame(0, ep.client, server69, &tftp(&rrq))));
    let negotiated = !asked.is_empty();
    if negotiated {
        let mut granted = asked;
        granted.tsize = shape.tsize.then_some(file.len() as u64);
        out.push((
            1,
            udp_frame(1, server_tid, ep.client, &tftp(&Packet::Oack(granted))),
        ));
        out.push((
            0,
            udp_frame(0, ep.client, server_tid, &tftp(&Packet::Ack { block: 0 })),
        ));
    }
    let blksize = usize::from(shape.blksize.unwrap_or(512));
    // A file that is a multiple of blksize ends with an empty block.
    let blocks = file.len() / blksize + 1;
    let window = usize::from(shape.windowsize.max(1));
    let block_no = |i: usize| -> u16 {
        // i is 1-based; after 65535 comes 0 or 1.
        if shape.wrap_to_zero || i <= 65535 {
            (i % 65536) as u16
        } else {
            ((i - 65536) % 65535 + 1) as u16
        }
    };
    let mut ident = 0u16;
    let mut i = 1;
    while i <= blocks {
        let last_in_window = (i + window - 1).min(blocks);
        for b in i..=last_in_window {
            let start = (b - 1) * blksize;
            let data = &file[start.min(file.len())..(start + blksize).min(file.len())];
            let p = Packet::Data {
                block: block_no(b),
                payload: data,
            };
            let frame = udp_frame(1, server_tid, ep.client, &tftp(&p));
            match shape.fragment_mtu {
                Some(mtu) => {
                    // One identification per datagram, as a server's stack counts.
                    ident = ident.wrapping_add(1);
                    let frags = fragment_ipv4(&frame, mtu, ident);
                    out.extend(frags.into_iter().map(|f| (1, f)));
                }
                None => out.push((1, frame)),
            }
        }
        let ack = Packet::Ack {
            block: block_no(last_in_window),
        };
        out.push((0, udp_frame(0, ep.client, server_tid, &tftp(&ack))));
        i = last_in_window + 1;
    }
    out
}

/// A deterministic file of `len` bytes (a boot image stand-in).
pub fn test_file(len: usize, seed: u8) -> Vec<u8> {
    let mut x = 0x1234_5678u32 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Traffic for the filter benchmark: `entries` TFTP read requests (each makes
/// bootcache install one transfer rule), then a blast mix per side in which
/// `match_per_mille`‰ of the frames belong to those transfers (server DATA on
/// side 1, client ACKs on side 0) and the rest is 64-byte UDP background over
/// many flows that matches nothing.
pub fn filter_bench_traffic(entries: u16, match_per_mille: usize) -> (Script, Mix) {
    let server = Ipv4Addr::new(10, 77, 0, 1);
    let client_ip = Ipv4Addr::new(10, 77, 0, 2);
    let port_of = |i: u16| 20000u16.wrapping_add(i);
    let mut rrqs = Vec::with_capacity(usize::from(entries));
    for i in 0..entries {
        let rrq = Packet::Rrq(Request {
            filename: b"bench.img",
            mode: Mode::OCTET,
            options: Options::default(),
        });
        let client = SocketAddrV4::new(client_ip, port_of(i));
        rrqs.push((
            0,
            udp_frame(0, client, SocketAddrV4::new(server, 69), &tftp(&rrq)),
        ));
    }
    let mut mix: Mix = [Vec::new(), Vec::new()];
    let per = 1000usize;
    for (side, frames) in mix.iter_mut().enumerate() {
        for k in 0..per {
            let i = (k * 7919) as u16 % entries.max(1);
            let client = SocketAddrV4::new(client_ip, port_of(i));
            let server_tid = SocketAddrV4::new(server, 40000);
            let f = if k % per < match_per_mille {
                if side == 1 {
                    udp_frame(
                        1,
                        server_tid,
                        client,
                        &tftp(&Packet::Data {
                            block: 1,
                            payload: &[0x5a; 18],
                        }),
                    )
                } else {
                    udp_frame(0, client, server_tid, &tftp(&Packet::Ack { block: 1 }))
                }
            } else {
                // Background: 64-byte UDP between other hosts, many flows.
                let a = SocketAddrV4::new(
                    Ipv4Addr::new(10, 99, (k >> 8) as u8, k as u8),
                    1024 + k as u16,
                );
                let b = SocketAddrV4::new(Ipv4Addr::new(10, 98, 0, 1), 5001);
                let (src, dst) = if side == 0 { (a, b) } else { (b, a) };
                udp_frame(side, src, dst, &[0u8; 22])
            };
            frames.push(f);
        }
    }
    (rrqs, mix)
}

/// A real PXE DHCP exchange (dnsmasq with `pxe-service` answering a PXE
/// client, captured by crates/wire/testdata/capture.sh): DISCOVER, OFFER,
/// REQUEST, ACK giving 10.77.0.115 and `pxelinux.0` from 10.77.0.1.
/// Requests enter on the client side, replies on the server side.
pub fn captured_dhcp_exchange() -> Script {
    let pcap: &[u8] = include_bytes!("../../crates/wire/testdata/dhcp-pxe.pcap");
    let mut out = Vec::new();
    let mut at = 24; // classic pcap: global header, then 16-byte record headers
    while let Some(hdr) = pcap.get(at..at + 16) {
        let caplen = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]) as usize;
        let Some(frame) = pcap.get(at + 16..at + 16 + caplen) else {
            break;
        };
        at += 16 + caplen;
        let mut f = frame.to_vec();
        if f.len() < 42 {
            continue;
        }
        // Captured on the sending veth, UDP checksums are offload stubs:
        // zero means "no checksum" (RFC 768), which is valid.
        f[40] = 0;
        f[41] = 0;
        let src_port = u16::from_be_bytes([f[34], f[35]]);
        out.push((if src_port == 67 { 1 } else { 0 }, f));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(f: &[u8]) -> Vec<u8> {
        UdpFrameRepr::parse(f).expect("valid frame").1.to_vec()
    }

    #[test]
    fn captured_dhcp_exchange_has_two_requests_and_two_replies() {
        let x = captured_dhcp_exchange();
        assert_eq!(
            x.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![0, 1, 0, 1]
        );
        for (_, f) in &x {
            UdpFrameRepr::parse(f).expect("valid frame with checksum 0");
        }
    }

    #[test]
    fn lock_step_read_reassembles_to_the_file() {
        let file = test_file(3000, 1);
        let frames = tftp_read(
            Endpoints::default(),
            "pxelinux.0",
            &file,
            TransferShape::default(),
        );
        // RRQ, OACK, ACK0, then DATA/ACK pairs: 3000/1428 → 3 blocks.
        assert_eq!(frames.len(), 3 + 2 * 3);
        let mut got = Vec::new();
        for (side, f) in &frames {
            if let Ok(Packet::Data { payload, .. }) = Packet::parse(&payload(f)) {
                assert_eq!(*side, 1);
                got.extend_from_slice(payload);
            }
        }
        assert_eq!(got, file);
    }

    #[test]
    fn windowed_read_acks_once_per_window_and_ends_with_empty_block() {
        let file = test_file(512 * 32, 2);
        let shape = TransferShape {
            blksize: Some(512),
            windowsize: 16,
            ..TransferShape::default()
        };
        let frames = tftp_read(Endpoints::default(), "f", &file, shape);
        let acks = frames.iter().filter(|(s, _)| *s == 0).count();
        // RRQ, ACK 0, then one ACK per window: 1–16, 17–32, and the empty block 33.
        assert_eq!(acks, 2 + 3);
        let last = payload(&frames[frames.len() - 2].1);
        assert_eq!(
            Packet::parse(&last).unwrap(),
            Packet::Data {
                block: 33,
                payload: &[]
            }
        );
    }

    #[test]
    fn fragmented_data_reassembles_to_the_whole_frames() {
        let file = test_file(3 * 8192 + 100, 5);
        let whole_shape = TransferShape {
            blksize: Some(8192),
            windowsize: 2,
            ..TransferShape::default()
        };
        let shape = TransferShape {
            fragment_mtu: Some(1500),
            ..whole_shape
        };
        let whole = tftp_read(Endpoints::default(), "boot.wim", &file, whole_shape);
        let frags = tftp_read(Endpoints::default(), "boot.wim", &file, shape);
        // RRQ, OACK, ACK 0, 3 × 6 fragments, the 100-byte block, 2 ACKs.
        assert_eq!(frags.len(), 3 + 3 * 6 + 1 + 2);
        let mut next = frags.iter();
        let mut idents = Vec::new();
        for (side, f) in &whole {
            let ip = &f[14..];
            if ip.len() <= 1500 {
                assert_eq!(next.next().unwrap(), &(*side, f.clone()));
                continue;
            }
            // Rebuild the IP payload by hand from the fragments' offsets.
            let mut payload = Vec::new();
            let mut ident = None;
            loop {
                let (fside, frag) = next.next().expect("more fragments");
                assert_eq!(*fside, 1);
                assert!(frag.len() <= 14 + 1500);
                assert_eq!(frag[..14], f[..14]);
                let p = ipv4::Packet::new_checked(&frag[14..]).unwrap();
                assert!(p.verify_checksum(), "IPv4 header checksum");
                assert!(p.is_fragment() && !p.dont_frag());
                assert_eq!(*ident.get_or_insert(p.ident()), p.ident());
                assert_eq!(usize::from(p.frag_offset()), payload.len());
                assert_eq!(p.frag_offset() % 8, 0);
                payload.extend_from_slice(p.payload());
                if !p.more_frags() {
                    break;
                }
                assert_eq!(p.payload().len() % 8, 0);
            }
            idents.push(ident.unwrap());
            assert_eq!(payload, ip[20..], "reassembled IP payload");
            // The UDP checksum in the first fragment covers the whole.
            let addrs = wire::frame::IpAddrs::V4 {
                src: Endpoints::default().server,
                dst: *Endpoints::default().client.ip(),
            };
            let udp = wire::frame::udp::Packet::new_checked(&payload[..]).unwrap();
            assert!(udp.verify_checksum(&addrs));
            assert_ne!(udp.checksum(), 0);
        }
        assert!(next.next().is_none());
        idents.dedup();
        assert_eq!(idents.len(), 3, "one identification per datagram");
    }

    #[test]
    fn block_numbers_roll_over_both_ways() {
        let file = test_file(8 * 65537, 3);
        for (wrap0, expect) in [(true, 0u16), (false, 1u16)] {
            let shape = TransferShape {
                blksize: Some(8),
                windowsize: 1,
                tsize: true,
                wrap_to_zero: wrap0,
                fragment_mtu: None,
            };
            let frames = tftp_read(Endpoints::default(), "big", &file, shape);
            let blocks: Vec<u16> = frames
                .iter()
                .filter_map(|(_, f)| match Packet::parse(&payload(f)).ok()? {
                    Packet::Data { block, .. } => Some(block),
                    _ => None,
                })
                .collect();
            assert_eq!(blocks.len(), 65538);
            assert_eq!(blocks[65534], 65535);
            assert_eq!(blocks[65535], expect);
        }
    }
}
