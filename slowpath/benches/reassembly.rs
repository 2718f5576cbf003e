//! Slow-path throughput of TFTP payload (issue 4 target: >= 1 GB/s on one core).
//!
//! `cargo bench -p slowpath --bench reassembly` measures, per block size:
//!
//! - `sha256`: the bare hash over the same bytes (SHA-NI when the CPU has it;
//!   the `sha2` crate picks it at run time), the ceiling for the rest;
//! - `reassembly`: [`Reassembly::insert`] of every block in order into a
//!   temporary file, plus `finish` (flush, size check, fsync);
//! - `insert_no_fsync`: the same without `finish` (the data stays in the
//!   page cache; durability is the disk's cost, not the CPU's);
//! - `frames`: whole Ethernet/IPv4/UDP frame copies through
//!   [`CacheLogic::handle_frame`] (classify, UDP checksum check, TFTP
//!   parse, tracking, reassembly, hash, publish with fsync and index write).
//! - `frames_no_publish`: the same minus the last block, so without the
//!   publish: the per-frame CPU cost.
//!
//! Throughput is TFTP payload bytes per second.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput};
use sha2::{Digest, Sha256};
use slowpath::limits::Limits;
use slowpath::reassembly::Reassembly;
use slowpath::CacheLogic;
use wire::frame::{MacAddr, UdpFrameRepr};
use wire::tftp::{Options, Packet, Request};

const FILE_LEN: usize = 32 << 20;
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

fn content() -> Vec<u8> {
    (0..FILE_LEN).map(|i| (i ^ (i >> 11)) as u8).collect()
}

fn frame(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let repr = UdpFrameRepr::ipv4(
        MacAddr([2, 0, 0, 0, 0, 1]),
        MacAddr([2, 0, 0, 0, 0, 2]),
        src,
        dst,
    );
    let mut buf = vec![0u8; repr.buffer_len(payload.len())];
    let n = repr.emit(&mut buf, payload).expect("frame fits");
    buf.truncate(n);
    buf
}

/// The frames of one windowed transfer (window 16) of `data` with `blksize`.
fn transfer_frames(data: &[u8], blksize: u16) -> Vec<(bool, Vec<u8>)> {
    let client = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 2), 2001);
    let server = SocketAddrV4::new(SERVER, 40000);
    let mut o = Options::default();
    o.blksize = Some(blksize);
    o.windowsize = Some(16);
    o.tsize = Some(0);
    let rrq = Packet::Rrq(Request {
        filename: b"bench.img",
        mode: wire::tftp::Mode::OCTET,
        options: o.clone(),
    });
    let mut out = vec![(
        true,
        frame(
            client,
            SocketAddrV4::new(SERVER, 69),
            &rrq.to_vec().unwrap(),
        ),
    )];
    o.tsize = Some(data.len() as u64);
    out.push((
        false,
        frame(server, client, &Packet::Oack(o).to_vec().unwrap()),
    ));
    let ack = |b: u16| frame(client, server, &Packet::Ack { block: b }.to_vec().unwrap());
    out.push((true, ack(0)));
    let bs = usize::from(blksize);
    let n = data.len() / bs + 1;
    for i in 1..=n {
        let payload = &data[(i - 1) * bs..(i * bs).min(data.len())];
        let p = Packet::Data {
            block: i as u16,
            payload,
        }
        .to_vec()
        .unwrap();
        out.push((false, frame(server, client, &p)));
        if i % 16 == 0 || i == n {
            out.push((true, ack(i as u16)));
        }
    }
    out
}

fn benches(c: &mut Criterion) {
    let data = content();
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("slowpath");
    g.throughput(Throughput::Bytes(FILE_LEN as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));

    g.bench_function("sha256", |b| {
        b.iter(|| black_box(Sha256::digest(black_box(&data))))
    });

    for blksize in [1428u16, 8192] {
        let mut n = 0u64;
        g.bench_with_input(
            BenchmarkId::new("reassembly", blksize),
            &blksize,
            |b, &bs| {
                b.iter(|| {
                    n += 1;
                    let path = dir.path().join(format!("r{n}"));
                    let mut r =
                        Reassembly::create(path, bs, Some(FILE_LEN as u64), u64::MAX).unwrap();
                    let mut chunks: Vec<&[u8]> = data.chunks(usize::from(bs)).collect();
                    if data.len().is_multiple_of(usize::from(bs)) {
                        chunks.push(&[]);
                    }
                    for (i, ch) in chunks.iter().enumerate() {
                        r.insert(i as u64 + 1, ch).unwrap();
                    }
                    black_box(r.finish().unwrap().sha256)
                })
            },
        );

        g.bench_with_input(
            BenchmarkId::new("insert_no_fsync", blksize),
            &blksize,
            |b, &bs| {
                b.iter(|| {
                    n += 1;
                    let path = dir.path().join(format!("r{n}"));
                    let mut r =
                        Reassembly::create(path, bs, Some(FILE_LEN as u64), u64::MAX).unwrap();
                    for (i, ch) in data.chunks(usize::from(bs)).enumerate() {
                        r.insert(i as u64 + 1, ch).unwrap();
                    }
                    r.insert((FILE_LEN / usize::from(bs)) as u64 + 1, &[]).ok();
                    black_box(r.is_complete())
                })
            },
        );

        let frames = transfer_frames(&data, blksize);
        g.bench_with_input(BenchmarkId::new("frames", blksize), &frames, |b, frames| {
            b.iter(|| {
                let cache = tempfile::tempdir().unwrap();
                let mut logic =
                    CacheLogic::new(cache.path(), Limits::default(), vec![SERVER]).unwrap();
                let now = Instant::now();
                let wall = SystemTime::now();
                for (from_client, f) in frames {
                    logic.handle_frame(now, wall, *from_client, f);
                }
                assert_eq!(logic.counters().files_cached, 1);
            })
        });
        // Everything but the last DATA and ACK: the per-frame CPU cost without
        // the publish (fsync of the file, index write).
        let most = &frames[..frames.len() - 2];
        g.bench_with_input(
            BenchmarkId::new("frames_no_publish", blksize),
            most,
            |b, frames| {
                let cache = tempfile::tempdir().unwrap();
                b.iter(|| {
                    let mut logic =
                        CacheLogic::new(cache.path(), Limits::default(), vec![SERVER]).unwrap();
                    let now = Instant::now();
                    let wall = SystemTime::now();
                    for (from_client, f) in frames {
                        logic.handle_frame(now, wall, *from_client, f);
                    }
                    assert_eq!(logic.active_transfers(), 1);
                })
            },
        );
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
