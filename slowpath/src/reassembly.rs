//! Reassembly of one snooped TFTP read into a temporary file, in bounded memory.
//!
//! Blocks are addressed by their absolute index (1-based; the tracker has
//! already undone block-number rollover). Each block lands at offset
//! `(index - 1) * blksize` of a file under `<cache_dir>/tmp/`:
//!
//! - in-order blocks (the common case) are hashed straight from the packet
//!   and gathered in a small buffer that is written with one `pwrite` per
//!   [`WRITE_BUFFER`] bytes, so the per-block cost is a `memcpy` and the SHA-256
//!   update;
//! - out-of-order blocks are written at their offset at once; when the gap
//!   before them fills, they are read back (from the page cache) and hashed;
//! - a duplicate is compared with what was stored; a difference makes the
//!   transfer [`ReassemblyError::Inconsistent`].
//!
//! Memory per transfer: the write buffer plus a bitmap of the blocks received
//! beyond the contiguous prefix (one bit per block of reordering span),
//! at most [`MAX_SPAN`] blocks: 8 KiB, whatever block numbers or block size
//! a sender forges. A block further ahead of the prefix ends the transfer
//! ([`ReassemblyError::TooFarAhead`]): no TFTP window is that wide (RFC 7440
//! caps windowsize at 65535), so the blocks in between were lost anyway.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Most blocks a stored block may lie beyond the contiguous prefix.
pub const MAX_SPAN: u64 = 65_536;

/// Bytes of in-order data gathered before one `pwrite`.
pub const WRITE_BUFFER: usize = 128 * 1024;

/// Why a reassembly cannot produce a file.
#[derive(Debug, thiserror::Error)]
pub enum ReassemblyError {
    /// A block disagrees with another copy of itself, is longer than the block
    /// size, or contradicts where the file ends.
    #[error("inconsistent data at block {block}")]
    Inconsistent {
        /// Absolute index of the offending block.
        block: u64,
    },
    /// The data runs past the announced `tsize`, or ends short of it.
    #[error("size {got} does not match tsize {expected}")]
    SizeMismatch {
        /// Bytes received (or the end offset of the offending block).
        got: u64,
        /// The announced size.
        expected: u64,
    },
    /// The data runs past the size limit.
    #[error("file exceeds the {limit}-byte limit")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// A block lies more than [`MAX_SPAN`] blocks beyond the contiguous
    /// prefix: the blocks in between cannot arrive any more.
    #[error("block {block} is more than {MAX_SPAN} blocks ahead of block {hashed}")]
    TooFarAhead {
        /// Absolute index of the offending block.
        block: u64,
        /// Blocks in the contiguous prefix.
        hashed: u64,
    },
    /// Not every block arrived (finishing an incomplete reassembly).
    #[error("blocks missing")]
    Incomplete,
    /// The temporary file could not be created, written or read.
    #[error("temporary file {path}: {source}")]
    Io {
        /// The temporary file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// What [`Reassembly::insert`] did with a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// A block not seen before, stored.
    New,
    /// A copy of a stored block, identical to it.
    Duplicate,
}

/// A completed and hashed temporary file; removed on drop unless
/// [`TempFile::persist`] moved it.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    /// Takes charge of a complete file written by someone else under the
    /// cache's temporary directory (the fleet's fetches from the Object
    /// Store): removed on drop unless published.
    pub fn adopt(path: PathBuf) -> TempFile {
        TempFile { path, keep: false }
    }

    /// Where the file is now.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the file to `to` (same file system) and disarms the cleanup.
    pub fn persist(mut self, to: &Path) -> io::Result<()> {
        std::fs::rename(&self.path, to)?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            // Best effort: a leftover is removed by `Filestore::open` anyway.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A verified reassembly result.
#[derive(Debug)]
pub struct Reassembled {
    /// The temporary file holding exactly the transferred bytes.
    pub file: TempFile,
    /// Its length in bytes.
    pub size: u64,
    /// SHA-256 of its content.
    pub sha256: [u8; 32],
}

/// One transfer's reassembly state. Dropping it removes its temporary file.
#[derive(Debug)]
pub struct Reassembly {
    file: File,
    temp: TempFile,
    blksize: u64,
    tsize: Option<u64>,
    max_size: u64,
    /// Blocks `1..=hashed` are received and hashed, in order.
    hashed: u64,
    hasher: Sha256,
    /// Unwritten bytes of the in-order prefix, starting at block `buf_first`.
    buf: Vec<u8>,
    buf_first: u64,
    /// Received-bits for blocks from `bits_base` (one past a multiple of 64).
    bits: VecDeque<u64>,
    bits_base: u64,
    /// Highest block index received.
    highest: u64,
    /// The short block that ends the file: index and length.
    last: Option<(u64, usize)>,
}

impl Reassembly {
    /// Starts a reassembly into a new file `path` (created, must not exist).
    ///
    /// `blksize` is the negotiated block size, `tsize` the announced size if
    /// any, `max_size` the largest file accepted.
    pub fn create(
        path: PathBuf,
        blksize: u16,
        tsize: Option<u64>,
        max_size: u64,
    ) -> Result<Self, ReassemblyError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| ReassemblyError::Io {
                path: path.clone(),
                source,
            })?;
        if let Some(t) = tsize {
            if t > max_size {
                // The file is removed when `temp` drops here.
                let _ = TempFile { path, keep: false };
                return Err(ReassemblyError::TooLarge { limit: max_size });
            }
        }
        Ok(Reassembly {
            file,
            temp: TempFile { path, keep: false },
            blksize: u64::from(blksize.max(1)),
            tsize,
            max_size,
            hashed: 0,
            hasher: Sha256::new(),
            buf: Vec::new(),
            buf_first: 1,
            bits: VecDeque::new(),
            bits_base: 1,
            highest: 0,
            last: None,
        })
    }

