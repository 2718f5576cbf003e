//! bootcache's slow path, sans-I/O at its core (see quinn-proto): plain state
//! machines fed with frames and time by the slow-path worker.
//!
//! - [`cache_logic::CacheLogic`]: what the worker drives: frames and time in,
//!   filter updates, counters, the filestore and the image map out.
//! - [`tracker`]: TFTP read transfers followed from snooped copies.
//! - [`defrag`]: IPv4 reassembly of fragmented UDP (TFTP blocks larger
//!   than the MTU) before tracking.
//! - [`reassembly`]: one transfer's blocks into a temporary file, hashed.
//! - [`filestore`]: the verified cache on disk; [`eviction`]: which files
//!   make room for new ones.
//! - [`control`]: the operator's control protocol (`bootcache cache ...`).
//! - [`tftp_server`], [`tftp_client`], [`arp`]: re-exported from the
//!   serving crate (`bootcache-serve`), which serves hits and fetches misses.
//! - [`dhcp`], [`imagemap`]: the message handler and the image map.
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod cache_logic;
pub mod control;
pub mod defrag;
pub mod dhcp;
pub mod eviction;
pub mod filestore;
pub mod imagemap;
pub mod journal;
pub mod limits;
pub mod reassembly;
pub mod tracker;
pub mod writer;

// Moved to the serving crate; re-exported under their old paths.
pub use bootcache_serve::{arp, tftp_client, tftp_server};

pub use arp::{ArpConfig, ArpCounters, ArpEvent, ArpFrameBuf, ArpResolver};
pub use cache_logic::{BoundsHit, CacheError, CacheLogic, Counters, DiscardCounts};
pub use defrag::{DefragLimits, DefragStats};
pub use dhcp::{BootDirective, BootVia, Learned, MessageHandler};
pub use eviction::Watermarks;
pub use filestore::{
    Digest256, DirLock, Entry, Filestore, FilestoreError, InUse, LoadReport, Published, Removals,
    RemoveRefused,
};
pub use imagemap::{
    render_listing, ClientRecord, FileRecord, ImageMap, ImageMapError, Limits, ServedFrom,
};
/// The cache's resource bounds ([`Limits`] at the root is the image map's).
pub use limits::Limits as CacheLimits;
pub use tftp_client::{
    ClientCounters, ClientOptions, ClientOutcome, ClientSession, ClientTransmit, Destination,
    ProtocolError, RequestError,
};
/// How a TFTP server session ended ([`tftp_server::Outcome`]).
pub use tftp_server::Outcome as ServeOutcome;
pub use tftp_server::{
    error_response, FileSource, Refusal, ServerConfig, ServerSession, SessionCounters, Transmit,
};
pub use tracker::{DiscardReason, Event, FilterUpdate};
