//! Transfer scenarios with real Ethernet/IPv4/UDP frames and a simulated
//! clock, fed through [`CacheLogic::handle_frame`].

use std::time::Duration;

use proptest::prelude::*;
use sha2::{Digest, Sha256};
use wire::frame::MacAddr;
use wire::tftp::{ErrorCode, Mode, Options, Packet, Request};

use super::*;
use crate::tracker::LINGER;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x10];
const SERVER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const TID: u16 = 40000;
const U: VlanScope = VlanScope::UNTAGGED;

fn client(n: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, n), 2000 + u16::from(n))
}

/// One packet of a transfer: who sent it and its TFTP bytes.
#[derive(Clone, Debug)]
struct Pkt {
    from_client: bool,
    payload: Vec<u8>,
}

/// How the simulated server numbers blocks after 65535.
#[derive(Clone, Copy, Debug)]
enum WrapStyle {
    Zero,
    One,
}

/// A transfer to play.
#[derive(Clone, Debug)]
struct Spec {
    name: String,
    mode: Mode<'static>,
    /// Options the client asks for: blksize, windowsize, tsize.
    ask_blksize: Option<u16>,
    ask_window: Option<u16>,
    ask_tsize: bool,
    /// Whether the server honours them with an OACK.
    oack: bool,
    /// `tsize` the OACK announces (default: the true size).
    oack_tsize: Option<u64>,
    wrap: WrapStyle,
    client: SocketAddrV4,
    tid: u16,
    /// The VLANs the transfer runs on.
    vlan: VlanScope,
}

impl Spec {
    fn plain(name: &str) -> Spec {
        Spec {
            name: name.into(),
            mode: Mode::OCTET,
            ask_blksize: None,
            ask_window: None,
            ask_tsize: false,
            oack: false,
            oack_tsize: None,
            wrap: WrapStyle::Zero,
            client: client(1),
            tid: TID,
            vlan: U,
        }
    }

    fn opts(name: &str, blksize: u16, window: u16) -> Spec {
        Spec {
            ask_blksize: Some(blksize),
            ask_window: Some(window),
            ask_tsize: true,
            oack: true,
            ..Spec::plain(name)
        }
    }

    fn blksize(&self) -> usize {
        if self.oack {
            usize::from(self.ask_blksize.unwrap_or(512))
        } else {
            512
        }
    }

    fn window(&self) -> usize {
        if self.oack {
            usize::from(self.ask_window.unwrap_or(1))
        } else {
            1
        }
    }

    fn wire(&self, n: usize) -> u16 {
        match self.wrap {
            WrapStyle::Zero => (n % 65536) as u16,
            WrapStyle::One => ((n - 1) % 65535 + 1) as u16,
        }
    }

    fn rrq(&self) -> Vec<u8> {
        let mut options = Options::default();
        options.blksize = self.ask_blksize;
        options.windowsize = self.ask_window;
        options.tsize = self.ask_tsize.then_some(0);
        Packet::Rrq(Request {
            filename: self.name.as_bytes(),
            mode: self.mode,
            options,
        })
        .to_vec()
        .unwrap()
    }

    fn oack_pkt(&self, size: usize) -> Vec<u8> {
        let mut o = Options::default();
        o.blksize = self.ask_blksize;
        o.windowsize = self.ask_window;
        o.tsize = self
            .ask_tsize
            .then_some(self.oack_tsize.unwrap_or(size as u64));
        Packet::Oack(o).to_vec().unwrap()
    }

    /// The clean packet sequence of a whole transfer of `content`.
    fn packets(&self, content: &[u8]) -> Vec<Pkt> {
        let c = |p: Vec<u8>| Pkt {
            from_client: true,
            payload: p,
        };
        let s = |p: Vec<u8>| Pkt {
            from_client: false,
            payload: p,
        };
        let mut out = vec![c(self.rrq())];
        if self.oack {
            out.push(s(self.oack_pkt(content.len())));
            out.push(c(ack(0)));
        }
        let bs = self.blksize();
        let nblocks = content.len() / bs + 1;
        let mut n = 1;
        while n <= nblocks {
            let end = (n + self.window() - 1).min(nblocks);
            for i in n..=end {
                let data = &content[(i - 1) * bs..(i * bs).min(content.len())];
                out.push(s(Packet::Data {
                    block: self.wire(i),
                    payload: data,
                }
                .to_vec()
                .unwrap()));
            }
            out.push(c(ack(self.wire(end))));
            n = end + 1;
        }
        out
    }
}

fn ack(block: u16) -> Vec<u8> {
    Packet::Ack { block }.to_vec().unwrap()
}

fn error(code: ErrorCode) -> Vec<u8> {
    Packet::Error {
        code,
        message: b"stop",
    }
    .to_vec()
    .unwrap()
}

fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

fn frame(src: SocketAddrV4, dst: SocketAddrV4, src_mac: [u8; 6], payload: &[u8]) -> Vec<u8> {
    frame_on(U, src, dst, src_mac, payload)
}

/// [`frame`] with the tags of `scope`.
fn frame_on(
    scope: VlanScope,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    src_mac: [u8; 6],
    payload: &[u8],
) -> Vec<u8> {
    let dst_mac = if src_mac == CLIENT_MAC {
        SERVER_MAC
    } else {
        CLIENT_MAC
    };
    let mut repr = UdpFrameRepr::ipv4(MacAddr(src_mac), MacAddr(dst_mac), src, dst);
    repr.set_vlan_scope(scope);
    let mut buf = vec![0u8; repr.buffer_len(payload.len())];
    let len = repr.emit(&mut buf, payload).unwrap();
    buf.truncate(len);
    buf
}

struct Sim {
    dir: tempfile::TempDir,
    logic: CacheLogic,
    t0: Instant,
    now: Instant,
    updates: Vec<FilterUpdate>,
}

/// Source, destination and source MAC of a packet of `spec`'s transfer:
/// requests go to port 69, everything else between the client and the TID.
fn addressing(spec: &Spec, p: &Pkt) -> (SocketAddrV4, SocketAddrV4, [u8; 6]) {
    if p.from_client {
        let port = if Packet::parse(&p.payload).is_ok_and(|x| matches!(x, Packet::Rrq(_))) {
            69
        } else {
            spec.tid
        };
        (spec.client, SocketAddrV4::new(SERVER, port), CLIENT_MAC)
    } else {
        (SocketAddrV4::new(SERVER, spec.tid), spec.client, SERVER_MAC)
    }
}

