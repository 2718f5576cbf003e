//! The message handler (patent figure 9): reads the DHCP/BOOTP, proxyDHCP
//! and PXE boot-service (UDP 4011) messages the fast path copies to the slow
//! path and says, per message, what it teaches about one client: its MAC,
//! UUID, IP, architecture, vendor and user class, and which NBP and boot
//! server it is told to use. [`crate::imagemap::ImageMap`] folds these
//! [`Learned`] facts into the image map.
//!
//! Sans-I/O: [`MessageHandler::handle`] takes one UDP payload with its
//! addresses and returns what it learned; nothing here reads a clock or a
//! socket. Malformed messages are counted and otherwise ignored.
//!
//! Which boot information counts:
//! - a DHCP OFFER is tentative (a client may receive several and take one):
//!   its boot file is kept per (xid, chaddr, server) until the client's ACK
//!   from that server, which wins with its own boot file if it has one;
//! - a proxyDHCP OFFER (no `yiaddr`, vendor class `PXEClient`) only ever goes
//!   to PXE clients, which use its boot information whatever DHCP server gave
//!   them their address, so it counts at once;
//! - a boot-service ACK (from UDP 4011) names the NBP the client asked for
//!   with its boot item (option 43, sub-option 71);
//! - a BOOTP reply (no option 53) is final, like an ACK.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};

use serde::{Deserialize, Serialize};
use wire::dhcp::{MessageType, Op, Repr, VendorClass, CLIENT_PORT, PXE_PORT, SERVER_PORT};

/// How many tentative DHCP offers [`MessageHandler`] remembers; the oldest is
/// forgotten first. Offers are answered within seconds, so a few hundred
/// cover every client booting at once behind one bridge.
pub const DEFAULT_MAX_PENDING_OFFERS: usize = 1024;

/// Which exchange told a client its boot file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootVia {
    /// A DHCP server's ACK (or its OFFER, when the ACK names no file).
    Dhcp,
    /// A proxyDHCP OFFER (no address, PXE vendor class).
    ProxyDhcp,
    /// A PXE boot server's ACK on UDP 4011 (boot server discovery).
    BootService,
    /// A BOOTP reply (no DHCP message type).
    Bootp,
}

impl BootVia {
    /// A short name for listings.
    pub fn as_str(self) -> &'static str {
        match self {
            BootVia::Dhcp => "dhcp",
            BootVia::ProxyDhcp => "proxydhcp",
            BootVia::BootService => "bootservice",
            BootVia::Bootp => "bootp",
        }
    }
}

/// A boot file a server told a client to load, and from where.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BootDirective {
    /// The NBP's file name (option 67, else the `file` field), up to its
    /// first NUL, as sent (invalid UTF-8 replaced). Never used as a path.
    pub file: String,
    /// The TFTP server the client will fetch it from: `siaddr`, else option
    /// 66 when it is a dotted address, else the server identifier (54), else
    /// the reply's source address. This is the order PXE ROMs and EDK2 use.
    pub server: Option<Ipv4Addr>,
    /// Option 66 (or the `sname` text) as sent, when there is one: a host
    /// name we do not resolve, kept for the operator.
    pub server_name: Option<String>,
    /// Which exchange said so.
    pub via: BootVia,
}

/// The PXE client class from option 60 (`PXEClient:Arch:xxxxx:UNDI:yyyzzz`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PxeClass {
    /// Architecture in the class string.
    pub arch: u16,
    /// UNDI major version.
    pub undi_major: u8,
    /// UNDI minor version.
    pub undi_minor: u8,
}

/// What one message teaches about one client. Fields a message does not
/// carry are `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Learned {
    /// The client's MAC (`chaddr`; the frame's source for a request whose
    /// `chaddr` is not Ethernet and that was not relayed).
    pub mac: [u8; 6],
    /// Whether the client sent the message (a BOOTREQUEST); client-only
    /// facts (UUID, classes, architecture) are taken only from these.
    pub from_client: bool,
    /// The client's UUID/GUID (option 97).
    pub uuid: Option<[u8; 16]>,
    /// The client's address, once it is assigned: `yiaddr` of an ACK or
    /// BOOTP reply, `ciaddr` of a client that has one (4011 requests,
    /// renewals, INFORM and the ACK to it).
    pub ip: Option<Ipv4Addr>,
    /// The client's architecture: option 93's first entry, else the one in
    /// its PXE vendor class.
    pub arch: Option<u16>,
    /// The PXE client class, parsed.
    pub pxe_class: Option<PxeClass>,
    /// Option 60 as sent by the client (invalid UTF-8 replaced).
    pub vendor_class: Option<String>,
    /// Option 77 as sent by the client (`iPXE` for iPXE).
    pub user_class: Option<String>,
    /// The boot item (server type, layer) of option 43 sub-option 71, in a
    /// boot-service request or ACK.
    pub boot_item: Option<(u16, u16)>,
    /// The boot file this message tells the client to load, if it does.
    pub boot: Option<BootDirective>,
}

