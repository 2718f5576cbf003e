//! Tracking of TFTP read transfers from snooped packet copies (sans-I/O).
//!
//! The tracker sees copies of what crosses the bridge, in both directions.
//! Copies may be lost (the redirect ring was full), duplicated or reordered,
//! so nothing here assumes it sees every packet: a transfer is keyed by
//! (VLAN scope, server IP, client IP:port) — two VLANs may reuse the same
//! addresses and ports for two different servers — starts with the client's RRQ to port 69, pins
//! the server's TID at the first reply, and feeds DATA into a
//! [`Reassembly`]. It ends as exactly one [`Event`]: a verified file
//! ([`Event::Completed`]), a [`Event::SizeProbe`], or a [`Event::Discarded`]
//! with its [`DiscardReason`].
//!
//! Outputs are pulled, quinn-style: [`Tracker::poll_filter_update`] says
//! which header-filter rules the fast path needs so that the transfer's
//! packets keep coming, [`Tracker::poll_event`] what happened, and
//! [`Tracker::poll_timeout`] when [`Tracker::handle_timeout`] is next due.
//!
//! # Block numbers
//!
//! DATA blocks are numbered from 1 and wrap after 65535, to 0 on most servers
//! and to 1 on some. Each DATA is mapped to an absolute index nearest to the
//! highest index seen so far, which makes reordering within a window
//! harmless. The wrap style is learnt at the first wrap: a DATA 0 or ACK 0
//! means wrap-to-0; blocks after the wrap are held back in memory (a window's
//! worth) until either a 0 shows up or the transfer has clearly moved on
//! without one (an ACK of a later block, a block beyond the window), which
//! means wrap-to-1. A 0 seen after deciding wrap-to-1 contradicts it and
//! discards the transfer as inconsistent, as does a final length that does
//! not match `tsize`: a wrong guess is never published when either evidence
//! exists.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::debug;
use wire::frame::VlanScope;
use wire::tftp::{self, ErrorCode, Packet, TransferMode};

use crate::limits::Limits;
use crate::reassembly::{Reassembly, ReassemblyError, TempFile};

/// The TFTP server port requests go to.
pub const TFTP_PORT: u16 = 69;

/// How long to wait for reordered DATA copies after the client acknowledged
/// the last block of an incomplete transfer.
pub const LINGER: Duration = Duration::from_secs(1);

pub use bootcache_serve::FilterUpdate;

/// Why a tracked transfer did not become a cached file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiscardReason {
    /// Some block was never seen (its copies were all lost).
    MissingBlocks,
    /// Copies of a block disagree, or the data contradicts itself.
    Inconsistent,
    /// The length does not match the announced `tsize`.
    SizeMismatch,
    /// The server sent an ERROR.
    ServerError,
    /// The client sent an ERROR (other than ending a size probe).
    ClientError,
    /// No packet for the idle timeout.
    IdleTimeout,
    /// A new request from the same client port replaced it.
    Superseded,
    /// Not octet mode: followed but not cached.
    UnsupportedMode,
    /// The file name is not UTF-8, or names no file under a server's root
    /// (`..`, empty, NUL; see [`wire::tftp::normalize_name`]): followed but
    /// not cached.
    UnsupportedName,
    /// Larger than [`Limits::max_file_size`].
    TooLarge,
    /// Would exceed [`Limits::quota_bytes`].
    QuotaFull,
    /// A temporary or cache file could not be written.
    Io,
}

impl DiscardReason {
    /// Every reason, in counter order.
    pub const ALL: [DiscardReason; 12] = [
        DiscardReason::MissingBlocks,
        DiscardReason::Inconsistent,
        DiscardReason::SizeMismatch,
        DiscardReason::ServerError,
        DiscardReason::ClientError,
        DiscardReason::IdleTimeout,
        DiscardReason::Superseded,
        DiscardReason::UnsupportedMode,
        DiscardReason::UnsupportedName,
        DiscardReason::TooLarge,
        DiscardReason::QuotaFull,
        DiscardReason::Io,
    ];

    /// The counter name, e.g. `missing_blocks`.
    pub fn as_str(self) -> &'static str {
        match self {
            DiscardReason::MissingBlocks => "missing_blocks",
            DiscardReason::Inconsistent => "inconsistent",
            DiscardReason::SizeMismatch => "size_mismatch",
            DiscardReason::ServerError => "server_error",
            DiscardReason::ClientError => "client_error",
            DiscardReason::IdleTimeout => "idle_timeout",
            DiscardReason::Superseded => "superseded",
            DiscardReason::UnsupportedMode => "unsupported_mode",
            DiscardReason::UnsupportedName => "unsupported_name",
            DiscardReason::TooLarge => "too_large",
            DiscardReason::QuotaFull => "quota_full",
            DiscardReason::Io => "io",
        }
    }

    /// Position in [`DiscardReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for DiscardReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transfer that completed and verified: its data sits in `file`, a
