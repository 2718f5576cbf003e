//! IPv4 reassembly for the slow path (RFC 791, with RFC 815's hole list),
//! sans-I/O: fragments and time in, whole datagrams out.
//!
//! A TFTP server using `blksize` 8192 on a 1500-byte MTU link sends every
//! DATA block as a fragmented UDP datagram; the fast path copies the
//! fragments here and [`Defragmenter`] puts them back together so the cache
//! logic can treat the block like any other.
//!
//! Fragments are keyed by (source, destination, protocol, identification).
//! Each datagram in progress keeps its bytes and the list of holes still
//! missing; it is complete when its last fragment (MF clear) has fixed the
//! length and no hole is left.
//!
//! Everything here is hostile input, so:
//! - Overlaps are accepted only when the overlapping bytes agree (duplicated
//!   fragments); overlapping fragments that disagree drop the whole datagram
//!   ([`DropReason::OverlapConflict`], in the spirit of RFC 5722), as do two
//!   different lengths ([`DropReason::LengthConflict`]) and fragments past
//!   65535 bytes ([`DropReason::TooLarge`]). A dropped datagram stays as a
//!   tombstone until its timeout, so that its remaining fragments cannot
//!   start a new one.
//! - Memory is bounded: datagrams in progress, total buffered bytes and
//!   fragments per datagram ([`DefragLimits`]); past a bound the oldest
//!   datagram is evicted and counted.
//! - A datagram not complete within [`DefragLimits::timeout`] of its first
//!   fragment is dropped ([`Defragmenter::handle_timeout`]).
//! - Completed datagrams are not trusted either: [`Datagram::udp`] verifies
//!   the UDP length and checksum over the whole reassembled datagram.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use std::time::Instant;
//! use slowpath::defrag::{Defragmenter, DefragLimits, Outcome};
//!
//! // Two fragments of one 16-byte UDP-protocol payload, last one first.
//! fn fragment(offset: u16, more: bool, data: &[u8]) -> Vec<u8> {
//!     let total = 20 + data.len() as u16;
//!     let flags = (offset / 8) | if more { 0x2000 } else { 0 };
//!     let mut h = vec![0x45, 0, 0, 0, 0x12, 0x34, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
//!     h[2..4].copy_from_slice(&total.to_be_bytes());
//!     h[6..8].copy_from_slice(&flags.to_be_bytes());
//!     let mut p = wire::frame::ipv4::Packet::new_unchecked(&mut h[..]);
//!     p.fill_checksum();
//!     [h, data.to_vec()].concat()
//! }
//!
//! let mut d = Defragmenter::new(DefragLimits::default());
//! let now = Instant::now();
//! assert!(matches!(d.handle(now, &fragment(8, false, b"world!!!")), Outcome::Held));
//! let Outcome::Complete(dgram) = d.handle(now, &fragment(0, true, b"hello,  ")) else {
//!     panic!("complete")
//! };
//! assert_eq!(dgram.src, Ipv4Addr::new(10, 0, 0, 1));
//! assert_eq!(dgram.payload, b"hello,  world!!!");
//! assert_eq!(d.stats().reassembled, 1);
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;
use std::time::{Duration, Instant};

use wire::frame::{ipv4, udp, Error as WireError, IpAddrs, IpProtocol, Ipv4Repr, UdpRepr};

/// Largest IP payload a datagram can carry: a 65535-byte total length less
/// the smallest (20-byte) header.
pub const MAX_PAYLOAD: usize = u16::MAX as usize - ipv4::MIN_HEADER_LEN;

/// The defragmenter's bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefragLimits {
    /// Datagrams in progress at once (at least 1); a fragment of a new one
    /// past this evicts the oldest.
    pub max_datagrams: usize,
    /// Bytes buffered over all datagrams in progress (at least
    /// [`MAX_PAYLOAD`], so one datagram always fits); past this the oldest
    /// datagrams are evicted.
    pub max_buffered_bytes: usize,
    /// Fragments (duplicates included) one datagram may take; past this it
    /// is dropped. Keeps the per-fragment hole walk short.
    pub max_fragments: usize,
    /// How long after its first fragment a datagram may take to complete.
    pub timeout: Duration,
}

