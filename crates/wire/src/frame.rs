//! Frame headers for the slow path: zero-copy views and `Repr`s for
//! Ethernet II, 802.1Q/QinQ tags, IPv4, IPv6, UDP, ARP and ICMP echo, in
//! the style of smoltcp's `wire` module, plus whole-frame `Repr`s that
//! parse and build Ethernet/\[VLAN\]/... frames: [`UdpFrameRepr`] (IP/UDP,
//! with correct checksums), [`ArpFrameRepr`] and [`EchoFrameRepr`] (ping).
//!
//! Each protocol has a `Packet<T: AsRef<[u8]>>` (or `Frame<T>`) view whose
//! `new_checked` validates every length it relies on, after which no accessor
//! can panic, and a plain `Repr` with `parse`, `emit` and `buffer_len`.
//! Untrusted input goes through `new_checked` + `parse`; `emit` trusts its
//! buffer (the caller sized it with `buffer_len`).
//!
//! The fast path does not use these: see [`crate::classify`].
//!
//! ```
//! use std::net::{Ipv4Addr, SocketAddrV4};
//! use wire::frame::{MacAddr, UdpFrameRepr};
//!
//! let repr = UdpFrameRepr::ipv4(
//!     MacAddr([0x52, 0x54, 0, 0, 0, 1]),
//!     MacAddr([0x52, 0x54, 0, 0, 0, 2]),
//!     SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 40000),
//!     SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 2000),
//! );
//! let mut buf = [0u8; 1514];
//! let len = repr.emit(&mut buf, b"\x00\x03\x00\x01hello").unwrap();
//! let (parsed, payload) = UdpFrameRepr::parse(&buf[..len]).unwrap();
//! assert_eq!((parsed.src(), parsed.dst()), (repr.src(), repr.dst()));
//! assert_eq!(payload, b"\x00\x03\x00\x01hello");
//! ```

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// What every zero-copy view here shares: the constructors, which call the
/// view's `check_len` (generated too from `min_len = N` for views that only
/// need N bytes), and big-endian 16-bit field access.
macro_rules! view_constructors {
    ($view:ident, min_len = $min:expr) => {
        view_constructors!($view);

        impl<T: AsRef<[u8]>> $view<T> {
            /// Checks that the buffer holds the whole header (more, such as
            /// a payload or Ethernet padding, is allowed).
            pub fn check_len(&self) -> Result<(), Error> {
                if self.buffer.as_ref().len() < $min {
                    return Err(Error::Truncated);
                }
                Ok(())
            }
        }
    };
    ($view:ident) => {
        impl<T: AsRef<[u8]>> $view<T> {
            /// Wraps a buffer without checking it; accessors may panic on
            /// short buffers.
            pub const fn new_unchecked(buffer: T) -> Self {
                $view { buffer }
            }

            /// Wraps a buffer, checking it with `check_len`: after that no
            /// accessor can panic.
            pub fn new_checked(buffer: T) -> Result<Self, Error> {
                let view = Self::new_unchecked(buffer);
                view.check_len()?;
                Ok(view)
            }

            /// Returns the underlying buffer.
            pub fn into_inner(self) -> T {
                self.buffer
            }

            #[allow(dead_code)]
            fn be16(&self, range: core::ops::Range<usize>) -> u16 {
                let b = &self.buffer.as_ref()[range];
                u16::from_be_bytes([b[0], b[1]])
            }
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $view<T> {
            #[allow(dead_code)]
            fn set_be16(&mut self, range: core::ops::Range<usize>, value: u16) {
                self.buffer.as_mut()[range].copy_from_slice(&value.to_be_bytes());
            }
        }
    };
}

pub mod arp;
pub mod ethernet;
pub mod icmpv4;
pub mod ipv4;
pub mod ipv6;
pub mod udp;
pub mod vlan;

pub use arp::{ArpFrameRepr, ArpRepr, Operation as ArpOperation};
pub use ethernet::EthernetRepr;
pub use icmpv4::EchoFrameRepr;
pub use ipv4::{Ipv4Options, Ipv4Repr};
pub use ipv6::{Ipv6Fragment, Ipv6Repr, Ipv6Upper};
pub use udp::UdpRepr;
pub use vlan::{VlanRepr, VlanScope};

/// Why a frame header could not be parsed or emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer ends before the header, or before the length a header claims.
    #[error("truncated header or payload")]
    Truncated,
    /// The IP version field does not match the EtherType.
    #[error("wrong IP version")]
    BadVersion,
    /// A header length field is below its minimum (IPv4 IHL < 5) or options
    /// are not whole 32-bit words.
    #[error("bad header length")]
    BadHeaderLen,
    /// A length field is inconsistent (IPv4 total length below the header,
    /// UDP length below 8) or a payload is too long for its length field.
    #[error("bad length field")]
    BadLength,
    /// A checksum does not verify.
    #[error("bad checksum")]
    BadChecksum,
    /// The output buffer is too small for what is to be emitted.
    #[error("buffer too small")]
    BufferTooSmall,
    /// Valid but not handled here: more than two VLAN tags, a chain of more
    /// than [`ipv6::MAX_EXT_HEADERS`] extension headers, an IP fragment, a
    /// payload that is not what the parser reads (UDP for [`UdpFrameRepr`],
    /// ICMP echo for [`EchoFrameRepr`]), or ARP for another hardware or
    /// protocol type than Ethernet/IPv4.
    #[error("unsupported frame")]
    Unsupported,
}