impl Sim {
    fn new() -> Sim {
        Sim::with_limits(Limits::default())
    }

    fn with_limits(limits: Limits) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let logic = CacheLogic::new(dir.path(), limits, vec![SERVER]).unwrap();
        let now = Instant::now();
        Sim {
            dir,
            logic,
            t0: now,
            now,
            updates: Vec::new(),
        }
    }

    fn wall(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000) + (self.now - self.t0)
    }

    fn send(&mut self, spec: &Spec, p: &Pkt) {
        self.now += Duration::from_micros(20);
        let (src, dst, mac) = addressing(spec, p);
        let f = frame_on(spec.vlan, src, dst, mac, &p.payload);
        let wall = self.wall();
        self.logic.handle_frame(self.now, wall, p.from_client, &f);
        while let Some(u) = self.logic.poll_filter_update() {
            self.updates.push(u);
        }
    }

    /// Plays `pkts`, then waits for the cache's writer thread to publish
    /// what completed (publishing is asynchronous).
    fn play(&mut self, spec: &Spec, pkts: &[Pkt]) {
        for p in pkts {
            self.send(spec, p);
        }
        self.logic.filestore_mut().sync();
    }

    /// Runs the timers until no transfer is left.
    fn settle(&mut self) {
        while let Some(t) = self.logic.poll_timeout() {
            self.now = self.now.max(t);
            self.logic.handle_timeout(self.now);
            while let Some(u) = self.logic.poll_filter_update() {
                self.updates.push(u);
            }
        }
        self.logic.filestore_mut().sync();
    }

    fn cached(&mut self, name: &str) -> Option<Vec<u8>> {
        self.cached_on(U, name)
    }

    /// The cached bytes of `name` as asked on the VLANs `scope`, checked
    /// against the index (once the writer thread has put it in place).
    fn cached_on(&mut self, scope: VlanScope, name: &str) -> Option<Vec<u8>> {
        self.logic.filestore_mut().sync();
        let fs = self.logic.filestore();
        let e = fs.lookup(scope, SERVER, name)?;
        let data = std::fs::read(fs.path_of(e)).unwrap();
        assert_eq!(data.len() as u64, e.size);
        assert_eq!(e.sha256.0, <[u8; 32]>::from(Sha256::digest(&data)));
        Some(data)
    }

    fn discarded(&self, reason: DiscardReason) -> u64 {
        self.logic.counters().discarded.get(reason)
    }

    fn tmp_is_empty(&self) -> bool {
        std::fs::read_dir(self.dir.path().join("tmp"))
            .unwrap()
            .count()
            == 0
    }
}

/// Plays one clean transfer and checks the file was cached byte for byte.
fn cached_ok(spec: &Spec, len: usize) -> Sim {
    let mut sim = Sim::new();
    let data = content(len, 7);
    let pkts = spec.packets(&data);
    sim.play(spec, &pkts);
    assert!(
        sim.cached(&spec.name).as_deref() == Some(&data[..]),
        "{spec:?}"
    );
    let c = sim.logic.counters();
    assert_eq!((c.transfers_completed, c.files_cached), (1, 1));
    assert_eq!(c.discarded.total(), 0);
    assert_eq!(c.bytes_cached, len as u64);
    assert_eq!(sim.logic.active_transfers(), 0);
    assert!(sim.tmp_is_empty());
    sim
}

#[test]
fn lock_step_plain_512() {
    let spec = Spec::plain("pxelinux.0");
    let sim = cached_ok(&spec, 5000);
    // Expect at the request, pin at the first DATA, remove at the end.
    assert_eq!(
        sim.updates,
        [
            FilterUpdate::Expect {
                scope: U,
                server: SERVER,
                client: spec.client
            },
            FilterUpdate::Pin {
                scope: U,
                server: SocketAddrV4::new(SERVER, TID),
                client: spec.client
            },
            FilterUpdate::Remove {
                scope: U,
                server: SERVER,
                client: spec.client
            },
        ]
    );
    // The image map learnt the file, with the client's MAC.
    let rec = sim
        .logic
        .image_map()
        .client_by_ip(*spec.client.ip())
        .unwrap();
    assert!(rec.file(SERVER, "pxelinux.0").is_some());
}

#[test]
fn blksizes_and_windows() {
    for (bs, w, len) in [
        (512, 1, 100_000),
        (1428, 1, 100_000),
        (8192, 1, 100_000),
        (512, 16, 100_000),
        (1428, 16, 300_001),
        (8192, 16, 1_000_000),
    ] {
        cached_ok(&Spec::opts("vmlinuz", bs, w), len);
    }
}

#[test]
fn short_final_and_zero_length_final_blocks() {
    for len in [0, 1, 511, 512, 1024, 1025] {
        cached_ok(&Spec::plain("f"), len);
        cached_ok(&Spec::opts("f", 1428, 4), len * 3);
    }
}

#[test]
fn rollover_past_65535_blocks_both_styles() {
    // blksize 8: 70,000 blocks in 560 kB. Lock-step and windowed, each style.
    for wrap in [WrapStyle::Zero, WrapStyle::One] {
        for window in [1, 16] {
            for len in [8 * 70_000 + 3, 8 * 65_535, 8 * 65_536] {
                let spec = Spec {
                    wrap,
                    ..Spec::opts("big.img", 8, window)
                };
                cached_ok(&spec, len);
            }
        }
    }
    // Without tsize (nothing to check the length against) too.
    let spec = Spec {
        wrap: WrapStyle::One,
        ask_tsize: false,
        ..Spec::opts("big.img", 8, 4)
    };
    cached_ok(&spec, 8 * 66_000);
}

