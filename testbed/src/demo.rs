//! What the demo binaries (`src/bin/bootcache-*-demo.rs`) share: their
//! `main`, and the picture of a run: bytes per second from the origin and
//! from the cache over time, with the run's phases (the boots, the reads)
//! shaded and labelled. The picture is drawn from the bridge's own
//! statistics (`--stats-json`, one object per `--stats-interval`), not from
//! the text line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use bootcache_metrics::Reader;

use crate::netns;
use crate::plot::{self, Band, Chart};

/// Runs a demo: namespaces, links and processes are removed on Ctrl-C and
/// SIGTERM; an error is one `demo:` line and exit status 1.
pub fn main(run: impl FnOnce() -> Result<()>) -> ExitCode {
    netns::cleanup_on_signals();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Where a demo writes its picture: `out`, or `demo/` beside the demo's
/// binary (e.g. target/release/demo).
pub fn out_dir(out: Option<&Path>) -> Result<PathBuf> {
    Ok(match out {
        Some(d) => d.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow::anyhow!("the demo binary has no directory"))?
            .join("demo"),
    })
}

/// Milliseconds since the Unix epoch (the clock of the statistics' `unix_ms`).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A span of a demo's run (a boot, a read), in `unix_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// What happened, e.g. "boot 1 (cold)".
    pub label: String,
    /// When it started.
    pub from_ms: u64,
    /// When it ended.
    pub to_ms: u64,
}

/// The counters the picture plots, as the bridge reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Sample {
    unix_ms: u64,
    /// Bytes the driver received on the server-side port: what the origin
    /// sent across the bridge (wire bytes, DHCP included).
    origin: u64,
    /// Bytes of pushed files published into the cache (a fleet's bridge:
    /// from the Object Store, over the engine's connection, not a port),
    /// counted as each file is published; 0 outside a fleet.
    store: u64,
    /// Bytes the client-side port sent beyond what the server-side port
    /// received: the frames serving built from the cache (wire bytes, as
    /// `origin`; the serving counters count file bytes only as a
    /// session ends, too late for a rate).
    cache: u64,
}

impl Sample {
    /// One line of a bridge's stdout, if it is a statistics object.
    fn parse(line: &str) -> Option<Sample> {
        let r = Reader::parse(line)?;
        let top: serde_json::Value = serde_json::from_str(line).ok()?;
        Some(Sample {
            unix_ms: top.get("unix_ms")?.as_u64()?,
            origin: r.get("server", "rx_bytes")?,
            store: r.get("fleet_member", "published_bytes").unwrap_or(0),
            cache: r
                .get("client", "tx_bytes")?
                .saturating_sub(r.get("server", "rx_bytes")?),
        })
    }
}

/// (seconds, bytes per second) points of a series.
type Points = Vec<(f64, f64)>;

/// One bridge's samples of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    samples: Vec<Sample>,
}

impl Timeline {
    /// The statistics objects of a bridge's stdout (`bootcache.out`);
    /// objects without the ports' driver bytes are left out.
    pub fn parse(stdout: &str) -> Timeline {
        Timeline {
            samples: stdout.lines().filter_map(Sample::parse).collect(),
        }
    }

