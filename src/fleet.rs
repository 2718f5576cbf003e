//! The bridge's side of the fleet beyond the mirror (issue 14 items 2–4),
//! on the slow-path worker: hands the member thread the cache's holdings
//! and the image map's summary when they change, and publishes the files
//! it fetched from the Object Store through the filestore (the writer
//! thread does the disk work: nothing here waits).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bootcache_fleet::doc::{self, ClientSummary, FileBoots, Holding, ImageSummary};
use bootcache_fleet::{MemberHandle, Staged};
use slowpath::reassembly::TempFile;
use slowpath::CacheLogic;
use wire::frame::VlanScope;

/// How often the cache and the image map are checked for changes.
const PERIOD: Duration = Duration::from_millis(500);

/// The worker's link to the member thread.
pub(crate) struct Member {
    handle: MemberHandle,
    /// Pre-staged files (nobody's copy to replace) are cached as from here.
    origin: Option<Ipv4Addr>,
    next: Instant,
    /// What the holdings were last built from, and how many more builds
    /// to do (a publish lands between the writer's record and the
    /// worker's poll: one more build catches it).
    cache_seen: (usize, usize, u64),
    rebuild: u8,
    image_seen: (u64, u64, u64),
    /// Staged files published, and refused by the cache.
    pub(crate) published: u64,
    /// Bytes of the staged files published (from the Object Store).
    pub(crate) published_bytes: u64,
    pub(crate) refused: u64,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The VLAN column of `bootcache cache ls`.
fn scope_name(e: &slowpath::Entry) -> String {
    match (e.shared, e.vlan.outer, e.vlan.inner) {
        (true, ..) => "shared".into(),
        (false, 0, 0) => "-".into(),
        (false, o, 0) => o.to_string(),
        (false, o, i) => format!("{o}.{i}"),
    }
}

impl Member {
    pub(crate) fn new(handle: MemberHandle, origin: Option<Ipv4Addr>) -> Member {
        Member {
            handle,
            origin,
            next: Instant::now(),
            cache_seen: (usize::MAX, 0, 0),
            rebuild: 0,
            image_seen: (u64::MAX, 0, 0),
            published: 0,
            published_bytes: 0,
            refused: 0,
        }
    }

    /// Once per pass of the worker: a channel poll, and every [`PERIOD`]
    /// three counters compared.
    pub(crate) fn poll(&mut self, now: Instant, logic: &mut CacheLogic) {
        while let Some(s) = self.handle.try_staged() {
            let (tag, size) = (s.tag, s.size);
            let r = self.publish(logic, s);
            match &r {
                Ok(()) => {
                    self.published += 1;
                    self.published_bytes += size;
                }
                Err(_) => self.refused += 1,
            }
            self.handle.staged_result(tag, r);
        }
        if now < self.next {
            return;
        }
        self.next = now + PERIOD;
        let fs = logic.filestore();
        let seen = (fs.len(), fs.verified_count(), fs.persist_counters().records);
        if seen != self.cache_seen {
            self.cache_seen = seen;
            self.rebuild = 2;
        }
        if self.rebuild > 0 {
            self.rebuild -= 1;
            let holdings: Vec<Holding> = fs
                .entries()
                .filter(|e| fs.is_verified(e))
                .map(|e| Holding {
                    name: e.name.clone(),
                    server: e.server.to_string(),
                    vlan: scope_name(e),
                    size: e.size,
                    sha256: e.sha256.to_hex(),
                    verified_s: secs(e.last_seen),
                })
                .collect();
            self.handle.holdings(holdings);
        }
        let c = logic.image_map().counters();
        let seen = (c.clients, c.files_recorded, c.messages_seen);
        if seen != self.image_seen {
            self.image_seen = seen;
            self.handle.image_map(summary(logic));
        }
    }

    /// Publishes a fetched file: in place of the copy it refreshes (its
    /// origin and VLAN scope), else as from the configured origin,
    /// untagged.
    fn publish(&mut self, logic: &mut CacheLogic, s: Staged) -> Result<(), String> {
        let temp = TempFile::adopt(s.path);
        let fs = logic.filestore_mut();
        let target = fs
            .entries()
            .find(|e| e.name == s.name)
            .map(|e| (e.vlan, e.server))
            .or(self.origin.map(|o| (VlanScope::UNTAGGED, o)))
            .ok_or("no boot server to cache it as from ([fleet] origin or servers)")?;
        fs.publish(SystemTime::now(), target, &s.name, temp, s.size, s.sha256)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The values of `stats::FLEET_MEMBER`, in its order.
    pub(crate) fn values(&self) -> [u64; 16] {
        let c = self.handle.counters();
        let d = c.directives;
        [
            u64::from(c.connected),
            c.presence,
            c.holding_puts,
            c.holding_deletes,
            d.accepted,
            d.ignored,
            d.refused,
            d.fetched,
            d.held,
            d.fetch_errors,
            d.failed,
            self.published,
            self.refused,
            c.bad_signature,
            self.published_bytes,
            d.from_origin,
        ]
    }
}

/// The image map, summarised for the fleet (bounded: the most recent
/// clients, the most loaded files).
fn summary(logic: &CacheLogic) -> ImageSummary {
    let map = logic.image_map();
    let mut files: std::collections::HashMap<&str, FileBoots> = std::collections::HashMap::new();
    let mut clients: Vec<&slowpath::imagemap::ClientRecord> = map.clients().collect();
    for c in &clients {
        for f in &c.files {
            let e = files.entry(f.name.as_str()).or_insert_with(|| FileBoots {
                name: f.name.clone(),
                ..FileBoots::default()
            });
            e.clients += 1;
            if f.served_from == slowpath::imagemap::ServedFrom::Cache {
                e.from_cache += 1;
            }
        }
    }
    let mut files: Vec<FileBoots> = files.into_values().collect();
    files.sort_by(|a, b| b.clients.cmp(&a.clients).then_with(|| a.name.cmp(&b.name)));
    files.truncate(doc::MAX_LISTED_FILES);
    clients.sort_by_key(|c| std::cmp::Reverse(c.last_seen));
    let recent = clients
        .iter()
        .take(doc::MAX_LISTED_CLIENTS)
        .map(|c| ClientSummary {
            mac: c
                .mac
                .map_or_else(|| "-".into(), |m| slowpath::imagemap::fmt_mac(&m)),
            ip: c.ip.map(|i| i.to_string()),
            arch: c.arch,
            nbp: c.nbp().map(|b| b.file.clone()),
            files: c.files.iter().take(16).map(|f| f.name.clone()).collect(),
            last_seen_s: secs(c.last_seen),
        })
        .collect();
    ImageSummary {
        clients: clients.len() as u64,
        files,
        recent,
    }
}
