//! The cache logic of patent figure 9, as one sans-I/O object the slow-path
//! worker drives: it takes snooped frame copies and time, and gives back
//! header-filter updates, counters, a verified [`Filestore`] and the
//! [`ImageMap`].
//!
//! Per frame: classify; IPv4/UDP only; DHCP, BOOTP and PXE boot-service
//! (4011) messages go to the image map; TFTP to or from a configured boot
//! server goes to the [`Tracker`], after its UDP checksum is verified (a
//! corrupt copy must not become cached content). Completed transfers are
//! published into the filestore at once; each RRQ is recorded in the image
//! map.
//!
//! IPv4 fragments of UDP to or from a configured boot server (a TFTP block
//! larger than the MTU, e.g. `blksize` 8192 over Ethernet) go through the
//! [`Defragmenter`] first; a reassembled datagram whose UDP checksum
//! verifies is then handled exactly like a whole frame.
//!
//! The only I/O is the cache directory's files (reassembly, publishing, the
//! index); the clock is the caller's (`now` for timers, `wall` for metadata).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use log::{debug, error, info};
use wire::classify::{classify, Class, IpVersion, Kind};
use wire::frame::{IpProtocol, UdpFrameRepr, VlanScope};

use crate::defrag::{DefragLimits, DefragStats, Defragmenter, Outcome};
use crate::filestore::{Filestore, FilestoreError, Published};
use crate::imagemap::ImageMap;
use crate::limits::Limits;
use crate::tracker::{Direction, DiscardReason, Event, FilterUpdate, Tracker, TrackerStats};

/// UDP ports whose payloads are DHCP/BOOTP (67, 68) or PXE boot service (4011).
const DHCP_PORTS: [u16; 3] = [67, 68, 4011];

/// Transfers discarded, per [`DiscardReason`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiscardCounts([u64; DiscardReason::ALL.len()]);

impl DiscardCounts {
    /// The count for one reason.
    pub fn get(&self, reason: DiscardReason) -> u64 {
        self.0[reason.index()]
    }

    /// All discards.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// `(reason, count)` for every reason, in [`DiscardReason::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (DiscardReason, u64)> + '_ {
        DiscardReason::ALL.iter().map(|r| (*r, self.get(*r)))
    }

    fn bump(&mut self, reason: DiscardReason) {
        self.0[reason.index()] += 1;
    }
}

/// The slow path's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames handled.
    pub frames: u64,
    /// Frames that are not IPv4/UDP (IPv6, TCP, non-IP, malformed), IPv6
    /// fragments, and IPv4 fragments of other protocols.
    pub not_udp_v4: u64,
    /// UDP frames (and IPv4 UDP fragments) neither DHCP/PXE nor TFTP with a
    /// configured server.
    pub not_ours: u64,
    /// Frames, and reassembled datagrams, whose UDP checksum (or headers)
    /// did not verify.
    pub bad_checksum: u64,
    /// Frames that came in on the wrong side for what they claim to be:
    /// from a boot server (or a DHCP/PXE reply) received on the client
    /// side, or to a boot server (or a DHCP request) on the server side.
    /// Ignored: the side a frame entered on is the root of trust, whatever
    /// its addresses say.
    pub wrong_side: u64,
    /// IPv4 fragments of UDP to or from a boot server: fragments seen,
    /// datagrams reassembled, fragments and datagrams dropped by reason.
    pub defrag: DefragStats,
    /// DHCP/BOOTP/PXE messages handed to the image map.
    pub dhcp_messages: u64,
    /// The tracker's packet counters (requests, strays, limit hits, ...).
    pub tracker: TrackerStats,
    /// Transfers that completed, verified and were published (or refreshed
    /// an identical entry).
    pub transfers_completed: u64,
    /// UEFI-style size probes (neither a failure nor a file).
    pub size_probes: u64,
    /// Transfers discarded, by reason.
    pub discarded: DiscardCounts,
    /// Files newly cached (new keys).
    pub files_cached: u64,
    /// Completed transfers identical to the cached file (entry bumped).
    pub files_refreshed: u64,
    /// Cached files replaced by changed content.
    pub files_replaced: u64,
    /// Bytes written into the cache (new and replaced files).
    pub bytes_cached: u64,
    /// File bytes of every transfer from a boot server that completed (the
    /// origin's traffic the cache followed, cached or refreshed or not).
    pub origin_bytes: u64,
}

