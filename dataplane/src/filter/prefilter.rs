//! The header filter's first stage (issue 11): a few fixed-offset header
//! reads that clear most frames without classifying them.
//!
//! [`Table::may_match`] answers false only when no rule of the table can
//! match the frame: then [`Table::lookup`] of its classification is
//! [`Action::Forward`], so the fast path forwards it at once. Everything it
//! is unsure of answers true, and classification plus lookup decide.
//!
//! What the table precomputes when it is built or published
//! ([`Prefilter::new`]), never per frame: the IPv4 boot servers (configured
//! and learned from dynamic rules) as an exact set of up to four, compared
//! at once, plus a last-byte bitmap for any others; the own address, the
//! DSCP mark and the DHCP port patterns per side, each disabled (set to a
//! value no frame has) when its rule is `Forward`.

#[cfg(target_arch = "x86_64")]
use dpdk::simd::U32x8;
use dpdk::simd::{Avx2, Lanes, U32x4};

use super::table::{Table, ETHERTYPE_ARP, NO_SERVER, PROTO_UDP};
use super::{Action, StaticRule, STATIC_RULES};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const PROTO_TCP: u8 = 6;
const PROTO_ICMPV6: u8 = 58;

/// IPv4 boot servers compared exactly; the others go to a last-byte bitmap.
const EXACT_SERVERS: usize = 4;

/// Shapes of the server set, for [`V4Stage::shaped`]: one address, up to
/// four, more.
const ONE: u8 = 1;
const FOUR: u8 = 4;
const MANY: u8 = 0xff;

/// Fits no `u32` address: an unused own address never matches.
const NO_ADDRESS: u64 = u64::MAX;

/// Fits no DSCP value (0..=63).
const NO_DSCP: u32 = 0x100;

/// `(mask, value)` over the UDP port word that no frame has: `x & 0 != 1`.
const NO_PORTS: (u32, u32) = (0, 1);

/// The first 3 bytes after the MACs (or the VLAN tag) of IPv4 without
/// options: EtherType 0x0800, version 4, IHL 5; little-endian, as read.
const IPV4_IHL5: u32 = u32::from_le_bytes([0x08, 0x00, 0x45, 0]);

/// The VLAN TPIDs the classifier walks, without a branch.
#[inline(always)]
fn is_vlan(ethertype: u16) -> bool {
    (ethertype == 0x8100) | (ethertype == 0x88a8) | (ethertype == 0x9100)
}

/// Four frame bytes as the first stage compares them (little-endian, so
/// that on x86 it is a plain load).
#[inline(always)]
fn word(b: [u8; 4]) -> u32 {
    u32::from_le_bytes(b)
}

/// `N` bytes of `h` from `at`, a constant in range: one load, no check
/// left after inlining (and zeros, never a panic, if it were out of range).
#[inline(always)]
fn bytes<const N: usize>(h: &[u8; 30], at: usize) -> [u8; N] {
    h.get(at..)
        .and_then(|r| r.first_chunk::<N>())
        .copied()
        .unwrap_or([0; N])
}

/// What [`Table::may_match`] compares against, precomputed per table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Prefilter {
    /// Up to [`EXACT_SERVERS`] IPv4 boot servers ([`word`]s); unused
    /// entries repeat the first, or are 0.0.0.0 when there is none (frames
    /// to or from 0.0.0.0 then go on to classify: harmless, and rare).
    servers: [u32; EXACT_SERVERS],
    /// True when there are more IPv4 servers than `servers` holds.
    many: bool,
    /// Last-byte bitmap of the IPv4 servers beyond `servers`.
    overflow: [u64; 4],
    /// Own IPv4 address ([`word`]), or [`NO_ADDRESS`].
    own: u64,
    /// The DSCP mark, or [`NO_DSCP`].
    dscp: u32,
    /// DHCP `(mask, value)` over the port word ([`word`] of source and
    /// destination port), for side 0 and side 1.
    dhcp: [(u32, u32); 2],
    /// True when a boot server is an IPv6 address: IPv6 UDP then goes on
    /// to classify. Without one, IPv6 UDP can match only the DHCP port
    /// rules, the mark or an IPv4-mapped server address, which the first
    /// stage tests.
    v6_servers: bool,
    /// The IPv4 stage of side 0 and of side 1, made from the fields above
    /// once, not per burst.
    stages: [V4Stage; 2],
    /// The burst loop's shape for each side (see [`V4Stage::shaped`]).
    shapes: [Shape; 2],
    /// Set when the CPU runs AVX2: the burst loop then takes eight frames
    /// a step ([`V4Stage::candidates_x8`]) instead of four (SSE2).
    avx2: Option<Avx2>,
}

