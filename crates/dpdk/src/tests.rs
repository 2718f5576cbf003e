//! In-process tests: one EAL per test binary (`--no-huge`, net_ring loopback ports).

use std::sync::{Mutex, OnceLock};

use crate::{Burst, Eal, Error, Mbuf, Mempool, Port, PortConfig, BURST_SIZE};

struct Env {
    pool: Mempool,
    ports: Vec<Port>,
}

/// Ports and pool counts are shared process state: tests that check them serialise.
static SERIAL: Mutex<()> = Mutex::new(());

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let prefix = format!("dpdk-unit-{}", std::process::id());
        let args = [
            "dpdk-unit-tests",
            "--no-huge",
            "-m",
            "256",
            "--no-shconf",
            "--no-pci",
            "--no-telemetry",
            "--log-level",
            "error",
            "--file-prefix",
            &prefix,
            // A net_ring port loops every transmitted frame back to its own rx.
            "--vdev",
            "net_ring0",
            "--vdev",
            "net_ring1",
            "--",
            "app-arg",
        ];
        let ea = Eal::init(args).expect("EAL init");
        assert_eq!(
            ea.app_args,
            vec!["dpdk-unit-tests".to_string(), "app-arg".to_string()]
        );
        let _eal = ea.eal; // never cleaned up: the EAL lives as long as the test process
        let pool = Mempool::create("unit_pool", 4095, 0, 2048 + 128, -1).expect("pool");
        let ports = (0..Port::count())
            .map(|i| {
                let p = Port::new(i).unwrap();
                p.configure(&PortConfig::default(), &pool).unwrap();
                p.start().unwrap();
                p
            })
            .collect();
        Env { pool, ports }
    })
}

#[test]
fn second_init_is_an_error() {
    env();
    assert!(matches!(
        Eal::init(["again", "--no-huge"]),
        Err(Error::AlreadyInitialised)
    ));
}

#[test]
fn mbuf_bytes_refcount_and_free() {
    let e = env();
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let before = e.pool.in_use();
    let frame: Vec<u8> = (0..200u8).collect();
    let mut m = Mbuf::from_bytes(&e.pool, &frame).unwrap();
    assert_eq!(m.data(), &frame[..]);
    assert_eq!(m.pkt_len(), 200);
    assert_eq!(m.refcount(), 1);
    m.data_mut().unwrap()[0] = 0xff;
    let shared = m.share();
    assert_eq!(m.refcount(), 2);
    assert!(m.data_mut().is_none(), "shared data must not be writable");
    assert_eq!(shared.data()[0], 0xff);
    drop(shared);
    assert_eq!(m.refcount(), 1);
    assert!(e.pool.in_use() > before);
    drop(m);
    assert_eq!(e.pool.in_use(), before);
}

#[test]
fn copy_source_takes_a_buffer_ahead_and_resets_it_for_each_copy() {
    let e = env();
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    static COPIES: OnceLock<Mempool> = OnceLock::new();
    let pool =
        *COPIES.get_or_init(|| Mempool::create("unit_copy_src", 7, 0, 256 + 128, -1).unwrap());
    let mut src = crate::CopySource::new(pool);
    assert_eq!(pool.in_use(), 0, "nothing taken before the first copy");
    let a: Vec<u8> = (0..200u32).map(|i| (i * 3 + 1) as u8).collect();
    let b: Vec<u8> = (0..60u32).map(|i| (i * 5 + 2) as u8).collect();
    let ma = Mbuf::from_bytes(&e.pool, &a).unwrap();
    let mb = Mbuf::from_bytes(&e.pool, &b).unwrap();
    let ca = src.copy(&ma).expect("a copy");
    crate::store_fence();
    assert_eq!(ca.data(), &a[..]);
    assert_eq!((ca.pkt_len(), ca.segments(), ca.refcount()), (200, 1, 1));
    assert_eq!(ma.refcount(), 1, "a copy, not a clone of the original");
    assert_eq!(pool.in_use(), 2, "the copy and the buffer taken ahead");
    // The buffer taken ahead, used once and given back, comes round again:
    // its old length and data offset must not survive the reset.
    drop(ca);
    for _ in 0..10 {
        let c = src.copy(&mb).expect("a copy");
        crate::store_fence();
        assert_eq!(c.data(), &b[..]);
        assert_eq!(c.pkt_len(), 60);
        drop(c);
        assert_eq!(pool.in_use(), 1);
    }
    // Longer than the pool's buffers: no copy, the buffer goes back.
    let big = Mbuf::from_bytes(&e.pool, &[7u8; 300]).unwrap();
    assert!(src.copy(&big).is_none());
    // Until the pool is empty: 7 copies at most (the last one without a
    // buffer ahead), then none.
    let held: Vec<Mbuf> = (0..8).filter_map(|_| src.copy(&ma)).collect();
    assert_eq!(held.len(), 7);
    assert!(src.copy(&ma).is_none());
    assert!(held.iter().all(|c| c.data() == &a[..]));
    drop(held);
    drop(src);
    assert_eq!(
        pool.in_use(),
        0,
        "dropping the source gives its buffer back"
    );
}

