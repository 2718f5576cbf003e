//! bootcache's traffic harness and benchmarks.
//!
//! The harness plays the wire on both sides of a running `bootcache`: it owns
//! two `net_vhost` ports whose vhost-user sockets bootcache opens as
//! `net_virtio_user` ports, injects frames on one side and checks what
//! arrives on the other. Integration tests (`tests/`), the demo and the
//! benchmarks are built on it.
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

// The test bed (crate bootcache-testbed), under its old paths.
pub use bootcache_testbed::{frames, harness, netns, process, scenario, tftp_client};

pub mod agent;
pub mod dut;
pub mod fill;
pub mod fleet;
pub mod forward;
pub mod latency;
pub mod mix;
pub mod pcap;
pub mod pktgen;
pub mod plot;
pub mod results;
pub mod search;
pub mod storm;
pub mod traffic;