/// An EtherType (or a VLAN TPID in the same position).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EtherType(pub u16);

impl EtherType {
    /// IPv4.
    pub const IPV4: EtherType = EtherType(0x0800);
    /// ARP.
    pub const ARP: EtherType = EtherType(0x0806);
    /// 802.1Q customer VLAN tag.
    pub const VLAN: EtherType = EtherType(0x8100);
    /// IPv6.
    pub const IPV6: EtherType = EtherType(0x86dd);
    /// 802.1ad service VLAN tag (QinQ outer tag).
    pub const QINQ: EtherType = EtherType(0x88a8);
    /// Pre-standard QinQ outer tag some switches still send.
    pub const QINQ_LEGACY: EtherType = EtherType(0x9100);

    /// True for the TPIDs that start a VLAN tag.
    pub const fn is_vlan(self) -> bool {
        matches!(self.0, 0x8100 | 0x88a8 | 0x9100)
    }
}

/// An IP protocol number / IPv6 next-header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// IPv6 hop-by-hop options.
    pub const HOPOPT: IpProtocol = IpProtocol(0);
    /// ICMP.
    pub const ICMP: IpProtocol = IpProtocol(1);
    /// TCP.
    pub const TCP: IpProtocol = IpProtocol(6);
    /// UDP.
    pub const UDP: IpProtocol = IpProtocol(17);
    /// IPv6 routing header.
    pub const IPV6_ROUTE: IpProtocol = IpProtocol(43);
    /// IPv6 fragment header.
    pub const IPV6_FRAG: IpProtocol = IpProtocol(44);
    /// IPsec ESP (opaque: the walk stops there).
    pub const ESP: IpProtocol = IpProtocol(50);
    /// IPsec authentication header.
    pub const AH: IpProtocol = IpProtocol(51);
    /// ICMPv6.
    pub const ICMPV6: IpProtocol = IpProtocol(58);
    /// IPv6 "no next header".
    pub const NO_NEXT_HEADER: IpProtocol = IpProtocol(59);
    /// IPv6 destination options.
    pub const IPV6_OPTS: IpProtocol = IpProtocol(60);
    /// Mobile IPv6 mobility header.
    pub const MOBILITY: IpProtocol = IpProtocol(135);
    /// Host identity protocol.
    pub const HIP: IpProtocol = IpProtocol(139);
    /// Shim6.
    pub const SHIM6: IpProtocol = IpProtocol(140);
}

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// Copies a 6-byte slice; panics on another length (internal use after checks).
    fn from_slice(b: &[u8]) -> MacAddr {
        let mut a = [0u8; 6];
        a.copy_from_slice(b);
        MacAddr(a)
    }

    /// True for group (multicast and broadcast) addresses.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }
}

impl core::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let a = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            a[0], a[1], a[2], a[3], a[4], a[5]
        )
    }
}

