//! The fast-path header classifier.
//!
//! [`classify`] reads Ethernet, up to two VLAN tags, IPv4 or IPv6 (walking
//! IPv6 extension headers) and the UDP or TCP ports, and returns a small
//! `Copy` [`Class`] with what the header filter keys on. It reads headers
//! only, allocates nothing and cannot panic on any input: every read is a
//! checked `first_chunk`/`get` followed by constant indexes into a fixed-size
//! array. What it cannot parse comes back as [`Kind::Malformed`] with a
//! reason; the bridge forwards such frames untouched. Checksums are not
//! verified here (forwarded frames are never changed); the slow path verifies
//! them with [`crate::frame::UdpFrameRepr::parse`].
//!
//! Cost: about 6–7 ns per frame on a realistic mix, 5–6 ns for the header
//! filter's few fields (see `bench/benches/wire.rs`).
//!
//! ```
//! use wire::classify::{classify, IpVersion, Kind};
//! # use std::net::{Ipv4Addr, SocketAddrV4};
//! # use wire::frame::{MacAddr, UdpFrameRepr};
//! # let repr = UdpFrameRepr::ipv4(
//! #     MacAddr([2, 0, 0, 0, 0, 1]),
//! #     MacAddr([2, 0, 0, 0, 0, 2]),
//! #     SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 50123),
//! #     SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 2070),
//! # );
//! # let mut frame = [0u8; 64];
//! # let len = repr.emit(&mut frame, &[0, 3, 0, 1]).unwrap();
//! # let frame = &frame[..len];
//! // `frame`: TFTP DATA block 1 from 10.0.0.1:50123 to 10.0.0.2:2070.
//! let c = classify(frame);
//! assert_eq!(c.kind, Kind::Udp);
//! assert_eq!(c.ip_version, Some(IpVersion::V4));
//! assert_eq!(c.src_v4(), Some(Ipv4Addr::new(10, 0, 0, 1)));
//! assert_eq!((c.src_port, c.dst_port), (50123, 2070));
//! assert_eq!(&c.payload(frame)[..2], &[0, 3]); // the TFTP opcode, no reparse
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::frame::ipv6::{ext_header, MAX_EXT_HEADERS};

/// What kind of frame [`classify`] saw, and so which [`Class`] fields hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// UDP: addresses, ports and payload location are valid.
    Udp,
    /// TCP: addresses, ports and payload location are valid.
    Tcp,
    /// IP with another upper-layer protocol (ICMP, ESP, ...): addresses and
    /// `protocol` are valid; the "payload" is the upper-layer header onward.
    OtherIp,
    /// A non-first IP fragment: addresses and `protocol` are valid, ports are
    /// not (they are in the first fragment); the payload is fragment data.
    Fragment,
    /// Not IPv4 or IPv6 (ARP, LLDP, 802.3 length frames, ...): only the VLAN
    /// IDs and `ethertype` are valid, plus, for a well-formed Ethernet/IPv4
    /// ARP body (EtherType `0x0806`), `src_addr` and `dst_addr`: the sender
    /// and target protocol addresses, IPv4-mapped, with `ip_version` still
    /// `None` (read them with [`Class::arp_ips`]). A truncated or foreign
    /// ARP body leaves them zero.
    NonIp,
    /// Could not be parsed: only the VLAN IDs and `ethertype` are filled in.
    Malformed(Malformed),
}

/// Why a frame is [`Kind::Malformed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// Shorter than an Ethernet header (14 bytes).
    Runt,
    /// A VLAN tag is cut off.
    TruncatedVlan,
    /// More than two stacked VLAN tags.
    TooManyVlans,
    /// The IP header, or the length the IP header claims, runs past the frame.
    TruncatedIp,
    /// The IP version nibble does not match the EtherType.
    BadIpVersion,
    /// IPv4 IHL below 5.
    BadIhl,
    /// IPv4 total length below the header length.
    BadIpLength,
    /// An IPv6 extension header runs past the payload.
    TruncatedExtHeader,
    /// More than [`MAX_EXT_HEADERS`] IPv6 extension headers.
    TooManyExtHeaders,
    /// The UDP or TCP header runs past the IP payload.
    TruncatedL4,
    /// UDP length below 8 or past the IP payload; TCP data offset below 5 or
    /// past the IP payload.
    BadL4Length,
}

