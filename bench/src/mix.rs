//! A realistic frame mix for replay (`net_pcap`, see [`crate::pcap`]): what
//! a boot LAN's wire carries besides boot traffic. Per side, shuffled:
//!
//! - background (98.9 %): TCP and UDP between hosts that are not the boot
//!   server, IMIX sizes (64/594/1518 bytes, 7:4:1); of all frames, 10 %
//!   IPv6 and 3 % 802.1Q-tagged IPv4, the rest plain IPv4;
//! - boot traffic (1 % by default): TFTP DATA from the boot server
//!   10.77.0.1 (server side) or the clients' ACKs to it (client side), one
//!   in five DHCP (the captured dnsmasq exchange, requests on the client
//!   side, replies on the server side).
//!
//! Every checksum is right (IPv4 header, UDP and TCP over their pseudo
//! headers), so a bridge that looks at the frames sees valid traffic.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use wire::frame::{EtherType, MacAddr, UdpFrameRepr, VlanTag};
use wire::tftp::Packet;

use crate::traffic::{checksum, ip_checksum, IMIX};
use bootcache_testbed::frames::{CLIENT_MAC, SERVER_MAC};
use bootcache_testbed::scenario::{captured_dhcp_exchange, udp_frame, Side};

/// The boot server the mix's TFTP traffic belongs to (bootcache's
/// configuration names it).
pub const BOOT_SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// What a mix holds.
#[derive(Debug, Clone, Copy)]
pub struct MixSpec {
    /// Frames per side (the period the replay cycles through).
    pub frames: usize,
    /// Boot traffic (TFTP, DHCP), per mille of all frames.
    pub boot_per_mille: usize,
    /// IPv6 background frames, per mille of all frames.
    pub ipv6_per_mille: usize,
    /// 802.1Q-tagged IPv4 background frames, per mille of all frames.
    pub vlan_per_mille: usize,
    /// Seed of the sizes, addresses and order.
    pub seed: u64,
}

impl Default for MixSpec {
    fn default() -> Self {
        MixSpec {
            frames: 1000,
            boot_per_mille: 10,
            ipv6_per_mille: 100,
            vlan_per_mille: 30,
            seed: 11,
        }
    }
}

/// What kind of frame a mix frame is (for the tests and the report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// TFTP DATA or ACK of a transfer from the boot server.
    Tftp,
    /// DHCP (captured exchange).
    Dhcp,
    /// Background IPv4.
    Ipv4,
    /// Background IPv6.
    Ipv6,
    /// Background IPv4 in an 802.1Q tag.
    Vlan,
}