/// Source and destination addresses of one IP packet, for pseudo-header
/// checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpAddrs {
    /// IPv4 pair.
    V4 {
        /// Source.
        src: Ipv4Addr,
        /// Destination.
        dst: Ipv4Addr,
    },
    /// IPv6 pair.
    V6 {
        /// Source.
        src: Ipv6Addr,
        /// Destination.
        dst: Ipv6Addr,
    },
}

/// Internet checksum helpers over etherparse's word summer (it adds 64 bits
/// at a time in native byte order, which is what makes it fast).
mod checksum {
    use super::{IpAddrs, IpProtocol};
    use etherparse::checksum::Sum16BitWords;

    pub(super) fn sum(data: &[u8]) -> Sum16BitWords {
        Sum16BitWords::new().add_slice(data)
    }

    /// Folds and complements into the value as a big-endian field reads.
    pub(super) fn fold(sum: Sum16BitWords) -> u16 {
        u16::from_be_bytes(sum.ones_complement().to_ne_bytes())
    }

    pub(super) fn pseudo_header(addrs: &IpAddrs, protocol: IpProtocol, len: u16) -> Sum16BitWords {
        let mut s = Sum16BitWords::new();
        s = match addrs {
            IpAddrs::V4 { src, dst } => s.add_4bytes(src.octets()).add_4bytes(dst.octets()),
            IpAddrs::V6 { src, dst } => s.add_16bytes(src.octets()).add_16bytes(dst.octets()),
        };
        s.add_2bytes([0, protocol.0]).add_2bytes(len.to_be_bytes())
    }
}

/// A VLAN tag to emit: its TPID plus TCI fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag {
    /// TPID: [`EtherType::VLAN`], [`EtherType::QINQ`] or [`EtherType::QINQ_LEGACY`].
    pub tpid: EtherType,
    /// Priority code point (0–7).
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN identifier (0–4095).
    pub vid: u16,
}

/// The IP header of a [`UdpFrameRepr`]. On emit, protocol (next header) and
/// payload length are derived from the UDP payload; whatever the inner
/// `Repr` holds there is ignored. On parse they hold what the frame carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpRepr {
    /// IPv4 (options allowed; fragment fields must be clear).
    Ipv4(Ipv4Repr),
    /// IPv6 without extension headers.
    Ipv6(Ipv6Repr),
}

impl IpRepr {
    /// The address pair, for pseudo-header checksums.
    pub fn addrs(&self) -> IpAddrs {
        match self {
            IpRepr::Ipv4(r) => IpAddrs::V4 {
                src: r.src_addr,
                dst: r.dst_addr,
            },
            IpRepr::Ipv6(r) => IpAddrs::V6 {
                src: r.src_addr,
                dst: r.dst_addr,
            },
        }
    }

    fn header_len(&self) -> usize {
        match self {
            IpRepr::Ipv4(r) => r.header_len(),
            IpRepr::Ipv6(r) => r.buffer_len(),
        }
    }
}

/// A whole Ethernet II / [802.1Q [802.1Q]] / IPv4 or IPv6 / UDP frame: what
/// the slow path parses out of redirected frames and what it injects (TFTP
/// replies that look like the boot server's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFrameRepr {
    /// Source MAC address.
    pub src_mac: MacAddr,
    /// Destination MAC address.
    pub dst_mac: MacAddr,
    /// Outer (or only) VLAN tag.
    pub outer_vlan: Option<VlanTag>,
    /// Inner VLAN tag of a QinQ pair; needs `outer_vlan`.
    pub inner_vlan: Option<VlanTag>,
    /// IP header.
    pub ip: IpRepr,
    /// UDP ports.
    pub udp: UdpRepr,
}