#[test]
fn rollover_reordered_across_the_wrap() {
    for wrap in [WrapStyle::Zero, WrapStyle::One] {
        let spec = Spec {
            wrap,
            ..Spec::opts("big.img", 8, 16)
        };
        let data = content(8 * 66_000 + 5, 3);
        let mut pkts = spec.packets(&data);
        // Reverse each server burst (the window's DATA between two ACKs).
        let mut i = 0;
        while i < pkts.len() {
            let start = i;
            while i < pkts.len() && !pkts[i].from_client {
                i += 1;
            }
            pkts[start..i].reverse();
            i += 1;
        }
        let mut sim = Sim::new();
        sim.play(&spec, &pkts);
        assert!(
            sim.cached("big.img").as_deref() == Some(&data[..]),
            "{wrap:?}"
        );
    }
}

#[test]
fn rollover_with_the_zero_block_lost_is_not_misplaced() {
    // A wrap-to-0 server whose DATA 0 and ACK 0 copies are both lost looks
    // like a wrap-to-1 server: the tsize check must catch the shifted file.
    let spec = Spec::opts("big.img", 8, 1);
    let data = content(8 * 66_000 + 1, 9);
    let all = spec.packets(&data);
    // RRQ, OACK, ACK 0 of the OACK, then DATA/ACK: lose the later 0s.
    let pkts: Vec<Pkt> = all
        .iter()
        .enumerate()
        .filter(|(i, p)| *i < 3 || p.payload[2..4] != [0, 0])
        .map(|(_, p)| p.clone())
        .collect();
    assert_eq!(pkts.len(), all.len() - 2);
    let mut sim = Sim::new();
    sim.play(&spec, &pkts);
    sim.settle();
    assert!(sim.cached("big.img").is_none());
    assert_eq!(sim.discarded(DiscardReason::SizeMismatch), 1);
}

#[test]
fn duplicates_and_reordering_within_the_window() {
    let spec = Spec::opts("initrd", 1428, 16);
    let data = content(200_000, 1);
    let pkts = spec.packets(&data);
    let mut played = Vec::new();
    for (i, p) in pkts.iter().enumerate() {
        played.push(p.clone());
        if i % 3 == 0 {
            played.push(p.clone());
        }
    }
    // Shuffle within each window's DATA (between the client's ACKs).
    let mut i = 0;
    while i < played.len() {
        let start = i;
        while i < played.len() && played[i].payload[1] == 3 {
            i += 1;
        }
        for chunk in played[start..i].chunks_mut(5) {
            chunk.reverse();
        }
        i += 1;
    }
    let mut sim = Sim::new();
    sim.play(&spec, &played);
    assert!(sim.cached("initrd") == Some(data));
}

#[test]
fn lost_copy_is_discarded_as_missing_blocks() {
    let spec = Spec::opts("kernel", 512, 4);
    let data = content(50_000, 2);
    let mut pkts = spec.packets(&data);
    let lost = pkts
        .iter()
        .position(|p| p.payload[..4] == [0, 3, 0, 10])
        .unwrap();
    pkts.remove(lost);
    let mut sim = Sim::new();
    sim.play(&spec, &pkts);
    // The client acknowledged the end: only the linger timer is left.
    assert_eq!(sim.logic.active_transfers(), 1);
    assert!(sim.logic.poll_timeout().unwrap() <= sim.now + LINGER);
    sim.settle();
    assert_eq!(sim.discarded(DiscardReason::MissingBlocks), 1);
    assert!(sim.cached("kernel").is_none());
    assert!(sim.tmp_is_empty());
    assert!(matches!(
        sim.updates.last(),
        Some(FilterUpdate::Remove { .. })
    ));
}

#[test]
fn inconsistent_duplicate_is_discarded() {
    let spec = Spec::plain("nbp.efi");
    let data = content(5000, 3);
    let mut pkts = spec.packets(&data);
    let i = pkts
        .iter()
        .position(|p| p.payload[..4] == [0, 3, 0, 2])
        .unwrap();
    let mut evil = pkts[i].clone();
    evil.payload[50] ^= 0xff;
    pkts.insert(i + 1, evil);
    let mut sim = Sim::new();
    sim.play(&spec, &pkts);
    sim.settle();
    assert_eq!(sim.discarded(DiscardReason::Inconsistent), 1);
    assert!(sim.cached("nbp.efi").is_none());
    assert!(sim.tmp_is_empty());
}

#[test]
fn errors_from_either_side() {
    let spec = Spec::opts("f", 512, 1);
    let data = content(20_000, 4);
    let pkts = spec.packets(&data);
    // Client gives up mid-transfer.
    let mut sim = Sim::new();
    sim.play(&spec, &pkts[..10]);
    sim.send(
        &spec,
        &Pkt {
            from_client: true,
            payload: error(ErrorCode::NotDefined),
        },
    );
    assert_eq!(sim.discarded(DiscardReason::ClientError), 1);
    assert_eq!(sim.logic.active_transfers(), 0);
    assert!(sim.tmp_is_empty());
    // Server: file not found, straight after the request.
    let mut sim = Sim::new();
    sim.play(&spec, &pkts[..1]);
    sim.send(
        &spec,
        &Pkt {
            from_client: false,
            payload: error(ErrorCode::FileNotFound),
        },
    );
    assert_eq!(sim.discarded(DiscardReason::ServerError), 1);
    assert_eq!(sim.logic.counters().size_probes, 0);
    assert_eq!(sim.logic.active_transfers(), 0);
}

#[test]
fn uefi_size_probe_then_real_transfer_gives_one_file() {
    let data = content(70_000, 5);
    for same_port in [true, false] {
        let probe = Spec::opts("bootx64.efi", 1468, 1);
        let real = Spec {
            client: if same_port { probe.client } else { client(2) },
            tid: TID + 1,
            ..probe.clone()
        };
        let mut sim = Sim::new();
        let p = probe.packets(&data);
        sim.play(&probe, &p[..2]); // RRQ, OACK
        sim.send(
            &probe,
            &Pkt {
                from_client: true,
                payload: error(ErrorCode::OptionNegotiation),
            },
        );
        sim.play(&real, &real.packets(&data));
        sim.settle();
        let c = sim.logic.counters();
        assert_eq!(c.size_probes, 1);
        assert_eq!(c.discarded.total(), 0);
        assert_eq!((c.transfers_completed, c.files_cached), (1, 1));
        assert!(sim.cached("bootx64.efi").as_deref() == Some(&data[..]));
    }
    // The probe's ERROR copy lost; the client asks again from the same port.
    let probe = Spec::opts("bootx64.efi", 1468, 1);
    let real = Spec {
        tid: TID + 1,
        ..probe.clone()
    };
    let mut sim = Sim::new();
    sim.play(&probe, &probe.packets(&data)[..2]);
    sim.play(&real, &real.packets(&data));
    let c = sim.logic.counters();
    assert_eq!(
        (c.size_probes, c.files_cached, c.discarded.total()),
        (1, 1, 0)
    );
}