/// Which burst loop serves a side: `servers` is [`ONE`], [`FOUR`] or
/// [`MANY`], `extra` whether the own address or the mark is live (see
/// [`V4Stage::shaped`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Shape {
    servers: u8,
    extra: bool,
}

/// Evaluates `$body` with the consts `$s`, `$e` and `$p` set to the
/// shape's servers and extra, and to `$src_peer`: one monomorphised loop
/// per shape and side, so that what a shape leaves out costs nothing and
/// the peer is picked at compile time.
macro_rules! shaped {
    ($shape:expr, $src_peer:expr, |$s:ident, $e:ident, $p:ident| $body:expr) => {
        match ($shape.servers, $shape.extra) {
            (ONE, false) => shaped!(@peer $src_peer, ONE, false, |$s, $e, $p| $body),
            (ONE, true) => shaped!(@peer $src_peer, ONE, true, |$s, $e, $p| $body),
            (FOUR, false) => shaped!(@peer $src_peer, FOUR, false, |$s, $e, $p| $body),
            (FOUR, true) => shaped!(@peer $src_peer, FOUR, true, |$s, $e, $p| $body),
            (_, false) => shaped!(@peer $src_peer, MANY, false, |$s, $e, $p| $body),
            (_, true) => shaped!(@peer $src_peer, MANY, true, |$s, $e, $p| $body),
        }
    };
    (@peer $src_peer:expr, $sv:expr, $ev:expr, |$s:ident, $e:ident, $p:ident| $body:expr) => {
        if $src_peer {
            const $s: u8 = $sv;
            const $e: bool = $ev;
            const $p: bool = true;
            $body
        } else {
            const $s: u8 = $sv;
            const $e: bool = $ev;
            const $p: bool = false;
            $body
        }
    };
}

impl Prefilter {
    /// The first stage for a table of `servers` (keys as in
    /// [`Table::servers`], [`NO_SERVER`] where free), `statics`, `dscp_mark`
    /// (0x100 for none) and `own` (IPv4-mapped key or [`NO_SERVER`]).
    pub(super) fn new(
        servers: &[u128],
        statics: &[Action; STATIC_RULES],
        dscp_mark: u16,
        own: u128,
    ) -> Prefilter {
        let live = |r: StaticRule| statics[r as usize] != Action::Forward;
        let v4: Vec<[u8; 4]> = servers
            .iter()
            .filter(|&&s| s != NO_SERVER)
            .filter_map(|&s| v4_octets(s))
            .collect();
        let v6_servers = servers
            .iter()
            .any(|&s| s != NO_SERVER && v4_octets(s).is_none());
        let mut exact = [0u32; EXACT_SERVERS];
        for (i, slot) in exact.iter_mut().enumerate() {
            if let Some(&a) = v4.get(i).or(v4.first()) {
                *slot = word(a);
            }
        }
        let mut overflow = [0u64; 4];
        for a in v4.iter().skip(EXACT_SERVERS) {
            let b = a[3];
            overflow[usize::from(b >> 6)] |= 1 << (b & 63);
        }
        let own = match v4_octets(own) {
            Some(a) if live(StaticRule::OwnAddress) => u64::from(word(a)),
            _ => NO_ADDRESS,
        };
        let dscp = if dscp_mark <= 63 && live(StaticRule::DscpMark) {
            u32::from(dscp_mark)
        } else {
            NO_DSCP
        };
        let ports = |mask: [u8; 4], value: [u8; 4]| (word(mask), word(value));
        let client = if live(StaticRule::DhcpClient) {
            ports([0, 0, 0xff, 0xff], [0, 0, 0, 67])
        } else {
            NO_PORTS
        };
        let server = if live(StaticRule::DhcpServer) {
            ports([0xff; 4], [0, 67, 0, 68])
        } else {
            NO_PORTS
        };
        let mut p = Prefilter {
            servers: exact,
            many: v4.len() > EXACT_SERVERS,
            overflow,
            own,
            dscp,
            dhcp: [client, server],
            v6_servers,
            stages: [V4Stage::default(); 2],
            shapes: [Shape::default(); 2],
            avx2: Avx2::detect(),
        };
        p.stages = [V4Stage::new(&p, 0), V4Stage::new(&p, 1)];
        let servers = if p.many {
            MANY
        } else if exact.iter().all(|&a| a == exact[0]) {
            ONE
        } else {
            FOUR
        };
        p.shapes = p.stages.map(|st| Shape {
            servers,
            extra: st.own != NO_ADDRESS || st.dscp != NO_DSCP,
        });
        p
    }
}