impl Counters {
    /// Transfers seen (tracked from their request).
    pub fn transfers_seen(&self) -> u64 {
        self.tracker.transfers_started
    }

    /// Times a resource bound was hit: requests over the transfer limit,
    /// files over the size limit, files refused by the quota.
    pub fn bounds_hit(&self) -> BoundsHit {
        BoundsHit {
            transfers: self.tracker.over_transfer_limit,
            file_size: self.discarded.get(DiscardReason::TooLarge),
            quota: self.discarded.get(DiscardReason::QuotaFull),
        }
    }
}

/// How often each resource bound was hit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BoundsHit {
    /// Requests not followed: [`Limits::max_transfers`] reached.
    pub transfers: u64,
    /// Transfers discarded over [`Limits::max_file_size`].
    pub file_size: u64,
    /// Files refused by [`Limits::quota_bytes`].
    pub quota: u64,
}

/// Why the cache logic could not start.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The filestore could not be opened.
    #[error("filestore: {0}")]
    Filestore(#[from] FilestoreError),
}

/// True when a datagram going `dir` may have entered on that side: towards
/// a server only from the client side, from a server only from the server
/// side. A host on the client side can put any addresses in a frame, never
/// the port it arrives on.
fn side_fits(from_client_side: bool, dir: Direction) -> bool {
    from_client_side == (dir == Direction::ToServer)
}

/// The slow path's cache logic: TFTP tracking, reassembly, the filestore
/// and the image map, fed with frames and time.
#[derive(Debug)]
pub struct CacheLogic {
    servers: Vec<Ipv4Addr>,
    defrag: Defragmenter,
    tracker: Tracker,
    filestore: Filestore,
    image_map: ImageMap,
    counters: Counters,
    /// Wall-clock time of the latest input, for metadata of events that a
    /// timer (which carries no wall time) produces.
    wall: SystemTime,
}

impl CacheLogic {
    /// Opens the cache in `cache_dir` (filestore and image map, reloaded if
    /// present) and follows TFTP with the boot `servers`. An empty list
    /// follows no TFTP (DHCP/PXE still feeds the image map).
    pub fn new(
        cache_dir: &Path,
        limits: Limits,
        servers: Vec<Ipv4Addr>,
    ) -> Result<Self, CacheError> {
        let mut filestore = Filestore::open(cache_dir)?;
        filestore.set_quota(limits.quota_bytes);
        filestore.set_watermarks(limits.watermarks);
        filestore.set_scrub_rate(limits.scrub_rate);
        filestore.set_share_across_vlans(limits.share_across_vlans);
        let mut image_map = match ImageMap::load_with(cache_dir, limits.image_map) {
            Ok(m) => m,
            Err(e) => {
                // The map is advisory; the cache is not lost with it.
                error!("image map not loaded, starting empty: {e}");
                ImageMap::new(cache_dir, limits.image_map)
            }
        };
        // From now on both persist on the filestore's writer thread.
        image_map.attach(filestore.writer());
        let mut tracker = Tracker::new(filestore.tmp_dir(), limits);
        tracker.set_space_left(filestore.space_left());
        Ok(CacheLogic {
            servers,
            defrag: Defragmenter::new(DefragLimits::default()),
            tracker,
            filestore,
            image_map,
            counters: Counters::default(),
            wall: UNIX_EPOCH,
        })
    }