impl UdpFrameRepr {
    /// An untagged IPv4 frame with TTL 64, DF set, identification 0, DSCP 0.
    pub fn ipv4(src_mac: MacAddr, dst_mac: MacAddr, src: SocketAddrV4, dst: SocketAddrV4) -> Self {
        UdpFrameRepr {
            src_mac,
            dst_mac,
            outer_vlan: None,
            inner_vlan: None,
            ip: IpRepr::Ipv4(Ipv4Repr {
                src_addr: *src.ip(),
                dst_addr: *dst.ip(),
                protocol: IpProtocol::UDP,
                payload_len: 0,
                ttl: 64,
                dscp: 0,
                ecn: 0,
                ident: 0,
                dont_frag: true,
                more_frags: false,
                frag_offset: 0,
                options: Ipv4Options::EMPTY,
            }),
            udp: UdpRepr {
                src_port: src.port(),
                dst_port: dst.port(),
            },
        }
    }

    /// An untagged IPv6 frame with hop limit 64, no flow label, DSCP 0.
    pub fn ipv6(src_mac: MacAddr, dst_mac: MacAddr, src: SocketAddrV6, dst: SocketAddrV6) -> Self {
        UdpFrameRepr {
            src_mac,
            dst_mac,
            outer_vlan: None,
            inner_vlan: None,
            ip: IpRepr::Ipv6(Ipv6Repr {
                src_addr: *src.ip(),
                dst_addr: *dst.ip(),
                next_header: IpProtocol::UDP,
                payload_len: 0,
                hop_limit: 64,
                dscp: 0,
                ecn: 0,
                flow_label: 0,
            }),
            udp: UdpRepr {
                src_port: src.port(),
                dst_port: dst.port(),
            },
        }
    }

    /// Source socket address.
    pub fn src(&self) -> SocketAddr {
        match &self.ip {
            IpRepr::Ipv4(r) => SocketAddr::from((r.src_addr, self.udp.src_port)),
            IpRepr::Ipv6(r) => SocketAddr::from((r.src_addr, self.udp.src_port)),
        }
    }

    /// Destination socket address.
    pub fn dst(&self) -> SocketAddr {
        match &self.ip {
            IpRepr::Ipv4(r) => SocketAddr::from((r.dst_addr, self.udp.dst_port)),
            IpRepr::Ipv6(r) => SocketAddr::from((r.dst_addr, self.udp.dst_port)),
        }
    }

    /// Parses a whole frame, verifying IPv4 header and UDP checksums, and
    /// returns it with the UDP payload. IPv6 extension headers are walked
    /// and skipped (not kept); fragments, more than two VLAN tags and
    /// non-UDP payloads are [`Error::Unsupported`].
    pub fn parse(frame: &[u8]) -> Result<(Self, &[u8]), Error> {
        let (link, ethertype, rest) = Link::parse(frame)?;
        let (ip, addrs, segment) = match ethertype {
            EtherType::IPV4 => {
                let packet = ipv4::Packet::new_checked(rest)?;
                let repr = Ipv4Repr::parse(&packet)?;
                if packet.is_fragment() || repr.protocol != IpProtocol::UDP {
                    return Err(Error::Unsupported);
                }
                let addrs = IpAddrs::V4 {
                    src: repr.src_addr,
                    dst: repr.dst_addr,
                };
                (IpRepr::Ipv4(repr), addrs, packet.payload())
            }
            EtherType::IPV6 => {
                let packet = ipv6::Packet::new_checked(rest)?;
                let mut repr = Ipv6Repr::parse(&packet)?;
                let upper = packet.upper_layer()?;
                if upper.fragment.is_some() || upper.protocol != IpProtocol::UDP {
                    return Err(Error::Unsupported);
                }
                let segment = packet
                    .payload()
                    .get(upper.offset..)
                    .ok_or(Error::Truncated)?;
                repr.next_header = IpProtocol::UDP;
                repr.payload_len = segment.len();
                let addrs = IpAddrs::V6 {
                    src: repr.src_addr,
                    dst: repr.dst_addr,
                };
                (IpRepr::Ipv6(repr), addrs, segment)
            }
            _ => return Err(Error::Unsupported),
        };
        let udp = udp::Packet::new_checked(segment)?;
        let udp_repr = UdpRepr::parse(&udp, &addrs)?;
        let repr = UdpFrameRepr {
            src_mac: link.src_mac,
            dst_mac: link.dst_mac,
            outer_vlan: link.outer_vlan,
            inner_vlan: link.inner_vlan,
            ip,
            udp: udp_repr,
        };
        Ok((repr, udp.payload()))
    }

