//! IPv4 header (RFC 791) with options and fragmentation fields.

use std::net::Ipv4Addr;

use super::{checksum, Error, IpProtocol};

mod field {
    use core::ops::Range;
    pub(super) const VER_IHL: usize = 0;
    pub(super) const DSCP_ECN: usize = 1;
    pub(super) const LENGTH: Range<usize> = 2..4;
    pub(super) const IDENT: Range<usize> = 4..6;
    pub(super) const FLG_OFF: Range<usize> = 6..8;
    pub(super) const TTL: usize = 8;
    pub(super) const PROTOCOL: usize = 9;
    pub(super) const CHECKSUM: Range<usize> = 10..12;
    pub(super) const SRC: Range<usize> = 12..16;
    pub(super) const DST: Range<usize> = 16..20;
}

/// Length of an IPv4 header without options.
pub const MIN_HEADER_LEN: usize = field::DST.end;
/// Most option bytes an IPv4 header can carry (IHL 15).
pub const MAX_OPTIONS_LEN: usize = 40;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A zero-copy view of an IPv4 packet.
///
/// After [`Packet::new_checked`] no accessor can panic: the header length,
/// total length and buffer length agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

view_constructors!(Packet);

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks that the header and the total length fit in the buffer.
    ///
    /// Bytes past the total length (Ethernet padding) are allowed.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = self.header_len();
        if header_len < MIN_HEADER_LEN {
            return Err(Error::BadHeaderLen);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(Error::BadLength);
        }
        if len < total_len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Version field (4 for a valid packet).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Differentiated services code point (0–63).
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// Explicit congestion notification bits (0–3).
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 3
    }

    /// Total length (header + payload) in bytes.
    pub fn total_len(&self) -> u16 {
        self.be16(field::LENGTH)
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        self.be16(field::IDENT)
    }

    /// Don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.be16(field::FLG_OFF) & FLAG_DF != 0
    }

    /// More-fragments flag.
    pub fn more_frags(&self) -> bool {
        self.be16(field::FLG_OFF) & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (self.be16(field::FLG_OFF) & OFFSET_MASK) << 3
    }

    /// True for any fragment (MF set or a non-zero offset).
    pub fn is_fragment(&self) -> bool {
        self.be16(field::FLG_OFF) & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// Header checksum as carried.
    pub fn checksum(&self) -> u16 {
        self.be16(field::CHECKSUM)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Option bytes (between the fixed header and the payload).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }

    /// True if the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(&self.buffer.as_ref()[..self.header_len()])) == 0
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload up to the total length (Ethernet padding excluded),
    /// borrowed for the buffer's lifetime.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 4 and the header length in bytes (a multiple of 4, 20–60).
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }

    /// Sets DSCP (masked to 6 bits) and ECN (masked to 2 bits).
    pub fn set_dscp_ecn(&mut self, dscp: u8, ecn: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = (dscp << 2) | (ecn & 3);
    }

    /// Sets the total length.
    pub fn set_total_len(&mut self, value: u16) {
        self.set_be16(field::LENGTH, value);
    }

    /// Sets the identification.
    pub fn set_ident(&mut self, value: u16) {
        self.set_be16(field::IDENT, value);
    }

    /// Sets DF, MF and the fragment offset in bytes (multiple of 8).
    pub fn set_fragment(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let mut v = (offset >> 3) & OFFSET_MASK;
        if dont_frag {
            v |= FLAG_DF;
        }
        if more_frags {
            v |= FLAG_MF;
        }
        self.set_be16(field::FLG_OFF, v);
    }

    /// Sets the time to live.
    pub fn set_ttl(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value;
    }

    /// Sets the payload protocol.
    pub fn set_protocol(&mut self, value: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = value.0;
    }

    /// Sets the checksum field as is.
    pub fn set_checksum(&mut self, value: u16) {
        self.set_be16(field::CHECKSUM, value);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.octets());
    }

    /// Option bytes, mutably (the header length must be set first).
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[MIN_HEADER_LEN..end]
    }

    /// Computes and stores the header checksum (header length must be set).
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let end = self.header_len();
        let sum = checksum::fold(checksum::sum(&self.buffer.as_ref()[..end]));
        self.set_checksum(sum);
    }

    /// The payload, mutably (lengths must be set first).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_len(), usize::from(self.total_len()));
        &mut self.buffer.as_mut()[start..end]
    }
}