/// xorshift64*: deterministic and good enough to pick sizes and addresses.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The frames entering on `side` (0: client side, 1: server side), each
/// with its kind, in replay order.
pub fn build(side: Side, spec: &MixSpec) -> Vec<(Part, Vec<u8>)> {
    let mut rng = Rng((spec.seed ^ (side as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1);
    let n = spec.frames;
    let boot = n * spec.boot_per_mille / 1000;
    let dhcp_n = boot / 5;
    let v6 = n * spec.ipv6_per_mille / 1000;
    let vlan = n * spec.vlan_per_mille / 1000;
    let mut parts = Vec::with_capacity(n);
    parts.extend(std::iter::repeat_n(Part::Dhcp, dhcp_n));
    parts.extend(std::iter::repeat_n(Part::Tftp, boot - dhcp_n));
    parts.extend(std::iter::repeat_n(Part::Ipv6, v6));
    parts.extend(std::iter::repeat_n(Part::Vlan, vlan));
    parts.resize(n.max(parts.len()), Part::Ipv4);
    // Fisher-Yates.
    for i in (1..parts.len()).rev() {
        parts.swap(i, rng.below(i + 1));
    }
    let dhcp: Vec<Vec<u8>> = captured_dhcp_exchange()
        .into_iter()
        .filter(|(s, _)| *s == side)
        .map(|(_, f)| f)
        .collect();
    let (mut tftp_k, mut dhcp_k) = (0usize, 0usize);
    parts
        .into_iter()
        .map(|part| {
            let f = match part {
                Part::Dhcp => {
                    dhcp_k += 1;
                    pad(dhcp[(dhcp_k - 1) % dhcp.len()].clone())
                }
                Part::Tftp => {
                    tftp_k += 1;
                    tftp(side, tftp_k)
                }
                Part::Ipv4 | Part::Vlan => background_v4(side, &mut rng, part == Part::Vlan),
                Part::Ipv6 => background_v6(side, &mut rng),
            };
            (part, f)
        })
        .collect()
}

/// The frames only.
pub fn frames(side: Side, spec: &MixSpec) -> Vec<Vec<u8>> {
    build(side, spec).into_iter().map(|(_, f)| f).collect()
}

fn pad(mut f: Vec<u8>) -> Vec<u8> {
    if f.len() < 64 {
        f.resize(64, 0);
    }
    f
}

/// TFTP of transfer `k % 16`: full DATA blocks of 1428 bytes from the boot
/// server (side 1), ACKs to it (side 0).
fn tftp(side: Side, k: usize) -> Vec<u8> {
    let client = SocketAddrV4::new(
        Ipv4Addr::new(10, 77, 0, 100 + (k % 16) as u8),
        49152 + (k % 16) as u16,
    );
    let server = SocketAddrV4::new(BOOT_SERVER, 50000 + (k % 16) as u16);
    let block = (k / 16 + 1) as u16;
    if side == 1 {
        let payload = vec![0x5a; 1428];
        let p = Packet::Data {
            block,
            payload: &payload,
        };
        udp_frame(1, server, client, &p.to_vec().expect("valid DATA"))
    } else {
        let p = Packet::Ack { block };
        pad(udp_frame(
            0,
            client,
            server,
            &p.to_vec().expect("valid ACK"),
        ))
    }
}

/// An IMIX length (7:4:1).
fn imix(rng: &mut Rng) -> usize {
    let total: usize = IMIX.iter().map(|(_, w)| w).sum();
    let mut x = rng.below(total);
    for (len, w) in IMIX {
        if x < w {
            return len;
        }
        x -= w;
    }
    IMIX[0].0
}

fn macs(side: Side) -> (MacAddr, MacAddr) {
    if side == 0 {
        (MacAddr(CLIENT_MAC), MacAddr(SERVER_MAC))
    } else {
        (MacAddr(SERVER_MAC), MacAddr(CLIENT_MAC))
    }
}

/// Well-known service ports of the background's servers.
const SERVICES: [u16; 6] = [443, 80, 22, 53, 123, 8080];

/// A background host pair: a client in 10.20.0.0/16 (or fd00:20::/64) and
/// a server in 10.30.0.0/24; neither is the boot server.
fn ports(rng: &mut Rng) -> (u16, u16) {
    (
        32768 + rng.below(28000) as u16,
        SERVICES[rng.below(SERVICES.len())],
    )
}

fn background_v4(side: Side, rng: &mut Rng, tagged: bool) -> Vec<u8> {
    let (smac, dmac) = macs(side);
    let client = Ipv4Addr::new(10, 20, rng.below(256) as u8, 1 + rng.below(254) as u8);
    let server = Ipv4Addr::new(10, 30, 0, 1 + rng.below(254) as u8);
    let (cport, sport) = ports(rng);
    let ((src, sp), (dst, dp)) = if side == 0 {
        ((client, cport), (server, sport))
    } else {
        ((server, sport), (client, cport))
    };
    let vlan = tagged.then(|| VlanTag {
        tpid: EtherType::VLAN,
        pcp: 0,
        dei: false,
        vid: 100 + rng.below(4) as u16,
    });
    let len = imix(rng);
    let l2 = if tagged { 18 } else { 14 };
    if rng.below(2) == 0 {
        // UDP through the wire crate (checksums filled in).
        let mut repr = UdpFrameRepr::ipv4(
            smac,
            dmac,
            SocketAddrV4::new(src, sp),
            SocketAddrV4::new(dst, dp),
        );
        repr.outer_vlan = vlan;
        let payload = vec![0x33; len.saturating_sub(l2 + 28).max(18)];
        let mut buf = vec![0u8; repr.buffer_len(payload.len())];
        let n = repr.emit(&mut buf, &payload).expect("fits its buffer");
        buf.truncate(n);
        return buf;
    }
    let mut f = vec![0u8; len.max(l2 + 40)];
    f[0..6].copy_from_slice(&dmac.0);
    f[6..12].copy_from_slice(&smac.0);
    if let Some(v) = vlan {
        f[12..14].copy_from_slice(&[0x81, 0x00]);
        f[14..16].copy_from_slice(&v.vid.to_be_bytes());
    }
    f[l2 - 2..l2].copy_from_slice(&[0x08, 0x00]);
    let ip_len = f.len() - l2;
    let ip = &mut f[l2..l2 + 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let sum = ip_checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&((ip_len - 20) as u16).to_be_bytes());
    tcp_segment(&mut f[l2 + 20..], sp, dp, rng, &pseudo);
    f
}

fn background_v6(side: Side, rng: &mut Rng) -> Vec<u8> {
    let (smac, dmac) = macs(side);
    let client = Ipv6Addr::new(0xfd00, 0x20, 0, 0, 0, 0, rng.below(65536) as u16, 1);
    let server = Ipv6Addr::new(0xfd00, 0x30, 0, 0, 0, 0, 0, 1 + rng.below(254) as u16);
    let (cport, sport) = ports(rng);
    let ((src, sp), (dst, dp)) = if side == 0 {
        ((client, cport), (server, sport))
    } else {
        ((server, sport), (client, cport))
    };
    let len = imix(rng);
    if rng.below(2) == 0 {
        let repr = UdpFrameRepr::ipv6(
            smac,
            dmac,
            SocketAddrV6::new(src, sp, 0, 0),
            SocketAddrV6::new(dst, dp, 0, 0),
        );
        let payload = vec![0x66; len.saturating_sub(14 + 48).max(2)];
        let mut buf = vec![0u8; repr.buffer_len(payload.len())];
        let n = repr.emit(&mut buf, &payload).expect("fits its buffer");
        buf.truncate(n);
        return buf;
    }
    let mut f = vec![0u8; len.max(14 + 40 + 20)];
    f[0..6].copy_from_slice(&dmac.0);
    f[6..12].copy_from_slice(&smac.0);
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    let payload_len = f.len() - 14 - 40;
    let ip = &mut f[14..54];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
    ip[6] = 6;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&src.octets());
    ip[24..40].copy_from_slice(&dst.octets());
    let mut pseudo = Vec::with_capacity(40);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(payload_len as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 6]);
    tcp_segment(&mut f[54..], sp, dp, rng, &pseudo);
    f
}