/// The IPv4 address of an IPv4-mapped key (`::ffff:a.b.c.d`); `None` for
/// IPv6 and [`NO_SERVER`].
fn v4_octets(key: u128) -> Option<[u8; 4]> {
    match key.to_ne_bytes() {
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d] => Some([a, b, c, d]),
        _ => None,
    }
}

/// The (inner) EtherType and the 28 bytes after it: an IPv4 header
/// without options and the UDP ports, an ARP body up to its target
/// address, or the start of an IPv6 header; with the EtherType's offset
/// (12, or 16 behind one 802.1Q tag). `None` for frames shorter than 46
/// bytes (the first stage is unsure of those).
#[inline(always)]
fn header(frame: &[u8]) -> Option<(usize, &[u8; 30])> {
    let f = frame.first_chunk::<46>()?;
    // 802.1Q only: other TPIDs (QinQ's outer 0x88a8, 0x9100) land on
    // `may_match_other`, which sends them on to the classifier.
    let tagged = u16::from_be_bytes([f[12], f[13]]) == 0x8100;
    let at = 12 + 4 * usize::from(tagged);
    let h = f.get(at..).and_then(|r| r.first_chunk::<30>())?;
    Some((at, h))
}

/// The IPv4 part of the first stage for one side, its constants made
/// once per table ([`Prefilter::stages`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct V4Stage {
    servers: [u32; EXACT_SERVERS],
    many: bool,
    overflow: [u64; 4],
    own: u64,
    dscp: u32,
    /// Shift of the address pair that leaves the peer (the possible boot
    /// server) in the low half: the destination on side 0, the source on
    /// side 1.
    peer_shift: u32,
    /// DHCP `(mask, value)` over the port word of this side.
    dhcp: (u32, u32),
}

impl V4Stage {
    #[inline(always)]
    fn new(p: &Prefilter, side: usize) -> V4Stage {
        V4Stage {
            servers: p.servers,
            many: p.many,
            overflow: p.overflow,
            own: p.own,
            // The mark counts on the server side only (see `Table::lookup`).
            dscp: if side == 0 { NO_DSCP } else { p.dscp },
            peer_shift: 32 * u32::from(side == 0),
            dhcp: p.dhcp[usize::from(side != 0)],
        }
    }

    /// The answer for `h`, read as IPv4 without options (whatever it is).
    #[inline(always)]
    fn may_match(&self, h: &[u8; 30]) -> bool {
        self.shaped::<MANY, true>(h)
    }

    /// True if the IPv4 address `peer` (a [`word`]) may be a boot server,
    /// for a server set of shape `SERVERS` (see [`Self::shaped`]).
    #[inline(always)]
    fn is_server<const SERVERS: u8>(&self, peer: u32) -> bool {
        let s = &self.servers;
        let mut server = peer == s[0];
        if SERVERS != ONE {
            server |= (peer == s[1]) | (peer == s[2]) | (peer == s[3]);
        }
        if SERVERS == MANY {
            let last = peer.to_le_bytes()[3];
            server |= (self.overflow[usize::from(last >> 6)] >> (last & 63)) & 1 != 0;
        }
        server
    }

    /// [`Self::may_match`] for a table whose shape is known: `SERVERS` is
    /// [`ONE`] when every exact server is the same address, [`FOUR`] for
    /// up to four, [`MANY`] beyond; `EXTRA` when the own address or the
    /// DSCP mark is live. Equal to it when the shape is right (what a
    /// shape leaves out could never match).
    #[inline(always)]
    fn shaped<const SERVERS: u8, const EXTRA: bool>(&self, h: &[u8; 30]) -> bool {
        let pair = u64::from_le_bytes(bytes(h, 14));
        let peer = (pair >> self.peer_shift) as u32;
        let (mask, value) = self.dhcp;
        let ports = word(bytes(h, 22));
        let udp =
            (h[11] == PROTO_UDP) & (self.is_server::<SERVERS>(peer) | (ports & mask == value));
        if EXTRA {
            let head = word(bytes(h, 0));
            let dst = (pair >> 32) as u32;
            udp | (u64::from(dst) == self.own) | (head >> 26 == self.dscp)
        } else {
            udp
        }
    }