    /// The temporary file's path.
    pub fn path(&self) -> &Path {
        self.temp.path()
    }

    /// Bytes in the contiguous received prefix.
    pub fn contiguous_bytes(&self) -> u64 {
        match self.last {
            Some((n, len)) if self.hashed == n => (n - 1) * self.blksize + len as u64,
            _ => self.hashed * self.blksize,
        }
    }

    /// Whether every block up to the final short block has arrived.
    pub fn is_complete(&self) -> bool {
        matches!(self.last, Some((n, _)) if self.hashed == n)
    }

    /// Whether the final short block has been seen.
    pub fn last_block(&self) -> Option<u64> {
        self.last.map(|(n, _)| n)
    }

    /// Stores block `index` (absolute, from 1) with `data`.
    pub fn insert(&mut self, index: u64, data: &[u8]) -> Result<Inserted, ReassemblyError> {
        let len = data.len() as u64;
        if index == 0 || len > self.blksize {
            return Err(ReassemblyError::Inconsistent { block: index });
        }
        let end = (index - 1)
            .checked_mul(self.blksize)
            .and_then(|o| o.checked_add(len))
            .ok_or(ReassemblyError::TooLarge {
                limit: self.max_size,
            })?;
        if end > self.max_size {
            return Err(ReassemblyError::TooLarge {
                limit: self.max_size,
            });
        }
        if let Some(t) = self.tsize {
            if end > t {
                return Err(ReassemblyError::SizeMismatch {
                    got: end,
                    expected: t,
                });
            }
        }
        if index.saturating_sub(self.hashed) > MAX_SPAN {
            return Err(ReassemblyError::TooFarAhead {
                block: index,
                hashed: self.hashed,
            });
        }
        if self.is_received(index) {
            return self.compare(index, data);
        }
        // Where the file ends: one short block, nothing after it.
        if len < self.blksize {
            if self.last.is_some() || self.highest > index {
                return Err(ReassemblyError::Inconsistent { block: index });
            }
            self.last = Some((index, data.len()));
        } else if matches!(self.last, Some((n, _)) if index > n) {
            return Err(ReassemblyError::Inconsistent { block: index });
        }
        self.highest = self.highest.max(index);
        if index == self.hashed + 1 {
            self.append_in_order(data)?;
            self.catch_up()?;
        } else {
            self.write_at(data, (index - 1) * self.blksize)?;
            self.set_received(index);
        }
        Ok(Inserted::New)
    }

    /// Flushes, checks completeness and `tsize`, and hands over the file
    /// (not fsynced: the cache's writer thread does that before publishing
    /// it, off the thread that feeds frames).
    pub fn finish(mut self) -> Result<Reassembled, ReassemblyError> {
        if !self.is_complete() {
            return Err(ReassemblyError::Incomplete);
        }
        self.flush()?;
        let size = self.contiguous_bytes();
        if let Some(t) = self.tsize {
            if t != size {
                return Err(ReassemblyError::SizeMismatch {
                    got: size,
                    expected: t,
                });
            }
        }
        // Out-of-order writes may have left the file longer than the data
        // only if a block lied about the end, which `insert` refuses; set the
        // length anyway so the file is exactly what was hashed.
        self.file.set_len(size).map_err(|e| self.io(e))?;
        let sha256: [u8; 32] = self.hasher.finalize().into();
        Ok(Reassembled {
            file: self.temp,
            size,
            sha256,
        })
    }

    fn io(&self, source: io::Error) -> ReassemblyError {
        ReassemblyError::Io {
            path: self.temp.path.clone(),
            source,
        }
    }

