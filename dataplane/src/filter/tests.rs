use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use proptest::prelude::*;
use wire::classify::{classify, Class, IpVersion, Kind, Malformed};
use wire::frame::{IpRepr, MacAddr, UdpFrameRepr};

use super::*;

/// Untagged: the scope of every rule that is not about VLANs.
const U: VlanScope = VlanScope::UNTAGGED;
const SERVER: [u8; 4] = [192, 168, 56, 1];
const CLIENT: [u8; 4] = [192, 168, 56, 100];
const OTHER: [u8; 4] = [192, 168, 56, 2];
const SERVER6: [u16; 8] = [0xfd00, 0, 0, 0, 0, 0, 0, 1];
const CLIENT6: [u16; 8] = [0xfd00, 0, 0, 0, 0, 0, 0, 0x64];
const MAC_A: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
const MAC_B: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 2]);

fn ip(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

fn sock(a: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((a, port))
}

fn emit(repr: &UdpFrameRepr) -> Vec<u8> {
    let payload = [0, 3, 0, 1, 0xaa, 0xbb];
    let mut buf = vec![0u8; repr.buffer_len(payload.len()).max(60)];
    repr.emit(&mut buf, &payload).expect("test frame fits");
    buf
}

/// An IPv4 UDP frame from `src` to `dst` with DSCP `dscp`, classified.
fn udp_dscp(src: ([u8; 4], u16), dst: ([u8; 4], u16), dscp: u8) -> Class {
    let mut r = UdpFrameRepr::ipv4(
        MAC_A,
        MAC_B,
        SocketAddrV4::new(src.0.into(), src.1),
        SocketAddrV4::new(dst.0.into(), dst.1),
    );
    if let IpRepr::Ipv4(ip) = &mut r.ip {
        ip.dscp = dscp;
    }
    let c = classify(&emit(&r));
    assert_eq!(c.kind, Kind::Udp);
    c
}

fn udp(src: ([u8; 4], u16), dst: ([u8; 4], u16)) -> Class {
    udp_dscp(src, dst, 0)
}

fn udp6(src: ([u16; 8], u16), dst: ([u16; 8], u16)) -> Class {
    let r = UdpFrameRepr::ipv6(
        MAC_A,
        MAC_B,
        SocketAddrV6::new(Ipv6Addr::from(src.0), src.1, 0, 0),
        SocketAddrV6::new(Ipv6Addr::from(dst.0), dst.1, 0, 0),
    );
    let c = classify(&emit(&r));
    assert_eq!((c.kind, c.ip_version), (Kind::Udp, Some(IpVersion::V6)));
    c
}

/// A later IPv4 fragment of UDP from `src` to `dst`.
fn later_fragment(src: [u8; 4], dst: [u8; 4]) -> Class {
    let r = UdpFrameRepr::ipv4(
        MAC_A,
        MAC_B,
        SocketAddrV4::new(src.into(), 50000),
        SocketAddrV4::new(dst.into(), 2070),
    );
    let mut f = emit(&r);
    // Fragment offset 185 (1480 bytes), MF clear: the classifier does not
    // check the IPv4 checksum, so patching the field is enough.
    f[14 + 6..14 + 8].copy_from_slice(&185u16.to_be_bytes());
    let c = classify(&f);
    assert_eq!(c.kind, Kind::Fragment);
    c
}

fn setup(cfg: FilterConfig) -> (FilterWriter, FilterReader) {
    let w = FilterWriter::new(&cfg).expect("valid config");
    let r = w.reader();
    (w, r)
}

fn with_server() -> (FilterWriter, FilterReader) {
    setup(FilterConfig {
        servers: vec![ip(SERVER)],
        ..FilterConfig::default()
    })
}

fn copy(rule: StaticRule) -> Action {
    Action::Copy(rule.id())
}

#[test]
fn dhcp_matches_both_directions_whatever_the_addresses() {
    let (_w, mut r) = with_server();
    let t = r.load();
    let discover = udp(([0, 0, 0, 0], 68), ([255, 255, 255, 255], 67));
    assert_eq!(t.lookup(0, &discover), copy(StaticRule::DhcpClient));
    let renew = udp((CLIENT, 68), (OTHER, 67));
    assert_eq!(t.lookup(0, &renew), copy(StaticRule::DhcpClient));
    // An OFFER from a DHCP server that is not the boot server still counts.
    let offer = udp((OTHER, 67), ([255, 255, 255, 255], 68));
    assert_eq!(t.lookup(1, &offer), copy(StaticRule::DhcpServer));
    let ack = udp((SERVER, 67), (CLIENT, 68));
    assert_eq!(t.lookup(1, &ack), copy(StaticRule::DhcpServer));
    // The wrong side, or the wrong ports, match nothing.
    assert_eq!(t.lookup(1, &discover), Action::Forward);
    assert_eq!(t.lookup(0, &offer), Action::Forward);
    let not_dhcp = udp((SERVER, 67), (CLIENT, 5000));
    assert_eq!(t.lookup(1, &not_dhcp), Action::Forward);
}

#[test]
fn boot_service_to_and_from_a_boot_server_only() {
    let (_w, mut r) = with_server();
    let t = r.load();
    let req = udp((CLIENT, 68), (SERVER, 4011));
    assert_eq!(t.lookup(0, &req), copy(StaticRule::BootServiceRequest));
    let reply = udp((SERVER, 4011), (CLIENT, 68));
    assert_eq!(t.lookup(1, &reply), copy(StaticRule::BootServiceReply));
    let elsewhere = udp((CLIENT, 68), (OTHER, 4011));
    assert_eq!(t.lookup(0, &elsewhere), Action::Forward);
    let from_elsewhere = udp((OTHER, 4011), (CLIENT, 68));
    assert_eq!(t.lookup(1, &from_elsewhere), Action::Forward);
    // A request seen on the server side is not a client's request.
    assert_eq!(t.lookup(1, &req), Action::Forward);
}

#[test]
fn tftp_request_to_a_boot_server_only() {
    let (_w, mut r) = with_server();
    let t = r.load();
    let rrq = udp((CLIENT, 2070), (SERVER, 69));
    assert_eq!(t.lookup(0, &rrq), copy(StaticRule::TftpRequest));
    let rrq_other = udp((CLIENT, 2070), (OTHER, 69));
    assert_eq!(t.lookup(0, &rrq_other), Action::Forward);
    let other_port = udp((CLIENT, 2070), (SERVER, 70));
    assert_eq!(t.lookup(0, &other_port), Action::Forward);
    // A server sending from port 69 is not a request.
    let from_69 = udp((SERVER, 69), (CLIENT, 2070));
    assert_eq!(t.lookup(1, &from_69), Action::Forward);
    // Without any configured server, nothing but DHCP matches.
    let (_w, mut r) = setup(FilterConfig::default());
    assert_eq!(r.load().lookup(0, &rrq), Action::Forward);
}

#[test]
fn ipv6_boot_server() {
    let (_w, mut r) = setup(FilterConfig {
        servers: vec![IpAddr::V6(Ipv6Addr::from(SERVER6))],
        ..FilterConfig::default()
    });
    let t = r.load();
    let rrq = udp6((CLIENT6, 2070), (SERVER6, 69));
    assert_eq!(t.lookup(0, &rrq), copy(StaticRule::TftpRequest));
    let reply = udp6((SERVER6, 4011), (CLIENT6, 4011));
    assert_eq!(t.lookup(1, &reply), copy(StaticRule::BootServiceReply));
    // The IPv4 server with the same last byte is not this server.
    assert_eq!(
        t.lookup(0, &udp((CLIENT, 2070), (SERVER, 69))),
        Action::Forward
    );
}

/// The mark is the boot server's: it counts on the server side whatever
/// the ports, and never on the client side (issue 13: a host there could
/// mark frames spoofed from the server and get them copied as its data).
#[test]
fn dscp_mark_matches_whatever_the_ports_on_the_server_side_only() {
    let (_w, mut r) = setup(FilterConfig {
        dscp_mark: Some(42),
        ..FilterConfig::default()
    });
    let t = r.load();
    let marked = udp_dscp((OTHER, 8080), (CLIENT, 40000), 42);
    assert_eq!(t.lookup(1, &marked), copy(StaticRule::DscpMark));
    assert_eq!(t.lookup(0, &marked), Action::Forward);
    assert_eq!(t.lookup(2, &marked), copy(StaticRule::DscpMark));
    let other_mark = udp_dscp((CLIENT, 40000), (OTHER, 8080), 43);
    assert_eq!(t.lookup(0, &other_mark), Action::Forward);
    // No mark configured: DSCP is ignored.
    let (_w, mut r) = setup(FilterConfig::default());
    assert_eq!(r.load().lookup(0, &marked), Action::Forward);
}

#[test]
fn bad_configuration_is_refused() {
    for bad in [0u8, 64, 255] {
        let cfg = FilterConfig {
            dscp_mark: Some(bad),
            ..FilterConfig::default()
        };
        assert_eq!(
            FilterWriter::new(&cfg).unwrap_err(),
            FilterError::BadDscp(bad)
        );
    }
    let cfg = FilterConfig {
        max_dynamic: MAX_DYNAMIC_LIMIT + 1,
        ..FilterConfig::default()
    };
    assert!(matches!(
        FilterWriter::new(&cfg),
        Err(FilterError::TooManyRules(_))
    ));
    let cfg = FilterConfig {
        servers: (0..=MAX_SERVERS as u32)
            .map(|i| IpAddr::V4(Ipv4Addr::from(i + 1)))
            .collect(),
        ..FilterConfig::default()
    };
    assert_eq!(
        FilterWriter::new(&cfg).unwrap_err(),
        FilterError::TooManyServers
    );
}

#[test]
fn later_fragments_from_a_server_are_copied() {
    let (_w, mut r) = with_server();
    let t = r.load();
    let frag = later_fragment(SERVER, CLIENT);
    assert_eq!(t.lookup(1, &frag), copy(StaticRule::ServerFragment));
    assert_eq!(t.lookup(0, &frag), Action::Forward);
    assert_eq!(t.lookup(1, &later_fragment(OTHER, CLIENT)), Action::Forward);
    assert_eq!(
        t.lookup(0, &later_fragment(CLIENT, SERVER)),
        copy(StaticRule::ServerFragment)
    );
}

#[test]
fn expectation_then_pin_then_remove() {
    let (mut w, mut r) = with_server();
    let client = sock(CLIENT, 2070);
    let id = w.expect(U, ip(SERVER), client).unwrap();
    assert!(id.is_dynamic());
    let data = udp((SERVER, 50123), (CLIENT, 2070));
    // Not visible before publish.
    assert_eq!(r.load().lookup(1, &data), Action::Forward);
    assert_eq!(w.publish(), 1);
    let t = r.load();
    assert_eq!(t.generation(), 1);
    assert_eq!(t.dynamic_len(), 1);
    // Expectation: any server port, both directions.
    assert_eq!(t.lookup(1, &data), Action::Copy(id));
    let data_other_tid = udp((SERVER, 40000), (CLIENT, 2070));
    assert_eq!(t.lookup(1, &data_other_tid), Action::Copy(id));
    let ack = udp((CLIENT, 2070), (SERVER, 50123));
    assert_eq!(t.lookup(0, &ack), Action::Copy(id));
    // Another client port, another client, another server: no match.
    assert_eq!(
        t.lookup(1, &udp((SERVER, 50123), (CLIENT, 2071))),
        Action::Forward
    );
    assert_eq!(
        t.lookup(1, &udp((SERVER, 50123), (OTHER, 2070))),
        Action::Forward
    );
    assert_eq!(
        t.lookup(1, &udp((OTHER, 50123), (CLIENT, 2070))),
        Action::Forward
    );
    // The frame in the direction its side does not carry: no match.
    assert_eq!(t.lookup(0, &data), Action::Forward);
    assert_eq!(t.lookup(1, &ack), Action::Forward);

    assert_eq!(w.pin(U, sock(SERVER, 50123), client), Ok(id));
    w.publish();
    let t = r.load();
    assert_eq!(t.lookup(1, &data), Action::Copy(id));
    assert_eq!(t.lookup(0, &ack), Action::Copy(id));
    // Pinned: the wrong server port matches nothing, either direction.
    assert_eq!(t.lookup(1, &data_other_tid), Action::Forward);
    let ack_other_tid = udp((CLIENT, 2070), (SERVER, 40000));
    assert_eq!(t.lookup(0, &ack_other_tid), Action::Forward);
    // A new RRQ from the same client port still hits the static rule.
    let rrq = udp((CLIENT, 2070), (SERVER, 69));
    assert_eq!(t.lookup(0, &rrq), copy(StaticRule::TftpRequest));

    // Re-expecting (the client reused its port) unpins, same id.
    assert_eq!(w.expect(U, ip(SERVER), client), Ok(id));
    w.publish();
    assert_eq!(r.load().lookup(1, &data_other_tid), Action::Copy(id));

    assert_eq!(w.remove(U, ip(SERVER), client), Some(id));
    assert_eq!(w.remove(U, ip(SERVER), client), None);
    assert_eq!(
        w.pin(U, sock(SERVER, 50123), client),
        Err(FilterError::NotFound)
    );
    w.publish();
    let t = r.load();
    assert_eq!(t.dynamic_len(), 0);
    assert_eq!(t.lookup(1, &data), Action::Forward);
    assert_eq!(t.lookup(0, &ack), Action::Forward);
}

/// A frame from `src` to `dst` with the tags of `scope`, as real bytes, and
/// its class.
fn udp_on(scope: VlanScope, src: ([u8; 4], u16), dst: ([u8; 4], u16)) -> (Vec<u8>, Class) {
    let mut r = UdpFrameRepr::ipv4(
        MAC_A,
        MAC_B,
        SocketAddrV4::new(src.0.into(), src.1),
        SocketAddrV4::new(dst.0.into(), dst.1),
    );
    r.set_vlan_scope(scope);
    let f = emit(&r);
    let c = classify(&f);
    assert_eq!((c.kind, c.vlan_scope()), (Kind::Udp, scope));
    (f, c)
}

#[test]
fn the_same_transfer_on_two_vlans_is_two_rules() {
    let (mut w, mut r) = with_server();
    let v100 = VlanScope::new(Some(100), None);
    let v200 = VlanScope::new(Some(200), None);
    let qinq = VlanScope::new(Some(100), Some(200));
    let client = sock(CLIENT, 2070);
    let a = w.expect(v100, ip(SERVER), client).unwrap();
    w.publish();
    let data = |s| udp_on(s, (SERVER, 50123), (CLIENT, 2070));
    let ack = |s| udp_on(s, (CLIENT, 2070), (SERVER, 50123));
    let t = r.load();
    assert_eq!(t.lookup(1, &data(v100).1), Action::Copy(a));
    assert_eq!(t.lookup(0, &ack(v100).1), Action::Copy(a));
    // The first stage lets tagged frames through to the exact match.
    for s in [v100, qinq] {
        assert!(t.may_match(1, &data(s).0), "{s}");
    }
    assert_eq!(t.lookup_frame(1, &data(v100).0), Action::Copy(a));
    // Same addresses and ports on VLAN 200, untagged, or 100 with an inner
    // tag: not this transfer (both stages agree).
    for s in [v200, U, qinq] {
        let (f, c) = data(s);
        assert_eq!(t.lookup(1, &c), Action::Forward, "{s}");
        assert_eq!(t.lookup_frame(1, &f), Action::Forward, "{s}");
    }
    // A second transfer with the same addresses on VLAN 200: its own rule,
    // pinned, trapped and removed without touching the first.
    let b = w.expect(v200, ip(SERVER), client).unwrap();
    assert_ne!(a, b);
    assert_eq!(w.pin(v200, sock(SERVER, 40000), client), Ok(b));
    assert_eq!(w.set_trap(v200, ip(SERVER), client, true), Ok(b));
    w.publish();
    let t = r.load();
    assert_eq!(t.dynamic_len(), 2);
    assert_eq!(t.lookup(1, &data(v100).1), Action::Copy(a));
    assert_eq!(t.lookup(1, &data(v200).1), Action::Forward); // pinned to 40000
    let data200 = udp_on(v200, (SERVER, 40000), (CLIENT, 2070)).1;
    assert_eq!(t.lookup(1, &data200), Action::Trap(b));
    assert_eq!(t.lookup(0, &ack(v200).1), Action::Forward);
    assert_eq!(
        t.lookup(0, &udp_on(v200, (CLIENT, 2070), (SERVER, 40000)).1),
        Action::Trap(b)
    );
    assert_eq!(w.remove(v100, ip(SERVER), client), Some(a));
    assert_eq!(w.remove(v100, ip(SERVER), client), None);
    w.publish();
    let t = r.load();
    assert_eq!(t.lookup(1, &data(v100).1), Action::Forward);
    assert_eq!(t.lookup(1, &data200), Action::Trap(b));
    // QinQ scopes are told apart from single tags and from each other.
    let q = w.expect(qinq, ip(SERVER), client).unwrap();
    w.publish();
    let t = r.load();
    assert_eq!(t.lookup(1, &data(qinq).1), Action::Copy(q));
    let swapped = VlanScope::new(Some(200), Some(100));
    assert_eq!(t.lookup(1, &data(swapped).1), Action::Forward);
}

#[test]
fn publish_without_changes_swaps_nothing() {
    let (mut w, mut r) = with_server();
    assert_eq!(w.publish(), 0);
    assert_eq!(r.load().generation(), 0);
    w.expect(U, ip(SERVER), sock(CLIENT, 1)).unwrap();
    assert_eq!(w.publish(), 1);
    assert_eq!(w.publish(), 1);
    assert_eq!(w.stats().publishes, 1);
}

#[test]
fn learned_server_matches_dynamic_rules_only() {
    let (mut w, mut r) = with_server();
    let next_server = [10, 1, 1, 9];
    let client = sock(CLIENT, 3000);
    let id = w.expect(U, ip(next_server), client).unwrap();
    w.publish();
    let t = r.load();
    assert_eq!(
        t.lookup(1, &udp((next_server, 50000), (CLIENT, 3000))),
        Action::Copy(id)
    );
    assert_eq!(
        t.lookup(0, &udp((CLIENT, 3000), (next_server, 50000))),
        Action::Copy(id)
    );
    // Static server rules stay with the configured servers.
    assert_eq!(
        t.lookup(0, &udp((CLIENT, 3001), (next_server, 69))),
        Action::Forward
    );
    assert_eq!(t.servers.len(), 2);
    w.remove(U, ip(next_server), client);
    w.publish();
    let t = r.load();
    assert_eq!(t.servers.len(), 1);
    assert_eq!(
        t.lookup(1, &udp((next_server, 50000), (CLIENT, 3000))),
        Action::Forward
    );
    assert_eq!(
        t.lookup(0, &udp((CLIENT, 3001), (SERVER, 69))),
        copy(StaticRule::TftpRequest)
    );
}

#[test]
fn dynamic_and_static_rules_can_trap() {
    let (mut w, mut r) = with_server();
    let client = sock(CLIENT, 2070);
    let id = w.expect(U, ip(SERVER), client).unwrap();
    assert_eq!(w.set_trap(U, ip(SERVER), client, true), Ok(id));
    w.set_static_trap(StaticRule::TftpRequest, true);
    assert_eq!(
        w.set_trap(U, ip(SERVER), sock(CLIENT, 9), true),
        Err(FilterError::NotFound)
    );
    w.publish();
    let t = r.load();
    assert_eq!(
        t.lookup(0, &udp((CLIENT, 2070), (SERVER, 33333))),
        Action::Trap(id)
    );
    assert_eq!(
        t.lookup(0, &udp((CLIENT, 2071), (SERVER, 69))),
        Action::Trap(StaticRule::TftpRequest.id())
    );
    // A dynamic rule outranks a static one: this RRQ comes from a tracked port.
    assert_eq!(
        t.lookup(0, &udp((CLIENT, 2070), (SERVER, 69))),
        Action::Trap(id)
    );
    w.set_trap(U, ip(SERVER), client, false).unwrap();
    w.set_static_trap(StaticRule::TftpRequest, false);
    w.publish();
    let t = r.load();
    assert_eq!(
        t.lookup(0, &udp((CLIENT, 2070), (SERVER, 33333))),
        Action::Copy(id)
    );
    assert_eq!(
        t.lookup(0, &udp((CLIENT, 2071), (SERVER, 69))),
        copy(StaticRule::TftpRequest)
    );
}

#[test]
fn table_bound_refuses_and_counts() {
    let (mut w, mut r) = setup(FilterConfig {
        servers: vec![ip(SERVER)],
        max_dynamic: 3,
        ..FilterConfig::default()
    });
    assert_eq!(w.rule_count(), STATIC_RULES + 3);
    let ids: Vec<RuleId> = (0..3)
        .map(|p| w.expect(U, ip(SERVER), sock(CLIENT, p)).unwrap())
        .collect();
    assert_eq!(
        w.expect(U, ip(SERVER), sock(CLIENT, 3)),
        Err(FilterError::Full(3))
    );
    assert_eq!(
        w.expect(U, ip(OTHER), sock(CLIENT, 3)),
        Err(FilterError::Full(3))
    );
    assert_eq!(w.stats().refused_full, 2);
    // Re-arming an existing rule is not a new one.
    assert_eq!(w.expect(U, ip(SERVER), sock(CLIENT, 1)), Ok(ids[1]));
    w.remove(U, ip(SERVER), sock(CLIENT, 0));
    let again = w.expect(U, ip(SERVER), sock(CLIENT, 3)).unwrap();
    assert!(
        !ids[1..].contains(&again),
        "a live id is never handed out twice"
    );
    assert!(again.index() < w.rule_count());
    w.publish();
    assert_eq!(r.load().dynamic_len(), 3);
}

#[test]
fn too_many_learned_servers_are_refused() {
    let (mut w, _r) = with_server();
    for i in 1..MAX_SERVERS as u32 {
        w.expect(
            U,
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
            sock(CLIENT, 1),
        )
        .unwrap();
    }
    let extra = IpAddr::V4(Ipv4Addr::from(0x0b00_0000));
    assert_eq!(
        w.expect(U, extra, sock(CLIENT, 1)),
        Err(FilterError::TooManyServers)
    );
    assert_eq!(w.stats().refused_servers, 1);
    // Freeing one server's last rule frees its place.
    w.remove(U, IpAddr::V4(Ipv4Addr::from(0x0a00_0005)), sock(CLIENT, 1))
        .unwrap();
    assert!(w.expect(U, extra, sock(CLIENT, 1)).is_ok());
}

#[test]
fn ten_thousand_rules_and_a_reseed() {
    let (mut w, mut r) = with_server();
    let client =
        |i: u32| SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + i / 4), 1024 + i as u16 % 4));
    let ids: Vec<RuleId> = (0..10_000)
        .map(|i| w.expect(U, ip(SERVER), client(i)).unwrap())
        .collect();
    w.publish();
    let check = |t: &Table, present: &dyn Fn(u32) -> bool| {
        for (i, &id) in ids.iter().enumerate() {
            let SocketAddr::V4(c) = client(i as u32) else {
                unreachable!()
            };
            let f = udp((SERVER, 55555), (c.ip().octets(), c.port()));
            let want = if present(i as u32) {
                Action::Copy(id)
            } else {
                Action::Forward
            };
            assert_eq!(t.lookup(1, &f), want, "rule {i}");
        }
    };
    check(r.load(), &|_| true);
    assert!(w.table().shards.iter().all(|s| s.max_probe <= PROBE_LIMIT));
    for i in (0..10_000).step_by(2) {
        w.remove(U, ip(SERVER), client(i)).unwrap();
    }
    let seed = w.seed;
    w.reseed();
    assert_ne!(seed, w.seed);
    w.publish();
    check(r.load(), &|i| i % 2 == 1);
}

