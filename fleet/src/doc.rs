//! The fleet's other records (issue 14 items 2–4): what each bridge says
//! about itself (presence, holdings, image map summary, acknowledgements)
//! and what the agent directs. Each is a JSON document in a signed
//! envelope of the table's format:
//!
//! ```text
//! offset size  field
//!  0      2    magic "BF"
//!  2      1    version = 1
//!  3      1    kind = 5 (document)
//!  4      n    JSON (at most MAX_DOC_LEN bytes)
//!  4+n   32    HMAC-SHA256(key, "bootcache-fleet-v1" 0 bucket 0 kv-key 0 bytes 0..4+n)
//! ```
//!
//! Signed with the key bootcache and its agent share, over the bucket and
//! KV key (a document cannot be moved to another key): a bridge's records
//! are believed by the agent and the operator's listing no more than the
//! table is by the bridges. The table's own kinds (1–4) are not
//! documents, and a document is no table record.

use hmac::Mac;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::record::{mac, RecordError, MAC_LEN, MAGIC, VERSION};

const KIND_DOC: u8 = 5;
/// The longest document: well under NATS's default 1 MiB payload.
pub const MAX_DOC_LEN: usize = 256 * 1024;

/// Signs `doc` for `kv_key` of `bucket`.
pub fn sign<T: Serialize>(doc: &T, key: &[u8], bucket: &str, kv_key: &str) -> Vec<u8> {
    let json = serde_json::to_vec(doc).expect("fleet documents serialise");
    let mut out = Vec::with_capacity(4 + json.len() + MAC_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(KIND_DOC);
    out.extend_from_slice(&json);
    let mut m = mac(key, bucket, kv_key);
    m.update(&out);
    out.extend_from_slice(&m.finalize().into_bytes());
    out
}

/// Verifies a value read from `kv_key` of `bucket` and decodes its
/// document. The MAC is checked (in constant time) before the JSON is read.
pub fn verify<T: DeserializeOwned>(
    value: &[u8],
    key: &[u8],
    bucket: &str,
    kv_key: &str,
) -> Result<T, RecordError> {
    if value.len() < 4 + MAC_LEN
        || value.len() > 4 + MAX_DOC_LEN + MAC_LEN
        || value[0..2] != MAGIC
        || value[2] != VERSION
        || value[3] != KIND_DOC
    {
        return Err(RecordError::Malformed);
    }
    let (signed, tag) = value.split_at(value.len() - MAC_LEN);
    let mut m = mac(key, bucket, kv_key);
    m.update(signed);
    m.verify_slice(tag).map_err(|_| RecordError::BadSignature)?;
    serde_json::from_slice(&signed[4..]).map_err(|_| RecordError::Malformed)
}

/// Bridge ids and sites: letters, digits, `-` and `_` (they are parts of
/// KV keys, which are NATS subjects).
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `s` made a valid id: other characters become `-` (a hostname's dots).
pub fn sanitize_id(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if out.is_empty() {
        out.push_str("bridge");
    }
    out
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        s.push(char::from_digit(u32::from(b & 15), 16).unwrap_or('0'));
    }
    s
}

/// The buckets beside the table's `bucket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buckets {
    /// The verification table (the agent's records).
    pub table: String,
    /// Holdings, image map summaries, directives and acknowledgements.
    pub fleet: String,
    /// Bridges' presence; entries expire after [`PRESENCE_TTL`].
    pub presence: String,
    /// The Object Store of pushed and pre-staged files.
    pub objects: String,
}

impl Buckets {
    /// The buckets of the table `bucket` (at most 64 characters: the
    /// others add up to 9).
    pub fn of(bucket: &str) -> Buckets {
        Buckets {
            table: bucket.to_owned(),
            fleet: format!("{bucket}-fleet"),
            presence: format!("{bucket}-presence"),
            objects: format!("{bucket}-files"),
        }
    }
}

/// Presence entries live this long (the presence bucket's `max_age`: NATS
/// 2.9 has no per-key TTL) and bridges put theirs every
/// [`PRESENCE_PERIOD`].
pub const PRESENCE_TTL: std::time::Duration = std::time::Duration::from_secs(10);
/// How often a bridge puts its presence.
pub const PRESENCE_PERIOD: std::time::Duration = std::time::Duration::from_secs(2);

