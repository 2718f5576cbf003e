//! The header filter's first stage (`Table::may_match`) against the full
//! classification + lookup: the input is one configuration byte, then a
//! frame. For every side, `may_match` false must mean `lookup(classify)`
//! is `Forward`, `lookup_frame` must equal `lookup(classify)`, and neither
//! may allocate.
//!
//! The burst form (`may_match_burst`, AVX2 eight frames a step where the
//! CPU has it, and `may_match_burst_sse2`) over a burst of the frame's
//! suffixes (from byte 0, 1, 2, ...; as many as the frame's length modulo
//! 33, so every burst length and remainder comes up, short frames
//! included) must answer for each frame what `may_match` does, without
//! allocating.
//!
//! The configuration byte picks a table (built once per value): boot
//! servers (one, or six: more than the first stage's exact set), as IPv4
//! or IPv4-mapped IPv6, the DSCP mark, addressed mode's own address, copied
//! server UDP, dynamic rules (one for a learned server; untagged and on
//! VLAN 100), pinned or not.
//! Its addresses are those of the seeds' captures (10.77.0.0/16).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;

use dataplane::filter::{Action, FilterConfig, FilterWriter, VlanScope};
use libfuzzer_sys::fuzz_target;
use wire::classify::classify;

#[path = "alloc_cap.rs"]
mod alloc_cap;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const OWN: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
const LEARNED: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 9);

static TABLES: [OnceLock<FilterWriter>; 256] = [const { OnceLock::new() }; 256];

fn build(bits: u8) -> FilterWriter {
    let on = |b: u8| bits & (1 << b) != 0;
    let as_config = |a: Ipv4Addr| {
        if on(7) {
            IpAddr::V6(a.to_ipv6_mapped())
        } else {
            IpAddr::V4(a)
        }
    };
    let mut servers = Vec::new();
    if on(0) {
        servers.push(as_config(SERVER));
    }
    if on(1) {
        servers.extend((1..=5).map(|i| as_config(Ipv4Addr::new(10, 77, 1, i))));
    }
    let mut w = FilterWriter::new(&FilterConfig {
        servers,
        dscp_mark: on(2).then_some(48),
        max_dynamic: 8,
        copy_server_udp: on(4),
        own_address: on(3).then_some(OWN),
    })
    .expect("valid configuration");
    if on(5) {
        // Untagged and on VLAN 100, so that tagged frames (a 4-byte tag
        // libFuzzer finds by comparison) reach dynamic rules too.
        for scope in [VlanScope::UNTAGGED, VlanScope::new(Some(100), None)] {
            for (server, port) in [(SERVER, 55643), (LEARNED, 2070)] {
                let client = SocketAddr::from((CLIENT, port));
                w.expect(scope, IpAddr::V4(server), client).expect("room");
                if on(6) {
                    w.pin(scope, SocketAddr::from((server, 58535)), client)
                        .expect("expected");
                }
            }
        }
    }
    w.publish();
    w
}

fuzz_target!(|data: &[u8]| {
    let Some((&bits, frame)) = data.split_first() else {
        return;
    };
    let table = TABLES[usize::from(bits)]
        .get_or_init(|| build(bits))
        .table();
    let class = classify(frame);
    for side in 0..3 {
        let full = table.lookup(side, &class);
        let (may, two) = alloc_cap::capped(0, || {
            (
                table.may_match(side, frame),
                table.lookup_frame(side, frame),
            )
        });
        assert!(
            may || full == Action::Forward,
            "first stage missed {full:?} on side {side}"
        );
        assert_eq!(two, full, "two stages disagree on side {side}");
    }
    let suffixes: [&[u8]; 32] = std::array::from_fn(|i| frame.get(i..).unwrap_or_default());
    let burst = suffixes.get(..frame.len() % 33).unwrap_or(&suffixes);
    for side in 0..3 {
        let (avx2, sse2) = alloc_cap::capped(0, || {
            (
                table.may_match_burst(side, burst, |f| *f),
                table.may_match_burst_sse2(side, burst, |f| *f),
            )
        });
        assert_eq!(avx2, sse2, "burst forms disagree on side {side}");
        for (i, f) in burst.iter().enumerate() {
            let one = table.may_match(side, f);
            assert_eq!(avx2 >> i & 1 != 0, one, "burst bit {i} on side {side}");
        }
        // A full burst (32) has no bit past it (and `>> 32` would overflow).
        let past = avx2.checked_shr(burst.len() as u32).unwrap_or(0);
        assert_eq!(past, 0, "bits past the burst on side {side}");
    }
});
