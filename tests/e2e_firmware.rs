//! Every real boot firmware through bootcache (issue 16): UEFI (OVMF, whose
//! PXE probes each file's size first, then iPXE's `snponly.efi`), pxelinux
//! and GRUB (i386-pc `core.0`), each chained from the BIOS's iPXE ROM. Each
//! boots the same Debian kernel and busybox initrd twice through bootcache
//! (transparent mode, the agent validating): the first boot from the origin
//! (dnsmasq), the second entirely from the cache — the origin's log shows
//! no new transfer. What the firmware asked on the wire and what was
//! answered is captured (tcpdump) and printed; the options it asks must be
//! granted from the cache as the origin granted them (windowsize too, when
//! asked: bootcache grants it where dnsmasq does not).
//!
//! One test boots the firmware in sequence sharing one topology and one
//! bootcache (each firmware's files in its own directory, so each first
//! boot is cold). `BOOTCACHE_FIRMWARE=uefi,grub` boots a subset.
//!
//! Needs root and `scripts/setup` (qemu-system-x86, ovmf, ipxe, pxelinux,
//! syslinux-common, grub-pc-bin, tcpdump, the images of `scripts/pxe-images`).

use std::path::PathBuf;
use std::time::Duration;

use bootcache_testbed::netns::{self, Firmware, Topology};

const BOOTCACHE: &str = env!("CARGO_BIN_EXE_bootcache");
/// A TCG boot takes 10–60 s on an idle machine; CI shares two CPUs.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

fn images() -> PathBuf {
    std::env::var_os("BOOTCACHE_PXE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| netns::DEFAULT_IMAGES.into())
}

fn stat(t: &Topology, section: &str, key: &str) -> u64 {
    t.bootcache_stat(section, key).unwrap_or(0)
}

/// `fw` boots twice: cold from the origin (every boot file sent once and
/// cached), warm from the cache (the origin sends nothing).
fn boots_twice(t: &mut Topology, fw: Firmware) {
    let name = fw.name();
    t.stop_origin();
    t.set_firmware(fw);
    t.install_firmware_files(fw, &images())
        .unwrap_or_else(|e| panic!("{name}: installing: {e:#}"));
    // A fresh origin log: its transfers are this firmware's.
    t.start_origin().unwrap();

    let in_store = stat(t, "files", "in_store");
    let probes = stat(t, "transfers", "size_probes");
    let discarded = stat(t, "transfers", "discarded");
    let cap = t.capture_tftp(&format!("{name}-cold")).unwrap();
    t.boot_to_marker(&format!("{name}-cold"), "1", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let cold_wire = t.tftp_captured(cap).unwrap();
    eprintln!(
        "{name}, cold boot, on the wire:\n  {}",
        cold_wire.join("\n  ")
    );
    let sent = t.origin_transfers();
    // dnsmasq logs a size probe (read ended by ERROR 8 after the OACK) as
    // a file sent too: UEFI's boot program shows twice.
    for f in fw.boot_files() {
        assert!(
            sent.contains(&f),
            "{name}: the origin did not send {f}: {sent:?}"
        );
    }
    // Every file the origin sent is cached (GRUB's modules too).
    let mut files = sent.clone();
    files.sort();
    files.dedup();
    t.wait_stat(
        "files",
        "in_store",
        in_store + files.len() as u64,
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{name}: {e:#}\n{}", t.diagnostics()));
    let asked_probe = cold_wire.iter().any(|l| l.contains("ERROR 8"));
    if asked_probe {
        // The size probe is neither a failure nor a file.
        assert!(
            stat(t, "transfers", "size_probes") > probes,
            "{name}: size probe not counted\n{}",
            t.diagnostics()
        );
        // UEFI asks only for files that exist: nothing else ends early.
        assert_eq!(
            stat(t, "transfers", "discarded"),
            discarded,
            "{name}: the size probe counted as a failed transfer\n{}",
            t.diagnostics()
        );
    }

    let served = stat(t, "serve", "completed");
    let serve_probes = stat(t, "serve", "size_probes");
    let client_errors = stat(t, "serve", "client_errors");
    let cap = t.capture_tftp(&format!("{name}-warm")).unwrap();
    t.boot_to_marker(&format!("{name}-warm"), "1", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let warm_wire = t.tftp_captured(cap).unwrap();
    eprintln!(
        "{name}, warm boot, on the wire:\n  {}",
        warm_wire.join("\n  ")
    );
    assert_eq!(
        t.origin_transfers(),
        sent,
        "{name}: the origin sent files on the warm boot"
    );
    t.wait_stat(
        "serve",
        "completed",
        served + files.len() as u64,
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    if asked_probe {
        assert!(
            stat(t, "serve", "size_probes") > serve_probes,
            "{name}: the cache's size probe not counted"
        );
        assert_eq!(
            stat(t, "serve", "client_errors"),
            client_errors,
            "{name}: the size probe counted as a client error"
        );
    }
    // Whatever the firmware asked, the cache answered: every request with
    // options for a file that exists got an OACK granting blksize as asked,
    // and windowsize when asked (files that do not exist, such as
    // pxelinux's per-client configurations, get the origin's ERROR 1).
    for (i, l) in warm_wire.iter().enumerate() {
        if !l.contains(" RRQ ") || !l.contains('=') {
            continue;
        }
        let answer = warm_wire[i + 1..]
            .iter()
            .find(|n| n.contains(" OACK") || n.contains(" ERROR "))
            .unwrap_or_else(|| panic!("{name}: nothing answered {l}: {warm_wire:?}"));
        let Some(oack) = Some(answer).filter(|a| a.contains(" OACK")) else {
            assert!(
                answer.contains(" ERROR 1 "),
                "{name}: {l} answered {answer}"
            );
            continue;
        };
        for opt in ["blksize=", "windowsize="] {
            if let Some(v) = l.split_whitespace().find(|w| w.starts_with(opt)) {
                assert!(
                    oack.split_whitespace().any(|w| w.starts_with(opt)),
                    "{name}: {v} not granted: {l} → {oack}"
                );
            }
        }
    }
}

#[test]
fn uefi_pxelinux_and_grub_each_boot_twice_the_second_from_the_cache() {
    let wanted: Vec<Firmware> = match std::env::var("BOOTCACHE_FIRMWARE") {
        Ok(list) => list
            .split(',')
            .map(|n| Firmware::from_name(n.trim()).unwrap_or_else(|e| panic!("{e:#}")))
            .collect(),
        Err(_) => vec![Firmware::Uefi, Firmware::Pxelinux, Firmware::Grub],
    };
    for fw in &wanted {
        fw.check()
            .unwrap_or_else(|e| panic!("end-to-end prerequisites: {e:#}"));
    }
    let mut t = netns::pxe_test_topology(&netns::Options {
        bootcache_bin: Some(BOOTCACHE.into()),
        ..Default::default()
    });
    t.start_agent().unwrap();
    t.write_bootcache_config("").unwrap();
    t.start_bootcache(&["--stats-interval", "1"]).unwrap();
    for fw in wanted {
        boots_twice(&mut t, fw);
    }
    let fin = t.stop_bootcache().unwrap();
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
}
