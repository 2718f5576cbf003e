//! Reassembly cases, hostile fragments and the bounds, plus property tests:
//! any fragmentation, reordering and duplication of a datagram gives it back
//! exactly; random bytes never panic and never leak buffered memory.

use proptest::prelude::*;

use super::*;

const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);

/// One IPv4 packet: fragment at `offset` bytes with `data`.
fn packet(ident: u16, offset: usize, more: bool, data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; ipv4::MIN_HEADER_LEN + data.len()];
    let mut p = ipv4::Packet::new_unchecked(&mut buf[..]);
    p.set_version_and_header_len(ipv4::MIN_HEADER_LEN);
    p.set_total_len((ipv4::MIN_HEADER_LEN + data.len()) as u16);
    p.set_ident(ident);
    p.set_fragment(false, more, offset as u16);
    p.set_ttl(64);
    p.set_protocol(IpProtocol::UDP);
    p.set_src_addr(SRC);
    p.set_dst_addr(DST);
    p.payload_mut().copy_from_slice(data);
    p.fill_checksum();
    buf
}

/// `payload` cut into fragments of `size` bytes (a multiple of 8).
fn fragments(ident: u16, payload: &[u8], size: usize) -> Vec<Vec<u8>> {
    let n = payload.len().div_ceil(size);
    (0..n)
        .map(|i| {
            let end = ((i + 1) * size).min(payload.len());
            packet(
                ident,
                i * size,
                end < payload.len(),
                &payload[i * size..end],
            )
        })
        .collect()
}

/// A UDP datagram (header with checksum, then `data`) from SRC to DST.
fn udp_datagram(data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; udp::HEADER_LEN + data.len()];
    let repr = UdpRepr {
        src_port: 50000,
        dst_port: 2000,
    };
    repr.emit(
        &mut udp::Packet::new_unchecked(&mut buf[..]),
        &IpAddrs::V4 { src: SRC, dst: DST },
        data,
    );
    buf
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

fn t0() -> Instant {
    Instant::now()
}

fn defrag() -> Defragmenter {
    Defragmenter::new(DefragLimits::default())
}

/// Feeds all packets; returns the completed datagrams.
fn feed(d: &mut Defragmenter, now: Instant, pkts: &[Vec<u8>]) -> Vec<Datagram> {
    pkts.iter()
        .filter_map(|p| match d.handle(now, p) {
            Outcome::Complete(dg) => Some(dg),
            _ => None,
        })
        .collect()
}

#[test]
fn in_order_and_reversed_fragments_reassemble() {
    let payload = udp_datagram(&bytes(8200, 1));
    for reversed in [false, true] {
        let mut d = defrag();
        let mut pkts = fragments(7, &payload, 1480);
        assert_eq!(pkts.len(), 6);
        if reversed {
            pkts.reverse();
        }
        let now = t0();
        for p in &pkts[..pkts.len() - 1] {
            assert_eq!(d.handle(now, p), Outcome::Held);
        }
        let Outcome::Complete(dg) = d.handle(now, pkts.last().unwrap()) else {
            panic!("not complete")
        };
        assert_eq!((dg.src, dg.dst, dg.ident), (SRC, DST, 7));
        assert_eq!(dg.protocol, IpProtocol::UDP);
        assert_eq!(dg.payload, payload);
        let (src, dst, data) = dg.udp().unwrap();
        assert_eq!(src, SocketAddrV4::new(SRC, 50000));
        assert_eq!(dst, SocketAddrV4::new(DST, 2000));
        assert_eq!(data, &bytes(8200, 1)[..]);
        assert_eq!(d.stats().fragments, 6);
        assert_eq!(d.stats().reassembled, 1);
        assert_eq!(d.stats().dropped.total(), 0);
        assert_eq!((d.in_progress(), d.buffered_bytes()), (0, 0));
        assert_eq!(d.poll_timeout(), None);
    }
}

#[test]
fn a_whole_packet_is_not_a_fragment() {
    let mut d = defrag();
    assert_eq!(
        d.handle(t0(), &packet(1, 0, false, b"abcdefgh")),
        Outcome::NotFragment
    );
    assert_eq!(d.stats().fragments, 0);
}