/// IPv4 options kept inline so [`Ipv4Repr`] stays `Copy` and allocation-free.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Options {
    len: u8,
    bytes: [u8; MAX_OPTIONS_LEN],
}

impl Ipv4Options {
    /// No options.
    pub const EMPTY: Ipv4Options = Ipv4Options {
        len: 0,
        bytes: [0; MAX_OPTIONS_LEN],
    };

    /// Copies raw option bytes: at most 40, a multiple of 4 (pad with
    /// End-of-Option-List zeros first).
    pub fn new(raw: &[u8]) -> Result<Self, Error> {
        if raw.len() > MAX_OPTIONS_LEN || !raw.len().is_multiple_of(4) {
            return Err(Error::BadHeaderLen);
        }
        let mut opts = Self::EMPTY;
        opts.bytes[..raw.len()].copy_from_slice(raw);
        opts.len = raw.len() as u8;
        Ok(opts)
    }

    /// The raw option bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Number of option bytes.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// True if there are no options.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for Ipv4Options {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl core::fmt::Debug for Ipv4Options {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("Ipv4Options")
            .field(&self.as_slice())
            .finish()
    }
}

/// A parsed IPv4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: IpProtocol,
    /// Payload length in bytes (total length minus header).
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// DSCP (0–63).
    pub dscp: u8,
    /// ECN (0–3).
    pub ecn: u8,
    /// Identification.
    pub ident: u16,
    /// Don't-fragment flag.
    pub dont_frag: bool,
    /// More-fragments flag.
    pub more_frags: bool,
    /// Fragment offset in bytes (a multiple of 8).
    pub frag_offset: u16,
    /// Header options.
    pub options: Ipv4Options,
}