#[test]
fn copy_streaming_copies_every_length_and_alignment() {
    let src: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
    for off in 0..17 {
        for len in [0, 1, 15, 16, 17, 31, 64, 65, 127, 200, 255] {
            let mut dst = vec![0xeeu8; 300];
            crate::copy_streaming(&mut dst[off..off + len], &src[..len]);
            crate::store_fence();
            assert_eq!(&dst[off..off + len], &src[..len], "off {off} len {len}");
            assert!(dst[..off].iter().all(|&b| b == 0xee), "off {off} len {len}");
            assert!(
                dst[off + len..].iter().all(|&b| b == 0xee),
                "off {off} len {len}"
            );
        }
    }
    // The shorter side decides.
    let mut short = [0u8; 5];
    crate::copy_streaming(&mut short, &src);
    assert_eq!(short, src[..5]);
}

#[test]
fn oversize_frame_is_refused() {
    let e = env();
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let big = vec![0u8; 5000];
    assert!(Mbuf::from_bytes(&e.pool, &big).is_err());
}

#[test]
fn burst_push_full_and_drop_frees() {
    let e = env();
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let before = e.pool.in_use();
    let mut b = Burst::new();
    for i in 0..BURST_SIZE {
        b.push(Mbuf::from_bytes(&e.pool, &[i as u8; 60]).unwrap())
            .unwrap();
    }
    assert!(b.is_full());
    let extra = Mbuf::from_bytes(&e.pool, &[1; 60]).unwrap();
    assert!(b.push(extra).is_err(), "a full burst gives the mbuf back");
    assert_eq!(b.as_slice()[5].data()[0], 5);
    drop(b);
    assert_eq!(e.pool.in_use(), before);
}

#[test]
fn ring_port_loops_frames_back_in_order() {
    let e = env();
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let port = e.ports[0];
    assert!(port.link().unwrap().up);
    let before = port.stats().unwrap();
    let mut tx = Burst::new();
    for i in 0..10u8 {
        let mut f = vec![i; 64];
        f[0] = 0x02;
        tx.push(Mbuf::from_bytes(&e.pool, &f).unwrap()).unwrap();
    }
    assert_eq!(port.tx_burst(0, &mut tx), 10);
    assert!(tx.is_empty());
    let mut rx = Burst::new();
    assert_eq!(port.rx_burst(0, &mut rx), 10);
    for (i, m) in rx.as_slice().iter().enumerate() {
        assert_eq!(m.data()[1], i as u8);
    }
    let after = port.stats().unwrap();
    assert_eq!(after.tx_packets - before.tx_packets, 10);
    assert_eq!(after.rx_packets - before.rx_packets, 10);
}

#[test]
fn unknown_port_and_worker_are_errors() {
    env();
    assert!(matches!(Port::new(77), Err(Error::NoSuchPort(77, _))));
    assert!(matches!(
        crate::lcore::launch(99, || 0),
        Err(Error::NotAWorker(99))
    ));
}

#[test]
fn error_carries_rte_strerror_text() {
    let e = Error::rte("doing x", -22);
    assert_eq!(e.to_string(), "doing x: Invalid argument");
}

#[test]
fn extract_from_moves_selected_mbufs_and_keeps_order() {
    let e = env();
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let before = e.pool.in_use();
    let mut b = Burst::new();
    for i in 0..10u8 {
        b.push(Mbuf::from_bytes(&e.pool, &[i; 60]).unwrap())
            .unwrap();
    }
    let mut taken = Vec::new();
    // From index 2 on, take the even ones.
    b.extract_from(
        2,
        |m, _next| m.data()[0] % 2 == 0,
        |m| taken.push(m.data()[0]),
    );
    let kept: Vec<u8> = b.as_slice().iter().map(|m| m.data()[0]).collect();
    assert_eq!(kept, vec![0, 1, 3, 5, 7, 9]);
    assert_eq!(taken, vec![2, 4, 6, 8]);
    drop(b);
    assert_eq!(
        e.pool.in_use(),
        before,
        "extracted mbufs were freed by the sink's drop"
    );
}