#[test]
fn interleaved_datagrams_are_kept_apart() {
    let a = bytes(3000, 1);
    let b = bytes(3000, 2);
    let fa = fragments(1, &a, 1000);
    let fb = fragments(2, &b, 1000);
    let mut d = defrag();
    let now = t0();
    let mut done = Vec::new();
    for (x, y) in fa.iter().zip(&fb) {
        done.extend(feed(&mut d, now, &[x.clone(), y.clone()]));
    }
    assert_eq!(done.len(), 2);
    assert_eq!((done[0].ident, &done[0].payload), (1, &a));
    assert_eq!((done[1].ident, &done[1].payload), (2, &b));
}

#[test]
fn identical_duplicates_and_overlaps_are_fine() {
    let payload = bytes(64, 3);
    let mut d = defrag();
    let now = t0();
    let pkts = [
        packet(9, 0, true, &payload[..24]),
        packet(9, 0, true, &payload[..24]),    // duplicate
        packet(9, 16, true, &payload[16..40]), // overlaps 16..24, same bytes
        packet(9, 8, true, &payload[8..16]),   // entirely inside
    ];
    for p in &pkts {
        assert_eq!(d.handle(now, p), Outcome::Held);
    }
    let Outcome::Complete(dg) = d.handle(now, &packet(9, 32, false, &payload[32..])) else {
        panic!("not complete")
    };
    assert_eq!(dg.payload, payload);
    assert_eq!(d.stats().dropped.total(), 0);
}

#[test]
fn conflicting_overlap_drops_the_datagram_until_its_timeout() {
    let payload = bytes(48, 4);
    let mut d = defrag();
    let now = t0();
    assert_eq!(
        d.handle(now, &packet(5, 0, true, &payload[..24])),
        Outcome::Held
    );
    let mut forged = payload[16..32].to_vec();
    forged[3] ^= 0xff; // byte 19, already received
    assert_eq!(
        d.handle(now, &packet(5, 16, true, &forged)),
        Outcome::Dropped(DropReason::OverlapConflict)
    );
    // The rest cannot complete it, nor start a new one.
    assert_eq!(
        d.handle(now, &packet(5, 24, true, &payload[24..40])),
        Outcome::Dropped(DropReason::AfterDrop)
    );
    assert_eq!(
        d.handle(now, &packet(5, 40, false, &payload[40..])),
        Outcome::Dropped(DropReason::AfterDrop)
    );
    assert_eq!(d.buffered_bytes(), 0);
    let s = d.stats().dropped;
    assert_eq!(s.get(DropReason::OverlapConflict), 1);
    assert_eq!(s.get(DropReason::AfterDrop), 2);
    // The tombstone goes at its deadline, uncounted; the key is free again.
    let later = now + Duration::from_secs(2);
    assert_eq!(d.poll_timeout(), Some(later));
    d.handle_timeout(later);
    assert_eq!(d.in_progress(), 0);
    assert_eq!(d.stats().dropped.get(DropReason::Timeout), 0);
    let done = feed(&mut d, later, &fragments(5, &payload, 16));
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].payload, payload);
}

#[test]
fn a_conflict_inside_a_later_fragment_is_caught_too() {
    // The new fragment spans a hole and received bytes on both sides of it.
    let payload = bytes(40, 5);
    let mut d = defrag();
    let now = t0();
    assert_eq!(
        d.handle(now, &packet(6, 0, true, &payload[..8])),
        Outcome::Held
    );
    assert_eq!(
        d.handle(now, &packet(6, 16, true, &payload[16..24])),
        Outcome::Held
    );
    let mut forged = payload[..32].to_vec();
    forged[20] ^= 1;
    assert_eq!(
        d.handle(now, &packet(6, 0, true, &forged)),
        Outcome::Dropped(DropReason::OverlapConflict)
    );
}