#[test]
fn idle_timeout() {
    let spec = Spec::opts("f", 512, 1);
    let pkts = spec.packets(&content(20_000, 6));
    let mut sim = Sim::new();
    sim.play(&spec, &pkts[..8]);
    let due = sim.logic.poll_timeout().unwrap();
    assert!(due >= sim.now + Duration::from_secs(29));
    sim.logic.handle_timeout(due - Duration::from_millis(1));
    assert_eq!(sim.logic.active_transfers(), 1);
    sim.settle();
    assert_eq!(sim.discarded(DiscardReason::IdleTimeout), 1);
    assert!(sim.tmp_is_empty());
    assert!(sim.logic.poll_timeout().is_none());
}

#[test]
fn tsize_mismatch() {
    let spec = Spec {
        oack_tsize: Some(6000),
        ..Spec::opts("f", 512, 1)
    };
    let mut sim = Sim::new();
    sim.play(&spec, &spec.packets(&content(5000, 8)));
    sim.settle();
    assert_eq!(sim.discarded(DiscardReason::SizeMismatch), 1);
    assert!(sim.cached("f").is_none());
    // Data beyond the announced size is refused at once.
    let spec = Spec {
        oack_tsize: Some(1000),
        ..Spec::opts("g", 512, 1)
    };
    let mut sim = Sim::new();
    sim.play(&spec, &spec.packets(&content(5000, 8)));
    assert_eq!(sim.discarded(DiscardReason::SizeMismatch), 1);
    assert!(sim.tmp_is_empty());
}

#[test]
fn netascii_is_followed_not_cached() {
    let spec = Spec {
        mode: Mode::NETASCII,
        ..Spec::plain("boot.msg")
    };
    let mut sim = Sim::new();
    sim.play(&spec, &spec.packets(&content(3000, 9)));
    assert_eq!(sim.discarded(DiscardReason::UnsupportedMode), 1);
    assert!(sim.cached("boot.msg").is_none());
    assert_eq!(sim.logic.active_transfers(), 0);
    assert!(sim.tmp_is_empty());
    assert!(matches!(
        sim.updates.last(),
        Some(FilterUpdate::Remove { .. })
    ));
}

#[test]
fn lost_oack_copy_is_not_guessed() {
    // blksize 8 asked, OACK copy lost: 8-byte blocks must not look final.
    let spec = Spec::opts("f", 8, 1);
    let mut pkts = spec.packets(&content(100, 1));
    pkts.remove(1);
    let mut sim = Sim::new();
    sim.play(&spec, &pkts);
    sim.settle();
    assert!(sim.cached("f").is_none());
    assert_eq!(sim.discarded(DiscardReason::MissingBlocks), 1);
}

#[test]
fn refill_bumps_and_changed_file_replaces() {
    let spec = Spec::opts("f", 512, 4);
    let mut sim = Sim::new();
    let a = content(3000, 1);
    sim.play(&spec, &spec.packets(&a));
    sim.play(&spec, &spec.packets(&a));
    let e = sim
        .logic
        .filestore()
        .lookup(U, SERVER, "f")
        .unwrap()
        .clone();
    assert_eq!(e.times_seen, 2);
    assert_eq!(sim.logic.counters().files_refreshed, 1);
    let b = content(3500, 2);
    sim.play(&spec, &spec.packets(&b));
    assert!(sim.cached("f").as_deref() == Some(&b[..]));
    assert_eq!(sim.logic.counters().files_replaced, 1);
    assert_eq!(sim.logic.filestore().len(), 1);
}

#[test]
fn transfer_limit() {
    let mut sim = Sim::with_limits(Limits {
        max_transfers: 1,
        ..Limits::default()
    });
    let a = Spec::plain("a");
    let b = Spec {
        client: client(2),
        tid: TID + 1,
        ..Spec::plain("b")
    };
    let (da, db) = (content(2000, 1), content(2000, 2));
    let (pa, pb) = (a.packets(&da), b.packets(&db));
    sim.send(&a, &pa[0]);
    sim.play(&b, &pb); // not followed: a is tracked
    sim.play(&a, &pa[1..]);
    let c = sim.logic.counters();
    assert_eq!(c.tracker.over_transfer_limit, 1);
    assert_eq!(c.bounds_hit().transfers, 1);
    assert!(sim.cached("a").is_some());
    assert!(sim.cached("b").is_none());
    // One slot again: b is followed now.
    sim.play(&b, &pb);
    assert!(sim.cached("b").is_some());
}

/// A flood of read requests from one client address, never answered,
/// takes that address's share of the transfer table (a sixteenth, at least
/// 4), not the table: another client's transfer is still followed and
/// cached; and once the flooder's transfers end, its share is free again.
#[test]
fn one_client_address_gets_its_share_of_transfers() {
    let mut sim = Sim::with_limits(Limits {
        max_transfers: 64,
        ..Limits::default()
    });
    let share = crate::limits::per_source(64);
    assert_eq!(share, 4);
    let flood: Vec<Spec> = (0..40u16)
        .map(|i| Spec {
            client: SocketAddrV4::new(*client(9).ip(), 3000 + i),
            tid: TID + 100 + i,
            ..Spec::plain("missing")
        })
        .collect();
    for f in &flood {
        let rrq = f.packets(&content(10, 1));
        sim.send(f, &rrq[0]);
    }
    let c = sim.logic.counters();
    assert_eq!(c.tracker.over_transfer_limit, 40 - share as u64);
    assert_eq!(c.tracker.over_client_share, 40 - share as u64);
    assert_eq!(sim.logic.active_transfers(), share);
    let other = Spec {
        client: client(2),
        tid: TID + 1,
        ..Spec::plain("b")
    };
    let data = content(3000, 2);
    sim.play(&other, &other.packets(&data));
    assert!(sim.cached("b").as_deref() == Some(&data[..]));
    // The flooder's transfers time out: its share is free again.
    sim.settle();
    assert_eq!(sim.logic.active_transfers(), 0);
    let again = flood[0].packets(&content(10, 1));
    sim.send(&flood[0], &again[0]);
    assert_eq!(sim.logic.active_transfers(), 1);
}