/// temporary file under the cache's `tmp/`, ready to be published.
#[derive(Debug)]
pub struct Completed {
    /// The VLANs the transfer was on (part of the cache key).
    pub scope: VlanScope,
    /// The boot server.
    pub server: Ipv4Addr,
    /// The client that downloaded it.
    pub client: SocketAddrV4,
    /// The file name as requested.
    pub filename: String,
    /// Length in bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
    /// The content (removed on drop unless persisted).
    pub file: TempFile,
}

/// What the tracker observed; pulled with [`Tracker::poll_event`].
#[derive(Debug)]
pub enum Event {
    /// A client asked a server for a file (every new RRQ, tracked or not):
    /// feeds the image map.
    RequestSeen {
        /// The client's address and port.
        client: SocketAddrV4,
        /// The server asked.
        server: Ipv4Addr,
        /// The file name (lossily decoded if not UTF-8).
        filename: String,
    },
    /// A transfer completed and verified.
    Completed(Completed),
    /// A UEFI-style size probe: the client read the OACK's `tsize` and ended
    /// the transfer. Neither a failure nor a file.
    SizeProbe {
        /// The client's address and port.
        client: SocketAddrV4,
        /// The server.
        server: Ipv4Addr,
        /// The file name (lossily decoded if not UTF-8).
        filename: String,
    },
    /// A transfer ended without a cached file.
    Discarded {
        /// The client's address and port.
        client: SocketAddrV4,
        /// The server.
        server: Ipv4Addr,
        /// The file name (lossily decoded if not UTF-8).
        filename: String,
        /// Why.
        reason: DiscardReason,
    },
}

/// Which way a packet copy went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From a client to the boot server.
    ToServer,
    /// From the boot server to a client.
    FromServer,
}

/// Packet-level counters of the tracker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// TFTP packets handled.
    pub packets: u64,
    /// Read requests seen (duplicates of a pending request excluded).
    pub requests: u64,
    /// Transfers started (tracked).
    pub transfers_started: u64,
    /// Read requests ignored because [`Limits::max_transfers`] were tracked,
    /// or the client address had its share of them.
    pub over_transfer_limit: u64,
    /// Of those, requests ignored because their client address had its
    /// share ([`crate::limits::per_source`]).
    pub over_client_share: u64,
    /// Packets that belong to no tracked transfer.
    pub stray: u64,
    /// Packets from or to another TID than the pinned one.
    pub other_tid: u64,
    /// Packets that do not parse as TFTP, or are illegal where they are.
    pub malformed: u64,
    /// Write requests and other packets not followed.
    pub ignored: u64,
}

/// (VLANs, server, client): the tags keep two VLANs' transfers apart.
type Key = (VlanScope, Ipv4Addr, SocketAddrV4);

/// Tracks every TFTP read transfer to or from the configured servers.
#[derive(Debug)]
pub struct Tracker {
    tmp_dir: PathBuf,
    limits: Limits,
    space_left: u64,
    transfers: HashMap<Key, Transfer>,
    /// Transfers tracked per client address (its share of the table), by
    /// VLAN scope: one address on two VLANs is two hosts.
    per_client: HashMap<(VlanScope, Ipv4Addr), usize>,
    updates: VecDeque<FilterUpdate>,
    events: VecDeque<Event>,
    stats: TrackerStats,
    next_temp: u64,
}

impl Tracker {
    /// A tracker writing temporary files to `tmp_dir` (which must exist).
    pub fn new(tmp_dir: PathBuf, limits: Limits) -> Self {
        Tracker {
            tmp_dir,
            space_left: limits.quota_bytes,
            limits,
            transfers: HashMap::new(),
            per_client: HashMap::new(),
            updates: VecDeque::new(),
            events: VecDeque::new(),
            stats: TrackerStats::default(),
            next_temp: 0,
        }
    }

    /// Replaces the bounds (a reload of the configuration): they apply to
    /// requests from now on; transfers under way keep the size bound they
    /// started with.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Sets how many bytes the cache can still take; transfers that announce
    /// or reach more are discarded early ([`DiscardReason::QuotaFull`]).
    pub fn set_space_left(&mut self, bytes: u64) {
        self.space_left = bytes;
    }

    /// Packet-level counters.
    pub fn stats(&self) -> &TrackerStats {
        &self.stats
    }

    /// Number of transfers tracked now.
    pub fn active(&self) -> usize {
        self.transfers.len()
    }

    /// Handles one TFTP packet copy: the UDP payload `payload` of a datagram
    /// from `src` to `dst` on the VLANs `scope`, going `dir`.
    pub fn handle(
        &mut self,
        now: Instant,
        dir: Direction,
        scope: VlanScope,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        payload: &[u8],
    ) {
        self.stats.packets += 1;
        match dir {
            Direction::ToServer => self.handle_client_packet(now, scope, src, dst, payload),
            Direction::FromServer => self.handle_server_packet(now, scope, src, dst, payload),
        }
    }

