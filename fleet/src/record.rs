//! The signed records of the verification-table bucket (format version 1).
//!
//! One KV entry per origin file, under [`file_key`] (a hash of the name:
//! file names hold characters NATS subjects cannot), and the agent's
//! heartbeat under [`HEARTBEAT_KEY`]. Every value is, integers big-endian:
//!
//! ```text
//! offset size  field
//!  0      2    magic "BF" (0x42 0x46)
//!  2      1    version = 1
//!  3      1    kind: 1 file, 2 changing, 3 absent, 4 heartbeat
//!  4      8    epoch: the agent's start, ms since the Unix epoch
//! 12      8    seq: the agent's publication counter (per epoch)
//! 20      8    timestamp: the agent's wall clock, ms since the Unix epoch
//! 28      n    body: file: size u64 | version u64 | sha256 [32] | mtime ms u64 |
//!                          name length u16 (1..=1024) | name (UTF-8)
//!                    changing, absent: name length u16 | name
//!                    heartbeat: nothing
//! 28+n   32    HMAC-SHA256(key, "bootcache-fleet-v1" 0 bucket 0 kv-key 0 bytes 0..28+n)
//! ```
//!
//! The MAC covers the bucket and the KV key, so a signed record cannot be
//! moved to another file's key or another bucket. The key is the HMAC key
//! bootcache and its agent already share: the engine is trusted no more
//! than the UDP wire.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// Magic bytes opening every record.
pub const MAGIC: [u8; 2] = *b"BF";
/// Format version in byte 2.
pub const VERSION: u8 = 1;
/// Fixed header: magic to timestamp.
pub const HEADER_LEN: usize = 28;
/// The trailing HMAC-SHA256.
pub const MAC_LEN: usize = 32;
/// Longest file name a record carries (the agent protocol's limit).
pub const MAX_NAME_LEN: usize = 1024;
/// The heartbeat's KV key.
pub const HEARTBEAT_KEY: &str = "heartbeat";
/// Domain separation of the MAC from the UDP protocol's.
const DOMAIN: &[u8] = b"bootcache-fleet-v1";

const KIND_FILE: u8 = 1;
const KIND_CHANGING: u8 = 2;
const KIND_ABSENT: u8 = 3;
const KIND_HEARTBEAT: u8 = 4;

/// A file as the agent's table has it (patent figure 8: size, SHA-256,
/// version, modification time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileInfo {
    /// Size in bytes.
    pub size: u64,
    /// The agent's version counter (bumped when the content changes).
    pub version: u64,
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
    /// Modification time, ms since the Unix epoch.
    pub mtime_ms: u64,
}

/// What a record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// The file's current content.
    File {
        /// Normalised name under the TFTP root.
        name: String,
        /// Its size, SHA-256, version and modification time.
        info: FileInfo,
    },
    /// The file is being written: nobody may vouch for a copy of it.
    Changing {
        /// Normalised name.
        name: String,
    },
    /// The file is gone from the origin.
    Absent {
        /// Normalised name.
        name: String,
    },
    /// The agent is alive and publishing.
    Heartbeat,
}

impl Body {
    /// The file the record is about (`None` for a heartbeat).
    pub fn name(&self) -> Option<&str> {
        match self {
            Body::File { name, .. } | Body::Changing { name } | Body::Absent { name } => Some(name),
            Body::Heartbeat => None,
        }
    }

    /// The KV key this record belongs under.
    pub fn kv_key(&self) -> String {
        self.name()
            .map_or_else(|| HEARTBEAT_KEY.to_owned(), file_key)
    }
}

/// One signed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The publishing agent's start, ms since the Unix epoch.
    pub epoch: u64,
    /// Publication counter within the epoch: later records are larger.
    pub seq: u64,
    /// The agent's wall clock when it signed, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// What it says.
    pub body: Body,
}

/// Why a record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum RecordError {
    /// Wrong length, magic, version, kind or name.
    #[error("malformed record")]
    Malformed,
    /// The MAC does not verify: another key, or tampered with.
    #[error("signature does not verify")]
    BadSignature,
    /// Signed, but under a KV key that is not its own.
    #[error("record under the wrong key")]
    WrongKey,
}

/// The KV key of a file: `f.` and the SHA-256 of its normalised name in
/// hex (the name itself travels, signed, in the value).
pub fn file_key(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    let mut s = String::with_capacity(2 + 64);
    s.push_str("f.");
    for b in digest {
        s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        s.push(char::from_digit(u32::from(b & 15), 16).unwrap_or('0'));
    }
    s
}

pub(crate) fn mac(key: &[u8], bucket: &str, kv_key: &str) -> HmacSha256 {
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for part in [DOMAIN, bucket.as_bytes(), kv_key.as_bytes()] {
        m.update(part);
        m.update(&[0]);
    }
    m
}

/// Encodes and signs `record` for `bucket` (under its own KV key).
///
/// # Panics
/// If a name is empty or longer than [`MAX_NAME_LEN`]: the agent's table
/// holds no such names.
pub fn encode(record: &Record, key: &[u8], bucket: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 60 + MAC_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(match record.body {
        Body::File { .. } => KIND_FILE,
        Body::Changing { .. } => KIND_CHANGING,
        Body::Absent { .. } => KIND_ABSENT,
        Body::Heartbeat => KIND_HEARTBEAT,
    });
    for v in [record.epoch, record.seq, record.timestamp_ms] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    if let Body::File { info, .. } = &record.body {
        out.extend_from_slice(&info.size.to_be_bytes());
        out.extend_from_slice(&info.version.to_be_bytes());
        out.extend_from_slice(&info.sha256);
        out.extend_from_slice(&info.mtime_ms.to_be_bytes());
    }
    if let Some(name) = record.body.name() {
        assert!(
            !name.is_empty() && name.len() <= MAX_NAME_LEN,
            "record names are 1..={MAX_NAME_LEN} bytes"
        );
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
    }
    let mut m = mac(key, bucket, &record.body.kv_key());
    m.update(&out);
    out.extend_from_slice(&m.finalize().into_bytes());
    out
}

