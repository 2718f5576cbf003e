//! 802.1Q VLAN tags, alone or stacked (QinQ: 802.1ad `0x88a8`, or the
//! pre-standard `0x9100`).
//!
//! The tag's TPID is the EtherType of the header before it, so a view here
//! starts at the TCI: `[PCP:3 DEI:1 VID:12][inner EtherType:16]`.

use super::{Error, EtherType};

mod field {
    use core::ops::{Range, RangeFrom};
    pub(super) const TCI: Range<usize> = 0..2;
    pub(super) const ETHERTYPE: Range<usize> = 2..4;
    pub(super) const PAYLOAD: RangeFrom<usize> = 4..;
}

/// Length of a VLAN tag after its TPID.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// A zero-copy view of a VLAN tag (TCI + inner EtherType) and what follows.
///
/// After [`Packet::new_checked`] no accessor can panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

view_constructors!(Packet, min_len = HEADER_LEN);

impl<T: AsRef<[u8]>> Packet<T> {
    fn tci(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::TCI];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Priority code point (0–7).
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// Drop eligible indicator.
    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// VLAN identifier (0–4095).
    pub fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// EtherType of what follows the tag (another TPID for stacked tags).
    pub fn ethertype(&self) -> EtherType {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        EtherType(u16::from_be_bytes([b[0], b[1]]))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// Everything after the tag, borrowed for the buffer's lifetime.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets PCP, DEI and VID at once; `vid` is masked to 12 bits, `pcp` to 3.
    pub fn set_tci(&mut self, pcp: u8, dei: bool, vid: u16) {
        let tci = (u16::from(pcp & 7) << 13) | (u16::from(dei) << 12) | (vid & 0x0fff);
        self.buffer.as_mut()[field::TCI].copy_from_slice(&tci.to_be_bytes());
    }

    /// Sets the EtherType of what follows.
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&ethertype.0.to_be_bytes());
    }

    /// Everything after the tag, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// A parsed VLAN tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanRepr {
    /// Priority code point (0–7).
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN identifier (0–4095).
    pub vid: u16,
    /// EtherType of what follows the tag.
    pub ethertype: EtherType,
}

impl VlanRepr {
    /// Parses a checked tag.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self, Error> {
        packet.check_len()?;
        Ok(VlanRepr {
            pcp: packet.pcp(),
            dei: packet.dei(),
            vid: packet.vid(),
            ethertype: packet.ethertype(),
        })
    }

    /// Bytes the tag takes after its TPID.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the tag; the packet must hold at least [`HEADER_LEN`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_tci(self.pcp, self.dei, self.vid);
        packet.set_ethertype(self.ethertype);
    }
}

/// The VLANs a frame travelled on: what keeps two VLANs apart in every
/// table keyed by addresses (transfers, filter rules, serving sessions, the
/// cache), since two VLANs may use the same subnets.
///
/// Outer (or only) VID and inner VID of a QinQ pair; 0 stands for "no tag".
/// A priority tag (VID 0, 802.1p) is the same scope as no tag: 802.1Q puts
/// such a frame on the port's native VLAN. The TPID is not part of the
/// scope: a segment carries one tagging scheme per VLAN, and the replies
/// bootcache builds copy the request's tags (TPID included) anyway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VlanScope {
    /// Outer (or only) VLAN ID, 0 when untagged.
    pub outer: u16,
    /// Inner VLAN ID of a QinQ pair, 0 when single-tagged or untagged.
    pub inner: u16,
}

impl VlanScope {
    /// No tag (or a priority tag).
    pub const UNTAGGED: VlanScope = VlanScope { outer: 0, inner: 0 };

    /// The scope of a frame with these VIDs (each masked to 12 bits; `None`
    /// for a missing tag).
    #[inline(always)]
    pub const fn new(outer: Option<u16>, inner: Option<u16>) -> VlanScope {
        VlanScope {
            outer: vid(outer),
            inner: vid(inner),
        }
    }

    /// True for [`VlanScope::UNTAGGED`].
    pub const fn is_untagged(self) -> bool {
        self.outer == 0 && self.inner == 0
    }

    /// The two VIDs in 24 bits (outer high), for hash keys.
    #[inline(always)]
    pub const fn packed(self) -> u32 {
        ((self.outer as u32 & 0x0fff) << 12) | (self.inner as u32 & 0x0fff)
    }
}

#[inline(always)]
const fn vid(tag: Option<u16>) -> u16 {
    match tag {
        Some(v) => v & 0x0fff,
        None => 0,
    }
}

impl core::fmt::Display for VlanScope {
    /// `untagged`, `vlan 100` or `vlan 100.200` (outer.inner).
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match (self.outer, self.inner) {
            (0, 0) => f.write_str("untagged"),
            (o, 0) => write!(f, "vlan {o}"),
            (o, i) => write!(f, "vlan {o}.{i}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // TCI: PCP 5, DEI 1, VID 0x123; inner EtherType IPv4; one payload byte.
    static TAG: [u8; 5] = [0xb1, 0x23, 0x08, 0x00, 0x45];

    #[test]
    fn parse_and_emit_round_trip() {
        let packet = Packet::new_checked(&TAG[..]).unwrap();
        let repr = VlanRepr::parse(&packet).unwrap();
        assert_eq!(
            repr,
            VlanRepr {
                pcp: 5,
                dei: true,
                vid: 0x123,
                ethertype: EtherType::IPV4
            }
        );
        assert_eq!(packet.payload(), &[0x45]);
        let mut out = [0u8; 5];
        out[4] = 0x45;
        repr.emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(out, TAG);
    }

    #[test]
    fn set_tci_masks_out_of_range_values() {
        let mut out = [0u8; 4];
        Packet::new_unchecked(&mut out[..]).set_tci(0xff, false, 0xffff);
        assert_eq!(&out[..2], &[0xef, 0xff]);
    }

    #[test]
    fn scope_masks_vids_and_treats_priority_tags_as_untagged() {
        assert_eq!(VlanScope::new(None, None), VlanScope::UNTAGGED);
        assert_eq!(VlanScope::new(Some(0), None), VlanScope::UNTAGGED);
        assert!(!VlanScope::new(Some(100), None).is_untagged());
        let s = VlanScope::new(Some(0xf064), Some(200));
        assert_eq!((s.outer, s.inner), (100, 200));
        assert_eq!(s.packed(), 100 << 12 | 200);
        assert_ne!(
            VlanScope::new(Some(100), Some(200)).packed(),
            VlanScope::new(Some(200), Some(100)).packed()
        );
        assert_eq!(s.to_string(), "vlan 100.200");
        assert_eq!(VlanScope::new(Some(7), None).to_string(), "vlan 7");
        assert_eq!(VlanScope::UNTAGGED.to_string(), "untagged");
    }

    #[test]
    fn short_buffers_are_refused() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&TAG[..len]).unwrap_err(),
                Error::Truncated
            );
        }
    }
}