    fn is_received(&self, index: u64) -> bool {
        if index <= self.hashed {
            return true;
        }
        if index < self.bits_base {
            return false;
        }
        let bit = index - self.bits_base;
        let word = (bit / 64) as usize;
        self.bits
            .get(word)
            .is_some_and(|w| w & (1 << (bit % 64)) != 0)
    }

    fn set_received(&mut self, index: u64) {
        let bit = index - self.bits_base;
        let word = (bit / 64) as usize;
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        self.bits[word] |= 1 << (bit % 64);
    }

    /// Drops bitmap words wholly inside the hashed prefix.
    fn trim_bits(&mut self) {
        while self.bits_base + 64 <= self.hashed + 1 {
            self.bits.pop_front();
            self.bits_base += 64;
        }
    }

    fn append_in_order(&mut self, data: &[u8]) -> Result<(), ReassemblyError> {
        self.hasher.update(data);
        if self.buf.len() + data.len() > WRITE_BUFFER {
            self.flush()?;
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(WRITE_BUFFER);
        }
        self.buf.extend_from_slice(data);
        self.hashed += 1;
        self.trim_bits();
        Ok(())
    }

    /// Hashes blocks that arrived early and are now next in order.
    fn catch_up(&mut self) -> Result<(), ReassemblyError> {
        if !self.is_received(self.hashed + 1) {
            return Ok(());
        }
        self.flush()?;
        let mut block = vec![0u8; self.blksize as usize];
        while self.is_received(self.hashed + 1) {
            let n = self.hashed + 1;
            let len = match self.last {
                Some((last, len)) if last == n => len,
                _ => self.blksize as usize,
            };
            self.read_at(&mut block[..len], (n - 1) * self.blksize)?;
            self.hasher.update(&block[..len]);
            self.hashed = n;
            self.trim_bits();
        }
        // The read-back blocks are already on file: the buffer restarts after them.
        self.buf_first = self.hashed + 1;
        Ok(())
    }

    /// Compares a duplicate of block `index` with the stored copy.
    fn compare(&mut self, index: u64, data: &[u8]) -> Result<Inserted, ReassemblyError> {
        let expected_len = match self.last {
            Some((n, len)) if n == index => len,
            _ => self.blksize as usize,
        };
        if data.len() != expected_len {
            return Err(ReassemblyError::Inconsistent { block: index });
        }
        let offset = (index - 1) * self.blksize;
        let buf_offset = (self.buf_first - 1) * self.blksize;
        let same = if index >= self.buf_first && index <= self.hashed {
            let start = (offset - buf_offset) as usize;
            self.buf.get(start..start + data.len()) == Some(data)
        } else {
            let mut stored = vec![0u8; data.len()];
            self.read_at(&mut stored, offset)?;
            stored == data
        };
        if same {
            Ok(Inserted::Duplicate)
        } else {
            Err(ReassemblyError::Inconsistent { block: index })
        }
    }

    fn flush(&mut self) -> Result<(), ReassemblyError> {
        if !self.buf.is_empty() {
            let offset = (self.buf_first - 1) * self.blksize;
            let buf = std::mem::take(&mut self.buf);
            let r = self.write_at(&buf, offset);
            self.buf = buf;
            r?;
            self.buf.clear();
        }
        self.buf_first = self.hashed + 1;
        Ok(())
    }

    fn write_at(&self, data: &[u8], offset: u64) -> Result<(), ReassemblyError> {
        self.file.write_all_at(data, offset).map_err(|e| self.io(e))
    }

