//! What persistence costs the thread that calls the cache (the slow-path
//! worker, which also serves clients): the time each call takes on that
//! thread, for publishing files (the reassembly's finish and
//! `Filestore::publish`) into a cache of a few hundred entries, and for
//! persisting an image map of 10,000 clients after 100 of them changed.
//! The cache is in a temporary directory under `$TMPDIR` (put it on the
//! disk you care about; tmpfs makes fsync free).
//!
//!   cargo run --release -p slowpath --example serving_thread_cost

use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime};

use slowpath::reassembly::Reassembly;
use slowpath::{Filestore, ImageMap, Limits};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// Publishes `len` bytes as `name`; the time of the reassembly's finish
/// and the publish (the blocks' writes are not timed: they are the same
/// whatever persists them).
fn publish(store: &mut Filestore, name: &str, seed: u8, len: usize) -> Duration {
    let path = store.tmp_dir().join(name.replace('/', "_"));
    let mut r = Reassembly::create(path, 1428, None, u64::MAX).unwrap();
    let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed)).collect();
    let mut chunks: Vec<&[u8]> = data.chunks(1428).collect();
    if len.is_multiple_of(1428) {
        chunks.push(&[]);
    }
    for (i, c) in chunks.iter().enumerate() {
        r.insert(i as u64 + 1, c).unwrap();
    }
    let t1 = Instant::now();
    let done = r.finish().unwrap();
    store
        .publish(
            SystemTime::now(),
            (wire::frame::VlanScope::UNTAGGED, SERVER),
            name,
            done.file,
            done.size,
            done.sha256,
        )
        .unwrap();
    t1.elapsed()
}

fn summary(what: &str, mut v: Vec<Duration>) {
    v.sort();
    let q = |p: f64| v[((v.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
    println!(
        "{what}: n={} p50 {:.1} us p99 {:.1} us max {:.1} us",
        v.len(),
        q(0.5),
        q(0.99),
        q(1.0)
    );
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Filestore::open(dir.path()).unwrap();
    for i in 0..300 {
        publish(&mut store, &format!("warm/{i}"), 3, 4096);
    }
    settle(&mut store);
    let times = (0..200)
        .map(|i| publish(&mut store, &format!("burst/{i}"), 7, 64 << 10))
        .collect();
    summary("publish of a 64 KiB file, 300-500 entries", times);
    settle(&mut store);

    let mut map = ImageMap::new(dir.path(), Limits::default());
    let wall = SystemTime::now();
    for i in 0..10_000u32 {
        let ip = Ipv4Addr::from(0x0a01_0000 + i);
        map.record_file(wall, ip, None, SERVER, "ipxe.efi");
    }
    attach(&mut map, &store);
    let mut times = Vec::new();
    for round in 0..20u32 {
        for i in 0..100u32 {
            let ip = Ipv4Addr::from(0x0a01_0000 + round * 100 + i);
            map.record_file(wall, ip, None, SERVER, "vmlinuz");
        }
        let t = Instant::now();
        persist(&mut map);
        times.push(t.elapsed());
    }
    summary("image map of 10,000 clients, 100 changed, persisted", times);
    settle(&mut store);
}

// The two versions differ here only.
fn settle(store: &mut Filestore) {
    store.sync();
}

fn attach(map: &mut ImageMap, store: &Filestore) {
    map.attach(store.writer());
}

fn persist(map: &mut ImageMap) {
    map.persist().unwrap();
}
