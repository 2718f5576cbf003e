//! ARP for IPv4 over Ethernet (RFC 826): hardware type 1, protocol type
//! `0x0800`, address lengths 6 and 4. Other ARP flavours are refused.
//!
//! [`Packet`] and [`ArpRepr`] cover the 28-byte ARP body; [`ArpFrameRepr`]
//! the whole frame (Ethernet, up to two VLAN tags, ARP), with the reply to a
//! request ([`ArpFrameRepr::reply_to`]) and a broadcast request
//! ([`ArpFrameRepr::request`]).
//!
//! ```
//! use std::net::Ipv4Addr;
//! use wire::frame::{ArpFrameRepr, MacAddr};
//!
//! let client = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
//! let me = MacAddr([0x52, 0x54, 0, 0, 0, 2]);
//! let who_has = ArpFrameRepr::request(client, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
//! let mut buf = [0u8; 64];
//! let len = who_has.emit(&mut buf).unwrap();
//! assert_eq!(len, 60); // padded to the Ethernet minimum
//!
//! let reply = ArpFrameRepr::parse(&buf[..len]).unwrap().reply_to(me).unwrap();
//! assert_eq!((reply.dst_mac, reply.arp.sender_mac), (client, me));
//! assert_eq!(reply.arp.sender_ip, Ipv4Addr::new(10, 0, 0, 2));
//! ```

use std::net::Ipv4Addr;

use super::{Error, EtherType, Link, MacAddr, VlanTag};

mod field {
    use core::ops::Range;
    pub(super) const HTYPE: Range<usize> = 0..2;
    pub(super) const PTYPE: Range<usize> = 2..4;
    pub(super) const HLEN: usize = 4;
    pub(super) const PLEN: usize = 5;
    pub(super) const OPER: Range<usize> = 6..8;
    pub(super) const SHA: Range<usize> = 8..14;
    pub(super) const SPA: Range<usize> = 14..18;
    pub(super) const THA: Range<usize> = 18..24;
    pub(super) const TPA: Range<usize> = 24..28;
}

/// Length of an Ethernet/IPv4 ARP body.
pub const BUFFER_LEN: usize = field::TPA.end;

/// Shortest Ethernet frame without FCS; [`ArpFrameRepr::emit`] pads to it.
pub const MIN_FRAME_LEN: usize = 60;

/// Hardware type Ethernet.
const HTYPE_ETHERNET: u16 = 1;

/// An ARP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// 1: who has the target protocol address?
    Request,
    /// 2: the sender has it.
    Reply,
    /// Anything else (RARP, InARP, ...), kept as carried.
    Unknown(u16),
}

impl From<u16> for Operation {
    fn from(value: u16) -> Self {
        match value {
            1 => Operation::Request,
            2 => Operation::Reply,
            other => Operation::Unknown(other),
        }
    }
}

impl From<Operation> for u16 {
    fn from(op: Operation) -> u16 {
        match op {
            Operation::Request => 1,
            Operation::Reply => 2,
            Operation::Unknown(other) => other,
        }
    }
}

/// A zero-copy view of an ARP body.
///
/// After [`Packet::new_checked`] no accessor can panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

view_constructors!(Packet, min_len = BUFFER_LEN);

impl<T: AsRef<[u8]>> Packet<T> {
    fn ip(&self, range: core::ops::Range<usize>) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[range];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Hardware type (1 for Ethernet).
    pub fn hardware_type(&self) -> u16 {
        self.be16(field::HTYPE)
    }

    /// Protocol type (`0x0800` for IPv4).
    pub fn protocol_type(&self) -> EtherType {
        EtherType(self.be16(field::PTYPE))
    }

    /// Hardware address length (6 for Ethernet).
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// Protocol address length (4 for IPv4).
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// Operation.
    pub fn operation(&self) -> Operation {
        Operation::from(self.be16(field::OPER))
    }

    /// Sender hardware address.
    pub fn sender_mac(&self) -> MacAddr {
        MacAddr::from_slice(&self.buffer.as_ref()[field::SHA])
    }

    /// Sender protocol address.
    pub fn sender_ip(&self) -> Ipv4Addr {
        self.ip(field::SPA)
    }

