//! Classifier tests: one per frame shape and per malformation, then property
//! tests against arbitrary bytes and against etherparse.

use super::*;
use etherparse::{
    IpHeaders, IpNumber, Ipv4Dscp, Ipv4Header, Ipv6Extensions, Ipv6FlowLabel, Ipv6Header,
    Ipv6RawExtHeader, PacketBuilder, SlicedPacket, TransportSlice, VlanId,
};
use proptest::prelude::*;

const SRC_MAC: [u8; 6] = [0x52, 0x54, 0, 0xaa, 0, 1];
const DST_MAC: [u8; 6] = [0x52, 0x54, 0, 0xbb, 0, 2];
const V4_SRC: [u8; 4] = [192, 168, 56, 1];
const V4_DST: [u8; 4] = [192, 168, 56, 100];
const V6_SRC: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const V6_DST: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// Ethernet header, then `tags` as (TPID, TCI), then `ethertype`.
fn eth(tags: &[(u16, u16)], ethertype: u16) -> Vec<u8> {
    let mut f = DST_MAC.to_vec();
    f.extend_from_slice(&SRC_MAC);
    for &(tpid, tci) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// IPv4 header (checksum left zero: the classifier does not verify it).
fn ipv4(protocol: u8, options: &[u8], flags_offset: u16, payload_len: usize) -> Vec<u8> {
    let ihl = 5 + options.len() / 4;
    let total = (ihl * 4 + payload_len) as u16;
    let mut h = vec![0x40 | ihl as u8, 46 << 2];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&flags_offset.to_be_bytes());
    h.extend_from_slice(&[64, protocol, 0, 0]);
    h.extend_from_slice(&V4_SRC);
    h.extend_from_slice(&V4_DST);
    h.extend_from_slice(options);
    h
}