#[test]
fn disagreeing_lengths_drop_the_datagram() {
    let now = t0();
    let data = bytes(64, 6);
    // Two different last fragments.
    let mut d = defrag();
    assert_eq!(
        d.handle(now, &packet(1, 32, false, &data[..8])),
        Outcome::Held
    );
    assert_eq!(
        d.handle(now, &packet(1, 32, false, &data[..16])),
        Outcome::Dropped(DropReason::LengthConflict)
    );
    // Data past the end the last fragment gave.
    let mut d = defrag();
    assert_eq!(
        d.handle(now, &packet(2, 16, false, &data[..8])),
        Outcome::Held
    );
    assert_eq!(
        d.handle(now, &packet(2, 16, true, &data[..16])),
        Outcome::Dropped(DropReason::LengthConflict)
    );
    // A last fragment ending before data already received.
    let mut d = defrag();
    assert_eq!(
        d.handle(now, &packet(3, 32, true, &data[..16])),
        Outcome::Held
    );
    assert_eq!(
        d.handle(now, &packet(3, 8, false, &data[..8])),
        Outcome::Dropped(DropReason::LengthConflict)
    );
    assert_eq!(d.stats().dropped.get(DropReason::LengthConflict), 1);
}

#[test]
fn malformed_fragments_are_dropped_alone() {
    let now = t0();
    let mut d = defrag();
    assert_eq!(d.handle(now, &packet(1, 0, true, &[0; 16])), Outcome::Held);
    let mut bad_sum = packet(1, 16, false, &[0; 8]);
    bad_sum[10] ^= 1;
    let mut bad_version = packet(1, 16, false, &[0; 8]);
    bad_version[0] = 0x65;
    let hostile = [
        packet(1, 16, true, &[0; 7]), // MF, not a multiple of 8
        packet(1, 16, true, &[]),     // MF, empty
        bad_sum,
        bad_version,
        packet(1, 16, false, &[0; 8])[..27].to_vec(), // truncated
        vec![],
        vec![0x45; 19],
    ];
    for p in &hostile {
        assert_eq!(d.handle(now, p), Outcome::Dropped(DropReason::Malformed));
    }
    assert_eq!(
        d.stats().dropped.get(DropReason::Malformed),
        hostile.len() as u64
    );
    // The datagram itself survived them.
    let done = feed(&mut d, now, &[packet(1, 16, false, &[0; 8])]);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].payload, vec![0; 24]);
}

#[test]
fn fragments_past_65535_bytes_are_refused() {
    let now = t0();
    let mut d = defrag();
    assert_eq!(d.handle(now, &packet(1, 0, true, &[0; 8])), Outcome::Held);
    // Highest offset (8191 × 8) with enough data to pass the limit.
    assert_eq!(
        d.handle(now, &packet(1, 65528, false, &[0; 16])),
        Outcome::Dropped(DropReason::TooLarge)
    );
    assert_eq!(
        d.handle(now, &packet(1, 8, false, &[0; 8])),
        Outcome::Dropped(DropReason::AfterDrop)
    );
    // A fragment ending exactly at the largest payload is fine.
    let mut d = defrag();
    let tail = MAX_PAYLOAD - 65504;
    assert_eq!(
        d.handle(now, &packet(2, 65504, false, &vec![1; tail])),
        Outcome::Held
    );
    assert_eq!(d.stats().dropped.total(), 0);
}

#[test]
fn incomplete_datagrams_time_out() {
    let now = t0();
    let mut d = defrag();
    assert_eq!(d.handle(now, &packet(1, 0, true, &[1; 8])), Outcome::Held);
    let second = now + Duration::from_millis(500);
    assert_eq!(
        d.handle(second, &packet(2, 0, true, &[2; 8])),
        Outcome::Held
    );
    assert!(d.buffered_bytes() >= 16);
    assert_eq!(d.poll_timeout(), Some(now + Duration::from_secs(2)));
    d.handle_timeout(now + Duration::from_millis(1999));
    assert_eq!(d.in_progress(), 2);
    d.handle_timeout(now + Duration::from_secs(2));
    assert_eq!(d.in_progress(), 1);
    assert_eq!(d.poll_timeout(), Some(second + Duration::from_secs(2)));
    assert_eq!(d.stats().dropped.get(DropReason::Timeout), 1);
    // A fragment arriving after the deadline, before the timer ran, does
    // not complete the stale datagram: it starts a new one.
    let late = second + Duration::from_secs(3);
    assert_eq!(d.handle(late, &packet(2, 8, false, &[2; 8])), Outcome::Held);
    assert_eq!(d.stats().dropped.get(DropReason::Timeout), 2);
    d.handle_timeout(late + Duration::from_secs(2));
    assert_eq!((d.in_progress(), d.buffered_bytes()), (0, 0));
    assert_eq!(d.poll_timeout(), None);
}

