// Test-only pcap reader: the UDP datagrams of a classic pcap file of Ethernet
// II / IPv4 frames, as written by `tcpdump -w` in `capture.sh`. Panics on
// anything else: the files are ours.

/// One UDP datagram from a capture.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Datagram<'a> {
    pub(crate) src_port: u16,
    pub(crate) dst_port: u16,
    pub(crate) payload: &'a [u8],
}

fn u16_be(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn u32_le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Every UDP datagram in `pcap`, in capture order.
pub(crate) fn datagrams(pcap: &[u8]) -> Vec<Datagram<'_>> {
    assert_eq!(u32_le(pcap, 0), 0xa1b2_c3d4, "little-endian microsecond pcap");
    assert_eq!(u32_le(pcap, 20), 1, "link type Ethernet");
    let mut out = Vec::new();
    let mut at = 24;
    while at < pcap.len() {
        let caplen = u32_le(pcap, at + 8) as usize;
        let origlen = u32_le(pcap, at + 12) as usize;
        assert_eq!(caplen, origlen, "frame cut by the snap length");
        let frame = &pcap[at + 16..at + 16 + caplen];
        at += 16 + caplen;
        assert_eq!(u16_be(frame, 12), 0x0800, "IPv4");
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        assert_eq!(ip[9], 17, "UDP");
        let total = usize::from(u16_be(ip, 2));
        let udp = &ip[ihl..total];
        let len = usize::from(u16_be(udp, 4));
        out.push(Datagram {
            src_port: u16_be(udp, 0),
            dst_port: u16_be(udp, 2),
            payload: &udp[8..len],
        });
    }
    out
}
