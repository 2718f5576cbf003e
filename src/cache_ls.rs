//! `bootcache cache ls`: the filestore and the image map. From a running
//! bridge's control socket when one answers (then with what is in use and
//! the quota), else read from the cache directory (no DPDK, safe while
//! bootcache runs: both files are replaced atomically).

use anyhow::{Context, Result};
use slowpath::imagemap::{escape_name, fmt_time, render_listing, ImageMap};

use crate::cache_ops::{listing, vlan_word};
use crate::cli::CacheLs;

/// Prints the listing.
pub(crate) fn run(ls: &CacheLs) -> Result<()> {
    let dir = ls.dir.resolve()?;
    let mut l = listing(&dir)?;
    l.files.sort_by(|a, b| {
        let (a, b) = (&a.entry, &b.entry);
        (a.server, a.vlan, &a.name).cmp(&(b.server, b.vlan, &b.name))
    });
    if ls.json {
        println!("{}", serde_json::to_string(&l)?);
        return Ok(());
    }
    println!(
        "files in {} ({} files, {} bytes):",
        dir.display(),
        l.files.len(),
        l.used_bytes
    );
    println!(
        "{:<15} {:<9} {:>12}  {:<64}  {:>5}  {:<20}  {:<20}  name",
        "origin", "vlan", "size", "sha256", "seen", "last seen", "last used"
    );
    for f in &l.files {
        let e = &f.entry;
        println!(
            "{:<15} {:<9} {:>12}  {:<64}  {:>5}  {:<20}  {:<20}  {}{}",
            e.server.to_string(),
            vlan_word(e),
            e.size,
            e.sha256.to_hex(),
            e.times_seen,
            fmt_time(e.last_seen),
            fmt_time(e.recency()),
            escape_name(&e.name),
            if f.in_use { "  (in use)" } else { "" }
        );
    }
    let map = ImageMap::load(&dir)
        .with_context(|| format!("reading the image map in {}", dir.display()))?;
    println!();
    print!("{}", render_listing(&map));
    Ok(())
}
