//! ARP resolver tests on a simulated clock, with frames checked byte for
//! byte against static frames built by an independent script.

use super::*;
use wire::frame::{EtherType, VlanTag};

const ME: MacAddr = MacAddr([0x02, 0xbc, 0x00, 0x00, 0x00, 0x01]);
const CLIENT: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xaa, 0x00, 0x01]);
const SERVER: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xbb, 0x00, 0x02]);
const MY_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 56, 10);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 56, 100);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 56, 1);

// Who has 192.168.56.10? Tell 192.168.56.100 (52:54:00:aa:00:01).
static REQUEST_FOR_ME: [u8; 60] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0xaa, 0x00, 0x01, 0x08, 0x06, //
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x52, 0x54, 0x00, 0xaa, 0x00, 0x01, //
    0xc0, 0xa8, 0x38, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0xa8, 0x38, 0x0a, //
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

// 192.168.56.10 is at 02:bc:00:00:00:01, unicast to the requester.
static REPLY_FROM_ME: [u8; 60] = [
    0x52, 0x54, 0x00, 0xaa, 0x00, 0x01, 0x02, 0xbc, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, //
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, 0x02, 0xbc, 0x00, 0x00, 0x00, 0x01, //
    0xc0, 0xa8, 0x38, 0x0a, 0x52, 0x54, 0x00, 0xaa, 0x00, 0x01, 0xc0, 0xa8, 0x38, 0x64, //
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

// Who has 192.168.56.1? Tell 192.168.56.10, broadcast.
static MY_REQUEST: [u8; 60] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0xbc, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, //
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0xbc, 0x00, 0x00, 0x00, 0x01, //
    0xc0, 0xa8, 0x38, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0xa8, 0x38, 0x01, //
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn resolver() -> ArpResolver {
    ArpResolver::new(ArpConfig::new(MY_IP, ME))
}

fn bytes(repr: &ArpFrameRepr) -> Vec<u8> {
    let mut buf = [0u8; 64];
    let len = repr.emit(&mut buf).unwrap();
    buf[..len].to_vec()
}

/// The server's reply to `MY_REQUEST`.
fn server_reply() -> Vec<u8> {
    let request = ArpFrameRepr::parse(&MY_REQUEST).unwrap();
    bytes(&request.reply_to(SERVER).unwrap())
}

fn sent(arp: &mut ArpResolver) -> Vec<(u8, Vec<u8>)> {
    std::iter::from_fn(|| arp.poll_transmit())
        .map(|(side, f)| (side, f.as_slice().to_vec()))
        .collect()
}

#[test]
fn answers_a_request_for_its_address_byte_for_byte() {
    let mut arp = resolver();
    let now = Instant::now();
    assert_eq!(
        arp.handle_frame(now, 1, &REQUEST_FOR_ME),
        ArpEvent::Answered
    );
    assert_eq!(sent(&mut arp), vec![(1, REPLY_FROM_ME.to_vec())]);
    // The requester was learned on the way: no request needed for it.
    assert_eq!(arp.resolve(now, 0, CLIENT_IP), Some(CLIENT));
    assert!(arp.poll_transmit().is_none());
    let c = arp.counters();
    assert_eq!((c.requests_answered, c.requests_sent, c.ignored), (1, 0, 0));
}

#[test]
fn ignores_requests_for_other_addresses() {
    let mut arp = resolver();
    let now = Instant::now();
    let mut other = REQUEST_FOR_ME;
    other[41] = 11; // who has 192.168.56.11?
    assert_eq!(arp.handle_frame(now, 0, &other), ArpEvent::Ignored);
    assert!(arp.poll_transmit().is_none());
    assert!(arp.is_empty(), "nothing learned from a frame not for us");
    assert_eq!(arp.counters().ignored, 1);
}

#[test]
fn resolves_by_request_and_reply() {
    let mut arp = resolver();
    let t0 = Instant::now();
    assert_eq!(arp.resolve(t0, 1, SERVER_IP), None);
    assert_eq!(sent(&mut arp), vec![(1, MY_REQUEST.to_vec())]);
    // One request in flight: asking again sends nothing.
    assert_eq!(arp.resolve(t0, 1, SERVER_IP), None);
    assert!(arp.poll_transmit().is_none());
    assert_eq!(arp.poll_timeout(), Some(t0 + Duration::from_secs(1)));

    let t1 = t0 + Duration::from_millis(300);
    assert_eq!(
        arp.handle_frame(t1, 1, &server_reply()),
        ArpEvent::Learned(SERVER_IP)
    );
    assert_eq!(arp.resolve(t1, 0, SERVER_IP), Some(SERVER));
    assert_eq!(arp.poll_timeout(), Some(t1 + Duration::from_secs(300)));
    arp.handle_timeout(t0 + Duration::from_secs(10));
    assert!(arp.poll_transmit().is_none() && arp.poll_failed().is_none());
    let c = arp.counters();
    assert_eq!((c.requests_sent, c.replies_learned, c.failed), (1, 1, 0));
}

#[test]
fn retries_then_fails() {
    let mut arp = resolver();
    let t0 = Instant::now();
    assert_eq!(arp.resolve(t0, 0, SERVER_IP), None);
    let mut requests = sent(&mut arp).len();
    for s in 1..=3 {
        let t = t0 + Duration::from_secs(s);
        arp.handle_timeout(t - Duration::from_millis(1));
        assert!(arp.poll_transmit().is_none(), "retry {s} not early");
        arp.handle_timeout(t);
        let out = sent(&mut arp);
        assert_eq!(out, vec![(0, MY_REQUEST.to_vec())], "retry {s}");
        requests += out.len();
        assert_eq!(arp.poll_failed(), None);
    }
    arp.handle_timeout(t0 + Duration::from_secs(4));
    assert!(arp.poll_transmit().is_none());
    assert_eq!(arp.poll_failed(), Some(SERVER_IP));
    assert_eq!(arp.poll_failed(), None);
    assert_eq!(arp.poll_timeout(), None);
    assert_eq!((requests, arp.counters().requests_sent), (4, 4));
    assert_eq!(arp.counters().failed, 1);
    // A new resolve starts over.
    assert_eq!(arp.resolve(t0 + Duration::from_secs(5), 0, SERVER_IP), None);
    assert_eq!(sent(&mut arp).len(), 1);
}

#[test]
fn entries_expire() {
    let mut arp = resolver();
    let t0 = Instant::now();
    arp.learn(t0, SERVER_IP, SERVER);
    let almost = t0 + Duration::from_secs(299);
    arp.handle_timeout(almost);
    assert_eq!(arp.resolve(almost, 0, SERVER_IP), Some(SERVER));
    let ttl = t0 + Duration::from_secs(300);
    assert_eq!(arp.poll_timeout(), Some(ttl));
    arp.handle_timeout(ttl);
    assert!(arp.is_empty());
    assert_eq!(arp.counters().expired, 1);
    assert_eq!(arp.resolve(ttl, 0, SERVER_IP), None);
    assert_eq!(sent(&mut arp), vec![(0, MY_REQUEST.to_vec())]);
}

#[test]
fn stale_entry_is_asked_again_even_before_the_timeout_runs() {
    let mut arp = resolver();
    let t0 = Instant::now();
    arp.learn(t0, SERVER_IP, SERVER);
    assert_eq!(
        arp.resolve(t0 + Duration::from_secs(300), 1, SERVER_IP),
        None
    );
    assert_eq!(sent(&mut arp), vec![(1, MY_REQUEST.to_vec())]);
}

#[test]
fn learning_refreshes_and_completes_a_resolution() {
    let mut arp = resolver();
    let t0 = Instant::now();
    assert_eq!(arp.resolve(t0, 0, SERVER_IP), None);
    arp.learn(t0, SERVER_IP, SERVER);
    assert_eq!(arp.resolve(t0, 0, SERVER_IP), Some(SERVER));
    let later = t0 + Duration::from_secs(200);
    arp.learn(later, SERVER_IP, SERVER);
    arp.handle_timeout(t0 + Duration::from_secs(300));
    assert_eq!(
        arp.resolve(later + Duration::from_secs(299), 0, SERVER_IP),
        Some(SERVER)
    );
    assert_eq!(arp.poll_failed(), None);
}

#[test]
fn tagged_request_is_answered_with_the_same_tags() {
    let mut arp = resolver();
    let now = Instant::now();
    let outer = VlanTag {
        tpid: EtherType::QINQ,
        pcp: 3,
        dei: false,
        vid: 100,
    };
    let inner = VlanTag {
        tpid: EtherType::VLAN,
        pcp: 0,
        dei: true,
        vid: 200,
    };
    let mut request = ArpFrameRepr::parse(&REQUEST_FOR_ME).unwrap();
    request.outer_vlan = Some(outer);
    request.inner_vlan = Some(inner);
    assert_eq!(
        arp.handle_frame(now, 0, &bytes(&request)),
        ArpEvent::Answered
    );
    let out = sent(&mut arp);
    assert_eq!(out.len(), 1);
    let (side, reply) = &out[0];
    assert_eq!(*side, 0);
    // 88a8 [PCP 3, VID 100] 8100 [DEI, VID 200] 0806
    let tags = [0x88, 0xa8, 0x60, 0x64, 0x81, 0x00, 0x10, 0xc8, 0x08, 0x06];
    assert_eq!(&reply[..12], &REPLY_FROM_ME[..12]);
    assert_eq!(&reply[12..22], &tags);
    assert_eq!(&reply[22..50], &REPLY_FROM_ME[14..42]);
    assert_eq!(reply.len(), 60);
}

#[test]
fn malformed_and_unusable_frames_are_ignored() {
    let mut arp = resolver();
    let now = Instant::now();
    let mut frames: Vec<Vec<u8>> = (0..42).map(|n| REQUEST_FOR_ME[..n].to_vec()).collect();
    for (at, value) in [
        (13, 0x08), // EtherType ARP -> 0x0808
        (15, 6),    // IEEE 802 hardware
        (19, 16),   // protocol length 16
        (21, 3),    // RARP request
        (6, 0x01),  // group source/sender MAC
        (22, 0x03), // group sender MAC
        (31, 10),   // sender claims our own address
        (38, 0xe0), // who has 224.168.56.10?
    ] {
        let mut f = REQUEST_FOR_ME.to_vec();
        f[at] = value;
        frames.push(f);
    }
    let mut from_me = REQUEST_FOR_ME.to_vec();
    from_me[22..28].copy_from_slice(&ME.0);
    frames.push(from_me);
    // A reply from an unusable address (0.0.0.0) is not learned.
    let mut bad_reply = server_reply();
    bad_reply[28..32].fill(0);
    frames.push(bad_reply);
    for f in &frames {
        assert_eq!(arp.handle_frame(now, 0, f), ArpEvent::Ignored, "{f:02x?}");
    }
    assert!(arp.poll_transmit().is_none());
    assert!(arp.is_empty());
    assert_eq!(arp.counters().ignored, frames.len() as u64);
}

#[test]
fn probe_from_unspecified_is_answered_not_learned() {
    let mut arp = resolver();
    let mut probe = REQUEST_FOR_ME;
    probe[28..32].fill(0); // RFC 5227 probe: sender 0.0.0.0
    assert_eq!(
        arp.handle_frame(Instant::now(), 0, &probe),
        ArpEvent::Answered
    );
    let out = sent(&mut arp);
    let reply = ArpFrameRepr::parse(&out[0].1).unwrap();
    assert_eq!(
        (reply.dst_mac, reply.arp.target_ip),
        (CLIENT, Ipv4Addr::UNSPECIFIED)
    );
    assert!(arp.is_empty());
}

#[test]
fn unresolvable_addresses_fail_at_once() {
    let mut arp = resolver();
    let now = Instant::now();
    for ip in [
        MY_IP,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(239, 1, 1, 1),
    ] {
        assert_eq!(arp.resolve(now, 0, ip), None);
        assert_eq!(arp.poll_failed(), Some(ip));
    }
    assert!(arp.poll_transmit().is_none());
    arp.learn(now, MY_IP, SERVER);
    arp.learn(now, SERVER_IP, MacAddr::BROADCAST);
    assert!(arp.is_empty());
}

#[test]
fn table_is_bounded_oldest_resolved_evicted_pending_never() {
    let mut arp = ArpResolver::new(ArpConfig {
        max_entries: 2,
        ..ArpConfig::new(MY_IP, ME)
    });
    let t0 = Instant::now();
    let ip = |n| Ipv4Addr::new(10, 0, 0, n);
    arp.learn(t0, ip(1), SERVER);
    arp.learn(t0 + Duration::from_secs(1), ip(2), CLIENT);
    arp.learn(t0 + Duration::from_secs(2), ip(3), SERVER);
    assert_eq!(arp.len(), 2);
    assert_eq!(arp.counters().evicted, 1);
    let t = t0 + Duration::from_secs(3);
    assert_eq!(arp.resolve(t, 0, ip(2)), Some(CLIENT));
    assert_eq!(arp.resolve(t, 0, ip(3)), Some(SERVER));

    // Two resolutions in flight evict both resolved entries ...
    assert_eq!(arp.resolve(t, 0, ip(4)), None);
    assert_eq!(arp.resolve(t, 0, ip(5)), None);
    assert_eq!(arp.counters().evicted, 3);
    // ... and then nothing makes room: refused, not evicted.
    arp.learn(t, ip(6), SERVER);
    assert_eq!(arp.counters().refused, 1);
    assert_eq!(arp.resolve(t, 0, ip(7)), None);
    assert_eq!(arp.poll_failed(), Some(ip(7)));
    assert_eq!(arp.len(), 2);
    assert_eq!(sent(&mut arp).len(), 2);
}

#[test]
fn transmit_queue_is_bounded() {
    let mut arp = resolver();
    let now = Instant::now();
    for _ in 0..MAX_QUEUED_TRANSMITS + 5 {
        arp.handle_frame(now, 0, &REQUEST_FOR_ME);
    }
    assert_eq!(arp.counters().tx_dropped, 5);
    assert_eq!(sent(&mut arp).len(), MAX_QUEUED_TRANSMITS);
}

#[test]
fn many_resolutions_time_out_together() {
    let mut arp = ArpResolver::new(ArpConfig {
        max_retries: 0,
        ..ArpConfig::new(MY_IP, ME)
    });
    let t0 = Instant::now();
    for n in 1..=50 {
        assert_eq!(arp.resolve(t0, 0, Ipv4Addr::new(10, 0, 1, n)), None);
    }
    arp.handle_timeout(t0 + Duration::from_secs(1));
    assert_eq!(std::iter::from_fn(|| arp.poll_failed()).count(), 50);
    assert!(arp.is_empty());
    assert_eq!(arp.poll_timeout(), None);
}

/// Addressed mode pins the origin to the server side (issue 13): ARP or a
/// frame claiming the origin's address on the client side is ignored and
/// counted, whatever it says; on the server side it is learned.
#[test]
fn a_pinned_address_is_learned_from_its_own_side_only() {
    let mut cfg = ArpConfig::new(MY_IP, ME);
    cfg.pinned = vec![(SERVER_IP, 1)];
    let mut arp = ArpResolver::new(cfg);
    let t0 = Instant::now();
    assert_eq!(arp.resolve(t0, 1, SERVER_IP), None);
    let (_, request) = arp.poll_transmit().unwrap();
    let request = ArpFrameRepr::parse(request.as_slice()).unwrap();
    // The attacker on the client side answers first, and claims the
    // address in a UDP frame too.
    let forged = request.reply_to(CLIENT).unwrap();
    let mut buf = [0u8; 64];
    let len = forged.emit(&mut buf).unwrap();
    assert_eq!(arp.handle_frame(t0, 0, &buf[..len]), ArpEvent::Ignored);
    arp.learn_from(t0, 0, SERVER_IP, CLIENT);
    assert_eq!(arp.counters().wrong_side, 2);
    assert_eq!(arp.resolve(t0, 1, SERVER_IP), None, "still unresolved");
    // The real server, on the server side.
    let real = request.reply_to(SERVER).unwrap();
    let len = real.emit(&mut buf).unwrap();
    assert_eq!(
        arp.handle_frame(t0, 1, &buf[..len]),
        ArpEvent::Learned(SERVER_IP)
    );
    assert_eq!(arp.resolve(t0, 1, SERVER_IP), Some(SERVER));
    // Other addresses are learned from either side.
    arp.learn_from(t0, 0, Ipv4Addr::new(10, 0, 0, 77), CLIENT);
    assert_eq!(
        arp.resolve(t0, 0, Ipv4Addr::new(10, 0, 0, 77)),
        Some(CLIENT)
    );
    assert_eq!(arp.counters().wrong_side, 2);
}