    /// Target hardware address.
    pub fn target_mac(&self) -> MacAddr {
        MacAddr::from_slice(&self.buffer.as_ref()[field::THA])
    }

    /// Target protocol address.
    pub fn target_ip(&self) -> Ipv4Addr {
        self.ip(field::TPA)
    }

    /// True for Ethernet/IPv4 ARP (the only kind [`ArpRepr`] reads).
    pub fn is_ethernet_ipv4(&self) -> bool {
        self.hardware_type() == HTYPE_ETHERNET
            && self.protocol_type() == EtherType::IPV4
            && self.hardware_len() == 6
            && self.protocol_len() == 4
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets hardware type 1, protocol type IPv4 and lengths 6 and 4.
    pub fn set_ethernet_ipv4(&mut self) {
        self.set_be16(field::HTYPE, HTYPE_ETHERNET);
        self.set_be16(field::PTYPE, EtherType::IPV4.0);
        self.buffer.as_mut()[field::HLEN] = 6;
        self.buffer.as_mut()[field::PLEN] = 4;
    }

    /// Sets the operation.
    pub fn set_operation(&mut self, op: Operation) {
        self.set_be16(field::OPER, op.into());
    }

    /// Sets the sender hardware address.
    pub fn set_sender_mac(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&mac.0);
    }

    /// Sets the sender protocol address.
    pub fn set_sender_ip(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&ip.octets());
    }

    /// Sets the target hardware address.
    pub fn set_target_mac(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&mac.0);
    }

    /// Sets the target protocol address.
    pub fn set_target_ip(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&ip.octets());
    }
}

/// A parsed Ethernet/IPv4 ARP body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRepr {
    /// Operation.
    pub operation: Operation,
    /// Sender hardware address.
    pub sender_mac: MacAddr,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address (zero in requests).
    pub target_mac: MacAddr,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// Bytes the body takes on the wire.
    pub const BUFFER_LEN: usize = BUFFER_LEN;

    /// Parses a body; anything but Ethernet/IPv4 ARP is [`Error::Unsupported`].
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self, Error> {
        packet.check_len()?;
        if !packet.is_ethernet_ipv4() {
            return Err(Error::Unsupported);
        }
        Ok(ArpRepr {
            operation: packet.operation(),
            sender_mac: packet.sender_mac(),
            sender_ip: packet.sender_ip(),
            target_mac: packet.target_mac(),
            target_ip: packet.target_ip(),
        })
    }

    /// Bytes the body takes on the wire.
    pub const fn buffer_len(&self) -> usize {
        BUFFER_LEN
    }

    /// Writes the body; the packet must hold at least [`BUFFER_LEN`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_ethernet_ipv4();
        packet.set_operation(self.operation);
        packet.set_sender_mac(self.sender_mac);
        packet.set_sender_ip(self.sender_ip);
        packet.set_target_mac(self.target_mac);
        packet.set_target_ip(self.target_ip);
    }
}

/// A whole Ethernet II / [802.1Q [802.1Q]] / ARP frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpFrameRepr {
    /// Source MAC address.
    pub src_mac: MacAddr,
    /// Destination MAC address.
    pub dst_mac: MacAddr,
    /// Outer (or only) VLAN tag.
    pub outer_vlan: Option<VlanTag>,
    /// Inner VLAN tag of a QinQ pair; needs `outer_vlan`.
    pub inner_vlan: Option<VlanTag>,
    /// The ARP body.
    pub arp: ArpRepr,
}

