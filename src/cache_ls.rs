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
    entries.sort_by(|a, b| (a.server, a.vlan, &a.name).cmp(&(b.server, b.vlan, &b.name)));
    let bytes: u64 = entries.iter().map(|e| e.size).sum();
    println!(
        "files in {} ({} files, {bytes} bytes):",
        dir.display(),
        entries.len()
    );
    println!(
        "{:<15} {:<9} {:>12}  {:<64}  {:>5}  {:<20}  name",
        "origin", "vlan", "size", "sha256", "seen", "last seen"
    );
    for e in &entries {
        // Two VLANs may hold two servers at one address: the VLAN tells
        // their files apart ("shared": served on every VLAN).
        let vlan = match (e.shared, e.vlan.outer, e.vlan.inner) {
            (true, ..) => "shared".to_string(),
            (false, 0, 0) => "-".to_string(),
            (false, o, 0) => o.to_string(),
            (false, o, i) => format!("{o}.{i}"),
        };
        println!(
            "{:<15} {:<9} {:>12}  {:<64}  {:>5}  {:<20}  {}",
            e.server.to_string(),
            vlan,
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