    /// The loop of [`Table::may_match_burst`] for one table shape (see
    /// [`Self::shaped`]): one bit per frame, clear only where
    /// [`Table::may_match`] is false. A superset, cheaper than the exact
    /// answer: untagged IPv4 without options whose peer is not a boot
    /// server and whose ports are not DHCP's (and, with `EXTRA`, not to the
    /// own address nor marked) is cleared, and so is 802.3; the rest (any
    /// protocol to or from a server, VLAN-tagged, IPv6, ARP, IPv4 with
    /// options, short frames) is set, for the exact answer. Backwards, so
    /// that each frame's bit is shifted in rather than placed by its index.
    /// `SRC_PEER` is true on side 1 (the source is the peer), as
    /// `peer_shift` says.
    #[inline(always)]
    fn candidates<const SERVERS: u8, const EXTRA: bool, const SRC_PEER: bool, T>(
        &self,
        frames: &[T],
        data: &impl Fn(&T) -> &[u8],
    ) -> u32 {
        let mut cand = 0u32;
        for f in frames.iter().rev() {
            let c = self.candidate::<SERVERS, EXTRA, SRC_PEER>(&Words::of(lanes_of(data(f))));
            cand = cand << 1 | u32::from(c);
        }
        cand
    }

    /// One frame's bit of [`Self::candidates`].
    #[inline(always)]
    fn candidate<const SERVERS: u8, const EXTRA: bool, const SRC_PEER: bool>(
        &self,
        w: &Words,
    ) -> bool {
        let head = w.head;
        let not_v4 = head & 0x00ff_ffff != IPV4_IHL5;
        // 802.3 lengths (below 0x0600) cannot match: the EtherType's first
        // byte is below 6.
        let ethernet_ii = (head & 0xff) >= 6;
        let peer = if SRC_PEER { w.src } else { w.dst };
        let (mask, value) = self.dhcp;
        let mut c =
            (not_v4 & ethernet_ii) | self.is_server::<SERVERS>(peer) | (w.ports & mask == value);
        if EXTRA {
            c |= (u64::from(w.dst) == self.own) | (head >> 26 == self.dscp);
        }
        c
    }

    /// The side's constants in the lanes of `V` (once per burst).
    #[inline(always)]
    fn lanes<V: Copy>(&self, splat: impl Fn(u32) -> V) -> LaneConsts<V> {
        LaneConsts {
            v4: splat(IPV4_IHL5),
            low24: splat(0x00ff_ffff),
            five: splat(5),
            low8: splat(0xff),
            servers: self.servers.map(&splat),
            mask: splat(self.dhcp.0),
            value: splat(self.dhcp.1),
            // A u32 lane cannot hold NO_ADDRESS: compare, then clear when
            // unused.
            own: splat(self.own as u32),
            own_live: splat(if self.own == NO_ADDRESS { 0 } else { u32::MAX }),
            dscp: splat(self.dscp),
        }
    }

    /// [`Self::candidates`] four frames at a time, the compares in SIMD
    /// lanes ([`dpdk::simd::U32x4`], SSE2); for [`ONE`] or [`FOUR`]
    /// servers ([`MANY`] goes frame by frame: the overflow bitmap is a
    /// per-lane lookup). Equal to `candidates`.
    #[inline(always)]
    fn candidates_x4<const SERVERS: u8, const EXTRA: bool, const SRC_PEER: bool, T>(
        &self,
        frames: &[T],
        data: &impl Fn(&T) -> &[u8],
    ) -> u32 {
        if SERVERS == MANY {
            return self.candidates::<MANY, EXTRA, SRC_PEER, T>(frames, data);
        }
        let k = self.lanes(U32x4::splat);
        let mut cand = 0u32;
        let mut chunks = frames.chunks_exact(4);
        let mut at = 0u32;
        for four in &mut chunks {
            let h: [&[u8; 30]; 4] = std::array::from_fn(|i| lanes_of(data(&four[i])));
            // Each frame's words in one load, four frames transposed: one
            // register per word (fewer instructions than a lane at a time).
            let [head, ..] = U32x4::transpose(h.map(|h| U32x4::load(sixteen::<0>(h))));
            let [src, dst, ports, _] = U32x4::transpose(h.map(|h| U32x4::load(sixteen::<14>(h))));
            cand |= k.candidates::<SERVERS, EXTRA, SRC_PEER>(head, src, dst, ports) << (at & 31);
            at += 4;
        }
        for f in chunks.remainder() {
            let c = self.candidate::<SERVERS, EXTRA, SRC_PEER>(&Words::of(lanes_of(data(f))));
            cand |= u32::from(c) << (at & 31);
            at += 1;
        }
        cand
    }