#[test]
fn too_many_datagrams_evict_the_oldest() {
    let now = t0();
    let mut d = Defragmenter::new(DefragLimits {
        max_datagrams: 2,
        ..DefragLimits::default()
    });
    for ident in 1..=3 {
        assert_eq!(
            d.handle(now, &packet(ident, 0, true, &[0; 8])),
            Outcome::Held
        );
    }
    assert_eq!(d.in_progress(), 2);
    assert_eq!(d.stats().dropped.get(DropReason::Evicted), 1);
    // 1 was evicted: its last fragment alone cannot complete it.
    assert_eq!(d.handle(now, &packet(1, 8, false, &[0; 8])), Outcome::Held);
    assert_eq!(feed(&mut d, now, &[packet(3, 8, false, &[0; 8])]).len(), 1);
}

#[test]
fn the_byte_bound_evicts_the_oldest() {
    let now = t0();
    let mut d = Defragmenter::new(DefragLimits {
        max_buffered_bytes: 0, // raised to one largest datagram
        ..DefragLimits::default()
    });
    assert_eq!(d.limits().max_buffered_bytes, MAX_PAYLOAD);
    assert_eq!(
        d.handle(now, &packet(1, 0, true, &[1; 40000])),
        Outcome::Held
    );
    assert_eq!(
        d.handle(now, &packet(2, 0, true, &[2; 40000])),
        Outcome::Held
    );
    assert_eq!(d.in_progress(), 1);
    assert!(d.buffered_bytes() <= MAX_PAYLOAD);
    assert_eq!(d.stats().dropped.get(DropReason::Evicted), 1);
    let done = feed(&mut d, now, &[packet(2, 40000, false, &[2; 8])]);
    assert_eq!(done[0].payload, vec![2; 40008]);
}

#[test]
fn too_many_fragments_drop_the_datagram() {
    let now = t0();
    let mut d = Defragmenter::new(DefragLimits {
        max_fragments: 4,
        ..DefragLimits::default()
    });
    for _ in 0..4 {
        assert_eq!(d.handle(now, &packet(1, 0, true, &[0; 8])), Outcome::Held);
    }
    assert_eq!(
        d.handle(now, &packet(1, 8, false, &[0; 8])),
        Outcome::Dropped(DropReason::TooManyFragments)
    );
}

#[test]
fn udp_view_verifies_checksum_and_length() {
    let payload = udp_datagram(b"0123456789abcdef");
    let dg = |payload: Vec<u8>| Datagram {
        src: SRC,
        dst: DST,
        protocol: IpProtocol::UDP,
        ident: 1,
        payload,
    };
    assert!(dg(payload.clone()).udp().is_ok());
    let mut corrupt = payload.clone();
    corrupt[20] ^= 0x40;
    assert_eq!(dg(corrupt).udp().unwrap_err(), WireError::BadChecksum);
    let mut longer = payload.clone();
    longer.extend_from_slice(&[0; 8]);
    assert_eq!(dg(longer).udp().unwrap_err(), WireError::BadLength);
    assert_eq!(
        dg(payload[..6].to_vec()).udp().unwrap_err(),
        WireError::Truncated
    );
    let mut other = dg(payload.clone());
    other.src = Ipv4Addr::new(10, 0, 0, 9); // pseudo-header differs
    assert_eq!(other.udp().unwrap_err(), WireError::BadChecksum);
    let mut tcp = dg(payload);
    tcp.protocol = IpProtocol::TCP;
    assert_eq!(tcp.udp().unwrap_err(), WireError::Unsupported);
}

/// A way to fragment one datagram: fragment size (in 8-byte units), order,
/// duplicates and an overlapping second fragmentation.
#[derive(Debug, Clone)]
struct Cut {
    len: usize,
    units: usize,
    other_units: usize,
    overlap_every: usize,
    seed: u64,
}