/// A TCP ACK segment (with data, when `seg` is longer than the header)
/// from `sp` to `dp`, its checksum over `pseudo` and the segment.
fn tcp_segment(seg: &mut [u8], sp: u16, dp: u16, rng: &mut Rng, pseudo: &[u8]) {
    seg[0..2].copy_from_slice(&sp.to_be_bytes());
    seg[2..4].copy_from_slice(&dp.to_be_bytes());
    seg[4..8].copy_from_slice(&(rng.next() as u32).to_be_bytes());
    seg[8..12].copy_from_slice(&(rng.next() as u32).to_be_bytes());
    seg[12] = 5 << 4;
    seg[13] = 0x10; // ACK
    seg[14..16].copy_from_slice(&64240u16.to_be_bytes());
    for (i, b) in seg[20..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let sum = checksum(&[pseudo, seg]);
    seg[16..18].copy_from_slice(&sum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::classify::{classify, IpVersion};

    fn v4(a: Ipv4Addr) -> [u8; 16] {
        a.to_ipv6_mapped().octets()
    }

    #[test]
    fn shares_are_as_specified_on_both_sides() {
        let spec = MixSpec::default();
        for side in [0, 1] {
            let m = build(side, &spec);
            assert_eq!(m.len(), 1000);
            let count = |p: Part| m.iter().filter(|(k, _)| *k == p).count();
            assert_eq!(count(Part::Tftp) + count(Part::Dhcp), 10);
            assert_eq!(count(Part::Dhcp), 2);
            assert_eq!(count(Part::Ipv6), 100);
            assert_eq!(count(Part::Vlan), 30);
            assert_eq!(count(Part::Ipv4), 860);
            // Shuffled: the boot frames are not all at one end.
            let first_boot = m
                .iter()
                .position(|(k, _)| matches!(k, Part::Tftp | Part::Dhcp));
            assert!(first_boot.is_some_and(|i| i < 900), "{first_boot:?}");
            // IMIX-ish background: mostly small frames, some full-size ones.
            let bg: Vec<usize> = m
                .iter()
                .filter(|(k, _)| matches!(k, Part::Ipv4 | Part::Ipv6 | Part::Vlan))
                .map(|(_, f)| f.len())
                .collect();
            let small = bg.iter().filter(|&&l| l <= 80).count() as f64 / bg.len() as f64;
            let big = bg.iter().filter(|&&l| l >= 1500).count() as f64 / bg.len() as f64;
            assert!((0.45..0.7).contains(&small), "{small}");
            assert!((0.04..0.15).contains(&big), "{big}");
            assert!(m.iter().all(|(_, f)| (64..=1518).contains(&f.len())));
        }
        assert_eq!(frames(0, &spec), frames(0, &spec));
        assert_ne!(frames(0, &spec), frames(1, &spec));
    }

    #[test]
    fn frames_classify_as_what_they_are() {
        let server = v4(BOOT_SERVER);
        for side in [0, 1] {
            for (part, f) in build(side, &MixSpec::default()) {
                let c = classify(&f);
                match part {
                    Part::Ipv4 | Part::Vlan => {
                        assert_eq!(c.ip_version, Some(IpVersion::V4));
                        assert_eq!(c.outer_vlan.is_some(), part == Part::Vlan);
                        assert!(matches!(c.protocol, 6 | 17));
                        assert!(c.src_addr != server && c.dst_addr != server);
                        let l2 = if part == Part::Vlan { 18 } else { 14 };
                        let ip = &f[l2..l2 + 20];
                        assert_eq!(ip_checksum(ip), u16::from_be_bytes([ip[10], ip[11]]));
                    }
                    Part::Ipv6 => {
                        assert_eq!(c.ip_version, Some(IpVersion::V6));
                        assert!(matches!(c.protocol, 6 | 17));
                    }
                    Part::Tftp => {
                        let (from, to) = if side == 1 {
                            (c.src_addr, c.dst_addr)
                        } else {
                            (c.dst_addr, c.src_addr)
                        };
                        assert_eq!(from, server);
                        assert_ne!(to, server);
                        assert_eq!(c.protocol, 17);
                    }
                    Part::Dhcp => {
                        assert_eq!(c.protocol, 17);
                        assert!(matches!(c.dst_port, 67 | 68));
                    }
                }
                // Transport checksums are right: UDP and TCP over IPv4 and IPv6.
                if part != Part::Dhcp && c.ip_version.is_some() {
                    let l4 = usize::from(c.l4_offset);
                    let seg = &f[l4..];
                    let (pseudo, seg) = match c.ip_version {
                        Some(IpVersion::V4) => {
                            let ip = &f[l4 - 20..l4];
                            let len = u16::from_be_bytes([ip[2], ip[3]]) - 20;
                            let mut p = ip[12..20].to_vec();
                            p.extend_from_slice(&[0, c.protocol]);
                            p.extend_from_slice(&len.to_be_bytes());
                            (p, &seg[..usize::from(len)])
                        }
                        _ => {
                            let ip = &f[l4 - 40..l4];
                            let len = u16::from_be_bytes([ip[4], ip[5]]);
                            let mut p = ip[8..40].to_vec();
                            p.extend_from_slice(&u32::from(len).to_be_bytes());
                            p.extend_from_slice(&[0, 0, 0, c.protocol]);
                            (p, &seg[..usize::from(len)])
                        }
                    };
                    assert_eq!(checksum(&[&pseudo, seg]), 0, "{part:?} side {side}");
                }
            }
        }
    }
}