    /// When [`Tracker::handle_timeout`] is next due, if any transfer is tracked.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.transfers
            .values()
            .map(|t| t.deadline(&self.limits))
            .min()
    }

    /// Ends the transfers whose idle or linger timer expired at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<Key> = self
            .transfers
            .iter()
            .filter(|(_, t)| t.deadline(&self.limits) <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            let Some(t) = self.transfers.get(&key) else {
                continue;
            };
            let outcome = if t.linger_until.is_some_and(|l| l <= now)
                || t.final_acked
                || t.reasm.as_ref().is_some_and(|r| r.last_block().is_some())
            {
                End::Discard(DiscardReason::MissingBlocks)
            } else if t.is_probe_like() {
                End::Probe
            } else {
                End::Discard(DiscardReason::IdleTimeout)
            };
            self.end(key, outcome);
        }
    }

    /// The next filter-rule change for the fast path.
    pub fn poll_filter_update(&mut self) -> Option<FilterUpdate> {
        self.updates.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn handle_client_packet(
        &mut self,
        now: Instant,
        scope: VlanScope,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        p: &[u8],
    ) {
        let key = (scope, *dst.ip(), src);
        if dst.port() == TFTP_PORT {
            match Packet::parse(p) {
                Ok(Packet::Rrq(req)) => self.request(now, key, &req, p),
                Ok(_) => self.stats.ignored += 1,
                Err(_) => self.stats.malformed += 1,
            }
            return;
        }
        let Some(t) = self.transfers.get_mut(&key) else {
            self.stats.stray += 1;
            return;
        };
        if t.tid != Some(dst.port()) {
            self.stats.other_tid += 1;
            return;
        }
        t.last_activity = now;
        match Packet::parse(p) {
            Ok(Packet::Ack { block }) => self.ack(key, block),
            Ok(Packet::Error { code, message }) => {
                debug!(
                    "client {src} ended {:?}: error {code:?} {}",
                    t.name_lossy(),
                    String::from_utf8_lossy(message)
                );
                // The UEFI size probe: OACK read, then "ended by option
                // negotiation" before any data.
                let outcome = if code == ErrorCode::OptionNegotiation && !t.data_seen {
                    End::Probe
                } else {
                    End::Discard(DiscardReason::ClientError)
                };
                self.end(key, outcome);
            }
            Ok(_) => self.stats.ignored += 1,
            Err(_) => self.stats.malformed += 1,
        }
    }

    fn request(&mut self, now: Instant, key: Key, req: &tftp::Request<'_>, raw: &[u8]) {
        if let Some(t) = self.transfers.get_mut(&key) {
            // A retransmitted request the server has not answered yet.
            if t.tid.is_none() && t.rrq == raw {
                t.last_activity = now;
                return;
            }
            let outcome = if t.is_probe_like() {
                End::Probe
            } else {
                End::Discard(DiscardReason::Superseded)
            };
            // The new Expect below replaces the rule: no Remove in between.
            self.end_quiet(key, outcome);
        }
        self.stats.requests += 1;
        // A superseded transfer was removed above, so it frees its own slot.
        let from_client = self
            .per_client
            .get(&(key.0, *key.2.ip()))
            .copied()
            .unwrap_or(0);
        let over_share = from_client >= crate::limits::per_source(self.limits.max_transfers);
        if self.transfers.len() >= self.limits.max_transfers || over_share {
            self.stats.over_transfer_limit += 1;
            self.stats.over_client_share += u64::from(over_share);
            if over_share {
                // One client at its share while the table has room: say so,
                // or the operator raises max_transfers for the wrong reason.
                bootcache_metrics::warn_limited!(
                    "per-client share of the transfer limit ({} of {}) reached by {}: request not followed ({} so far)",
                    crate::limits::per_source(self.limits.max_transfers),
                    self.limits.max_transfers,
                    key.2.ip(),
                    self.stats.over_client_share
                );
            } else {
                bootcache_metrics::warn_limited!(
                    "transfer limit ({}) reached: request from {} not followed ({} so far)",
                    self.limits.max_transfers,
                    key.2,
                    self.stats.over_transfer_limit
                );
            }
            self.events.push_back(Event::RequestSeen {
                client: key.2,
                server: key.1,
                filename: String::from_utf8_lossy(req.filename).into_owned(),
            });
            return;
        }
        // The cache key is the name as the server resolves it: "x", "/x"
        // and "./x" are one file.
        let name = std::str::from_utf8(req.filename)
            .ok()
            .and_then(|n| wire::tftp::normalize_name(n).ok());
        let not_cached = if req.mode.kind() != TransferMode::Octet {
            Some(DiscardReason::UnsupportedMode)
        } else if name.is_none() {
            Some(DiscardReason::UnsupportedName)
        } else {
            None
        };
        let t = Transfer {
            filename: req.filename.to_vec(),
            name,
            not_cached,
            rrq: raw.to_vec(),
            asked_tsize: req.options.tsize.is_some(),
            asked_options: !req.options.is_empty(),
            asked_blksize: req.options.blksize,
            ack0_seen: false,
            tid: None,
            oack: None,
            data_seen: false,
            blocks: BlockMap::default(),
            reasm: None,
            quota_limited: false,
            last_activity: now,
            linger_until: None,
            final_acked: false,
        };
        self.stats.transfers_started += 1;
        self.events.push_back(Event::RequestSeen {
            client: key.2,
            server: key.1,
            filename: t.name_lossy(),
        });
        self.transfers.insert(key, t);
        *self.per_client.entry((key.0, *key.2.ip())).or_default() += 1;
        self.updates.push_back(FilterUpdate::Expect {
            scope: key.0,
            server: key.1,
            client: key.2,
        });
    }

    fn handle_server_packet(
        &mut self,
        now: Instant,
        scope: VlanScope,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        p: &[u8],
    ) {
        let key = (scope, *src.ip(), dst);
        let Some(t) = self.transfers.get_mut(&key) else {
            self.stats.stray += 1;
            return;
        };
        match t.tid {
            Some(tid) if tid != src.port() => {
                self.stats.other_tid += 1;
                return;
            }
            Some(_) => {}
            None => {
                t.tid = Some(src.port());
                self.updates.push_back(FilterUpdate::Pin {
                    scope,
                    server: src,
                    client: dst,
                });
            }
        }
        t.last_activity = now;
        // DATA first, without the general parser: it is nearly every packet.
        if let Some((block, data)) = tftp::parse_data_header(p) {
            self.data(key, block, data);
            return;
        }
        match Packet::parse(p) {
            Ok(Packet::Oack(_)) if t.data_seen && t.oack.is_none() => {
                // DATA was taken as a plain transfer: the guess was wrong.
                self.end(key, End::Discard(DiscardReason::MissingBlocks));
            }
            Ok(Packet::Oack(o)) => {
                if !t.data_seen {
                    t.oack = Some(Negotiated {
                        blksize: o.blksize.unwrap_or(tftp::DEFAULT_BLKSIZE),
                        tsize: o.tsize,
                        windowsize: o.windowsize.unwrap_or(1),
                        timeout: o.timeout,
                    });
                    if let Some(reason) = self.check_tsize(key) {
                        self.end(key, End::Discard(reason));
                    }
                }
            }
            Ok(Packet::Error { code, message }) => {
                debug!(
                    "server {src} ended {:?}: error {code:?} {}",
                    t.name_lossy(),
                    String::from_utf8_lossy(message)
                );
                self.end(key, End::Discard(DiscardReason::ServerError));
            }
            Ok(_) => self.stats.ignored += 1,
            Err(_) => self.stats.malformed += 1,
        }
    }

    /// Refuses early a transfer whose announced size cannot be cached.
    fn check_tsize(&mut self, key: Key) -> Option<DiscardReason> {
        let t = self.transfers.get(&key)?;
        let tsize = t.oack.as_ref()?.tsize?;
        if t.not_cached.is_some() {
            return None;
        }
        if tsize > self.limits.max_file_size {
            self.too_large(key, tsize);
            Some(DiscardReason::TooLarge)
        } else if tsize > self.space_left {
            Some(DiscardReason::QuotaFull)
        } else {
            None
        }
    }

    fn too_large(&self, key: Key, size: u64) {
        bootcache_metrics::warn_limited!(
            "file size limit ({} bytes) hit: {} bytes from {} to {} ({})",
            self.limits.max_file_size,
            size,
            key.1,
            key.2,
            key.0
        );
    }

    fn data(&mut self, key: Key, block: u16, data: &[u8]) {
        let Some(t) = self.transfers.get_mut(&key) else {
            return;
        };
        let first = !t.data_seen;
        t.data_seen = true;
        if first && t.oack.is_none() && t.oack_may_be_lost() {
            // Without the OACK the block size is unknown, and guessing 512
            // could take a full small block for the last one.
            debug!(
                "transfer {} -> {} ({}): OACK not seen, not cached",
                key.1, key.2, key.0
            );
            self.end(key, End::Discard(DiscardReason::MissingBlocks));
            return;
        }
        let neg = t.negotiated();
        if let Some(reason) = t.not_cached {
            // Followed only to its end, which a short block marks.
            if data.len() < usize::from(neg.blksize) {
                self.end(key, End::Discard(reason));
            }
            return;
        }
        if first {
            let path = self.tmp_dir.join(format!("{:016x}.part", self.next_temp));
            self.next_temp += 1;
            let max = self.limits.max_file_size.min(self.space_left);
            t.quota_limited = self.space_left < self.limits.max_file_size;
            match Reassembly::create(path, neg.blksize, neg.tsize, max) {
                Ok(r) => t.reasm = Some(r),
                Err(e) => {
                    let reason = t.reason_for(&e);
                    self.fail(key, reason, &e);
                    return;
                }
            }
        }
        let mapped = t.blocks.on_data(block, data, neg.windowsize);
        let result = match mapped {
            DataMap::At(n) => t.insert(n, data),
            DataMap::Deferred => Ok(()),
            DataMap::Invalid => {
                if t.blocks.wrap == Wrap::Unknown {
                    // DATA 0 before any wrap: illegal, but harmless to skip.
                    self.stats.malformed += 1;
                    Ok(())
                } else {
                    Err(ReassemblyError::Inconsistent { block: 0 })
                }
            }
            DataMap::Flush(list) => list
                .into_iter()
                .try_for_each(|(n, d)| t.insert(n, &d))
                .and_then(|()| match t.blocks.map_known(block) {
                    Some(n) => t.insert(n, data),
                    None => Err(ReassemblyError::Inconsistent { block: 0 }),
                }),
        };
        self.after_insert(key, result);
    }

    fn ack(&mut self, key: Key, block: u16) {
        let Some(t) = self.transfers.get_mut(&key) else {
            return;
        };
        if block == 0 && !t.data_seen {
            t.ack0_seen = true;
            return;
        }
        let result = match t.blocks.on_ack(block) {
            Ok(None) => Ok(()),
            Ok(Some(list)) => list.into_iter().try_for_each(|(n, d)| t.insert(n, &d)),
            Err(()) => Err(ReassemblyError::Inconsistent { block: 0 }),
        };
        if let Some(last) = t.reasm.as_ref().and_then(Reassembly::last_block) {
            if t.blocks.wire_of(last) == Some(block) {
                // The client has it all; only reordered copies can still come.
                t.final_acked = true;
                t.linger_until = Some(t.last_activity + LINGER);
            }
        }
        self.after_insert(key, result);
    }

    fn after_insert(&mut self, key: Key, result: Result<(), ReassemblyError>) {
        let Some(t) = self.transfers.get_mut(&key) else {
            return;
        };
        if let Err(e) = result {
            let reason = t.reason_for(&e);
            self.fail(key, reason, &e);
        } else if t.reasm.as_ref().is_some_and(Reassembly::is_complete) {
            self.end(key, End::Finish);
        }
    }

    fn fail(&mut self, key: Key, reason: DiscardReason, e: &ReassemblyError) {
        match reason {
            DiscardReason::TooLarge => self.too_large(key, 0),
            DiscardReason::Io => {
                bootcache_metrics::warn_limited!("transfer {} -> {} ({}): {e}", key.1, key.2, key.0)
            }
            _ => debug!("transfer {} -> {} ({}): {e}", key.1, key.2, key.0),
        }
        self.end(key, End::Discard(reason));
    }

    fn end(&mut self, key: Key, outcome: End) {
        if self.end_quiet(key, outcome) {
            self.updates.push_back(FilterUpdate::Remove {
                scope: key.0,
                server: key.1,
                client: key.2,
            });
        }
    }

    /// Ends a transfer without touching its filter rule; false if unknown.
    fn end_quiet(&mut self, key: Key, outcome: End) -> bool {
        let Some(mut t) = self.transfers.remove(&key) else {
            return false;
        };
        if let std::collections::hash_map::Entry::Occupied(mut n) =
            self.per_client.entry((key.0, *key.2.ip()))
        {
            *n.get_mut() -= 1;
            if *n.get() == 0 {
                n.remove();
            }
        }
        let (scope, server, client) = key;
        let filename = t.name_lossy();
        let event = match outcome {
            End::Probe => Event::SizeProbe {
                client,
                server,
                filename,
            },
            End::Discard(reason) => Event::Discarded {
                client,
                server,
                filename,
                reason: t.not_cached.unwrap_or(reason),
            },
            End::Finish => {
                let r = t.reasm.take().map(Reassembly::finish);
                match r {
                    Some(Ok(done)) => Event::Completed(Completed {
                        scope,
                        server,
                        client,
                        filename,
                        size: done.size,
                        sha256: done.sha256,
                        file: done.file,
                    }),
                    Some(Err(e)) => Event::Discarded {
                        client,
                        server,
                        filename,
                        reason: t.reason_for(&e),
                    },
                    None => Event::Discarded {
                        client,
                        server,
                        filename,
                        reason: DiscardReason::MissingBlocks,
                    },
                }
            }
        };
        self.events.push_back(event);
        true
    }
}

