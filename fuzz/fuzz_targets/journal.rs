//! The cache's journals read back from hostile bytes: the input is a
//! journal as a crash, a full disk or an attacker with write access to the
//! cache directory might leave it. The first byte picks where it goes.
//!
//! Checks: decoding never panics and allocates in proportion to the input;
//! the part it keeps ends at a line end and is all it kept (a partial last
//! line is torn, never applied); what it decodes re-encodes into lines that
//! decode back equal; and, when the first byte says so, the input as
//! `index.journal` or `imagemap.journal` of a cache directory (with a
//! snapshot that names one real file) opens: `Filestore::open` and
//! `ImageMap::load` never panic, the entry whose file is whole survives
//! whatever the journal says about others, and nothing outside the cache
//! directory is touched (paths come from hashes only).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use slowpath::filestore::{Filestore, IndexRecord};
use slowpath::imagemap::{ClientOp, IMAGEMAP_JOURNAL};
use slowpath::journal::{decode, encode, Decoded};
use slowpath::ImageMap;

#[path = "alloc_cap.rs"]
mod alloc_cap;
#[path = "scratch_dir.rs"]
mod scratch_dir;

fn cache_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| scratch_dir::scratch_dir("journal"))
}

/// The decoding checks for records of type `$t` (a macro: the record
/// types' serde bounds without a serde dependency here).
macro_rules! check {
    ($t:ty, $data:expr) => {{
        let data: &[u8] = $data;
        let d: Decoded<$t> = alloc_cap::capped(64 * data.len() + 4096, || decode(data));
        let kept = usize::try_from(d.valid_len).expect("fits");
        assert!(kept <= data.len());
        assert!(
            kept == 0 || data[kept - 1] == b'\n',
            "kept part ends mid-line"
        );
        assert_eq!(d.torn, kept < data.len(), "a partial last line is torn");
        let lines = data[..kept].iter().filter(|&&b| b == b'\n').count() as u64;
        assert_eq!(d.records.len() as u64 + d.bad, lines, "every line counted");
        let mut again = Vec::new();
        for r in &d.records {
            encode(r, &mut again);
        }
        let back: Decoded<$t> = decode(&again);
        assert_eq!(back.records, d.records, "records change through encode");
        assert!(back.bad == 0 && !back.torn);
    }};
}

fuzz_target!(|data: &[u8]| {
    let [how, journal @ ..] = data else { return };
    check!(IndexRecord, journal);
    check!(ClientOp, journal);
    if how & 1 == 0 {
        return;
    }
    let dir = cache_dir();
    // A cache with one real entry, then the input as a journal.
    let mut store = Filestore::open(dir).expect("opening an empty cache");
    drop(store);
    let (name, content) = ("real.efi", b"real bytes".as_slice());
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let temp = dir.join("tmp").join("t");
    let mut r = slowpath::reassembly::Reassembly::create(temp, 512, None, u64::MAX).unwrap();
    r.insert(1, content).unwrap();
    let done = r.finish().unwrap();
    store = Filestore::open(dir).unwrap();
    store
        .publish(
            std::time::SystemTime::now(),
            (
                wire::frame::VlanScope::UNTAGGED,
                std::net::Ipv4Addr::new(10, 0, 0, 1),
            ),
            name,
            done.file,
            done.size,
            done.sha256,
        )
        .unwrap();
    store.sync();
    drop(store);
    // Open folded the first journal away: the entry is in the snapshot.
    drop(Filestore::open(dir).unwrap());
    let target = if how & 2 == 0 {
        "index.journal"
    } else {
        IMAGEMAP_JOURNAL
    };
    std::fs::write(dir.join(target), journal).unwrap();
    let store = Filestore::open(dir).expect("a journal never makes the cache unopenable");
    let e = store
        .lookup(
            wire::frame::VlanScope::UNTAGGED,
            std::net::Ipv4Addr::new(10, 0, 0, 1),
            name,
        )
        .filter(|e| e.sha256.0 == done.sha256);
    if let Some(e) = e {
        assert_eq!(std::fs::read(store.path_of(e)).unwrap(), content);
    }
    for e in store.entries() {
        assert!(store.path_of(e).starts_with(dir.join("files")));
        assert_eq!(std::fs::metadata(store.path_of(e)).unwrap().len(), e.size);
    }
    drop(store);
    let _ = ImageMap::load(dir);
    std::fs::remove_dir_all(dir).expect("removing the cache directory");
});
