//! IPv6 fixed header (RFC 8200) and a walk over the common extension headers
//! (hop-by-hop, routing, fragment, destination options, AH, mobility, HIP,
//! shim6) to the upper-layer protocol.

use std::net::Ipv6Addr;

use super::{Error, IpProtocol};

mod field {
    use core::ops::Range;
    pub(super) const VER_TC_FLOW: Range<usize> = 0..4;
    pub(super) const LENGTH: Range<usize> = 4..6;
    pub(super) const NXT_HDR: usize = 6;
    pub(super) const HOP_LIMIT: usize = 7;
    pub(super) const SRC: Range<usize> = 8..24;
    pub(super) const DST: Range<usize> = 24..40;
}

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = field::DST.end;

/// Most extension headers [`walk_extensions`] follows before giving up; real
/// traffic carries one or two, and a cap bounds the fast path's work.
pub const MAX_EXT_HEADERS: usize = 8;

/// A zero-copy view of an IPv6 packet.
///
/// After [`Packet::new_checked`] no accessor can panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

view_constructors!(Packet);

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks that the fixed header and the payload length fit in the buffer.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < HEADER_LEN + usize::from(self.payload_len()) {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    fn word0(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VER_TC_FLOW];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Version field (6 for a valid packet).
    pub fn version(&self) -> u8 {
        (self.word0() >> 28) as u8
    }

    /// Traffic class (DSCP << 2 | ECN).
    pub fn traffic_class(&self) -> u8 {
        (self.word0() >> 20) as u8
    }

    /// Differentiated services code point (0–63).
    pub fn dscp(&self) -> u8 {
        self.traffic_class() >> 2
    }

    /// Flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        self.word0() & 0x000f_ffff
    }

    /// Payload length (extension headers included).
    pub fn payload_len(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::LENGTH];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Next header after the fixed header.
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::NXT_HDR])
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        Ipv6Addr::from(a)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        Ipv6Addr::from(a)
    }

    /// Walks the extension headers to the upper-layer protocol.
    pub fn upper_layer(&self) -> Result<Ipv6Upper, Error> {
        let payload =
            &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())];
        walk_extensions(self.next_header(), payload)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload (extension headers included), padding excluded,
    /// borrowed for the buffer's lifetime.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 6, traffic class and flow label (masked to 20 bits).
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let w = (6u32 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&w.to_be_bytes());
    }

    /// Sets the payload length.
    pub fn set_payload_len(&mut self, value: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the next header.
    pub fn set_next_header(&mut self, value: IpProtocol) {
        self.buffer.as_mut()[field::NXT_HDR] = value.0;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = value;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.octets());
    }

    /// The payload, mutably (the payload length must be set first).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// Fragment header fields (RFC 8200 §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Fragment {
    /// Fragment offset in bytes (a multiple of 8).
    pub offset: u16,
    /// More-fragments flag.
    pub more_frags: bool,
    /// Identification.
    pub ident: u32,
}

/// Where the extension-header chain ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Upper {
    /// The upper-layer protocol (UDP, TCP, ICMPv6, ESP, No Next Header, ...).
    pub protocol: IpProtocol,
    /// Offset of the upper-layer header from the start of the IPv6 payload.
    pub offset: usize,
    /// The fragment header, if one was crossed. For a non-first fragment
    /// (`offset != 0`) the walk stops there: what follows is not a header.
    pub fragment: Option<Ipv6Fragment>,
}

/// Walks extension headers starting with `next_header` over `payload` (the
/// IPv6 payload) and returns the upper-layer protocol and its offset.
///
/// Errors: [`Error::Truncated`] if a header runs past the payload,
/// [`Error::Unsupported`] after [`MAX_EXT_HEADERS`] headers.
pub fn walk_extensions(next_header: IpProtocol, payload: &[u8]) -> Result<Ipv6Upper, Error> {
    let mut protocol = next_header.0;
    let mut offset = 0usize;
    let mut fragment = None;
    for _ in 0..MAX_EXT_HEADERS {
        let Some(ext) = ext_header(protocol, payload, offset)? else {
            return Ok(Ipv6Upper {
                protocol: IpProtocol(protocol),
                offset,
                fragment,
            });
        };
        protocol = ext.next;
        offset = ext.end;
        if let Some(frag) = ext.fragment {
            fragment = Some(frag);
            if frag.offset != 0 {
                return Ok(Ipv6Upper {
                    protocol: IpProtocol(protocol),
                    offset,
                    fragment,
                });
            }
        }
    }
    match ext_header(protocol, payload, offset)? {
        None => Ok(Ipv6Upper {
            protocol: IpProtocol(protocol),
            offset,
            fragment,
        }),
        Some(_) => Err(Error::Unsupported),
    }
}