/// How a transfer ends.
#[derive(Debug, Clone, Copy)]
enum End {
    Finish,
    Probe,
    Discard(DiscardReason),
}

/// The options in force for a transfer.
#[derive(Debug, Clone, Copy)]
struct Negotiated {
    blksize: u16,
    tsize: Option<u64>,
    windowsize: u16,
    timeout: Option<u8>,
}

impl Negotiated {
    /// A plain RFC 1350 transfer (the server ignored or got no options).
    const PLAIN: Negotiated = Negotiated {
        blksize: tftp::DEFAULT_BLKSIZE,
        tsize: None,
        windowsize: 1,
        timeout: None,
    };
}

#[derive(Debug)]
struct Transfer {
    filename: Vec<u8>,
    /// The UTF-8 file name the cache is keyed by.
    name: Option<String>,
    /// Why the transfer is followed but not cached, if so.
    not_cached: Option<DiscardReason>,
    rrq: Vec<u8>,
    asked_tsize: bool,
    asked_options: bool,
    asked_blksize: Option<u16>,
    /// The client acknowledged block 0 before any DATA: an OACK existed.
    ack0_seen: bool,
    tid: Option<u16>,
    oack: Option<Negotiated>,
    data_seen: bool,
    blocks: BlockMap,
    reasm: Option<Reassembly>,
    /// The reassembly's size limit is the quota's room, not the file limit.
    quota_limited: bool,
    last_activity: Instant,
    linger_until: Option<Instant>,
    final_acked: bool,
}

