//! The operator's control protocol (`bootcache cache ...` against a running
//! bridge), sans-I/O: one JSON object per line each way over a Unix socket
//! that the file system's permissions guard (whoever may open the socket
//! may manage the cache). The bridge answers each request line with one
//! response line and closes the connection.
//!
//! ```text
//! → {"op":"ls"}
//! ← {"ok":true,"ls":{"used_bytes":…,"quota_bytes":…,"files":[{…,"in_use":false}]}}
//! → {"op":"rm","name":"boot/x.efi"}
//! → {"op":"purge","older_than_s":86400}        (no older_than_s: every file)
//! → {"op":"verify"}
//! → {"op":"prefetch","name":"ipxe.efi","server":"10.0.0.1","via":"10.99.0.2"}
//! ← {"ok":false,"error":"…"}
//! ```
//!
//! Requests are untrusted input however the socket is guarded: a line is
//! bounded ([`MAX_LINE`]), a name must be one a client could ask for
//! ([`wire::tftp::normalize_name`]), and a bad line gets an error, never
//! a panic.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::filestore::Entry;

/// Longest request or response line read, in bytes (a listing of a large
/// cache is long; a request is short).
pub const MAX_LINE: usize = 64 << 20;
/// Longest request line accepted, in bytes.
pub const MAX_REQUEST: usize = 4096;

/// What the operator asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The cached files.
    Ls,
    /// Remove every cached file of this name (any server, any VLAN).
    Rm {
        /// The name as a client asks for it.
        name: String,
    },
    /// Remove every file not used for this long (all files: `None`);
    /// files in use stay.
    Purge {
        /// Seconds since the last use.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        older_than_s: Option<u64>,
    },
    /// Hash every cached file again; remove those that no longer match.
    Verify,
    /// Fetch `name` from the boot server `server` by TFTP and cache it as
    /// from `server`.
    Prefetch {
        /// The name to read.
        name: String,
        /// The boot server (clients' view: the cache key).
        server: Ipv4Addr,
        /// Where to read it from when not `server` itself (the server's
        /// management address, as the agent is reached).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<Ipv4Addr>,
    },
}

/// Why a request line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Longer than [`MAX_REQUEST`].
    #[error("request longer than {MAX_REQUEST} bytes")]
    TooLong,
    /// Not UTF-8 JSON of a known request.
    #[error("not a request: {0}")]
    Malformed(String),
    /// The name names no file a client could read.
    #[error("file name {0:?} names no file under a server's root")]
    BadName(String),
}

/// Parses one request line (without or with its newline).
pub fn parse_request(line: &[u8]) -> Result<Request, ParseError> {
    if line.len() > MAX_REQUEST {
        return Err(ParseError::TooLong);
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let r: Request =
        serde_json::from_slice(line).map_err(|e| ParseError::Malformed(e.to_string()))?;
    match &r {
        Request::Rm { name } | Request::Prefetch { name, .. } => {
            if wire::tftp::normalize_name(name).is_err() {
                return Err(ParseError::BadName(name.clone()));
            }
        }
        Request::Ls | Request::Purge { .. } | Request::Verify => {}
    }
    Ok(r)
}

/// One request as a line (with its newline).
pub fn encode_request(r: &Request) -> Vec<u8> {
    let mut v = serde_json::to_vec(r).unwrap_or_default();
    v.push(b'\n');
    v
}

/// A cached file as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    /// The index entry.
    #[serde(flatten)]
    pub entry: Entry,
    /// Being served, published or hashed right now.
    #[serde(default)]
    pub in_use: bool,
}

/// The answer to [`Request::Ls`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// Bytes of the cached files.
    pub used_bytes: u64,
    /// The quota (0 when listed from the directory without a bridge).
    pub quota_bytes: u64,
    /// The files.
    pub files: Vec<Listed>,
}

/// The answer to [`Request::Rm`] and [`Request::Purge`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    /// The files removed.
    pub removed: Vec<Entry>,
    /// Their bytes.
    pub removed_bytes: u64,
    /// Files that matched but were kept because in use (purge only).
    pub kept_in_use: u64,
}

/// Why [`Request::Verify`] removed a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyOutcome {
    /// Hashes to its entry.
    Ok,
    /// Its bytes changed: removed.
    Mismatch,
    /// It could not be read: removed (never served unverified).
    Unreadable,
    /// Missing or of the wrong size when the index was loaded: removed.
    Missing,
}

impl VerifyOutcome {
    /// The words for a listing line.
    pub fn describe(self) -> &'static str {
        match self {
            VerifyOutcome::Ok => "ok",
            VerifyOutcome::Mismatch => "removed (content no longer matches)",
            VerifyOutcome::Unreadable => "removed (unreadable)",
            VerifyOutcome::Missing => "removed (missing, wrong size or invalid entry)",
        }
    }
}

/// One file [`Request::Verify`] removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRemoved {
    /// Its boot server.
    pub origin: Ipv4Addr,
    /// Its name.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// The SHA-256 its entry had.
    pub sha256: String,
    /// Why.
    pub reason: VerifyOutcome,
}

/// The answer to [`Request::Verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifySummary {
    /// The cache directory.
    pub cache_dir: String,
    /// Entries checked.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Those that matched.
    pub ok: u64,
    /// Removed, whatever the reason (unreadable ones included).
    pub removed: u64,
    /// Removed because unreadable.
    pub unreadable: u64,
    /// The index itself could not be parsed (set aside).
    pub index_corrupt: bool,
    /// What was removed.
    pub removed_files: Vec<VerifyRemoved>,
}