    /// [`Self::candidates_x4`] eight frames a step ([`U32x8`], AVX2): each
    /// frame's two 16-byte loads go into a half of a 256-bit row (frame
    /// `i` low, frame `4 + i` high), one in-lane transpose per word group
    /// serves eight frames, and one mask gives eight bits. The last
    /// `len % 8` frames are padded with [`SHORT`] and the padding's bits
    /// dropped. Call it inside [`Avx2::run`] (or every lane operation is a
    /// call). Equal to `candidates`.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn candidates_x8<const SERVERS: u8, const EXTRA: bool, const SRC_PEER: bool, T>(
        &self,
        avx2: Avx2,
        frames: &[T],
        data: &impl Fn(&T) -> &[u8],
    ) -> u32 {
        if SERVERS == MANY {
            return self.candidates::<MANY, EXTRA, SRC_PEER, T>(frames, data);
        }
        // Closures marked `inline(always)`: one left out of line would be
        // compiled without AVX2 and call every lane operation.
        let k = self.lanes(
            #[inline(always)]
            |v| U32x8::splat(avx2, v),
        );
        let mut cand = 0u32;
        let mut chunks = frames.chunks_exact(8);
        let mut at = 0u32;
        for c in &mut chunks {
            let h = std::array::from_fn(
                #[inline(always)]
                |i| lanes_of(data(&c[i])),
            );
            cand |= k.eight::<SERVERS, EXTRA, SRC_PEER>(avx2, &h) << (at & 31);
            at += 8;
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let h = std::array::from_fn(
                #[inline(always)]
                |i| rest.get(i).map_or(&SHORT, |f| lanes_of(data(f))),
            );
            let keep = (1u32 << (rest.len() & 7)) - 1;
            cand |= (k.eight::<SERVERS, EXTRA, SRC_PEER>(avx2, &h) & keep) << (at & 31);
        }
        cand
    }
}

#[cfg(target_arch = "x86_64")]
impl LaneConsts<U32x8> {
    /// The candidate bits of the eight frames `h` (see
    /// [`V4Stage::candidates_x8`]).
    #[inline(always)]
    fn eight<const SERVERS: u8, const EXTRA: bool, const SRC_PEER: bool>(
        &self,
        avx2: Avx2,
        h: &[&[u8; 30]; 8],
    ) -> u32 {
        let [head, ..] = U32x8::transpose(rows8::<0>(avx2, h));
        let [src, dst, ports, _] = U32x8::transpose(rows8::<14>(avx2, h));
        self.candidates::<SERVERS, EXTRA, SRC_PEER>(head, src, dst, ports)
    }
}

/// The 16 bytes from `AT` of eight frames in four rows: frame `i` in the
/// low half of row `i`, frame `4 + i` in its high half, so that the
/// in-lane transpose puts frame `j` in lane `j`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn rows8<const AT: usize>(avx2: Avx2, h: &[&[u8; 30]; 8]) -> [U32x8; 4] {
    let at = sixteen::<AT>;
    [
        U32x8::load2(avx2, at(h[0]), at(h[4])),
        U32x8::load2(avx2, at(h[1]), at(h[5])),
        U32x8::load2(avx2, at(h[2]), at(h[6])),
        U32x8::load2(avx2, at(h[3]), at(h[7])),
    ]
}

/// A side's constants of the first stage in SIMD lanes ([`V4Stage::lanes`]).
struct LaneConsts<V> {
    v4: V,
    low24: V,
    five: V,
    low8: V,
    servers: [V; EXACT_SERVERS],
    mask: V,
    value: V,
    own: V,
    own_live: V,
    dscp: V,
}

impl<V: Lanes> LaneConsts<V> {
    /// The candidate bits (see [`V4Stage::candidate`]) of as many frames
    /// as `V` has lanes, their words transposed into one register each.
    #[inline(always)]
    fn candidates<const SERVERS: u8, const EXTRA: bool, const SRC_PEER: bool>(
        &self,
        head: V,
        src: V,
        dst: V,
        ports: V,
    ) -> u32 {
        let peer = if SRC_PEER { src } else { dst };
        let is_v4 = head.and(self.low24).eq(self.v4);
        let ethernet_ii = head.and(self.low8).gt_signed(self.five);
        let s = &self.servers;
        let mut server = peer.eq(s[0]);
        if SERVERS != ONE {
            server = server.or(peer.eq(s[1])).or(peer.eq(s[2])).or(peer.eq(s[3]));
        }
        let mut c = is_v4
            .and_not(ethernet_ii)
            .or(server)
            .or(ports.and(self.mask).eq(self.value));
        if EXTRA {
            c = c
                .or(dst.eq(self.own).and(self.own_live))
                .or(head.shr::<26>().eq(self.dscp));
        }
        c.mask()
    }
}