fn cut() -> impl Strategy<Value = Cut> {
    // Longer than a fragment of either cut: a single piece is no fragment.
    (
        2400usize..20_000,
        1usize..300,
        1usize..300,
        0usize..5,
        any::<u64>(),
    )
        .prop_map(|(len, units, other_units, overlap_every, seed)| Cut {
            len,
            units,
            other_units,
            overlap_every,
            seed,
        })
}

/// xorshift, to shuffle and pick duplicates reproducibly from the seed.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_fragmentation_reassembles_to_the_original(c in cut()) {
        let payload = bytes(c.len, c.seed as u8);
        let mut pkts = fragments(77, &payload, c.units * 8);
        // Duplicates, and fragments of a different cut of the same bytes
        // (overlapping where the cuts differ).
        let other = fragments(77, &payload, c.other_units * 8);
        let mut next = rng(c.seed);
        if c.overlap_every > 0 {
            for (i, p) in other.iter().enumerate() {
                if i % c.overlap_every == 0 {
                    pkts.push(p.clone());
                }
            }
            let n = pkts.len();
            for _ in 0..n / 4 {
                let k = next() as usize % n;
                pkts.push(pkts[k].clone());
            }
        }
        for i in (1..pkts.len()).rev() {
            pkts.swap(i, next() as usize % (i + 1));
        }
        // Tiny fragments of a large datagram exceed the default count bound.
        let mut d = Defragmenter::new(DefragLimits {
            max_fragments: usize::MAX,
            ..DefragLimits::default()
        });
        let now = t0();
        let mut complete = 0;
        for (i, p) in pkts.iter().enumerate() {
            match d.handle(now, p) {
                // Duplicates after completion may well form it once more.
                Outcome::Complete(dg) => {
                    prop_assert_eq!(&dg.payload, &payload);
                    complete += 1;
                }
                Outcome::Held => {}
                other => prop_assert!(false, "fragment {i}: {other:?}"),
            }
        }
        prop_assert!(complete >= 1);
        prop_assert_eq!(d.stats().reassembled, complete);
        prop_assert_eq!(d.stats().dropped.total(), 0);
        d.handle_timeout(now + Duration::from_secs(3));
        prop_assert_eq!((d.in_progress(), d.buffered_bytes()), (0, 0));
    }

    #[test]
    fn random_bytes_never_panic(packets in prop::collection::vec(
        prop::collection::vec(any::<u8>(), 0..120), 0..40)) {
        let mut d = defrag();
        let now = t0();
        for p in &packets {
            let _ = d.handle(now, p);
        }
        d.handle_timeout(now + Duration::from_secs(3));
        prop_assert_eq!((d.in_progress(), d.buffered_bytes()), (0, 0));
    }

    /// Valid headers with random offsets, flags, lengths and contents, all
    /// for a few keys: overlaps, conflicts and bound hits galore.
    #[test]
    fn random_fragments_keep_the_books_straight(frags in prop::collection::vec(
        (0u16..3, 0usize..8192, any::<bool>(), 0usize..200, any::<u8>()), 0..60)) {
        let mut d = Defragmenter::new(DefragLimits {
            max_datagrams: 2,
            max_buffered_bytes: 0,
            max_fragments: 16,
            ..DefragLimits::default()
        });
        let mut now = t0();
        for (ident, offset_units, more, len, fill) in frags {
            let data = vec![fill; len];
            let out = d.handle(now, &packet(ident, offset_units * 8, more, &data));
            if let Outcome::Complete(dg) = out {
                prop_assert!(dg.payload.len() <= MAX_PAYLOAD);
            }
            let parts: usize = d.partials.values().map(|p| p.buf.capacity()).sum();
            prop_assert_eq!(parts, d.buffered_bytes());
            prop_assert!(d.buffered_bytes() <= 2 * MAX_PAYLOAD);
            prop_assert!(d.in_progress() <= 2);
            now += Duration::from_millis(100);
        }
        let s = *d.stats();
        prop_assert!(s.reassembled + s.dropped.total() <= s.fragments);
        d.handle_timeout(now + Duration::from_secs(3));
        prop_assert_eq!((d.in_progress(), d.buffered_bytes()), (0, 0));
    }
}
