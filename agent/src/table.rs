//! The boot-image verification table (patent figure 8): every regular file
//! under the TFTP root → size, SHA-256, version, mtime.
//!
//! Rebuilt by a scan at start and kept current by [`crate::watch`]; persisted
//! nowhere, so versions restart at 1 with the agent. The cache compares
//! SHA-256 values, never versions across restarts.
//!
//! Symbolic links are what the TFTP server serves through them: a link to
//! a regular file is hashed as its target's content, and the table keeps
//! every path on the link's chain (each link and the final file), so a
//! change to any of them rehashes the link ([`Table::links_through`]). A
//! link whose final target lies outside the root is refused (answered
//! `Unknown`, counted in [`Table::outside_root`]) unless the table was made
//! with `follow_outside`: dnsmasq refuses such links, and tftpd-hpa
//! `--secure` (Debian's default) resolves them inside its chroot, not where
//! the agent would look. Links to directories are not followed (loops);
//! names through them answer `Unknown`, so the cache asks the origin.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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

/// Most links followed from one name (the kernel's own limit is 40).
const MAX_HOPS: usize = 40;

/// What a path under the root is, for the table. Found without the table
/// (no lock held while the file system is asked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A regular file, directly or through links: hash `path`. `hops` is the
    /// link chain (every link and the final file, absolute, their
    /// directories canonical), empty for a plain file.
    File {
        /// The file to hash (the final target, for a link).
        path: PathBuf,
        /// The paths whose change changes what the name serves.
        hops: Vec<PathBuf>,
    },
    /// A directory (not a link to one).
    Dir,
    /// A link whose final target lies outside the root: refused.
    Outside,
    /// Gone, a dangling or looping link, a link to a directory, or neither
    /// file nor directory.
    Other,
}

/// Resolves `rel` under `root` (canonical) as a TFTP server opening it would.
pub fn resolve(root: &Path, follow_outside: bool, rel: &str) -> Resolved {
    let abs = root.join(rel);
    let Ok(meta) = fs::symlink_metadata(&abs) else {
        return Resolved::Other;
    };
    if meta.is_file() {
        return Resolved::File {
            path: abs,
            hops: Vec::new(),
        };
    }
    if meta.is_dir() {
        return Resolved::Dir;
    }
    if !meta.file_type().is_symlink() {
        return Resolved::Other;
    }
    let Some(hops) = link_chain(&abs) else {
        return Resolved::Other;
    };
    let target = hops.last().expect("a chain ends in its target").clone();
    if !fs::metadata(&target).is_ok_and(|m| m.is_file()) {
        return Resolved::Other;
    }
    if !follow_outside && !target.starts_with(root) {
        return Resolved::Outside;
    }
    Resolved::File { path: target, hops }
}

/// The paths a link passes through, ending in its final target; `None` for
/// a dangling link or a loop.
fn link_chain(link: &Path) -> Option<Vec<PathBuf>> {
    let mut hops = Vec::new();
    let mut cur = link.to_path_buf();
    for i in 0..MAX_HOPS {
        let m = fs::symlink_metadata(&cur).ok()?;
        // The link itself is not a hop: its own events name it.
        if i > 0 {
            hops.push(cur.clone());
        }
        if !m.file_type().is_symlink() {
            return Some(hops);
        }
        let next = cur.parent()?.join(fs::read_link(&cur).ok()?);
        // The directory canonical, the last component as is: the path
        // inotify reports for a change of that very entry.
        let dir = next.parent()?.canonicalize().ok()?;
        cur = dir.join(next.file_name()?);
    }
    None
}

/// The verification table.
#[derive(Debug)]
pub struct Table {
    root: PathBuf,
    follow_outside: bool,
    entries: HashMap<String, Entry>,
    /// Files with pending changes (written, not yet rehashed): the agent
    /// answers `Unknown` for them rather than vouch for content in flux.
    changing: HashSet<String>,
    /// Link name → the paths its content depends on ([`Resolved::File`]).
    links: HashMap<String, Vec<PathBuf>>,
    /// The reverse: a path → the links through it. Ordered, so that all
    /// the paths below a directory are one range.
    through: BTreeMap<PathBuf, HashSet<String>>,
    /// Links refused because they lead outside the root.
    outside: HashSet<String>,
    /// Global change counter, shared with the tables a rescan builds; a
    /// file's version is the value it got when it last changed, so versions
    /// never repeat, even across delete + recreate or a rescan.
    generation: Arc<AtomicU64>,
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
    /// Scans `root` recursively and hashes every regular file and every
    /// link to one inside the root (symlinked directories are not
    /// followed, to avoid loops).
    pub fn scan(root: &Path) -> io::Result<Table> {
        Table::scan_with(root, false)
    }

