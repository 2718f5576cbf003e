//! `bootcache-agent fleet`: the fleet as the buckets say, sans-I/O — the
//! bridges present, what each holds and whether it is the table's version,
//! each one's image map summary, and the directives with their
//! acknowledgements. Only signed entries count; the rest is counted.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use serde::Serialize;

use crate::doc::{self, Ack, Directive, FileState, Holding, ImageSummary, Presence};
use crate::record::{self, Body, FileInfo, RecordError};

/// A copy, compared with the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyState {
    /// The table's current SHA-256.
    Current,
    /// Other content than the table's: outdated.
    Outdated,
    /// The table has no current word on the file (absent, being written).
    Unknown,
}

/// One holding in the listing.
#[derive(Debug, Clone, Serialize)]
pub struct HoldingReport {
    /// What the bridge said.
    #[serde(flatten)]
    pub holding: Holding,
    /// Against the table.
    pub state: CopyState,
}

/// One bridge.
#[derive(Debug, Clone, Serialize)]
pub struct BridgeReport {
    /// Its id.
    pub id: String,
    /// Its presence entry, while it has one (entries expire).
    pub presence: Option<Presence>,
    /// What it holds.
    pub holdings: Vec<HoldingReport>,
    /// Its image map summary.
    pub image_map: Option<ImageSummary>,
}

/// One bridge's part in a directive.
#[derive(Debug, Clone, Serialize)]
pub struct DirectiveBridge {
    /// The bridge.
    pub bridge: String,
    /// Pending until it acknowledged every file; done; failed if any
    /// file failed.
    pub state: FileState,
    /// Its acknowledgement.
    pub ack: Option<Ack>,
}

/// One directive.
#[derive(Debug, Clone, Serialize)]
pub struct DirectiveReport {
    /// The directive.
    #[serde(flatten)]
    pub directive: Directive,
    /// The bridges it is for (those present, those named, and those that
    /// acknowledged).
    pub bridges: Vec<DirectiveBridge>,
}

/// The whole listing.
#[derive(Debug, Clone, Serialize, Default)]
pub struct FleetReport {
    /// Files in the agent's table.
    pub table_files: usize,
    /// Bridges, by id.
    pub bridges: Vec<BridgeReport>,
    /// Directives, oldest first.
    pub directives: Vec<DirectiveReport>,
    /// Entries that did not verify (ignored).
    pub bad_signature: u64,
    /// Entries that were not records of their key (ignored).
    pub malformed: u64,
    /// The serving policy's rules as published (none: every bridge serves).
    pub policy: Vec<crate::policy::Rule>,
}

/// Bucket contents, as read: key and value of every live entry.
pub type Entries = Vec<(String, Vec<u8>)>;