#[test]
fn replaced_tables_are_freed_by_the_writer_once_readers_move_on() {
    let (mut w, mut r) = with_server();
    let first = r.load().generation();
    assert_eq!(first, 0);
    for p in 0..5 {
        w.expect(U, ip(SERVER), sock(CLIENT, p)).unwrap();
        w.publish();
    }
    // The reader still holds generation 0; all the others were dropped.
    assert_eq!(w.retired.len(), 1);
    assert_eq!(w.retired[0].generation(), 0);
    assert_eq!(r.load().generation(), 5);
    w.expect(U, ip(SERVER), sock(CLIENT, 99)).unwrap();
    w.publish();
    assert_eq!(w.retired.len(), 1);
    assert_eq!(w.retired[0].generation(), 5);
}

#[test]
fn counters_record_publish_and_merge() {
    let (mut w, mut r) = with_server();
    let id = w.expect(U, ip(SERVER), sock(CLIENT, 2070)).unwrap();
    w.publish();
    let t = r.load();
    let mut c = FilterCounters::new(w.rule_count());
    for f in [
        udp((SERVER, 50000), (CLIENT, 2070)),
        udp((SERVER, 50000), (CLIENT, 2070)),
        udp((CLIENT, 68), ([255; 4], 67)),
        udp((CLIENT, 1), (OTHER, 2)),
    ] {
        c.record(t.lookup(if f.src_addr[15] == SERVER[3] { 1 } else { 0 }, &f));
    }
    c.record(Action::Copy(RuleId(u32::MAX))); // out of range: ignored
    assert_eq!(c.hits(id), 2);
    assert_eq!(c.hits(StaticRule::DhcpClient.id()), 1);
    let shared = SharedFilterCounters::new(w.rule_count());
    shared.publish(&mut c);
    let mut snap = shared.snapshot();
    assert_eq!(snap.get(id), 2);
    assert_eq!(snap.static_hits(StaticRule::DhcpClient), 1);
    assert_eq!(snap.dynamic_total(), 2);
    snap.merge(&snap.clone());
    assert_eq!(snap.dynamic_total(), 4);
    assert_eq!(id.static_rule(), None);
    assert_eq!(
        StaticRule::DscpMark.id().static_rule(),
        Some(StaticRule::DscpMark)
    );
}