/// IP version of a classified frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpVersion {
    /// IPv4 (addresses stored IPv4-mapped).
    V4,
    /// IPv6.
    V6,
}

/// What the header filter needs to know about one frame: `Copy`, under 64 bytes;
/// fields that [`Class::kind`] says are not valid are zero / `None`.
///
/// Addresses are 16-byte arrays for both versions, IPv4 stored IPv4-mapped
/// (`::ffff:a.b.c.d`, see [`v4_mapped`]) so one table key type covers both;
/// `ip_version` tells them apart. ARP frames ([`Kind::NonIp`]) carry their
/// sender and target protocol addresses there too, IPv4-mapped, with
/// `ip_version` `None`. Offsets count from the start of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Class {
    /// What was found; says which other fields are valid.
    pub kind: Kind,
    /// Outer (or only) VLAN ID.
    pub outer_vlan: Option<u16>,
    /// Inner VLAN ID of a QinQ pair.
    pub inner_vlan: Option<u16>,
    /// EtherType after any VLAN tags.
    pub ethertype: u16,
    /// IP version, `None` if not IP.
    pub ip_version: Option<IpVersion>,
    /// Upper-layer protocol (after IPv6 extension headers).
    pub protocol: u8,
    /// DSCP (0–63) from IPv4 TOS or IPv6 traffic class.
    pub dscp: u8,
    /// True for any IP fragment, first or later (IPv4 MF or offset; IPv6
    /// fragment header with M or an offset). `kind` is [`Kind::Fragment`]
    /// for later ones.
    pub fragment: bool,
    /// Source address (IPv4-mapped for IPv4); an ARP sender's protocol
    /// address, IPv4-mapped.
    pub src_addr: [u8; 16],
    /// Destination address (IPv4-mapped for IPv4); an ARP target's protocol
    /// address, IPv4-mapped.
    pub dst_addr: [u8; 16],
    /// UDP/TCP source port.
    pub src_port: u16,
    /// UDP/TCP destination port.
    pub dst_port: u16,
    /// Offset of the upper-layer header.
    pub l4_offset: u16,
    /// Offset of the UDP/TCP payload (= `l4_offset` for other kinds).
    pub payload_offset: u16,
    /// Payload length as the headers state it (UDP length, IP lengths),
    /// Ethernet padding excluded.
    pub payload_len: u16,
}

impl Class {
    /// All fields empty; `kind` is `Malformed(Runt)` until classified.
    pub const EMPTY: Class = Class {
        kind: Kind::Malformed(Malformed::Runt),
        outer_vlan: None,
        inner_vlan: None,
        ethertype: 0,
        ip_version: None,
        protocol: 0,
        dscp: 0,
        fragment: false,
        src_addr: [0; 16],
        dst_addr: [0; 16],
        src_port: 0,
        dst_port: 0,
        l4_offset: 0,
        payload_offset: 0,
        payload_len: 0,
    };

    /// The VLANs the frame is on, from the tags already read (no re-walk).
    #[inline(always)]
    pub const fn vlan_scope(&self) -> crate::frame::VlanScope {
        crate::frame::VlanScope::new(self.outer_vlan, self.inner_vlan)
    }

    /// True for UDP and TCP, whose ports are valid.
    pub fn has_ports(&self) -> bool {
        matches!(self.kind, Kind::Udp | Kind::Tcp)
    }

    /// True for a non-first IP fragment (ports unknown).
    pub fn is_later_fragment(&self) -> bool {
        self.kind == Kind::Fragment
    }

    /// Source address, if the frame is IP.
    pub fn src_ip(&self) -> Option<IpAddr> {
        self.ip(self.src_addr)
    }

