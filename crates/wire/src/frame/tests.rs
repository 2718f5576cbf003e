//! Whole-frame tests for [`UdpFrameRepr`]: byte-for-byte against static
//! frames (built by an independent script, checksums included), and against
//! etherparse.

use super::*;

// TFTP DATA block 1 (20 bytes) 192.168.56.1:50123 -> 192.168.56.100:2070,
// untagged, TTL 64, id 0x1234, DF.
static TFTP_DATA_V4: [u8; 62] = [
    0x52, 0x54, 0x00, 0xbb, 0x00, 0x02, 0x52, 0x54, 0x00, 0xaa, 0x00, 0x01, 0x08, 0x00, 0x45, 0x00,
    0x00, 0x30, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x36, 0xd3, 0xc0, 0xa8, 0x38, 0x01, 0xc0, 0xa8,
    0x38, 0x64, 0xc3, 0xcb, 0x08, 0x16, 0x00, 0x1c, 0x52, 0x65, 0x00, 0x03, 0x00, 0x01, 0x62, 0x6f,
    0x6f, 0x74, 0x63, 0x61, 0x63, 0x68, 0x65, 0x2d, 0x74, 0x65, 0x73, 0x74, 0x0a, 0x00,
];
// TFTP ERROR 1 "File not found" from port 69, QinQ (0x88a8 PCP 3 VID 100,
// 0x8100 VID 200), DSCP 46, TTL 63, IPv4 options NOP NOP NOP EOL.
static TFTP_ERROR_QINQ: [u8; 73] = [
    0x52, 0x54, 0x00, 0xbb, 0x00, 0x02, 0x52, 0x54, 0x00, 0xaa, 0x00, 0x01, 0x88, 0xa8, 0x60, 0x64,
    0x81, 0x00, 0x00, 0xc8, 0x08, 0x00, 0x46, 0xb8, 0x00, 0x33, 0x00, 0x00, 0x40, 0x00, 0x3f, 0x11,
    0x46, 0x4b, 0xc0, 0xa8, 0x38, 0x01, 0xc0, 0xa8, 0x38, 0x64, 0x01, 0x01, 0x01, 0x00, 0x00, 0x45,
    0x08, 0x16, 0x00, 0x1b, 0xc4, 0xaf, 0x00, 0x05, 0x00, 0x01, 0x46, 0x69, 0x6c, 0x65, 0x20, 0x6e,
    0x6f, 0x74, 0x20, 0x66, 0x6f, 0x75, 0x6e, 0x64, 0x00,
];
// 4-byte UDP payload fe80::5054:ff:febb:2:546 -> ff02::1:2:547 on 802.1Q VID 7
// (DEI set), flow label 0xabcde, hop limit 1.
static DHCPV6_VLAN: [u8; 70] = [
    0x33, 0x33, 0x00, 0x01, 0x00, 0x02, 0x52, 0x54, 0x00, 0xbb, 0x00, 0x02, 0x81, 0x00, 0x10, 0x07,
    0x86, 0xdd, 0x60, 0x0a, 0xbc, 0xde, 0x00, 0x0c, 0x11, 0x01, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x50, 0x54, 0x00, 0xff, 0xfe, 0xbb, 0x00, 0x02, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 0x02, 0x22, 0x02, 0x23, 0x00, 0x0c,
    0xf9, 0x94, 0x01, 0xa1, 0xb2, 0xc3,
];

const SRV_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xaa, 0x00, 0x01]);
const CLI_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xbb, 0x00, 0x02]);

fn server() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(192, 168, 56, 1), 50123)
}

fn client() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(192, 168, 56, 100), 2070)
}

fn data_repr() -> UdpFrameRepr {
    let mut repr = UdpFrameRepr::ipv4(SRV_MAC, CLI_MAC, server(), client());
    if let IpRepr::Ipv4(ip) = &mut repr.ip {
        ip.ident = 0x1234;
    }
    repr
}

/// Parses `frame`, re-emits what was parsed and expects the same bytes.
fn round_trip(frame: &[u8]) -> UdpFrameRepr {
    let (repr, payload) = UdpFrameRepr::parse(frame).unwrap();
    let mut out = vec![0u8; frame.len() + 16];
    let len = repr.emit(&mut out, payload).unwrap();
    assert_eq!(&out[..len], frame);
    assert_eq!(repr.buffer_len(payload.len()), frame.len());
    repr
}

#[test]
fn builds_tftp_data_byte_for_byte() {
    let mut out = [0u8; 128];
    let len = data_repr().emit(&mut out, &TFTP_DATA_V4[42..]).unwrap();
    assert_eq!(&out[..len], &TFTP_DATA_V4[..]);
}

