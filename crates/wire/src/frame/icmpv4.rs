//! ICMPv4 echo request and reply (RFC 792): what answering ping needs.
//!
//! [`Packet`] views an echo message (type, code, checksum, identifier,
//! sequence number, data); [`EchoFrameRepr`] parses and builds the whole
//! Ethernet/\[VLAN\]/IPv4/ICMP frame, both checksums included.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use wire::frame::{EchoFrameRepr, MacAddr};
//!
//! let ping = EchoFrameRepr {
//!     src_mac: MacAddr([0x52, 0x54, 0, 0, 0, 1]),
//!     dst_mac: MacAddr([0x52, 0x54, 0, 0, 0, 2]),
//!     outer_vlan: None,
//!     inner_vlan: None,
//!     src_ip: Ipv4Addr::new(10, 0, 0, 1),
//!     dst_ip: Ipv4Addr::new(10, 0, 0, 2),
//!     ident: 7,
//!     seq: 1,
//!     is_request: true,
//! };
//! let mut buf = [0u8; 128];
//! let len = ping.emit(&mut buf, b"hello").unwrap();
//! let (parsed, data) = EchoFrameRepr::parse(&buf[..len]).unwrap();
//! assert_eq!((parsed, data), (ping, &b"hello"[..]));
//!
//! let pong = parsed.reply().unwrap();
//! assert_eq!((pong.src_ip, pong.dst_ip, pong.is_request), (ping.dst_ip, ping.src_ip, false));
//! ```

use std::net::Ipv4Addr;

use super::{
    checksum, ipv4, Error, EtherType, IpProtocol, Ipv4Options, Ipv4Repr, Link, MacAddr, VlanTag,
};

mod field {
    use core::ops::{Range, RangeFrom};
    pub(super) const TYPE: usize = 0;
    pub(super) const CODE: usize = 1;
    pub(super) const CHECKSUM: Range<usize> = 2..4;
    pub(super) const IDENT: Range<usize> = 4..6;
    pub(super) const SEQ: Range<usize> = 6..8;
    pub(super) const DATA: RangeFrom<usize> = 8..;
}

/// Length of an echo header (type, code, checksum, identifier, sequence).
pub const HEADER_LEN: usize = field::DATA.start;

/// ICMP type of an echo reply.
pub const TYPE_ECHO_REPLY: u8 = 0;
/// ICMP type of an echo request.
pub const TYPE_ECHO_REQUEST: u8 = 8;

/// A zero-copy view of an ICMP echo message (the whole IP payload).
///
/// After [`Packet::new_checked`] no accessor can panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

view_constructors!(Packet, min_len = HEADER_LEN);

impl<T: AsRef<[u8]>> Packet<T> {
    /// ICMP type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// ICMP code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum as carried.
    pub fn checksum(&self) -> u16 {
        self.be16(field::CHECKSUM)
    }

    /// Echo identifier.
    pub fn ident(&self) -> u16 {
        self.be16(field::IDENT)
    }

    /// Echo sequence number.
    pub fn seq(&self) -> u16 {
        self.be16(field::SEQ)
    }

    /// True if the checksum over the whole message verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.buffer.as_ref())) == 0
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The echo data, borrowed for the buffer's lifetime.
    pub fn data(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::DATA]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the ICMP type.
    pub fn set_msg_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::TYPE] = value;
    }

    /// Sets the ICMP code.
    pub fn set_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    /// Sets the checksum field as is.
    pub fn set_checksum(&mut self, value: u16) {
        self.set_be16(field::CHECKSUM, value);
    }

    /// Sets the echo identifier.
    pub fn set_ident(&mut self, value: u16) {
        self.set_be16(field::IDENT, value);
    }

    /// Sets the echo sequence number.
    pub fn set_seq(&mut self, value: u16) {
        self.set_be16(field::SEQ, value);
    }

    /// The echo data, mutably.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA]
    }

    /// Computes and stores the checksum over the whole buffer (the data
    /// must be in place).
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::fold(checksum::sum(self.buffer.as_ref()));
        self.set_checksum(sum);
    }
}

