//! bootcache as a separate process between two virtio-user ports, driven by
//! the harness (vhost-user ports in this test process).

use std::process::Command;
use std::time::Duration;

use bootcache_testbed::frames::{malformed_frames, test_frame};
use bootcache_testbed::harness::{shared, Harness, TransferReport};
use bootcache_testbed::process::{Bootcache, Finished};

const BOOTCACHE: &str = env!("CARGO_BIN_EXE_bootcache");
/// Frames in flight at most: below the 1024-descriptor rings, so a bridge that
/// keeps up never has to drop.
const WINDOW: u64 = 512;

/// Starts bootcache on the harness's sockets and waits for both links.
fn start_bootcache(h: &Harness, tag: &str, args: &[&str]) -> Bootcache {
    let prefix = format!("bct-{tag}-{}", std::process::id());
    // No caching configured, but the slow path keeps its image map somewhere of ours.
    let cache = std::env::temp_dir().join(format!("bootcache-test-{}-cache", std::process::id()));
    let mut all = vec!["--cache-dir", cache.to_str().unwrap()];
    all.extend_from_slice(args);
    h.start_bootcache(BOOTCACHE.as_ref(), &prefix, &all)
        .unwrap()
}

fn stop(h: &Harness, bc: Bootcache) -> Finished {
    h.stop_bootcache(bc).unwrap()
}

fn assert_all_crossed(what: &str, r: &TransferReport) {
    assert_eq!(
        r.received,
        r.sent,
        "{what}: lost {} frames",
        r.sent - r.received
    );
    assert_eq!(
        r.mismatch_count, 0,
        "{what}: frames changed or reordered at {:?}",
        r.mismatches
    );
}

/// Bridge counters must equal what the harness injected and collected.
fn assert_stats_match(fin: &Finished, reports: &[(usize, &TransferReport)]) {
    let (mut pk, mut by) = ([0u64; 2], [0u64; 2]);
    for (from, r) in reports {
        pk[*from] += r.sent;
        by[*from] += r.sent_bytes;
    }
    for side in 0..2 {
        let (rx, tx) = (&fin.ports[side], &fin.ports[side ^ 1]);
        assert_eq!(
            rx.rx_packets, pk[side],
            "port {side} rx_packets:\n{}",
            fin.stdout
        );
        assert_eq!(rx.rx_bytes, by[side], "port {side} rx_bytes");
        assert_eq!(tx.tx_packets, pk[side], "port {} tx_packets", side ^ 1);
        assert_eq!(tx.tx_bytes, by[side], "port {} tx_bytes", side ^ 1);
        assert_eq!(tx.tx_dropped, 0, "port {} drops", side ^ 1);
    }
}

#[test]
fn every_frame_size_crosses_both_ways_identical_and_in_order() {
    let h = shared("test");
    let bc = start_bootcache(&h, "sizes", &[]);
    let mut reports = Vec::new();
    for from in [0, 1] {
        // 60..=1518 bytes, each size once, interleaved with a repeat of the
        // size sweep in reverse to catch reordering between sizes.
        let r = h.transfer_test_frames(from, 2 * 1459, WINDOW, |i| {
            let i = i as usize;
            if i < 1459 {
                60 + i
            } else {
                1518 - (i - 1459)
            }
        });
        let r = r.unwrap();
        assert_all_crossed(&format!("sizes from side {from}"), &r);
        reports.push((from, r));
    }
    let fin = stop(&h, bc);
    let refs: Vec<_> = reports.iter().map(|(f, r)| (*f, r)).collect();
    assert_stats_match(&fin, &refs);
}

#[test]
fn a_million_frames_cross_without_loss() {
    let h = shared("test");
    let bc = start_bootcache(&h, "million", &[]);
    let r = h
        .transfer_test_frames(0, 1_000_000, WINDOW, |_| 64)
        .unwrap();
    assert_all_crossed("1M frames", &r);
    eprintln!("1,000,000 frames at {:.3} Mpps", r.pps() / 1e6);
    let fin = stop(&h, bc);
    assert_stats_match(&fin, &[(0, &r)]);
}

#[test]
fn malformed_frames_cross_untouched() {
    let h = shared("test");
    let bc = start_bootcache(&h, "malformed", &[]);
    let frames = malformed_frames();
    let mut reports = Vec::new();
    for from in [0, 1] {
        let r = h
            .transfer(
                from,
                frames.len() as u64,
                WINDOW,
                Duration::from_secs(2),
                |i, buf| {
                    buf.clear();
                    buf.extend_from_slice(&frames[i as usize].1);
                },
            )
            .unwrap();
        if r.received != r.sent || r.mismatch_count != 0 {
            let first = r.mismatches.first().copied().unwrap_or(r.received);
            panic!(
                "from side {from}: {:?} did not cross untouched ({r:?})",
                frames[first as usize].0
            );
        }
        reports.push((from, r));
    }
    let fin = stop(&h, bc);
    let refs: Vec<_> = reports.iter().map(|(f, r)| (*f, r)).collect();
    assert_stats_match(&fin, &refs);
}

#[test]
fn telemetry_reports_ethdev_stats_of_a_running_bridge() {
    let h = shared("test");
    let bc = start_bootcache(&h, "telemetry", &[]);
    let r = h
        .transfer(0, 1000, WINDOW, Duration::from_secs(2), |i, buf| {
            test_frame(0, i, 100, buf)
        })
        .unwrap();
    assert_all_crossed("telemetry traffic", &r);
    let out = Command::new("dpdk-telemetry.py")
        .args(["-f", &bc.file_prefix])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"/ethdev/stats,0\n")?;
            c.wait_with_output()
        })
        .expect("dpdk-telemetry.py (package dpdk)");
    let text = String::from_utf8_lossy(&out.stdout);
    // The JSON answer carries port 0's driver counters: 1000 frames received.
    assert!(
        text.contains("\"ipackets\": 1000"),
        "telemetry answer: {text}"
    );
    stop(&h, bc);
}
