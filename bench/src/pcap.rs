//! The classic pcap file format (libpcap 2.4, microsecond timestamps,
//! Ethernet link type), written and read: 24 bytes of global header, then
//! per frame a 16-byte record header and the frame. For DPDK's `net_pcap`
//! (`rx_pcap=FILE,infinite_rx=1`), which replays a file's frames forever.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// Magic of a little-endian, microsecond-resolution pcap file.
const MAGIC: u32 = 0xa1b2_c3d4;
/// Link type Ethernet (LINKTYPE_ETHERNET).
const LINKTYPE_ETHERNET: u32 = 1;
/// Largest frame recorded whole.
const SNAPLEN: u32 = 65_535;

/// `frames` as a pcap file: timestamps 1 µs apart from the epoch.
pub fn encode(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + frames.iter().map(|f| 16 + f.len()).sum::<usize>());
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes()); // version 2.4
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    out.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    out.extend_from_slice(&SNAPLEN.to_le_bytes());
    out.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        let len = f.len() as u32;
        out.extend_from_slice(&((i / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((i % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes()); // captured
        out.extend_from_slice(&len.to_le_bytes()); // on the wire
        out.extend_from_slice(f);
    }
    out
}

/// Writes `frames` to `path` as a pcap file.
pub fn write(path: &Path, frames: &[Vec<u8>]) -> Result<()> {
    std::fs::write(path, encode(frames)).with_context(|| format!("writing {}", path.display()))
}

/// The frames of a little-endian pcap file (as [`encode`] writes them).
pub fn decode(bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    let Some(hdr) = bytes.get(..24) else {
        bail!("pcap shorter than its 24-byte header");
    };
    if hdr[..4] != MAGIC.to_le_bytes() {
        bail!("not a little-endian microsecond pcap file");
    }
    let mut out = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        let Some(rec) = bytes.get(at..at + 16) else {
            bail!("record header cut off at byte {at}");
        };
        let caplen = u32::from_le_bytes([rec[8], rec[9], rec[10], rec[11]]) as usize;
        let Some(frame) = bytes.get(at + 16..at + 16 + caplen) else {
            bail!("frame cut off at byte {}", at + 16);
        };
        out.push(frame.to_vec());
        at += 16 + caplen;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_the_classic_format() {
        let f = encode(&[vec![0xaa; 60], vec![0xbb; 1514]]);
        assert_eq!(
            f[..24],
            [
                0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0,
                0, 0
            ]
        );
        // First record: ts 0.000000, 60 bytes captured of 60.
        assert_eq!(
            f[24..40],
            [0, 0, 0, 0, 0, 0, 0, 0, 60, 0, 0, 0, 60, 0, 0, 0]
        );
        // Second record: ts 0.000001.
        let r2 = 24 + 16 + 60;
        assert_eq!(f[r2 + 4..r2 + 8], [1, 0, 0, 0]);
        assert_eq!(f.len(), 24 + 16 + 60 + 16 + 1514);
    }

    #[test]
    fn round_trip_and_truncation() {
        let frames = vec![vec![1u8; 64], vec![2u8; 594], vec![3u8; 1518]];
        let bytes = encode(&frames);
        assert_eq!(decode(&bytes).unwrap(), frames);
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(&bytes[..30]).is_err());
        assert!(decode(&bytes[..10]).is_err());
        let mut bad = bytes.clone();
        bad[0] = 0;
        assert!(decode(&bad).is_err());
        // The captured DHCP exchange in the repository is the same format.
        let dhcp = include_bytes!("../../crates/wire/testdata/dhcp-pxe.pcap");
        assert!(!decode(dhcp).unwrap().is_empty());
    }
}