impl Learned {
    fn new(mac: [u8; 6], from_client: bool) -> Self {
        Learned {
            mac,
            from_client,
            uuid: None,
            ip: None,
            arch: None,
            pxe_class: None,
            vendor_class: None,
            user_class: None,
            boot_item: None,
            boot: None,
        }
    }
}

/// The message handler's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandlerCounters {
    /// Every payload given to [`MessageHandler::handle`].
    pub messages: u64,
    /// Payloads that did not parse as DHCP/BOOTP, or named no client.
    pub malformed: u64,
    /// Well-formed messages not for us: not on a DHCP/PXE port, or not
    /// Ethernet hardware addresses.
    pub ignored: u64,
    /// Tentative offers forgotten because [`DEFAULT_MAX_PENDING_OFFERS`]
    /// (or the configured bound) was reached.
    pub pending_evicted: u64,
}

/// A DHCP OFFER's boot information, waiting for the client's choice.
#[derive(Clone, Debug)]
struct PendingOffer {
    xid: u32,
    mac: [u8; 6],
    /// The offering server (option 54, else the source address).
    server: Ipv4Addr,
    boot: BootDirective,
}

/// Parses DHCP/PXE messages into [`Learned`] facts, remembering tentative
/// offers to match them with the ACK that follows (by xid, chaddr, server).
#[derive(Clone, Debug)]
pub struct MessageHandler {
    pending: VecDeque<PendingOffer>,
    max_pending: usize,
    counters: HandlerCounters,
}

impl Default for MessageHandler {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PENDING_OFFERS)
    }
}