/// Stands in for frames shorter than 46 bytes in the burst loop: its
/// EtherType, 0xffff, is neither IPv4 nor an 802.3 length, so every loop
/// sets the frame's bit and the exact answer decides (true: unsure).
static SHORT: [u8; 30] = {
    let mut h = [0u8; 30];
    h[0] = 0xff;
    h[1] = 0xff;
    h
};

/// What the burst loop reads of a frame: the 30 bytes from byte 12, as if
/// untagged (a tagged frame's TPID makes it a candidate, and the exact
/// answer reads behind the tag), or [`SHORT`]. Reading behind an 802.1Q
/// tag here, at an offset chosen per frame, cost 7.5 instructions a frame
/// on net_null and 3 on the pcap mix (callgrind): more than the 3% of
/// tagged frames it would clear saved.
#[inline(always)]
fn lanes_of(frame: &[u8]) -> &[u8; 30] {
    frame
        .first_chunk::<46>()
        .and_then(|f| f.get(12..))
        .and_then(|r| r.first_chunk::<30>())
        .unwrap_or(&SHORT)
}

/// 16 bytes of `h` from `AT` (0 or 14): in range, so no check is left
/// after inlining.
#[inline(always)]
fn sixteen<const AT: usize>(h: &[u8; 30]) -> &[u8; 16] {
    static ZERO: [u8; 16] = [0; 16];
    h.get(AT..)
        .and_then(|r| r.first_chunk::<16>())
        .unwrap_or(&ZERO)
}

/// The words of [`lanes_of`] a frame the first stage's burst loop reads,
/// as if it were untagged IPv4 without options.
#[derive(Clone, Copy, Default)]
struct Words {
    /// EtherType, version and IHL, TOS ([`word`] at byte 12).
    head: u32,
    /// Source and destination address.
    src: u32,
    dst: u32,
    /// Source and destination port ([`word`]).
    ports: u32,
}

impl Words {
    #[inline(always)]
    fn of(h: &[u8; 30]) -> Words {
        let pair = u64::from_le_bytes(bytes(h, 14));
        Words {
            head: word(bytes(h, 0)),
            src: pair as u32,
            dst: (pair >> 32) as u32,
            ports: word(bytes(h, 22)),
        }
    }
}

impl Table {
    /// False only when no rule can match `frame` received on `side` (0:
    /// client side, any other value: server side): [`Self::lookup`] of its
    /// classification would be [`Action::Forward`], so the bridge can
    /// forward it without classifying. Never panics, never allocates.
    ///
    /// Reads the EtherType (behind at most one VLAN tag) and then, at fixed
    /// offsets, the IPv4 TOS, protocol, addresses and UDP ports, or the
    /// IPv6 traffic class and next header, or the ARP target: no
    /// classification, no table probe. False, with the table's servers,
    /// own address and DSCP mark, for:
    /// - EtherTypes the classifier does not parse (LLDP, 802.3 lengths, ...);
    /// - ARP, unless its target is bootcache's own address (addressed mode);
    /// - IPv4 not to the own address, without the DSCP mark, and not UDP
    ///   to (side 0) or from (side 1) a boot server, nor DHCP (side 0: to
    ///   port 67; side 1: 67 → 68): all TCP, ICMP and other UDP between
    ///   hosts that are not boot servers, fragments included;
    /// - IPv6 TCP and ICMPv6 without the DSCP mark (server side);
    /// - IPv6 UDP without the mark, when no boot server is an IPv6 address,
    ///   whose peer's last four bytes are no IPv4 server's (an IPv4-mapped
    ///   address is that server for the lookup) and whose ports are not
    ///   DHCP's (the DHCP rules take any address, IPv6 too).
    ///
    /// True for anything else, and when unsure: UDP with IPv4 options (the
    /// ports move), other IPv6 (extension headers move the ports), QinQ,
    /// frames shorter than 46 bytes (IPv6 UDP: too short for its ports).
    ///
    /// Measured (`cargo bench -p dataplane --bench filter`, this 2-core VM,
    /// the bench's mix with 1% matching, bursts of 32): 4.1 ns per frame,
    /// against 7.3 ns to classify alone; it passes only the matching 1%.
    #[inline(always)]
    pub fn may_match(&self, side: usize, frame: &[u8]) -> bool {
        let Some((at, h)) = header(frame) else {
            return true;
        };
        let v4 = &self.pre.stages[usize::from(side != 0)];
        if word(bytes(h, 0)) & 0x00ff_ffff != IPV4_IHL5 {
            return self.may_match_other(v4, frame, at, h);
        }
        v4.may_match(h)
    }

