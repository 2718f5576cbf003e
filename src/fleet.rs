//! The bridge's side of the fleet beyond the mirror (issue 14 items 2–4),
//! on the slow-path worker: hands the member thread the cache's holdings
//! and the image map's summary when they change, and publishes the files
//! it fetched from the Object Store through the filestore (the writer
//! thread does the disk work: nothing here waits); in addressed mode it
//! starts the fetches the member asks for through the server-side port
//! and tells it what landed in the cache.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bootcache_fleet::doc::{self, ClientSummary, FileBoots, Holding, ImageSummary};
use bootcache_fleet::{MemberHandle, Staged};
use bootcache_serve::endpoint::Landed;
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
    /// Fetches through the server-side port under way for the member: its
    /// tag by file name (the member asks one at a time).
    port_fetches: std::collections::HashMap<String, u64>,
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
            port_fetches: std::collections::HashMap::new(),
        }
    }

    /// Once per pass of the worker: the channels polled, and every
    /// [`PERIOD`] three counters compared. `serve`: the serving endpoint
    /// (fetches through the server-side port); `fetched`: the ends of
    /// those fetches this pass.
    pub(crate) fn poll(
        &mut self,
        now: Instant,
        logic: &mut CacheLogic,
        serve: Option<&mut crate::serve::Serve>,
        fetched: &[(String, Result<Landed, String>)],
    ) {
        self.port_fetch(now, serve, fetched);
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

    /// Starts the fetches the member asks for through the server-side port
    /// and hands it the ends of those under way.
    fn port_fetch(
        &mut self,
        now: Instant,
        mut serve: Option<&mut crate::serve::Serve>,
        fetched: &[(String, Result<Landed, String>)],
    ) {
        while let Some(ask) = self.handle.try_port_fetch() {
            // One fetch per name: an answer already owed for it is owed to
            // the newer ask (the member forgot the older).
            let started = match serve.as_deref_mut() {
                Some(s) => s.fetch(now, &ask.name).map_err(|e| e.to_string()),
                None => Err("no serving endpoint to fetch with".into()),
            };
            match started {
                Ok(()) => {
                    self.port_fetches.insert(ask.name, ask.tag);
                }
                Err(e) => self.handle.port_fetched(ask.tag, Err(e)),
            }
        }
        for (name, result) in fetched {
            if let Some(tag) = self.port_fetches.remove(name) {
                let r = result.clone().map(|l| (l.size, l.sha256));
                self.handle.port_fetched(tag, r);
            }
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

/// Where the member reads a file the Object Store lacks, by TFTP from the
/// origin (issue 14 item 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OriginPath {
    /// Through the server-side DPDK port, from `origin` as `own` (addressed
    /// mode's TFTP client; the file lands in the cache through the fill).
    Port { own: Ipv4Addr, origin: Ipv4Addr },
    /// On a kernel UDP socket of the host to `via` (its management side);
    /// `forced`: `[fleet] tftp_via` chose it.
    Socket { via: Ipv4Addr, forced: bool },
    /// Nowhere: the Object Store only (no origin known).
    Never,
}

impl OriginPath {
    /// `tftp_via` forces the socket; else the port when the bridge owns an
    /// address on the segment (`addressed`: it and its origin); else the
    /// socket to the fleet's `origin`.
    pub(crate) fn choose(
        tftp_via: Option<Ipv4Addr>,
        addressed: Option<(Ipv4Addr, Ipv4Addr)>,
        origin: Option<Ipv4Addr>,
    ) -> OriginPath {
        match (tftp_via, addressed, origin) {
            (Some(via), ..) => OriginPath::Socket { via, forced: true },
            (None, Some((own, origin)), _) => OriginPath::Port { own, origin },
            (None, None, Some(via)) => OriginPath::Socket { via, forced: false },
            (None, None, None) => OriginPath::Never,
        }
    }

    /// The start's log line: which way, and how the operator changes it.
    pub(crate) fn describe(&self) -> String {
        let what = "fleet: a file the Object Store lacks is read by TFTP from";
        match self {
            OriginPath::Port { own, origin } => format!(
                "{what} {origin} through the server-side port, as {own} (addressed mode; `[fleet] tftp_via` would read through the host's own network instead)"
            ),
            OriginPath::Socket { via, forced: true } => format!(
                "{what} {via} through the host's own network (`[fleet] tftp_via`)"
            ),
            OriginPath::Socket { via, forced: false } => format!(
                "{what} {via} through the host's own network: the bridge owns no address on the segment (configure `[addressed]` to read through the server-side port, or `[fleet] tftp_via` to name the origin's management address)"
            ),
            OriginPath::Never => {
                "fleet: a file the Object Store lacks is not read from the origin: no origin known (`[fleet] origin` or `servers`)".into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIA: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
    const OWN: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
    const ORIGIN: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    #[test]
    fn the_port_is_the_default_when_addressed_and_tftp_via_forces_the_socket() {
        let addressed = Some((OWN, ORIGIN));
        assert_eq!(
            OriginPath::choose(None, addressed, Some(ORIGIN)),
            OriginPath::Port {
                own: OWN,
                origin: ORIGIN
            }
        );
        assert_eq!(
            OriginPath::choose(Some(VIA), addressed, Some(ORIGIN)),
            OriginPath::Socket {
                via: VIA,
                forced: true
            }
        );
        assert_eq!(
            OriginPath::choose(None, None, Some(ORIGIN)),
            OriginPath::Socket {
                via: ORIGIN,
                forced: false
            }
        );
        assert_eq!(OriginPath::choose(None, None, None), OriginPath::Never);
        let line = OriginPath::choose(None, None, Some(ORIGIN)).describe();
        assert!(
            line.contains("owns no address") && line.contains("[addressed]"),
            "{line}"
        );
    }
}