impl VerifySummary {
    /// Records `entry` as removed for `reason`.
    pub fn removed_file(&mut self, entry: Entry, reason: VerifyOutcome) {
        self.removed += 1;
        if reason == VerifyOutcome::Unreadable {
            self.unreadable += 1;
        }
        self.removed_files.push(VerifyRemoved {
            origin: entry.server,
            name: entry.name,
            size: entry.size,
            sha256: entry.sha256.to_hex(),
            reason,
        });
    }
}

/// The answer to [`Request::Prefetch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prefetched {
    /// The name fetched.
    pub name: String,
    /// The boot server.
    pub server: Ipv4Addr,
    /// Bytes fetched.
    pub size: u64,
    /// Their SHA-256.
    pub sha256: String,
    /// `new`, `refreshed` (the same bytes were cached) or `replaced`.
    pub published: String,
}

/// The bridge's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// To [`Request::Ls`].
    Ls(Listing),
    /// To [`Request::Rm`] and [`Request::Purge`].
    Removed(Removed),
    /// To [`Request::Verify`].
    Verify(VerifySummary),
    /// To [`Request::Prefetch`].
    Prefetched(Prefetched),
}

/// One response line: an answer, or an error in one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// What it did (when `ok`).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
    /// Why not (when not `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    /// A successful answer.
    pub fn ok(answer: Answer) -> Self {
        Response {
            ok: true,
            answer: Some(answer),
            error: None,
        }
    }

    /// A refusal or failure, in one line.
    pub fn error(message: impl Into<String>) -> Self {
        let message: String = message.into();
        Response {
            ok: false,
            answer: None,
            // One line whatever the message held.
            error: Some(message.replace('\n', " ")),
        }
    }

    /// As a line (with its newline).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parses a response line.
    pub fn parse(line: &[u8]) -> Result<Self, ParseError> {
        serde_json::from_slice(line).map_err(|e| ParseError::Malformed(e.to_string()))
    }
}

/// Parses a duration as the operator writes it: a number and a unit, `s`,
/// `m`, `h`, `d` or `w` (`90s`, `30m`, `12h`, `7d`); a bare number is
/// seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: not a duration (a number and s, m, h, d or w: 7d)"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (s, m, h, d or w)")),
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?}: too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_parses_back() {
        let all = [
            Request::Ls,
            Request::Rm {
                name: "boot/x.efi".into(),
            },
            Request::Purge { older_than_s: None },
            Request::Purge {
                older_than_s: Some(3600),
            },
            Request::Verify,
            Request::Prefetch {
                name: "ipxe.efi".into(),
                server: Ipv4Addr::new(10, 0, 0, 1),
                via: None,
            },
            Request::Prefetch {
                name: "ipxe.efi".into(),
                server: Ipv4Addr::new(10, 0, 0, 1),
                via: Some(Ipv4Addr::new(10, 99, 0, 2)),
            },
        ];
        for r in all {
            assert_eq!(parse_request(&encode_request(&r)).unwrap(), r);
        }
    }

    #[test]
    fn the_wire_format_is_as_documented() {
        assert_eq!(parse_request(br#"{"op":"ls"}"#).unwrap(), Request::Ls);
        assert_eq!(
            parse_request(b"{\"op\":\"purge\",\"older_than_s\":86400}\n").unwrap(),
            Request::Purge {
                older_than_s: Some(86400)
            }
        );
        assert_eq!(
            parse_request(br#"{"op":"prefetch","name":"a","server":"10.0.0.1"}"#).unwrap(),
            Request::Prefetch {
                name: "a".into(),
                server: Ipv4Addr::new(10, 0, 0, 1),
                via: None,
            }
        );
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        let bad: &[&[u8]] = &[
            b"",
            b"ls",
            b"{}",
            br#"{"op":"format"}"#,
            br#"{"op":"rm"}"#,
            br#"{"op":"rm","name":7}"#,
            br#"{"op":"rm","name":"a","extra":1}"#,
            br#"{"op":"purge","older_than_s":-1}"#,
            br#"{"op":"prefetch","name":"a","server":"::1"}"#,
            br#"{"op":"prefetch","name":"a","server":"boot"}"#,
            b"\xff\xfe",
        ];
        for b in bad {
            assert!(
                matches!(parse_request(b), Err(ParseError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
        assert!(matches!(
            parse_request(br#"{"op":"rm","name":"../etc/passwd"}"#),
            Err(ParseError::BadName(_))
        ));
        assert!(matches!(
            parse_request(br#"{"op":"rm","name":""}"#),
            Err(ParseError::BadName(_))
        ));
        let long = format!(r#"{{"op":"rm","name":"{}"}}"#, "a".repeat(MAX_REQUEST));
        assert_eq!(parse_request(long.as_bytes()), Err(ParseError::TooLong));
    }

    #[test]
    fn responses_round_trip_and_errors_stay_on_one_line() {
        let r = Response::ok(Answer::Removed(Removed {
            removed: Vec::new(),
            removed_bytes: 0,
            kept_in_use: 2,
        }));
        let line = r.encode();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(Response::parse(&line).unwrap(), r);
        let e = Response::error("two\nlines");
        let line = e.encode();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(
            Response::parse(&line).unwrap().error.as_deref(),
            Some("two lines")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(1_209_600)));
        for bad in ["", "d", "7x", "-1d", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