/// Builds the listing from the three buckets' contents (`bucket` is the
/// table's; the others are [`doc::Buckets::of`] it).
pub fn build(
    key: &[u8],
    bucket: &str,
    table: &Entries,
    presence: &Entries,
    fleet: &Entries,
) -> FleetReport {
    let b = doc::Buckets::of(bucket);
    let mut r = FleetReport::default();
    let count = |e: RecordError, r: &mut FleetReport| match e {
        RecordError::BadSignature => r.bad_signature += 1,
        _ => r.malformed += 1,
    };
    let mut files: HashMap<String, Option<FileInfo>> = HashMap::new();
    for (k, v) in table {
        if k == crate::policy::POLICY_KEY {
            match doc::verify::<crate::policy::Policy>(v, key, &b.table, k) {
                Ok(p) => r.policy = p.rules,
                Err(e) => count(e, &mut r),
            }
            continue;
        }
        match record::decode(v, key, &b.table, k) {
            Ok(rec) => match rec.body {
                Body::File { name, info } => {
                    files.insert(name, Some(info));
                }
                Body::Changing { name } | Body::Absent { name } => {
                    files.insert(name, None);
                }
                Body::Heartbeat => {}
            },
            Err(e) => count(e, &mut r),
        }
    }
    r.table_files = files.values().filter(|f| f.is_some()).count();
    let mut bridges: BTreeMap<String, BridgeReport> = BTreeMap::new();
    let bridge = |bridges: &mut BTreeMap<String, BridgeReport>, id: &str| {
        bridges
            .entry(id.to_owned())
            .or_insert_with(|| BridgeReport {
                id: id.to_owned(),
                presence: None,
                holdings: Vec::new(),
                image_map: None,
            })
            .id
            .clone()
    };
    for (k, v) in presence {
        match doc::verify::<Presence>(v, key, &b.presence, k) {
            Ok(p) if doc::presence_key(&p.id) == *k => {
                let id = bridge(&mut bridges, &p.id);
                bridges.get_mut(&id).expect("inserted").presence = Some(p);
            }
            Ok(_) => r.malformed += 1,
            Err(e) => count(e, &mut r),
        }
    }
    let mut directives: BTreeMap<String, Directive> = BTreeMap::new();
    let mut acks: Vec<Ack> = Vec::new();
    for (k, v) in fleet {
        let mut parts = k.splitn(3, '.');
        let (kind, id) = (parts.next(), parts.next().unwrap_or(""));
        match kind {
            Some("h") => match doc::verify::<Holding>(v, key, &b.fleet, k) {
                Ok(h) if h.key(id) == *k => {
                    let state = match files.get(&h.name) {
                        Some(Some(i)) if doc::hex(&i.sha256) == h.sha256 => CopyState::Current,
                        Some(Some(_)) => CopyState::Outdated,
                        _ => CopyState::Unknown,
                    };
                    let id = bridge(&mut bridges, id);
                    bridges
                        .get_mut(&id)
                        .expect("inserted")
                        .holdings
                        .push(HoldingReport { holding: h, state });
                }
                Ok(_) => r.malformed += 1,
                Err(e) => count(e, &mut r),
            },
            Some("m") => match doc::verify::<ImageSummary>(v, key, &b.fleet, k) {
                Ok(m) if doc::image_key(id) == *k => {
                    let id = bridge(&mut bridges, id);
                    bridges.get_mut(&id).expect("inserted").image_map = Some(m);
                }
                Ok(_) => r.malformed += 1,
                Err(e) => count(e, &mut r),
            },
            Some("d") => match doc::verify::<Directive>(v, key, &b.fleet, k) {
                Ok(d) if doc::directive_key(&d.id) == *k => {
                    directives.insert(d.id.clone(), d);
                }
                Ok(_) => r.malformed += 1,
                Err(e) => count(e, &mut r),
            },
            Some("a") => match doc::verify::<Ack>(v, key, &b.fleet, k) {
                Ok(a) if doc::ack_key(&a.id, &a.bridge) == *k => acks.push(a),
                Ok(_) => r.malformed += 1,
                Err(e) => count(e, &mut r),
            },
            _ => r.malformed += 1,
        }
    }
    for b in bridges.values_mut() {
        b.holdings.sort_by(|x, y| {
            (&x.holding.name, &x.holding.server).cmp(&(&y.holding.name, &y.holding.server))
        });
    }
    for (id, d) in directives {
        let mut per: BTreeMap<String, Option<Ack>> = BTreeMap::new();
        for b in bridges.values() {
            let site = b.presence.as_ref().map_or("", |p| p.site.as_str());
            if b.presence.is_some() && d.target.includes(&b.id, site) {
                per.insert(b.id.clone(), None);
            }
        }
        if let doc::Target::Bridges(named) = &d.target {
            for n in named {
                per.entry(n.clone()).or_insert(None);
            }
        }
        for a in acks.iter().filter(|a| a.id == id) {
            per.insert(a.bridge.clone(), Some(a.clone()));
        }
        let bridges = per
            .into_iter()
            .map(|(bridge, ack)| {
                let state = match &ack {
                    Some(a) if a.files.iter().any(|f| f.state == FileState::Failed) => {
                        FileState::Failed
                    }
                    Some(a) if a.finished() => FileState::Done,
                    _ => FileState::Pending,
                };
                DirectiveBridge { bridge, state, ack }
            })
            .collect();
        r.directives.push(DirectiveReport {
            directive: d,
            bridges,
        });
    }
    r.bridges = bridges.into_values().collect();
    r
}