impl Default for DefragLimits {
    fn default() -> Self {
        DefragLimits {
            max_datagrams: 256,
            max_buffered_bytes: 16 << 20,
            // A 64 KiB datagram over a 576-byte MTU takes 117 fragments.
            max_fragments: 256,
            timeout: Duration::from_secs(2),
        }
    }
}

/// Why a fragment or a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A fragment (counted per fragment) with a bad IPv4 header (version,
    /// lengths, header checksum) or, with MF set, empty or not a multiple of
    /// 8 bytes long.
    Malformed,
    /// A fragment reaching past [`MAX_PAYLOAD`]: its datagram is dropped.
    TooLarge,
    /// Overlapping fragments whose common bytes differ: datagram dropped.
    OverlapConflict,
    /// Last fragments disagreeing on the length, or data past the length
    /// the last fragment gave: datagram dropped.
    LengthConflict,
    /// More than [`DefragLimits::max_fragments`] fragments: datagram dropped.
    TooManyFragments,
    /// Not complete within [`DefragLimits::timeout`]: datagram dropped.
    Timeout,
    /// Evicted, oldest first, to stay within [`DefragLimits::max_datagrams`]
    /// or [`DefragLimits::max_buffered_bytes`]: datagram dropped.
    Evicted,
    /// A later fragment of a datagram already dropped (counted per
    /// fragment).
    AfterDrop,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 8] = [
        DropReason::Malformed,
        DropReason::TooLarge,
        DropReason::OverlapConflict,
        DropReason::LengthConflict,
        DropReason::TooManyFragments,
        DropReason::Timeout,
        DropReason::Evicted,
        DropReason::AfterDrop,
    ];

    /// Position in [`DropReason::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Short `snake_case` name for counters and logs.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::TooLarge => "too_large",
            DropReason::OverlapConflict => "overlap_conflict",
            DropReason::LengthConflict => "length_conflict",
            DropReason::TooManyFragments => "too_many_fragments",
            DropReason::Timeout => "timeout",
            DropReason::Evicted => "evicted",
            DropReason::AfterDrop => "after_drop",
        }
    }
}

impl core::fmt::Display for DropReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Drops, per [`DropReason`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::ALL.len()]);

impl DropCounts {
    /// The count for one reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// `(reason, count)` for every reason, in [`DropReason::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (*r, self.get(*r)))
    }

    fn bump(&mut self, reason: DropReason) {
        self.0[reason.index()] += 1;
    }
}

/// The defragmenter's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefragStats {
    /// Fragments handled.
    pub fragments: u64,
    /// Datagrams reassembled.
    pub reassembled: u64,
    /// Fragments and datagrams dropped, by reason.
    pub dropped: DropCounts,
}

/// A reassembled datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: IpProtocol,
    /// Identification shared by the fragments.
    pub ident: u16,
    /// The whole IP payload (for UDP: header and data).
    pub payload: Vec<u8>,
}

impl Datagram {
    /// The UDP datagram inside: source, destination and payload, after
    /// checking that it is UDP, that the UDP length is exactly the
    /// reassembled length and that the checksum verifies over the IPv4
    /// pseudo-header (a checksum of zero means none, as RFC 768 allows).
    pub fn udp(&self) -> Result<(SocketAddrV4, SocketAddrV4, &[u8]), WireError> {
        if self.protocol != IpProtocol::UDP {
            return Err(WireError::Unsupported);
        }
        let packet = udp::Packet::new_checked(&self.payload[..])?;
        // Bytes past the UDP length would be reassembled but unchecked.
        if usize::from(packet.len()) != self.payload.len() {
            return Err(WireError::BadLength);
        }
        let addrs = IpAddrs::V4 {
            src: self.src,
            dst: self.dst,
        };
        let repr = UdpRepr::parse(&packet, &addrs)?;
        Ok((
            SocketAddrV4::new(self.src, repr.src_port),
            SocketAddrV4::new(self.dst, repr.dst_port),
            packet.payload(),
        ))
    }
}