    /// [`Self::may_match`] of up to 32 frames at once (the rest are not
    /// looked at): bit `i` of the answer is `may_match(side,
    /// data(&frames[i]))`.
    ///
    /// Built for the bridge's burst, in two passes. The first reads three
    /// words of each frame at fixed offsets (EtherType and IPv4 version,
    /// the peer address, the UDP ports) with the table's constants in
    /// registers and no data-dependent branch, eight frames a step with
    /// AVX2 where the CPU has it (four with SSE2 otherwise), and keeps a
    /// superset of the answer (see `V4Stage::candidates`): ~14% of a
    /// realistic mix (VLAN-tagged, IPv6, ARP, IPv4 with options, boot
    /// traffic). The second gives those the exact answer, one by one.
    /// Measured with callgrind on the bridge (`bench-forward --callgrind
    /// 15`, README "Forwarding").
    #[inline(always)]
    pub fn may_match_burst<T>(&self, side: usize, frames: &[T], data: impl Fn(&T) -> &[u8]) -> u32 {
        self.burst_with(self.pre.avx2, side, frames, data)
    }

    /// [`Self::may_match_burst`] with the SSE2 loop whatever the CPU has
    /// (tests and fuzzing compare the two).
    #[doc(hidden)]
    pub fn may_match_burst_sse2<T>(
        &self,
        side: usize,
        frames: &[T],
        data: impl Fn(&T) -> &[u8],
    ) -> u32 {
        self.burst_with(None, side, frames, data)
    }

    /// [`Self::may_match_burst`], its first pass in AVX2 when `avx2` is
    /// given.
    #[inline(always)]
    fn burst_with<T>(
        &self,
        avx2: Option<Avx2>,
        side: usize,
        frames: &[T],
        data: impl Fn(&T) -> &[u8],
    ) -> u32 {
        let s = usize::from(side != 0);
        let (v4, shape) = (&self.pre.stages[s], self.pre.shapes[s]);
        let frames = frames.get(..32).unwrap_or(frames);
        // One loop per shape of the table and side (`shaped!`), so that
        // what it does not use (three of the four exact servers, the
        // overflow bitmap, the own address and mark, the other side's
        // peer) costs neither instructions nor registers.
        let mut cand = match avx2 {
            // The whole loop in one function compiled for AVX2 (the
            // closure inlined into it, see `Avx2::run`).
            #[cfg(target_arch = "x86_64")]
            Some(avx2) => avx2.run(
                #[inline(always)]
                || {
                    shaped!(shape, s == 1, |S, E, P| v4
                        .candidates_x8::<S, E, P, T>(avx2, frames, &data))
                },
            ),
            _ => shaped!(shape, s == 1, |S, E, P| v4
                .candidates_x4::<S, E, P, T>(frames, &data)),
        };
        // The exact answer for the candidates (~14% of a realistic mix:
        // VLAN-tagged, IPv6, ARP, boot traffic), one by one; IPv6 UDP
        // included, which no longer goes on to classify.
        let mut maybe = 0u32;
        while cand != 0 {
            let i = cand.trailing_zeros() as usize;
            cand &= cand - 1;
            if let Some(f) = frames.get(i) {
                maybe |= u32::from(self.may_match(side, data(f))) << (i & 31);
            }
        }
        maybe
    }