fn ipv6(next: u8, payload_len: usize) -> Vec<u8> {
    // traffic class 0xb8 (DSCP 46), flow label 0x12345
    let mut h = vec![0x6b, 0x81, 0x23, 0x45];
    h.extend_from_slice(&(payload_len as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&V6_SRC);
    h.extend_from_slice(&V6_DST);
    h
}

fn udp(src: u16, dst: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = src.to_be_bytes().to_vec();
    u.extend_from_slice(&dst.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

fn tcp(src: u16, dst: u16, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut t = src.to_be_bytes().to_vec();
    t.extend_from_slice(&dst.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
    t.push((((20 + options.len()) / 4) << 4) as u8);
    t.extend_from_slice(&[0x18, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(options);
    t.extend_from_slice(payload);
    t
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn v4_udp_frame(tags: &[(u16, u16)], payload: &[u8]) -> Vec<u8> {
    let u = udp(50123, 2070, payload);
    cat(&[&eth(tags, 0x0800), &ipv4(17, &[], 0x4000, u.len()), &u])
}

fn malformed(frame: &[u8]) -> Malformed {
    match classify(frame).kind {
        Kind::Malformed(why) => why,
        other => panic!("expected malformed, got {other:?}"),
    }
}

#[test]
fn plain_ipv4_udp() {
    let f = v4_udp_frame(&[], &[0, 3, 0, 1, 0xaa]);
    let c = classify(&f);
    assert_eq!(c.kind, Kind::Udp);
    assert_eq!((c.outer_vlan, c.inner_vlan), (None, None));
    assert_eq!(c.ethertype, 0x0800);
    assert_eq!(c.ip_version, Some(IpVersion::V4));
    assert_eq!(c.src_addr, v4_mapped(V4_SRC));
    assert_eq!(c.dst_v4(), Some(Ipv4Addr::from(V4_DST)));
    assert_eq!(c.src_ip(), Some(IpAddr::from(V4_SRC)));
    assert_eq!((c.protocol, c.dscp, c.fragment), (17, 46, false));
    assert_eq!((c.src_port, c.dst_port), (50123, 2070));
    assert_eq!((c.l4_offset, c.payload_offset, c.payload_len), (34, 42, 5));
    assert_eq!(c.payload(&f), &[0, 3, 0, 1, 0xaa]);
    assert!(c.has_ports() && !c.is_later_fragment());
}

#[test]
fn tcp_in_a_padded_64_byte_frame() {
    let t = tcp(40000, 80, &[], &[]);
    let mut f = cat(&[&eth(&[], 0x0800), &ipv4(6, &[], 0x4000, t.len()), &t]);
    f.resize(60, 0); // Ethernet padding is not payload
    let c = classify(&f);
    assert_eq!(c.kind, Kind::Tcp);
    assert_eq!((c.src_port, c.dst_port), (40000, 80));
    assert_eq!((c.payload_offset, c.payload_len), (54, 0));
    assert!(c.payload(&f).is_empty());
}

#[test]
fn tcp_with_options_and_data() {
    let t = tcp(80, 40000, &[1, 1, 1, 1, 1, 1, 1, 0], b"HTTP/1.1");
    let f = cat(&[&eth(&[], 0x0800), &ipv4(6, &[], 0, t.len()), &t]);
    let c = classify(&f);
    assert_eq!(c.kind, Kind::Tcp);
    assert_eq!(c.payload_offset, 14 + 20 + 28);
    assert_eq!(c.payload(&f), b"HTTP/1.1");
}

#[test]
fn single_vlan() {
    let f = v4_udp_frame(&[(0x8100, 0xa00c)], b"x"); // PCP 5, VID 12
    let c = classify(&f);
    assert_eq!(c.kind, Kind::Udp);
    assert_eq!((c.outer_vlan, c.inner_vlan), (Some(12), None));
    assert_eq!((c.vlan_scope().outer, c.vlan_scope().inner), (12, 0));
    assert_eq!((c.l4_offset, c.payload_offset), (38, 46));
    assert_eq!(c.payload(&f), b"x");
}

#[test]
fn qinq_with_every_outer_tpid() {
    for tpid in [0x88a8, 0x9100, 0x8100] {
        let f = v4_udp_frame(&[(tpid, 0x1fff), (0x8100, 0x0123)], b"yz");
        let c = classify(&f);
        assert_eq!(c.kind, Kind::Udp, "tpid {tpid:#x}");
        assert_eq!((c.outer_vlan, c.inner_vlan), (Some(0xfff), Some(0x123)));
        // The TPID is not part of the scope.
        assert_eq!(
            c.vlan_scope(),
            crate::frame::VlanScope {
                outer: 0xfff,
                inner: 0x123
            }
        );
        assert_eq!(c.payload_offset, 50);
        assert_eq!(c.payload(&f), b"yz");
    }
}

#[test]
fn vlan_faults() {
    let f = v4_udp_frame(&[(0x88a8, 1), (0x8100, 2), (0x8100, 3)], b"");
    assert_eq!(malformed(&f), Malformed::TooManyVlans);
    assert_eq!(classify(&f).inner_vlan, Some(2));
    let f = eth(&[], 0x8100);
    assert_eq!(
        malformed(&[&f[..], &[0, 1, 8]].concat()),
        Malformed::TruncatedVlan
    );
    let f = eth(&[(0x88a8, 1)], 0x8100);
    assert_eq!(malformed(&f), Malformed::TruncatedVlan);
}

#[test]
fn ipv4_with_options() {
    let u = udp(68, 67, &[1; 10]);
    let opts = [0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00];
    let f = cat(&[&eth(&[], 0x0800), &ipv4(17, &opts, 0, u.len()), &u]);
    let c = classify(&f);
    assert_eq!(c.kind, Kind::Udp);
    assert_eq!((c.l4_offset, c.payload_offset, c.payload_len), (42, 50, 10));
    assert_eq!((c.src_port, c.dst_port), (68, 67));
}

#[test]
fn ipv4_first_fragment_has_ports() {
    // UDP length covers 3000 bytes; this fragment carries 8 + 24.
    let mut u = udp(50123, 2070, &[7; 24]);
    u[4..6].copy_from_slice(&3000u16.to_be_bytes());
    let f = cat(&[&eth(&[], 0x0800), &ipv4(17, &[], 0x2000, u.len()), &u]);
    let c = classify(&f);
    assert_eq!(c.kind, Kind::Udp);
    assert!(c.fragment && !c.is_later_fragment());
    assert_eq!((c.src_port, c.dst_port, c.payload_len), (50123, 2070, 24));
}

#[test]
fn ipv4_later_fragments_have_no_ports() {
    for flags_offset in [0x2000 | 185, 185, 1] {
        let data = [0xab; 40];
        let f = cat(&[&eth(&[], 0x0800), &ipv4(17, &[], flags_offset, 40), &data]);
        let c = classify(&f);
        assert_eq!(c.kind, Kind::Fragment);
        assert!(c.fragment && c.is_later_fragment() && !c.has_ports());
        assert_eq!((c.src_port, c.dst_port), (0, 0));
        assert_eq!(c.protocol, 17);
        assert_eq!(c.src_addr, v4_mapped(V4_SRC));
        assert_eq!((c.payload_offset, c.payload_len), (34, 40));
        assert_eq!(c.payload(&f), &data);
    }
}

#[test]
fn ipv4_other_protocols() {
    let icmp = [8, 0, 0xf7, 0xff, 0, 0, 0, 0];
    let f = cat(&[&eth(&[], 0x0800), &ipv4(1, &[], 0, 8), &icmp]);
    let c = classify(&f);
    assert_eq!(c.kind, Kind::OtherIp);
    assert_eq!(c.protocol, 1);
    assert_eq!(c.payload(&f), &icmp);
    assert!(!c.has_ports());
}

#[test]
fn ipv6_udp() {
    let u = udp(546, 547, &[1, 2, 3]);
    let f = cat(&[&eth(&[], 0x86dd), &ipv6(17, u.len()), &u]);
    let c = classify(&f);
    assert_eq!(c.kind, Kind::Udp);
    assert_eq!(c.ip_version, Some(IpVersion::V6));
    assert_eq!((c.src_addr, c.dst_addr), (V6_SRC, V6_DST));
    assert_eq!(c.dst_ip(), Some(IpAddr::from(V6_DST)));
    assert_eq!(c.src_v4(), None);
    assert_eq!(c.dscp, 46);
    assert_eq!((c.src_port, c.dst_port), (546, 547));
    assert_eq!((c.l4_offset, c.payload_offset), (54, 62));
    assert_eq!(c.payload(&f), &[1, 2, 3]);
}

#[test]
fn ipv6_extension_headers_are_walked() {
    let u = udp(1000, 69, b"\x00\x01f\x00octet\x00");
    let hbh = [60, 0, 5, 2, 0, 0, 1, 0]; // -> dest opts
    let dst = [43, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]; // 16 bytes -> routing
    let rt = [17, 0, 0, 0, 0, 0, 0, 0]; // -> UDP
    let exts = [&hbh[..], &dst, &rt].concat();
    let f = cat(&[
        &eth(&[(0x8100, 5)], 0x86dd),
        &ipv6(0, exts.len() + u.len()),
        &exts,
        &u,
    ]);
    let c = classify(&f);
    assert_eq!(c.kind, Kind::Udp);
    assert_eq!(c.protocol, 17);
    assert_eq!(c.dst_port, 69);
    assert_eq!(c.l4_offset as usize, 18 + 40 + 32);
    assert_eq!(&c.payload(&f)[..2], &[0, 1]);
}

#[test]
fn ipv6_fragments() {
    // first fragment: M set, offset 0, UDP follows with its ports
    let u = udp(1000, 2000, &[9; 16]);
    let frag = [17, 0, 0x00, 0x01, 0, 0, 0, 7];
    let f = cat(&[&eth(&[], 0x86dd), &ipv6(44, 8 + u.len()), &frag, &u]);
    let c = classify(&f);
    assert_eq!(c.kind, Kind::Udp);
    assert!(c.fragment);
    assert_eq!((c.src_port, c.dst_port), (1000, 2000));
    // later fragment: offset 1448; data is not a header
    let frag = [17, 0, 0x05, 0xa8, 0, 0, 0, 7];
    let data = [0xcd; 24];
    let f = cat(&[&eth(&[], 0x86dd), &ipv6(44, 8 + 24), &frag, &data]);
    let c = classify(&f);
    assert_eq!(c.kind, Kind::Fragment);
    assert!(c.fragment && !c.has_ports());
    assert_eq!(c.protocol, 17);
    assert_eq!(c.payload(&f), &data);
    // atomic fragment (offset 0, M clear) is a whole datagram
    let frag = [17, 0, 0, 0, 0, 0, 0, 7];
    let f = cat(&[&eth(&[], 0x86dd), &ipv6(44, 8 + u.len()), &frag, &u]);
    let c = classify(&f);
    assert_eq!((c.kind, c.fragment), (Kind::Udp, false));
}

#[test]
fn ipv6_other_and_opaque_protocols() {
    for next in [58u8, 50, 59] {
        let f = cat(&[&eth(&[], 0x86dd), &ipv6(next, 8), &[0; 8]]);
        let c = classify(&f);
        assert_eq!((c.kind, c.protocol), (Kind::OtherIp, next));
        assert_eq!(c.payload_len, 8);
    }
}

#[test]
fn ipv6_extension_faults() {
    // hop-by-hop claims 16 bytes, 8 present
    let f = cat(&[&eth(&[], 0x86dd), &ipv6(0, 8), &[17, 1, 0, 0, 0, 0, 0, 0]]);
    assert_eq!(malformed(&f), Malformed::TruncatedExtHeader);
    // fragment header cut short
    let f = cat(&[&eth(&[], 0x86dd), &ipv6(44, 4), &[17, 0, 0, 0]]);
    assert_eq!(malformed(&f), Malformed::TruncatedExtHeader);
    // MAX_EXT_HEADERS + 1 destination-options headers
    let n = MAX_EXT_HEADERS + 1;
    let exts: Vec<u8> = (0..n).flat_map(|_| [60, 0, 0, 0, 0, 0, 0, 0]).collect();
    let f = cat(&[&eth(&[], 0x86dd), &ipv6(60, exts.len()), &exts]);
    assert_eq!(malformed(&f), Malformed::TooManyExtHeaders);
    // exactly MAX_EXT_HEADERS is fine
    let mut exts: Vec<u8> = (0..MAX_EXT_HEADERS)
        .flat_map(|_| [60, 0, 0, 0, 0, 0, 0, 0])
        .collect();
    let last = exts.len() - 8;
    exts[last] = 59;
    let f = cat(&[&eth(&[], 0x86dd), &ipv6(60, exts.len()), &exts]);
    assert_eq!(classify(&f).kind, Kind::OtherIp);
}

#[test]
fn runts() {
    let f = v4_udp_frame(&[], b"");
    for len in 0..14 {
        assert_eq!(malformed(&f[..len]), Malformed::Runt, "len {len}");
    }
}

#[test]
fn truncated_ip() {
    let f = v4_udp_frame(&[], b"abcd");
    for len in 14..34 {
        assert_eq!(malformed(&f[..len]), Malformed::TruncatedIp, "len {len}");
    }
    // total length past the end of the frame
    for len in 34..f.len() {
        assert_eq!(malformed(&f[..len]), Malformed::TruncatedIp, "len {len}");
    }
    let u = udp(1, 2, b"");
    let f6 = cat(&[&eth(&[], 0x86dd), &ipv6(17, u.len()), &u]);
    for len in 14..f6.len() {
        assert_eq!(malformed(&f6[..len]), Malformed::TruncatedIp, "len {len}");
    }
}

#[test]
fn bad_ihl_and_ip_lengths() {
    let mut f = v4_udp_frame(&[], b"abcd");
    f[14] = 0x44;
    assert_eq!(malformed(&f), Malformed::BadIhl);
    f[14] = 0x40;
    assert_eq!(malformed(&f), Malformed::BadIhl);
    // IHL 15 (60 bytes) in a frame that holds less
    f[14] = 0x4f;
    assert_eq!(malformed(&f), Malformed::TruncatedIp);
    // IHL 6 but total length 20
    let mut f = cat(&[&eth(&[], 0x0800), &ipv4(17, &[1, 1, 1, 0], 0, 0), &[0; 20]]);
    f[16..18].copy_from_slice(&20u16.to_be_bytes());
    assert_eq!(malformed(&f), Malformed::BadIpLength);
}

#[test]
fn truncated_and_bad_l4() {
    // IP payload of 4 bytes cannot hold a UDP header
    let f = cat(&[&eth(&[], 0x0800), &ipv4(17, &[], 0, 4), &[0, 1, 0, 2]]);
    assert_eq!(malformed(&f), Malformed::TruncatedL4);
    // UDP length 7
    let mut f = v4_udp_frame(&[], b"abcd");
    f[38..40].copy_from_slice(&7u16.to_be_bytes());
    assert_eq!(malformed(&f), Malformed::BadL4Length);
    // UDP length past the IP payload
    f[38..40].copy_from_slice(&13u16.to_be_bytes());
    assert_eq!(malformed(&f), Malformed::BadL4Length);
    // UDP length short of the IP payload is fine: the rest is not payload
    f[38..40].copy_from_slice(&10u16.to_be_bytes());
    let c = classify(&f);
    assert_eq!((c.kind, c.payload_len), (Kind::Udp, 2));
    // TCP: header cut off, data offset 4, data offset past the payload
    let t = tcp(1, 2, &[], &[]);
    let f = cat(&[&eth(&[], 0x0800), &ipv4(6, &[], 0, 19), &t[..19]]);
    assert_eq!(malformed(&f), Malformed::TruncatedL4);
    let mut f = cat(&[&eth(&[], 0x0800), &ipv4(6, &[], 0, 20), &t]);
    f[46] = 0x40;
    assert_eq!(malformed(&f), Malformed::BadL4Length);
    f[46] = 0x60;
    assert_eq!(malformed(&f), Malformed::BadL4Length);
    // IPv6 UDP truncated
    let f = cat(&[&eth(&[], 0x86dd), &ipv6(17, 6), &[0; 6]]);
    assert_eq!(malformed(&f), Malformed::TruncatedL4);
}

#[test]
fn bogus_ethertypes() {
    let mut f = v4_udp_frame(&[], b"abcd");
    f[14] = 0x65; // version 6 under EtherType IPv4
    assert_eq!(malformed(&f), Malformed::BadIpVersion);
    f[12..14].copy_from_slice(&[0x86, 0xdd]); // IPv6 EtherType over an IPv4 header
    f[14] = 0x45;
    assert_eq!(malformed(&f), Malformed::BadIpVersion);
    for ethertype in [0x1234u16, 0x0040, 0x88cc, 0xffff, 0x0000] {
        f[12..14].copy_from_slice(&ethertype.to_be_bytes());
        let c = classify(&f);
        assert_eq!((c.kind, c.ethertype), (Kind::NonIp, ethertype));
        assert_eq!(c.ip_version, None);
        assert!(c.payload(&f).is_empty());
    }
}

/// An ARP request body: who has 192.168.56.100? Tell 192.168.56.1.
fn arp_body() -> Vec<u8> {
    cat(&[
        &[0, 1, 8, 0, 6, 4, 0, 1],
        &SRC_MAC,
        &V4_SRC,
        &[0; 6],
        &V4_DST,
    ])
}

#[test]
fn arp() {
    let f = cat(&[&eth(&[(0x8100, 3)], 0x0806), &arp_body()]);
    let c = classify(&f);
    assert_eq!(
        (c.kind, c.ethertype, c.outer_vlan),
        (Kind::NonIp, 0x0806, Some(3))
    );
    assert_eq!(
        (c.src_addr, c.dst_addr),
        (v4_mapped(V4_SRC), v4_mapped(V4_DST))
    );
    assert_eq!(c.ip_version, None);
    assert_eq!((c.src_ip(), c.src_v4()), (None, None));
    assert_eq!(
        c.arp_ips(),
        Some((Ipv4Addr::from(V4_SRC), Ipv4Addr::from(V4_DST)))
    );
    assert!(c.payload(&f).is_empty());
    assert_eq!((c.protocol, c.src_port, c.l4_offset), (0, 0, 0));
}

#[test]
fn arp_under_qinq_with_padding() {
    let f = cat(&[
        &eth(&[(0x88a8, 1), (0x8100, 2)], 0x0806),
        &arp_body(),
        &[0; 10],
    ]);
    let c = classify(&f);
    assert_eq!((c.kind, c.inner_vlan), (Kind::NonIp, Some(2)));
    assert_eq!(
        c.arp_ips(),
        Some((Ipv4Addr::from(V4_SRC), Ipv4Addr::from(V4_DST)))
    );
}

#[test]
fn truncated_or_foreign_arp_keeps_zero_addresses() {
    let full = cat(&[&eth(&[], 0x0806), &arp_body()]);
    let mut cases = vec![full[..full.len() - 1].to_vec(), full[..14].to_vec()];
    for (at, value) in [(15, 6), (16, 0x86), (18, 8), (19, 16)] {
        let mut f = full.clone();
        f[at] = value;
        cases.push(f);
    }
    for f in &cases {
        let c = classify(f);
        assert_eq!((c.kind, c.ethertype), (Kind::NonIp, 0x0806));
        assert_eq!((c.src_addr, c.dst_addr), ([0; 16], [0; 16]));
        assert_eq!(c.arp_ips(), None);
    }
    // An ARP-shaped body under another EtherType is not read.
    let c = classify(&cat(&[&eth(&[], 0x88cc), &arp_body()]));
    assert_eq!((c.src_addr, c.arp_ips()), ([0; 16], None));
}

#[test]
fn class_stays_small() {
    // The fast path returns it by value per frame; keep it within a cache line.
    assert!(
        core::mem::size_of::<Class>() <= 64,
        "{}",
        core::mem::size_of::<Class>()
    );
}

// ---- properties ----

/// What must hold for any input: the payload lies inside the frame, and
/// ports are set only for UDP/TCP.
fn check_invariants(frame: &[u8]) {
    let c = classify(frame);
    let end = usize::from(c.payload_offset) + usize::from(c.payload_len);
    match c.kind {
        Kind::Udp | Kind::Tcp | Kind::OtherIp | Kind::Fragment => {
            assert!(end <= frame.len(), "{c:?}");
            assert!(c.l4_offset <= c.payload_offset);
            assert_eq!(c.payload(frame).len(), usize::from(c.payload_len));
            assert!(c.ip_version.is_some());
        }
        Kind::NonIp | Kind::Malformed(_) => assert!(c.payload(frame).is_empty()),
    }
    if matches!(c.kind, Kind::NonIp | Kind::OtherIp | Kind::Fragment) {
        assert_eq!((c.src_port, c.dst_port), (0, 0));
    }
    // Only ARP fills addresses without an IP version.
    if c.ip_version.is_none() && c.ethertype != 0x0806 {
        assert_eq!((c.src_addr, c.dst_addr), ([0; 16], [0; 16]));
    }
    assert_eq!(
        c.arp_ips().is_some(),
        c.ethertype == 0x0806 && c.src_addr != [0; 16]
    );
}

fn seed_frames() -> Vec<Vec<u8>> {
    let u = udp(1000, 69, b"\x00\x01f\x00octet\x00");
    let hbh = [44, 0, 5, 2, 0, 0, 1, 0];
    let frag = [17, 0, 0, 1, 0, 0, 0, 7];
    vec![
        v4_udp_frame(&[], b"hello"),
        v4_udp_frame(&[(0x88a8, 1), (0x8100, 2)], b"hello"),
        cat(&[
            &eth(&[], 0x0800),
            &ipv4(6, &[1, 1, 1, 0], 0, 20),
            &tcp(1, 2, &[], &[]),
        ]),
        cat(&[
            &eth(&[(0x8100, 9)], 0x86dd),
            &ipv6(0, 16 + u.len()),
            &hbh,
            &frag,
            &u,
        ]),
        cat(&[&eth(&[(0x8100, 4)], 0x0806), &arp_body()]),
    ]
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        check_invariants(&bytes);
    }

    #[test]
    fn never_panics_on_mutated_frames(
        seed in 0usize..4,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut f = seed_frames().swap_remove(seed);
        for (at, byte) in flips {
            let i = at.index(f.len());
            f[i] = byte;
        }
        let len = cut.index(f.len() + 1);
        check_invariants(&f[..len]);
        check_invariants(&f);
    }

    #[test]
    fn agrees_with_etherparse(
        vlans in 0usize..3,
        vids in (0u16..4096, 0u16..4096),
        v6 in any::<bool>(),
        tcp in any::<bool>(),
        addrs in (any::<[u8; 16]>(), any::<[u8; 16]>()),
        ports in (any::<u16>(), any::<u16>()),
        dscp in 0u8..64,
        options_words in 0usize..11,
        ext_headers in 0usize..3,
        payload in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let step = PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
        let vid = |v| VlanId::try_new(v).unwrap();
        let ip = if v6 {
            let header = Ipv6Header {
                traffic_class: dscp << 2,
                flow_label: Ipv6FlowLabel::try_new(0x12345).unwrap(),
                payload_length: 0,
                next_header: IpNumber::UDP,
                hop_limit: 64,
                source: addrs.0,
                destination: addrs.1,
            };
            let opts = || Ipv6RawExtHeader::new_raw(IpNumber::UDP, &[1, 4, 0, 0, 0, 0]).unwrap();
            let exts = Ipv6Extensions {
                hop_by_hop_options: (ext_headers >= 1).then(opts),
                destination_options: (ext_headers >= 2).then(opts),
                ..Default::default()
            };
            IpHeaders::Ipv6(header, exts)
        } else {
            let src: [u8; 4] = addrs.0[..4].try_into().unwrap();
            let dst: [u8; 4] = addrs.1[..4].try_into().unwrap();
            let mut header = Ipv4Header::new(0, 64, IpNumber::UDP, src, dst).unwrap();
            header.dscp = Ipv4Dscp::try_new(dscp).unwrap();
            let options = vec![1u8; options_words * 4];
            header.options = options[..].try_into().unwrap();
            IpHeaders::Ipv4(header, Default::default())
        };
        let step = match vlans {
            0 => step.ip(ip),
            1 => step.single_vlan(vid(vids.0)).ip(ip),
            _ => step.double_vlan(vid(vids.0), vid(vids.1)).ip(ip),
        };
        let mut frame = Vec::new();
        if tcp {
            step.tcp(ports.0, ports.1, 1, 1024).write(&mut frame, &payload).unwrap();
        } else {
            step.udp(ports.0, ports.1).write(&mut frame, &payload).unwrap();
        }

        let c = classify(&frame);
        let sliced = SlicedPacket::from_ethernet(&frame).unwrap();
        prop_assert_eq!(c.kind, if tcp { Kind::Tcp } else { Kind::Udp });
        let (outer, inner) = match &sliced.vlan {
            None => (None, None),
            Some(etherparse::VlanSlice::SingleVlan(s)) => (Some(s.vlan_identifier().value()), None),
            Some(etherparse::VlanSlice::DoubleVlan(d)) => (
                Some(d.outer().vlan_identifier().value()),
                Some(d.inner().vlan_identifier().value()),
            ),
        };
        prop_assert_eq!((c.outer_vlan, c.inner_vlan), (outer, inner));
        match sliced.net.as_ref().unwrap() {
            etherparse::NetSlice::Ipv4(ip) => {
                prop_assert_eq!(c.ip_version, Some(IpVersion::V4));
                prop_assert_eq!(c.src_addr, v4_mapped(ip.header().source()));
                prop_assert_eq!(c.dst_addr, v4_mapped(ip.header().destination()));
                prop_assert_eq!(c.dscp, ip.header().dcp().value());
            }
            etherparse::NetSlice::Ipv6(ip) => {
                prop_assert_eq!(c.ip_version, Some(IpVersion::V6));
                prop_assert_eq!(c.src_addr, ip.header().source());
                prop_assert_eq!(c.dst_addr, ip.header().destination());
                prop_assert_eq!(c.dscp, ip.header().traffic_class() >> 2);
            }
        }
        let (sp, dp, l4_payload) = match sliced.transport.as_ref().unwrap() {
            TransportSlice::Udp(u) => (u.source_port(), u.destination_port(), u.payload()),
            TransportSlice::Tcp(t) => (t.source_port(), t.destination_port(), t.payload()),
            other => panic!("unexpected transport {other:?}"),
        };
        prop_assert_eq!((c.src_port, c.dst_port), (sp, dp));
        prop_assert_eq!(c.payload(&frame), l4_payload);
        prop_assert_eq!(c.payload(&frame), &payload[..]);
        prop_assert!(!c.fragment);
    }
}