#[test]
fn builds_in_place_byte_for_byte() {
    let repr = data_repr();
    let mut out = [0xeeu8; 62];
    out[repr.header_len()..].copy_from_slice(&TFTP_DATA_V4[42..]);
    assert_eq!(repr.emit_in_place(&mut out, 20), Ok(62));
    assert_eq!(out, TFTP_DATA_V4);
}

#[test]
fn parses_tftp_data() {
    let repr = round_trip(&TFTP_DATA_V4);
    assert_eq!(repr, {
        let mut r = data_repr();
        if let IpRepr::Ipv4(ip) = &mut r.ip {
            ip.payload_len = 28;
        }
        r
    });
    assert_eq!(repr.src(), SocketAddr::V4(server()));
    assert_eq!(repr.dst(), SocketAddr::V4(client()));
}

#[test]
fn parses_qinq_with_ip_options() {
    let repr = round_trip(&TFTP_ERROR_QINQ);
    assert_eq!(
        repr.outer_vlan,
        Some(VlanTag {
            tpid: EtherType::QINQ,
            pcp: 3,
            dei: false,
            vid: 100
        })
    );
    assert_eq!(
        repr.inner_vlan,
        Some(VlanTag {
            tpid: EtherType::VLAN,
            pcp: 0,
            dei: false,
            vid: 200
        })
    );
    let IpRepr::Ipv4(ip) = repr.ip else {
        panic!("not IPv4")
    };
    assert_eq!((ip.dscp, ip.ttl, ip.dont_frag), (46, 63, true));
    assert_eq!(ip.options.as_slice(), &[1, 1, 1, 0]);
    assert_eq!(repr.udp.src_port, 69);
}

#[test]
fn parses_ipv6_on_vlan() {
    let repr = round_trip(&DHCPV6_VLAN);
    assert_eq!(
        repr.outer_vlan,
        Some(VlanTag {
            tpid: EtherType::VLAN,
            pcp: 0,
            dei: true,
            vid: 7
        })
    );
    let IpRepr::Ipv6(ip) = repr.ip else {
        panic!("not IPv6")
    };
    assert_eq!((ip.flow_label, ip.hop_limit), (0xabcde, 1));
    assert_eq!(repr.dst(), "[ff02::1:2]:547".parse::<SocketAddr>().unwrap());
}

#[test]
fn ipv6_builder_matches_static_frame() {
    let mut repr = UdpFrameRepr::ipv6(
        CLI_MAC,
        MacAddr([0x33, 0x33, 0, 1, 0, 2]),
        "[fe80::5054:ff:febb:2]:546".parse().unwrap(),
        "[ff02::1:2]:547".parse().unwrap(),
    );
    repr.outer_vlan = Some(VlanTag {
        tpid: EtherType::VLAN,
        pcp: 0,
        dei: true,
        vid: 7,
    });
    if let IpRepr::Ipv6(ip) = &mut repr.ip {
        ip.flow_label = 0xabcde;
        ip.hop_limit = 1;
    }
    let mut out = [0u8; 70];
    assert_eq!(repr.emit(&mut out, &[0x01, 0xa1, 0xb2, 0xc3]), Ok(70));
    assert_eq!(out, DHCPV6_VLAN);
}

#[test]
fn etherparse_agrees_with_emitted_checksums() {
    // A full-size TFTP DATA frame (512-byte block, odd-length payload too).
    for payload_len in [0usize, 1, 511, 516, 1472] {
        let payload: Vec<u8> = (0..payload_len).map(|i| (i * 7 + 3) as u8).collect();
        let mut out = vec![0u8; 1600];
        let len = data_repr().emit(&mut out, &payload).unwrap();
        let sliced = etherparse::SlicedPacket::from_ethernet(&out[..len]).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &sliced.net else {
            panic!("not IPv4")
        };
        let ip_header = ip.header().to_header();
        assert_eq!(ip_header.header_checksum, ip_header.calc_header_checksum());
        let Some(etherparse::TransportSlice::Udp(udp)) = &sliced.transport else {
            panic!("not UDP")
        };
        let expected = udp
            .to_header()
            .calc_checksum_ipv4(&ip_header, udp.payload())
            .unwrap();
        assert_eq!(udp.checksum(), expected);
        assert_eq!(udp.payload(), &payload[..]);
    }
}

#[test]
fn corrupt_frames_are_refused() {
    let mut bad = TFTP_DATA_V4;
    bad[60] ^= 1; // payload byte: UDP checksum fails
    assert_eq!(UdpFrameRepr::parse(&bad).unwrap_err(), Error::BadChecksum);
    let mut bad = TFTP_DATA_V4;
    bad[22] ^= 1; // TTL: IPv4 header checksum fails
    assert_eq!(UdpFrameRepr::parse(&bad).unwrap_err(), Error::BadChecksum);
    let mut bad = TFTP_DATA_V4;
    bad[14] = 0x65; // version 6 under EtherType IPv4
    assert_eq!(UdpFrameRepr::parse(&bad).unwrap_err(), Error::BadVersion);
    for len in [0, 13, 14, 33, 41, 61] {
        assert_eq!(
            UdpFrameRepr::parse(&TFTP_DATA_V4[..len]).unwrap_err(),
            Error::Truncated,
            "len {len}"
        );
    }
}

