//! Traffic for the packet generator: frame sizes (fixed or IMIX), flows, and
//! the share of PXE traffic (TFTP transfers, DHCP) among background TCP/UDP.
//! Everything here is built once, before a run; the generator then cycles
//! through the frames without touching them.

use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::{bail, ensure, Result};
use wire::tftp::Packet;

use bootcache_testbed::frames::{CLIENT_MAC, SERVER_MAC};
use bootcache_testbed::scenario::{captured_dhcp_exchange, udp_frame, Side};

/// The simple IMIX: frame lengths (bytes, without FCS) and their weights, 7:4:1.
pub const IMIX: [(usize, usize); 3] = [(64, 7), (594, 4), (1518, 1)];

/// Shortest frame put on the wire (Ethernet minimum without FCS is 60; the
/// generator pads to the 64 bytes benchmarks name).
pub const MIN_FRAME: usize = 64;
/// Longest frame (1500-byte MTU plus the Ethernet header and FCS space).
pub const MAX_FRAME: usize = 1518;
/// Bytes at the end of a background frame that carry the generator's stamp.
pub const STAMP_LEN: usize = 16;

/// Frame lengths of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSize {
    /// Every frame this long (64–1518).
    Fixed(usize),
    /// 64, 594 and 1518 bytes in the ratio 7:4:1, interleaved.
    Imix,
}

impl std::str::FromStr for FrameSize {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<FrameSize> {
        if s.eq_ignore_ascii_case("imix") {
            return Ok(FrameSize::Imix);
        }
        let n: usize = s
            .parse()
            .map_err(|_| anyhow::anyhow!("frame size {s:?}: a number of bytes or \"imix\""))?;
        ensure!(
            (MIN_FRAME..=MAX_FRAME).contains(&n),
            "frame size {n}: must be {MIN_FRAME}–{MAX_FRAME} bytes"
        );
        Ok(FrameSize::Fixed(n))
    }
}

impl std::fmt::Display for FrameSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameSize::Fixed(n) => write!(f, "{n}"),
            FrameSize::Imix => write!(f, "imix"),
        }
    }
}

impl FrameSize {
    /// One period of frame lengths, interleaved so that every window of the
    /// period's length has the exact ratio (IMIX: 12 frames, the 1518-byte
    /// one in the middle, 594-byte ones spread between 64-byte ones).
    pub fn pattern(&self) -> Vec<usize> {
        match self {
            FrameSize::Fixed(n) => vec![*n],
            FrameSize::Imix => {
                let total: usize = IMIX.iter().map(|(_, w)| w).sum();
                // Spread each length evenly: slot k goes to the length whose
                // accumulated share first exceeds the slot's position.
                let mut out = Vec::with_capacity(total);
                let mut credit = [0f64; 3];
                for _ in 0..total {
                    for (c, (_, w)) in credit.iter_mut().zip(IMIX) {
                        *c += w as f64 / total as f64;
                    }
                    let (i, _) = credit
                        .iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .expect("three lengths");
                    credit[i] -= 1.0;
                    out.push(IMIX[i].0);
                }
                out
            }
        }
    }

    /// Mean frame length.
    pub fn mean(&self) -> f64 {
        let p = self.pattern();
        p.iter().sum::<usize>() as f64 / p.len() as f64
    }
}

/// What to send.
#[derive(Debug, Clone)]
pub struct TrafficSpec {
    /// Frame lengths.
    pub size: FrameSize,
    /// Distinct background flows (5-tuples) per direction, half UDP, half TCP.
    pub flows: usize,
    /// Share of PXE frames, per mille: TFTP DATA (from the server side) and
    /// ACKs (from the client side) of `transfers` transfers, and one in ten
    /// of them DHCP.
    pub pxe_per_mille: usize,
    /// Transfers the TFTP frames belong to: client 10.77.0.2, ports 20000 +
    /// i, server 10.77.0.1 TID 40000 (what [`bootcache_testbed::scenario::filter_bench_traffic`]'s
    /// read requests announce to bootcache).
    pub transfers: u16,
}

impl Default for TrafficSpec {
    fn default() -> Self {
        TrafficSpec {
            size: FrameSize::Fixed(64),
            flows: 1000,
            pxe_per_mille: 10,
            transfers: 10_000,
        }
    }
}