impl ArpFrameRepr {
    /// A broadcast, untagged request from `src_mac`/`src_ip`: who has
    /// `target_ip`?
    pub fn request(src_mac: MacAddr, src_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Self {
        ArpFrameRepr {
            src_mac,
            dst_mac: MacAddr::BROADCAST,
            outer_vlan: None,
            inner_vlan: None,
            arp: ArpRepr {
                operation: Operation::Request,
                sender_mac: src_mac,
                sender_ip: src_ip,
                target_mac: MacAddr([0; 6]),
                target_ip,
            },
        }
    }

    /// Parses a whole frame (padding after the ARP body is ignored).
    /// Another EtherType than ARP after the tags, or ARP for other than
    /// Ethernet/IPv4, is [`Error::Unsupported`].
    pub fn parse(frame: &[u8]) -> Result<Self, Error> {
        let (link, ethertype, rest) = Link::parse(frame)?;
        if ethertype != EtherType::ARP {
            return Err(Error::Unsupported);
        }
        let arp = ArpRepr::parse(&Packet::new_checked(rest)?)?;
        Ok(ArpFrameRepr {
            src_mac: link.src_mac,
            dst_mac: link.dst_mac,
            outer_vlan: link.outer_vlan,
            inner_vlan: link.inner_vlan,
            arp,
        })
    }

    fn link(&self) -> Link {
        Link::new(self.src_mac, self.dst_mac, self.outer_vlan, self.inner_vlan)
    }

    /// Bytes [`ArpFrameRepr::emit`] writes: headers and body, padded to
    /// [`MIN_FRAME_LEN`].
    pub fn buffer_len(&self) -> usize {
        (self.link().header_len() + BUFFER_LEN).max(MIN_FRAME_LEN)
    }

    /// Writes the frame, zero-padded to [`MIN_FRAME_LEN`] bytes, and returns
    /// its length. Errors: [`Error::BufferTooSmall`]; [`Error::Unsupported`]
    /// for an inner tag without an outer one or a non-VLAN TPID.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let total = self.buffer_len();
        let buf = buf.get_mut(..total).ok_or(Error::BufferTooSmall)?;
        let off = self.link().emit(buf, EtherType::ARP)?;
        let (body, pad) = buf[off..].split_at_mut(BUFFER_LEN);
        self.arp.emit(&mut Packet::new_unchecked(body));
        pad.fill(0);
        Ok(total)
    }