impl Transfer {
    fn negotiated(&self) -> Negotiated {
        self.oack.unwrap_or(Negotiated::PLAIN)
    }

    fn name_lossy(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => String::from_utf8_lossy(&self.filename).into_owned(),
        }
    }

    /// Whether DATA without a seen OACK may follow an OACK whose copy was
    /// lost: the client acknowledged one, or asked for blocks under 512
    /// bytes (a server that ignores options sends 512-byte blocks, one that
    /// grants a larger size sends longer ones, which the reassembly refuses).
    fn oack_may_be_lost(&self) -> bool {
        self.asked_options
            && (self.ack0_seen
                || self
                    .asked_blksize
                    .is_some_and(|b| b < tftp::DEFAULT_BLKSIZE))
    }

    /// Asked for `tsize`, got it in an OACK, and no data followed.
    fn is_probe_like(&self) -> bool {
        !self.data_seen && self.asked_tsize && self.oack.is_some_and(|o| o.tsize.is_some())
    }

    fn deadline(&self, limits: &Limits) -> Instant {
        let negotiated = self
            .oack
            .and_then(|o| o.timeout)
            .map(|s| Duration::from_secs(6 * u64::from(s)))
            .unwrap_or_default();
        let idle = self.last_activity + limits.idle_timeout.max(negotiated);
        match self.linger_until {
            Some(l) => l.min(idle),
            None => idle,
        }
    }

    fn insert(&mut self, n: u64, data: &[u8]) -> Result<(), ReassemblyError> {
        match &mut self.reasm {
            Some(r) => r.insert(n, data).map(|_| ()),
            None => Ok(()),
        }
    }

    fn reason_for(&self, e: &ReassemblyError) -> DiscardReason {
        match e {
            // Blocks over 512 bytes and no OACK seen: the OACK's copy was lost.
            ReassemblyError::Inconsistent { .. } if self.oack.is_none() && self.asked_options => {
                DiscardReason::MissingBlocks
            }
            ReassemblyError::Inconsistent { .. } => DiscardReason::Inconsistent,
            ReassemblyError::SizeMismatch { .. } => DiscardReason::SizeMismatch,
            ReassemblyError::TooLarge { .. } if self.quota_limited => DiscardReason::QuotaFull,
            ReassemblyError::TooLarge { .. } => DiscardReason::TooLarge,
            ReassemblyError::Incomplete | ReassemblyError::TooFarAhead { .. } => {
                DiscardReason::MissingBlocks
            }
            ReassemblyError::Io { .. } => DiscardReason::Io,
        }
    }
}

