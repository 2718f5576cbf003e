//! bootcache's test bed, shared by the end-to-end tests (`tests/`), the
//! demo and the benchmarks (`bench/`):
//!
//! - [`netns`]: real programs on one machine (dnsmasq, bootcache-agent,
//!   NATS, curl, tftp-hpa, atftp, qemu) in network namespaces, bootcache
//!   between them on `net_af_packet` ports;
//! - [`harness`]: the test process plays the wire on both sides of a
//!   bootcache through vhost-user ports ([`frames`], [`scenario`] and
//!   [`tftp_client`] build what it sends);
//! - [`process`]: starting, stopping and reading DPDK programs;
//! - [`demo`] and [`plot`]: what the demo binaries share (`main`, the
//!   picture of a run's bytes per second), and line charts as SVG and PNG
//!   (the benchmark's plots use them too).
//!
//! The binaries: `bootcache-pxe-demo` and `bootcache-fleet-demo`
//! (`scripts/demo`, `scripts/demo --sites 2`) and `bootcache-harness`
//! (`scripts/demo --virtual`, the earlier demo through virtio-user).
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod demo;
pub mod frames;
pub mod harness;
pub mod netns;
pub mod plot;
pub mod process;
pub mod scenario;
pub mod tftp_client;
