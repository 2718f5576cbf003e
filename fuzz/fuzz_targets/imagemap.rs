//! The image map, driven by hostile DHCP/PXE messages and TFTP read
//! requests: the input is a bound byte, then a sequence of (control, 16-bit
//! length, bytes) records. A record is either a DHCP payload (ports, source address
//! and MAC picked from a few, and, when the control byte says so, its
//! client MAC and addresses overwritten with a few known ones so that
//! messages collide on clients) or an RRQ (client address and MAC and
//! server picked from a few, the name from the input, sometimes over the
//! length bound). The wall clock steps forward and back.
//!
//! Checks: never panics; the map stays within its bounds (clients, files per
//! client, boot directives, name length); its MAC and IP indexes agree with
//! the records and no two clients share a MAC or an address; every client
//! has a MAC or an address; a recorded request is found under the client's
//! address; the listing renders; and, when the bound byte says so, what
//! `save` writes `load_with` reads back equal.
#![no_main]

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use slowpath::imagemap::{MAX_BOOT_DIRECTIVES, MAX_NAME_LEN};
use slowpath::{render_listing, ClientRecord, ImageMap, Limits, ServedFrom};

#[path = "alloc_cap.rs"]
mod alloc_cap;
#[path = "scratch_dir.rs"]
mod scratch_dir;

const MACS: [[u8; 6]; 4] = [
    [0x52, 0x54, 0, 0, 0, 1],
    [0x52, 0x54, 0, 0, 0, 2],
    [0x52, 0x54, 0, 0, 0, 3],
    [0x02, 0, 0, 0, 0, 9],
];
const NAMES: [&str; 3] = ["pxelinux.0", "boot/vmlinuz", "ipxe.efi"];

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

/// Where `save` writes (it creates the directory), removed after each
/// round trip.
fn save_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| scratch_dir::scratch_dir("imagemap"))
}

fn check(map: &ImageMap, limits: Limits) {
    let clients: Vec<&ClientRecord> = map.clients().collect();
    assert_eq!(map.counters().clients, clients.len() as u64);
    assert!(
        clients.len() <= limits.max_clients.max(1),
        "over max_clients"
    );
    let (mut macs, mut ips) = (HashSet::new(), HashSet::new());
    for c in clients {
        assert!(
            c.mac.is_some() || c.ip.is_some(),
            "a client with neither MAC nor IP"
        );
        if let Some(m) = c.mac {
            assert!(macs.insert(m), "two clients with one MAC");
            assert_eq!(map.client_by_mac(m), Some(c), "MAC index disagrees");
        }
        if let Some(a) = c.ip {
            assert!(ips.insert(a), "two clients with one address");
            assert_eq!(map.client_by_ip(a), Some(c), "IP index disagrees");
        }
        assert!(
            c.files.len() <= limits.max_files_per_client,
            "over max_files_per_client"
        );
        assert!(
            c.boot.len() <= MAX_BOOT_DIRECTIVES,
            "over MAX_BOOT_DIRECTIVES"
        );
        let mut seen = HashSet::new();
        for f in &c.files {
            assert!(f.name.len() <= MAX_NAME_LEN, "a name over MAX_NAME_LEN");
            assert!(seen.insert((f.server, &f.name)), "one file recorded twice");
            assert!(f.times_requested >= 1);
        }
    }
}

/// Records sorted by identity, for comparing maps whose order differs.
fn sorted(map: &ImageMap) -> Vec<ClientRecord> {
    let mut v: Vec<ClientRecord> = map.clients().cloned().collect();
    v.sort_by_key(|c| (c.mac, c.ip));
    v
}

fuzz_target!(|data: &[u8]| {
    let [bounds, rest @ ..] = data else { return };
    let limits = Limits {
        max_clients: usize::from(bounds & 7),
        max_files_per_client: usize::from(bounds >> 3 & 7),
    };
    let round_trip = bounds & 0x40 != 0;
    let mut map = ImageMap::new(save_dir(), limits);
    let mut wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut rest = rest;
    // The map holds at most (clients × files) names: bounded by its limits,
    // whatever the input.
    alloc_cap::capped(64 * data.len() + (1 << 20), || {
        while let [ctl, hi, lo, tail @ ..] = rest {
            let len = usize::from(u16::from_be_bytes([*hi, *lo]));
            let (bytes, after) = tail.split_at(len.min(tail.len()));
            rest = after;
            wall = if ctl & 0x40 != 0 && ctl & 0x80 != 0 {
                wall.checked_sub(Duration::from_secs(7)).unwrap_or(wall)
            } else {
                wall + Duration::from_millis(u64::from(*ctl) * 13)
            };
            if ctl & 1 == 0 {
                // DHCP/PXE.
                let (sp, dp) =
                    [(68, 67), (67, 68), (4011, 4011), (1234, 1235)][usize::from(ctl >> 1 & 3)];
                let src = SocketAddrV4::new(ip(1 + (ctl >> 3 & 3)), sp);
                let dst = SocketAddrV4::new(Ipv4Addr::BROADCAST, dp);
                let mac = MACS[usize::from(ctl >> 5 & 3)];
                let mut p = bytes.to_vec();
                if ctl & 0x80 != 0 && p.len() >= 44 {
                    // chaddr, ciaddr and yiaddr from the few known ones.
                    p[28..34].copy_from_slice(&mac);
                    let (ci, yi) = (ip(10 + (p[15] & 3)), ip(10 + (p[19] & 3)));
                    p[12..16].copy_from_slice(&ci.octets());
                    p[16..20].copy_from_slice(&yi.octets());
                }
                let before = map.counters().messages_seen;
                map.handle_dhcp(wall, src, dst, mac, &p);
                assert_eq!(map.counters().messages_seen, before + 1);
            } else {
                // A TFTP read request.
                let client = ip(10 + (ctl >> 1 & 3));
                let mac = (ctl >> 3 & 3 != 0).then(|| MACS[usize::from(ctl >> 3 & 3)]);
                let server = Ipv4Addr::new(10, 0, 1, ctl >> 5 & 1);
                let from = if ctl & 0x40 != 0 {
                    ServedFrom::Cache
                } else {
                    ServedFrom::Origin
                };
                let name = match bytes {
                    [] => NAMES[usize::from(ctl >> 6) % NAMES.len()].to_owned(),
                    [0xff, more @ ..] => String::from_utf8_lossy(more).repeat(8),
                    _ => String::from_utf8_lossy(bytes).into_owned(),
                };
                map.record_file_from(wall, client, mac, server, &name, from);
                if name.len() <= MAX_NAME_LEN && limits.max_files_per_client > 0 {
                    let c = map
                        .client_by_ip(client)
                        .expect("the requesting client is mapped");
                    let f = c.file(server, &name).expect("the request is recorded");
                    assert_eq!(f.served_from, from);
                    assert_eq!(f.last_requested, wall);
                }
            }
            check(&map, limits);
        }
        let _ = render_listing(&map);
    });
    if round_trip {
        map.save().expect("saving the image map");
        let back = ImageMap::load_with(save_dir(), limits).expect("loading what was saved");
        std::fs::remove_dir_all(save_dir()).expect("removing the saved map");
        assert_eq!(
            sorted(&back),
            sorted(&map),
            "the map changed through save and load"
        );
        check(&back, limits);
    }
});