/// How block numbers continue after 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Wrap {
    /// No wrap seen yet.
    #[default]
    Unknown,
    /// 65535 is followed by 0 (most servers).
    ToZero,
    /// 65535 is followed by 1.
    ToOne,
}

/// Half the block-number space: how far from the highest block seen a block
/// number is still taken to be "near" it.
const HALF: u64 = 32768;
/// Bound on the DATA held back while the wrap style is unknown.
const MAX_DEFERRED_BYTES: usize = 8 << 20;

/// Maps wire block numbers to absolute indexes (see the module docs).
#[derive(Debug, Default)]
struct BlockMap {
    wrap: Wrap,
    /// Highest absolute index mapped so far.
    hi: u64,
    /// Blocks after the first wrap, held while `wrap` is unknown.
    deferred: Vec<(u16, Vec<u8>)>,
    deferred_bytes: usize,
}

enum DataMap {
    /// Store the block at this index.
    At(u64),
    /// Held back until the wrap style is known.
    Deferred,
    /// The number cannot occur here.
    Invalid,
    /// The wrap style just became known: store these, then the current block
    /// at [`BlockMap::map_known`].
    Flush(Held),
}

/// Held-back blocks, mapped: (absolute index, data).
type Held = Vec<(u64, Vec<u8>)>;

impl BlockMap {
    /// Whether `w` is a block number from after the first wrap (style unknown).
    fn past_first_wrap(&self, w: u16) -> bool {
        self.hi >= HALF && u64::from(w) + HALF < self.hi
    }