    /// Replaces the boot servers whose TFTP is followed (a reload of the
    /// configuration); transfers under way with a server no longer listed
    /// end as they would (idle timeout), they are not cut short.
    pub fn set_servers(&mut self, servers: Vec<Ipv4Addr>) {
        self.servers = servers;
    }

    /// Replaces the bounds, the quota, its eviction watermarks and the scrub rate (a reload of the
    /// configuration). `share_across_vlans` and the image map's bounds are
    /// kept: they shape what is on disk.
    pub fn set_limits(&mut self, limits: Limits) {
        self.filestore.set_quota(limits.quota_bytes);
        self.filestore.set_watermarks(limits.watermarks);
        self.filestore.set_scrub_rate(limits.scrub_rate);
        self.tracker.set_limits(limits);
        self.tracker.set_space_left(self.filestore.space_left());
    }

    /// Replaces the IPv4 reassembly bounds (default: [`DefragLimits`]'s);
    /// datagrams in progress are dropped.
    pub fn set_defrag_limits(&mut self, limits: DefragLimits) {
        self.defrag.set_limits(limits);
    }

    /// Handles one snooped Ethernet frame copy, seen at `now` / `wall`, that
    /// entered the bridge on the client side (`from_client_side`) or the
    /// server side.
    pub fn handle_frame(
        &mut self,
        now: Instant,
        wall: SystemTime,
        from_client_side: bool,
        frame: &[u8],
    ) {
        self.wall = wall;
        self.counters.frames += 1;
        let c = classify(frame);
        if c.fragment
            && c.ip_version == Some(IpVersion::V4)
            && matches!(c.kind, Kind::Udp | Kind::Fragment)
        {
            self.handle_fragment(now, from_client_side, frame, &c);
            return;
        }
        if c.kind != Kind::Udp || c.ip_version != Some(IpVersion::V4) || c.fragment {
            self.counters.not_udp_v4 += 1;
            return;
        }
        let (Some(src_ip), Some(dst_ip)) = (c.src_v4(), c.dst_v4()) else {
            self.counters.not_udp_v4 += 1;
            return;
        };
        let src = SocketAddrV4::new(src_ip, c.src_port);
        let dst = SocketAddrV4::new(dst_ip, c.dst_port);
        // Strangers are counted before paying for the checksum.
        if self.route(src, dst).is_none() {
            self.counters.not_ours += 1;
            return;
        }
        // Verifies the checksums (classify reads headers only).
        let payload = match UdpFrameRepr::parse(frame) {
            Ok((_, p)) => p,
            Err(_) => {
                self.counters.bad_checksum += 1;
                return;
            }
        };
        let link = Link {
            from_client_side,
            src_mac: src_mac(frame),
            scope: c.vlan_scope(),
        };
        self.handle_udp(now, link, src, dst, payload);
    }

    /// An IPv4 fragment (first or later): UDP to or from a boot server is
    /// reassembled, and a complete datagram handled as a whole frame.
    fn handle_fragment(&mut self, now: Instant, from_client_side: bool, frame: &[u8], c: &Class) {
        let (Some(src_ip), Some(dst_ip)) = (c.src_v4(), c.dst_v4()) else {
            self.counters.not_udp_v4 += 1;
            return;
        };
        if c.protocol != IpProtocol::UDP.0 {
            self.counters.not_udp_v4 += 1;
            return;
        }
        // Later fragments carry no ports: the addresses decide.
        if !self.servers.contains(&src_ip) && !self.servers.contains(&dst_ip) {
            self.counters.not_ours += 1;
            return;
        }
        // Before reassembly: a fragment spoofed on the client side must
        // never complete a server's datagram.
        let dir = if self.servers.contains(&dst_ip) {
            Direction::ToServer
        } else {
            Direction::FromServer
        };
        if !side_fits(from_client_side, dir) {
            self.counters.wrong_side += 1;
            return;
        }
        let tags = usize::from(c.outer_vlan.is_some()) + usize::from(c.inner_vlan.is_some());
        let ip_packet = frame.get(14 + 4 * tags..).unwrap_or_default();
        let outcome = self.defrag.handle(now, ip_packet);
        self.counters.defrag = *self.defrag.stats();
        match outcome {
            Outcome::Complete(datagram) => match datagram.udp() {
                Ok((src, dst, payload)) => {
                    // The completing fragment's MAC: all came from one sender.
                    if self.route(src, dst).is_some() {
                        let link = Link {
                            from_client_side,
                            src_mac: src_mac(frame),
                            scope: c.vlan_scope(),
                        };
                        self.handle_udp(now, link, src, dst, payload);
                    } else {
                        self.counters.not_ours += 1;
                    }
                }
                Err(e) => {
                    debug!("reassembled datagram from {src_ip} to {dst_ip} dropped: {e}");
                    self.counters.bad_checksum += 1;
                }
            },
            Outcome::Held | Outcome::Dropped(_) => {}
            // classify saw MF or an offset; only a bad header gets here.
            Outcome::NotFragment => self.counters.not_udp_v4 += 1,
        }
    }