    /// Destination address, if the frame is IP.
    pub fn dst_ip(&self) -> Option<IpAddr> {
        self.ip(self.dst_addr)
    }

    /// Source address, if the frame is IPv4.
    pub fn src_v4(&self) -> Option<Ipv4Addr> {
        self.v4(self.src_addr)
    }

    /// Destination address, if the frame is IPv4.
    pub fn dst_v4(&self) -> Option<Ipv4Addr> {
        self.v4(self.dst_addr)
    }

    /// Sender and target protocol addresses of an Ethernet/IPv4 ARP frame;
    /// `None` for anything else, truncated ARP included.
    pub fn arp_ips(&self) -> Option<(Ipv4Addr, Ipv4Addr)> {
        let mapped = |a: [u8; 16]| a[..12] == v4_mapped([0; 4])[..12];
        if self.kind != Kind::NonIp
            || self.ethertype != ETHERTYPE_ARP
            || !mapped(self.src_addr)
            || !mapped(self.dst_addr)
        {
            return None;
        }
        let [.., a, b, c, d] = self.src_addr;
        let [.., e, f, g, h] = self.dst_addr;
        Some((Ipv4Addr::new(a, b, c, d), Ipv4Addr::new(e, f, g, h)))
    }

    fn v4(&self, a: [u8; 16]) -> Option<Ipv4Addr> {
        match self.ip_version {
            Some(IpVersion::V4) => Some(Ipv4Addr::new(a[12], a[13], a[14], a[15])),
            _ => None,
        }
    }

    fn ip(&self, a: [u8; 16]) -> Option<IpAddr> {
        match self.ip_version {
            Some(IpVersion::V4) => self.v4(a).map(IpAddr::V4),
            Some(IpVersion::V6) => Some(IpAddr::V6(Ipv6Addr::from(a))),
            None => None,
        }
    }

    /// The payload of `frame` (the same frame that was classified): UDP/TCP
    /// payload, upper-layer bytes for other IP, fragment data for fragments;
    /// empty for non-IP and malformed frames. Never panics.
    pub fn payload<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        let start = usize::from(self.payload_offset);
        let end = start + usize::from(self.payload_len);
        match self.kind {
            Kind::NonIp | Kind::Malformed(_) => &[],
            _ => frame.get(start..end).unwrap_or(&[]),
        }
    }
}

/// An IPv4 address as [`Class`] stores it: IPv4-mapped (`::ffff:a.b.c.d`).
pub const fn v4_mapped(octets: [u8; 4]) -> [u8; 16] {
    let [a, b, c, d] = octets;
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d]
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_ARP: u16 = 0x0806;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