/// What [`Defragmenter::handle`] did with a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A valid IPv4 packet that is not a fragment: handle it as it is.
    NotFragment,
    /// Kept: its datagram is not complete yet.
    Held,
    /// This fragment completed its datagram.
    Complete(Datagram),
    /// This fragment was dropped, and its datagram too unless the reason is
    /// [`DropReason::Malformed`] (counted in [`DefragStats::dropped`]).
    Dropped(DropReason),
}

/// Fragments belong together when these agree (RFC 791).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    ident: u16,
}

/// A datagram in progress.
#[derive(Debug)]
struct Partial {
    /// Creation order: the oldest is evicted first and times out first.
    seq: u64,
    deadline: Instant,
    /// Bytes received so far, at their offsets (gaps zero-filled).
    buf: Vec<u8>,
    /// Byte ranges still missing, sorted and disjoint; the last one ends at
    /// `usize::MAX` until the last fragment gives the length.
    holes: Vec<Range<usize>>,
    /// The payload length, once the last fragment has been seen.
    total: Option<usize>,
    /// End of the furthest byte received.
    max_end: usize,
    fragments: usize,
    /// Dropped: a tombstone that absorbs the remaining fragments.
    dead: bool,
}

impl Partial {
    fn new(seq: u64, deadline: Instant) -> Self {
        let mut p = Partial {
            seq,
            deadline,
            buf: Vec::new(),
            holes: Vec::new(),
            total: None,
            max_end: 0,
            fragments: 0,
            dead: false,
        };
        // At first, everything is missing.
        p.holes.push(0..usize::MAX);
        p
    }
}

/// IPv4 fragment reassembly, fed with IPv4 packets and time.
#[derive(Debug)]
pub struct Defragmenter {
    limits: DefragLimits,
    partials: HashMap<Key, Partial>,
    /// `seq` → key, oldest first (eviction and the timer).
    order: BTreeMap<u64, Key>,
    next_seq: u64,
    /// Sum of the capacities of the partials' buffers.
    buffered: usize,
    stats: DefragStats,
    /// Reused while splitting holes.
    scratch: Vec<Range<usize>>,
}

impl Defragmenter {
    /// A defragmenter with these bounds (raised to their minimums).
    pub fn new(limits: DefragLimits) -> Self {
        let mut d = Defragmenter {
            limits: DefragLimits::default(),
            partials: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            buffered: 0,
            stats: DefragStats::default(),
            scratch: Vec::new(),
        };
        d.set_limits(limits);
        d
    }

    /// Replaces the bounds (raised to their minimums). Datagrams in
    /// progress are dropped, uncounted; the counters carry on.
    pub fn set_limits(&mut self, mut limits: DefragLimits) {
        limits.max_datagrams = limits.max_datagrams.max(1);
        limits.max_buffered_bytes = limits.max_buffered_bytes.max(MAX_PAYLOAD);
        limits.max_fragments = limits.max_fragments.max(1);
        self.limits = limits;
        self.partials.clear();
        self.order.clear();
        self.buffered = 0;
    }

    /// The bounds in force.
    pub fn limits(&self) -> &DefragLimits {
        &self.limits
    }

    /// The counters.
    pub fn stats(&self) -> &DefragStats {
        &self.stats
    }

    /// Datagrams in progress (tombstones of dropped ones included).
    pub fn in_progress(&self) -> usize {
        self.partials.len()
    }