    /// [`Table::scan`]; `follow_outside` also follows links whose target
    /// lies outside the root (for a TFTP server that does, outside a chroot).
    pub fn scan_with(root: &Path, follow_outside: bool) -> io::Result<Table> {
        let root = root.canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a directory", root.display()),
            ));
        }
        let mut t = Table {
            root,
            follow_outside,
            entries: HashMap::new(),
            changing: HashSet::new(),
            links: HashMap::new(),
            through: BTreeMap::new(),
            outside: HashSet::new(),
            generation: Arc::new(AtomicU64::new(0)),
        };
        t.scan_dir("", &|_| None)?;
        Ok(t)
    }

    /// An empty table of the same root and settings, drawing versions from
    /// the same counter: what a rescan (or a directory scan) fills without
    /// holding the live table's lock.
    pub fn fresh(&self) -> Table {
        Table {
            root: self.root.clone(),
            follow_outside: self.follow_outside,
            entries: HashMap::new(),
            changing: HashSet::new(),
            links: HashMap::new(),
            through: BTreeMap::new(),
            outside: HashSet::new(),
            generation: Arc::clone(&self.generation),
        }
    }

    /// Fills a [`Table::fresh`] table with the files under `rel` (all of
    /// the root for `""`). `prior(rel)` is what the live table holds: a file
    /// whose size and hash are unchanged keeps its version.
    pub fn scan_under(
        &mut self,
        rel: &str,
        prior: &dyn Fn(&str) -> Option<FileState>,
    ) -> io::Result<()> {
        self.scan_dir(rel, prior)
    }

    /// Takes what a rescan of the whole root found. Paths being written
    /// stay `Unknown` until the watcher rehashes them.
    pub fn replace_with(&mut self, scanned: Table) {
        let changing = std::mem::take(&mut self.changing);
        *self = scanned;
        self.changing = changing;
    }

    /// Takes what a scan of the directory `rel` found ([`Table::scan_under`]
    /// on a fresh table), replacing what was known below it.
    pub fn merge_dir(&mut self, rel: &str, scanned: Table) {
        self.remove_prefix(rel);
        for (k, e) in scanned.entries {
            self.entries.insert(k, e);
        }
        for (k, hops) in scanned.links {
            self.set_link(&k, Some(hops));
        }
        self.outside.extend(scanned.outside);
    }

    /// The canonical TFTP root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether links leading outside the root are followed.
    pub fn follow_outside(&self) -> bool {
        self.follow_outside
    }

    /// Number of files in the table.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the table holds no file.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Links in the table (each also counted by [`Table::len`]).
    pub fn links(&self) -> usize {
        self.links.len()
    }

    /// Links refused because their target lies outside the root.
    pub fn outside_root(&self) -> usize {
        self.outside.len()
    }

    /// The entry for a normalised relative path.
    pub fn get(&self, rel: &str) -> Option<&Entry> {
        self.entries.get(rel)
    }

    /// Every file of the table, with whether it is being written (what
    /// the fleet publishes: a file being written is vouched for by nobody).
    /// Paths being written that were never hashed come too, with `None`.
    pub fn files(&self) -> impl Iterator<Item = (&str, Option<&Entry>, bool)> {
        let hashed = self
            .entries
            .iter()
            .map(|(k, e)| (k.as_str(), Some(e), self.changing.contains(k)));
        let new = self
            .changing
            .iter()
            .filter(|k| !self.entries.contains_key(*k))
            .map(|k| (k.as_str(), None, true));
        hashed.chain(new)
    }

    /// The links whose content depends on the absolute path `abs` (it is
    /// one of their hops), or on anything below it.
    pub fn links_through(&self, abs: &Path) -> Vec<String> {
        // The path itself, then (a directory on the way renamed or
        // removed: one event for all below it) its descendants, which
        // follow it in the components' order.
        let mut out: Vec<String> = self
            .through
            .range(abs.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(abs))
            .flat_map(|(_, links)| links.iter().cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The directories outside the root that hold a hop of a followed link:
    /// the watcher watches them too.
    pub fn outside_dirs(&self) -> HashSet<PathBuf> {
        self.through
            .keys()
            .filter(|p| !p.starts_with(&self.root))
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect()
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

    /// Re-reads one path (file, link or directory, relative to the root)
    /// and updates the table, hashing under `&mut self` (the watcher hashes
    /// without the lock instead: [`resolve`], [`hash_file`], then
    /// [`Table::apply`]). Returns `Ok(false)` if the file was still being
    /// written and should be retried.
    pub fn refresh(&mut self, rel: &str) -> io::Result<bool> {
        match resolve(&self.root, self.follow_outside, rel) {
            Resolved::File { path, hops } => {
                let hashed = hash_file(&path)?;
                self.apply(rel, hops, hashed);
                Ok(!self.changing.contains(rel))
            }
            Resolved::Dir => {
                // A directory moved in, or one whose contents we lost track of:
                // drop what was under it and rescan.
                let mut sub = self.fresh();
                sub.scan_dir(rel, &|k| self.entries.get(k).map(|e| e.state))?;
                self.merge_dir(rel, sub);
                Ok(true)
            }
            Resolved::Outside => {
                self.refuse_outside(rel);
                Ok(true)
            }
            Resolved::Other => {
                self.remove(rel);
                Ok(true)
            }
        }
    }

    /// Forgets `rel` (and anything below it) and counts it as a link that
    /// leads outside the root.
    pub fn refuse_outside(&mut self, rel: &str) {
        // Counted ([`Table::outside_root`]); the watcher warns of new ones.
        log::debug!("{rel}: link leads outside the root: refused (answered unknown)");
        self.remove(rel);
        self.outside.insert(rel.to_owned());
    }

    /// Forgets a path and anything below it (deleted, moved away, or no
    /// longer a readable regular file).
    pub fn remove(&mut self, rel: &str) -> Change {
        self.changing.remove(rel);
        self.remove_prefix(rel);
        self.set_link(rel, None);
        self.outside.remove(rel);
        if self.entries.remove(rel).is_some() {
            log::info!("{rel}: removed");
            Change::Removed
        } else {
            Change::None
        }
    }

    fn remove_prefix(&mut self, rel: &str) {
        let prefix = format!("{rel}/");
        self.entries.retain(|k, _| !k.starts_with(&prefix));
        self.changing.retain(|k| !k.starts_with(&prefix));
        self.outside.retain(|k| !k.starts_with(&prefix));
        let gone: Vec<String> = self
            .links
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        for k in gone {
            self.set_link(&k, None);
        }
    }

    /// Records (or forgets, with `None`) the hops of link `rel`.
    fn set_link(&mut self, rel: &str, hops: Option<Vec<PathBuf>>) {
        if let Some(old) = self.links.remove(rel) {
            for p in old {
                if let Some(s) = self.through.get_mut(&p) {
                    s.remove(rel);
                    if s.is_empty() {
                        self.through.remove(&p);
                    }
                }
            }
        }
        if let Some(hops) = hops.filter(|h| !h.is_empty()) {
            for p in &hops {
                self.through
                    .entry(p.clone())
                    .or_default()
                    .insert(rel.to_owned());
            }
            self.links.insert(rel.to_owned(), hops);
        }
    }

    fn scan_dir(&mut self, rel: &str, prior: &dyn Fn(&str) -> Option<FileState>) -> io::Result<()> {
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
            match resolve(&self.root, self.follow_outside, &child) {
                Resolved::Dir => self.scan_dir(&child, prior)?,
                Resolved::File { path, hops } => match hash_file(&path) {
                    Ok(hashed) => {
                        self.apply_with_prior(&child, hops, hashed, prior(&child));
                    }
                    Err(e) => log::warn!("cannot hash {}: {e}", path.display()),
                },
                Resolved::Outside => self.refuse_outside(&child),
                Resolved::Other => {}
            }
        }
        Ok(())
    }

    /// Records the result of [`hash_file`] for `rel` (with the link chain
    /// [`resolve`] found, empty for a plain file), computed outside the
    /// table's lock so that queries are not stalled while a large image is
    /// hashed. `None` (torn read) leaves the file marked as changing.
    pub fn apply(
        &mut self,
        rel: &str,
        hops: Vec<PathBuf>,
        hashed: Option<(u64, [u8; 32], SystemTime)>,
    ) -> Change {
        let prior = self.entries.get(rel).map(|e| e.state);
        self.apply_with_prior(rel, hops, hashed, prior)
    }

    fn apply_with_prior(
        &mut self,
        rel: &str,
        hops: Vec<PathBuf>,
        hashed: Option<(u64, [u8; 32], SystemTime)>,
        prior: Option<FileState>,
    ) -> Change {
        self.outside.remove(rel);
        self.set_link(rel, Some(hops));
        let Some((size, sha256, mtime)) = hashed else {
            self.changing.insert(rel.to_owned());
            return Change::None;
        };
        self.changing.remove(rel);
        let version = match prior {
            Some(p) if p.sha256 == sha256 && p.size == size => {
                if let Some(e) = self.entries.get_mut(rel) {
                    e.mtime = mtime;
                    return Change::None;
                }
                // A rescan's table: same content, same version.
                self.entries
                    .insert(rel.to_owned(), Entry { state: p, mtime });
                return Change::None;
            }
            _ => self.generation.fetch_add(1, Ordering::Relaxed) + 1,
        };
        let change = if prior.is_some() {
            Change::Modified
        } else {
            Change::Added
        };
        let state = FileState {
            size,
            version,
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
    /// Links are served as what they point to: hashed as their final
    /// target, with every hop on the way remembered; links leaving the
    /// root, dangling links and links to directories answer unknown.
    #[test]
    fn links_hash_their_target_and_know_their_chain() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let r = dir.path();
        fs::create_dir(r.join("images")).unwrap();
        fs::write(r.join("images/vmlinuz-1"), b"kernel one").unwrap();
        symlink("images/vmlinuz-1", r.join("vmlinuz")).unwrap();
        symlink("vmlinuz", r.join("current")).unwrap(); // a link to a link
        fs::write(outside.path().join("x"), b"outside").unwrap();
        symlink(outside.path().join("x"), r.join("out")).unwrap();
        symlink("nowhere", r.join("dangling")).unwrap();
        symlink("images", r.join("imgdir")).unwrap();
        let t = Table::scan(r).unwrap();
        let root = t.root().to_path_buf();
        assert!(matches!(
            t.query("vmlinuz", &sha(b"kernel one")),
            Answer::Current(_)
        ));
        assert!(matches!(
            t.query("current", &sha(b"kernel one")),
            Answer::Current(_)
        ));
        assert_eq!(t.query("out", &sha(b"outside")), Answer::Unknown);
        assert_eq!(t.query("dangling", &sha(b"")), Answer::Unknown);
        assert_eq!(
            t.query("imgdir/vmlinuz-1", &sha(b"kernel one")),
            Answer::Unknown
        );
        assert_eq!((t.len(), t.links(), t.outside_root()), (3, 2, 1));
        // The target's change concerns both links; the middle link's, one.
        assert_eq!(
            t.links_through(&root.join("images/vmlinuz-1")),
            vec!["current".to_string(), "vmlinuz".to_string()]
        );
        assert_eq!(
            t.links_through(&root.join("vmlinuz")),
            vec!["current".to_string()]
        );
        // A directory on the way, renamed: everything through it.
        assert_eq!(t.links_through(&root.join("images")).len(), 2);
        assert!(t.outside_dirs().is_empty());

        // Followed on request; its directory is then one to watch.
        let t = Table::scan_with(r, true).unwrap();
        assert!(matches!(
            t.query("out", &sha(b"outside")),
            Answer::Current(_)
        ));
        assert_eq!(t.outside_root(), 0);
        let outside_dir = outside.path().canonicalize().unwrap();
        assert!(t.outside_dirs().contains(&outside_dir));

        // Retargeted and refreshed: the new content, the new chain.
        let mut t = Table::scan(r).unwrap();
        fs::write(r.join("images/vmlinuz-2"), b"kernel two").unwrap();
        fs::remove_file(r.join("vmlinuz")).unwrap();
        symlink("images/vmlinuz-2", r.join("vmlinuz")).unwrap();
        assert!(t.refresh("vmlinuz").unwrap());
        assert!(matches!(
            t.query("vmlinuz", &sha(b"kernel one")),
            Answer::Stale(s) if s.sha256 == sha(b"kernel two")
        ));
        assert_eq!(
            t.links_through(&root.join("images/vmlinuz-1")),
            vec!["current".to_string()]
        );
        // Removed: its hops are forgotten too.
        t.remove("current");
        assert!(t.links_through(&root.join("images/vmlinuz-1")).is_empty());
        assert_eq!(t.links(), 1);
    }

    /// A rescan fills a fresh table without the live one's lock; swapped
    /// in, unchanged files keep their versions, changed ones get new ones
    /// (never a version seen before), and paths being written stay unknown.
    #[test]
    fn a_rescan_table_keeps_versions_and_pending_writes() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("same"), b"same").unwrap();
        fs::write(dir.path().join("changed"), b"old").unwrap();
        fs::write(dir.path().join("busy"), b"busy").unwrap();
        let mut live = Table::scan(dir.path()).unwrap();
        let version = |t: &Table, f: &str| t.get(f).unwrap().state.version;
        let (v_same, v_changed) = (version(&live, "same"), version(&live, "changed"));
        let highest = v_same.max(v_changed).max(version(&live, "busy"));
        fs::write(dir.path().join("changed"), b"new").unwrap();
        fs::write(dir.path().join("added"), b"added").unwrap();
        live.mark_changing("busy");

        let mut fresh = live.fresh();
        fresh
            .scan_under("", &|rel| live.get(rel).map(|e| e.state))
            .unwrap();
        live.replace_with(fresh);
        assert_eq!(live.len(), 4);
        assert_eq!(version(&live, "same"), v_same);
        assert!(version(&live, "changed") > highest);
        assert!(version(&live, "added") > highest);
        assert_ne!(version(&live, "added"), version(&live, "changed"));
        assert_eq!(live.query("busy", &sha(b"busy")), Answer::Unknown);
        assert!(matches!(
            live.query("same", &sha(b"same")),
            Answer::Current(_)
        ));
    }
}