pub(crate) struct ExtHeader {
    pub(crate) next: u8,
    pub(crate) end: usize,
    pub(crate) fragment: Option<Ipv6Fragment>,
}

/// Decodes the extension header `protocol` at `offset` in `payload`;
/// `Ok(None)` if `protocol` is not an extension header. Never panics.
#[inline(always)]
pub(crate) fn ext_header(
    protocol: u8,
    payload: &[u8],
    offset: usize,
) -> Result<Option<ExtHeader>, Error> {
    let unit_len = match IpProtocol(protocol) {
        IpProtocol::HOPOPT
        | IpProtocol::IPV6_ROUTE
        | IpProtocol::IPV6_OPTS
        | IpProtocol::MOBILITY
        | IpProtocol::HIP
        | IpProtocol::SHIM6 => 8,
        IpProtocol::AH => 4,
        IpProtocol::IPV6_FRAG => 0,
        _ => return Ok(None),
    };
    let Some(head) = payload.get(offset..).and_then(|b| b.first_chunk::<8>()) else {
        return Err(Error::Truncated);
    };
    let (len, fragment) = if unit_len == 0 {
        let off_flags = u16::from_be_bytes([head[2], head[3]]);
        let frag = Ipv6Fragment {
            offset: off_flags & 0xfff8,
            more_frags: off_flags & 1 != 0,
            ident: u32::from_be_bytes([head[4], head[5], head[6], head[7]]),
        };
        (8, Some(frag))
    } else if unit_len == 8 {
        ((usize::from(head[1]) + 1) * 8, None)
    } else {
        // AH counts 4-byte words, minus 2 (RFC 4302).
        ((usize::from(head[1]) + 2) * 4, None)
    };
    let end = offset + len;
    if end > payload.len() {
        return Err(Error::Truncated);
    }
    Ok(Some(ExtHeader {
        next: head[0],
        end,
        fragment,
    }))
}