#[test]
fn file_size_limit() {
    let limits = Limits {
        max_file_size: 10_000,
        ..Limits::default()
    };
    // Announced by tsize: refused at the OACK.
    let mut sim = Sim::with_limits(limits.clone());
    let spec = Spec::opts("big", 512, 1);
    let pkts = spec.packets(&content(20_000, 1));
    sim.play(&spec, &pkts[..2]);
    assert_eq!(sim.discarded(DiscardReason::TooLarge), 1);
    assert_eq!(sim.logic.active_transfers(), 0);
    // Without tsize: refused when the data passes the limit.
    let mut sim = Sim::with_limits(limits);
    let spec = Spec::plain("big");
    sim.play(&spec, &spec.packets(&content(20_000, 1)));
    assert_eq!(sim.logic.counters().bounds_hit().file_size, 1);
    assert!(sim.cached("big").is_none());
    assert!(sim.tmp_is_empty());
}

#[test]
fn quota() {
    let mut sim = Sim::with_limits(Limits {
        quota_bytes: 10_000,
        ..Limits::default()
    });
    let a = Spec::plain("a");
    sim.play(&a, &a.packets(&content(6000, 1)));
    // tsize announces more than the quota: refused at the OACK.
    let b = Spec::opts("b", 512, 1);
    sim.play(&b, &b.packets(&content(12_000, 2)));
    // No tsize: refused when the data passes the quota.
    let c = Spec::plain("c");
    sim.play(&c, &c.packets(&content(12_000, 3)));
    assert_eq!(sim.logic.counters().bounds_hit().quota, 2);
    assert!(sim.cached("a").is_some());
    assert!(sim.cached("b").is_none() && sim.cached("c").is_none());
    // A file that fits the quota but not beside "a": "a" is evicted.
    let d = Spec::plain("d");
    sim.play(&d, &d.packets(&content(6000, 4)));
    assert!(sim.cached("d").is_some());
    assert!(sim.cached("a").is_none(), "the least recently used evicted");
    assert_eq!(sim.logic.filestore().removals().evicted_files, 1);
    assert!(sim.logic.filestore().used_bytes() <= 10_000);
    assert!(sim.tmp_is_empty());
}

#[test]
fn restart_keeps_complete_and_publishes_nothing_partial() {
    let mut sim = Sim::new();
    let done = Spec::plain("done");
    let data = content(4000, 1);
    sim.play(&done, &done.packets(&data));
    let partial = Spec {
        client: client(2),
        ..Spec::plain("partial")
    };
    let pkts = partial.packets(&content(4000, 2));
    sim.play(&partial, &pkts[..4]);
    // A crash: nothing is dropped cleanly, the temporary file stays.
    let dir = sim.dir.path().to_owned();
    let Sim {
        dir: keep, logic, ..
    } = sim;
    std::mem::forget(logic);
    assert!(std::fs::read_dir(dir.join("tmp")).unwrap().count() > 0);

    let logic = CacheLogic::new(&dir, Limits::default(), vec![SERVER]).unwrap();
    let fs = logic.filestore();
    assert_eq!(fs.load_report().tmp_removed, 1);
    assert_eq!(fs.len(), 1);
    let e = fs.lookup(U, SERVER, "done").unwrap();
    assert_eq!(std::fs::read(fs.path_of(e)).unwrap(), data);
    assert!(fs.lookup(U, SERVER, "partial").is_none());
    assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
    drop(keep);
}

#[test]
fn frames_that_are_not_ours() {
    let mut sim = Sim::new();
    let spec = Spec::plain("f");
    let pkts = spec.packets(&content(1000, 1));
    // A corrupted copy: the UDP checksum no longer matches.
    let mut f = frame(
        spec.client,
        SocketAddrV4::new(SERVER, 69),
        CLIENT_MAC,
        &pkts[0].payload,
    );
    let last = f.len() - 3;
    f[last] ^= 0x20;
    sim.logic.handle_frame(sim.now, sim.wall(), true, &f);
    assert_eq!(sim.logic.counters().bad_checksum, 1);
    assert_eq!(sim.logic.active_transfers(), 0);
    // TFTP with another server, and ARP.
    let other = frame(
        spec.client,
        SocketAddrV4::new(Ipv4Addr::new(10, 9, 9, 9), 69),
        CLIENT_MAC,
        &pkts[0].payload,
    );
    sim.logic.handle_frame(sim.now, sim.wall(), true, &other);
    sim.logic
        .handle_frame(sim.now, sim.wall(), true, &[0u8; 60]);
    let c = sim.logic.counters();
    assert_eq!((c.not_ours, c.not_udp_v4, c.frames), (1, 1, 3));
}

/// `frame` (untagged IPv4) as IPv4 fragments of at most `mtu` bytes of IP
/// packet each, with identification `ident`; a frame that fits is returned
/// as is.
fn fragment(frame: &[u8], mtu: usize, ident: u16) -> Vec<Vec<u8>> {
    let (eth, ip) = frame.split_at(14);
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip.len() <= mtu {
        return vec![frame.to_vec()];
    }
    let (header, data) = ip.split_at(ihl);
    let step = (mtu - ihl) / 8 * 8;
    data.chunks(step)
        .enumerate()
        .map(|(i, chunk)| {
            let mut f = [eth, header, chunk].concat();
            let mut p = wire::frame::ipv4::Packet::new_unchecked(&mut f[14..]);
            p.set_total_len((ihl + chunk.len()) as u16);
            p.set_ident(ident);
            p.set_fragment(false, (i + 1) * step < data.len(), (i * step) as u16);
            p.fill_checksum();
            f
        })
        .collect()
}