/// One frame the generator cycles through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The frame's bytes.
    pub frame: Vec<u8>,
    /// Background frame whose last [`STAMP_LEN`] bytes may carry a stamp
    /// (its UDP checksum is zero, so a stamp keeps it valid).
    pub stampable: bool,
    /// A PXE frame (TFTP or DHCP), which a caching bridge looks at.
    pub pxe: bool,
}

/// Frames per side for `spec`: a period that holds the size pattern, the
/// flows and the PXE share exactly (at most 4096 frames, so the templates
/// fit in the generator's pool).
pub fn build(spec: &TrafficSpec) -> Result<[Vec<Template>; 2]> {
    let pattern = spec.size.pattern();
    ensure!(spec.flows >= 1, "at least one flow");
    ensure!(spec.pxe_per_mille <= 1000, "PXE share above 1000 per mille");
    let mut n = lcm(lcm(pattern.len(), 1000), spec.flows.max(1));
    if n > 4096 {
        // Exact flow count matters more than an exact period for PXE share.
        n = lcm(pattern.len(), spec.flows);
        if n > 4096 {
            bail!(
                "{} flows with {} frame sizes need {n} templates (at most 4096)",
                spec.flows,
                pattern.len()
            );
        }
    }
    let dhcp = captured_dhcp_exchange();
    let server = Ipv4Addr::new(10, 77, 0, 1);
    let client_ip = Ipv4Addr::new(10, 77, 0, 2);
    let mut out: [Vec<Template>; 2] = [Vec::with_capacity(n), Vec::with_capacity(n)];
    for (side, frames) in out.iter_mut().enumerate() {
        let mut pxe_seen = 0usize;
        let mut flow = 0usize;
        for k in 0..n {
            let len = pattern[k % pattern.len()];
            // Bresenham: frame k is PXE when the running share crosses a whole frame.
            let is_pxe = (k + 1) * spec.pxe_per_mille / 1000 > k * spec.pxe_per_mille / 1000;
            let t = if is_pxe {
                pxe_seen += 1;
                let f = if pxe_seen.is_multiple_of(10) {
                    // DHCP: the captured request (client side) or reply.
                    dhcp.iter()
                        .find(|(s, _)| *s == side)
                        .map(|(_, f)| f.clone())
                        .expect("captured exchange has both sides")
                } else {
                    let i = ((pxe_seen * 7919) % usize::from(spec.transfers.max(1))) as u16;
                    let client = SocketAddrV4::new(client_ip, 20000u16.wrapping_add(i));
                    let server_tid = SocketAddrV4::new(server, 40000);
                    if side == 1 {
                        let payload = vec![0x5a; len.saturating_sub(46).max(1)];
                        let p = Packet::Data {
                            block: 1,
                            payload: &payload,
                        };
                        udp_frame(1, server_tid, client, &p.to_vec().expect("valid DATA"))
                    } else {
                        let p = Packet::Ack { block: 1 };
                        udp_frame(0, client, server_tid, &p.to_vec().expect("valid ACK"))
                    }
                };
                Template {
                    frame: pad(f, MIN_FRAME),
                    stampable: false,
                    pxe: true,
                }
            } else {
                let f = background(side, flow, len);
                flow = (flow + 1) % spec.flows;
                Template {
                    frame: f,
                    stampable: true,
                    pxe: false,
                }
            };
            frames.push(t);
        }
    }
    Ok(out)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn lcm(a: usize, b: usize) -> usize {
    a / gcd(a, b) * b
}

fn pad(mut f: Vec<u8>, len: usize) -> Vec<u8> {
    if f.len() < len {
        f.resize(len, 0);
    }
    f
}

/// A background frame of flow `flow` from `side`, `len` bytes: even flows
/// UDP (checksum 0), odd flows TCP (an ACK segment), between hosts in
/// 10.99.0.0/16 and 10.98.0.1 that no filter rule names.
pub fn background(side: Side, flow: usize, len: usize) -> Vec<u8> {
    let len = len.clamp(MIN_FRAME, MAX_FRAME);
    let a = (
        Ipv4Addr::new(10, 99, (flow >> 8) as u8, flow as u8),
        1024 + (flow % 60000) as u16,
    );
    let b = (Ipv4Addr::new(10, 98, 0, 1), 5001u16);
    let ((sip, sport), (dip, dport)) = if side == 0 { (a, b) } else { (b, a) };
    let (smac, dmac) = if side == 0 {
        (CLIENT_MAC, SERVER_MAC)
    } else {
        (SERVER_MAC, CLIENT_MAC)
    };
    let tcp = flow % 2 == 1;
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dmac);
    f[6..12].copy_from_slice(&smac);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len = (len - 14) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = if tcp { 6 } else { 17 };
    ip[12..16].copy_from_slice(&sip.octets());
    ip[16..20].copy_from_slice(&dip.octets());
    let sum = ip_checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let l4 = &mut f[34..];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    if tcp {
        l4[4..8].copy_from_slice(&1u32.to_be_bytes()); // seq
        l4[8..12].copy_from_slice(&1u32.to_be_bytes()); // ack
        l4[12] = 5 << 4; // data offset
        l4[13] = 0x10; // ACK
        l4[14..16].copy_from_slice(&65535u16.to_be_bytes());
    } else {
        l4[4..6].copy_from_slice(&(ip_len - 20).to_be_bytes());
    }
    f
}

