//! `bootcache cache ls`: the filestore and the image map, read from the cache
//! directory (no DPDK, safe while bootcache runs: both files are replaced
//! atomically).

use anyhow::{Context, Result};
use slowpath::filestore::read_index;
use slowpath::imagemap::{escape_name, fmt_time, render_listing, ImageMap};

use crate::cli::CacheLs;

/// Prints the listing.
pub(crate) fn run(ls: &CacheLs) -> Result<()> {
    let dir = ls.dir.resolve()?;
    let mut entries =
        read_index(&dir).with_context(|| format!("reading the filestore in {}", dir.display()))?;
    entries.sort_by(|a, b| (a.server, &a.name).cmp(&(b.server, &b.name)));
    let bytes: u64 = entries.iter().map(|e| e.size).sum();
    println!(
        "files in {} ({} files, {bytes} bytes):",
        dir.display(),
        entries.len()
    );
    println!(
        "{:<15} {:>12}  {:<64}  {:>5}  {:<20}  name",
        "origin", "size", "sha256", "seen", "last seen"
    );
    for e in &entries {
        println!(
            "{:<15} {:>12}  {:<64}  {:>5}  {:<20}  {}",
            e.server.to_string(),
            e.size,
            e.sha256.to_hex(),
            e.times_seen,
            fmt_time(e.last_seen),
            escape_name(&e.name)
        );
    }
    let map = ImageMap::load(&dir)
        .with_context(|| format!("reading the image map in {}", dir.display()))?;
    println!();
    print!("{}", render_listing(&map));
    Ok(())
}
