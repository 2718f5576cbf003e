//! The published, immutable filter table and its dynamic-rule hash.
//!
//! A [`Table`] is never changed once published: the writer builds the next
//! one and swaps it in. The dynamic rules live in [`SHARDS`] open-addressed
//! shards shared (`Arc`) between successive tables, so a publish copies only
//! the shards its changes touched: with 10,000 rules a shard holds ~160 of
//! them in 512 slots (16 KiB), and installing one expectation and publishing
//! costs ~1.4 µs, well inside the time a boot server takes to answer the RRQ
//! that caused it.

use std::sync::Arc;

use wire::classify::{Class, IpVersion, Kind};

use super::prefilter::Prefilter;
use super::{Action, RuleId, StaticRule, STATIC_RULES};

/// Dynamic-rule shards; a power of two, selected by the top hash bits.
pub(super) const SHARDS: usize = 64;
const SHARD_SHIFT: u32 = 64 - SHARDS.trailing_zeros();

/// A shard whose longest probe run exceeds this makes the writer re-key the
/// table (see [`Shard::build`]). At load <= 1/2 linear probing rarely passes 20.
pub(super) const PROBE_LIMIT: usize = 32;

/// Marks an occupied slot in [`Slot::tag`]; an empty slot's tag is 0.
const OCCUPIED: u64 = 1 << 63;
const PINNED: u8 = 1;
const TRAP: u8 = 2;

pub(super) const PROTO_UDP: u8 = 17;
pub(super) const ETHERTYPE_ARP: u16 = 0x0806;
const PORT_DHCP_SERVER: u16 = 67;
const PORT_DHCP_CLIENT: u16 = 68;
const PORT_TFTP: u16 = 69;
const PORT_BOOT_SERVICE: u16 = 4011;

/// Client address split into the words the hash and compare read.
#[inline(always)]
pub(super) fn addr_words(addr: &[u8; 16]) -> (u64, u64) {
    let a = u128::from_ne_bytes(*addr);
    (a as u64, (a >> 64) as u64)
}

/// The third key word: occupancy, VLAN scope (24 bits from bit 24),
/// server index (below [`super::MAX_SERVERS`], bits 16..22) and client port.
#[inline(always)]
pub(super) fn tag(scope: u32, server: usize, client_port: u16) -> u64 {
    OCCUPIED | u64::from(scope) << 24 | (server as u64) << 16 | u64::from(client_port)
}

/// 64x64 -> 128-bit multiply folded back to 64 bits (foldhash's and wyhash's
/// core step). One `mul` on x86-64.
#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Keyed hash of a dynamic-rule key.
///
/// Why not SipHash (std's `RandomState`): it costs ~15-20 ns for these 34
/// bytes, more than classifying the frame. Why not an unkeyed hash: the
/// client port, and on a shared segment the client address, are chosen by
/// whoever sends the RRQ, so fixed collisions could be mined offline and
/// turned into long probe runs. This is foldhash's construction, two folded
/// multiplies (~1.5 ns), keyed with 256 random bits the fast path never
/// reveals; on top of that a shard whose probe run still grows past
/// [`PROBE_LIMIT`] makes the writer re-key the whole table, so a lookup is
/// bounded whatever the keys.
#[inline(always)]
pub(super) fn hash(seed: &[u64; 4], lo: u64, hi: u64, tag: u64) -> u64 {
    let h = fold_mul(lo ^ seed[0], hi ^ seed[1]);
    fold_mul(h ^ seed[2], tag ^ seed[3])
}

#[inline(always)]
pub(super) fn shard_of(h: u64) -> usize {
    (h >> SHARD_SHIFT) as usize
}

/// One dynamic rule in a shard: 32 bytes, two per cache line.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(32))]
struct Slot {
    lo: u64,
    hi: u64,
    tag: u64,
    rule: u32,
    server_port: u16,
    flags: u8,
}

/// What the writer stores per dynamic rule; the slot's value half.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) rule: RuleId,
    /// The server's TID once pinned; `None` matches any server port.
    pub(super) server_port: Option<u16>,
    pub(super) trap: bool,
}

/// A key as the writer keeps it: (client address words, tag with the VLAN
/// scope, server index and client port).
pub(super) type Key = (u64, u64, u64);

/// An open-addressed, linearly probed array at load <= 1/2.
#[derive(Debug)]
pub(super) struct Shard {
    slots: Box<[Slot]>,
    mask: usize,
    /// Longest distance of any key from its home slot: a lookup stops there.
    pub(super) max_probe: usize,
}

