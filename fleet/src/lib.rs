//! bootcache's fleet (issue 14): the boot server's verification table
//! (patent figure 8) in a NATS JetStream key-value bucket.
//!
//! `bootcache-agent` publishes its table — per file: size, SHA-256,
//! version, modification time — as it changes, every record signed with
//! the HMAC key it shares with bootcache, plus a signed heartbeat. Each
//! bridge mirrors the bucket with a watch and validates cache hits against
//! its mirror locally while the mirror is live; otherwise it asks the
//! agent over UDP as before.
//!
//! - [`record`]: the signed record format.
//! - [`Mirror`]: a bridge's mirror, sans-I/O; [`View`] what the serving
//!   thread reads.
//! - [`Publisher`]: the agent's side, sans-I/O.
//! - [`nats`]: the I/O (async-nats on a thread of its own).
//! - [`doc`]: the signed documents of items 2–4 (presence, holdings,
//!   image map summaries, directives, acknowledgements); [`member`] a
//!   bridge's part (sans-I/O) and [`bridge`] its I/O; [`coord`] the
//!   agent's pushed updates (sans-I/O) and [`agent`] its I/O and the
//!   `fleet`/`cache` commands'; [`report`] the `fleet` listing.
//! - [`policy`]: the serving policy (item 5), decided at the bridge.

#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod agent;
pub mod bridge;
pub mod coord;
pub mod doc;
pub mod member;
pub mod mirror;
pub mod nats;
pub mod policy;
pub mod publish;
pub mod record;
pub mod report;

pub use agent::{
    new_directive_id, put_directive, read_report, spawn_coordinator, CoordinatorHandle,
};
pub use bridge::{
    spawn_member, MemberConfig, MemberCounters, MemberHandle, OriginFetch, OriginRead, PortFetch,
    Staged,
};
pub use mirror::{Mirror, MirrorConfig, MirrorCounters, Op, Verdict, View};
pub use nats::{
    check_config, delete_object, put_raw, spawn_mirror, spawn_publisher, FleetError, MirrorHandle,
    MirrorReader, NatsConfig, PublishConfig, PublisherHandle,
};
pub use publish::{Published, Publisher, Put};
pub use record::{file_key, Body, FileInfo, Record, RecordError};