/// The presence key of `bridge`.
pub fn presence_key(bridge: &str) -> String {
    format!("p.{bridge}")
}

/// The holdings key of one cached copy: per bridge, per (server, VLAN
/// scope, name) — the cache's own key.
pub fn holding_key(bridge: &str, server: &str, vlan: &str, name: &str) -> String {
    let mut h = Sha256::new();
    for part in [server, vlan, name] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    format!("h.{bridge}.{}", hex(&h.finalize()[..16]))
}

/// The image map summary key of `bridge`.
pub fn image_key(bridge: &str) -> String {
    format!("m.{bridge}")
}

/// A directive's key.
pub fn directive_key(id: &str) -> String {
    format!("d.{id}")
}

/// The key of `bridge`'s acknowledgement of directive `id`.
pub fn ack_key(id: &str, bridge: &str) -> String {
    format!("a.{id}.{bridge}")
}

/// A bridge says it is there (presence bucket, expires).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// `[fleet] bridge_id`.
    pub id: String,
    /// `[fleet] site`.
    pub site: String,
    /// Its addresses (boot servers it caches for, management addresses).
    pub addresses: Vec<String>,
    /// bootcache's version.
    pub version: String,
    /// When this run started, ms since the Unix epoch.
    pub started_ms: u64,
    /// When this entry was put, ms since the Unix epoch.
    pub at_ms: u64,
    /// Whether its mirror of the table was live.
    pub mirror_live: bool,
    /// Cached copies it holds.
    pub holdings: u64,
}

/// One cached copy a bridge holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Holding {
    /// The file's normalised name.
    pub name: String,
    /// The boot server it came from.
    pub server: String,
    /// The VLAN scope ("-" untagged, "100", "100.200", "shared").
    pub vlan: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// When a transfer last delivered or confirmed it, s since the Unix epoch.
    pub verified_s: u64,
}

impl Holding {
    /// Its key in the fleet bucket for `bridge`.
    pub fn key(&self, bridge: &str) -> String {
        holding_key(bridge, &self.server, &self.vlan, &self.name)
    }
}

/// A bridge's image map, summarised (figure 3d): which clients booted what.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSummary {
    /// Clients in the map.
    pub clients: u64,
    /// Per file: clients that loaded it, and from where.
    pub files: Vec<FileBoots>,
    /// The most recently seen clients (at most [`MAX_LISTED_CLIENTS`]).
    pub recent: Vec<ClientSummary>,
}

/// Clients listed in an [`ImageSummary`] at most.
pub const MAX_LISTED_CLIENTS: usize = 32;
/// Files listed in an [`ImageSummary`] at most.
pub const MAX_LISTED_FILES: usize = 256;

/// How many clients loaded one file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileBoots {
    /// The file's name.
    pub name: String,
    /// Clients that loaded it.
    pub clients: u64,
    /// ... of which from the bridge's cache.
    pub from_cache: u64,
}

/// One client of the image map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSummary {
    /// MAC address.
    pub mac: String,
    /// Last IPv4 address, if known.
    pub ip: Option<String>,
    /// Client architecture (DHCP option 93), if sent.
    pub arch: Option<u16>,
    /// The boot file it was told.
    pub nbp: Option<String>,
    /// Files it loaded (at most 16).
    pub files: Vec<String>,
    /// Last seen, s since the Unix epoch.
    pub last_seen_s: u64,
}

/// Which bridges a directive is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Every bridge.
    All,
    /// The bridges of one site.
    Site(String),
    /// These bridges.
    Bridges(Vec<String>),
}

impl Target {
    /// Whether `bridge` of `site` is meant.
    pub fn includes(&self, bridge: &str, site: &str) -> bool {
        match self {
            Target::All => true,
            Target::Site(s) => s == site,
            Target::Bridges(b) => b.iter().any(|b| b == bridge),
        }
    }
}

/// Why a directive was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectiveKind {
    /// A file changed: bridges holding an outdated copy fetch the new one.
    Refresh,
    /// The operator's `bootcache-agent cache`: pre-stage files.
    Cache,
}

