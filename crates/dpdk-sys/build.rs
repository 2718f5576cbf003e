//! Finds the system DPDK 22.11 with pkg-config, generates bindings with
//! bindgen (libclang from scripts/setup) and compiles the C shim for DPDK's
//! `static inline` functions with exactly the cflags pkg-config gives.

use std::env;
use std::path::PathBuf;

const SETUP_HINT: &str =
    "run `sudo scripts/setup` (installs Debian's dpdk-dev, libdpdk-dev, libclang-dev)";

/// One clear line, then stop: this is what a user without DPDK sees.
fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}; {SETUP_HINT}");
    std::process::exit(1);
}

fn main() {
    println!("cargo:rerun-if-changed=csrc/wrapper.h");
    println!("cargo:rerun-if-changed=csrc/shim.h");
    println!("cargo:rerun-if-changed=csrc/shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let lib = match pkg_config::Config::new()
        .atleast_version("22.11")
        .cargo_metadata(false)
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(pkg_config::Error::Failure { .. }) | Err(pkg_config::Error::Command { .. }) => {
            fail("DPDK 22.11 not found by `pkg-config libdpdk`")
        }
        Err(e) => fail(&format!(
            "DPDK 22.11 required ({})",
            one_line(&e.to_string())
        )),
    };
    if !lib.version.starts_with("22.") {
        fail(&format!(
            "DPDK 22.11 required but pkg-config libdpdk reports {}",
            lib.version
        ));
    }

    // Link the shared libraries; the EAL loads PMDs from its driver directory.
    for path in &lib.link_paths {
        println!("cargo:rustc-link-search=native={}", path.display());
    }
    for name in [
        "rte_ethdev",
        "rte_mbuf",
        "rte_mempool",
        "rte_ring",
        "rte_eal",
        "rte_kvargs",
        "rte_bus_vdev",
        "rte_telemetry",
    ] {
        println!("cargo:rustc-link-lib=dylib={name}");
    }

    let cflags = pkg_config_cflags();

    let mut build = cc::Build::new();
    build
        .file("csrc/shim.c")
        .include("csrc")
        .opt_level(3)
        .warnings(true);
    for flag in &cflags {
        build.flag(flag);
    }
    build.compile("bootcache_dpdk_shim");

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR set by cargo"));
    let mut builder = bindgen::Builder::default()
        .header("csrc/wrapper.h")
        .clang_arg("-Icsrc")
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .derive_default(true)
        .layout_tests(true)
        .generate_comments(false)
        .prepend_enum_name(false);
    for flag in &cflags {
        builder = builder.clang_arg(flag);
    }
    for f in ALLOW_FUNCTIONS {
        builder = builder.allowlist_function(f);
    }
    for t in ALLOW_TYPES {
        builder = builder.allowlist_type(t);
    }
    for v in ALLOW_VARS {
        builder = builder.allowlist_var(v);
    }
    let bindings = builder.generate().unwrap_or_else(|e| {
        fail(&format!(
            "bindgen failed on the DPDK headers: {}",
            one_line(&e.to_string())
        ))
    });
    bindings
        .write_to_file(out.join("bindings.rs"))
        .unwrap_or_else(|e| fail(&format!("cannot write bindings: {e}")));
}

fn pkg_config_cflags() -> Vec<String> {
    let out = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .unwrap_or_else(|_| fail("pkg-config not found"));
    if !out.status.success() {
        fail("`pkg-config --cflags libdpdk` failed");
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Exported (non-inline) DPDK functions and our shim, by name: nothing else.
const ALLOW_FUNCTIONS: &[&str] = &[
    "bc_.*",
    "rte_version",
    "rte_strerror",
    "rte_eal_init",
    "rte_eal_cleanup",
    "rte_eal_process_type",
    "rte_eal_remote_launch",
    "rte_eal_wait_lcore",
    "rte_eal_get_lcore_state",
    "rte_get_main_lcore",
    "rte_get_next_lcore",
    "rte_lcore_count",
    "rte_lcore_is_enabled",
    "rte_lcore_to_socket_id",
    "rte_socket_id",
    "rte_get_tsc_hz",
    "rte_delay_us_block",
    "rte_pktmbuf_pool_create",
    "rte_pktmbuf_free_bulk",
    "rte_mempool_free",
    "rte_mempool_avail_count",
    "rte_mempool_in_use_count",
    "rte_eth_dev_count_avail",
    "rte_eth_dev_is_valid_port",
    "rte_eth_dev_info_get",
    "rte_eth_dev_configure",
    "rte_eth_dev_socket_id",
    "rte_eth_rx_queue_setup",
    "rte_eth_tx_queue_setup",
    "rte_eth_dev_start",
    "rte_eth_dev_stop",
    "rte_eth_dev_close",
    "rte_eth_dev_set_mtu",
    "rte_eth_dev_get_mtu",
    "rte_eth_dev_get_name_by_port",
    "rte_eth_promiscuous_enable",
    "rte_eth_promiscuous_disable",
    "rte_eth_promiscuous_get",
    "rte_eth_link_get_nowait",
    "rte_eth_macaddr_get",
    "rte_eth_stats_get",
    "rte_eth_stats_reset",
    "rte_ring_create",
    "rte_ring_free",
    "rte_ring_count",
    // Flow steering (rte_flow, part of librte_ethdev).
    "rte_flow_validate",
    "rte_flow_create",
    "rte_flow_destroy",
    "rte_flow_flush",
];

const ALLOW_TYPES: &[&str] = &[
    "rte_mbuf",
    "rte_mempool",
    "rte_ring",
    "rte_eth_conf",
    "rte_eth_dev_info",
    "rte_eth_stats",
    "rte_eth_link",
    "rte_ether_addr",
    "rte_eth_rxconf",
    "rte_eth_txconf",
    "rte_lcore_state_t",
    "lcore_function_t",
    "rte_proc_type_t",
    // Flow steering: rule attributes, pattern items, actions, verbose errors,
    // the opaque rule handle, and the item/action/error type enums (constants
    // without the enum name, like every other enum here).
    "rte_flow",
    "rte_flow_attr",
    "rte_flow_item",
    "rte_flow_action",
    "rte_flow_error",
    "rte_flow_item_eth",
    "rte_flow_item_ipv4",
    "rte_flow_item_udp",
    "rte_flow_action_queue",
    "rte_flow_item_type",
    "rte_flow_action_type",
    "rte_flow_error_type",
    // The ethdev fast-path table the rx/tx inlines read (crates/dpdk calls
    // the drivers' burst functions through it).
    "rte_eth_fp_ops",
];

const ALLOW_VARS: &[&str] = &[
    "RTE_VER_.*",
    "RTE_MAX_LCORE",
    "RTE_MAX_ETHPORTS",
    "RTE_MBUF_DEFAULT_BUF_SIZE",
    "RTE_PKTMBUF_HEADROOM",
    "RTE_ETH_LINK_.*",
    "RTE_ETHER_ADDR_LEN",
    "RING_F_.*",
    "SOCKET_ID_ANY",
    "LCORE_ID_ANY",
    "RTE_ETH_NAME_MAX_LEN",
    "rte_eth_fp_ops",
];
