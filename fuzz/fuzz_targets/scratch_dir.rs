// Shared by the targets that write files (`#[path]`-included): a directory
// of this process's own, on tmpfs when there is one (the cache syncs every
// file it writes; on tmpfs that costs nothing).

use std::path::PathBuf;

/// `bootcache-fuzz-<what>-<pid>` under /dev/shm, or the temp dir.
pub fn scratch_dir(what: &str) -> PathBuf {
    let base = PathBuf::from("/dev/shm");
    let base = if base.is_dir() {
        base
    } else {
        std::env::temp_dir()
    };
    base.join(format!("bootcache-fuzz-{what}-{}", std::process::id()))
}
