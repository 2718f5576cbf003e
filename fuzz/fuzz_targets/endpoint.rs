//! The serving endpoint (bootcache-serve) driven by hostile frames and time
//! steps, in addressed mode with validator questions: clients' and the
//! origin's frames built around the fuzzer's bytes (so they reach the
//! sessions, the fetches and ARP), raw frames, answers to its questions.
//! Never panics; every frame it sends parses; DATA never leaves the file;
//! the tables stay within their bounds; a frame it forwards is one it was
//! given; and once every question is answered and time runs on, nothing is
//! left: no session, held request or fetch.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bootcache_serve::endpoint::{
    Answer, Cache, Config, CopyFacts, Endpoint, Freshness, Limits, OwnAddress, Transmit, Trapped,
};
use bootcache_serve::tftp_client::ClientOptions;
use bootcache_serve::tftp_server::{self, ServerConfig};
use libfuzzer_sys::fuzz_target;
use wire::classify::classify;
use wire::frame::{ArpFrameRepr, ArpOperation, ArpRepr, MacAddr, UdpFrameRepr, VlanScope};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const OWN: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
const SERVER_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const OWN_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 5]);
const CLIENT_MAC: MacAddr = MacAddr([2, 0, 0, 1, 0, 1]);
const LIMITS: Limits = Limits {
    sessions: 8,
    held: 8,
    fetches: 2,
    stream_bytes: 150_000,
};

type Key = (VlanScope, Ipv4Addr, String);

/// Two cached files, under the server's and the origin's untagged scope.
struct Files(HashMap<Key, Arc<Vec<u8>>>);

impl Cache for Files {
    type Entry = Key;
    type File = Arc<Vec<u8>>;
    fn lookup(&self, scope: VlanScope, server: Ipv4Addr, name: &str) -> Option<Key> {
        let k = (scope, server, name.to_owned());
        self.0.contains_key(&k).then_some(k)
    }
    fn facts(&self, e: &Key) -> CopyFacts {
        CopyFacts {
            name: e.2.clone(),
            size: self.0.get(e).map_or(0, |f| f.len() as u64),
            sha256: [1; 32],
            last_seen: SystemTime::UNIX_EPOCH,
        }
    }
    fn check_verified(&mut self, _: &Key) -> bool {
        true
    }
    fn open(&mut self, e: &Key) -> Option<Arc<Vec<u8>>> {
        self.0.get(e).cloned()
    }
    fn is_publishing(&self, _: VlanScope, _: Ipv4Addr, _: &str) -> bool {
        false
    }
}

fn udp(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    p: &[u8],
) -> Vec<u8> {
    let repr = UdpFrameRepr::ipv4(src_mac, dst_mac, src, dst);
    let mut buf = vec![0; repr.buffer_len(p.len()).max(60)];
    match repr.emit(&mut buf, p) {
        Ok(_) => buf,
        Err(_) => Vec::new(),
    }
}