impl Shard {
    pub(super) fn empty() -> Shard {
        Shard {
            slots: vec![Slot::default(); 1].into_boxed_slice(),
            mask: 0,
            max_probe: 0,
        }
    }

    /// Builds a shard holding `entries`; `None` if some probe run would
    /// exceed `limit` (the caller re-keys).
    pub(super) fn build<'a>(
        seed: &[u64; 4],
        len: usize,
        entries: impl Iterator<Item = (&'a Key, &'a Entry)>,
        limit: usize,
    ) -> Option<Shard> {
        let cap = (len * 2).next_power_of_two().max(8);
        let mask = cap - 1;
        let mut slots = vec![Slot::default(); cap].into_boxed_slice();
        let mut max_probe = 0;
        for (&(lo, hi, tag), e) in entries {
            let mut i = hash(seed, lo, hi, tag) as usize & mask;
            let mut dist = 0;
            while slots[i].tag != 0 {
                i = (i + 1) & mask;
                dist += 1;
            }
            if dist > limit {
                return None;
            }
            max_probe = max_probe.max(dist);
            let mut flags = 0;
            if e.server_port.is_some() {
                flags |= PINNED;
            }
            if e.trap {
                flags |= TRAP;
            }
            slots[i] = Slot {
                lo,
                hi,
                tag,
                rule: e.rule.0,
                server_port: e.server_port.unwrap_or(0),
                flags,
            };
        }
        Some(Shard {
            slots,
            mask,
            max_probe,
        })
    }

    #[inline(always)]
    fn get(&self, h: u64, lo: u64, hi: u64, tag: u64, server_port: u16) -> Option<Action> {
        let home = h as usize & self.mask;
        for d in 0..=self.max_probe {
            let s = self.slots.get((home + d) & self.mask)?;
            if s.tag == tag && s.lo == lo && s.hi == hi {
                // A pinned rule wants the server's TID; any other port is
                // some other flow between the same two hosts.
                if s.flags & PINNED != 0 && s.server_port != server_port {
                    return None;
                }
                let id = RuleId(s.rule);
                return Some(if s.flags & TRAP != 0 {
                    Action::Trap(id)
                } else {
                    Action::Copy(id)
                });
            }
            if s.tag == 0 {
                return None;
            }
        }
        None
    }
}

/// One published version of the header filter table: static rules, the
/// boot servers, the DSCP mark and the dynamic (per-transfer) rules.
///
/// Obtained from [`super::FilterReader::load`]; immutable, so a burst sees
/// one consistent version however the slow path changes the rules meanwhile.
#[derive(Debug, Clone)]
pub struct Table {
    pub(super) generation: u64,
    pub(super) seed: [u64; 4],
    pub(super) shards: [Arc<Shard>; SHARDS],
    pub(super) dynamic_len: usize,
    /// Server addresses (IPv4-mapped as in [`Class`]) by stable index;
    /// configured servers first, free indexes hold [`NO_SERVER`].
    pub(super) servers: Box<[u128]>,
    pub(super) configured: usize,
    /// One bit per value of an address's last byte, set for every server: a
    /// frame whose peer fails this test (most of them) skips the server scan.
    pub(super) server_bits: [u64; 4],
    pub(super) statics: [Action; STATIC_RULES],
    /// The DSCP mark, or 0x100 (no DSCP value) when none is configured.
    pub(super) dscp_mark: u16,
    /// Addressed mode's own IPv4 address (IPv4-mapped), or [`NO_SERVER`].
    pub(super) own: u128,
    /// What [`Table::may_match`] compares, derived from the fields above.
    pub(super) pre: Prefilter,
}

/// Fills free server indexes: ff..ff is the all-nodes-style multicast
/// pattern no boot server has, and even if a frame carries it, the index it
/// finds has no rules.
pub(super) const NO_SERVER: u128 = u128::MAX;

impl Table {
    /// Publish counter of this version (0 for the table built at start).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of dynamic rules in this version.
    pub fn dynamic_len(&self) -> usize {
        self.dynamic_len
    }

    /// Index of `addr` among the boot servers (configured or learned).
    #[inline(always)]
    fn server_index(&self, addr: &[u8; 16]) -> Option<usize> {
        let b = addr[15];
        if (self.server_bits[usize::from(b >> 6)] >> (b & 63)) & 1 == 0 {
            return None;
        }
        let a = u128::from_ne_bytes(*addr);
        self.servers.iter().position(|&s| s == a)
    }

