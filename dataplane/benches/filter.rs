//! Header filter table (issue 4, part 1; issue 11, part 2): classification
//! + lookup per frame, and the first stage that skips both.
//!
//! `CARGO_TARGET_DIR=... cargo bench -p dataplane --bench filter` runs the
//! criterion groups, then prints a summary measured in the same run: ns/frame
//! for classification alone (the baseline), classify + lookup + hit count
//! with only the static rules, and with 10,000 dynamic rules where 1% of the
//! frames match; the ratio of each to the baseline; the first stage
//! (`Table::may_match`) alone, and the two-stage path (`may_match`, then
//! classify + lookup + hit count only for the frames it passes, as
//! `Table::lookup_frame` does) with its ratio to the baseline and to
//! classify + lookup; and the slow path's cost to install one rule into the
//! 10,000 and publish.
//!
//! The mix is the wire bench's (bench/benches/wire.rs) re-addressed around a
//! configured boot server: 35% TCP, 24% UDP, 15% VLAN UDP, 20% TFTP DATA
//! from a host that is not a boot server, 5% TCP from the boot server (its
//! address passes the server test; it is not UDP), and 1% matching: TFTP
//! DATA (server side) and ACKs (client side) of tracked transfers, each a
//! different rule, so probes land all over the table as they would.
//! The first stage passes only that 1%: the other TFTP host shares the
//! server's last address byte (it passes the lookup's bitmap, not the first
//! stage's exact server set), and the VLAN frames are read behind their tag.
//! Frames are processed in bursts of 32 with one `load()` per burst.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use dataplane::filter::{
    Action, FilterConfig, FilterCounters, FilterReader, FilterWriter, VlanScope,
};
use wire::classify::{classify, Class};
use wire::frame::{EtherType, MacAddr, UdpFrameRepr, VlanTag};

const MIX_LEN: usize = 1024;
const BURST: usize = 32;
const RULES: u32 = 10_000;
/// The rules are untagged, as the mix's transfer frames are.
const U: VlanScope = VlanScope::UNTAGGED;

const SERVER: [u8; 4] = [192, 168, 56, 1];
const OTHER_TFTP: [u8; 4] = [192, 168, 57, 1];
const SERVER_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0xaa, 0, 1]);
const CLIENT_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0xbb, 0, 2]);

fn v4(a: [u8; 4], port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(a), port)
}

fn udp_frame(repr: &UdpFrameRepr, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; repr.buffer_len(payload.len()).max(60)];
    repr.emit(&mut buf, payload).expect("bench frame fits");
    buf
}

