//! A real PXE client through bootcache (issue 7): qemu (software emulation)
//! with Debian's iPXE ROM on a tap in the client namespace, dnsmasq as DHCP,
//! router advertiser and TFTP server in the server namespace with
//! bootcache-agent beside it. iPXE gets an iPXE script by DHCP/TFTP, which
//! loads a Debian kernel and a busybox initrd over TFTP; the initrd brings
//! up the network with DHCP, prints a marker on the serial console and
//! powers off.
//!
//! Needs root and `scripts/setup` (qemu-system-x86, ipxe-qemu, the kernel
//! and initrd built by `scripts/pxe-images`).

use std::time::Duration;

use bootcache_testbed::netns::{self, Boot, Topology, IPXE_SCRIPT, PXE_FILES};

const BOOTCACHE: &str = env!("CARGO_BIN_EXE_bootcache");
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

fn boot(t: &Topology, tag: &str, variant: &str) -> Boot {
    t.boot_to_marker(tag, variant, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

fn counts(t: &Topology) -> Vec<usize> {
    t.origin_counts(&PXE_FILES)
}

/// (a) Two boots, the second served entirely from the cache, with (d) a
/// bootcache restart between them; (c) the boot script changed on the
/// server → the client gets the new one; (e) the agent stopped → the boot
/// still succeeds, from the origin.
#[test]
fn ipxe_boots_twice_the_second_from_the_cache_then_change_and_agent_down() {
    let mut t = netns::pxe_test_topology(&netns::Options {
        bootcache_bin: Some(BOOTCACHE.into()),
        ..Default::default()
    });
    t.start_origin().unwrap();
    t.start_agent().unwrap();
    t.write_bootcache_config("").unwrap();
    t.start_bootcache(&["--stats-interval", "1"]).unwrap();

    // (a) First boot: every file comes from the origin and is cached.
    boot(&t, "cold", "1");
    assert_eq!(counts(&t), [1, 1, 1], "{:?}", t.origin_transfers());
    t.wait_stat("files", "in_store", 3, Duration::from_secs(20))
        .unwrap();

    // (d) bootcache restarts; (a) the second boot is served from the cache:
    // the origin sends nothing.
    let fin = t.stop_bootcache().unwrap();
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
    t.start_bootcache(&["--stats-interval", "1"]).unwrap();
    // Served once hashed again (issue 13: on the writer thread, right
    // after the start; a request before that goes to the origin).
    t.wait_stat("files", "verified", 3, Duration::from_secs(20))
        .unwrap();
    boot(&t, "warm", "1");
    assert_eq!(
        counts(&t),
        [1, 1, 1],
        "the origin sent files on the warm boot: {:?}",
        t.origin_transfers()
    );
    t.wait_stat("serve", "completed", 3, Duration::from_secs(5))
        .unwrap();
    // bootcache's own witness: no read request went on to the origin.
    assert_eq!(t.bootcache_stat("serve", "misses"), Some(0));

    // CI boots (a) and (d) only, to stay within its 30 minutes on two
    // CPUs (each TCG boot is ~35 s): (c) and (e) are the same behaviours
    // tests/e2e_tftp.rs checks with tftp-hpa and curl
    // (restart_change_on_the_server_and_agent_down); outside CI every
    // boot runs.
    if std::env::var("CI").as_deref() == Ok("true") {
        eprintln!("CI=true: the changed-script and agent-down boots are left out");
        let fin = t.stop_bootcache().unwrap();
        assert_eq!(fin.code, Some(0), "{}", fin.stderr);
        return;
    }

    // (c) The boot script changes on the server: the new one reaches the
    // client (its kernel command line shows it), the rest is still cached.
    let rehashed = t.agent_log_count(&format!("{IPXE_SCRIPT}: modified"));
    t.install_ipxe_script("2").unwrap();
    // The agent rehashes once the script stayed quiet for its debounce.
    t.wait_agent_log(
        &format!("{IPXE_SCRIPT}: modified"),
        rehashed + 1,
        Duration::from_secs(10),
    )
    .unwrap();
    boot(&t, "changed", "2");
    assert_eq!(counts(&t), [2, 1, 1], "{:?}", t.origin_transfers());

    // (e) Without the agent nothing is validated: everything comes from the
    // origin and the boot succeeds.
    t.stop_agent();
    boot(&t, "no-agent", "2");
    assert_eq!(counts(&t), [3, 2, 2], "{:?}", t.origin_transfers());
    let fin = t.stop_bootcache().unwrap();
    assert_eq!(fin.code, Some(0), "{}", fin.stderr);
}