#[inline(always)]
fn is_vlan(ethertype: u16) -> bool {
    matches!(ethertype, 0x8100 | 0x88a8 | 0x9100)
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Classifies one Ethernet frame (no FCS). Never panics, never allocates.
#[inline]
pub fn classify(frame: &[u8]) -> Class {
    let mut c = Class::EMPTY;
    match link(frame, &mut c) {
        Ok(kind) => {
            c.kind = kind;
            c
        }
        // Dropping what was read past L2 keeps the compiler from carrying
        // every field's partial value to every exit (measured: ~30% faster).
        Err(why) => Class {
            kind: Kind::Malformed(why),
            outer_vlan: c.outer_vlan,
            inner_vlan: c.inner_vlan,
            ethertype: c.ethertype,
            ..Class::EMPTY
        },
    }
}

#[inline(always)]
fn link(frame: &[u8], c: &mut Class) -> Result<Kind, Malformed> {
    let Some((eth, rest)) = frame.split_first_chunk::<14>() else {
        return Err(Malformed::Runt);
    };
    let mut ethertype = be16([eth[12], eth[13]]);
    let mut l3 = rest;
    let mut l3_off = 14;
    // Up to two tags, unrolled: the common untagged case costs one compare.
    if is_vlan(ethertype) {
        let Some((tag, rest)) = l3.split_first_chunk::<4>() else {
            return Err(Malformed::TruncatedVlan);
        };
        c.outer_vlan = Some(be16([tag[0], tag[1]]) & 0x0fff);
        ethertype = be16([tag[2], tag[3]]);
        l3 = rest;
        l3_off = 18;
        if is_vlan(ethertype) {
            let Some((tag, rest)) = l3.split_first_chunk::<4>() else {
                return Err(Malformed::TruncatedVlan);
            };
            c.inner_vlan = Some(be16([tag[0], tag[1]]) & 0x0fff);
            ethertype = be16([tag[2], tag[3]]);
            l3 = rest;
            l3_off = 22;
            if is_vlan(ethertype) {
                c.ethertype = ethertype;
                return Err(Malformed::TooManyVlans);
            }
        }
    }
    c.ethertype = ethertype;
    match ethertype {
        ETHERTYPE_IPV4 => ipv4(l3, l3_off, c),
        ETHERTYPE_IPV6 => ipv6(l3, l3_off, c),
        ETHERTYPE_ARP => {
            arp(l3, c);
            Ok(Kind::NonIp)
        }
        _ => Ok(Kind::NonIp),
    }
}

/// An Ethernet/IPv4 ARP body (hardware type 1, protocol type `0x0800`,
/// lengths 6 and 4): its sender and target protocol addresses, IPv4-mapped.
/// Anything shorter or of another kind leaves them zero.
#[inline(always)]
fn arp(l3: &[u8], c: &mut Class) {
    let Some(a) = l3.first_chunk::<28>() else {
        return;
    };
    if a[..6] == [0, 1, 8, 0, 6, 4] {
        c.src_addr = v4_mapped([a[14], a[15], a[16], a[17]]);
        c.dst_addr = v4_mapped([a[24], a[25], a[26], a[27]]);
    }
}

#[inline(always)]
fn ipv4(l3: &[u8], l3_off: usize, c: &mut Class) -> Result<Kind, Malformed> {
    let Some(h) = l3.first_chunk::<20>() else {
        return Err(short_ip(l3, 4));
    };
    if h[0] >> 4 != 4 {
        return Err(Malformed::BadIpVersion);
    }
    c.ip_version = Some(IpVersion::V4);
    c.dscp = h[1] >> 2;
    c.protocol = h[9];
    c.src_addr = v4_mapped([h[12], h[13], h[14], h[15]]);
    c.dst_addr = v4_mapped([h[16], h[17], h[18], h[19]]);
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(Malformed::BadIhl);
    }
    let total = usize::from(be16([h[2], h[3]]));
    if total > l3.len() {
        return Err(Malformed::TruncatedIp);
    }
    let Some(l4) = l3.get(ihl..total) else {
        // ihl > total (a header longer than the packet claims to be)
        return Err(if ihl > l3.len() {
            Malformed::TruncatedIp
        } else {
            Malformed::BadIpLength
        });
    };
    let flags_offset = be16([h[6], h[7]]);
    c.fragment = flags_offset & 0x3fff != 0;
    let l4_off = l3_off + ihl;
    if flags_offset & 0x1fff != 0 {
        return Ok(later_fragment(l4, l4_off, c));
    }
    transport(h[9], l4, l4_off, c)
}