    /// Where a UDP datagram between `src` and `dst` goes, if anywhere (by
    /// its addresses and ports; [`side_fits`] then checks them against the
    /// side it came in on).
    fn route(&self, src: SocketAddrV4, dst: SocketAddrV4) -> Option<Route> {
        if DHCP_PORTS.contains(&dst.port()) || src.port() == 4011 {
            Some(Route::Dhcp)
        } else if self.servers.contains(dst.ip()) {
            Some(Route::Tftp(Direction::ToServer))
        } else if self.servers.contains(src.ip()) {
            Some(Route::Tftp(Direction::FromServer))
        } else {
            None
        }
    }

    /// A verified UDP datagram (from a whole frame or reassembled) that
    /// came as `link` says: DHCP/PXE to the image map, TFTP to the tracker.
    fn handle_udp(
        &mut self,
        now: Instant,
        link: Link,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        payload: &[u8],
    ) {
        let Link {
            from_client_side,
            src_mac,
            scope,
        } = link;
        let route = self.route(src, dst);
        let dir = match route {
            Some(Route::Tftp(dir)) => Some(dir),
            // A BOOTP reply (op 2: DHCP or PXE boot service, to a client or
            // a relay) comes from the server side, a request from the
            // client side. The ports cannot tell: relay and server both
            // use 67.
            Some(Route::Dhcp) if payload.first() == Some(&2) => Some(Direction::FromServer),
            Some(Route::Dhcp) => Some(Direction::ToServer),
            None => None,
        };
        if dir.is_some_and(|d| !side_fits(from_client_side, d)) {
            self.counters.wrong_side += 1;
            return;
        }
        match route {
            None => self.counters.not_ours += 1,
            Some(Route::Dhcp) => {
                self.counters.dhcp_messages += 1;
                self.image_map
                    .handle_dhcp(self.wall, src, dst, src_mac, payload);
            }
            Some(Route::Tftp(dir)) => {
                self.tracker.handle(now, dir, scope, src, dst, payload);
                // A request's MAC is the client's when it came from the
                // client side (a router's otherwise, which the map ignores).
                let mac = (from_client_side && dir == Direction::ToServer).then_some(src_mac);
                self.drain_events(mac);
            }
        }
    }