/// Publishing only what changed leaves the shared cells equal to every
/// counter, through hits before and after a publish, repeated hits of one
/// rule, the first and last ids, ids sharing a 64-counter word and ids
/// 4,096 apart (another summary bit), and a publish with nothing new.
#[test]
fn counters_publish_only_changes_equals_full_copy() {
    let n = 65_536;
    let mut c = FilterCounters::new(n);
    let shared = SharedFilterCounters::new(n);
    let rounds: [&[u32]; 4] = [
        &[0, 63, 64, 4095, 4096, 65_535],
        &[64, 64, 65, 8191, 40_000],
        &[],
        &[0, 65_535, 12_345, 12_346, 70_000],
    ];
    for ids in rounds {
        for &id in ids {
            c.record(Action::Copy(RuleId(id)));
        }
        shared.publish(&mut c);
        let snap = shared.snapshot();
        for i in 0..n as u32 {
            assert_eq!(snap.get(RuleId(i)), c.hits(RuleId(i)), "rule {i}");
        }
    }
    assert_eq!(c.hits(RuleId(64)), 3);
    assert_eq!(shared.snapshot().get(RuleId(65_535)), 2);
}

/// The rule set of generation `g` in the concurrency test: client ports
/// `0..n(g)` expected, the even ones pinned to server port 7000 + g.
fn gen_rules(g: u64) -> u16 {
    (g * 7 % 50) as u16
}