    fn on_data(&mut self, w: u16, data: &[u8], window: u16) -> DataMap {
        if self.wrap != Wrap::Unknown {
            return match self.map_known(w) {
                Some(n) => DataMap::At(n),
                None => DataMap::Invalid,
            };
        }
        if w == 0 {
            if self.hi < HALF {
                return DataMap::Invalid;
            }
            return self.resolve(Wrap::ToZero);
        }
        if !self.past_first_wrap(w) {
            self.hi = self.hi.max(u64::from(w));
            return DataMap::At(u64::from(w));
        }
        // After the wrap with no 0 seen: a block beyond the first window, or
        // too much held back, means the server wraps to 1.
        let window = usize::from(window.max(1));
        if usize::from(w) > window
            || self.deferred.len() >= 2 * window + 2
            || self.deferred_bytes + data.len() > MAX_DEFERRED_BYTES
        {
            return self.resolve(Wrap::ToOne);
        }
        self.deferred_bytes += data.len();
        self.deferred.push((w, data.to_vec()));
        DataMap::Deferred
    }

    /// An ACK copy: may tell the wrap style. `Err` if it contradicts it.
    fn on_ack(&mut self, w: u16) -> Result<Option<Held>, ()> {
        match self.wrap {
            Wrap::ToOne if w == 0 && self.hi > u64::from(u16::MAX) => Err(()),
            Wrap::Unknown if w == 0 && self.hi >= HALF => Ok(self.flush_to(Wrap::ToZero)),
            Wrap::Unknown if w != 0 && self.past_first_wrap(w) => Ok(self.flush_to(Wrap::ToOne)),
            _ => Ok(None),
        }
    }

    fn resolve(&mut self, wrap: Wrap) -> DataMap {
        DataMap::Flush(self.flush_to(wrap).unwrap_or_default())
    }

    fn flush_to(&mut self, wrap: Wrap) -> Option<Held> {
        self.wrap = wrap;
        self.deferred_bytes = 0;
        let held = std::mem::take(&mut self.deferred);
        let mut out = Vec::with_capacity(held.len());
        for (w, d) in held {
            // A held 0 cannot exist (it would have resolved to ToZero).
            if let Some(n) = self.map_known(w) {
                out.push((n, d));
            }
        }
        Some(out)
    }

    /// The absolute index of `w` nearest to the highest seen, for a known
    /// wrap style (or before any wrap); `None` if `w` cannot occur.
    fn map_known(&mut self, w: u16) -> Option<u64> {
        let (period, base) = match self.wrap {
            Wrap::ToZero => (65536i128, 0i128),
            Wrap::ToOne => (65535, 1),
            Wrap::Unknown => {
                return (w != 0).then_some(u64::from(w));
            }
        };
        if self.wrap == Wrap::ToOne && w == 0 {
            return None;
        }
        // n = k·period + off + base, with off = w - base.
        let off = i128::from(w) - base;
        let x = self.hi as i128 - base;
        let k0 = (x - off).div_euclid(period);
        let near = |k: i128| (k * period + off - x).abs();
        let k = if near(k0 + 1) < near(k0) { k0 + 1 } else { k0 };
        let n = k * period + off + base;
        if n < 1 {
            return None;
        }
        let n = n as u64;
        self.hi = self.hi.max(n);
        Some(n)
    }