/// Reads `n` bytes at `*at`, advancing it.
fn take<'a>(b: &'a [u8], at: &mut usize, n: usize) -> Result<&'a [u8], RecordError> {
    let s = b.get(*at..*at + n).ok_or(RecordError::Malformed)?;
    *at += n;
    Ok(s)
}

fn u64_at(b: &[u8], at: &mut usize) -> Result<u64, RecordError> {
    let s = take(b, at, 8)?;
    Ok(u64::from_be_bytes(s.try_into().expect("8 bytes")))
}

fn name_at(b: &[u8], at: &mut usize) -> Result<String, RecordError> {
    let len = usize::from(u16::from_be_bytes(
        take(b, at, 2)?.try_into().expect("2 bytes"),
    ));
    if len == 0 || len > MAX_NAME_LEN {
        return Err(RecordError::Malformed);
    }
    let name = std::str::from_utf8(take(b, at, len)?).map_err(|_| RecordError::Malformed)?;
    Ok(name.to_owned())
}

/// Verifies and decodes a value read from `kv_key` of `bucket`. The MAC is
/// checked (in constant time) before anything else is read past the
/// header, and the record must belong under `kv_key`.
pub fn decode(value: &[u8], key: &[u8], bucket: &str, kv_key: &str) -> Result<Record, RecordError> {
    if value.len() < HEADER_LEN + MAC_LEN
        || value[0..2] != MAGIC
        || value[2] != VERSION
        || !(KIND_FILE..=KIND_HEARTBEAT).contains(&value[3])
    {
        return Err(RecordError::Malformed);
    }
    let (signed, tag) = value.split_at(value.len() - MAC_LEN);
    let mut m = mac(key, bucket, kv_key);
    m.update(signed);
    m.verify_slice(tag).map_err(|_| RecordError::BadSignature)?;
    let mut at = 4;
    let epoch = u64_at(signed, &mut at)?;
    let seq = u64_at(signed, &mut at)?;
    let timestamp_ms = u64_at(signed, &mut at)?;
    let body = match signed[3] {
        KIND_FILE => {
            let size = u64_at(signed, &mut at)?;
            let version = u64_at(signed, &mut at)?;
            let sha256 = take(signed, &mut at, 32)?.try_into().expect("32 bytes");
            let mtime_ms = u64_at(signed, &mut at)?;
            let name = name_at(signed, &mut at)?;
            Body::File {
                name,
                info: FileInfo {
                    size,
                    version,
                    sha256,
                    mtime_ms,
                },
            }
        }
        KIND_CHANGING => Body::Changing {
            name: name_at(signed, &mut at)?,
        },
        KIND_ABSENT => Body::Absent {
            name: name_at(signed, &mut at)?,
        },
        _ => Body::Heartbeat,
    };
    if at != signed.len() {
        return Err(RecordError::Malformed);
    }
    if body.kv_key() != kv_key {
        return Err(RecordError::WrongKey);
    }
    Ok(Record {
        epoch,
        seq,
        timestamp_ms,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = &[7u8; 32];

    fn file(name: &str, sha: u8) -> Record {
        Record {
            epoch: 1000,
            seq: 5,
            timestamp_ms: 2000,
            body: Body::File {
                name: name.into(),
                info: FileInfo {
                    size: 3,
                    version: 2,
                    sha256: [sha; 32],
                    mtime_ms: 1500,
                },
            },
        }
    }

    #[test]
    fn round_trip_every_kind() {
        let bodies = [
            file("boot/vmlinuz", 1).body,
            Body::Changing { name: "a".into() },
            Body::Absent { name: "b".into() },
            Body::Heartbeat,
        ];
        for body in bodies {
            let r = Record {
                epoch: 1,
                seq: 2,
                timestamp_ms: 3,
                body,
            };
            let k = r.body.kv_key();
            let v = encode(&r, KEY, "bucket");
            assert_eq!(decode(&v, KEY, "bucket", &k), Ok(r));
        }
    }

    #[test]
    fn forged_moved_and_broken_records_are_refused() {
        let r = file("pxelinux.0", 9);
        let k = file_key("pxelinux.0");
        let v = encode(&r, KEY, "b");
        // Another key (a forger without the shared key).
        assert_eq!(
            decode(&encode(&r, &[8u8; 32], "b"), KEY, "b", &k),
            Err(RecordError::BadSignature)
        );
        // Any bit flipped.
        for i in 0..v.len() {
            let mut bad = v.clone();
            bad[i] ^= 1;
            assert!(decode(&bad, KEY, "b", &k).is_err(), "byte {i}");
        }
        // Moved to another file's key or another bucket.
        assert_eq!(
            decode(&v, KEY, "b", &file_key("other")),
            Err(RecordError::BadSignature)
        );
        assert_eq!(decode(&v, KEY, "c", &k), Err(RecordError::BadSignature));
        // Truncated, empty, trailing bytes.
        assert_eq!(decode(&v[..20], KEY, "b", &k), Err(RecordError::Malformed));
        assert_eq!(decode(&[], KEY, "b", &k), Err(RecordError::Malformed));
        let mut long = v.clone();
        long.push(0);
        assert!(decode(&long, KEY, "b", &k).is_err());
    }

    #[test]
    fn file_keys_are_subject_safe_and_distinct() {
        let k = file_key("boot/x 86*>.efi");
        assert_eq!(k.len(), 66);
        assert!(k[2..].bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(file_key("a"), file_key("b"));
    }
}