/// The agent (or the operator with the key) directs bridges to fetch files
/// from the Object Store into their caches (figures 6 and 8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directive {
    /// Unique: issue time in ms and a random part.
    pub id: String,
    /// Refresh or cache.
    pub kind: DirectiveKind,
    /// Normalised file names; each is fetched at the version the table
    /// has when the bridge acts.
    pub files: Vec<String>,
    /// Which bridges.
    pub target: Target,
    /// When it was issued, ms since the Unix epoch.
    pub issued_ms: u64,
}

/// Files a directive names at most.
pub const MAX_DIRECTIVE_FILES: usize = 1024;

/// Where a bridge is with one file of a directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    /// Not yet in its cache.
    Pending,
    /// In its cache at the table's version (fetched, or held already).
    Done,
    /// Given up (see the detail).
    Failed,
}

/// One file of an acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAck {
    /// The file.
    pub name: String,
    /// Its state.
    pub state: FileState,
    /// The SHA-256 it holds now (hex), when done.
    pub sha256: Option<String>,
    /// Why it failed, or how it was done ("fetched", "held").
    pub detail: String,
}

/// A bridge's acknowledgement of a directive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The directive.
    pub id: String,
    /// The bridge.
    pub bridge: String,
    /// When it was last updated, ms since the Unix epoch.
    pub at_ms: u64,
    /// Per file.
    pub files: Vec<FileAck>,
}

impl Ack {
    /// Whether no file is pending any more.
    pub fn finished(&self) -> bool {
        self.files.iter().all(|f| f.state != FileState::Pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = &[3u8; 32];

    #[test]
    fn documents_round_trip_and_refuse_forgery_and_moves() {
        let d = Directive {
            id: "1-ab".into(),
            kind: DirectiveKind::Cache,
            files: vec!["boot/vmlinuz".into()],
            target: Target::Site("a".into()),
            issued_ms: 5,
        };
        let k = directive_key(&d.id);
        let v = sign(&d, KEY, "b-fleet", &k);
        assert_eq!(verify::<Directive>(&v, KEY, "b-fleet", &k), Ok(d.clone()));
        assert_eq!(
            verify::<Directive>(&sign(&d, &[4u8; 32], "b-fleet", &k), KEY, "b-fleet", &k),
            Err(RecordError::BadSignature)
        );
        assert_eq!(
            verify::<Directive>(&v, KEY, "b-fleet", "d.other"),
            Err(RecordError::BadSignature)
        );
        assert_eq!(
            verify::<Directive>(&v, KEY, "c-fleet", &k),
            Err(RecordError::BadSignature)
        );
        for i in 0..v.len() {
            let mut bad = v.clone();
            bad[i] ^= 0x20;
            assert!(
                verify::<Directive>(&bad, KEY, "b-fleet", &k).is_err(),
                "byte {i}"
            );
        }
        // Signed, but another document type: malformed, not a panic.
        assert_eq!(
            verify::<Presence>(&v, KEY, "b-fleet", &k),
            Err(RecordError::Malformed)
        );
        // A table record is no document.
        let r = crate::record::Record {
            epoch: 1,
            seq: 1,
            timestamp_ms: 1,
            body: crate::record::Body::Heartbeat,
        };
        let t = crate::record::encode(&r, KEY, "b-fleet");
        assert_eq!(
            verify::<Directive>(&t, KEY, "b-fleet", "heartbeat"),
            Err(RecordError::Malformed)
        );
    }

    #[test]
    fn ids_and_keys_are_subject_safe() {
        assert!(valid_id("site-a_1"));
        assert!(!valid_id("a.b") && !valid_id("") && !valid_id("a b"));
        assert_eq!(sanitize_id("host.example.org"), "host-example-org");
        assert_eq!(sanitize_id(""), "bridge");
        let k = holding_key("b1", "10.0.0.1", "-", "a b/*>.efi");
        assert!(k.starts_with("h.b1.") && k[5..].bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(k, holding_key("b1", "10.0.0.1", "100", "a b/*>.efi"));
        assert!(Target::Site("a".into()).includes("x", "a"));
        assert!(!Target::Bridges(vec!["y".into()]).includes("x", "a"));
        assert!(Target::All.includes("x", "a"));
    }
}
