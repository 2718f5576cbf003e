//! bootcache's fast path: the poll-mode bridge between the client-side port
//! (0) and the server-side port (1), with per-lcore counters published for the
//! control thread.
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod bridge;
pub mod counters;
pub mod filter;
pub mod health;
pub mod redirect;

pub use bridge::{Bridge, BridgeConfig};
pub use counters::{BridgeCounters, PortCounters, RedirectCounters, SharedCounters};
pub use filter::{
    Action, FilterConfig, FilterCounters, FilterError, FilterReader, FilterSnapshot, FilterWriter,
    RuleId, SharedFilterCounters, StaticRule, Table,
};
pub use health::SlowPathHealth;
pub use redirect::{redirect_ring, InjectRing, Injected, RedirectRx, RedirectTx, Redirected};