#[test]
fn concurrent_publish_while_a_reader_looks_up() {
    let (mut w, r) = with_server();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = Arc::clone(&stop);
        let mut r = r;
        std::thread::spawn(move || {
            let frames: Vec<(Class, Class)> = (0..50u16)
                .map(|p| (udp((SERVER, 0), (CLIENT, p)), udp((SERVER, 1), (CLIENT, p))))
                .collect();
            let (mut last, mut loads, mut seen) = (0, 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let t = r.load();
                let g = t.generation();
                assert!(g >= last, "generations go forward");
                seen += u64::from(g != last);
                last = g;
                loads += 1;
                let n = gen_rules(g);
                assert_eq!(t.dynamic_len(), usize::from(n), "generation {g}");
                // Every port below n matches, pinned or not as generation g
                // says; none above. Ports in frames: 0 = unpinned probe.
                for (p, (any, _)) in frames.iter().enumerate() {
                    let p = p as u16;
                    let mut f = *any;
                    f.src_port = 7000 + (g as u16);
                    let hit = t.lookup(1, &f) != Action::Forward;
                    assert_eq!(hit, p < n, "generation {g} port {p}");
                    if p < n && p.is_multiple_of(2) {
                        f.src_port = 6999;
                        assert_eq!(t.lookup(1, &f), Action::Forward, "pinned, generation {g}");
                    }
                }
            }
            (loads, seen)
        })
    };
    let mut n = 0u16;
    for g in 1..=3000u64 {
        let want = gen_rules(g);
        while n > want {
            n -= 1;
            w.remove(U, ip(SERVER), sock(CLIENT, n)).unwrap();
        }
        while n < want {
            w.expect(U, ip(SERVER), sock(CLIENT, n)).unwrap();
            n += 1;
        }
        for p in 0..n {
            w.expect(U, ip(SERVER), sock(CLIENT, p)).unwrap(); // unpin all
            if p % 2 == 0 {
                w.pin(U, sock(SERVER, 7000 + g as u16), sock(CLIENT, p))
                    .unwrap();
            }
        }
        assert_eq!(w.publish(), g);
        if g % 100 == 0 {
            std::thread::yield_now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (loads, seen) = reader.join().expect("reader found no torn table");
    assert!(
        loads > 0 && seen > 0,
        "loads {loads} generations seen {seen}"
    );
}

/// Model check: random expect/pin/remove sequences, published, agree with
/// a plain map on every lookup.
#[derive(Debug, Clone)]
enum Op {
    Expect(u8, u16),
    Pin(u8, u16, u16),
    Remove(u8, u16),
    Trap(u8, u16, bool),
    Publish,
}

fn op() -> impl Strategy<Value = Op> {
    // Few servers and ports so operations collide often.
    let s = 0u8..4;
    let p = 0u16..8;
    prop_oneof![
        3 => (s.clone(), p.clone()).prop_map(|(s, p)| Op::Expect(s, p)),
        2 => (s.clone(), p.clone(), 100u16..103).prop_map(|(s, p, t)| Op::Pin(s, p, t)),
        2 => (s.clone(), p.clone()).prop_map(|(s, p)| Op::Remove(s, p)),
        1 => (s, p, any::<bool>()).prop_map(|(s, p, b)| Op::Trap(s, p, b)),
        1 => Just(Op::Publish),
    ]
}

fn arb_kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Udp),
        Just(Kind::Tcp),
        Just(Kind::OtherIp),
        Just(Kind::Fragment),
        Just(Kind::NonIp),
        Just(Kind::Malformed(Malformed::TruncatedL4)),
    ]
}

prop_compose! {
    fn arb_class()(
        kind in arb_kind(),
        v6 in any::<bool>(),
        protocol in prop_oneof![Just(17u8), any::<u8>()],
        dscp in any::<u8>(),
        fragment in any::<bool>(),
        src in prop_oneof![Just(v4_mapped(SERVER)), any::<[u8; 16]>()],
        dst in prop_oneof![Just(v4_mapped(CLIENT)), any::<[u8; 16]>()],
        ports in any::<(u16, u16, u16, u16, u16)>(),
    ) -> Class {
        Class {
            kind,
            outer_vlan: None,
            inner_vlan: None,
            ethertype: 0x0800,
            ip_version: Some(if v6 { IpVersion::V6 } else { IpVersion::V4 }),
            protocol,
            dscp,
            fragment,
            src_addr: src,
            dst_addr: dst,
            src_port: ports.0,
            dst_port: ports.1,
            l4_offset: ports.2,
            payload_offset: ports.3,
            payload_len: ports.4,
        }
    }
}

proptest! {
    #[test]
    fn lookup_never_panics(c in arb_class(), side in 0usize..4, frame in proptest::collection::vec(any::<u8>(), 0..128)) {
        let (mut w, mut r) = setup(FilterConfig {
            servers: vec![ip(SERVER), IpAddr::V6(Ipv6Addr::from(SERVER6))],
            dscp_mark: Some(46),
            ..FilterConfig::default()
        });
        w.expect(U, ip(SERVER), sock(CLIENT, c.dst_port)).unwrap();
        w.pin(U, sock(SERVER, c.src_port), sock(CLIENT, c.dst_port)).unwrap();
        w.expect(U, ip(SERVER), sock(CLIENT, 2070)).unwrap();
        w.publish();
        let t = r.load();
        let a = t.lookup(side, &c);
        if let Some(id) = a.rule() {
            prop_assert!(id.index() < w.rule_count());
        }
        let _ = t.lookup(side, &classify(&frame));
    }

    #[test]
    fn dynamic_rules_agree_with_a_model(ops in proptest::collection::vec(op(), 1..60)) {
        let servers: Vec<[u8; 4]> = (0..4).map(|i| [10, 0, 0, 1 + i]).collect();
        let (mut w, mut r) = setup(FilterConfig {
            servers: vec![ip(servers[0])],
            max_dynamic: 20,
            ..FilterConfig::default()
        });
        // (server, client port) -> (rule, pinned port, trap)
        let mut model: HashMap<(u8, u16), (RuleId, Option<u16>, bool)> = HashMap::new();
        let mut published = model.clone();
        for op in ops {
            match op {
                Op::Expect(s, p) => {
                    let got = w.expect(U, ip(servers[usize::from(s)]), sock(CLIENT, p));
                    // 32 keys, room for 20.
                    let full = model.len() == 20;
                    match model.get_mut(&(s, p)) {
                        Some(e) => { e.1 = None; prop_assert_eq!(got, Ok(e.0)); }
                        None if full => prop_assert_eq!(got, Err(FilterError::Full(20))),
                        None => {
                            let id = got.unwrap();
                            prop_assert!(model.values().all(|e| e.0 != id));
                            model.insert((s, p), (id, None, false));
                        }
                    }
                }
                Op::Pin(s, p, tid) => {
                    let got = w.pin(U, sock(servers[usize::from(s)], tid), sock(CLIENT, p));
                    match model.get_mut(&(s, p)) {
                        Some(e) => { e.1 = Some(tid); prop_assert_eq!(got, Ok(e.0)); }
                        None => prop_assert_eq!(got, Err(FilterError::NotFound)),
                    }
                }
                Op::Remove(s, p) => {
                    let got = w.remove(U, ip(servers[usize::from(s)]), sock(CLIENT, p));
                    prop_assert_eq!(got, model.remove(&(s, p)).map(|e| e.0));
                }
                Op::Trap(s, p, b) => {
                    let got = w.set_trap(U, ip(servers[usize::from(s)]), sock(CLIENT, p), b);
                    match model.get_mut(&(s, p)) {
                        Some(e) => { e.2 = b; prop_assert_eq!(got, Ok(e.0)); }
                        None => prop_assert_eq!(got, Err(FilterError::NotFound)),
                    }
                }
                Op::Publish => {
                    w.publish();
                    published = model.clone();
                }
            }
            let t = r.load();
            prop_assert_eq!(t.dynamic_len(), published.len());
            for s in 0..4u8 {
                for p in 0..8u16 {
                    for tid in 100..103u16 {
                        let server = servers[usize::from(s)];
                        let want = match published.get(&(s, p)) {
                            Some(&(id, pin, trap)) if pin.is_none() || pin == Some(tid) => {
                                if trap { Action::Trap(id) } else { Action::Copy(id) }
                            }
                            _ => Action::Forward,
                        };
                        prop_assert_eq!(t.lookup(1, &udp((server, tid), (CLIENT, p))), want);
                        prop_assert_eq!(t.lookup(0, &udp((CLIENT, p), (server, tid))), want);
                    }
                }
            }
        }
    }
}