#[test]
fn unsupported_frames_are_refused() {
    // Header edits with the IPv4 checksum fixed up, so only the edit counts.
    let edited = |at: usize, value: u8| {
        let mut f = TFTP_DATA_V4;
        f[at] = value;
        ipv4::Packet::new_unchecked(&mut f[14..]).fill_checksum();
        f
    };
    let frag = edited(20, 0x60); // DF + MF
    assert_eq!(UdpFrameRepr::parse(&frag).unwrap_err(), Error::Unsupported);
    let tcp = edited(23, 6);
    assert_eq!(UdpFrameRepr::parse(&tcp).unwrap_err(), Error::Unsupported);
    assert_eq!(
        UdpFrameRepr::parse(&edited(20, 0x40)),
        UdpFrameRepr::parse(&TFTP_DATA_V4)
    );
    let mut arp = TFTP_DATA_V4;
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(UdpFrameRepr::parse(&arp).unwrap_err(), Error::Unsupported);
    // three stacked tags
    let mut three = TFTP_ERROR_QINQ[..14].to_vec();
    three.extend_from_slice(&[0x00, 0x01, 0x81, 0x00]);
    three.extend_from_slice(&TFTP_ERROR_QINQ[14..]);
    assert_eq!(UdpFrameRepr::parse(&three).unwrap_err(), Error::Unsupported);
}

#[test]
fn emit_refuses_what_it_cannot_build() {
    let repr = data_repr();
    let mut small = [0u8; 61];
    assert_eq!(
        repr.emit(&mut small, &TFTP_DATA_V4[42..]),
        Err(Error::BufferTooSmall)
    );
    assert_eq!(
        repr.emit_in_place(&mut small, 20),
        Err(Error::BufferTooSmall)
    );
    let mut huge = vec![0u8; 70_000];
    assert_eq!(repr.emit_in_place(&mut huge, 65_508), Err(Error::BadLength));
    assert!(repr.emit_in_place(&mut huge, 65_507).is_ok());

    let mut inner_only = repr;
    inner_only.inner_vlan = Some(VlanTag {
        tpid: EtherType::VLAN,
        pcp: 0,
        dei: false,
        vid: 1,
    });
    let mut out = [0u8; 128];
    assert_eq!(inner_only.emit(&mut out, b""), Err(Error::Unsupported));
    let mut bad_tpid = repr;
    bad_tpid.outer_vlan = Some(VlanTag {
        tpid: EtherType::IPV4,
        pcp: 0,
        dei: false,
        vid: 1,
    });
    assert_eq!(bad_tpid.emit(&mut out, b""), Err(Error::Unsupported));
    let mut fragment = repr;
    if let IpRepr::Ipv4(ip) = &mut fragment.ip {
        ip.more_frags = true;
    }
    assert_eq!(fragment.emit(&mut out, b""), Err(Error::Unsupported));
}

#[test]
fn vlan_scope_of_parsed_frames_and_set_on_built_ones() {
    let (qinq, _) = UdpFrameRepr::parse(&TFTP_ERROR_QINQ).unwrap();
    assert_eq!(qinq.vlan_scope(), VlanScope::new(Some(100), Some(200)));
    let (plain, _) = UdpFrameRepr::parse(&TFTP_DATA_V4).unwrap();
    assert_eq!(plain.vlan_scope(), VlanScope::UNTAGGED);
    for scope in [
        VlanScope::UNTAGGED,
        VlanScope::new(Some(7), None),
        VlanScope::new(Some(100), Some(200)),
    ] {
        let mut repr = data_repr();
        repr.set_vlan_scope(scope);
        let mut out = [0u8; 128];
        let len = repr.emit(&mut out, b"x").unwrap();
        let (parsed, payload) = UdpFrameRepr::parse(&out[..len]).unwrap();
        assert_eq!((parsed.vlan_scope(), payload), (scope, &b"x"[..]));
        assert_eq!(crate::classify::classify(&out[..len]).vlan_scope(), scope);
    }
    // The QinQ capture's outer TPID is 802.1ad, as set_vlan_scope builds.
    let mut repr = data_repr();
    repr.set_vlan_scope(qinq.vlan_scope());
    assert_eq!(repr.outer_vlan.map(|t| t.tpid), Some(EtherType::QINQ));
}
