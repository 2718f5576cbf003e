//! Read-only memory-mapped files, for serving cached files without copying
//! them into buffers first. (Mapping is `unsafe` in memmap2, so it lives
//! here with the rest of bootcache's `unsafe`.)

use std::fs::File;
use std::path::Path;

/// A whole file mapped read-only; an empty file maps to an empty slice.
#[derive(Debug)]
pub struct MappedFile {
    map: Option<memmap2::Mmap>,
}

impl MappedFile {
    /// Maps `path` read-only.
    ///
    /// Only for files nobody truncates or rewrites while they are mapped:
    /// bootcache's filestore publishes a file once (temp file, fsync,
    /// rename) and replaces it only under a new name.
    pub fn open(path: &Path) -> std::io::Result<MappedFile> {
        let file = File::open(path)?;
        if file.metadata()?.len() == 0 {
            return Ok(MappedFile { map: None });
        }
        // SAFETY: the mapping is read-only and the filestore never modifies
        // or truncates a published file in place (see above), so the bytes
        // behind the slice cannot change or vanish while it is mapped; an
        // unlinked file stays mapped until dropped.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(MappedFile { map: Some(map) })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_a_file_and_an_empty_one() {
        let dir = std::env::temp_dir().join(format!("dpdk-mapped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(MappedFile::open(&p).unwrap().bytes(), b"hello");
        std::fs::write(&p, b"").unwrap();
        assert_eq!(MappedFile::open(&p).unwrap().bytes(), b"");
        assert!(MappedFile::open(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