#[inline(always)]
fn ipv6(l3: &[u8], l3_off: usize, c: &mut Class) -> Result<Kind, Malformed> {
    // Split rather than index so the addresses copy as whole arrays.
    let Some((h, rest)) = l3.split_first_chunk::<8>() else {
        return Err(short_ip(l3, 6));
    };
    let Some((src, rest)) = rest.split_first_chunk::<16>() else {
        return Err(short_ip(l3, 6));
    };
    let Some((dst, rest)) = rest.split_first_chunk::<16>() else {
        return Err(short_ip(l3, 6));
    };
    if h[0] >> 4 != 6 {
        return Err(Malformed::BadIpVersion);
    }
    c.ip_version = Some(IpVersion::V6);
    // Traffic class straddles bytes 0 and 1; DSCP is its top 6 bits.
    c.dscp = ((h[0] & 0x0f) << 2) | (h[1] >> 6);
    let mut protocol = h[6];
    c.protocol = protocol;
    c.src_addr = *src;
    c.dst_addr = *dst;
    let payload_len = usize::from(be16([h[4], h[5]]));
    let Some(payload) = rest.get(..payload_len) else {
        return Err(Malformed::TruncatedIp);
    };
    let l4_base = l3_off + 40;
    let mut offset = 0usize;
    // The walk is skipped entirely by the usual UDP/TCP next header.
    if protocol != PROTO_UDP && protocol != PROTO_TCP {
        let mut hops = 0;
        loop {
            let ext = match ext_header(protocol, payload, offset) {
                Ok(Some(ext)) => ext,
                Ok(None) => break,
                Err(_) => return Err(Malformed::TruncatedExtHeader),
            };
            if hops == MAX_EXT_HEADERS {
                return Err(Malformed::TooManyExtHeaders);
            }
            hops += 1;
            protocol = ext.next;
            offset = ext.end;
            c.protocol = protocol;
            if let Some(frag) = ext.fragment {
                c.fragment |= frag.offset != 0 || frag.more_frags;
                if frag.offset != 0 {
                    let data = payload.get(offset..).unwrap_or(&[]);
                    return Ok(later_fragment(data, l4_base + offset, c));
                }
            }
        }
    }
    let l4 = payload.get(offset..).unwrap_or(&[]);
    transport(protocol, l4, l4_base + offset, c)
}

/// A header too short to read: a wrong version says more than the length.
#[cold]
fn short_ip(l3: &[u8], version: u8) -> Malformed {
    match l3.first() {
        Some(b) if b >> 4 != version => Malformed::BadIpVersion,
        _ => Malformed::TruncatedIp,
    }
}

#[inline(always)]
fn later_fragment(data: &[u8], off: usize, c: &mut Class) -> Kind {
    c.l4_offset = off as u16;
    c.payload_offset = off as u16;
    c.payload_len = data.len() as u16;
    Kind::Fragment
}

#[inline(always)]
fn transport(protocol: u8, l4: &[u8], l4_off: usize, c: &mut Class) -> Result<Kind, Malformed> {
    c.l4_offset = l4_off as u16;
    match protocol {
        PROTO_UDP => {
            let Some(u) = l4.first_chunk::<8>() else {
                return Err(Malformed::TruncatedL4);
            };
            c.src_port = be16([u[0], u[1]]);
            c.dst_port = be16([u[2], u[3]]);
            let udp_len = usize::from(be16([u[4], u[5]]));
            // A first fragment holds only part of what the UDP length covers.
            let end = if c.fragment {
                l4.len()
            } else if udp_len < 8 || udp_len > l4.len() {
                return Err(Malformed::BadL4Length);
            } else {
                udp_len
            };
            c.payload_offset = (l4_off + 8) as u16;
            c.payload_len = (end - 8) as u16;
            Ok(Kind::Udp)
        }
        PROTO_TCP => {
            let Some(t) = l4.first_chunk::<20>() else {
                return Err(Malformed::TruncatedL4);
            };
            c.src_port = be16([t[0], t[1]]);
            c.dst_port = be16([t[2], t[3]]);
            let data_offset = usize::from(t[12] >> 4) * 4;
            if data_offset < 20 || data_offset > l4.len() {
                return Err(Malformed::BadL4Length);
            }
            c.payload_offset = (l4_off + data_offset) as u16;
            c.payload_len = (l4.len() - data_offset) as u16;
            Ok(Kind::Tcp)
        }
        _ => {
            c.payload_offset = l4_off as u16;
            c.payload_len = l4.len() as u16;
            Ok(Kind::OtherIp)
        }
    }
}

#[cfg(test)]
mod tests;