    /// The wire number of absolute index `n`, if the wrap style allows saying.
    fn wire_of(&self, n: u64) -> Option<u16> {
        match self.wrap {
            Wrap::ToZero => Some((n % 65536) as u16),
            Wrap::ToOne => Some(((n - 1) % 65535 + 1) as u16),
            Wrap::Unknown => u16::try_from(n).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_all(m: &mut BlockMap, wires: &[u16], window: u16) -> Vec<u64> {
        let mut out = Vec::new();
        for &w in wires {
            match m.on_data(w, &[0], window) {
                DataMap::At(n) => out.push(n),
                DataMap::Deferred => {}
                DataMap::Invalid => panic!("invalid {w}"),
                DataMap::Flush(l) => {
                    out.extend(l.iter().map(|(n, _)| *n));
                    out.push(m.map_known(w).unwrap());
                }
            }
        }
        out
    }

    /// The same server, client address and client port on two VLANs are
    /// two transfers: each gets its own rule updates (in its scope), its
    /// own TID and its own data; ending one leaves the other.
    #[test]
    fn the_same_addresses_on_two_vlans_are_two_transfers() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tracker::new(dir.path().to_owned(), Limits::default());
        let now = Instant::now();
        let server = Ipv4Addr::new(10, 0, 0, 1);
        let client = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 5), 2070);
        let (v100, v200) = (
            VlanScope::new(Some(100), None),
            VlanScope::new(Some(200), None),
        );
        let rrq = Packet::Rrq(tftp::Request {
            filename: b"f",
            mode: tftp::Mode::OCTET,
            options: tftp::Options::default(),
        })
        .to_vec()
        .unwrap();
        let to_server = |port| SocketAddrV4::new(server, port);
        for scope in [v100, v200] {
            t.handle(now, Direction::ToServer, scope, client, to_server(69), &rrq);
        }
        assert_eq!((t.active(), t.stats().transfers_started), (2, 2));
        // Each answers from its own TID; a block from VLAN 100's TID on
        // VLAN 200 is another TID there, not VLAN 100's data.
        let data = |block: u16, byte: u8, len: usize| {
            Packet::Data {
                block,
                payload: &vec![byte; len],
            }
            .to_vec()
            .unwrap()
        };
        let dir_s = Direction::FromServer;
        t.handle(now, dir_s, v100, to_server(40000), client, &data(1, 1, 512));
        t.handle(now, dir_s, v200, to_server(50000), client, &data(1, 2, 512));
        t.handle(now, dir_s, v200, to_server(40000), client, &data(2, 9, 3));
        assert_eq!(t.stats().other_tid, 1);
        t.handle(now, dir_s, v100, to_server(40000), client, &data(2, 1, 3));
        t.handle(now, dir_s, v200, to_server(50000), client, &data(2, 2, 3));
        let updates: Vec<_> = std::iter::from_fn(|| t.poll_filter_update()).collect();
        assert_eq!(
            updates,
            [
                FilterUpdate::Expect {
                    scope: v100,
                    server,
                    client
                },
                FilterUpdate::Expect {
                    scope: v200,
                    server,
                    client
                },
                FilterUpdate::Pin {
                    scope: v100,
                    server: to_server(40000),
                    client
                },
                FilterUpdate::Pin {
                    scope: v200,
                    server: to_server(50000),
                    client
                },
                FilterUpdate::Remove {
                    scope: v100,
                    server,
                    client
                },
                FilterUpdate::Remove {
                    scope: v200,
                    server,
                    client
                },
            ]
        );
        // The short blocks were the last: both complete, each with its own
        // bytes and scope.
        let done: Vec<_> = std::iter::from_fn(|| t.poll_event())
            .filter_map(|e| match e {
                Event::Completed(c) => Some((c.scope, c.sha256)),
                _ => None,
            })
            .collect();
        assert_eq!(done.len(), 2);
        assert_eq!((done[0].0, done[1].0), (v100, v200));
        assert_ne!(done[0].1, done[1].1);
        assert_eq!(t.active(), 0);
    }

    #[test]
    fn wrap_to_zero_and_to_one_with_reordering() {
        // Wrap to 0, the window straddling the wrap and reordered in it.
        let mut m = BlockMap::default();
        let mut wires: Vec<u16> = (1..=65535).collect();
        wires.extend([2, 0, 1, 65534, 3]);
        let got = map_all(&mut m, &wires, 4);
        assert_eq!(m.wrap, Wrap::ToZero);
        // 2 is held until 0 tells the style, then flushed before it.
        assert_eq!(&got[65535..], &[65538, 65536, 65537, 65534, 65539]);

        // Wrap to 1: held back until a block beyond the window shows no 0.
        let mut m = BlockMap::default();
        let mut wires: Vec<u16> = (1..=65535).collect();
        wires.extend([2, 1, 3, 4, 5, 6]);
        let got = map_all(&mut m, &wires, 4);
        assert_eq!(m.wrap, Wrap::ToOne);
        assert_eq!(&got[65535..], &[65537, 65536, 65538, 65539, 65540, 65541]);
        assert_eq!(m.wire_of(65536), Some(1));
        // A 0 now contradicts the guess.
        assert!(matches!(m.on_data(0, &[0], 4), DataMap::Invalid));
        assert!(m.on_ack(0).is_err());
    }

    #[test]
    fn second_wrap_and_ack_evidence() {
        let mut m = BlockMap {
            wrap: Wrap::ToZero,
            hi: 3 * 65536 - 2,
            ..BlockMap::default()
        };
        assert_eq!(m.map_known(65535), Some(3 * 65536 - 1));
        assert_eq!(m.map_known(0), Some(3 * 65536));
        assert_eq!(m.map_known(65533), Some(3 * 65536 - 3));
        // Lock-step wrap to 1, told by the client's ACK of the new block 1.
        let mut m = BlockMap::default();
        let mut wires: Vec<u16> = (1..=65535).collect();
        wires.push(1);
        let got = map_all(&mut m, &wires, 1);
        assert_eq!(got.len(), 65535);
        let held = m.on_ack(1).unwrap().unwrap();
        assert_eq!(held.iter().map(|h| h.0).collect::<Vec<_>>(), [65536]);
        assert_eq!(m.wrap, Wrap::ToOne);
        // DATA 0 before any wrap cannot be mapped.
        let mut m = BlockMap::default();
        assert!(matches!(m.on_data(0, &[0], 1), DataMap::Invalid));
    }
}