#[test]
fn server_udp_rule_copies_a_first_reply_before_its_expectation() {
    let cfg = FilterConfig {
        servers: vec![ip(SERVER)],
        copy_server_udp: true,
        ..FilterConfig::default()
    };
    let mut w = FilterWriter::new(&cfg).unwrap();
    let mut r = w.reader();
    let data = udp((SERVER, 50123), (CLIENT, 2070));
    assert_eq!(
        r.load().lookup(1, &data),
        Action::Copy(StaticRule::ServerUdp.id())
    );
    // From another host, or towards the server: not this rule.
    assert_eq!(
        r.load()
            .lookup(1, &udp(([10, 9, 9, 9], 50123), (CLIENT, 2070))),
        Action::Forward
    );
    assert_ne!(
        r.load().lookup(0, &udp((CLIENT, 2070), (SERVER, 50123))),
        Action::Copy(StaticRule::ServerUdp.id())
    );
    // Once the transfer's rule exists it takes precedence.
    let id = w.expect(U, ip(SERVER), sock(CLIENT, 2070)).unwrap();
    w.publish();
    assert_eq!(r.load().lookup(1, &data), Action::Copy(id));
}

#[test]
fn own_address_traps_what_is_addressed_to_bootcache_on_either_side() {
    const OWN: [u8; 4] = [192, 168, 56, 5];
    let (mut w, mut r) = setup(FilterConfig {
        servers: vec![ip(SERVER)],
        own_address: Some(Ipv4Addr::from(OWN)),
        ..FilterConfig::default()
    });
    // A transfer rule for the own address must not win over the trap.
    w.expect(U, ip(SERVER), sock(OWN, 50000)).unwrap();
    w.publish();
    let t = r.load();
    let own = Action::Trap(StaticRule::OwnAddress.id());
    // An RRQ to bootcache, a client's ACK, the origin's DATA to a fetch.
    assert_eq!(t.lookup(0, &udp((CLIENT, 2070), (OWN, 69))), own);
    assert_eq!(t.lookup(0, &udp((CLIENT, 2070), (OWN, 49152))), own);
    assert_eq!(t.lookup(1, &udp((SERVER, 40000), (OWN, 50000))), own);
    assert_eq!(t.lookup(1, &later_fragment(SERVER, OWN)), own);
    // From bootcache's address (its own frames seen again) and to others: not trapped.
    assert_eq!(
        t.lookup(0, &udp((OWN, 2070), (SERVER, 69))),
        copy(StaticRule::TftpRequest)
    );
    assert_eq!(
        t.lookup(0, &udp((CLIENT, 2070), (OTHER, 69))),
        Action::Forward
    );
    // ARP for the address (the classifier puts the target in dst_addr).
    let arp = |target: [u8; 4]| Class {
        kind: Kind::NonIp,
        ethertype: 0x0806,
        dst_addr: wire::classify::v4_mapped(target),
        ..Class::EMPTY
    };
    assert_eq!(t.lookup(0, &arp(OWN)), own);
    assert_eq!(t.lookup(1, &arp(OWN)), own);
    assert_eq!(t.lookup(0, &arp(OTHER)), Action::Forward);
    // The same bytes under another EtherType, or as IPv6, are not ours.
    let not_arp = Class {
        ethertype: 0x88cc,
        ..arp(OWN)
    };
    assert_eq!(t.lookup(0, &not_arp), Action::Forward);
    let v6 = Class {
        ip_version: Some(IpVersion::V6),
        kind: Kind::Udp,
        ..arp(OWN)
    };
    assert_eq!(t.lookup(0, &v6), Action::Forward);
    // Off unless configured.
    let (_w, mut r) = with_server();
    assert_eq!(
        r.load().lookup(0, &udp((CLIENT, 2070), (OWN, 69))),
        Action::Forward
    );
}

// The first stage (`Table::may_match`, issue 11). The contract, for every
// byte string and side: `!may_match` implies `lookup(classify) == Forward`;
// equivalently `lookup_frame` equals `lookup(classify)`.

/// Shares SERVER's last byte: passes a last-byte bitmap, not an exact set.
const TWIN: [u8; 4] = [192, 168, 57, 1];
const OWN: [u8; 4] = [192, 168, 56, 5];

/// The addresses structured frames and table configurations draw from.
const POOL: [[u8; 4]; 12] = [
    SERVER,
    TWIN,
    CLIENT,
    OTHER,
    OWN,
    [10, 0, 0, 1],
    [10, 0, 0, 2],
    [10, 0, 0, 3],
    [10, 0, 0, 4],
    [10, 0, 1, 1],
    [255, 255, 255, 255],
    [0, 0, 0, 0],
];

/// Ethernet header with `tags` VLAN tags (TPID, VID), `ethertype`, `l3`,
/// padded to the 60-byte minimum.
fn ether(tags: &[(u16, u16)], ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(64 + l3.len());
    f.extend_from_slice(&MAC_B.0);
    f.extend_from_slice(&MAC_A.0);
    for &(tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f.resize(f.len().max(60), 0);
    f
}

/// An IPv4 packet with consistent lengths; `ver_ihl` other than 0x45 adds
/// zeroed option bytes (an IHL below 5 adds none).
fn ipv4_packet(
    ver_ihl: u8,
    tos: u8,
    frag: u16,
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
    l4: &[u8],
) -> Vec<u8> {
    let hlen = (usize::from(ver_ihl & 0x0f) * 4).max(20);
    let total = (hlen + l4.len()) as u16;
    let mut p = vec![ver_ihl, tos];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0x12, 0x34]);
    p.extend_from_slice(&frag.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.resize(hlen, 0);
    p.extend_from_slice(l4);
    p
}

/// A UDP header with a consistent length, and `len` payload bytes.
fn udp_l4(sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + len);
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + len) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.resize(8 + len, 0xa5);
    u
}

/// A bare TCP ACK.
fn tcp_l4(sport: u16, dport: u16) -> Vec<u8> {
    let mut t = Vec::with_capacity(20);
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    t
}

fn ipv6_packet(tclass: u8, next: u8, src: [u8; 16], dst: [u8; 16], l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60 | tclass >> 4, tclass << 4, 0, 0];
    p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(l4);
    p
}

fn arp_body(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&MAC_A.0);
    a.extend_from_slice(&sender);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target);
    a
}

fn v4_frame(tos: u8, proto: u8, src: [u8; 4], dst: [u8; 4], ports: (u16, u16)) -> Vec<u8> {
    let l4 = match proto {
        17 => udp_l4(ports.0, ports.1, 18),
        6 => tcp_l4(ports.0, ports.1),
        _ => vec![8, 0, 0, 0, 0, 1, 0, 1],
    };
    ether(
        &[],
        0x0800,
        &ipv4_packet(0x45, tos, 0x4000, proto, src, dst, &l4),
    )
}

/// A table configuration, built by [`TableSpec::build`].
#[derive(Debug, Clone)]
struct TableSpec {
    /// (POOL index, configured as an IPv4-mapped IPv6 address).
    servers: Vec<(usize, bool)>,
    server6: bool,
    dscp_mark: Option<u8>,
    own: Option<usize>,
    copy_server_udp: bool,
    /// (server POOL index, client POOL index, client port, pin, trap, VLAN
    /// scope).
    dynamic: Vec<(usize, usize, u16, Option<u16>, bool, VlanScope)>,
    /// Dynamic rules removed again (by position in `dynamic`), after a publish.
    removed: usize,
    static_traps: Vec<(usize, bool)>,
}

impl TableSpec {
    fn build(&self) -> FilterWriter {
        let mut servers: Vec<IpAddr> = self
            .servers
            .iter()
            .map(|&(i, mapped)| {
                let a = Ipv4Addr::from(POOL[i]);
                if mapped {
                    IpAddr::V6(a.to_ipv6_mapped())
                } else {
                    IpAddr::V4(a)
                }
            })
            .collect();
        if self.server6 {
            servers.push(IpAddr::V6(Ipv6Addr::from(SERVER6)));
        }
        let mut w = FilterWriter::new(&FilterConfig {
            servers,
            dscp_mark: self.dscp_mark,
            max_dynamic: 64,
            copy_server_udp: self.copy_server_udp,
            own_address: self.own.map(|i| Ipv4Addr::from(POOL[i])),
        })
        .expect("valid config");
        for &(s, c, port, pin, trap, scope) in &self.dynamic {
            let (server, client) = (ip(POOL[s]), sock(POOL[c], port));
            w.expect(scope, server, client).expect("room");
            if let Some(tid) = pin {
                w.pin(scope, SocketAddr::new(server, tid), client)
                    .expect("expected");
            }
            w.set_trap(scope, server, client, trap).expect("expected");
        }
        for &(r, trap) in &self.static_traps {
            w.set_static_trap(StaticRule::ALL[r % STATIC_RULES], trap);
        }
        w.publish();
        for &(s, c, port, .., scope) in self.dynamic.iter().take(self.removed) {
            w.remove(scope, ip(POOL[s]), sock(POOL[c], port));
        }
        w.publish();
        w
    }
}

const PORTS: [u16; 8] = [67, 68, 69, 4011, 2070, 50123, 53, 443];

fn arb_port() -> impl Strategy<Value = u16> {
    prop_oneof![3 => proptest::sample::select(&PORTS[..]), 1 => any::<u16>()]
}