    /// The first pass of [`Self::may_match_burst`] every way for every
    /// table shape, whether or not it is this table's: `(shape, frame by
    /// frame, four at a time, eight at a time if the CPU runs AVX2)`
    /// (tests: they must agree bit for bit).
    #[cfg(test)]
    pub(super) fn candidates_every_way(
        &self,
        side: usize,
        frames: &[Vec<u8>],
    ) -> Vec<(String, u32, u32, Option<u32>)> {
        let s = usize::from(side != 0);
        let v4 = &self.pre.stages[s];
        let frames = frames.get(..32).unwrap_or(frames);
        // A fn, not a closure: its result borrows from its argument.
        #[allow(clippy::ptr_arg)]
        fn data(f: &Vec<u8>) -> &[u8] {
            f
        }
        let mut out = Vec::new();
        for servers in [ONE, FOUR, MANY] {
            for extra in [false, true] {
                let shape = Shape { servers, extra };
                let scalar = shaped!(shape, s == 1, |S, E, P| v4
                    .candidates::<S, E, P, _>(frames, &data));
                let x4 = shaped!(shape, s == 1, |S, E, P| v4
                    .candidates_x4::<S, E, P, _>(frames, &data));
                #[cfg(target_arch = "x86_64")]
                let x8 = self.pre.avx2.map(|avx2| {
                    avx2.run(
                        #[inline(always)]
                        || {
                            shaped!(shape, s == 1, |S, E, P| v4
                                .candidates_x8::<S, E, P, _>(avx2, frames, &data))
                        },
                    )
                });
                #[cfg(not(target_arch = "x86_64"))]
                let x8 = None;
                out.push((format!("{shape:?}"), scalar, x4, x8));
            }
        }
        out
    }

    /// [`Self::may_match`] for everything but IPv4 without options; `h` is
    /// the (inner) EtherType, at offset `at` of `frame`, and the 28 bytes
    /// after it; `v4` the side's constants.
    #[inline(never)]
    fn may_match_other(&self, v4: &V4Stage, frame: &[u8], at: usize, h: &[u8; 30]) -> bool {
        let p = &self.pre;
        match u16::from_be_bytes([h[0], h[1]]) {
            // Options move the ports (and a wrong version is malformed).
            ETHERTYPE_IPV4 => {
                let dst = word(bytes(h, 18));
                (u64::from(dst) == p.own) | (u32::from(h[3] >> 2) == p.dscp) | (h[11] == PROTO_UDP)
            }
            ETHERTYPE_ARP => u64::from(word(bytes(h, 26))) == p.own,
            ETHERTYPE_IPV6 => {
                let dscp = ((h[2] & 0x0f) << 2) | (h[3] >> 6);
                (u32::from(dscp) == v4.dscp)
                    | match h[8] {
                        PROTO_TCP | PROTO_ICMPV6 => false,
                        PROTO_UDP => self.may_match_udp6(v4, frame, at + 2),
                        // Extension headers move the ports; fragments.
                        _ => true,
                    }
            }
            // QinQ: the classifier walks it.
            e if is_vlan(e) => true,
            // Not IP or ARP: no field of its class can match.
            _ => false,
        }
    }

    /// IPv6 UDP (the header at `l3` of `frame`, no extension header): no
    /// rule can match unless a boot server is an IPv6 address, the peer's
    /// last four bytes are an IPv4 server's (an IPv4-mapped address is
    /// that server for [`Self::lookup`]) or the ports are DHCP's. The
    /// mark is tested by the caller; the own address is IPv4 only.
    #[inline(always)]
    fn may_match_udp6(&self, v4: &V4Stage, frame: &[u8], l3: usize) -> bool {
        // The peer (see `V4Stage::peer_shift`): source on side 1, from
        // byte 8, destination on side 0, from byte 24; its last word.
        let peer_at = l3 + if v4.peer_shift == 0 { 20 } else { 36 };
        let four = |at: usize| frame.get(at..).and_then(|r| r.first_chunk::<4>());
        let (Some(peer), Some(ports)) = (four(peer_at), four(l3 + 40)) else {
            return true;
        };
        let (mask, value) = v4.dhcp;
        self.pre.v6_servers | v4.is_server::<MANY>(word(*peer)) | (word(*ports) & mask == value)
    }

    /// Both stages: [`Action::Forward`] when [`Self::may_match`] is false,
    /// otherwise [`Self::lookup`] of the frame's classification. Equal to
    /// `self.lookup(side, &classify(frame))` for every frame.
    ///
    /// Measured on the bench's mix, with the hit count: 4.6 ns per frame
    /// (static rules only or 10,000 dynamic), against 10.9 ns for classify
    /// + lookup (0.42x).
    #[inline(always)]
    pub fn lookup_frame(&self, side: usize, frame: &[u8]) -> Action {
        if self.may_match(side, frame) {
            self.lookup(side, &wire::classify::classify(frame))
        } else {
            Action::Forward
        }
    }
}