    /// For a request, the reply from `my_mac` saying it has the requested
    /// address: unicast to the requester's hardware address, with the
    /// request's VLAN tags. `None` for anything but a request. Whether to
    /// answer at all (is the target address ours?) is the caller's call.
    pub fn reply_to(&self, my_mac: MacAddr) -> Option<ArpFrameRepr> {
        if self.arp.operation != Operation::Request {
            return None;
        }
        Some(ArpFrameRepr {
            src_mac: my_mac,
            dst_mac: self.arp.sender_mac,
            outer_vlan: self.outer_vlan,
            inner_vlan: self.inner_vlan,
            arp: ArpRepr {
                operation: Operation::Reply,
                sender_mac: my_mac,
                sender_ip: self.arp.target_ip,
                target_mac: self.arp.sender_mac,
                target_ip: self.arp.sender_ip,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    const ME: MacAddr = MacAddr([0x02, 0xbc, 0x00, 0x00, 0x00, 0x01]);

    // Who has 10.0.0.2? Tell 10.0.0.1 (52:54:00:12:34:56), broadcast,
    // padded to 60 bytes as a NIC sends it.
    static REQUEST: [u8; 60] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x06, //
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, //
        0x0a, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x02, //
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    // 10.0.0.2 is at 02:bc:00:00:00:01, to the requester.
    static REPLY: [u8; 60] = [
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x02, 0xbc, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, //
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, 0x02, 0xbc, 0x00, 0x00, 0x00, 0x01, //
        0x0a, 0x00, 0x00, 0x02, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x0a, 0x00, 0x00, 0x01, //
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    // The same request under QinQ: 0x88a8 PCP 3 VID 100, 0x8100 VID 200
    // (50 bytes, padded to 60).
    static REQUEST_QINQ: [u8; 60] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x88, 0xa8, //
        0x60, 0x64, 0x81, 0x00, 0x00, 0xc8, 0x08, 0x06, //
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, //
        0x0a, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x02, //
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    fn who_has() -> ArpFrameRepr {
        ArpFrameRepr::request(
            CLIENT,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
        )
    }

    #[test]
    fn request_parses_and_emits_byte_for_byte() {
        let repr = ArpFrameRepr::parse(&REQUEST).unwrap();
        assert_eq!(repr, who_has());
        let mut out = [0xaau8; 64];
        assert_eq!(repr.emit(&mut out).unwrap(), 60);
        assert_eq!(out[..60], REQUEST);
        // The unpadded 42-byte frame parses the same.
        assert_eq!(ArpFrameRepr::parse(&REQUEST[..42]).unwrap(), repr);
    }

    #[test]
    fn reply_to_a_request() {
        let reply = who_has().reply_to(ME).unwrap();
        let mut out = [0xaau8; 60];
        assert_eq!(reply.emit(&mut out).unwrap(), 60);
        assert_eq!(out, REPLY);
        let parsed = ArpFrameRepr::parse(&REPLY).unwrap();
        assert_eq!(parsed, reply);
        assert_eq!(parsed.arp.operation, Operation::Reply);
        assert_eq!(parsed.reply_to(ME), None);
    }

    #[test]
    fn tagged_request_keeps_its_tags_in_the_reply() {
        let repr = ArpFrameRepr::parse(&REQUEST_QINQ).unwrap();
        let outer = VlanTag {
            tpid: EtherType::QINQ,
            pcp: 3,
            dei: false,
            vid: 100,
        };
        let inner = VlanTag {
            tpid: EtherType::VLAN,
            pcp: 0,
            dei: false,
            vid: 200,
        };
        assert_eq!(
            (repr.outer_vlan, repr.inner_vlan),
            (Some(outer), Some(inner))
        );
        assert_eq!(repr.arp, who_has().arp);
        let mut out = [0u8; 60];
        assert_eq!(repr.emit(&mut out).unwrap(), 60);
        assert_eq!(out, REQUEST_QINQ);

        let reply = repr.reply_to(ME).unwrap();
        assert_eq!(
            (reply.outer_vlan, reply.inner_vlan),
            (Some(outer), Some(inner))
        );
        let len = reply.emit(&mut out).unwrap();
        assert_eq!(&out[..12], &REPLY[..12]);
        assert_eq!(&out[12..22], &REQUEST_QINQ[12..22]);
        assert_eq!(&out[22..50], &REPLY[14..42]);
        assert_eq!(len, 60);
    }

    #[test]
    fn body_view_round_trip() {
        let packet = Packet::new_checked(&REPLY[14..42]).unwrap();
        assert!(packet.is_ethernet_ipv4());
        let repr = ArpRepr::parse(&packet).unwrap();
        assert_eq!(repr.buffer_len(), ArpRepr::BUFFER_LEN);
        let mut out = [0u8; 28];
        repr.emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(out[..], REPLY[14..42]);
    }

    #[test]
    fn truncated_and_foreign_arp_is_refused() {
        for len in 0..42 {
            assert_eq!(
                ArpFrameRepr::parse(&REQUEST[..len]).unwrap_err(),
                Error::Truncated,
                "{len}"
            );
        }
        for (at, value) in [(15, 6), (16, 0x86), (18, 8), (19, 16)] {
            let mut bad = REQUEST;
            bad[at] = value; // IEEE 802 hardware, IPv6 protocol, other lengths
            assert_eq!(ArpFrameRepr::parse(&bad).unwrap_err(), Error::Unsupported);
        }
        let mut ipv4 = REQUEST;
        ipv4[13] = 0x00;
        assert_eq!(ArpFrameRepr::parse(&ipv4).unwrap_err(), Error::Unsupported);
        let mut rarp = REQUEST;
        rarp[21] = 3;
        let repr = ArpFrameRepr::parse(&rarp).unwrap();
        assert_eq!(repr.arp.operation, Operation::Unknown(3));
        assert_eq!(repr.reply_to(ME), None);
    }

    #[test]
    fn emit_checks_buffer_and_tags() {
        let mut small = [0u8; 59];
        assert_eq!(
            who_has().emit(&mut small).unwrap_err(),
            Error::BufferTooSmall
        );
        let mut repr = who_has();
        repr.inner_vlan = Some(VlanTag {
            tpid: EtherType::VLAN,
            pcp: 0,
            dei: false,
            vid: 1,
        });
        let mut out = [0u8; 64];
        assert_eq!(repr.emit(&mut out).unwrap_err(), Error::Unsupported);
    }

    #[test]
    fn operation_codes() {
        for code in 0..=4u16 {
            assert_eq!(u16::from(Operation::from(code)), code);
        }
        assert_eq!(Operation::from(1), Operation::Request);
        assert_eq!(Operation::from(2), Operation::Reply);
    }
}