    /// [`Timeline::parse`] of a file.
    pub fn read(path: &Path) -> Result<Timeline> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        Ok(Timeline::parse(&text))
    }

    /// Samples read.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether a sample at or after `unix_ms` was read (the one that
    /// closes a phase ending then).
    pub fn covers(&self, unix_ms: u64) -> bool {
        self.samples.last().is_some_and(|s| s.unix_ms >= unix_ms)
    }

    /// [`Timeline::read`] once it [`covers`](Timeline::covers) `unix_ms`
    /// (a statistics object a second: within a few), or as it is after
    /// `timeout`. A demo waits so before its next phase: then no interval
    /// between samples holds two phases, and each phase's bytes are its own.
    pub fn read_past(path: &Path, unix_ms: u64, timeout: std::time::Duration) -> Result<Timeline> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let t = Timeline::read(path)?;
            if t.covers(unix_ms) || std::time::Instant::now() >= deadline {
                return Ok(t);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Whether nothing was sampled.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Bytes (origin, cache) counted from the last sample at or before a
    /// phase's start to the first at or after its end (or the last one):
    /// all of the phase, and at most an interval either side (another
    /// phase's too if it shares that interval: see [`Timeline::read_past`]).
    pub fn bytes_in(&self, p: &Phase) -> (u64, u64) {
        let s = self.sources_in(p);
        (s.origin, s.cache)
    }

    /// [`Timeline::bytes_in`] with the Object Store's bytes too.
    pub fn sources_in(&self, p: &Phase) -> Sources {
        let first = self.samples.first().copied().unwrap_or_default();
        let a = self
            .samples
            .iter()
            .rev()
            .find(|s| s.unix_ms <= p.from_ms)
            .copied()
            .unwrap_or(first);
        let b = self
            .samples
            .iter()
            .find(|s| s.unix_ms >= p.to_ms)
            .or(self.samples.last())
            .copied()
            .unwrap_or_default();
        Sources {
            origin: b.origin.saturating_sub(a.origin),
            store: b.store.saturating_sub(a.store),
            cache: b.cache.saturating_sub(a.cache),
        }
    }

    /// Bytes per second (origin, Object Store, cache) over each interval between samples,
    /// at the interval's end, in seconds since `t0_ms`. Counters that went
    /// back (a restarted bridge: the origin's bytes fell) count from zero.
    /// The cache's is a difference of two ports read one after the other,
    /// so it may fall a little while frames flow: that counts as nothing.
    fn rates(&self, t0_ms: u64) -> (Points, Points, Points) {
        let (mut origin, mut store, mut cache) = (Vec::new(), Vec::new(), Vec::new());
        for w in self.samples.windows(2) {
            let (b, restarted) = (w[1], w[1].origin < w[0].origin);
            let a = if restarted { Sample::default() } else { w[0] };
            let dt = b.unix_ms.saturating_sub(w[0].unix_ms) as f64 / 1e3;
            if dt <= 0.0 {
                continue;
            }
            let t = (b.unix_ms as f64 - t0_ms as f64) / 1e3;
            origin.push((t, (b.origin - a.origin) as f64 / dt));
            store.push((t, b.store.saturating_sub(a.store) as f64 / dt));
            cache.push((t, b.cache.saturating_sub(a.cache) as f64 / dt));
        }
        (origin, store, cache)
    }
}

/// Where a bridge's bytes came from in a phase ([`Timeline::sources_in`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sources {
    /// From the origin, through the server-side port (wire bytes).
    pub origin: u64,
    /// From the Object Store: pushed files published into the cache.
    pub store: u64,
    /// From the cache: frames serving built (wire bytes).
    pub cache: u64,
}

/// Megabytes, one decimal (the phases' labels).
fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The picture of a run: per bridge (named when there are several) two
/// series, bytes per second from the origin and from the cache, on a time
/// axis from the first phase's start; each phase shaded and labelled with
/// the bytes each source sent in it. Written as `<dir>/<name>.svg` and
/// `.png`; returns the files, the SVG first.
pub fn picture(
    title: &str,
    note: &str,
    bridges: &[(&str, &Timeline)],
    phases: &[Phase],
    dir: &Path,
    name: &str,
) -> Result<Vec<PathBuf>> {
    anyhow::ensure!(!phases.is_empty(), "no phases to draw");
    for (bridge, t) in bridges {
        anyhow::ensure!(
            t.len() >= 2,
            "{} statistics samples of bridge {bridge:?}: too few for a rate (is it run with --stats-interval 1 --stats-json?)",
            t.len()
        );
    }
    let t0 = phases.iter().map(|p| p.from_ms).min().unwrap_or(0);
    let t1 = phases.iter().map(|p| p.to_ms).max().unwrap_or(t0);
    // One interval of margin either side, and the sample that ends the last phase.
    let (lo, hi) = (-2.0, (t1 - t0) as f64 / 1e3 + 2.0);
    let keep = |v: Points| -> Points {
        v.into_iter()
            .filter(|(x, _)| (lo..=hi).contains(x))
            .collect()
    };
    let mut series = Vec::new();
    for (bridge, t) in bridges {
        let (origin, _, cache) = t.rates(t0);
        let who = if bridges.len() > 1 {
            format!("{bridge}: ")
        } else {
            String::new()
        };
        series.push((format!("{who}from the origin"), keep(origin)));
        series.push((format!("{who}from the cache"), keep(cache)));
    }
    let bands = phases
        .iter()
        .map(|p| {
            let sums: Vec<String> = bridges
                .iter()
                .map(|(bridge, t)| {
                    let (o, c) = t.bytes_in(p);
                    let who = if bridges.len() > 1 {
                        format!("{bridge}: ")
                    } else {
                        String::new()
                    };
                    format!("{who}origin {}\n{who}cache {}", mb(o), mb(c))
                })
                .collect();
            Band {
                label: format!("{}\n{}", p.label, sums.join("\n")),
                from: (p.from_ms - t0) as f64 / 1e3,
                to: (p.to_ms - t0) as f64 / 1e3,
            }
        })
        .collect();
    let c = Chart {
        title: title.into(),
        x_label: "seconds since the first boot started".into(),
        y_label: "bytes per second".into(),
        x_log: false,
        y_log: false,
        series,
        note: note.into(),
        bands,
    };
    plot::write(&c, dir, name)
}