prop_compose! {
    fn arb_table()(
        servers in proptest::collection::vec((0..POOL.len(), any::<bool>()), 0..7),
        server6 in any::<bool>(),
        dscp_mark in prop_oneof![Just(None), Just(Some(10u8)), Just(Some(46)), (1u8..64).prop_map(Some)],
        own in prop_oneof![Just(None), Just(Some(4usize)), (0..POOL.len()).prop_map(Some)],
        copy_server_udp in any::<bool>(),
        dynamic in proptest::collection::vec(
            (0..POOL.len(), 0..POOL.len(), arb_port(), proptest::option::of(arb_port()), any::<bool>(), arb_scope()),
            0..5,
        ),
        removed in 0usize..3,
        static_traps in proptest::collection::vec((0..STATIC_RULES, any::<bool>()), 0..3),
    ) -> TableSpec {
        TableSpec { servers, server6, dscp_mark, own, copy_server_udp, dynamic, removed, static_traps }
    }
}

fn arb_v4() -> impl Strategy<Value = [u8; 4]> {
    prop_oneof![3 => proptest::sample::select(&POOL[..]), 1 => any::<[u8; 4]>()]
}

/// TOS bytes carrying the marks the tables use, or anything.
fn arb_tos() -> impl Strategy<Value = u8> {
    prop_oneof![Just(10u8 << 2), Just(46 << 2 | 1), any::<u8>(),]
}

/// VIDs the tables' rules and the frames' tags share, so that tagged
/// frames do hit scoped rules (and miss them by one tag).
const VIDS: [u16; 3] = [0, 100, 200];

fn arb_vid() -> impl Strategy<Value = u16> {
    prop_oneof![3 => proptest::sample::select(&VIDS[..]), 1 => any::<u16>()]
}

fn arb_scope() -> impl Strategy<Value = VlanScope> {
    let vid = proptest::sample::select(&VIDS[..]);
    (vid.clone(), vid).prop_map(|(o, i)| VlanScope::new(Some(o), Some(i)))
}

fn arb_tags() -> impl Strategy<Value = Vec<(u16, u16)>> {
    let tpid = proptest::sample::select(&[0x8100u16, 0x88a8, 0x9100][..]);
    prop_oneof![
        4 => Just(Vec::new()),
        2 => (tpid.clone(), arb_vid()).prop_map(|t| vec![t]),
        1 => proptest::collection::vec((tpid, arb_vid()), 2..4),
    ]
}

/// Frames around the configured addresses, ports and marks: IPv4 (options,
/// fragments, any protocol), IPv6, ARP, other EtherTypes, with VLAN tags,
/// then perhaps truncated or with a byte overwritten.
fn arb_frame() -> impl Strategy<Value = Vec<u8>> {
    let ipv4 = (
        prop_oneof![6 => Just(0x45u8), 1 => Just(0x46), 1 => any::<u8>()],
        arb_tos(),
        prop_oneof![
            Just(0u16),
            Just(0x4000),
            Just(0x2000),
            Just(185),
            any::<u16>()
        ],
        prop_oneof![4 => Just(17u8), 2 => Just(6), 1 => Just(1), 1 => any::<u8>()],
        arb_v4(),
        arb_v4(),
        arb_port(),
        arb_port(),
        0usize..40,
    )
        .prop_map(|(ver_ihl, tos, frag, proto, src, dst, sport, dport, len)| {
            let l4 = match proto {
                17 => udp_l4(sport, dport, len),
                6 => tcp_l4(sport, dport),
                _ => vec![0x5a; len],
            };
            (
                0x0800,
                ipv4_packet(ver_ihl, tos, frag, proto, src, dst, &l4),
            )
        });
    let addr6 = prop_oneof![
        arb_v4().prop_map(v4_mapped),
        Just(Ipv6Addr::from(SERVER6).octets()),
        any::<[u8; 16]>(),
    ];
    let ipv6 = (
        arb_tos(),
        prop_oneof![
            Just(17u8),
            Just(6),
            Just(58),
            Just(0),
            Just(44),
            any::<u8>()
        ],
        addr6.clone(),
        addr6,
        arb_port(),
        arb_port(),
    )
        .prop_map(|(tc, next, src, dst, sport, dport)| {
            let l4 = if next == 6 {
                tcp_l4(sport, dport)
            } else {
                udp_l4(sport, dport, 10)
            };
            (0x86dd, ipv6_packet(tc, next, src, dst, &l4))
        });
    let arp = (arb_v4(), arb_v4()).prop_map(|(s, t)| (0x0806, arp_body(s, t)));
    let other = (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..60));
    (
        arb_tags(),
        prop_oneof![6 => ipv4, 2 => ipv6, 2 => arp, 1 => other],
        prop_oneof![4 => Just(None), 1 => (0usize..80).prop_map(Some)],
        prop_oneof![4 => Just(None), 1 => (0usize..80, any::<u8>()).prop_map(Some)],
    )
        .prop_map(|(tags, (ethertype, l3), cut, poke)| {
            let mut f = ether(&tags, ethertype, &l3);
            if let Some((at, b)) = poke {
                if let Some(x) = f.get_mut(at) {
                    *x = b;
                }
            }
            if let Some(n) = cut {
                f.truncate(n);
            }
            f
        })
}

/// Starts of headers after the MACs, for the arbitrary-bytes test: IPv4,
/// Ethernet/IPv4 ARP, IPv6, tagged IPv4, nothing.
const PREFIXES: &[&[u8]] = &[
    &[],
    &[0x08, 0x00, 0x45],
    &[0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04],
    &[0x86, 0xdd, 0x60],
    &[0x81, 0x00, 0x00, 0x07, 0x08, 0x00, 0x45],
];

/// Up to 40 frames: structured, or MACs and a start of headers followed
/// by arbitrary bytes (short ones included).
fn arb_burst() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(
        prop_oneof![
            arb_frame(),
            (
                proptest::sample::select(PREFIXES),
                proptest::collection::vec(any::<u8>(), 0..60)
            )
                .prop_map(|(p, b)| [MAC_B.0.as_slice(), MAC_A.0.as_slice(), p, &b].concat()),
        ],
        0..40,
    )
}

