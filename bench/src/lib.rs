//! bootcache's benchmarks: the packet generator, the scenarios (forward,
//! fill, storm, serve) and their plots.
//!
//! They run on the test bed (crate `bootcache-testbed`: the vhost-user
//! harness, the network namespaces, process helpers), which also serves
//! `tests/` and the demos.
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

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