    /// What to do with a frame received on `side` (0: client side, any
    /// other value: server side) that classified as `c`. Never panics.
    ///
    /// Precedence: bootcache's own address (addressed mode), then a dynamic
    /// rule (so a transfer can be trapped whatever its ports), then the
    /// static port rules, then the DSCP mark (server side only).
    ///
    /// Measured cost (`cargo bench -p dataplane --bench filter`, this 2-core
    /// AMD EPYC VM, bursts of 32 with one [`super::FilterReader::load`]
    /// each): on the bench's mix with 1% matching, 1.8 ns per frame for the
    /// lookup alone, the same with no dynamic rules or 10,000 of them;
    /// classification + lookup + hit count 8.6 ns against 5.8 ns for
    /// classification alone (1.5x, +2.8 ns). A frame that probes the
    /// dynamic table and hits: 5 ns, 7 ns when successive probes are spread
    /// over all 10,000 rules (~1 MiB of slots, out of L1).
    #[inline]
    pub fn lookup(&self, side: usize, c: &Class) -> Action {
        let from_client = side == 0;
        // The rx side says which end is the server, so one key (VLANs,
        // server, client, client port) serves both directions of a transfer.
        let (server, client, client_port, server_port) = if from_client {
            (&c.dst_addr, &c.src_addr, c.src_port, c.dst_port)
        } else {
            (&c.src_addr, &c.dst_addr, c.dst_port, c.src_port)
        };
        // One compare for every frame; only IPv4 and ARP (whose target the
        // classifier stores in `dst_addr`) can carry an IPv4-mapped address
        // here, and `own` is NO_SERVER when addressed mode is off.
        if u128::from_ne_bytes(c.dst_addr) == self.own
            && (c.ip_version == Some(IpVersion::V4)
                || (c.kind == Kind::NonIp && c.ethertype == ETHERTYPE_ARP))
        {
            return self.statics[StaticRule::OwnAddress as usize];
        }
        match c.kind {
            Kind::Udp => {
                if let Some(idx) = self.server_index(server) {
                    if self.dynamic_len != 0 {
                        let (lo, hi) = addr_words(client);
                        // Two VLANs may reuse addresses: the tags are part
                        // of the key (a few register ops, no extra load).
                        let tag = tag(c.vlan_scope().packed(), idx, client_port);
                        let h = hash(&self.seed, lo, hi, tag);
                        if let Some(a) = self.shards[shard_of(h)].get(h, lo, hi, tag, server_port) {
                            return a;
                        }
                    }
                    if idx < self.configured {
                        let rule = match (from_client, server_port) {
                            (true, PORT_TFTP) => Some(StaticRule::TftpRequest),
                            (true, PORT_BOOT_SERVICE) => Some(StaticRule::BootServiceRequest),
                            (false, PORT_BOOT_SERVICE) => Some(StaticRule::BootServiceReply),
                            // DHCP replies go to the DHCP rule below.
                            (false, _)
                                if c.src_port != PORT_DHCP_SERVER
                                    && self.statics[StaticRule::ServerUdp as usize]
                                        != Action::Forward =>
                            {
                                Some(StaticRule::ServerUdp)
                            }
                            _ => None,
                        };
                        if let Some(r) = rule {
                            return self.statics[r as usize];
                        }
                    }
                }
                // DHCP is broadcast or relayed: the addresses say nothing.
                if from_client {
                    if c.dst_port == PORT_DHCP_SERVER {
                        return self.statics[StaticRule::DhcpClient as usize];
                    }
                } else if c.src_port == PORT_DHCP_SERVER && c.dst_port == PORT_DHCP_CLIENT {
                    return self.statics[StaticRule::DhcpServer as usize];
                }
            }
            // Later fragments carry no ports: a TFTP block larger than the
            // MTU arrives as a first fragment (matched above) and these.
            Kind::Fragment if c.protocol == PROTO_UDP && self.server_index(server).is_some() => {
                return self.statics[StaticRule::ServerFragment as usize];
            }
            _ => {}
        }
        // The mark is the boot server's: only the server side can carry it
        // (a host on the client side can set any DSCP, and must not get
        // its frames copied as the server's).
        if !from_client && u16::from(c.dscp) == self.dscp_mark {
            return self.statics[StaticRule::DscpMark as usize];
        }
        Action::Forward
    }
}