fn nonzero(a: Ipv4Addr) -> Option<Ipv4Addr> {
    (!a.is_unspecified()).then_some(a)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The client MAC of a message, if it names one.
fn client_mac(r: &Repr<'_>, src_mac: [u8; 6]) -> Result<[u8; 6], Skip> {
    let mut mac = [0; 6];
    if r.htype == 1 && r.hlen == 6 {
        mac.copy_from_slice(&r.chaddr[..6]);
    } else if r.op == Op::Request && r.giaddr.is_unspecified() {
        // Not relayed, so the frame came from the client itself.
        mac = src_mac;
    } else {
        return Err(Skip::Ignored);
    }
    // An all-zero or group address names no client (a crafted message).
    if mac == [0; 6] || mac[0] & 1 != 0 {
        return Err(Skip::Malformed);
    }
    Ok(mac)
}

enum Skip {
    Malformed,
    Ignored,
}

impl MessageHandler {
    /// A handler that remembers at most `max_pending` tentative offers.
    pub fn new(max_pending: usize) -> Self {
        MessageHandler {
            pending: VecDeque::new(),
            max_pending,
            counters: HandlerCounters::default(),
        }
    }

    /// The counters so far.
    pub fn counters(&self) -> HandlerCounters {
        self.counters
    }

    /// Reads one UDP payload sent from `src` to `dst` in a frame from
    /// `src_mac`. Returns what it teaches about a client, or `None` when it
    /// is malformed, not for us, or says nothing (the counters tell which).
    /// Never panics, whatever the payload.
    pub fn handle(
        &mut self,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        src_mac: [u8; 6],
        payload: &[u8],
    ) -> Option<Learned> {
        self.counters.messages += 1;
        let ports = [src.port(), dst.port()];
        let boot_service = ports.contains(&PXE_PORT);
        if !boot_service && !ports.iter().any(|p| [SERVER_PORT, CLIENT_PORT].contains(p)) {
            self.counters.ignored += 1;
            return None;
        }
        let Ok(r) = Repr::parse(payload) else {
            self.counters.malformed += 1;
            return None;
        };
        let mac = match client_mac(&r, src_mac) {
            Ok(m) => m,
            Err(Skip::Malformed) => {
                self.counters.malformed += 1;
                return None;
            }
            Err(Skip::Ignored) => {
                self.counters.ignored += 1;
                return None;
            }
        };
        Some(match r.op {
            Op::Request => self.client_message(&r, mac, boot_service),
            Op::Reply => self.server_message(&r, mac, *src.ip(), boot_service),
        })
    }

    fn client_message(&mut self, r: &Repr<'_>, mac: [u8; 6], boot_service: bool) -> Learned {
        let mut l = Learned::new(mac, true);
        l.uuid = r.client_uuid().map(|u| u.uuid);
        l.pxe_class = r.pxe_client().map(|c| PxeClass {
            arch: c.arch,
            undi_major: c.undi_major,
            undi_minor: c.undi_minor,
        });
        l.arch = r
            .client_arch()
            .and_then(|a| a.first().copied())
            .or(l.pxe_class.map(|c| c.arch));
        l.vendor_class = r.vendor_class().map(|v| match v {
            VendorClass::PxeClient(c) => format!(
                "PXEClient:Arch:{:05}:UNDI:{:03}{:03}",
                c.arch, c.undi_major, c.undi_minor
            ),
            VendorClass::PxeServer => "PXEClient".to_owned(),
            VendorClass::Other(d) => text(d),
        });
        l.user_class = r.user_class().map(text);
        l.boot_item = r.pxe_options().and_then(|p| p.boot_item());
        let mt = r.message_type();
        // A client with an address says so in ciaddr (RFC 2131 table 5);
        // DISCOVER and the selecting REQUEST leave it zero.
        if boot_service || matches!(mt, Some(MessageType::Request | MessageType::Inform)) {
            l.ip = nonzero(r.ciaddr);
        }
        if mt == Some(MessageType::Request) && !boot_service {
            // The client chose a server: the other servers' offers are moot.
            if let Some(chosen) = r.server_identifier() {
                self.pending
                    .retain(|p| !(p.xid == r.xid && p.mac == mac && p.server != chosen));
            }
        }
        l
    }

    fn server_message(
        &mut self,
        r: &Repr<'_>,
        mac: [u8; 6],
        src_ip: Ipv4Addr,
        boot_service: bool,
    ) -> Learned {
        let mut l = Learned::new(mac, false);
        let server = r.server_identifier().or(nonzero(src_ip));
        let directive = |via| {
            r.bootfile().map(|file| {
                let server_name = r.tftp_server_name().map(text);
                let named = server_name.as_deref().and_then(|n| n.parse().ok());
                BootDirective {
                    file: text(file),
                    server: nonzero(r.siaddr).or(named).or(server),
                    server_name,
                    via,
                }
            })
        };
        let mt = r.message_type();
        if boot_service {
            // PXE boot server ACK (or a proxyDHCP answering on 4011).
            if matches!(mt, Some(MessageType::Ack) | None) {
                l.ip = nonzero(r.yiaddr).or(nonzero(r.ciaddr));
                l.boot = directive(BootVia::BootService);
                l.boot_item = r.pxe_options().and_then(|p| p.boot_item());
            }
            return l;
        }
        match mt {
            None => {
                l.ip = nonzero(r.yiaddr);
                l.boot = directive(BootVia::Bootp);
            }
            Some(MessageType::Offer) if r.yiaddr.is_unspecified() && r.is_pxe() => {
                l.boot = directive(BootVia::ProxyDhcp);
            }
            Some(MessageType::Offer) => {
                if let (Some(boot), Some(server)) = (directive(BootVia::Dhcp), server) {
                    self.remember(PendingOffer {
                        xid: r.xid,
                        mac,
                        server,
                        boot,
                    });
                }
            }
            Some(MessageType::Ack) => {
                // An ACK to INFORM has no yiaddr: the client had its address.
                l.ip = nonzero(r.yiaddr).or(nonzero(r.ciaddr));
                let offered = self.take(r.xid, mac, server);
                if r.yiaddr.is_unspecified() && r.is_pxe() {
                    l.boot = directive(BootVia::ProxyDhcp);
                } else {
                    l.boot = directive(BootVia::Dhcp).or(offered);
                }
            }
            Some(_) => {}
        }
        l
    }

    fn remember(&mut self, offer: PendingOffer) {
        // A retransmitted offer replaces the earlier one.
        self.pending
            .retain(|p| !(p.xid == offer.xid && p.mac == offer.mac && p.server == offer.server));
        if self.max_pending == 0 {
            return;
        }
        while self.pending.len() >= self.max_pending {
            self.pending.pop_front();
            self.counters.pending_evicted += 1;
        }
        self.pending.push_back(offer);
    }

    /// The offer the ACK confirms, forgetting every offer of its exchange.
    fn take(&mut self, xid: u32, mac: [u8; 6], server: Option<Ipv4Addr>) -> Option<BootDirective> {
        let mut found = None;
        self.pending.retain(|p| {
            if p.xid != xid || p.mac != mac {
                return true;
            }
            if Some(p.server) == server {
                found = Some(p.boot.clone());
            }
            false
        });
        found
    }

    /// Tentative offers held now.
    pub fn pending_offers(&self) -> usize {
        self.pending.len()
    }
}

/// The DHCP datagrams of the `wire` crate's captures, with their addresses
/// (the `wire` test reader keeps only ports). Shared with the image map's tests.
#[cfg(test)]
pub(crate) mod captures {
    use std::net::{Ipv4Addr, SocketAddrV4};

    /// One UDP datagram of a capture.
    pub(crate) struct Datagram {
        pub(crate) src_mac: [u8; 6],
        pub(crate) src: SocketAddrV4,
        pub(crate) dst: SocketAddrV4,
        pub(crate) payload: Vec<u8>,
    }

    pub(crate) const PXE: &[u8] = include_bytes!("../../crates/wire/testdata/dhcp-pxe.pcap");
    pub(crate) const PROXY_4011: &[u8] =
        include_bytes!("../../crates/wire/testdata/dhcp-proxy-4011.pcap");
    pub(crate) const OVERLOAD: &[u8] =
        include_bytes!("../../crates/wire/testdata/dhcp-overload.pcap");

    fn u16_be(b: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    fn u32_le(b: &[u8], at: usize) -> usize {
        u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
    }

    /// Every Ethernet/IPv4/UDP datagram of a classic pcap (ours: panics on
    /// anything else). Checksums are not checked: the captures were taken on
    /// the sending side of a veth, where they are left to offload.
    pub(crate) fn datagrams(pcap: &[u8]) -> Vec<Datagram> {
        assert_eq!(u32_le(pcap, 0), 0xa1b2_c3d4);
        let mut out = Vec::new();
        let mut at = 24;
        while at < pcap.len() {
            let caplen = u32_le(pcap, at + 8);
            let frame = &pcap[at + 16..at + 16 + caplen];
            at += 16 + caplen;
            assert_eq!(u16_be(frame, 12), 0x0800);
            let ip = &frame[14..];
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            assert_eq!(ip[9], 17);
            let addr = |o: usize| Ipv4Addr::new(ip[o], ip[o + 1], ip[o + 2], ip[o + 3]);
            let udp = &ip[ihl..usize::from(u16_be(ip, 2))];
            out.push(Datagram {
                src_mac: frame[6..12].try_into().unwrap(),
                src: SocketAddrV4::new(addr(12), u16_be(udp, 0)),
                dst: SocketAddrV4::new(addr(16), u16_be(udp, 2)),
                payload: udp[8..usize::from(u16_be(udp, 4))].to_vec(),
            });
        }
        out
    }

    /// A minimal DHCP message: header fields, the cookie, then `options`.
    pub(crate) fn message(op: u8, xid: u32, mac: [u8; 6], options: &[u8]) -> Vec<u8> {
        let mut v = vec![0; 236];
        v[0] = op;
        v[1] = 1;
        v[2] = 6;
        v[4..8].copy_from_slice(&xid.to_be_bytes());
        v[28..34].copy_from_slice(&mac);
        v.extend_from_slice(&wire::dhcp::MAGIC_COOKIE);
        v.extend_from_slice(options);
        v.push(255);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::captures::{datagrams, message, OVERLOAD, PROXY_4011, PXE};
    use super::*;
    use proptest::prelude::*;

    const CLIENT: [u8; 6] = [2, 0x77, 0, 0, 0, 2];
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

    fn uuid() -> [u8; 16] {
        core::array::from_fn(|i| 0x10 + i as u8)
    }

    fn run(pcap: &[u8]) -> (MessageHandler, Vec<Option<Learned>>) {
        let mut h = MessageHandler::default();
        let out = datagrams(pcap)
            .iter()
            .map(|d| h.handle(d.src, d.dst, d.src_mac, &d.payload))
            .collect();
        (h, out)
    }

    #[test]
    fn dnsmasq_dhcp_with_pxe_service() {
        let (h, l) = run(PXE);
        let l: Vec<Learned> = l.into_iter().map(Option::unwrap).collect();
        assert_eq!(l.len(), 4, "DISCOVER OFFER REQUEST ACK");
        assert!(l.iter().all(|l| l.mac == CLIENT));
        let discover = &l[0];
        assert!(discover.from_client);
        assert_eq!(discover.uuid, Some(uuid()));
        assert_eq!(discover.arch, Some(0));
        assert_eq!(
            discover.pxe_class,
            Some(PxeClass {
                arch: 0,
                undi_major: 2,
                undi_minor: 1
            })
        );
        assert_eq!(
            discover.vendor_class.as_deref(),
            Some("PXEClient:Arch:00000:UNDI:002001")
        );
        assert_eq!(discover.user_class.as_deref(), Some("iPXE"));
        assert_eq!((discover.ip, &discover.boot), (None, &None));
        // The OFFER is tentative; the selecting REQUEST has no ciaddr.
        assert_eq!(l[1].boot, None);
        assert_eq!(l[1].ip, None);
        assert_eq!(l[2].ip, None);
        let ack = &l[3];
        assert!(!ack.from_client);
        assert_eq!(ack.uuid, None, "client facts come from the client only");
        assert_eq!(ack.ip.unwrap().octets()[..3], [10, 77, 0]);
        assert_eq!(
            ack.boot,
            Some(BootDirective {
                file: "pxelinux.0".into(),
                server: Some(SERVER),
                server_name: Some("bootsrv".into()),
                via: BootVia::Dhcp,
            })
        );
        assert_eq!(h.pending_offers(), 0, "the ACK settles the exchange");
        let c = h.counters();
        assert_eq!((c.messages, c.malformed, c.ignored), (4, 0, 0));
    }

    #[test]
    fn dnsmasq_proxy_dhcp_and_boot_service() {
        let d = datagrams(PROXY_4011);
        let (h, l) = run(PROXY_4011);
        let l: Vec<Learned> = l.into_iter().map(Option::unwrap).collect();
        assert!(l.iter().all(|l| l.mac == CLIENT));
        // The proxy OFFER carries a menu, no file: nothing told yet.
        assert_eq!(l[1].boot, None);
        assert_eq!(l[1].ip, None);
        // The 4011 request: the client's address and the boot item it asks.
        assert_eq!(d[2].dst.port(), PXE_PORT);
        assert_eq!(l[2].ip, Some(Ipv4Addr::new(10, 77, 0, 2)));
        let item = l[2].boot_item.expect("43/71 in the 4011 request");
        assert_eq!(l[2].uuid, Some(uuid()));
        // The ACK names the NBP; the boot server is the 4011 server.
        let ack = &l[3];
        assert_eq!(ack.boot_item, Some(item));
        assert_eq!(
            ack.boot,
            Some(BootDirective {
                file: "pxelinux.0".into(),
                server: Some(SERVER),
                server_name: None,
                via: BootVia::BootService,
            })
        );
        assert_eq!(h.counters().malformed, 0);
    }

    #[test]
    fn overloaded_replies_name_no_file() {
        let (h, l) = run(OVERLOAD);
        assert!(l
            .iter()
            .all(|l| l.as_ref().is_some_and(|l| l.boot.is_none())));
        let ack = l.last().unwrap().as_ref().unwrap();
        assert!(ack.ip.is_some());
        assert_eq!(ack.mac, CLIENT);
        assert_eq!(h.counters().malformed, 0);
        let discover = l[0].as_ref().unwrap();
        assert_eq!(discover.arch, Some(7));
        assert_eq!(discover.uuid, None);
    }

    fn addr(a: [u8; 4], port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(a.into(), port)
    }

    #[test]
    fn the_ack_confirms_the_offer_of_the_chosen_server() {
        let mut h = MessageHandler::default();
        let mac = [2, 0, 0, 0, 0, 9];
        let c = addr([0, 0, 0, 0], 68);
        let bcast = addr([255; 4], 67);
        let offer = |server: [u8; 4], file: &[u8]| {
            let mut o = vec![53, 1, 2, 54, 4];
            o.extend_from_slice(&server);
            o.extend_from_slice(&[67, file.len() as u8]);
            o.extend_from_slice(file);
            let mut m = message(2, 7, mac, &o);
            m[16..20].copy_from_slice(&[10, 0, 0, 50]);
            m
        };
        let a = offer([10, 0, 0, 1], b"a.0");
        let b = offer([10, 0, 0, 2], b"b.0");
        for (src, m) in [([10, 0, 0, 1], &a), ([10, 0, 0, 2], &b)] {
            let l = h.handle(addr(src, 67), addr([255; 4], 68), [2, 1, 1, 1, 1, 1], m);
            assert_eq!(l.unwrap().boot, None, "offers are tentative");
        }
        assert_eq!(h.pending_offers(), 2);
        // REQUEST naming server 2, then its ACK without a file.
        let req = message(1, 7, mac, &[53, 1, 3, 54, 4, 10, 0, 0, 2]);
        h.handle(c, bcast, mac, &req).unwrap();
        assert_eq!(h.pending_offers(), 1);
        let mut ack = message(2, 7, mac, &[53, 1, 5, 54, 4, 10, 0, 0, 2]);
        ack[16..20].copy_from_slice(&[10, 0, 0, 50]);
        let l = h
            .handle(addr([10, 0, 0, 2], 67), addr([255; 4], 68), mac, &ack)
            .unwrap();
        assert_eq!(l.ip, Some(Ipv4Addr::new(10, 0, 0, 50)));
        let boot = l.boot.unwrap();
        assert_eq!(boot.file, "b.0");
        assert_eq!(boot.server, Some(Ipv4Addr::new(10, 0, 0, 2)), "option 54");
        assert_eq!(h.pending_offers(), 0);
    }

    #[test]
    fn pending_offers_are_bounded() {
        let mut h = MessageHandler::new(3);
        for xid in 0..10 {
            let mut m = message(2, xid, [2, 0, 0, 0, 0, 1], &[53, 1, 2, 67, 1, b'x']);
            m[16] = 10;
            h.handle(addr([10, 0, 0, 1], 67), addr([255; 4], 68), [2; 6], &m)
                .unwrap();
        }
        assert_eq!(h.pending_offers(), 3);
        assert_eq!(h.counters().pending_evicted, 7);
    }

    #[test]
    fn malformed_and_foreign_messages_are_counted() {
        let mut h = MessageHandler::default();
        let (c, s) = (addr([0; 4], 68), addr([255; 4], 67));
        let good = message(1, 1, [2, 0, 0, 0, 0, 1], &[53, 1, 1]);
        let mut bad_cookie = good.clone();
        bad_cookie[236] = 0;
        let zero_mac = message(1, 1, [0; 6], &[53, 1, 1]);
        let group_mac = message(1, 1, [1, 0, 0x5e, 0, 0, 1], &[53, 1, 1]);
        for m in [&b""[..], &good[..100], &bad_cookie, &zero_mac, &group_mac] {
            assert_eq!(h.handle(c, s, [2; 6], m), None);
        }
        assert_eq!(
            h.handle(addr([0; 4], 1234), addr([0; 4], 53), [2; 6], &good),
            None
        );
        // Not Ethernet, relayed: no way to tell the client.
        let mut token_ring = good.clone();
        token_ring[1] = 6;
        token_ring[24] = 10;
        assert_eq!(h.handle(c, s, [2; 6], &token_ring), None);
        let c = h.counters();
        assert_eq!((c.messages, c.malformed, c.ignored), (7, 5, 2));
        assert!(h.handle(addr([0; 4], 68), s, [2; 6], &good).is_some());
    }

    #[test]
    fn bootp_reply_is_final() {
        let mut h = MessageHandler::default();
        let mac = [2, 0, 0, 0, 0, 3];
        let mut r = message(2, 9, mac, &[]);
        r[16..20].copy_from_slice(&[10, 0, 0, 9]);
        r[20..24].copy_from_slice(&[10, 0, 0, 4]);
        r[108..115].copy_from_slice(b"boot.nb");
        let l = h
            .handle(addr([10, 0, 0, 1], 67), addr([255; 4], 68), [2; 6], &r)
            .unwrap();
        assert_eq!(l.ip, Some(Ipv4Addr::new(10, 0, 0, 9)));
        let b = l.boot.unwrap();
        assert_eq!((b.file.as_str(), b.via), ("boot.nb", BootVia::Bootp));
        assert_eq!(b.server, Some(Ipv4Addr::new(10, 0, 0, 4)), "siaddr first");
    }

    proptest! {
        #[test]
        fn arbitrary_payloads_never_panic(
            payload in proptest::collection::vec(any::<u8>(), 0..600),
            sport in prop::sample::select(vec![67u16, 68, 4011, 69]),
            dport in prop::sample::select(vec![67u16, 68, 4011, 69]),
        ) {
            let mut h = MessageHandler::new(4);
            h.handle(addr([10, 0, 0, 1], sport), addr([10, 0, 0, 2], dport), [2; 6], &payload);
            prop_assert_eq!(h.counters().messages, 1);
        }
    }
}
