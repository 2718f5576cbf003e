//! The boot-image verification table (patent figure 8): every regular file
//! under the TFTP root → size, SHA-256, version, mtime.
//!
//! Rebuilt by a scan at start and kept current by [`crate::watch`]; persisted
//! nowhere, so versions restart at 1 with the agent. The cache compares
//! SHA-256 values, never versions across restarts.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::wire::{Answer, FileState, MAX_PATH_LEN};

/// Why a requested file name is refused (the names bootcache's cache keys
/// use: one type for both ends).
pub type PathError = ::wire::tftp::NameError;

/// Normalises a file name the way TFTP servers resolve it against their
/// root ([`::wire::tftp::normalize_name`], which bootcache's cache keys use
/// too), within the protocol's length limit.
pub fn normalize(name: &str) -> Result<String, PathError> {
    if name.len() > MAX_PATH_LEN {
        return Err(PathError::Invalid);
    }
    ::wire::tftp::normalize_name(name)
}

/// One file of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Size, version and SHA-256.
    pub state: FileState,
    /// Modification time seen when the file was hashed.
    pub mtime: SystemTime,
}

/// What a [`Table::refresh`] did to one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing changed (same content, or still absent).
    None,
    /// A new file appeared.
    Added,
    /// The content changed; the version was bumped.
    Modified,
    /// The file is gone.
    Removed,
}

/// The verification table.
#[derive(Debug)]
pub struct Table {
    root: PathBuf,
    entries: HashMap<String, Entry>,
    /// Files with pending changes (written, not yet rehashed): the agent
    /// answers `Unknown` for them rather than vouch for content in flux.
    changing: HashSet<String>,
    /// Global change counter; a file's version is the value it got when it
    /// last changed, so versions never repeat, even across delete + recreate.
    generation: u64,
}

/// Hashes a file (no table lock needed), returning (size, SHA-256, mtime), or `None` if it changed
/// while being read (the caller retries later).
pub fn hash_file(path: &Path) -> io::Result<Option<(u64, [u8; 32], SystemTime)>> {
    let mut f = File::open(path)?;
    let before = f.metadata()?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    let after = fs::metadata(path)?;
    // A concurrent writer moves size or mtime: do not publish a torn hash.
    if size != after.len() || before.modified().ok() != after.modified().ok() {
        return Ok(None);
    }
    Ok(Some((size, h.finalize().into(), after.modified()?)))
}