    /// Bytes buffered for datagrams in progress.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Handles one IPv4 packet (from its IP header on; Ethernet padding
    /// after the total length is ignored) seen at `now`.
    pub fn handle(&mut self, now: Instant, packet: &[u8]) -> Outcome {
        let parsed =
            ipv4::Packet::new_checked(packet).and_then(|p| Ipv4Repr::parse(&p).map(|r| (p, r)));
        let Ok((packet, repr)) = parsed else {
            self.stats.fragments += 1;
            return self.drop_fragment(DropReason::Malformed);
        };
        if !repr.more_frags && repr.frag_offset == 0 {
            return Outcome::NotFragment;
        }
        self.stats.fragments += 1;
        let data = packet.payload();
        let start = usize::from(repr.frag_offset);
        let end = start + data.len();
        // RFC 791: every fragment but the last carries a non-zero multiple
        // of 8 bytes (so a first fragment holds at least the UDP header).
        if repr.more_frags && (data.is_empty() || data.len() % 8 != 0) {
            return self.drop_fragment(DropReason::Malformed);
        }
        let key = Key {
            src: repr.src_addr,
            dst: repr.dst_addr,
            protocol: repr.protocol.0,
            ident: repr.ident,
        };
        if end > MAX_PAYLOAD {
            // Ping-of-death style: no such datagram can exist.
            if self.partials.get(&key).is_some_and(|p| !p.dead) {
                self.kill(key, DropReason::TooLarge);
            } else {
                self.stats.dropped.bump(DropReason::TooLarge);
            }
            return Outcome::Dropped(DropReason::TooLarge);
        }
        self.expire_if_due(now, key);
        if !self.partials.contains_key(&key) {
            self.make_room_for_one();
            let seq = self.next_seq;
            self.next_seq += 1;
            let deadline = now + self.limits.timeout;
            self.partials.insert(key, Partial::new(seq, deadline));
            self.order.insert(seq, key);
        }
        self.add(key, start, data, repr.more_frags)
    }