/// The listing as one JSON object (`--json`).
pub fn render_json(r: &FleetReport) -> String {
    serde_json::to_string_pretty(r).expect("the report serialises")
}

fn state_name(s: FileState) -> &'static str {
    match s {
        FileState::Pending => "pending",
        FileState::Done => "done",
        FileState::Failed => "failed",
    }
}

/// The listing as text for the operator (names escaped: they come from
/// the wire).
pub fn render_text(r: &FleetReport, now_ms: u64) -> String {
    let esc = |s: &str| s.escape_debug().to_string();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "fleet: {} bridge(s), {} present; table: {} file(s)",
        r.bridges.len(),
        r.bridges.iter().filter(|b| b.presence.is_some()).count(),
        r.table_files
    );
    let _ = writeln!(o, "serving policy: {} rule(s)", r.policy.len());
    for (i, rule) in r.policy.iter().enumerate() {
        let _ = writeln!(
            o,
            "  {}. {}",
            i + 1,
            serde_json::to_string(rule).unwrap_or_default()
        );
    }
    for b in &r.bridges {
        match &b.presence {
            Some(p) => {
                let _ = writeln!(
                    o,
                    "\nbridge {} site {} version {} addresses {} — seen {:.1} s ago, mirror {}, {} holding(s)",
                    b.id,
                    p.site,
                    esc(&p.version),
                    p.addresses.join(","),
                    now_ms.saturating_sub(p.at_ms) as f64 / 1e3,
                    if p.mirror_live { "live" } else { "not live" },
                    b.holdings.len()
                );
            }
            None => {
                let _ = writeln!(o, "\nbridge {} — not present (no presence entry)", b.id);
            }
        }
        let outdated = b
            .holdings
            .iter()
            .filter(|h| h.state == CopyState::Outdated)
            .count();
        if outdated > 0 {
            let _ = writeln!(o, "  {outdated} outdated copy(ies)");
        }
        for h in &b.holdings {
            let state = match h.state {
                CopyState::Current => "current",
                CopyState::Outdated => "OUTDATED",
                CopyState::Unknown => "unknown",
            };
            let _ = writeln!(
                o,
                "  {:<8} {:>12} {} {:<15} vlan {:<6} {}",
                state,
                h.holding.size,
                h.holding.sha256.get(..16).unwrap_or(&h.holding.sha256),
                h.holding.server,
                h.holding.vlan,
                esc(&h.holding.name)
            );
        }
        if let Some(m) = &b.image_map {
            let _ = writeln!(o, "  image map: {} client(s)", m.clients);
            for f in &m.files {
                let _ = writeln!(
                    o,
                    "    {:>5} client(s) ({} from the cache) loaded {}",
                    f.clients,
                    f.from_cache,
                    esc(&f.name)
                );
            }
            for c in &m.recent {
                let _ = writeln!(
                    o,
                    "    client {} ip {} arch {} nbp {}: {}",
                    c.mac,
                    c.ip.as_deref().unwrap_or("-"),
                    c.arch.map_or("-".into(), |a| a.to_string()),
                    c.nbp.as_deref().map_or("-".into(), esc),
                    c.files.iter().map(|f| esc(f)).collect::<Vec<_>>().join(" ")
                );
            }
        }
    }
    if !r.directives.is_empty() {
        let _ = writeln!(o, "\ndirectives:");
    }
    for d in &r.directives {
        let target = match &d.directive.target {
            doc::Target::All => "all".to_string(),
            doc::Target::Site(s) => format!("site {s}"),
            doc::Target::Bridges(b) => format!("bridge(s) {}", b.join(",")),
        };
        let _ = writeln!(
            o,
            "  {} {:?} for {target}: {}",
            d.directive.id,
            d.directive.kind,
            d.directive
                .files
                .iter()
                .map(|f| esc(f))
                .collect::<Vec<_>>()
                .join(" ")
        );
        for b in &d.bridges {
            let detail = b.ack.as_ref().map_or(String::new(), |a| {
                a.files
                    .iter()
                    .map(|f| format!("{} {} ({})", esc(&f.name), state_name(f.state), f.detail))
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            let _ = writeln!(o, "    {:<7} {} {detail}", state_name(b.state), b.bridge);
        }
    }
    if r.bad_signature + r.malformed > 0 {
        let _ = writeln!(
            o,
            "\nignored: {} entr(ies) not signed with our key, {} malformed",
            r.bad_signature, r.malformed
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::{DirectiveKind, FileAck, Target};
    use crate::record::Record;

    const KEY: &[u8] = &[5u8; 32];

    #[test]
    fn holdings_are_compared_with_the_table_and_directives_show_progress() {
        let b = doc::Buckets::of("bc");
        let rec = |name: &str, sha: u8| {
            let r = Record {
                epoch: 1,
                seq: 1,
                timestamp_ms: 1,
                body: Body::File {
                    name: name.into(),
                    info: FileInfo {
                        size: 1,
                        version: 1,
                        sha256: [sha; 32],
                        mtime_ms: 0,
                    },
                },
            };
            (r.body.kv_key(), record::encode(&r, KEY, &b.table))
        };
        let table = vec![rec("a", 1), rec("b", 2)];
        let p = Presence {
            id: "b1".into(),
            site: "s1".into(),
            addresses: vec!["10.0.0.2".into()],
            version: "0.1.0".into(),
            started_ms: 0,
            at_ms: 0,
            mirror_live: true,
            holdings: 2,
        };
        let presence = vec![(
            doc::presence_key("b1"),
            doc::sign(&p, KEY, &b.presence, "p.b1"),
        )];
        let hold = |name: &str, sha: u8| {
            let h = Holding {
                name: name.into(),
                server: "10.0.0.1".into(),
                vlan: "-".into(),
                size: 1,
                sha256: doc::hex(&[sha; 32]),
                verified_s: 0,
            };
            let k = h.key("b1");
            let v = doc::sign(&h, KEY, &b.fleet, &k);
            (k, v)
        };
        let d = Directive {
            id: "1".into(),
            kind: DirectiveKind::Cache,
            files: vec!["b".into()],
            target: Target::Site("s1".into()),
            issued_ms: 0,
        };
        let ack = Ack {
            id: "1".into(),
            bridge: "b1".into(),
            at_ms: 0,
            files: vec![FileAck {
                name: "b".into(),
                state: FileState::Done,
                sha256: Some(doc::hex(&[2; 32])),
                detail: "fetched".into(),
            }],
        };
        let mut fleet = vec![
            hold("a", 1),
            hold("b", 9),
            (doc::directive_key("1"), doc::sign(&d, KEY, &b.fleet, "d.1")),
            (
                doc::ack_key("1", "b1"),
                doc::sign(&ack, KEY, &b.fleet, "a.1.b1"),
            ),
        ];
        // A forged holding and a moved one.
        let (k, _) = hold("c", 3);
        fleet.push((k.clone(), doc::sign(&1u8, &[6u8; 32], &b.fleet, &k)));
        fleet.push(("h.b2.xx".into(), hold("a", 1).1));
        let r = build(KEY, "bc", &table, &presence, &fleet);
        assert_eq!(r.table_files, 2);
        assert_eq!(
            r.bad_signature, 2,
            "forged, and moved (the MAC covers the key)"
        );
        assert_eq!(r.bridges.len(), 1);
        let states: Vec<_> = r.bridges[0]
            .holdings
            .iter()
            .map(|h| (h.holding.name.as_str(), h.state))
            .collect();
        assert_eq!(
            states,
            vec![("a", CopyState::Current), ("b", CopyState::Outdated)]
        );
        assert_eq!(r.directives.len(), 1);
        assert_eq!(r.directives[0].bridges.len(), 1);
        assert_eq!(r.directives[0].bridges[0].state, FileState::Done);
        let text = render_text(&r, 1500);
        assert!(text.contains("bridge b1 site s1"), "{text}");
        assert!(text.contains("OUTDATED"), "{text}");
        assert!(text.contains("done    b1"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["bridges"][0]["holdings"][1]["state"], "outdated");
        assert_eq!(json["directives"][0]["bridges"][0]["state"], "done");
    }
}