/// A bare 60-byte TCP ACK from `src` to `dst`.
fn tcp_64(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&SERVER_MAC.0);
    f.extend_from_slice(&CLIENT_MAC.0);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&[0x45, 0, 0, 40, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&[0x1f, 0x90, 0xc3, 0x50, 0, 0, 0, 1, 0, 0, 0, 1]);
    f.extend_from_slice(&[0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    f.resize(60, 0);
    f
}

fn udp_64() -> Vec<u8> {
    let r = UdpFrameRepr::ipv4(
        CLIENT_MAC,
        SERVER_MAC,
        v4([10, 0, 0, 2], 40000),
        v4([10, 0, 0, 3], 53),
    );
    udp_frame(&r, &[0x55; 18])
}

fn vlan_udp_64() -> Vec<u8> {
    let mut r = UdpFrameRepr::ipv4(
        CLIENT_MAC,
        SERVER_MAC,
        v4([10, 0, 0, 2], 40001),
        v4([10, 0, 0, 3], 514),
    );
    r.outer_vlan = Some(VlanTag {
        tpid: EtherType::VLAN,
        pcp: 0,
        dei: false,
        vid: 100,
    });
    udp_frame(&r, &[0x66; 14])
}

/// TFTP DATA with a 1468-byte block, a full 1514-byte frame.
fn tftp_data(src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    let r = UdpFrameRepr::ipv4(SERVER_MAC, CLIENT_MAC, src, dst);
    let mut payload = vec![0, 3, 0x12, 0x34];
    payload.extend((0..1468u32).map(|i| i as u8));
    udp_frame(&r, &payload)
}

fn tftp_ack(src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    let r = UdpFrameRepr::ipv4(CLIENT_MAC, SERVER_MAC, src, dst);
    udp_frame(&r, &[0, 4, 0x12, 0x34])
}

/// The client and the server's TID of dynamic rule `i`.
fn rule_client(i: u32) -> SocketAddrV4 {
    v4(
        (0x0a00_0000 + i / 4).to_be_bytes(),
        1024 + (i % 4) as u16 * 1000,
    )
}

fn rule_tid(i: u32) -> u16 {
    30000 + (i % 20000) as u16
}

struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// (rx side, frame), shuffled with a fixed seed; `matching` counts the 1%.
fn mix() -> (Vec<(usize, Vec<u8>)>, usize) {
    let mut rng = Xorshift(0x2545_f491_4f6c_dd1d);
    let mut matching = 0;
    let mut frames = Vec::with_capacity(MIX_LEN);
    // Exactly 1% (rounded): spread the matching frames evenly, pick the rest.
    let every = 100;
    for n in 0..MIX_LEN {
        let pick = rng.next() % 99;
        let frame = if n % every == every / 2 {
            matching += 1;
            let i = (rng.next() % u64::from(RULES)) as u32;
            let server = v4(SERVER, rule_tid(i));
            if rng.next().is_multiple_of(2) {
                (1, tftp_data(server, rule_client(i)))
            } else {
                (0, tftp_ack(rule_client(i), server))
            }
        } else {
            match pick {
                0..=34 => (0, tcp_64([10, 0, 0, 2], [10, 0, 0, 3])),
                35..=58 => (0, udp_64()),
                59..=73 => (0, vlan_udp_64()),
                74..=93 => (1, tftp_data(v4(OTHER_TFTP, 50123), v4([10, 0, 0, 2], 2070))),
                _ => (1, tcp_64(SERVER, [10, 0, 0, 2])),
            }
        };
        frames.push(frame);
    }
    (frames, matching)
}

fn config() -> FilterConfig {
    FilterConfig {
        servers: vec![IpAddr::V4(Ipv4Addr::from(SERVER))],
        dscp_mark: Some(42),
        ..FilterConfig::default()
    }
}

fn filled() -> FilterWriter {
    let mut w = FilterWriter::new(&config()).expect("config");
    let server = IpAddr::V4(Ipv4Addr::from(SERVER));
    for i in 0..RULES {
        w.expect(U, server, SocketAddr::V4(rule_client(i)))
            .expect("room");
        // Half the transfers are past their first DATA: pinned.
        if i % 2 == 0 {
            w.pin(
                U,
                SocketAddr::V4(v4(SERVER, rule_tid(i))),
                SocketAddr::V4(rule_client(i)),
            )
            .expect("expected");
        }
    }
    w.publish();
    w
}

/// Per frame: classify, look up, count the hit, as the fast path did
/// before the first stage.
#[inline(never)]
fn run(frames: &[(usize, Vec<u8>)], reader: &mut FilterReader, hits: &mut FilterCounters) -> usize {
    let mut redirected = 0;
    for burst in frames.chunks(BURST) {
        let table = reader.load();
        for (side, f) in burst {
            let c = classify(black_box(f));
            let a = table.lookup(*side, &c);
            hits.record(a);
            redirected += usize::from(a != Action::Forward);
        }
    }
    redirected
}

/// Per frame: the first stage, then classify + look up + count only the
/// frames it passes.
#[inline(never)]
fn two_stage(
    frames: &[(usize, Vec<u8>)],
    reader: &mut FilterReader,
    hits: &mut FilterCounters,
) -> usize {
    let mut redirected = 0;
    for burst in frames.chunks(BURST) {
        let table = reader.load();
        for (side, f) in burst {
            let a = table.lookup_frame(*side, black_box(f));
            hits.record(a);
            redirected += usize::from(a != Action::Forward);
        }
    }
    redirected
}

/// Per frame: the first stage alone; returns how many frames it passes.
#[inline(never)]
fn first_stage_only(frames: &[(usize, Vec<u8>)], reader: &mut FilterReader) -> usize {
    let mut passed = 0;
    for burst in frames.chunks(BURST) {
        let table = reader.load();
        for (side, f) in burst {
            passed += usize::from(table.may_match(*side, black_box(f)));
        }
    }
    passed
}

/// The first stage over bursts of one side's frames, as the bridge runs it
/// ([`Table::may_match_burst`]); returns how many frames it passes.
#[inline(never)]
fn first_stage_bursts(by_side: &[Vec<Vec<u8>>; 2], reader: &mut FilterReader) -> usize {
    let mut passed = 0;
    for (side, frames) in by_side.iter().enumerate() {
        for burst in frames.chunks(BURST) {
            let table = reader.load();
            let mask = table.may_match_burst(side, black_box(burst), |f| f.as_slice());
            passed += mask.count_ones() as usize;
        }
    }
    passed
}

#[inline(never)]
fn classify_only(frames: &[(usize, Vec<u8>)]) {
    for (_, f) in frames {
        black_box(classify(black_box(f)));
    }
}

#[inline(never)]
fn lookup_only(classes: &[(usize, Class)], reader: &mut FilterReader) -> usize {
    let mut redirected = 0;
    for burst in classes.chunks(BURST) {
        let table = reader.load();
        for (side, c) in burst {
            redirected += usize::from(table.lookup(*side, black_box(c)) != Action::Forward);
        }
    }
    redirected
}

/// Best of several timed passes, in ns per call of `f` per frame.
fn ns_per_frame(frames: usize, mut f: impl FnMut()) -> f64 {
    // ~2 million frames per pass whatever the set size.
    let passes = (2_000_000 / frames).max(1);
    f();
    (0..9)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..passes {
                f();
            }
            start.elapsed().as_secs_f64() * 1e9 / (passes * frames) as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let (frames, matching) = mix();
    let classes: Vec<(usize, Class)> = frames.iter().map(|(s, f)| (*s, classify(f))).collect();
    let empty = FilterWriter::new(&config()).expect("config");
    let full = filled();
    let mut hits = FilterCounters::new(full.rule_count());
    {
        let mut r = full.reader();
        let got = run(&frames, &mut r, &mut hits);
        assert_eq!(got, matching, "every matching frame matches, nothing else");
        assert_eq!(run(&frames, &mut empty.reader(), &mut hits), 0);
        assert_eq!(two_stage(&frames, &mut r, &mut hits), matching);
        assert_eq!(two_stage(&frames, &mut empty.reader(), &mut hits), 0);
        for w in [&empty, &full] {
            for (side, f) in &frames {
                let t = w.table();
                assert_eq!(t.lookup_frame(*side, f), t.lookup(*side, &classify(f)));
            }
        }
    }

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut g = c.benchmark_group("filter");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function("baseline_classify_mix", |b| {
        b.iter(|| classify_only(&frames))
    });
    for (name, w) in [("static_rules", &empty), ("10k_dynamic_1pct_match", &full)] {
        let mut r = w.reader();
        g.bench_function(format!("classify_lookup_{name}"), |b| {
            b.iter(|| run(&frames, &mut r, &mut hits))
        });
        let mut r = w.reader();
        g.bench_function(format!("lookup_only_{name}"), |b| {
            b.iter(|| lookup_only(&classes, &mut r))
        });
        let mut r = w.reader();
        g.bench_function(format!("first_stage_only_{name}"), |b| {
            b.iter(|| first_stage_only(&frames, &mut r))
        });
        let mut r = w.reader();
        g.bench_function(format!("two_stage_{name}"), |b| {
            b.iter(|| two_stage(&frames, &mut r, &mut hits))
        });
    }
    g.finish();
    c.final_summary();

    // `cargo bench` passes --bench; `cargo test --benches` does not.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n = frames.len();
    let base = ns_per_frame(n, || classify_only(&frames));
    let mut r_empty = empty.reader();
    let mut r_full = full.reader();
    let stat = ns_per_frame(n, || {
        black_box(run(&frames, &mut r_empty, &mut hits));
    });
    let dynm = ns_per_frame(n, || {
        black_box(run(&frames, &mut r_full, &mut hits));
    });
    let passed = first_stage_only(&frames, &mut r_full);
    let pre = ns_per_frame(n, || {
        black_box(first_stage_only(&frames, &mut r_full));
    });
    let by_side: [Vec<Vec<u8>>; 2] = [0, 1].map(|side| {
        frames
            .iter()
            .filter(|(s, _)| *s == side)
            .map(|(_, f)| f.clone())
            .collect()
    });
    let passed_bursts = first_stage_bursts(&by_side, &mut r_full);
    assert_eq!(
        passed_bursts, passed,
        "the burst form passes the same frames"
    );
    let pre_bursts = ns_per_frame(n, || {
        black_box(first_stage_bursts(&by_side, &mut r_full));
    });
    let two_stat = ns_per_frame(n, || {
        black_box(two_stage(&frames, &mut r_empty, &mut hits));
    });
    let two_dyn = ns_per_frame(n, || {
        black_box(two_stage(&frames, &mut r_full, &mut hits));
    });
    let l_stat = ns_per_frame(n, || {
        black_box(lookup_only(&classes, &mut r_empty));
    });
    let l_dyn = ns_per_frame(n, || {
        black_box(lookup_only(&classes, &mut r_full));
    });
    // Matching frames only: the cost of a probe that hits.
    let hits_only: Vec<(usize, Class)> = classes
        .iter()
        .filter(|(s, c)| full.table().lookup(*s, c) != Action::Forward)
        .copied()
        .collect();
    let l_hit = ns_per_frame(hits_only.len(), || {
        black_box(lookup_only(&hits_only, &mut r_full));
    });
    // Matching frames spread over all the rules, as 10,000 live transfers
    // would send them: each probe touches another part of the ~1 MiB table.
    let spread: Vec<(usize, Class)> = (0..RULES)
        .map(|i| {
            let f = tftp_data(v4(SERVER, rule_tid(i)), rule_client(i));
            (1, classify(&f))
        })
        .collect();
    let l_spread = ns_per_frame(spread.len(), || {
        black_box(lookup_only(&spread, &mut r_full));
    });
    // Slow path: one expectation installed into 10,000 and published, then removed.
    let mut w = filled();
    let server = IpAddr::V4(Ipv4Addr::from(SERVER));
    let publish_us = {
        let reps = 2000u32;
        let start = Instant::now();
        for i in 0..reps {
            let client = SocketAddr::from(([172, 16, 0, 1], 1000 + i as u16));
            w.expect(U, server, client).expect("room");
            w.publish();
            w.remove(U, server, client);
            w.publish();
        }
        start.elapsed().as_secs_f64() * 1e6 / f64::from(2 * reps)
    };

    println!();
    println!(
        "== filter summary (best of 9 passes of {n} frames, {matching} matching, bursts of {BURST}) =="
    );
    println!("baseline: classify alone              {base:6.2} ns/frame");
    println!(
        "classify+lookup, static rules only    {stat:6.2} ns/frame  ratio {:.2}x  (+{:.2} ns)",
        stat / base,
        stat - base
    );
    println!(
        "classify+lookup, {RULES} dynamic, 1%   {dynm:6.2} ns/frame  ratio {:.2}x  (+{:.2} ns)",
        dynm / base,
        dynm - base
    );
    println!(
        "first stage alone (may_match)         {pre:6.2} ns/frame  passes {passed} of {n} frames"
    );
    println!(
        "first stage, bursts (may_match_burst) {pre_bursts:6.2} ns/frame  ({:.2}x of one by one)",
        pre_bursts / pre
    );
    println!(
        "two-stage, static rules only          {two_stat:6.2} ns/frame  ratio {:.2}x  ({:.2}x of classify+lookup)",
        two_stat / base,
        two_stat / stat
    );
    println!(
        "two-stage, {RULES} dynamic, 1%         {two_dyn:6.2} ns/frame  ratio {:.2}x  ({:.2}x of classify+lookup)",
        two_dyn / base,
        two_dyn / dynm
    );
    println!("lookup alone, static rules only       {l_stat:6.2} ns/frame");
    println!("lookup alone, {RULES} dynamic         {l_dyn:6.2} ns/frame");
    println!("lookup of a matching frame (probe)    {l_hit:6.2} ns/frame");
    println!("same, spread over all {RULES} rules    {l_spread:6.2} ns/frame");
    println!("expect or remove + publish into {RULES}: {publish_us:.2} us");
}