/// The IPv4 header checksum of `header` (its checksum field counted as zero).
pub fn ip_checksum(header: &[u8]) -> u16 {
    checksum(&[&header[..10], &header[12..]])
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`, each
/// of even length but the last.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for p in parts {
        for w in p.chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn imix_is_7_4_1_in_every_period_and_interleaved() {
        let p = FrameSize::Imix.pattern();
        assert_eq!(p.len(), 12);
        for (len, w) in IMIX {
            assert_eq!(p.iter().filter(|&&l| l == len).count(), w, "{len}");
        }
        // Never more than two 64-byte frames in a row (not 7 then 4 then 1).
        assert!(p.windows(3).all(|w| w.iter().any(|&l| l != 64)), "{p:?}");
        assert!((FrameSize::Imix.mean() - 4342.0 / 12.0).abs() < 1e-9);
        let spec = TrafficSpec {
            size: FrameSize::Imix,
            ..TrafficSpec::default()
        };
        let [a, b] = build(&spec).unwrap();
        for side in [a, b] {
            let bg: Vec<usize> = side
                .iter()
                .filter(|t| !t.pxe)
                .map(|t| t.frame.len())
                .collect();
            let n64 = bg.iter().filter(|&&l| l == 64).count() as f64;
            let n1518 = bg.iter().filter(|&&l| l == 1518).count() as f64;
            assert!((n64 / n1518 - 7.0).abs() < 0.2, "{n64} / {n1518}");
        }
    }

    #[test]
    fn sizes_flows_and_pxe_share_are_as_asked() {
        for size in [64, 128, 1518] {
            let spec = TrafficSpec {
                size: FrameSize::Fixed(size),
                flows: 250,
                pxe_per_mille: 20,
                transfers: 100,
            };
            let [c, s] = build(&spec).unwrap();
            for (side, frames) in [c, s].iter().enumerate() {
                let pxe = frames.iter().filter(|t| t.pxe).count();
                assert_eq!(pxe * 1000, frames.len() * 20, "side {side}");
                let bg: Vec<_> = frames.iter().filter(|t| !t.pxe).collect();
                assert!(bg.iter().all(|t| t.frame.len() == size && t.stampable));
                let flows: HashSet<&[u8]> = bg.iter().map(|t| &t.frame[26..38]).collect();
                assert_eq!(flows.len(), 250);
                assert!(frames.iter().all(|t| t.frame.len() >= MIN_FRAME));
            }
        }
    }

    #[test]
    fn background_frames_are_valid_ipv4() {
        for flow in [0, 1] {
            let f = background(0, flow, 64);
            assert_eq!(f.len(), 64);
            assert_eq!(ip_checksum(&f[14..34]), u16::from_be_bytes([f[24], f[25]]));
            assert_eq!(f[23], if flow == 0 { 17 } else { 6 });
        }
        let udp = background(1, 2, 200);
        assert!(wire::frame::UdpFrameRepr::parse(&udp).is_ok());
    }

    #[test]
    fn bad_sizes_are_refused_with_one_line() {
        assert!("63".parse::<FrameSize>().is_err());
        assert!("1519".parse::<FrameSize>().is_err());
        assert!("big".parse::<FrameSize>().is_err());
        assert_eq!("IMIX".parse::<FrameSize>().unwrap(), FrameSize::Imix);
        assert_eq!("128".parse::<FrameSize>().unwrap(), FrameSize::Fixed(128));
    }
}
