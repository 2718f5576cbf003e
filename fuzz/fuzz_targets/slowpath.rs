//! The slow path's cache logic fed with hostile snooped frames (each
//! prefixed by a two-byte length and a flag byte: side and time step): it
//! never panics, and nothing appears in the cache directory outside its
//! `files/`, `tmp/`, index and image map.
#![no_main]

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use slowpath::{CacheLimits, CacheLogic};

fn cache_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d =
            std::env::temp_dir().join(format!("bootcache-fuzz-slowpath-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let limits = CacheLimits {
        max_transfers: 4,
        max_file_size: 1 << 20,
        quota_bytes: 4 << 20,
        ..CacheLimits::default()
    };
    // The configured server matches the seeds' captures (10.77.0.1).
    let Ok(mut logic) = CacheLogic::new(cache_dir(), limits, vec![Ipv4Addr::new(10, 77, 0, 1)])
    else {
        return;
    };
    let mut now = Instant::now();
    let mut rest = data;
    while let [hi, lo, flags, tail @ ..] = rest {
        let n = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (frame, after) = tail.split_at(n);
        now += Duration::from_millis(u64::from(flags >> 1) * 4);
        logic.handle_frame(now, SystemTime::now(), flags & 1 == 0, frame);
        while logic.poll_filter_update().is_some() {}
        if logic.poll_timeout().is_some_and(|t| t <= now) {
            logic.handle_timeout(now);
        }
        rest = after;
    }
    // The cache's writer thread finishes what it was given (a compaction
    // writes a temporary snapshot beside the index) before the directory
    // is looked at.
    drop(logic);
    for e in std::fs::read_dir(cache_dir()).unwrap().flatten() {
        let name = e.file_name().into_string().unwrap_or_default();
        assert!(
            matches!(
                name.as_str(),
                "files"
                    | "tmp"
                    | "index.json"
                    | "index.journal"
                    | "imagemap.json"
                    | "imagemap.journal"
                    | "index.json.corrupt"
                    | "index.journal.corrupt"
            ),
            "unexpected entry in the cache directory: {name:?}"
        );
    }
});