impl Table {
    /// Scans `root` recursively and hashes every regular file (symlinks to
    /// files are followed; symlinked directories are not, to avoid loops).
    pub fn scan(root: &Path) -> io::Result<Table> {
        let root = root.canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a directory", root.display()),
            ));
        }
        let mut t = Table {
            root,
            entries: HashMap::new(),
            changing: HashSet::new(),
            generation: 0,
        };
        t.scan_dir("")?;
        Ok(t)
    }

    /// The canonical TFTP root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of files in the table.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the table holds no file.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for a normalised relative path.
    pub fn get(&self, rel: &str) -> Option<&Entry> {
        self.entries.get(rel)
    }

    /// Answers "is `sha256` current for `file`?" (`file` as the client sent it).
    pub fn query(&self, file: &str, sha256: &[u8; 32]) -> Answer {
        let Ok(rel) = normalize(file) else {
            return Answer::Unknown;
        };
        if self.changing.contains(&rel) {
            return Answer::Unknown;
        }
        match self.entries.get(&rel) {
            Some(e) if &e.state.sha256 == sha256 => Answer::Current(e.state),
            Some(e) => Answer::Stale(e.state),
            None => Answer::Unknown,
        }
    }

    /// Marks a path as being written: it answers `Unknown` until refreshed.
    pub fn mark_changing(&mut self, rel: &str) {
        self.changing.insert(rel.to_owned());
    }

    /// Converts an absolute path under the root to a table key.
    pub fn relative(&self, abs: &Path) -> Option<String> {
        let rel = abs.strip_prefix(&self.root).ok()?;
        normalize(rel.to_str()?).ok()
    }

    /// Re-reads one path (file or directory, relative to the root) and
    /// updates the table. Returns `Ok(false)` if the file was still being
    /// written and should be retried.
    pub fn refresh(&mut self, rel: &str) -> io::Result<bool> {
        let abs = self.root.join(rel);
        match fs::metadata(&abs) {
            Ok(m) if m.is_file() => {
                self.refresh_file(rel, &abs)?;
                Ok(!self.changing.contains(rel))
            }
            Ok(m) if m.is_dir() => {
                // A directory moved in, or one whose contents we lost track of:
                // drop what was under it and rescan.
                self.remove_prefix(rel);
                self.scan_dir(rel)?;
                Ok(true)
            }
            _ => {
                self.remove(rel);
                Ok(true)
            }
        }
    }

    /// Forgets a path and anything below it (deleted, moved away, or no
    /// longer a readable regular file).
    pub fn remove(&mut self, rel: &str) -> Change {
        self.changing.remove(rel);
        self.remove_prefix(rel);
        if self.entries.remove(rel).is_some() {
            log::info!("{rel}: removed");
            Change::Removed
        } else {
            Change::None
        }
    }

    /// Full rescan, e.g. after the kernel's event queue overflowed.
    pub fn rescan(&mut self) -> io::Result<()> {
        let seen_before: Vec<String> = self.entries.keys().cloned().collect();
        self.changing.clear();
        self.scan_dir("")?;
        for rel in seen_before {
            if !self.root.join(&rel).is_file() {
                self.entries.remove(&rel);
            }
        }
        Ok(())
    }

    fn remove_prefix(&mut self, rel: &str) {
        let prefix = format!("{rel}/");
        self.entries.retain(|k, _| !k.starts_with(&prefix));
        self.changing.retain(|k| !k.starts_with(&prefix));
    }

    fn scan_dir(&mut self, rel: &str) -> io::Result<()> {
        let dir = self.root.join(rel);
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            // Vanished or unreadable mid-scan: nothing to add.
            Err(e) if rel.is_empty() => return Err(e),
            Err(_) => return Ok(()),
        };
        for de in rd.flatten() {
            let Some(name) = de.file_name().to_str().map(str::to_owned) else {
                log::warn!("skipping non-UTF-8 name in {}", dir.display());
                continue;
            };
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let Ok(ft) = de.file_type() else { continue };
            if ft.is_dir() {
                self.scan_dir(&child)?;
            } else if ft.is_file() || (ft.is_symlink() && de.path().is_file()) {
                if let Err(e) = self.refresh_file(&child, &de.path()) {
                    log::warn!("cannot hash {}: {e}", de.path().display());
                }
            }
        }
        Ok(())
    }

    fn refresh_file(&mut self, rel: &str, abs: &Path) -> io::Result<Change> {
        let hashed = hash_file(abs)?;
        Ok(self.apply_hash(rel, hashed))
    }

    /// Records the result of [`hash_file`] for `rel`, computed outside the
    /// table's lock so that queries are not stalled while a large image is
    /// hashed. `None` (torn read) leaves the file marked as changing.
    pub fn apply_hash(&mut self, rel: &str, hashed: Option<(u64, [u8; 32], SystemTime)>) -> Change {
        let Some((size, sha256, mtime)) = hashed else {
            self.changing.insert(rel.to_owned());
            return Change::None;
        };
        self.changing.remove(rel);
        let change = match self.entries.get_mut(rel) {
            Some(e) if e.state.sha256 == sha256 && e.state.size == size => {
                e.mtime = mtime;
                return Change::None;
            }
            Some(_) => Change::Modified,
            None => Change::Added,
        };
        self.generation += 1;
        let state = FileState {
            size,
            version: self.generation,
            sha256,
        };
        log::info!(
            "{rel}: {} size={size} version={}",
            if change == Change::Added {
                "added"
            } else {
                "modified"
            },
            state.version
        );
        self.entries.insert(rel.to_owned(), Entry { state, mtime });
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        assert_eq!(normalize("pxelinux.0").unwrap(), "pxelinux.0");
        assert_eq!(normalize("/pxelinux.0").unwrap(), "pxelinux.0");
        assert_eq!(normalize("//boot/./x").unwrap(), "boot/x");
        assert_eq!(normalize("\\boot\\bcd").unwrap(), "boot/bcd");
        assert_eq!(normalize("a/../../etc/passwd"), Err(PathError::Escapes));
        assert_eq!(normalize(".."), Err(PathError::Escapes));
        assert_eq!(normalize("/"), Err(PathError::Empty));
        assert_eq!(normalize("a\0b"), Err(PathError::Invalid));
        // ".." inside a name is fine.
        assert_eq!(normalize("a..b").unwrap(), "a..b");
    }

    fn sha(b: &[u8]) -> [u8; 32] {
        Sha256::digest(b).into()
    }

    #[test]
    fn scan_query_refresh() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("boot")).unwrap();
        fs::write(dir.path().join("pxelinux.0"), b"nbp").unwrap();
        fs::write(dir.path().join("boot/vmlinuz"), b"kernel").unwrap();
        let mut t = Table::scan(dir.path()).unwrap();
        assert_eq!(t.len(), 2);
        let Answer::Current(s) = t.query("/pxelinux.0", &sha(b"nbp")) else {
            panic!("expected current");
        };
        assert_eq!(s.size, 3);
        assert!(matches!(
            t.query("boot/vmlinuz", &sha(b"old")),
            Answer::Stale(s) if s.sha256 == sha(b"kernel")
        ));
        assert_eq!(t.query("nope", &sha(b"")), Answer::Unknown);
        assert_eq!(t.query("../pxelinux.0", &sha(b"nbp")), Answer::Unknown);

        let v0 = t.get("pxelinux.0").unwrap().state.version;
        fs::write(dir.path().join("pxelinux.0"), b"nbp v2").unwrap();
        t.mark_changing("pxelinux.0");
        assert_eq!(t.query("pxelinux.0", &sha(b"nbp")), Answer::Unknown);
        assert!(t.refresh("pxelinux.0").unwrap());
        let e = t.get("pxelinux.0").unwrap();
        assert!(e.state.version > v0);
        assert_eq!(e.state.sha256, sha(b"nbp v2"));
        // Same content again: no bump.
        let v1 = e.state.version;
        assert!(t.refresh("pxelinux.0").unwrap());
        assert_eq!(t.get("pxelinux.0").unwrap().state.version, v1);

        fs::remove_dir_all(dir.path().join("boot")).unwrap();
        t.refresh("boot").unwrap();
        assert!(t.get("boot/vmlinuz").is_none());
        assert_eq!(t.len(), 1);
    }
}
