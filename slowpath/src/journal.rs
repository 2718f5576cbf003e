//! Append-only journals of small JSON records, next to a snapshot that is
//! rewritten now and then (compaction).
//!
//! One record per line: `<json> TAB <checksum> LF`, the checksum being the
//! first 8 bytes of the JSON's SHA-256 in hex. JSON escapes control
//! characters, so a record never holds a raw tab or newline. A record cut
//! short by a crash (no LF: a torn tail) or whose checksum or JSON does not
//! check out is dropped and counted, never applied. Every record is the
//! whole state of one key (put) or its removal (del), so replaying a
//! journal over a snapshot that already contains it changes nothing: a
//! crash between writing a new snapshot and emptying the journal is
//! harmless.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Hex digits of a record's checksum.
const SUM_HEX: usize = 16;

/// The checksum of a record's JSON.
fn checksum(json: &[u8]) -> [u8; SUM_HEX] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let d = Sha256::digest(json);
    let mut out = [0u8; SUM_HEX];
    for (i, b) in d.iter().take(SUM_HEX / 2).enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    out
}

/// Appends `record` as one journal line to `out`.
pub fn encode<T: Serialize>(record: &T, out: &mut Vec<u8>) {
    let start = out.len();
    // Plain records of strings and numbers: serialising cannot fail.
    if serde_json::to_writer(&mut *out, record).is_err() {
        out.truncate(start);
        return;
    }
    let sum = checksum(&out[start..]);
    out.push(b'\t');
    out.extend_from_slice(&sum);
    out.push(b'\n');
}

/// What [`decode`] found in a journal.
#[derive(Debug)]
pub struct Decoded<T> {
    /// The good records, in order.
    pub records: Vec<T>,
    /// Complete lines dropped: bad checksum, not a record, not UTF-8.
    pub bad: u64,
    /// The journal ended in a partial line (a write cut short), dropped.
    pub torn: bool,
    /// Bytes up to the end of the last complete line: where the next
    /// record may be appended.
    pub valid_len: u64,
}

impl<T> Default for Decoded<T> {
    fn default() -> Self {
        Decoded {
            records: Vec::new(),
            bad: 0,
            torn: false,
            valid_len: 0,
        }
    }
}

/// Decodes a journal's bytes; never fails, whatever they hold.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Decoded<T> {
    let mut d = Decoded::default();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            d.torn = true;
            break;
        };
        let line = &rest[..end];
        rest = &rest[end + 1..];
        d.valid_len += end as u64 + 1;
        match decode_line(line) {
            Some(r) => d.records.push(r),
            None => d.bad += 1,
        }
    }
    d
}

fn decode_line<T: DeserializeOwned>(line: &[u8]) -> Option<T> {
    let tab = line.iter().rposition(|&b| b == b'\t')?;
    let (json, sum) = (&line[..tab], &line[tab + 1..]);
    if sum != checksum(json) {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// Reads and decodes the journal at `path`; a missing file is empty.
pub fn read<T: DeserializeOwned>(path: &Path) -> io::Result<Decoded<T>> {
    match fs::read(path) {
        Ok(bytes) => Ok(decode(&bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Decoded::default()),
        Err(e) => Err(e),
    }
}

/// A journal appended to by the writer thread. The file is open only from
/// an append to the next sync: a file held open for writing would keep the
/// file system from being remounted read-only.
#[derive(Debug)]
pub(crate) struct Appender {
    path: PathBuf,
    file: Option<File>,
    /// Bytes known to end in a complete record.
    len: u64,
    /// Records appended since it was last emptied.
    records: u64,
    /// Appended but not yet synced.
    unsynced: bool,
}

impl Appender {
    /// The journal at `path`; opened at the first append.
    pub(crate) fn new(path: PathBuf) -> Self {
        Appender {
            path,
            file: None,
            len: 0,
            records: 0,
            unsynced: false,
        }
    }

    /// Records in the journal.
    pub(crate) fn records(&self) -> u64 {
        self.records
    }

    /// Appends encoded `lines` holding `n` records. After a failed append
    /// the file is cut back to its last complete record first, so that a
    /// partial write never glues itself to the next record.
    pub(crate) fn append(&mut self, lines: &[u8], n: u64) -> io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let f = match &mut self.file {
            Some(f) => f,
            None => {
                let f = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&self.path)?;
                // Whatever follows the last complete record (a torn tail)
                // goes: the caller read it with `decode`.
                f.set_len(self.len)?;
                self.file.insert(f)
            }
        };
        use std::io::Seek;
        let r = f
            .seek(io::SeekFrom::Start(self.len))
            .and_then(|_| f.write_all(lines));
        match r {
            Ok(()) => {
                self.len += lines.len() as u64;
                self.records += n;
                self.unsynced = true;
                Ok(())
            }
            Err(e) => {
                let _ = f.set_len(self.len);
                self.file = None;
                Err(e)
            }
        }
    }

    /// Makes the appended records durable, and closes the file.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        let f = self.file.take();
        if let (true, Some(f)) = (self.unsynced, &f) {
            f.sync_data()?;
        }
        self.unsynced = false;
        Ok(())
    }

    /// Starts from `len` bytes holding `records` records (what was loaded).
    pub(crate) fn resume(&mut self, len: u64, records: u64) {
        self.len = len;
        self.records = records;
        self.file = None;
    }

    /// Empties the journal (its records are in a new snapshot).
    pub(crate) fn clear(&mut self) -> io::Result<()> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&self.path)?;
        f.sync_all()?;
        self.file = None;
        self.len = 0;
        self.records = 0;
        self.unsynced = false;
        Ok(())
    }
}