/// A whole Ethernet II / [802.1Q [802.1Q]] / IPv4 / ICMP echo frame. On
/// emit the IPv4 header has TTL 64, DF set, identification 0, DSCP 0 and no
/// options; on parse whatever the frame carried there is checked, not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoFrameRepr {
    /// Source MAC address.
    pub src_mac: MacAddr,
    /// Destination MAC address.
    pub dst_mac: MacAddr,
    /// Outer (or only) VLAN tag.
    pub outer_vlan: Option<VlanTag>,
    /// Inner VLAN tag of a QinQ pair; needs `outer_vlan`.
    pub inner_vlan: Option<VlanTag>,
    /// Source IPv4 address.
    pub src_ip: Ipv4Addr,
    /// Destination IPv4 address.
    pub dst_ip: Ipv4Addr,
    /// Echo identifier.
    pub ident: u16,
    /// Echo sequence number.
    pub seq: u16,
    /// True for an echo request (type 8), false for a reply (type 0).
    pub is_request: bool,
}

impl EchoFrameRepr {
    /// Parses a whole frame and returns it with the echo data. Verifies the
    /// IPv4 header checksum ([`Error::BadChecksum`]) and the ICMP checksum
    /// (the same). IPv4 options are allowed and skipped. Fragments, other
    /// EtherTypes and protocols, other ICMP types and a code other than 0
    /// are [`Error::Unsupported`].
    pub fn parse(frame: &[u8]) -> Result<(Self, &[u8]), Error> {
        let (link, ethertype, rest) = Link::parse(frame)?;
        if ethertype != EtherType::IPV4 {
            return Err(Error::Unsupported);
        }
        let ip = ipv4::Packet::new_checked(rest)?;
        let ip_repr = Ipv4Repr::parse(&ip)?;
        if ip.is_fragment() || ip_repr.protocol != IpProtocol::ICMP {
            return Err(Error::Unsupported);
        }
        let icmp = Packet::new_checked(ip.payload())?;
        let is_request = match (icmp.msg_type(), icmp.code()) {
            (TYPE_ECHO_REQUEST, 0) => true,
            (TYPE_ECHO_REPLY, 0) => false,
            _ => return Err(Error::Unsupported),
        };
        if !icmp.verify_checksum() {
            return Err(Error::BadChecksum);
        }
        let repr = EchoFrameRepr {
            src_mac: link.src_mac,
            dst_mac: link.dst_mac,
            outer_vlan: link.outer_vlan,
            inner_vlan: link.inner_vlan,
            src_ip: ip_repr.src_addr,
            dst_ip: ip_repr.dst_addr,
            ident: icmp.ident(),
            seq: icmp.seq(),
            is_request,
        };
        Ok((repr, icmp.data()))
    }

    fn link(&self) -> Link {
        Link::new(self.src_mac, self.dst_mac, self.outer_vlan, self.inner_vlan)
    }

    /// Bytes the whole frame takes with `data_len` bytes of echo data (no
    /// Ethernet padding: NICs pad short frames on transmit).
    pub fn buffer_len(&self, data_len: usize) -> usize {
        self.link().header_len() + ipv4::MIN_HEADER_LEN + HEADER_LEN + data_len
    }

    /// Writes the frame with `data` as the echo data, fills the IPv4 and
    /// ICMP checksums, and returns its length. Errors:
    /// [`Error::BufferTooSmall`]; [`Error::BadLength`] if the data does not
    /// fit the IPv4 total length; [`Error::Unsupported`] for an inner tag
    /// without an outer one or a non-VLAN TPID.
    pub fn emit(&self, buf: &mut [u8], data: &[u8]) -> Result<usize, Error> {
        let ip_payload_len = HEADER_LEN + data.len();
        if ipv4::MIN_HEADER_LEN + ip_payload_len > usize::from(u16::MAX) {
            return Err(Error::BadLength);
        }
        let total = self.buffer_len(data.len());
        let buf = buf.get_mut(..total).ok_or(Error::BufferTooSmall)?;
        let off = self.link().emit(buf, EtherType::IPV4)?;
        let ip = Ipv4Repr {
            src_addr: self.src_ip,
            dst_addr: self.dst_ip,
            protocol: IpProtocol::ICMP,
            payload_len: ip_payload_len,
            ttl: 64,
            dscp: 0,
            ecn: 0,
            ident: 0,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
            options: Ipv4Options::EMPTY,
        };
        let (ip_buf, icmp_buf) = buf[off..].split_at_mut(ipv4::MIN_HEADER_LEN);
        ip.emit(&mut ipv4::Packet::new_unchecked(ip_buf));
        let mut icmp = Packet::new_unchecked(icmp_buf);
        icmp.set_msg_type(if self.is_request {
            TYPE_ECHO_REQUEST
        } else {
            TYPE_ECHO_REPLY
        });
        icmp.set_code(0);
        icmp.set_ident(self.ident);
        icmp.set_seq(self.seq);
        icmp.data_mut().copy_from_slice(data);
        icmp.fill_checksum();
        Ok(total)
    }