fuzz_target!(|data: &[u8]| {
    let file: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let mut files = Files(HashMap::new());
    for (server, name) in [(SERVER, "a"), (SERVER, "b"), (SERVER, "c")] {
        files.0.insert(
            (VlanScope::UNTAGGED, server, name.into()),
            Arc::new(file.clone()),
        );
    }
    let mut ep: Endpoint<Key, Arc<Vec<u8>>> = Endpoint::new(Config {
        server: ServerConfig::default(),
        freshness: Freshness::Ask {
            serve_when_unreachable: data.first().is_some_and(|b| b & 1 == 1),
        },
        limits: LIMITS,
        own: Some(OwnAddress {
            ip: OWN,
            mac: OWN_MAC,
            origin: SERVER,
            fetch: ClientOptions {
                blksize: Some(1024),
                max_size: 100_000,
                ..Default::default()
            },
        }),
    });
    let mut now = Instant::now();
    let wall = SystemTime::now();
    let mut seen = Seen {
        given: HashSet::new(),
        questions: Vec::new(),
        tids: vec![69],
        fetch_ports: vec![69],
    };
    let mut rest = data.get(1..).unwrap_or_default();
    let mut steps = 0;
    while let [op, arg, len, tail @ ..] = rest {
        steps += 1;
        if steps > 256 {
            break;
        }
        let (bytes, after) = tail.split_at(usize::from(*len).min(tail.len()));
        rest = after;
        let client =
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, arg & 3), 1000 + u16::from(arg >> 4));
        let pick = |v: &Vec<u16>| v[usize::from(*arg) % v.len()];
        let (frame, side) = match op % 8 {
            0 => (bytes.to_vec(), arg & 1),
            1 => (
                udp(
                    CLIENT_MAC,
                    SERVER_MAC,
                    client,
                    SocketAddrV4::new(SERVER, 69),
                    bytes,
                ),
                0,
            ),
            2 => (
                udp(
                    CLIENT_MAC,
                    SERVER_MAC,
                    client,
                    SocketAddrV4::new(SERVER, pick(&seen.tids)),
                    bytes,
                ),
                0,
            ),
            3 => (
                udp(
                    CLIENT_MAC,
                    OWN_MAC,
                    client,
                    SocketAddrV4::new(OWN, 69),
                    bytes,
                ),
                0,
            ),
            4 => (
                udp(
                    CLIENT_MAC,
                    OWN_MAC,
                    client,
                    SocketAddrV4::new(OWN, pick(&seen.tids)),
                    bytes,
                ),
                0,
            ),
            5 => {
                let from = SocketAddrV4::new(SERVER, 30000 + u16::from(arg & 7));
                (
                    udp(
                        SERVER_MAC,
                        OWN_MAC,
                        from,
                        SocketAddrV4::new(OWN, pick(&seen.fetch_ports)),
                        bytes,
                    ),
                    1,
                )
            }
            6 => {
                // The origin's ARP reply (the fetches wait for it).
                let r = ArpFrameRepr {
                    src_mac: SERVER_MAC,
                    dst_mac: OWN_MAC,
                    outer_vlan: None,
                    inner_vlan: None,
                    arp: ArpRepr {
                        operation: ArpOperation::Reply,
                        sender_mac: SERVER_MAC,
                        sender_ip: SERVER,
                        target_mac: OWN_MAC,
                        target_ip: OWN,
                    },
                };
                let mut buf = vec![0; r.buffer_len()];
                r.emit(&mut buf).expect("buffer_len is enough");
                (buf, 1)
            }
            _ => {
                now += Duration::from_millis(u64::from(*arg) * 64);
                if let Some(q) = seen.questions.pop() {
                    let a = [
                        Answer::Current,
                        Answer::Stale,
                        Answer::Unreachable,
                        Answer::Refused,
                    ][usize::from(*len) % 4];
                    ep.answer(now, &mut files, q, a);
                }
                ep.handle_timeout(now, &mut files);
                (Vec::new(), 0)
            }
        };
        if !frame.is_empty() {
            seen.given.insert(frame.clone());
            let class = classify(&frame);
            ep.handle(
                now,
                wall,
                &mut files,
                Trapped {
                    frame: &frame,
                    class: &class,
                    side,
                    tsc: 0,
                },
            );
        }
        drain(&mut ep, now, &file, &mut seen);
        assert!(ep.active() <= LIMITS.sessions);
        assert!(ep.held() <= LIMITS.held);
        assert!(ep.active_fetches() <= LIMITS.fetches);
    }
    // Every question answered, time runs on: everything ends.
    for q in seen.questions.drain(..) {
        ep.answer(now, &mut files, q, Answer::Unreachable);
    }
    for _ in 0..200 {
        now += Duration::from_secs(3);
        ep.handle_timeout(now, &mut files);
        drain(&mut ep, now, &file, &mut seen);
        for q in seen.questions.drain(..) {
            ep.answer(now, &mut files, q, Answer::Unreachable);
        }
    }
    assert_eq!((ep.active(), ep.held(), ep.active_fetches()), (0, 0, 0));
});

/// What the target saw: frames given, questions open, ports the endpoint
/// used (sessions' TIDs, fetches' ports: frames are aimed at them).
struct Seen {
    given: HashSet<Vec<u8>>,
    questions: Vec<bootcache_serve::endpoint::Ticket>,
    tids: Vec<u16>,
    fetch_ports: Vec<u16>,
}

/// Does what the endpoint asks, checking what it sends.
fn drain(ep: &mut Endpoint<Key, Arc<Vec<u8>>>, now: Instant, file: &[u8], seen: &mut Seen) {
    let Seen {
        given,
        questions,
        tids,
        fetch_ports,
    } = seen;
    while ep.poll_filter_update().is_some() {}
    while let Some(q) = ep.poll_question() {
        questions.push(q.ticket);
    }
    while ep.poll_event().is_some() {}
    let mut buf = vec![0u8; 70_000];
    while let Some(t) = ep.poll_transmit(now, true) {
        match t {
            Transmit::Session(f) => {
                if let tftp_server::Transmit::Data { range, .. } = &f.packet {
                    assert!(range.end <= file.len() as u64);
                }
                let hl = f.reply.header_len();
                let n = ep.write(&f, &mut buf[hl..]).expect("buffer large enough");
                f.reply.emit_in_place(&mut buf, n).expect("headers fit");
                assert!(UdpFrameRepr::parse(&buf[..hl + n]).is_ok());
                if !tids.contains(&f.key.2) && tids.len() < 16 {
                    tids.push(f.key.2);
                }
            }
            Transmit::Udp { repr, payload, .. } => {
                assert!(
                    wire::tftp::Packet::parse(&payload).is_ok(),
                    "unparsable TFTP"
                );
                let p = repr.src().port();
                if !fetch_ports.contains(&p) && fetch_ports.len() < 16 {
                    fetch_ports.push(p);
                }
            }
            Transmit::Frame { frame, .. } => {
                assert!(frame.len() >= 14);
            }
            Transmit::Forward { frame, .. } => {
                assert!(
                    given.contains(&*frame),
                    "forwarded a frame it was not given"
                );
            }
        }
    }
}