    /// Runs the timer: datagrams whose time is up are dropped.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((_, key)) = self.order.first_key_value() {
            let key = *key;
            match self.partials.get(&key) {
                Some(p) if p.deadline <= now => {
                    let dead = p.dead;
                    self.remove(key);
                    if !dead {
                        self.stats.dropped.bump(DropReason::Timeout);
                    }
                }
                _ => break,
            }
        }
    }

    /// When [`Defragmenter::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Deadlines are creation time plus a constant: the oldest is next.
        let (_, key) = self.order.first_key_value()?;
        self.partials.get(key).map(|p| p.deadline)
    }

    fn drop_fragment(&mut self, reason: DropReason) -> Outcome {
        self.stats.dropped.bump(reason);
        Outcome::Dropped(reason)
    }

    /// Puts one fragment's `data` at `start` into the partial at `key`.
    fn add(&mut self, key: Key, start: usize, data: &[u8], more_frags: bool) -> Outcome {
        let end = start + data.len();
        let limits = &self.limits;
        let Some(p) = self.partials.get_mut(&key) else {
            return Outcome::Held; // not reached: the caller inserted it
        };
        if p.dead {
            return self.drop_fragment(DropReason::AfterDrop);
        }
        p.fragments += 1;
        if p.fragments > limits.max_fragments {
            return self.kill(key, DropReason::TooManyFragments);
        }
        let length_ok = if more_frags {
            p.total.is_none_or(|t| end <= t)
        } else {
            p.total.is_none_or(|t| t == end) && p.max_end <= end
        };
        if !length_ok {
            return self.kill(key, DropReason::LengthConflict);
        }
        // Bytes of [start, end) not in a hole were received before: they
        // must be the same bytes again.
        let mut at = start;
        let mut agrees = true;
        for hole in p.holes.iter().filter(|h| h.end > start && h.start < end) {
            if hole.start > at {
                agrees &= p.buf[at..hole.start] == data[at - start..hole.start - start];
            }
            at = at.max(hole.end);
        }
        if at < end {
            agrees &= p.buf[at..end] == data[at - start..];
        }
        if !agrees {
            return self.kill(key, DropReason::OverlapConflict);
        }
        if end > p.buf.len() {
            self.grow(key, end);
        }
        let Some(p) = self.partials.get_mut(&key) else {
            return Outcome::Held; // not reached: grow never evicts `key`
        };
        p.buf[start..end].copy_from_slice(data);
        p.max_end = p.max_end.max(end);
        // RFC 815: the holes this fragment touches shrink or split.
        self.scratch.clear();
        for hole in p.holes.drain(..) {
            if hole.end <= start || hole.start >= end {
                self.scratch.push(hole);
                continue;
            }
            if hole.start < start {
                self.scratch.push(hole.start..start);
            }
            if hole.end > end {
                self.scratch.push(end..hole.end);
            }
        }
        std::mem::swap(&mut p.holes, &mut self.scratch);
        if !more_frags {
            p.total = Some(end);
            p.holes.retain(|h| h.start < end);
            if let Some(last) = p.holes.last_mut() {
                last.end = last.end.min(end);
            }
        }
        let (Some(total), true) = (p.total, p.holes.is_empty()) else {
            return Outcome::Held;
        };
        let seq = p.seq;
        let mut buf = std::mem::take(&mut p.buf);
        self.buffered -= buf.capacity();
        self.partials.remove(&key);
        self.order.remove(&seq);
        buf.truncate(total);
        self.stats.reassembled += 1;
        Outcome::Complete(Datagram {
            src: key.src,
            dst: key.dst,
            protocol: IpProtocol(key.protocol),
            ident: key.ident,
            payload: buf,
        })
    }

    /// Grows the buffer of the partial at `key` to hold `end` bytes,
    /// evicting the oldest other datagrams if the byte bound needs it.
    fn grow(&mut self, key: Key, end: usize) {
        let (old_cap, want) = match self.partials.get(&key) {
            Some(p) => {
                let cap = p.buf.capacity();
                // The length once known; else amortised doubling.
                let want = p
                    .total
                    .unwrap_or_else(|| cap.saturating_mul(2).min(MAX_PAYLOAD))
                    .max(end);
                (cap, want)
            }
            None => return,
        };
        let extra = want.saturating_sub(old_cap);
        while self.buffered + extra > self.limits.max_buffered_bytes {
            let oldest_other = self.order.values().copied().find(|k| *k != key);
            match oldest_other {
                Some(k) => self.evict(k),
                None => break, // the bound is at least one datagram
            }
        }
        if let Some(p) = self.partials.get_mut(&key) {
            p.buf.reserve_exact(want - p.buf.len());
            p.buf.resize(end, 0);
            self.buffered = self.buffered - old_cap + p.buf.capacity();
        }
    }

    /// Evicts oldest datagrams until a new one fits the count bound.
    fn make_room_for_one(&mut self) {
        while self.partials.len() >= self.limits.max_datagrams {
            let Some((_, key)) = self.order.first_key_value() else {
                return;
            };
            let key = *key;
            self.evict(key);
        }
    }

    fn evict(&mut self, key: Key) {
        let dead = self.partials.get(&key).is_some_and(|p| p.dead);
        self.remove(key);
        // A tombstone was counted when its datagram was dropped.
        if !dead {
            self.stats.dropped.bump(DropReason::Evicted);
        }
    }

    /// Drops the datagram at `key`, keeping a tombstone until its deadline.
    fn kill(&mut self, key: Key, reason: DropReason) -> Outcome {
        if let Some(p) = self.partials.get_mut(&key) {
            self.buffered -= p.buf.capacity();
            p.buf = Vec::new();
            p.holes = Vec::new();
            p.dead = true;
        }
        self.drop_fragment(reason)
    }

    /// Drops a datagram that timed out before the timer ran.
    fn expire_if_due(&mut self, now: Instant, key: Key) {
        if let Some(p) = self.partials.get(&key) {
            if p.deadline <= now {
                let dead = p.dead;
                self.remove(key);
                if !dead {
                    self.stats.dropped.bump(DropReason::Timeout);
                }
            }
        }
    }

    fn remove(&mut self, key: Key) {
        if let Some(p) = self.partials.remove(&key) {
            self.buffered -= p.buf.capacity();
            self.order.remove(&p.seq);
        }
    }
}

#[cfg(test)]
mod tests;