    fn read_at(&self, out: &mut [u8], offset: u64) -> Result<(), ReassemblyError> {
        self.file.read_exact_at(out, offset).map_err(|e| self.io(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn blocks(content: &[u8], blksize: usize) -> Vec<&[u8]> {
        // Always ends with a short (possibly empty) block, as TFTP does.
        let mut v: Vec<&[u8]> = content.chunks(blksize).collect();
        if content.len().is_multiple_of(blksize) {
            v.push(&[]);
        }
        v
    }

    fn new(dir: &Path, blksize: u16, tsize: Option<u64>) -> Reassembly {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!("{}.part", N.fetch_add(1, Ordering::Relaxed));
        Reassembly::create(dir.join(name), blksize, tsize, 1 << 30).unwrap()
    }

    fn sha(d: &[u8]) -> [u8; 32] {
        Sha256::digest(d).into()
    }

    #[test]
    fn in_order_and_reversed_give_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let content = data(300_000);
        for reverse in [false, true] {
            let mut r = new(dir.path(), 512, Some(content.len() as u64));
            let mut bl: Vec<(u64, &[u8])> = blocks(&content, 512)
                .into_iter()
                .enumerate()
                .map(|(i, b)| (i as u64 + 1, b))
                .collect();
            if reverse {
                bl.reverse();
            }
            for (i, b) in bl {
                assert_eq!(r.insert(i, b).unwrap(), Inserted::New);
            }
            let done = r.finish().unwrap();
            assert_eq!(done.size, content.len() as u64);
            assert_eq!(done.sha256, sha(&content));
            assert_eq!(std::fs::read(done.file.path()).unwrap(), content);
        }
    }

    #[test]
    fn duplicates_compare_and_disagreement_is_inconsistent() {
        let dir = tempfile::tempdir().unwrap();
        let content = data(512 * 3 + 10);
        let bl = blocks(&content, 512);
        let mut r = new(dir.path(), 512, None);
        r.insert(1, bl[0]).unwrap();
        r.insert(3, bl[2]).unwrap();
        assert_eq!(r.insert(1, bl[0]).unwrap(), Inserted::Duplicate); // from the buffer
        assert_eq!(r.insert(3, bl[2]).unwrap(), Inserted::Duplicate); // from the file
        let mut bad = bl[2].to_vec();
        bad[100] ^= 1;
        assert!(matches!(
            r.insert(3, &bad),
            Err(ReassemblyError::Inconsistent { block: 3 })
        ));
    }

    #[test]
    fn zero_length_last_block() {
        let dir = tempfile::tempdir().unwrap();
        let content = data(1024);
        let mut r = new(dir.path(), 512, Some(1024));
        r.insert(1, &content[..512]).unwrap();
        r.insert(2, &content[512..]).unwrap();
        assert!(!r.is_complete());
        r.insert(3, &[]).unwrap();
        let done = r.finish().unwrap();
        assert_eq!((done.size, done.sha256), (1024, sha(&content)));
    }

    /// A forged block number far beyond the prefix (blksize 8, a 1 GiB
    /// limit: 128 Mi blocks) is refused instead of growing the bitmap; one
    /// at the edge of the span is stored, and the bitmap stays 8 KiB.
    #[test]
    fn the_reordering_span_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = new(dir.path(), 8, None);
        r.insert(1, &[1; 8]).unwrap();
        assert!(matches!(
            r.insert(100_000_000, &[2; 8]),
            Err(ReassemblyError::TooFarAhead {
                block: 100_000_000,
                hashed: 1
            })
        ));
        assert!(r.bits.is_empty());
        assert_eq!(r.insert(1 + MAX_SPAN, &[3; 8]).unwrap(), Inserted::New);
        assert!(r.bits.len() as u64 <= MAX_SPAN / 64 + 1);
        assert!(matches!(
            r.insert(2 + MAX_SPAN, &[3; 8]),
            Err(ReassemblyError::TooFarAhead { .. })
        ));
    }

    #[test]
    fn incomplete_and_size_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = new(dir.path(), 512, None);
        r.insert(2, &[1; 10]).unwrap();
        let path = r.path().to_owned();
        assert!(path.exists());
        assert!(matches!(r.finish(), Err(ReassemblyError::Incomplete)));
        // The temporary file goes with the reassembly.
        assert!(!path.exists());

        let mut r = new(dir.path(), 512, Some(600));
        r.insert(1, &[0; 512]).unwrap();
        r.insert(2, &[0; 10]).unwrap();
        assert!(matches!(
            r.finish(),
            Err(ReassemblyError::SizeMismatch {
                got: 522,
                expected: 600
            })
        ));

        let mut r = new(dir.path(), 512, Some(100));
        assert!(matches!(
            r.insert(1, &[0; 512]),
            Err(ReassemblyError::SizeMismatch { .. })
        ));

        let mut r = Reassembly::create(dir.path().join("t.part"), 512, None, 1000).unwrap();
        r.insert(1, &[0; 512]).unwrap();
        assert!(matches!(
            r.insert(2, &[0; 512]),
            Err(ReassemblyError::TooLarge { limit: 1000 })
        ));
        drop(r);
        assert!(matches!(
            Reassembly::create(dir.path().join("t.part"), 512, Some(1001), 1000),
            Err(ReassemblyError::TooLarge { .. })
        ));
        assert!(!dir.path().join("t.part").exists());
    }

    #[test]
    fn contradictory_ends_are_inconsistent() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = new(dir.path(), 512, None);
        r.insert(2, &[0; 10]).unwrap();
        // A full block after the end, a second end, an oversized block.
        assert!(r.insert(3, &[0; 512]).is_err());
        let mut r = new(dir.path(), 512, None);
        r.insert(2, &[0; 10]).unwrap();
        assert!(r.insert(1, &[0; 5]).is_err());
        let mut r = new(dir.path(), 512, None);
        assert!(r.insert(1, &[0; 513]).is_err());
        // A short block before one already seen further on.
        let mut r = new(dir.path(), 512, None);
        r.insert(5, &[0; 512]).unwrap();
        assert!(r.insert(3, &[0; 5]).is_err());
    }
}