impl Sim {
    /// Like [`Sim::send`], with frames over `mtu` bytes of IP packet sent
    /// as fragments (`reversed`: last fragment first).
    fn send_fragmented(&mut self, spec: &Spec, p: &Pkt, mtu: usize, reversed: bool) {
        self.now += Duration::from_micros(20);
        let (src, dst, mac) = addressing(spec, p);
        let ident = self.updates.len() as u16 ^ (self.now - self.t0).subsec_nanos() as u16;
        let mut frames = fragment(&frame(src, dst, mac, &p.payload), mtu, ident);
        if reversed {
            frames.reverse();
        }
        for f in &frames {
            let wall = self.wall();
            self.logic.handle_frame(self.now, wall, p.from_client, f);
        }
        while let Some(u) = self.logic.poll_filter_update() {
            self.updates.push(u);
        }
    }
}

#[test]
fn blksize_8192_blocks_arrive_fragmented_and_are_cached() {
    for (window, reversed) in [(1, false), (16, false), (16, true)] {
        let spec = Spec::opts("boot.wim", 8192, window);
        let data = content(200_000, 5);
        let pkts = spec.packets(&data);
        let mut sim = Sim::new();
        for p in &pkts {
            sim.send_fragmented(&spec, p, 1500, reversed);
        }
        assert!(sim.cached("boot.wim").as_deref() == Some(&data[..]));
        let c = *sim.logic.counters();
        // 24 full blocks of 8192 (6 fragments each at a 1500 MTU) and a
        // final 3392-byte block (3 fragments).
        assert_eq!(c.defrag.reassembled, 25, "window {window}");
        assert_eq!(c.defrag.fragments, 24 * 6 + 3);
        assert_eq!(c.defrag.dropped.total(), 0);
        assert_eq!(
            (c.transfers_completed, c.bad_checksum, c.not_udp_v4),
            (1, 0, 0)
        );
        assert_eq!(sim.logic.poll_timeout(), None);
        assert!(sim.tmp_is_empty());
    }
}

#[test]
fn a_corrupt_fragment_fails_the_checksum_and_nothing_is_cached() {
    let spec = Spec::opts("kernel", 8192, 1);
    let data = content(50_000, 6);
    let pkts = spec.packets(&data);
    let mut sim = Sim::new();
    for (i, p) in pkts.iter().enumerate() {
        if i != 7 {
            sim.send_fragmented(&spec, p, 1500, false);
            continue;
        }
        // DATA block 3: one bit flips in its fourth fragment's data (the IP
        // header checksum does not cover it; the UDP checksum does).
        assert!(matches!(
            Packet::parse(&p.payload),
            Ok(Packet::Data { block: 3, .. })
        ));
        let f = frame(
            SocketAddrV4::new(SERVER, TID),
            spec.client,
            SERVER_MAC,
            &p.payload,
        );
        let mut frags = fragment(&f, 1500, 0x4242);
        assert_eq!(frags.len(), 6);
        frags[3][100] ^= 0x08;
        for f in &frags {
            sim.logic.handle_frame(sim.now, sim.wall(), false, f);
        }
    }
    sim.settle();
    let c = *sim.logic.counters();
    assert_eq!((c.bad_checksum, c.defrag.reassembled), (1, 6));
    assert!(sim.cached("kernel").is_none());
    assert_eq!(sim.discarded(DiscardReason::MissingBlocks), 1);
    assert!(sim.tmp_is_empty());
}

impl Sim {
    /// Plays the first three packets of `pkts` (RRQ, OACK, ACK 0) and
    /// returns the fragments of DATA block 1 at a 1500-byte MTU
    /// (identification `ident`), plus a forged fragment 1 (one byte
    /// different), none of them sent.
    fn start_fragmented(
        &mut self,
        spec: &Spec,
        pkts: &[Pkt],
        ident: u16,
    ) -> (Vec<Vec<u8>>, Vec<u8>) {
        for p in &pkts[..3] {
            self.send(spec, p);
        }
        let f = frame(
            SocketAddrV4::new(SERVER, TID),
            spec.client,
            SERVER_MAC,
            &pkts[3].payload,
        );
        let frags = fragment(&f, 1500, ident);
        let mut forged = frags[1].clone();
        forged[200] ^= 0xff;
        (frags, forged)
    }
}

#[test]
fn conflicting_fragments_are_counted_and_drop_the_block() {
    let spec = Spec::opts("initrd", 8192, 1);
    let data = content(20_000, 7);
    let pkts = spec.packets(&data);
    let mut sim = Sim::new();
    let (frags, forged) = sim.start_fragmented(&spec, &pkts, 7);
    // A forged copy of fragment 1 with other bytes, then the real ones.
    for f in std::iter::once(&forged).chain(&frags) {
        sim.logic.handle_frame(sim.now, sim.wall(), false, f);
    }
    let c = *sim.logic.counters();
    assert_eq!(
        c.defrag
            .dropped
            .get(crate::defrag::DropReason::OverlapConflict),
        1
    );
    assert_eq!(c.defrag.reassembled, 0);
    // The defragmenter's timer is among the cache logic's.
    let due = sim.logic.poll_timeout().unwrap();
    assert!(due <= sim.now + Duration::from_secs(2));
}

#[test]
fn fragments_that_are_not_ours() {
    let mut sim = Sim::new();
    let other = SocketAddrV4::new(Ipv4Addr::new(10, 9, 9, 9), 5000);
    let big = vec![0x5a; 3000];
    // UDP between two other hosts.
    let f = frame(other, client(1), SERVER_MAC, &big);
    for f in fragment(&f, 1500, 1) {
        sim.logic.handle_frame(sim.now, sim.wall(), false, &f);
    }
    // Not UDP, from the server: protocol 1 (ICMP) in the IP header.
    let f = frame(SocketAddrV4::new(SERVER, 1), client(1), SERVER_MAC, &big);
    for mut f in fragment(&f, 1500, 2) {
        let mut p = wire::frame::ipv4::Packet::new_unchecked(&mut f[14..]);
        p.set_protocol(wire::frame::IpProtocol::ICMP);
        p.fill_checksum();
        sim.logic.handle_frame(sim.now, sim.wall(), false, &f);
    }
    let c = *sim.logic.counters();
    assert_eq!((c.frames, c.not_ours, c.not_udp_v4), (6, 3, 3));
    assert_eq!(c.defrag.fragments, 0);

    // A lone first fragment from the server times out with the timers.
    let f = frame(SocketAddrV4::new(SERVER, TID), client(1), SERVER_MAC, &big);
    let first = fragment(&f, 1500, 3).remove(0);
    sim.logic.handle_frame(sim.now, sim.wall(), false, &first);
    assert_eq!(sim.logic.counters().defrag.fragments, 1);
    assert_eq!(
        sim.logic.poll_timeout(),
        Some(sim.now + Duration::from_secs(2))
    );
    sim.settle();
    let c = *sim.logic.counters();
    assert_eq!(c.defrag.dropped.get(crate::defrag::DropReason::Timeout), 1);
    assert_eq!(sim.logic.poll_timeout(), None);
}