    /// Runs the timers due at `now` (idle transfers are dropped).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.defrag.handle_timeout(now);
        self.counters.defrag = *self.defrag.stats();
        self.tracker.handle_timeout(now);
        self.drain_events(None);
    }

    /// When [`CacheLogic::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.tracker.poll_timeout(), self.defrag.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next header-filter change for the fast path.
    pub fn poll_filter_update(&mut self) -> Option<FilterUpdate> {
        self.tracker.poll_filter_update()
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The verified cache.
    pub fn filestore(&self) -> &Filestore {
        &self.filestore
    }

    /// The verified cache, mutable ([`Filestore::check_verified`], [`Filestore::poll`]).
    pub fn filestore_mut(&mut self) -> &mut Filestore {
        &mut self.filestore
    }

    /// The image map (the worker persists it with [`ImageMap::persist`]).
    pub fn image_map(&self) -> &ImageMap {
        &self.image_map
    }

    /// The image map, mutable.
    pub fn image_map_mut(&mut self) -> &mut ImageMap {
        &mut self.image_map
    }

    /// Transfers tracked now.
    pub fn active_transfers(&self) -> usize {
        self.tracker.active()
    }

    fn drain_events(&mut self, client_mac: Option<[u8; 6]>) {
        while let Some(ev) = self.tracker.poll_event() {
            match ev {
                Event::RequestSeen {
                    client,
                    server,
                    filename,
                } => {
                    self.image_map.record_file(
                        self.wall,
                        *client.ip(),
                        client_mac,
                        server,
                        &filename,
                    );
                }
                Event::SizeProbe { .. } => self.counters.size_probes += 1,
                Event::Discarded {
                    client,
                    server,
                    filename,
                    reason,
                } => {
                    debug!("discarded {filename:?} from {server} to {client}: {reason}");
                    self.counters.discarded.bump(reason);
                }
                Event::Completed(done) => {
                    let (server, size) = (done.server, done.size);
                    self.counters.origin_bytes += size;
                    let r = self.filestore.publish(
                        self.wall,
                        (done.scope, server),
                        &done.filename,
                        done.file,
                        size,
                        done.sha256,
                    );
                    match r {
                        Ok(p) => {
                            self.counters.transfers_completed += 1;
                            match p {
                                Published::New => self.counters.files_cached += 1,
                                Published::Refreshed => self.counters.files_refreshed += 1,
                                Published::Replaced => self.counters.files_replaced += 1,
                            }
                            if p != Published::Refreshed {
                                self.counters.bytes_cached += size;
                                info!(
                                    "cached {:?} from {server} ({}): {size} bytes ({p:?})",
                                    done.filename, done.scope
                                );
                            }
                        }
                        Err(e @ FilestoreError::QuotaFull { .. }) => {
                            self.counters.discarded.bump(DiscardReason::QuotaFull);
                            let n = self.counters.discarded.get(DiscardReason::QuotaFull);
                            bootcache_metrics::warn_limited!(
                                "cache quota hit: {:?} not cached: {e} ({n} so far)",
                                done.filename
                            );
                        }
                        // The tracker normalises names: not reached, but
                        // not the disk's fault either.
                        // Counted by the writer (persist deferred): the
                        // disk is busy, not failing.
                        Err(FilestoreError::Deferred) => {
                            debug!("not cached (writer queue full): {:?}", done.filename);
                        }
                        Err(e @ FilestoreError::BadName { .. }) => {
                            self.counters.discarded.bump(DiscardReason::UnsupportedName);
                            bootcache_metrics::warn_limited!("not cached: {e}");
                        }
                        Err(e) => {
                            self.counters.discarded.bump(DiscardReason::Io);
                            error!("could not cache {:?}: {e}", done.filename);
                        }
                    }
                    self.tracker.set_space_left(self.filestore.space_left());
                }
            }
        }
        self.counters.tracker = *self.tracker.stats();
    }
}

/// How a datagram reached the bridge: the side it entered on, the sender's
/// MAC and the VLANs, read once from the frame's headers.
#[derive(Debug, Clone, Copy)]
struct Link {
    from_client_side: bool,
    src_mac: [u8; 6],
    scope: VlanScope,
}

/// Where a verified UDP datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// DHCP/BOOTP or PXE boot service: the image map.
    Dhcp,
    /// TFTP with a configured server: the tracker.
    Tftp(Direction),
}

/// The source MAC of a frame `classify` found to be IP (so at least 14 bytes).
fn src_mac(frame: &[u8]) -> [u8; 6] {
    frame
        .get(6..12)
        .and_then(|m| m.try_into().ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
