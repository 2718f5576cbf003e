//! UDP header (RFC 768) with checksums over the IPv4 and IPv6 pseudo-headers.

use super::{checksum, Error, IpAddrs, IpProtocol};

mod field {
    use core::ops::Range;
    pub(super) const SRC_PORT: Range<usize> = 0..2;
    pub(super) const DST_PORT: Range<usize> = 2..4;
    pub(super) const LENGTH: Range<usize> = 4..6;
    pub(super) const CHECKSUM: Range<usize> = 6..8;
}

/// Length of a UDP header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// A zero-copy view of a UDP datagram.
///
/// After [`Packet::new_checked`] no accessor can panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

view_constructors!(Packet);

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks that the header fits and the length field is within 8..=buffer.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let field_len = usize::from(self.len());
        if field_len < HEADER_LEN {
            return Err(Error::BadLength);
        }
        if field_len > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        self.be16(field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        self.be16(field::DST_PORT)
    }

    /// Length field (header + payload).
    pub fn len(&self) -> u16 {
        self.be16(field::LENGTH)
    }

    /// True if the length field says there is no payload.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// Checksum as carried (0: none, allowed over IPv4 only).
    pub fn checksum(&self) -> u16 {
        self.be16(field::CHECKSUM)
    }

    /// True if the checksum verifies against the pseudo-header of `addrs`.
    /// A zero checksum means "none" over IPv4 and verifies; over IPv6 it fails.
    pub fn verify_checksum(&self, addrs: &IpAddrs) -> bool {
        if self.checksum() == 0 {
            return matches!(addrs, IpAddrs::V4 { .. });
        }
        let segment = &self.buffer.as_ref()[..usize::from(self.len())];
        checksum::fold(
            checksum::pseudo_header(addrs, IpProtocol::UDP, self.len()).add_slice(segment),
        ) == 0
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload up to the length field, borrowed for the buffer's lifetime.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, value: u16) {
        self.set_be16(field::SRC_PORT, value);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, value: u16) {
        self.set_be16(field::DST_PORT, value);
    }

    /// Sets the length field.
    pub fn set_len(&mut self, value: u16) {
        self.set_be16(field::LENGTH, value);
    }

    /// Sets the checksum field as is.
    pub fn set_checksum(&mut self, value: u16) {
        self.set_be16(field::CHECKSUM, value);
    }

    /// Computes and stores the checksum over the pseudo-header of `addrs`,
    /// the header and the payload (the length field must be set first).
    pub fn fill_checksum(&mut self, addrs: &IpAddrs) {
        self.set_checksum(0);
        let len = self.len();
        let segment = &self.buffer.as_ref()[..usize::from(len)];
        let sum =
            checksum::fold(checksum::pseudo_header(addrs, IpProtocol::UDP, len).add_slice(segment));
        // 0 means "no checksum" on the wire; its one's-complement twin is 0xffff.
        self.set_checksum(if sum == 0 { 0xffff } else { sum });
    }

    /// The payload, mutably (the length field must be set first).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// A parsed UDP header; the payload is borrowed from the packet separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl UdpRepr {
    /// Parses a datagram, verifying lengths and the checksum against `addrs`.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>, addrs: &IpAddrs) -> Result<Self, Error> {
        packet.check_len()?;
        if !packet.verify_checksum(addrs) {
            return Err(Error::BadChecksum);
        }
        Ok(UdpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
        })
    }

    /// Bytes the datagram takes with `payload_len` bytes of payload.
    pub const fn buffer_len(&self, payload_len: usize) -> usize {
        HEADER_LEN + payload_len
    }

    /// Writes the header around a payload already in place at
    /// `packet[8..8 + payload_len]` and fills the checksum. The packet must
    /// hold `buffer_len(payload_len)` bytes, which must fit in a `u16`.
    pub fn emit_header<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        addrs: &IpAddrs,
        payload_len: usize,
    ) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len((HEADER_LEN + payload_len) as u16);
        packet.fill_checksum(addrs);
    }

    /// Writes the header and copies `payload` after it, with the checksum.
    /// Same length requirements as [`UdpRepr::emit_header`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        addrs: &IpAddrs,
        payload: &[u8],
    ) {
        packet.set_len((HEADER_LEN + payload.len()) as u16);
        packet.payload_mut().copy_from_slice(payload);
        self.emit_header(packet, addrs, payload.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4() -> IpAddrs {
        IpAddrs::V4 {
            src: Ipv4Addr::new(192, 168, 1, 10),
            dst: Ipv4Addr::new(192, 168, 1, 20),
        }
    }

    fn v6() -> IpAddrs {
        IpAddrs::V6 {
            src: "2001:db8::10".parse::<Ipv6Addr>().unwrap(),
            dst: "2001:db8::20".parse::<Ipv6Addr>().unwrap(),
        }
    }

    // TFTP ACK of block 1 from 192.168.1.10:49152 to 192.168.1.20:69.
    static ACK_V4: [u8; 12] = [
        0xc0, 0x00, 0x00, 0x45, 0x00, 0x0c, 0xbc, 0x1c, 0x00, 0x04, 0x00, 0x01,
    ];
    // Same datagram between 2001:db8::10 and 2001:db8::20.
    static ACK_V6: [u8; 12] = [
        0xc0, 0x00, 0x00, 0x45, 0x00, 0x0c, 0xe3, 0xe9, 0x00, 0x04, 0x00, 0x01,
    ];

    #[test]
    fn parse_and_emit_v4() {
        let packet = Packet::new_checked(&ACK_V4[..]).unwrap();
        let repr = UdpRepr::parse(&packet, &v4()).unwrap();
        assert_eq!(
            repr,
            UdpRepr {
                src_port: 49152,
                dst_port: 69
            }
        );
        assert_eq!(packet.payload(), &[0, 4, 0, 1]);
        let mut out = [0u8; 12];
        repr.emit(
            &mut Packet::new_unchecked(&mut out[..]),
            &v4(),
            &[0, 4, 0, 1],
        );
        assert_eq!(out, ACK_V4);
    }

    #[test]
    fn parse_and_emit_v6() {
        let packet = Packet::new_checked(&ACK_V6[..]).unwrap();
        let repr = UdpRepr::parse(&packet, &v6()).unwrap();
        let mut out = [0u8; 12];
        repr.emit(
            &mut Packet::new_unchecked(&mut out[..]),
            &v6(),
            &[0, 4, 0, 1],
        );
        assert_eq!(out, ACK_V6);
    }

    #[test]
    fn checksum_depends_on_pseudo_header() {
        let packet = Packet::new_checked(&ACK_V4[..]).unwrap();
        assert!(packet.verify_checksum(&v4()));
        let other = IpAddrs::V4 {
            src: Ipv4Addr::new(192, 168, 1, 11),
            dst: Ipv4Addr::new(192, 168, 1, 20),
        };
        assert!(!packet.verify_checksum(&other));
        assert_eq!(
            UdpRepr::parse(&packet, &other).unwrap_err(),
            Error::BadChecksum
        );
        let mut corrupt = ACK_V4;
        corrupt[11] ^= 0x10;
        assert!(!Packet::new_unchecked(&corrupt[..]).verify_checksum(&v4()));
    }

    #[test]
    fn zero_checksum_is_none_over_ipv4_only() {
        let mut none = ACK_V4;
        none[6] = 0;
        none[7] = 0;
        assert!(Packet::new_unchecked(&none[..]).verify_checksum(&v4()));
        assert!(!Packet::new_unchecked(&none[..]).verify_checksum(&v6()));
    }

    #[test]
    fn impossible_lengths() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&ACK_V4[..len]).unwrap_err(),
                Error::Truncated
            );
        }
        let mut bad = ACK_V4;
        bad[5] = 7;
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::BadLength);
        let mut bad = ACK_V4;
        bad[5] = 13;
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::Truncated);
    }
}