/// What a lossy, duplicating, reordering copy path does to a transfer.
#[derive(Debug, Clone)]
struct Impair {
    /// Per packet: 0 = lose, 1 = pass, 2+ = duplicate.
    fate: Vec<u8>,
    /// Swaps of neighbouring packets (position, distance within a window).
    swaps: Vec<(usize, usize)>,
}

fn impair() -> impl Strategy<Value = Impair> {
    (
        prop::collection::vec(
            prop_oneof![1 => Just(0u8), 12 => Just(1u8), 2 => Just(2u8)],
            400,
        ),
        prop::collection::vec((0usize..400, 1usize..6), 0..20),
    )
        .prop_map(|(fate, swaps)| Impair { fate, swaps })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    /// Whatever copies are lost, duplicated or reordered, the cache holds
    /// the original byte for byte (with its SHA-256) or nothing.
    #[test]
    fn cached_file_is_exact_or_absent(
        len in 0usize..3000,
        blksize in prop_oneof![Just(8u16), Just(64), Just(512), Just(1428)],
        window in 1u16..5,
        tsize in any::<bool>(),
        seed in any::<u8>(),
        imp in impair(),
    ) {
        let spec = Spec { ask_tsize: tsize, ..Spec::opts("f", blksize, window) };
        let data = content(len, seed);
        let clean = spec.packets(&data);
        let mut played = Vec::new();
        for (i, p) in clean.iter().enumerate() {
            for _ in 0..imp.fate.get(i % imp.fate.len()).copied().unwrap_or(1) {
                played.push(p.clone());
            }
        }
        for &(at, d) in &imp.swaps {
            if at + d < played.len() {
                played.swap(at, at + d);
            }
        }
        let mut sim = Sim::new();
        sim.play(&spec, &played);
        sim.settle();
        let lost_any = imp.fate.iter().take(clean.len()).any(|f| *f == 0);
        match sim.cached("f") {
            Some(got) => prop_assert!(got == data, "cached file differs"),
            None => prop_assert!(lost_any || !imp.swaps.is_empty(), "clean copies must cache"),
        }
        prop_assert!(sim.tmp_is_empty());
        prop_assert_eq!(sim.logic.active_transfers(), 0);
    }
}

// Direction is the root of trust (issue 13): the side a frame entered on
// decides what it may be, never its addresses.

impl Sim {
    /// `p` with its true addressing, but entering on `from_client_side`.
    fn send_on_side(&mut self, spec: &Spec, p: &Pkt, from_client_side: bool) {
        self.now += Duration::from_micros(20);
        let (src, dst, mac) = addressing(spec, p);
        let f = frame_on(spec.vlan, src, dst, mac, &p.payload);
        let wall = self.wall();
        self.logic
            .handle_frame(self.now, wall, from_client_side, &f);
        while let Some(u) = self.logic.poll_filter_update() {
            self.updates.push(u);
        }
    }
}

/// A host on the client side plays both ends of a transfer: its own
/// request, then the server's OACK and DATA spoofed from the server's
/// address. Nothing is cached, every spoofed frame is counted, and the
/// real server's transfer of the same name afterwards is cached as sent.
#[test]
fn server_frames_spoofed_on_the_client_side_are_never_cached() {
    let spec = Spec::opts("grubx64.efi", 1428, 4);
    let poison = content(30_000, 0xee);
    let pkts = spec.packets(&poison);
    let mut sim = Sim::new();
    for p in &pkts {
        sim.send_on_side(&spec, p, true);
    }
    sim.settle();
    let from_server = pkts.iter().filter(|p| !p.from_client).count() as u64;
    let c = *sim.logic.counters();
    assert_eq!(c.wrong_side, from_server);
    assert_eq!((c.transfers_completed, c.files_cached), (0, 0));
    assert!(sim.cached("grubx64.efi").is_none());
    assert!(sim.tmp_is_empty());
    // The real transfer, each frame on its own side.
    let real = content(30_000, 0x11);
    let spec = Spec {
        client: client(2),
        ..spec
    };
    sim.play(&spec, &spec.packets(&real));
    assert!(sim.cached("grubx64.efi").as_deref() == Some(&real[..]));
    assert_eq!(sim.logic.counters().wrong_side, from_server);
}

/// The same from the other side: a frame to the server that shows up on
/// the server side (a host there spoofing a client's request or ACKs) is
/// not taken as the client's.
#[test]
fn client_frames_on_the_server_side_are_ignored() {
    let spec = Spec::plain("pxelinux.0");
    let data = content(3000, 3);
    let pkts = spec.packets(&data);
    let mut sim = Sim::new();
    sim.send_on_side(&spec, &pkts[0], false);
    let c = *sim.logic.counters();
    assert_eq!((c.wrong_side, c.transfers_seen()), (1, 0));
    assert!(sim.updates.is_empty(), "no rule for a spoofed request");
}

/// A fragment spoofed on the client side never completes (or spoils) a
/// server's datagram: it is dropped before reassembly, and the real
/// fragments still reassemble and cache.
#[test]
fn a_fragment_spoofed_on_the_client_side_never_reaches_reassembly() {
    let spec = Spec::opts("boot.sdi", 8192, 1);
    let data = content(20_000, 8);
    let pkts = spec.packets(&data);
    let mut sim = Sim::new();
    let (frags, forged) = sim.start_fragmented(&spec, &pkts, 9);
    // A forged fragment 1 on the client side, before the real ones.
    sim.logic.handle_frame(sim.now, sim.wall(), true, &forged);
    let c = *sim.logic.counters();
    assert_eq!((c.wrong_side, c.defrag.fragments), (1, 0));
    for f in &frags {
        sim.logic.handle_frame(sim.now, sim.wall(), false, f);
    }
    for p in &pkts[4..] {
        sim.send_fragmented(&spec, p, 1500, false);
    }
    assert!(sim.cached("boot.sdi").as_deref() == Some(&data[..]));
    let c = *sim.logic.counters();
    assert_eq!(c.defrag.dropped.total(), 0);
}

