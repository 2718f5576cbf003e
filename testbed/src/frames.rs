//! Test frames: deterministic, self-describing, so a receiver can rebuild the
//! exact bytes it expects from the sequence number alone.

/// MAC the harness uses as source on the client side.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0xbc, 0, 0, 0, 0x01];
/// MAC the harness uses as source on the server side.
pub const SERVER_MAC: [u8; 6] = [0x02, 0xbc, 0, 0, 0, 0x02];
/// EtherType of harness frames (IEEE local experimental 1).
pub const ETHERTYPE_TEST: u16 = 0x88b5;
/// Shortest frame the generator builds (Ethernet header + sequence + length).
pub const MIN_TEST_FRAME: usize = 24;

/// Writes test frame `seq` of `len` bytes travelling away from `side`
/// (0: client → server, 1: server → client) into `out` (cleared first).
pub fn test_frame(side: usize, seq: u64, len: usize, out: &mut Vec<u8>) {
    let len = len.max(MIN_TEST_FRAME);
    let (src, dst) = if side == 0 {
        (CLIENT_MAC, SERVER_MAC)
    } else {
        (SERVER_MAC, CLIENT_MAC)
    };
    out.clear();
    out.extend_from_slice(&dst);
    out.extend_from_slice(&src);
    out.extend_from_slice(&ETHERTYPE_TEST.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&(len as u16).to_be_bytes());
    let salt = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    out.extend((out.len()..len).map(|i| (salt >> (i % 8 * 8)) as u8 ^ i as u8));
}

/// The sequence number of a harness test frame, if it is one.
pub fn test_frame_seq(frame: &[u8]) -> Option<u64> {
    if frame.len() < MIN_TEST_FRAME || frame[12..14] != ETHERTYPE_TEST.to_be_bytes() {
        return None;
    }
    Some(u64::from_be_bytes(frame[14..22].try_into().ok()?))
}

/// Frames a bridge must pass untouched although nothing can parse them:
/// runts (from a bare Ethernet header up to 59 bytes: shorter frames cannot
/// exist on a wire, and virtio drops them before any application sees them),
/// bogus EtherTypes, truncated IPv4/UDP headers, bad IHL, IPv4
/// fragments (first and non-first), a truncated VLAN tag, a truncated IPv6 header.
pub fn malformed_frames() -> Vec<(&'static str, Vec<u8>)> {
    let eth = |ethertype: u16| {
        let mut f = Vec::new();
        f.extend_from_slice(&SERVER_MAC);
        f.extend_from_slice(&CLIENT_MAC);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    };
    let ipv4 = |ihl_words: u8, flags_frag: u16, proto: u8, total: u16| {
        let mut h = vec![
            0x40 | ihl_words,
            0,
            0,
            0,
            0x12,
            0x34,
            0,
            0,
            64,
            proto,
            0,
            0,
            10,
            0,
            0,
            1,
            10,
            0,
            0,
            2,
        ];
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[6..8].copy_from_slice(&flags_frag.to_be_bytes());
        h
    };
    let pad = |mut f: Vec<u8>, n: usize| {
        f.resize(n.max(f.len()), 0xee);
        f
    };
    let mut out = vec![
        ("runt: Ethernet header only, 14 bytes", eth(0x0800)),
        ("runt of 20 bytes", pad(eth(0x0800), 20)),
        ("runt of 59 bytes", pad(eth(0x0800), 59)),
        ("bogus EtherType 0x0000", pad(eth(0x0000), 64)),
        ("bogus EtherType 0xffff", pad(eth(0xffff), 64)),
        ("802.3 length field", pad(eth(0x002e), 64)),
        ("truncated VLAN tag", [eth(0x8100), vec![0x00]].concat()),
        (
            "truncated IPv6 header",
            [eth(0x86dd), vec![0x60, 0, 0, 0, 0, 8]].concat(),
        ),
    ];
    let mut f = eth(0x0800);
    f.extend_from_slice(&ipv4(5, 0, 17, 28)[..12]);
    out.push(("truncated IPv4 header", f));
    let mut f = eth(0x0800);
    f.extend_from_slice(&ipv4(3, 0, 17, 28));
    out.push(("IPv4 IHL below 5", pad(f, 64)));
    let mut f = eth(0x0800);
    f.extend_from_slice(&ipv4(5, 0, 17, 28));
    f.extend_from_slice(&[0x00, 0x43, 0x00]);
    out.push(("truncated UDP header", f));
    let mut f = eth(0x0800);
    f.extend_from_slice(&ipv4(5, 0x2000, 17, 1500));
    f.extend_from_slice(&[0x00, 0x45, 0x04, 0x00, 0x05, 0xc8, 0, 0, 0, 3]);
    out.push(("IPv4 first fragment (MF) of a TFTP datagram", pad(f, 600)));
    let mut f = eth(0x0800);
    f.extend_from_slice(&ipv4(5, 185, 17, 520));
    out.push(("IPv4 non-first fragment", pad(f, 534)));
    let mut f = eth(0x0800);
    f.extend_from_slice(&ipv4(5, 0, 17, 9000));
    f.extend_from_slice(&[0x00, 0x45, 0x00, 0x45, 0x23, 0x28, 0, 0]);
    out.push(("IPv4 total length beyond the frame", pad(f, 64)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_frames_are_deterministic_and_distinct() {
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        test_frame(0, 7, 100, &mut a);
        test_frame(0, 7, 100, &mut b);
        test_frame(0, 8, 100, &mut c);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 100);
        assert_eq!(test_frame_seq(&a), Some(7));
        assert_eq!(test_frame_seq(&c), Some(8));
        assert_eq!(test_frame_seq(&a[..20]), None);
    }

    #[test]
    fn malformed_frames_are_really_malformed() {
        let frames = malformed_frames();
        assert!(frames.len() >= 14);
        assert!(frames.iter().all(|(_, f)| f.len() >= 14));
        for (name, f) in &frames {
            assert!(
                test_frame_seq(f).is_none(),
                "{name} looks like a test frame"
            );
            let parsed = etherparse_like_ok(f);
            assert!(
                !parsed || name.contains("fragment"),
                "{name} parses as a clean IPv4/UDP frame"
            );
        }
    }

    /// A tiny well-formedness check for IPv4/UDP, independent of the frames' builder.
    fn etherparse_like_ok(f: &[u8]) -> bool {
        if f.len() < 14 + 20 + 8 || f[12..14] != [0x08, 0x00] {
            return false;
        }
        let ihl = (f[14] & 0x0f) as usize * 4;
        let total = u16::from_be_bytes([f[16], f[17]]) as usize;
        ihl >= 20 && total <= f.len() - 14 && 14 + ihl + 8 <= f.len()
    }
}