    /// For a request, the reply: MACs and IPs swapped, same tags,
    /// identifier and sequence number (the caller echoes the data back).
    /// `None` for a reply, and for a request sent to a group MAC or to a
    /// broadcast or multicast IP (a reply cannot come from those). Whether
    /// the request is for us is the caller's call.
    pub fn reply(&self) -> Option<EchoFrameRepr> {
        if !self.is_request
            || self.dst_mac.is_multicast()
            || self.dst_ip.is_broadcast()
            || self.dst_ip.is_multicast()
        {
            return None;
        }
        Some(EchoFrameRepr {
            src_mac: self.dst_mac,
            dst_mac: self.src_mac,
            src_ip: self.dst_ip,
            dst_ip: self.src_ip,
            is_request: false,
            ..*self
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    const ME: MacAddr = MacAddr([0x02, 0xbc, 0x00, 0x00, 0x00, 0x01]);
    const DATA: &[u8] = b"bootcache ping!\n";

    // Frames built by an independent script (checksums included).
    // 10.0.0.1 -> 10.0.0.2 echo request id 0x1234 seq 1, IPv4 id 0xabcd, DF.
    static REQUEST: [u8; 58] = [
        0x02, 0xbc, 0x00, 0x00, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x2c, 0xab, 0xcd, 0x40, 0x00, 0x40, 0x01, 0x7b, 0x01, 0x0a, 0x00, 0x00, 0x01,
        0x0a, 0x00, 0x00, 0x02, 0x08, 0x00, 0xe8, 0x21, 0x12, 0x34, 0x00, 0x01, 0x62, 0x6f, 0x6f,
        0x74, 0x63, 0x61, 0x63, 0x68, 0x65, 0x20, 0x70, 0x69, 0x6e, 0x67, 0x21, 0x0a,
    ];
    // Its reply: IPv4 id 0, DF, TTL 64.
    static REPLY: [u8; 58] = [
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x02, 0xbc, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x2c, 0x00, 0x00, 0x40, 0x00, 0x40, 0x01, 0x26, 0xcf, 0x0a, 0x00, 0x00, 0x02,
        0x0a, 0x00, 0x00, 0x01, 0x00, 0x00, 0xf0, 0x21, 0x12, 0x34, 0x00, 0x01, 0x62, 0x6f, 0x6f,
        0x74, 0x63, 0x61, 0x63, 0x68, 0x65, 0x20, 0x70, 0x69, 0x6e, 0x67, 0x21, 0x0a,
    ];
    // No data, 802.1Q PCP 1 VID 7, id 0xbeef seq 0xffff.
    static REQUEST_VLAN: [u8; 46] = [
        0x02, 0xbc, 0x00, 0x00, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x81, 0x00, 0x20,
        0x07, 0x08, 0x00, 0x45, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x40, 0x00, 0x40, 0x01, 0x26, 0xdf,
        0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, 0x08, 0x00, 0x39, 0x10, 0xbe, 0xef, 0xff,
        0xff,
    ];
    static REPLY_VLAN: [u8; 46] = [
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x02, 0xbc, 0x00, 0x00, 0x00, 0x01, 0x81, 0x00, 0x20,
        0x07, 0x08, 0x00, 0x45, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x40, 0x00, 0x40, 0x01, 0x26, 0xdf,
        0x0a, 0x00, 0x00, 0x02, 0x0a, 0x00, 0x00, 0x01, 0x00, 0x00, 0x41, 0x10, 0xbe, 0xef, 0xff,
        0xff,
    ];

    #[test]
    fn request_parses_and_reply_emits_byte_for_byte() {
        let (req, data) = EchoFrameRepr::parse(&REQUEST).unwrap();
        assert_eq!(
            req,
            EchoFrameRepr {
                src_mac: CLIENT,
                dst_mac: ME,
                outer_vlan: None,
                inner_vlan: None,
                src_ip: Ipv4Addr::new(10, 0, 0, 1),
                dst_ip: Ipv4Addr::new(10, 0, 0, 2),
                ident: 0x1234,
                seq: 1,
                is_request: true,
            }
        );
        assert_eq!(data, DATA);
        let reply = req.reply().unwrap();
        let mut out = [0xaau8; 64];
        let len = reply.emit(&mut out, data).unwrap();
        assert_eq!(out[..len], REPLY);
        assert_eq!(reply.buffer_len(data.len()), len);
        let (back, back_data) = EchoFrameRepr::parse(&REPLY).unwrap();
        assert_eq!((back, back_data), (reply, DATA));
        assert_eq!(back.reply(), None);
    }

    #[test]
    fn tagged_request_round_trips_and_keeps_its_tag() {
        let (req, data) = EchoFrameRepr::parse(&REQUEST_VLAN).unwrap();
        let tag = req.outer_vlan.unwrap();
        assert_eq!((tag.tpid, tag.pcp, tag.vid), (EtherType::VLAN, 1, 7));
        assert_eq!((req.ident, req.seq, data), (0xbeef, 0xffff, &[][..]));
        let mut out = [0u8; 46];
        assert_eq!(req.emit(&mut out, data).unwrap(), 46);
        assert_eq!(out, REQUEST_VLAN);
        req.reply().unwrap().emit(&mut out, data).unwrap();
        assert_eq!(out, REPLY_VLAN);
    }

    #[test]
    fn ethernet_padding_is_not_data() {
        let mut padded = REQUEST_VLAN.to_vec();
        padded.extend_from_slice(&[0; 14]);
        let (_, data) = EchoFrameRepr::parse(&padded).unwrap();
        assert!(data.is_empty());
    }

    #[test]
    fn bad_checksums_are_refused() {
        let mut bad = REQUEST;
        bad[50] ^= 1; // data byte: ICMP checksum fails
        assert_eq!(EchoFrameRepr::parse(&bad).unwrap_err(), Error::BadChecksum);
        let mut bad = REQUEST;
        bad[22] ^= 1; // TTL: IPv4 header checksum fails
        assert_eq!(EchoFrameRepr::parse(&bad).unwrap_err(), Error::BadChecksum);
    }

    #[test]
    fn other_frames_are_refused() {
        let fix = |f: &mut [u8]| ipv4::Packet::new_unchecked(&mut f[14..]).fill_checksum();
        let mut frag = REQUEST;
        frag[20] = 0x20; // MF
        fix(&mut frag);
        assert_eq!(EchoFrameRepr::parse(&frag).unwrap_err(), Error::Unsupported);
        let mut udp = REQUEST;
        udp[23] = 17;
        fix(&mut udp);
        assert_eq!(EchoFrameRepr::parse(&udp).unwrap_err(), Error::Unsupported);
        let mut arp = REQUEST;
        arp[13] = 6;
        assert_eq!(EchoFrameRepr::parse(&arp).unwrap_err(), Error::Unsupported);
        for (at, value) in [(34, 3), (35, 1)] {
            let mut other = REQUEST; // destination unreachable; code 1
            other[at] = value;
            assert_eq!(
                EchoFrameRepr::parse(&other).unwrap_err(),
                Error::Unsupported
            );
        }
        for len in 0..42 {
            assert!(EchoFrameRepr::parse(&REQUEST[..len]).is_err(), "{len}");
        }
        assert_eq!(
            EchoFrameRepr::parse(&REQUEST[..41]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn no_reply_from_group_addresses() {
        let (req, _) = EchoFrameRepr::parse(&REQUEST).unwrap();
        for dst_ip in [Ipv4Addr::BROADCAST, Ipv4Addr::new(224, 0, 0, 1)] {
            assert_eq!(EchoFrameRepr { dst_ip, ..req }.reply(), None);
        }
        let dst_mac = MacAddr::BROADCAST;
        assert_eq!(EchoFrameRepr { dst_mac, ..req }.reply(), None);
    }

    #[test]
    fn emit_checks_sizes() {
        let (req, _) = EchoFrameRepr::parse(&REQUEST).unwrap();
        let mut small = [0u8; 57];
        assert_eq!(
            req.emit(&mut small, DATA).unwrap_err(),
            Error::BufferTooSmall
        );
        let big = vec![0u8; 65536 - 28];
        let mut out = vec![0u8; 70000];
        assert_eq!(req.emit(&mut out, &big).unwrap_err(), Error::BadLength);
        assert!(req.emit(&mut out, &big[1..]).is_ok());
    }
}
