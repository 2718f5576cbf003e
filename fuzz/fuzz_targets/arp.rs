//! Addressed mode's ARP and ping parsers and the ARP resolver, driven by
//! hostile frames: the input is a sequence of (length, control, frame)
//! records; the control byte picks the side, a time step, and whether the
//! frame is handed to the resolver or its first 4 bytes are resolved as an
//! address.
//!
//! Checks: `ArpFrameRepr::parse` and `EchoFrameRepr::parse` never panic and
//! never allocate; what they accept re-emits and parses back equal; the
//! classifier's ARP addresses agree with `ArpFrameRepr::parse`;
//! `ArpResolver` never panics, stays within its table bound, and every frame
//! it queues parses as ARP from its own address.
#![no_main]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use slowpath::arp::{ArpConfig, ArpResolver};
use wire::classify::classify;
use wire::frame::{ArpFrameRepr, EchoFrameRepr, MacAddr};

#[path = "alloc_cap.rs"]
mod alloc_cap;

const OWN_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 56, 10);
const OWN_MAC: MacAddr = MacAddr([0x02, 0xbc, 0, 0, 0, 1]);
const MAX_ENTRIES: usize = 8;

fn check_parsers(frame: &[u8]) {
    let arp = alloc_cap::capped(0, || ArpFrameRepr::parse(frame));
    let arp_ips = arp.ok().map(|r| (r.arp.sender_ip, r.arp.target_ip));
    assert_eq!(classify(frame).arp_ips(), arp_ips, "classifier disagrees");
    if let Ok(repr) = arp {
        let mut buf = [0u8; 64];
        let len = repr.emit(&mut buf).expect("a parsed ARP frame re-emits");
        assert_eq!(ArpFrameRepr::parse(&buf[..len]), Ok(repr));
        if let Some(reply) = repr.reply_to(OWN_MAC) {
            let len = reply.emit(&mut buf).expect("a reply emits");
            assert_eq!(ArpFrameRepr::parse(&buf[..len]), Ok(reply));
        }
    }
    let echo = alloc_cap::capped(0, || EchoFrameRepr::parse(frame));
    if let Ok((repr, data)) = echo {
        let mut buf = vec![0u8; repr.buffer_len(data.len())];
        let len = repr.emit(&mut buf, data).expect("a parsed echo re-emits");
        assert_eq!(EchoFrameRepr::parse(&buf[..len]), Ok((repr, data)));
        if let Some(reply) = repr.reply() {
            let len = reply.emit(&mut buf, data).expect("a reply emits");
            assert_eq!(EchoFrameRepr::parse(&buf[..len]), Ok((reply, data)));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut arp = ArpResolver::new(ArpConfig {
        max_entries: MAX_ENTRIES,
        ..ArpConfig::new(OWN_IP, OWN_MAC)
    });
    let mut now = Instant::now();
    let mut rest = data;
    while let [len, ctl, tail @ ..] = rest {
        let (frame, after) = tail.split_at(usize::from(*len).min(tail.len()));
        rest = after;
        now += Duration::from_millis(u64::from(ctl >> 2) * 64);
        let side = ctl & 1;
        check_parsers(frame);
        if ctl & 2 == 0 {
            arp.handle_frame(now, side, frame);
        } else if let Some(ip) = frame.first_chunk::<4>() {
            arp.resolve(now, side, Ipv4Addr::from(*ip));
        }
        if arp.poll_timeout().is_some_and(|t| t <= now) {
            arp.handle_timeout(now);
        }
        assert!(arp.len() <= MAX_ENTRIES);
        while let Some((out_side, out)) = arp.poll_transmit() {
            assert!(out_side <= 1);
            let sent = ArpFrameRepr::parse(out.as_slice()).expect("queued frames parse");
            assert_eq!((sent.src_mac, sent.arp.sender_mac), (OWN_MAC, OWN_MAC));
            assert_eq!(sent.arp.sender_ip, OWN_IP);
        }
        while arp.poll_failed().is_some() {}
    }
});