    /// The VLANs the frame is on (see [`VlanScope`]).
    pub fn vlan_scope(&self) -> VlanScope {
        VlanScope::new(
            self.outer_vlan.map(|t| t.vid),
            self.inner_vlan.map(|t| t.vid),
        )
    }

    /// Puts the frame on the VLANs `scope` (priority 0): no tag when
    /// untagged, an 802.1Q tag for one VID, an 802.1ad outer and 802.1Q
    /// inner tag for a QinQ pair.
    pub fn set_vlan_scope(&mut self, scope: VlanScope) {
        let tag = |tpid, vid| VlanTag {
            tpid,
            pcp: 0,
            dei: false,
            vid,
        };
        (self.outer_vlan, self.inner_vlan) = match (scope.outer, scope.inner) {
            (0, 0) => (None, None),
            (o, 0) => (Some(tag(EtherType::VLAN, o)), None),
            (o, i) => (Some(tag(EtherType::QINQ, o)), Some(tag(EtherType::VLAN, i))),
        };
    }

    /// Bytes before the UDP payload: Ethernet, tags, IP and UDP headers.
    /// The payload goes at this offset for [`UdpFrameRepr::emit_in_place`].
    pub fn header_len(&self) -> usize {
        self.link().header_len() + self.ip.header_len() + udp::HEADER_LEN
    }

    fn link(&self) -> Link {
        Link::new(self.src_mac, self.dst_mac, self.outer_vlan, self.inner_vlan)
    }

    /// Bytes the whole frame takes with `payload_len` bytes of UDP payload
    /// (no Ethernet padding: NICs pad short frames on transmit).
    pub fn buffer_len(&self, payload_len: usize) -> usize {
        self.header_len() + payload_len
    }

    /// Writes the frame with `payload` copied in; returns its length.
    pub fn emit(&self, buf: &mut [u8], payload: &[u8]) -> Result<usize, Error> {
        let start = self.header_len();
        let dst = buf
            .get_mut(start..start + payload.len())
            .ok_or(Error::BufferTooSmall)?;
        dst.copy_from_slice(payload);
        self.emit_in_place(buf, payload.len())
    }

    /// Writes the headers around a payload the caller already put at
    /// `buf[header_len()..header_len() + payload_len]` (saves a copy), fills
    /// IPv4 and UDP checksums, and returns the frame length.
    ///
    /// Errors: [`Error::BufferTooSmall`]; [`Error::BadLength`] if the payload
    /// does not fit the IP length fields; [`Error::Unsupported`] for an inner
    /// tag without an outer one, a non-VLAN TPID or IPv4 fragment fields.
    pub fn emit_in_place(&self, buf: &mut [u8], payload_len: usize) -> Result<usize, Error> {
        let total = self.buffer_len(payload_len);
        if buf.len() < total {
            return Err(Error::BufferTooSmall);
        }
        let ip_payload_len = udp::HEADER_LEN + payload_len;
        if self.ip.header_len() + ip_payload_len > usize::from(u16::MAX) {
            return Err(Error::BadLength);
        }
        let ip_ethertype = match &self.ip {
            IpRepr::Ipv4(r) if r.more_frags || r.frag_offset != 0 => {
                return Err(Error::Unsupported)
            }
            IpRepr::Ipv4(_) => EtherType::IPV4,
            IpRepr::Ipv6(_) => EtherType::IPV6,
        };
        let buf = &mut buf[..total];
        let mut off = self.link().emit(buf, ip_ethertype)?;
        match self.ip {
            IpRepr::Ipv4(mut r) => {
                r.protocol = IpProtocol::UDP;
                r.payload_len = ip_payload_len;
                r.emit(&mut ipv4::Packet::new_unchecked(&mut buf[off..]));
            }
            IpRepr::Ipv6(mut r) => {
                r.next_header = IpProtocol::UDP;
                r.payload_len = ip_payload_len;
                r.emit(&mut ipv6::Packet::new_unchecked(&mut buf[off..]));
            }
        }
        off += self.ip.header_len();
        self.udp.emit_header(
            &mut udp::Packet::new_unchecked(&mut buf[off..]),
            &self.ip.addrs(),
            payload_len,
        );
        Ok(total)
    }
}