/// Asserts the contract for `frame` on sides 0, 1 and 2.
fn check_first_stage(t: &Table, frame: &[u8]) -> Result<(), TestCaseError> {
    let c = classify(frame);
    for side in 0..3 {
        let full = t.lookup(side, &c);
        if !t.may_match(side, frame) {
            prop_assert_eq!(full, Action::Forward, "side {} frame {:02x?}", side, frame);
        }
        prop_assert_eq!(t.lookup_frame(side, frame), full);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn first_stage_never_misses_a_structured_frame(spec in arb_table(), frames in proptest::collection::vec(arb_frame(), 1..16)) {
        let w = spec.build();
        for f in &frames {
            check_first_stage(w.table(), f)?;
        }
    }

    #[test]
    fn first_stage_never_misses_arbitrary_bytes(
        spec in arb_table(),
        prefix in proptest::sample::select(PREFIXES),
        bytes in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        let w = spec.build();
        // MACs, then a start of headers, then the random bytes.
        let mut f = [MAC_B.0, MAC_A.0].concat();
        f.extend_from_slice(prefix);
        f.extend_from_slice(&bytes);
        check_first_stage(w.table(), &bytes)?;
        check_first_stage(w.table(), &f)?;
    }

    /// The burst form answers for each frame what the single form does,
    /// whatever mix of structured frames, arbitrary bytes and short
    /// frames a burst holds, and never looks past 32 frames.
    #[test]
    fn first_stage_burst_equals_one_by_one(
        spec in arb_table(),
        frames in arb_burst(),
        side in 0usize..3,
    ) {
        let w = spec.build();
        let t = w.table();
        let mask = t.may_match_burst(side, &frames, |f| f.as_slice());
        for (i, f) in frames.iter().enumerate().take(32) {
            prop_assert_eq!(mask >> i & 1 != 0, t.may_match(side, f), "frame {} {:02x?}", i, f);
        }
        if frames.len() < 32 {
            prop_assert_eq!(mask >> frames.len(), 0);
        }
        // The SSE2 loop too, where the table picked AVX2.
        prop_assert_eq!(t.may_match_burst_sse2(side, &frames, |f| f.as_slice()), mask);
    }

    /// The burst form never clears a frame the full lookup would match,
    /// for every table shape (one server, up to four, more; IPv6 servers;
    /// own address and mark live or not), on bursts of structured frames:
    /// IPv4, IPv6 (UDP to DHCP's ports and IPv4-mapped server addresses
    /// included) and ARP, untagged, behind one 802.1Q tag or QinQ.
    #[test]
    fn first_stage_burst_never_misses(
        spec in arb_table(),
        frames in proptest::collection::vec(arb_frame(), 0..40),
        side in 0usize..3,
    ) {
        let w = spec.build();
        let t = w.table();
        let mask = t.may_match_burst(side, &frames, |f| f.as_slice());
        let sse2 = t.may_match_burst_sse2(side, &frames, |f| f.as_slice());
        for (i, f) in frames.iter().enumerate().take(32) {
            if (mask & sse2) >> i & 1 == 0 {
                prop_assert_eq!(t.lookup(side, &classify(f)), Action::Forward, "frame {} {:02x?}", i, f);
            }
        }
    }

    /// The first pass four frames at a time (SSE2 lanes) and eight at a
    /// time (AVX2) sets exactly the bits the frame-by-frame pass does, for
    /// every table shape, on the same mixes as above (burst lengths not a
    /// multiple of four or eight included).
    #[test]
    fn first_stage_simd_equals_scalar(
        spec in arb_table(),
        frames in arb_burst(),
        side in 0usize..3,
    ) {
        let w = spec.build();
        for (shape, scalar, x4, x8) in w.table().candidates_every_way(side, &frames) {
            prop_assert_eq!(scalar, x4, "SSE2, shape {} frames {:02x?}", shape, frames);
            if let Some(x8) = x8 {
                prop_assert_eq!(scalar, x8, "AVX2, shape {} frames {:02x?}", shape, frames);
            }
        }
    }

    /// TCP, UDP and ICMP between hosts that are neither boot servers nor
    /// bootcache, without the mark, DHCP ports or IP options, untagged or
    /// behind one VLAN tag, over IPv4 (and TCP over IPv6): all cleared,
    /// whatever the table holds for the other hosts.
    #[test]
    fn first_stage_clears_ordinary_traffic(
        spec in arb_table(),
        hosts in (any::<[u8; 4]>(), any::<[u8; 4]>()),
        proto in proptest::sample::select(&[6u8, 17, 1][..]),
        ports in (1024u16.., 1024u16..),
        dscp in 0u8..64,
        tagged in any::<bool>(),
        side in 0usize..3,
    ) {
        let w = spec.build();
        let t = w.table();
        // Hosts outside POOL (servers, bootcache and rule clients all are
        // in it), not even sharing a last byte with it (beyond four IPv4
        // servers the first stage tests only that byte), whose DSCP is not
        // the mark.
        prop_assume!(POOL.iter().all(|p| p[3] != hosts.0[3] && p[3] != hosts.1[3]));
        prop_assume!(Some(dscp) != spec.dscp_mark);
        let tos = dscp << 2;
        let f = v4_frame(tos, proto, hosts.0, hosts.1, ports);
        prop_assert!(!t.may_match(side, &f), "{:02x?}", f);
        if tagged {
            let mut g = f.clone();
            g.splice(12..12, [0x81, 0x00, 0x00, 0x64]);
            prop_assert!(!t.may_match(side, &g), "{:02x?}", g);
        }
        let six = ether(&[], 0x86dd, &ipv6_packet(tos, 6, v4_mapped(hosts.0), any_v6(hosts.1), &tcp_l4(ports.0, ports.1)));
        prop_assert!(!t.may_match(side, &six));
        check_first_stage(t, &f)?;
    }
}

/// The AVX2 form of the first stage is tested only where the CPU runs
/// AVX2: on an x86_64 machine without it, this test says so rather than
/// the others passing on the SSE2 form alone.
#[test]
#[cfg(target_arch = "x86_64")]
fn first_stage_avx2_form_is_tested_here() {
    assert!(
        dpdk::simd::Avx2::detect().is_some(),
        "this CPU has no AVX2: the first stage's AVX2 loop is untested here"
    );
}

/// Every burst length from 0 to 32 (and 33, of which the first stage looks
/// at 32), each window of a fixed mix of frames that sets and clears bits
/// at every position (short, tagged, IPv6, ARP, boot traffic, ordinary
/// IPv4), on tables of every shape and both sides: the AVX2 and SSE2 loops
/// and the frame-by-frame pass agree, and so does the exact answer.
#[test]
fn first_stage_every_burst_length_every_form() {
    let boot = v4_frame(0, 17, CLIENT, SERVER, (2070, 69));
    let reply = v4_frame(0, 17, SERVER, CLIENT, (50123, 2070));
    let plain = v4_frame(0, 6, CLIENT, OTHER, (50123, 443));
    let marked = v4_frame(46 << 2, 6, CLIENT, OTHER, (50123, 443));
    let dhcp = v4_frame(0, 17, [0; 4], [255; 4], (68, 67));
    let tagged = {
        let mut g = plain.clone();
        g.splice(12..12, [0x81, 0x00, 0x00, 0x64]);
        g
    };
    let six = ether(
        &[],
        0x86dd,
        &ipv6_packet(
            0,
            17,
            any_v6(CLIENT),
            v4_mapped(SERVER),
            &udp_l4(2070, 69, 10),
        ),
    );
    let arp = ether(&[], 0x0806, &arp_body(CLIENT, OTHER));
    let mix: Vec<Vec<u8>> = (0..45)
        .map(|i| match i % 11 {
            0 => boot.clone(),
            1 | 5 | 9 => plain.clone(),
            2 => tagged.clone(),
            3 => plain[..45 - i % 3].to_vec(),
            4 => six.clone(),
            6 => reply.clone(),
            7 => arp.clone(),
            8 => marked.clone(),
            _ => dhcp.clone(),
        })
        .collect();
    // SERVER and the other POOL entries named, the mark, the own address
    // (POOL[4]): one server, four, more (the bitmap), each with and
    // without the own address or the mark.
    let spec = |more: &[usize], dscp_mark: Option<u8>, own: Option<usize>| TableSpec {
        servers: [0].iter().chain(more).map(|&i| (i, false)).collect(),
        server6: false,
        dscp_mark,
        own,
        copy_server_udp: false,
        dynamic: Vec::new(),
        removed: 0,
        static_traps: Vec::new(),
    };
    let tables = [
        spec(&[], None, None),
        spec(&[1, 5, 6], None, None),
        spec(&[1, 5, 6, 7, 8], None, None),
        spec(&[], Some(46), Some(4)),
        spec(&[1, 5], Some(46), None),
        spec(&[1, 5, 6, 7, 8], None, Some(4)),
    ];
    for spec in &tables {
        let w = spec.build();
        let t = w.table();
        for side in 0..2 {
            for start in 0..12 {
                for len in 0..=33 {
                    let frames = &mix[start..start + len];
                    let one_by_one = frames
                        .iter()
                        .take(32)
                        .enumerate()
                        .fold(0u32, |m, (i, f)| m | u32::from(t.may_match(side, f)) << i);
                    let burst = t.may_match_burst(side, frames, |f| f.as_slice());
                    let sse2 = t.may_match_burst_sse2(side, frames, |f| f.as_slice());
                    let at = format!("{spec:?} side {side} start {start} len {len}");
                    assert_eq!(burst, one_by_one, "{at}");
                    assert_eq!(sse2, one_by_one, "{at}");
                    for (shape, scalar, x4, x8) in t.candidates_every_way(side, frames) {
                        assert_eq!(x4, scalar, "SSE2 {shape} {at}");
                        assert_eq!(x8.unwrap_or(scalar), scalar, "AVX2 {shape} {at}");
                    }
                }
            }
        }
    }
}

fn any_v6(a: [u8; 4]) -> [u8; 16] {
    let mut b = Ipv6Addr::from(CLIENT6).octets();
    b[12..].copy_from_slice(&a);
    b
}

/// The bridge's everyday traffic against a table like bootcache's: a
/// server, the mark, addressed mode, copied server UDP and live transfers.
#[test]
fn first_stage_clears_what_no_rule_wants_and_passes_the_rest() {
    let (mut w, mut r) = setup(FilterConfig {
        servers: vec![ip(SERVER)],
        dscp_mark: Some(46),
        own_address: Some(Ipv4Addr::from(OWN)),
        copy_server_udp: true,
        ..FilterConfig::default()
    });
    w.expect(U, ip(SERVER), sock(CLIENT, 2070)).unwrap();
    w.publish();
    let t = r.load();
    let cleared = [
        (0, v4_frame(0, 6, CLIENT, OTHER, (40000, 443))),
        (1, v4_frame(0, 6, OTHER, CLIENT, (443, 40000))),
        // TCP and ICMP with the boot server: only its UDP interests a rule.
        (1, v4_frame(0, 6, SERVER, CLIENT, (22, 40000))),
        (0, v4_frame(0, 1, CLIENT, SERVER, (0, 0))),
        (0, v4_frame(0, 17, CLIENT, OTHER, (40000, 53))),
        // TFTP between other hosts, one sharing the server's last byte.
        (1, v4_frame(0, 17, TWIN, CLIENT, (50123, 2070))),
        (0, v4_frame(0, 17, CLIENT, TWIN, (2070, 69))),
        // UDP from the server seen on the client side, and to it on the server side.
        (0, v4_frame(0, 17, SERVER, CLIENT, (50123, 2070))),
        (1, v4_frame(0, 17, CLIENT, SERVER, (2070, 50123))),
        // DHCP ports the wrong way round for the side.
        (1, v4_frame(0, 17, CLIENT, OTHER, (68, 67))),
        (0, v4_frame(0, 17, OTHER, CLIENT, (67, 68))),
        // Another DSCP value, one VLAN tag, IPv6 TCP and ICMPv6.
        (0, v4_frame(45 << 2, 6, CLIENT, OTHER, (40000, 443))),
        (
            0,
            ether(
                &[(0x8100, 100)],
                0x0800,
                &ipv4_packet(0x45, 0, 0, 6, CLIENT, OTHER, &tcp_l4(1, 2)),
            ),
        ),
        (
            0,
            ether(
                &[],
                0x86dd,
                &ipv6_packet(0, 6, any_v6(CLIENT), any_v6(OTHER), &tcp_l4(1, 2)),
            ),
        ),
        (
            0,
            ether(
                &[],
                0x86dd,
                &ipv6_packet(0, 58, any_v6(CLIENT), any_v6(OTHER), &[128, 0, 0, 0]),
            ),
        ),
        // ARP for another host; LLDP.
        (0, ether(&[], 0x0806, &arp_body(CLIENT, OTHER))),
        (0, ether(&[], 0x88cc, &[2, 7, 4, 0, 1, 2, 3, 4, 5, 6])),
    ];
    for (side, f) in &cleared {
        assert!(!t.may_match(*side, f), "side {side} {f:02x?}");
        assert_eq!(t.lookup(*side, &classify(f)), Action::Forward);
    }
    let passed = [
        (0, v4_frame(0, 17, CLIENT, SERVER, (2070, 69))),
        (1, v4_frame(0, 17, SERVER, CLIENT, (50123, 2070))),
        (0, v4_frame(0, 17, CLIENT, [255, 255, 255, 255], (68, 67))),
        (1, v4_frame(0, 17, OTHER, [255, 255, 255, 255], (67, 68))),
        (1, v4_frame(46 << 2, 6, OTHER, CLIENT, (443, 40000))),
        (0, v4_frame(0, 6, CLIENT, OWN, (40000, 80))),
        (1, v4_frame(0, 1, SERVER, OWN, (0, 0))),
        (0, ether(&[], 0x0806, &arp_body(CLIENT, OWN))),
        (
            0,
            ether(
                &[(0x8100, 100)],
                0x0800,
                &ipv4_packet(0x45, 0, 0, 17, CLIENT, SERVER, &udp_l4(2070, 69, 20)),
            ),
        ),
        (
            1,
            ether(
                &[],
                0x86dd,
                &ipv6_packet(46 << 2, 6, any_v6(OTHER), any_v6(CLIENT), &tcp_l4(1, 2)),
            ),
        ),
    ];
    for (side, f) in &passed {
        assert!(t.may_match(*side, f), "side {side} {f:02x?}");
        assert_ne!(t.lookup(*side, &classify(f)), Action::Forward);
    }
    // IPv6 UDP without an IPv6 server: cleared unless DHCP's ports (the
    // DHCP rules take any address) or an IPv4-mapped server address.
    let udp6 = |src: [u8; 16], dst: [u8; 16], ports: (u16, u16)| {
        ether(
            &[],
            0x86dd,
            &ipv6_packet(0, 17, src, dst, &udp_l4(ports.0, ports.1, 8)),
        )
    };
    for (side, f, unsure) in [
        (0, udp6(any_v6(CLIENT), any_v6(OTHER), (1, 2)), false),
        (1, udp6(any_v6(OTHER), any_v6(CLIENT), (53, 40000)), false),
        // The server's last four bytes in another IPv6 address.
        (0, udp6(any_v6(CLIENT), any_v6(SERVER), (2070, 69)), true),
    ] {
        assert_eq!(t.lookup(side, &classify(&f)), Action::Forward);
        assert_eq!(t.may_match(side, &f), unsure, "side {side} {f:02x?}");
    }
    for (side, f) in [
        (0, udp6(any_v6(CLIENT), any_v6(OTHER), (546, 67))),
        (1, udp6(any_v6(OTHER), any_v6(CLIENT), (67, 68))),
        (0, udp6(any_v6(CLIENT), v4_mapped(SERVER), (2070, 69))),
        (1, udp6(v4_mapped(SERVER), any_v6(CLIENT), (50123, 2070))),
    ] {
        assert!(t.may_match(side, &f), "side {side} {f:02x?}");
        assert_ne!(t.lookup(side, &classify(&f)), Action::Forward);
    }
    // Unsure, so passed on: IP options (the ports move), QinQ, frames too
    // short to read.
    let unsure = [
        ether(
            &[],
            0x0800,
            &ipv4_packet(0x46, 0, 0, 17, CLIENT, OTHER, &udp_l4(1, 2, 8)),
        ),
        ether(
            &[(0x88a8, 1), (0x8100, 2)],
            0x0800,
            &ipv4_packet(0x45, 0, 0, 6, CLIENT, OTHER, &tcp_l4(1, 2)),
        ),
        vec![0; 13],
        v4_frame(0, 6, CLIENT, OTHER, (1, 2))[..40].to_vec(),
    ];
    for f in &unsure {
        assert!(t.may_match(0, f), "{f:02x?}");
    }
}

/// More IPv4 servers than the exact set holds, learned servers, and
/// rules switched off: the precomputed sets follow every publish.
#[test]
fn first_stage_follows_servers_learned_and_forgotten() {
    let many: Vec<[u8; 4]> = (1..=6).map(|i| [10, 0, 0, i]).collect();
    let (mut w, mut r) = setup(FilterConfig {
        servers: many.iter().map(|&a| ip(a)).collect(),
        ..FilterConfig::default()
    });
    for &s in &many {
        assert!(r
            .load()
            .may_match(1, &v4_frame(0, 17, s, CLIENT, (50123, 2070))));
        assert!(r
            .load()
            .may_match(0, &v4_frame(0, 17, CLIENT, s, (2070, 69))));
    }
    // A host whose last byte no server has.
    assert!(!r
        .load()
        .may_match(1, &v4_frame(0, 17, [10, 0, 0, 99], CLIENT, (1, 2))));
    // A server learned from a transfer, then forgotten.
    let learned = [172, 16, 0, 9];
    let udp_from = v4_frame(0, 17, learned, CLIENT, (50123, 2070));
    assert!(!r.load().may_match(1, &udp_from));
    w.expect(U, ip(learned), sock(CLIENT, 2070)).unwrap();
    w.publish();
    assert!(r.load().may_match(1, &udp_from));
    assert_ne!(r.load().lookup_frame(1, &udp_from), Action::Forward);
    w.remove(U, ip(learned), sock(CLIENT, 2070));
    w.publish();
    assert!(!r.load().may_match(1, &udp_from));
    // No servers at all: the exact set holds 0.0.0.0, which only sends
    // UDP to or from that address on to classify (and lookup forwards it).
    let (_w, mut r) = setup(FilterConfig::default());
    let t = r.load();
    let to_nobody = v4_frame(0, 17, CLIENT, [0, 0, 0, 0], (1, 2));
    assert!(t.may_match(0, &to_nobody));
    assert_eq!(t.lookup_frame(0, &to_nobody), Action::Forward);
    assert!(!t.may_match(0, &v4_frame(0, 17, CLIENT, [10, 0, 0, 1], (1, 2))));
    assert!(!t.may_match(1, &v4_frame(0, 17, [10, 0, 0, 1], CLIENT, (1, 2))));
}

#[test]
fn set_servers_keeps_every_dynamic_rule_and_moves_the_static_ones() {
    let (mut w, mut r) = with_server();
    let other = [10, 1, 1, 20];
    let (c1, c2) = (sock(CLIENT, 3000), sock(CLIENT, 3001));
    let a = w.expect(U, ip(SERVER), c1).unwrap();
    w.set_trap(U, ip(SERVER), c1, true).unwrap();
    let b = w.expect(U, ip(other), c2).unwrap();
    w.publish();
    // `other` becomes the first configured server and SERVER is dropped.
    w.set_servers(&[ip(other)]).unwrap();
    w.publish();
    let t = r.load();
    // SERVER's session goes on (kept as a learned server), trap and all.
    assert_eq!(
        t.lookup(1, &udp((SERVER, 50000), (CLIENT, 3000))),
        Action::Trap(a)
    );
    assert_eq!(
        t.lookup(1, &udp((other, 50000), (CLIENT, 3001))),
        Action::Copy(b)
    );
    // Static rules follow the new list.
    assert_eq!(
        t.lookup(0, &udp((CLIENT, 4000), (other, 69))),
        copy(StaticRule::TftpRequest)
    );
    assert_eq!(
        t.lookup(0, &udp((CLIENT, 4000), (SERVER, 69))),
        Action::Forward
    );
    assert_eq!(t.servers.len(), 2);
    // Its last rule gone, the dropped server goes too.
    assert_eq!(w.remove(U, ip(SERVER), c1), Some(a));
    w.publish();
    assert_eq!(r.load().servers.len(), 1);
    assert_eq!(w.len(), 1);
    // Too many: refused, nothing changed.
    let many: Vec<IpAddr> = (0..=MAX_SERVERS as u8).map(|i| ip([10, 2, 0, i])).collect();
    assert_eq!(w.set_servers(&many), Err(FilterError::TooManyServers));
    w.publish();
    assert_eq!(
        r.load().lookup(0, &udp((CLIENT, 4000), (other, 69))),
        copy(StaticRule::TftpRequest)
    );
}