impl Ipv4Repr {
    /// Parses a packet, verifying version, lengths and header checksum.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self, Error> {
        packet.check_len()?;
        if packet.version() != 4 {
            return Err(Error::BadVersion);
        }
        if !packet.verify_checksum() {
            return Err(Error::BadChecksum);
        }
        Ok(Ipv4Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: usize::from(packet.total_len()) - packet.header_len(),
            ttl: packet.ttl(),
            dscp: packet.dscp(),
            ecn: packet.ecn(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
            more_frags: packet.more_frags(),
            frag_offset: packet.frag_offset(),
            options: Ipv4Options::new(packet.options())?,
        })
    }

    /// Header length in bytes (20 plus options).
    pub fn header_len(&self) -> usize {
        MIN_HEADER_LEN + self.options.len()
    }

    /// Bytes the header takes on the wire (the payload is not included).
    pub fn buffer_len(&self) -> usize {
        self.header_len()
    }

    /// Writes the header with a correct checksum. The packet must hold at
    /// least `header_len()` bytes and `header_len() + payload_len` must fit in
    /// a `u16` (the builder checks both; see [`super::UdpFrameRepr`]).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        let header_len = self.header_len();
        packet.set_version_and_header_len(header_len);
        packet.set_dscp_ecn(self.dscp, self.ecn);
        packet.set_total_len((header_len + self.payload_len) as u16);
        packet.set_ident(self.ident);
        packet.set_fragment(self.dont_frag, self.more_frags, self.frag_offset);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet
            .options_mut()
            .copy_from_slice(self.options.as_slice());
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 10.0.0.1 -> 10.0.0.2 UDP, id 0x1c46, DF, TTL 64, 8 payload bytes.
    static PLAIN: [u8; 28] = [
        0x45, 0x00, 0x00, 0x1c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x11, 0x0a, 0x89, //
        0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, //
        0x04, 0x00, 0x00, 0x45, 0x00, 0x08, 0x00, 0x00,
    ];

    // Router Alert option (IGMP-style), IHL 6, DSCP 46 (EF), ECN 1, no payload.
    static WITH_OPTIONS: [u8; 24] = [
        0x46, 0xb9, 0x00, 0x18, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x82, 0x67, //
        0xc0, 0xa8, 0x01, 0x01, 0xe0, 0x00, 0x00, 0x16, //
        0x94, 0x04, 0x00, 0x00,
    ];

    // Non-first fragment: MF set, offset 1480, protocol UDP.
    static FRAGMENT: [u8; 24] = [
        0x45, 0x00, 0x00, 0x18, 0xab, 0xcd, 0x20, 0xb9, 0x40, 0x11, 0x9a, 0x4c, //
        0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, //
        0xde, 0xad, 0xbe, 0xef,
    ];

    fn round_trip(bytes: &[u8]) -> Ipv4Repr {
        let packet = Packet::new_checked(bytes).unwrap();
        assert!(packet.verify_checksum());
        let repr = Ipv4Repr::parse(&packet).unwrap();
        let mut out = vec![0u8; bytes.len()];
        out[repr.header_len()..].copy_from_slice(packet.payload());
        repr.emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(out, bytes);
        repr
    }

    #[test]
    fn plain_header() {
        let repr = round_trip(&PLAIN);
        assert_eq!(repr.src_addr, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(repr.dst_addr, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(repr.protocol, IpProtocol::UDP);
        assert_eq!(repr.payload_len, 8);
        assert!(repr.dont_frag && !repr.more_frags && repr.frag_offset == 0);
        assert!(repr.options.is_empty());
    }

    #[test]
    fn header_with_options() {
        let repr = round_trip(&WITH_OPTIONS);
        assert_eq!(repr.options.as_slice(), &[0x94, 0x04, 0x00, 0x00]);
        assert_eq!((repr.dscp, repr.ecn, repr.ttl), (46, 1, 1));
        assert_eq!(repr.payload_len, 0);
    }

    #[test]
    fn fragment_fields() {
        let repr = round_trip(&FRAGMENT);
        assert!(repr.more_frags);
        assert_eq!(repr.frag_offset, 1480);
        assert!(Packet::new_unchecked(&FRAGMENT[..]).is_fragment());
        assert!(!Packet::new_unchecked(&PLAIN[..]).is_fragment());
    }

    #[test]
    fn padding_after_total_length_is_ignored() {
        let mut padded = PLAIN.to_vec();
        padded.extend_from_slice(&[0; 18]);
        let packet = Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(packet.payload(), &PLAIN[20..]);
    }

    #[test]
    fn impossible_lengths() {
        for len in 0..MIN_HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&PLAIN[..len]).unwrap_err(),
                Error::Truncated
            );
        }
        let mut bad = PLAIN;
        bad[0] = 0x44; // IHL 4
        assert_eq!(
            Packet::new_checked(&bad[..]).unwrap_err(),
            Error::BadHeaderLen
        );
        let mut bad = PLAIN;
        bad[0] = 0x4f; // IHL 15: 60 bytes of header in a 28-byte packet
        bad[3] = 60;
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::Truncated);
        let mut bad = PLAIN;
        bad[3] = 19; // total length below the header length
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::BadLength);
        let mut bad = PLAIN;
        bad[3] = 29; // total length past the buffer
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn bad_version_and_checksum_are_refused() {
        let mut bad = PLAIN;
        bad[0] = 0x65;
        assert_eq!(
            Ipv4Repr::parse(&Packet::new_unchecked(&bad[..])).unwrap_err(),
            Error::BadVersion
        );
        let mut bad = PLAIN;
        bad[11] ^= 1;
        assert!(!Packet::new_unchecked(&bad[..]).verify_checksum());
        assert_eq!(
            Ipv4Repr::parse(&Packet::new_unchecked(&bad[..])).unwrap_err(),
            Error::BadChecksum
        );
    }

    #[test]
    fn options_must_be_whole_words() {
        assert_eq!(
            Ipv4Options::new(&[1, 1, 1]).unwrap_err(),
            Error::BadHeaderLen
        );
        assert_eq!(Ipv4Options::new(&[0; 44]).unwrap_err(), Error::BadHeaderLen);
        assert_eq!(Ipv4Options::new(&[0; 40]).unwrap().len(), 40);
    }
}