/// The link layer of a whole frame: Ethernet addresses and up to two VLAN
/// tags. Shared by the whole-frame `Repr`s ([`UdpFrameRepr`],
/// [`ArpFrameRepr`], [`EchoFrameRepr`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Link {
    src_mac: MacAddr,
    dst_mac: MacAddr,
    outer_vlan: Option<VlanTag>,
    inner_vlan: Option<VlanTag>,
}

impl Link {
    const fn new(
        src_mac: MacAddr,
        dst_mac: MacAddr,
        outer_vlan: Option<VlanTag>,
        inner_vlan: Option<VlanTag>,
    ) -> Link {
        Link {
            src_mac,
            dst_mac,
            outer_vlan,
            inner_vlan,
        }
    }

    /// Parses the Ethernet header and up to two tags; returns them with the
    /// EtherType after the tags and what follows it. A third tag is
    /// [`Error::Unsupported`].
    fn parse(frame: &[u8]) -> Result<(Link, EtherType, &[u8]), Error> {
        let eth = ethernet::Frame::new_checked(frame)?;
        let eth_repr = EthernetRepr::parse(&eth)?;
        let mut ethertype = eth_repr.ethertype;
        let mut rest = eth.payload();
        let mut tags = [None; 2];
        for slot in &mut tags {
            if !ethertype.is_vlan() {
                break;
            }
            let tag = vlan::Packet::new_checked(rest)?;
            let repr = VlanRepr::parse(&tag)?;
            *slot = Some(VlanTag {
                tpid: ethertype,
                pcp: repr.pcp,
                dei: repr.dei,
                vid: repr.vid,
            });
            ethertype = repr.ethertype;
            rest = tag.payload();
        }
        if ethertype.is_vlan() {
            return Err(Error::Unsupported);
        }
        let link = Link::new(eth_repr.src_addr, eth_repr.dst_addr, tags[0], tags[1]);
        Ok((link, ethertype, rest))
    }

    /// Bytes of the Ethernet header and tags.
    fn header_len(&self) -> usize {
        let tags = usize::from(self.outer_vlan.is_some()) + usize::from(self.inner_vlan.is_some());
        ethernet::HEADER_LEN + tags * vlan::HEADER_LEN
    }

    /// Writes the Ethernet header and tags, the last naming `ethertype`;
    /// returns where the payload starts. Errors: [`Error::BufferTooSmall`];
    /// [`Error::Unsupported`] for an inner tag without an outer one or a
    /// non-VLAN TPID.
    fn emit(&self, buf: &mut [u8], ethertype: EtherType) -> Result<usize, Error> {
        let tags_ok = match (self.outer_vlan, self.inner_vlan) {
            (None, Some(_)) => false,
            (outer, inner) => [outer, inner].iter().flatten().all(|t| t.tpid.is_vlan()),
        };
        if !tags_ok {
            return Err(Error::Unsupported);
        }
        if buf.len() < self.header_len() {
            return Err(Error::BufferTooSmall);
        }
        // Ethernet, then each tag: a header's EtherType names what follows.
        let first_type = self.outer_vlan.map_or(ethertype, |t| t.tpid);
        EthernetRepr {
            src_addr: self.src_mac,
            dst_addr: self.dst_mac,
            ethertype: first_type,
        }
        .emit(&mut ethernet::Frame::new_unchecked(&mut *buf));
        let mut off = ethernet::HEADER_LEN;
        let tags = [self.outer_vlan, self.inner_vlan];
        for (i, tag) in tags.iter().enumerate() {
            let Some(tag) = tag else { break };
            let next = match tags.get(i + 1) {
                Some(Some(inner)) => inner.tpid,
                _ => ethertype,
            };
            VlanRepr {
                pcp: tag.pcp,
                dei: tag.dei,
                vid: tag.vid,
                ethertype: next,
            }
            .emit(&mut vlan::Packet::new_unchecked(&mut buf[off..]));
            off += vlan::HEADER_LEN;
        }
        Ok(off)
    }
}

#[cfg(test)]
mod tests;
