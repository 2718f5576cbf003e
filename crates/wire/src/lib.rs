//! Packet formats bootcache reads off the wire, independent of DPDK.
//!
//! - [`classify`]: the fast-path header classifier (Ethernet, VLAN, IPv4/IPv6, UDP;
//!   ARP addresses).
//! - [`frame`]: header views and `Repr`s for Ethernet II, 802.1Q/QinQ, IPv4, IPv6, UDP,
//!   ARP and ICMP echo.
//! - [`tftp`]: TFTP (RFC 1350, 2347, 2348, 2349, 7440), parsed with nom.
//! - [`dhcp`]: DHCP/BOOTP with PXE options (also on UDP 4011).
//!
//! # Classifying a frame on the fast path
//!
//! ```
//! use wire::classify::{classify, v4_mapped, Kind};
//!
//! // An ARP request and a TFTP RRQ for "pxelinux.0" to 10.0.0.1:69.
//! let arp = [&[0xff; 6][..], &[2, 0, 0, 0, 0, 1], &[0x08, 0x06], &[0; 28]].concat();
//! let rrq = [
//!     &[0xff; 6][..], &[2, 0, 0, 0, 0, 1], &[0x08, 0x00],           // Ethernet
//!     &[0x45, 0, 0, 47, 0, 0, 0x40, 0, 64, 17, 0, 0],                // IPv4 ...
//!     &[10, 0, 0, 2], &[10, 0, 0, 1],                                // ... addresses
//!     &[0x07, 0xd0, 0, 69, 0, 27, 0, 0],                             // UDP 2000 -> 69
//!     b"\x00\x01pxelinux.0\x00octet\x00",                            // TFTP RRQ
//! ]
//! .concat();
//!
//! assert_eq!(classify(&arp).kind, Kind::NonIp);
//! let c = classify(&rrq);
//! assert_eq!(c.kind, Kind::Udp);
//! assert_eq!((c.dst_addr, c.dst_port), (v4_mapped([10, 0, 0, 1]), 69));
//! assert_eq!(&c.payload(&rrq)[..2], &[0, 1]); // RRQ opcode, without reparsing
//! ```
//!
//! # TFTP: parse and emit
//!
//! ```
//! use wire::tftp::{parse_data_header, Packet, TransferMode};
//!
//! // curl's read request, with tsize and blksize options (RFC 2349, 2348).
//! let wire = b"\x00\x01pxelinux.0\x00octet\x00tsize\x000\x00blksize\x001432\x00";
//! let p = Packet::parse(wire)?;
//! let Packet::Rrq(req) = &p else { panic!("an RRQ") };
//! assert_eq!(req.filename, b"pxelinux.0");
//! assert_eq!(req.mode.kind(), TransferMode::Octet);
//! assert_eq!((req.options.tsize, req.options.blksize), (Some(0), Some(1432)));
//! assert_eq!(p.to_vec()?, wire); // byte for byte
//!
//! // The fast path reads only the DATA header; the payload stays borrowed.
//! let data = Packet::Data { block: 1, payload: b"\x7fELF" }.to_vec()?;
//! assert_eq!(parse_data_header(&data), Some((1, &b"\x7fELF"[..])));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # DHCP/PXE: emit and parse
//!
//! ```
//! use core::net::Ipv4Addr;
//! use wire::dhcp::{Area, DhcpOption, MessageType, Op, PxeClientClass, Repr, VendorClass};
//!
//! // A UEFI PXE client's DHCPDISCOVER.
//! let pxe = PxeClientClass { arch: 7, undi_major: 3, undi_minor: 16 };
//! let discover = Repr {
//!     op: Op::Request,
//!     htype: 1,
//!     hlen: 6,
//!     hops: 0,
//!     xid: 0x5eed,
//!     secs: 0,
//!     flags: 0x8000,
//!     ciaddr: Ipv4Addr::UNSPECIFIED,
//!     yiaddr: Ipv4Addr::UNSPECIFIED,
//!     siaddr: Ipv4Addr::UNSPECIFIED,
//!     giaddr: Ipv4Addr::UNSPECIFIED,
//!     chaddr: [2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
//!     sname: Area::Text(b""),
//!     file: Area::Text(b""),
//!     options: vec![
//!         DhcpOption::MessageType(MessageType::Discover),
//!         DhcpOption::ClientArch(vec![7]),
//!         DhcpOption::VendorClass(VendorClass::PxeClient(pxe)),
//!     ],
//!     padding: 0,
//! };
//! let bytes = discover.to_vec()?;
//! assert!(bytes.windows(32).any(|w| w == b"PXEClient:Arch:00007:UNDI:003016"));
//!
//! // The same parser reads DHCP on ports 67/68 and PXE boot server
//! // discovery on UDP 4011.
//! let back = Repr::parse(&bytes)?;
//! assert_eq!(back, discover);
//! assert_eq!(back.message_type(), Some(MessageType::Discover));
//! assert_eq!(back.pxe_client(), Some(pxe));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod classify;
pub mod dhcp;
pub mod frame;
pub mod tftp;