/// One site of a fleet's run for [`sites_picture`]: its name, its
/// bridge's samples and the phases that concern it.
pub type Site<'a> = (&'a str, &'a Timeline, &'a [Phase]);

/// The picture of a fleet's run: one panel per site, stacked on one time
/// axis (seconds from the first phase's start), each with three series —
/// bytes per second from the origin, the Object Store and the cache — and
/// its phases shaded and numbered; the key beside the panel says what
/// each number was and the bytes each source sent in it. Written as
/// `<dir>/<name>.svg` and `.png`; returns the files, the SVG first.
pub fn sites_picture(
    title: &str,
    note: &str,
    sites: &[Site<'_>],
    dir: &Path,
    name: &str,
) -> Result<Vec<PathBuf>> {
    let all = sites.iter().flat_map(|(_, _, p)| p.iter());
    let t0 = all.clone().map(|p| p.from_ms).min();
    let t1 = all.map(|p| p.to_ms).max();
    let (Some(t0), Some(t1)) = (t0, t1) else {
        anyhow::bail!("no phases to draw");
    };
    let (lo, hi) = (-2.0, (t1 - t0) as f64 / 1e3 + 2.0);
    let keep = |v: Points| -> Points {
        v.into_iter()
            .filter(|(x, _)| (lo..=hi).contains(x))
            .collect()
    };
    let mut panels = Vec::new();
    for (site, t, phases) in sites {
        anyhow::ensure!(
            t.len() >= 2,
            "{} statistics samples at {site}: too few for a rate (is its bridge run with --stats-interval 1 --stats-json?)",
            t.len()
        );
        let (origin, store, cache) = t.rates(t0);
        let mut key = Vec::new();
        let mut bands = Vec::new();
        for (i, p) in phases.iter().enumerate() {
            let s = t.sources_in(p);
            key.push(format!("{}  {}", i + 1, p.label));
            key.push(format!(
                "     origin {}, Object Store {}, cache {}",
                mb(s.origin),
                mb(s.store),
                mb(s.cache)
            ));
            bands.push(Band {
                label: (i + 1).to_string(),
                from: (p.from_ms - t0) as f64 / 1e3,
                to: (p.to_ms - t0) as f64 / 1e3,
            });
        }
        panels.push(plot::Panel {
            chart: Chart {
                title: site.to_string(),
                x_label: "seconds since the first step started".into(),
                y_label: "bytes per second".into(),
                x_log: false,
                y_log: false,
                series: vec![
                    ("from the origin".into(), keep(origin)),
                    ("from the Object Store".into(), keep(store)),
                    ("from the cache".into(), keep(cache)),
                ],
                note: String::new(),
                bands,
            },
            key,
        });
    }
    plot::write_panels(title, &panels, note, dir, name)
}

/// A run kept for later: its phases and its samples, cut to what the
/// picture reads, as JSON lines (the statistics objects still read as
/// such). The demo writes one beside its picture; `docs/` keeps one.
pub fn recording(timeline: &Timeline, phases: &[Phase]) -> String {
    let mut out = String::new();
    for p in phases {
        let v = serde_json::json!({"phase": p.label, "from_ms": p.from_ms, "to_ms": p.to_ms});
        out.push_str(&format!("{v}\n"));
    }
    for s in &timeline.samples {
        let mut v = serde_json::json!({
            "unix_ms": s.unix_ms,
            "client": {"tx_bytes": s.origin + s.cache},
            "server": {"rx_bytes": s.origin},
        });
        if s.store > 0 {
            v["fleet_member"] = serde_json::json!({"published_bytes": s.store});
        }
        out.push_str(&format!("{v}\n"));
    }
    out
}

/// A [`recording`] read back.
pub fn read_recording(text: &str) -> (Timeline, Vec<Phase>) {
    let phases = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            Some(Phase {
                label: v.get("phase")?.as_str()?.to_string(),
                from_ms: v.get("from_ms")?.as_u64()?,
                to_ms: v.get("to_ms")?.as_u64()?,
            })
        })
        .collect();
    (Timeline::parse(text), phases)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Statistics objects as bootcache prints them (cut to the sections
    /// the picture reads, plus one it does not), a second apart: 3 MB from
    /// the origin in the first phase, 2 MB from the cache in the second.
    fn recorded() -> String {
        let mut out = String::from("stats: client rx=1 …\n");
        let (mut origin, mut cache) = (1000u64, 0u64);
        for i in 0..10u64 {
            match i {
                1..=3 => origin += 1_000_000,
                6..=7 => cache += 1_000_000,
                _ => origin += 500,
            }
            out.push_str(&format!(
                "{{\"unix_ms\":{},\"client\":{{\"tx\":9,\"tx_bytes\":{}}},\"server\":{{\"rx\":9,\"rx_bytes\":{origin}}},\"files\":{{\"in_store\":3}}}}\n",
                1_000_000 + i * 1000,
                origin + cache
            ));
        }
        out
    }

    fn phases() -> Vec<Phase> {
        vec![
            Phase {
                label: "boot 1 (cold)".into(),
                from_ms: 1_000_500,
                to_ms: 1_003_500,
            },
            Phase {
                label: "boot 2 (warm)".into(),
                from_ms: 1_005_500,
                to_ms: 1_007_500,
            },
        ]
    }

    #[test]
    fn rates_and_phase_totals_come_from_the_samples() {
        let t = Timeline::parse(&recorded());
        assert_eq!(t.len(), 10);
        let p = phases();
        assert_eq!(t.bytes_in(&p[0]), (3_000_500, 0));
        assert_eq!(t.bytes_in(&p[1]), (500, 2_000_000));
        let (origin, store, cache) = t.rates(1_000_000);
        assert!(store.iter().all(|p| p.1 == 0.0), "{store:?}");
        assert_eq!(origin.len(), 9);
        assert_eq!(origin[0], (1.0, 1e6));
        assert_eq!(cache[5], (6.0, 1e6));
        let sum = |v: &[(f64, f64)]| v.iter().map(|p| p.1).sum::<f64>();
        assert_eq!(sum(&cache), 2e6);
        assert_eq!(sum(&origin), 3e6 + 4.0 * 500.0);
    }

    #[test]
    fn the_cache_falling_a_little_is_not_a_restart() {
        // Client port read before the server port while frames flow.
        let text = "{\"unix_ms\":1000,\"client\":{\"tx_bytes\":9000},\"server\":{\"rx_bytes\":1000}}\n\
                    {\"unix_ms\":2000,\"client\":{\"tx_bytes\":9500},\"server\":{\"rx_bytes\":2000}}\n";
        let (origin, _, cache) = Timeline::parse(text).rates(0);
        assert_eq!(origin, [(2.0, 1000.0)]);
        assert_eq!(cache, [(2.0, 0.0)]);
    }

    #[test]
    fn a_restarted_bridge_counts_from_zero() {
        let text = "{\"unix_ms\":1000,\"client\":{\"tx_bytes\":900},\"server\":{\"rx_bytes\":900}}\n\
                    {\"unix_ms\":2000,\"client\":{\"tx_bytes\":100},\"server\":{\"rx_bytes\":100}}\n";
        let (origin, ..) = Timeline::parse(text).rates(0);
        assert_eq!(origin, [(2.0, 100.0)]);
    }

    #[test]
    fn the_picture_shows_both_series_and_each_phase_totals() {
        let dir = std::env::temp_dir().join(format!("testbed-demo-picture-{}", std::process::id()));
        let t = Timeline::parse(&recorded());
        let files = picture("boots", "a note", &[("bridge", &t)], &phases(), &dir, "b").unwrap();
        let svg = std::fs::read_to_string(&files[0]).unwrap();
        for text in [
            "from the origin",
            "from the cache",
            "boot 1 (cold)",
            "boot 2 (warm)",
            "origin 3.0 MB",
            "cache 0.0 MB",
            "origin 0.0 MB",
            "cache 2.0 MB",
            "a note",
        ] {
            assert!(svg.contains(text), "{text:?} is not in the picture");
        }
        assert!(files[1].exists(), "no PNG");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A fleet bridge's statistics: the recorded ones with 4 MB published
    /// from the Object Store in the fifth interval (between the phases).
    fn recorded_site() -> String {
        recorded()
            .lines()
            .map(|l| match l.find("\"unix_ms\":") {
                Some(_) => {
                    let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                    let i = (v["unix_ms"].as_u64().unwrap() - 1_000_000) / 1000;
                    let published = if i >= 5 { 4_000_000 } else { 0 };
                    v["fleet_member"] = serde_json::json!({"published_bytes": published});
                    format!("{v}\n")
                }
                None => format!("{l}\n"),
            })
            .collect()
    }

    #[test]
    fn the_sites_picture_has_a_panel_per_site_with_its_key() {
        let dir = std::env::temp_dir().join(format!("testbed-demo-sites-{}", std::process::id()));
        let t = Timeline::parse(&recorded_site());
        let pushed = Phase {
            label: "pushed".into(),
            from_ms: 1_003_500,
            to_ms: 1_004_500,
        };
        assert_eq!(
            t.sources_in(&pushed),
            Sources {
                origin: 1000,
                store: 4_000_000,
                cache: 0
            }
        );
        let (_, store, _) = t.rates(1_000_000);
        assert_eq!(store[4], (5.0, 4e6));
        let a = [phases()[0].clone(), pushed.clone()];
        let b = [pushed, phases()[1].clone()];
        let files = sites_picture(
            "two sites",
            "a note",
            &[("site A", &t, &a), ("site B", &t, &b)],
            &dir,
            "s",
        )
        .unwrap();
        let svg = std::fs::read_to_string(&files[0]).unwrap();
        for text in [
            "two sites",
            "site A",
            "site B",
            "from the origin",
            "from the Object Store",
            "from the cache",
            "1  boot 1 (cold)",
            "origin 3.0 MB, Object Store 0.0 MB, cache 0.0 MB",
            "2  pushed",
            "origin 0.0 MB, Object Store 4.0 MB, cache 0.0 MB",
            "1  pushed",
            "2  boot 2 (warm)",
            "origin 0.0 MB, Object Store 0.0 MB, cache 2.0 MB",
            "a note",
        ] {
            assert!(svg.contains(text), "{text:?} is not in the picture");
        }
        assert!(files[1].exists(), "no PNG");
        let few = Timeline::parse(recorded_site().lines().nth(1).unwrap());
        let e = sites_picture("t", "", &[("site A", &few, &a)], &dir, "never").unwrap_err();
        assert!(e.to_string().contains("too few"), "{e}");
        assert!(sites_picture("t", "", &[("site A", &t, &[])], &dir, "never").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_recording_reads_back() {
        let (t, p) = (Timeline::parse(&recorded()), phases());
        assert_eq!(read_recording(&recording(&t, &p)), (t, p));
        let (t, p) = (Timeline::parse(&recorded_site()), phases());
        assert_eq!(read_recording(&recording(&t, &p)), (t, p));
    }

    /// The picture of a real run (`docs/pxe-demo.jsonl`, recorded by
    /// `scripts/demo`): boot 1's files came from the origin, boot 2's from
    /// the cache, the warm reads from the cache.
    #[test]
    fn the_recorded_demo_run_draws_its_boots() {
        let (t, p) = read_recording(include_str!("../../docs/pxe-demo.jsonl"));
        assert!(
            t.len() > 20 && p.len() >= 2,
            "{} samples, {} phases",
            t.len(),
            p.len()
        );
        let (cold, warm) = (t.bytes_in(&p[0]), t.bytes_in(&p[1]));
        // vmlinuz and initrd.gz: 15.3 MB of files, more on the wire.
        assert!(cold.0 > 15_000_000 && cold.1 < 100_000, "boot 1 {cold:?}");
        assert!(warm.1 > 15_000_000 && warm.0 < 100_000, "boot 2 {warm:?}");
        let dir =
            std::env::temp_dir().join(format!("testbed-demo-recorded-{}", std::process::id()));
        let files = picture("boots", "", &[("bridge", &t)], &p, &dir, "r").unwrap();
        let svg = std::fs::read_to_string(&files[0]).unwrap();
        assert!(svg.contains(&format!("origin {}", mb(cold.0))));
        assert!(svg.contains(&format!("cache {}", mb(warm.1))));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The picture of a real two-site run (`docs/fleet-demo-site-*.jsonl`,
    /// recorded by `scripts/demo --sites 2`): site A's cold boot from the
    /// origin, the boot files pre-staged at site B and the changed files
    /// pushed to both from the Object Store, the warm boots from the caches.
    #[test]
    fn the_recorded_fleet_demo_run_draws_both_sites() {
        let (ta, pa) = read_recording(include_str!("../../docs/fleet-demo-site-a.jsonl"));
        let (tb, pb) = read_recording(include_str!("../../docs/fleet-demo-site-b.jsonl"));
        let find = |p: &[Phase], what: &str| -> Phase {
            p.iter()
                .find(|p| p.label.contains(what))
                .cloned()
                .unwrap_or_else(|| panic!("no phase {what:?} in {p:?}"))
        };
        let cold = ta.sources_in(&find(&pa, "boot (cold)"));
        assert!(cold.origin > 15_000_000 && cold.cache < 100_000, "{cold:?}");
        let staged = tb.sources_in(&find(&pb, "pre-stage the boot files"));
        assert!(
            staged.store > 15_000_000 && staged.origin < 100_000,
            "{staged:?}"
        );
        for (t, p) in [(&ta, &pa), (&tb, &pb)] {
            let pushed = t.sources_in(&find(p, "change on the origin"));
            assert!(
                pushed.store > 17_000_000 && pushed.origin < 100_000,
                "{pushed:?}"
            );
            let warm = t.sources_in(&find(p, "the new initrd"));
            assert!(warm.cache > 15_000_000 && warm.origin < 100_000, "{warm:?}");
        }
        let dir =
            std::env::temp_dir().join(format!("testbed-fleet-recorded-{}", std::process::id()));
        let files = sites_picture(
            "two sites",
            "",
            &[("site A", &ta, &pa), ("site B", &tb, &pb)],
            &dir,
            "r",
        )
        .unwrap();
        let svg = std::fs::read_to_string(&files[0]).unwrap();
        assert!(svg.contains(&format!("origin {}, Object Store 0.0 MB", mb(cold.origin))));
        assert!(svg.contains(&format!("Object Store {}", mb(staged.store))));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn too_few_samples_are_an_error() {
        let t = Timeline::parse(
            "{\"unix_ms\":1,\"client\":{\"tx_bytes\":1},\"server\":{\"rx_bytes\":1}}\n",
        );
        let dir = std::env::temp_dir();
        let e = picture("t", "", &[("b", &t)], &phases(), &dir, "never").unwrap_err();
        assert!(e.to_string().contains("too few"), "{e}");
    }
}