/// Writes `bytes` to `dir/name` atomically: a temporary file, fsync,
/// rename, fsync of the directory. A crash leaves the old or the new file.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Makes a directory's entries (renames, removals) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct R {
        k: String,
        v: u64,
    }

    fn r(k: &str, v: u64) -> R {
        R { k: k.into(), v }
    }

    fn lines(rs: &[R]) -> Vec<u8> {
        let mut out = Vec::new();
        for x in rs {
            encode(x, &mut out);
        }
        out
    }

    #[test]
    fn round_trip_with_hostile_strings() {
        let rs = [r("a\tb\nc\u{0}", 1), r("\u{202e}", u64::MAX), r("", 0)];
        let bytes = lines(&rs);
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 3);
        let d: Decoded<R> = decode(&bytes);
        assert_eq!(d.records, rs);
        assert_eq!((d.bad, d.torn, d.valid_len), (0, false, bytes.len() as u64));
    }

    #[test]
    fn torn_tail_is_dropped_and_appends_go_after_the_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let mut bytes = lines(&[r("a", 1), r("b", 2)]);
        let whole = bytes.len();
        bytes.extend_from_slice(&lines(&[r("c", 3)])[..10]);
        fs::write(&path, &bytes).unwrap();
        let d: Decoded<R> = read(&path).unwrap();
        assert_eq!(d.records, [r("a", 1), r("b", 2)]);
        assert!(d.torn);
        assert_eq!(d.valid_len, whole as u64);
        let mut a = Appender::new(path.clone());
        a.resume(d.valid_len, 2);
        a.append(&lines(&[r("d", 4)]), 1).unwrap();
        a.sync().unwrap();
        let d: Decoded<R> = read(&path).unwrap();
        assert_eq!(d.records, [r("a", 1), r("b", 2), r("d", 4)]);
        assert!(!d.torn && d.bad == 0);
        assert_eq!(a.records(), 3);
    }

    #[test]
    fn garbage_and_flipped_records_are_dropped_and_counted() {
        let mut bytes = lines(&[r("a", 1)]);
        bytes.extend_from_slice(b"not a record at all\n\t\n\n");
        let mut flipped = lines(&[r("b", 2)]);
        flipped[6] ^= 1; // inside the JSON: the checksum no longer matches
        bytes.extend_from_slice(&flipped);
        // A valid checksum over JSON of another shape.
        let mut other = Vec::new();
        encode(&serde_json::json!({"x": 1}), &mut other);
        bytes.extend_from_slice(&other);
        bytes.extend_from_slice(&lines(&[r("c", 3)]));
        let d: Decoded<R> = decode(&bytes);
        assert_eq!(d.records, [r("a", 1), r("c", 3)]);
        assert_eq!(d.bad, 5);
        assert!(!d.torn);
    }

    #[test]
    fn atomic_write_replaces_whole() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "s.json", b"one").unwrap();
        write_atomic(dir.path(), "s.json", b"two").unwrap();
        assert_eq!(fs::read(dir.path().join("s.json")).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