/// BOOTP replies (op 2) count only from the server side, requests only
/// from the client side: a rogue DHCP server on the client side cannot
/// write the image map.
#[test]
fn dhcp_replies_from_the_client_side_are_ignored() {
    let mut sim = Sim::new();
    let mut reply = vec![0u8; 300];
    reply[0] = 2; // BOOTREPLY
    let rogue = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 66), 67);
    let bcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, 68);
    let f = frame(rogue, bcast, CLIENT_MAC, &reply);
    sim.logic.handle_frame(sim.now, sim.wall(), true, &f);
    let mut request = reply.clone();
    request[0] = 1; // BOOTREQUEST
    let f = frame(
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
        SERVER_MAC,
        &request,
    );
    sim.logic.handle_frame(sim.now, sim.wall(), false, &f);
    let c = *sim.logic.counters();
    assert_eq!((c.wrong_side, c.dhcp_messages), (2, 0));
    // On their own sides both reach the image map.
    let f = frame(rogue, bcast, SERVER_MAC, &reply);
    sim.logic.handle_frame(sim.now, sim.wall(), false, &f);
    let f = frame(
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
        CLIENT_MAC,
        &request,
    );
    sim.logic.handle_frame(sim.now, sim.wall(), true, &f);
    assert_eq!(sim.logic.counters().dhcp_messages, 2);
}

/// Names are keys as the server resolves them (issue 13): "x", "/x" and
/// "./x" are one cache entry; a name that climbs out of the root is
/// followed but never cached.
#[test]
fn the_spellings_of_one_file_are_one_entry() {
    let data = content(4000, 4);
    let mut sim = Sim::new();
    for (i, name) in ["boot/x.efi", "/boot/x.efi", "./boot//x.efi"]
        .iter()
        .enumerate()
    {
        let spec = Spec {
            client: client(10 + i as u8),
            ..Spec::plain(name)
        };
        sim.play(&spec, &spec.packets(&data));
    }
    let c = *sim.logic.counters();
    assert_eq!((c.files_cached, c.files_refreshed), (1, 2));
    assert_eq!(sim.logic.filestore().len(), 1);
    for name in ["boot/x.efi", "/boot/x.efi", "\\boot\\x.efi"] {
        assert!(sim.cached(name).as_deref() == Some(&data[..]), "{name}");
    }
    let spec = Spec {
        client: client(20),
        ..Spec::plain("../etc/passwd")
    };
    sim.play(&spec, &spec.packets(&data));
    assert_eq!(sim.discarded(DiscardReason::UnsupportedName), 1);
    assert_eq!(sim.logic.filestore().len(), 1);
}

/// Issue 13: two VLANs with the same addresses and ports (two servers at
/// one address) are two transfers at once, two filter rules and two files;
/// neither VLAN's file is served on the other or untagged.
#[test]
fn the_same_transfer_on_two_vlans_is_two_transfers_and_two_files() {
    let mut sim = Sim::new();
    let v100 = VlanScope::new(Some(100), None);
    let v200 = VlanScope::new(Some(100), Some(200)); // QinQ, same outer VID
    let a = Spec {
        vlan: v100,
        ..Spec::opts("boot.efi", 1428, 4)
    };
    let b = Spec {
        vlan: v200,
        ..a.clone()
    };
    let (da, db) = (content(20_000, 1), content(20_000, 2));
    let (pa, pb) = (a.packets(&da), b.packets(&db));
    // Interleaved: both transfers are tracked at the same time.
    for (x, y) in pa.iter().zip(&pb) {
        sim.send(&a, x);
        sim.send(&b, y);
    }
    assert_eq!(sim.logic.counters().tracker.transfers_started, 2);
    assert_eq!(sim.cached_on(v100, "boot.efi"), Some(da));
    assert_eq!(sim.cached_on(v200, "boot.efi"), Some(db));
    assert_eq!(sim.cached_on(U, "boot.efi"), None);
    let v200_alone = VlanScope::new(Some(200), None);
    assert_eq!(sim.cached_on(v200_alone, "boot.efi"), None);
    let c = sim.logic.counters();
    assert_eq!((c.files_cached, c.files_replaced), (2, 0));
    assert_eq!(sim.logic.filestore().len(), 2);
    // One rule per VLAN, each expected, pinned and removed in its scope.
    for scope in [v100, v200] {
        let mine = sim.updates.iter().filter(|u| u.scope() == scope).count();
        assert_eq!(mine, 3, "{scope}: {:?}", sim.updates);
    }
    // Both survive a restart under their own keys.
    let reopened = Filestore::open(sim.dir.path()).unwrap();
    assert_eq!(reopened.len(), 2);
    assert!(reopened.lookup(v200, SERVER, "boot.efi").is_some());
    assert!(reopened.lookup(U, SERVER, "boot.efi").is_none());
}

/// With `share_across_vlans` the cache key has no VLAN: the same file
/// filled on two VLANs is one file, served on any VLAN (the transfers are
/// still told apart).
#[test]
fn shared_across_vlans_is_one_file() {
    let mut sim = Sim::with_limits(Limits {
        share_across_vlans: true,
        ..Limits::default()
    });
    let data = content(3000, 9);
    for vid in [100, 200] {
        let spec = Spec {
            vlan: VlanScope::new(Some(vid), None),
            ..Spec::plain("shared.img")
        };
        sim.play(&spec, &spec.packets(&data));
    }
    let c = sim.logic.counters();
    assert_eq!(
        (c.transfers_completed, c.files_cached, c.files_refreshed),
        (2, 1, 1)
    );
    assert_eq!(sim.logic.filestore().len(), 1);
    for scope in [U, VlanScope::new(Some(300), Some(4))] {
        assert_eq!(sim.cached_on(scope, "shared.img").as_ref(), Some(&data));
    }
    assert!(sim.logic.filestore().entries().all(|e| e.shared));
}