/// A parsed IPv6 fixed header (extension headers are walked, not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// Next header after the fixed header.
    pub next_header: IpProtocol,
    /// Payload length in bytes (extension headers included).
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
    /// DSCP (0–63).
    pub dscp: u8,
    /// ECN (0–3).
    pub ecn: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// Parses a packet, checking version and lengths.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self, Error> {
        packet.check_len()?;
        if packet.version() != 6 {
            return Err(Error::BadVersion);
        }
        Ok(Ipv6Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
            dscp: packet.dscp(),
            ecn: packet.traffic_class() & 3,
            flow_label: packet.flow_label(),
        })
    }

    /// Bytes the fixed header takes on the wire.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the fixed header; the packet must hold [`HEADER_LEN`] bytes
    /// and `payload_len` must fit in a `u16`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_version_tc_flow((self.dscp << 2) | (self.ecn & 3), self.flow_label);
        packet.set_payload_len(self.payload_len as u16);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // fe80::1 -> ff02::1:2 (DHCPv6 servers), DSCP 8, flow 0x12345, hop-by-hop
    // (router alert + PadN, 8 bytes) then UDP 546 -> 547, 8-byte header only.
    static HBH_UDP: [u8; 56] = [
        0x62, 0x11, 0x23, 0x45, 0x00, 0x10, 0x00, 0x01, //
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, //
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0, 0x02, //
        0x11, 0x00, 0x05, 0x02, 0x00, 0x00, 0x01, 0x00, //
        0x02, 0x22, 0x02, 0x23, 0x00, 0x08, 0x00, 0x00,
    ];

    fn packet_with(next: u8, exts: &[u8]) -> Vec<u8> {
        let mut p = HBH_UDP[..40].to_vec();
        p[6] = next;
        p[4..6].copy_from_slice(&(exts.len() as u16).to_be_bytes());
        p.extend_from_slice(exts);
        p
    }

    #[test]
    fn fixed_header_round_trip() {
        let packet = Packet::new_checked(&HBH_UDP[..]).unwrap();
        let repr = Ipv6Repr::parse(&packet).unwrap();
        assert_eq!(repr.src_addr, "fe80::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(repr.dst_addr, "ff02::1:2".parse::<Ipv6Addr>().unwrap());
        assert_eq!((repr.dscp, repr.ecn, repr.flow_label), (8, 1, 0x12345));
        assert_eq!(repr.next_header, IpProtocol::HOPOPT);
        assert_eq!(repr.payload_len, 16);
        let mut out = [0u8; 56];
        out[40..].copy_from_slice(packet.payload());
        repr.emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(out, HBH_UDP);
    }

    #[test]
    fn walks_hop_by_hop_to_udp() {
        let up = Packet::new_checked(&HBH_UDP[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!(up.protocol, IpProtocol::UDP);
        assert_eq!(up.offset, 8);
        assert_eq!(up.fragment, None);
    }

    #[test]
    fn walks_routing_dest_opts_and_ah() {
        let exts = [
            // routing (type 0 header, 24 bytes) -> dest opts
            60, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            // dest opts (8 bytes) -> AH
            51, 0, 1, 4, 0, 0, 0, 0, // AH, payload len 4 => (4+2)*4 = 24 bytes -> TCP
            6, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let p = packet_with(43, &exts);
        let up = Packet::new_checked(&p[..]).unwrap().upper_layer().unwrap();
        assert_eq!(up.protocol, IpProtocol::TCP);
        assert_eq!(up.offset, 56);
    }

    #[test]
    fn first_fragment_walks_on_later_fragment_stops() {
        // fragment header: next UDP, offset 0, M=1, id 0xdeadbeef; then UDP
        let first = packet_with(
            44,
            &[
                17, 0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 0, 8, 0, 0,
            ],
        );
        let up = Packet::new_checked(&first[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!(up.protocol, IpProtocol::UDP);
        assert_eq!(up.offset, 8);
        assert_eq!(
            up.fragment,
            Some(Ipv6Fragment {
                offset: 0,
                more_frags: true,
                ident: 0xdead_beef
            })
        );
        // offset 1448, last fragment: the payload after it is not a header
        let later = packet_with(44, &[0, 0, 0x05, 0xa8, 0, 0, 0, 1, 0xff, 0xff]);
        let up = Packet::new_checked(&later[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!(up.protocol, IpProtocol::HOPOPT);
        assert_eq!(up.fragment.unwrap().offset, 1448);
        assert!(!up.fragment.unwrap().more_frags);
    }

    #[test]
    fn truncated_and_endless_chains_are_refused() {
        let p = packet_with(0, &[17, 1, 0, 0, 0, 0, 0, 0]); // claims 16 bytes
        assert_eq!(
            Packet::new_checked(&p[..]).unwrap().upper_layer(),
            Err(Error::Truncated)
        );
        let p = packet_with(60, &[17, 0, 0, 0]); // shorter than 8
        assert_eq!(
            Packet::new_checked(&p[..]).unwrap().upper_layer(),
            Err(Error::Truncated)
        );
        let mut chain = Vec::new();
        for _ in 0..=MAX_EXT_HEADERS {
            chain.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
        }
        let p = packet_with(60, &chain);
        assert_eq!(
            Packet::new_checked(&p[..]).unwrap().upper_layer(),
            Err(Error::Unsupported)
        );
        // exactly MAX_EXT_HEADERS headers is fine
        let mut chain = vec![0u8; 8 * MAX_EXT_HEADERS];
        for (i, h) in chain.chunks_mut(8).enumerate() {
            h[0] = if i + 1 == MAX_EXT_HEADERS { 59 } else { 60 };
        }
        let p = packet_with(60, &chain);
        let up = Packet::new_checked(&p[..]).unwrap().upper_layer().unwrap();
        assert_eq!(up.protocol, IpProtocol::NO_NEXT_HEADER);
    }

    #[test]
    fn impossible_lengths() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&HBH_UDP[..len]).unwrap_err(),
                Error::Truncated
            );
        }
        assert_eq!(
            Packet::new_checked(&HBH_UDP[..55]).unwrap_err(),
            Error::Truncated
        );
        let mut bad = HBH_UDP;
        bad[0] = 0x40;
        assert_eq!(
            Ipv6Repr::parse(&Packet::new_unchecked(&bad[..])).unwrap_err(),
            Error::BadVersion
        );
    }
}
