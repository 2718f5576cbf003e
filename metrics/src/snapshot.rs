//! A reading of every metric at one moment, in the stats line's order.

use std::borrow::Cow;

use crate::{Desc, Field};

/// Whether a sample appears in the stats line (JSON and OpenMetrics show
/// every sample).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// Always.
    Always,
    /// Only when not zero (one word per reason that occurred).
    NonZero,
    /// Never (driver statistics: JSON and Prometheus only).
    Never,
    /// In the line and the JSON, not in Prometheus: a total of a labelled
    /// family (`discarded=` beside `discarded_io=`), which PromQL sums.
    NotExported,
}

impl Show {
    /// Whether the line shows a sample of this value.
    fn in_line(self, value: u64) -> bool {
        match self {
            Show::Always | Show::NotExported => true,
            Show::NonZero => value > 0,
            Show::Never => false,
        }
    }
}

/// One value with its description and labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// What it is.
    pub desc: Desc,
    /// The stats line's word and JSON key (the description's, or built
    /// from a label: `discarded_io`).
    pub key: Cow<'static, str>,
    /// Prometheus labels (low cardinality: port, side, reason, …).
    pub labels: Vec<(&'static str, Cow<'static, str>)>,
    /// The value.
    pub value: u64,
    /// Whether the stats line shows it.
    pub show: Show,
}

/// A `|`-separated part of the stats line and an object of the JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// Its first word (`serve`, `files`) and JSON key.
    pub name: &'static str,
    /// The line leaves the name out (`| dhcp=3 bad_checksum=0 |`).
    pub bare: bool,
    /// Labels every sample of the section carries (`side="client"`).
    pub labels: Vec<(&'static str, Cow<'static, str>)>,
    /// Its samples, in order.
    pub samples: Vec<Sample>,
}

impl Section {
    /// Adds every field of `value` (labels: the section's).
    pub fn fields<T>(&mut self, fields: &[Field<T>], value: &T) -> &mut Self {
        for f in fields {
            self.value(f.desc, (f.get)(value));
        }
        self
    }

    /// Adds one value under its description's key.
    pub fn value(&mut self, desc: Desc, value: u64) -> &mut Self {
        let mut labels = self.labels.clone();
        labels.extend(desc.label.map(|(k, v)| (k, Cow::Borrowed(v))));
        self.samples.push(Sample {
            desc,
            key: Cow::Borrowed(desc.key),
            labels,
            value,
            show: Show::Always,
        });
        self
    }

    /// Adds one value of a labelled family: `key` is its word in the
    /// line, `label` its Prometheus label (added to the section's).
    pub fn labelled(
        &mut self,
        desc: Desc,
        key: impl Into<Cow<'static, str>>,
        label: (&'static str, impl Into<Cow<'static, str>>),
        value: u64,
        show: Show,
    ) -> &mut Self {
        let mut labels = self.labels.clone();
        labels.push((label.0, label.1.into()));
        self.samples.push(Sample {
            desc,
            key: key.into(),
            labels,
            value,
            show,
        });
        self
    }

    /// A family by reason with its total: `total` in the line and the JSON
    /// (Prometheus sums the family), then one sample per reason, labelled
    /// `reason`, keyed `<prefix>_<reason>` (`discarded_io`) and shown in
    /// the line when not zero.
    pub fn by_reason(
        &mut self,
        total: Desc,
        family: Desc,
        prefix: &str,
        reasons: impl Iterator<Item = (&'static str, u64)>,
    ) -> &mut Self {
        let all: Vec<_> = reasons.collect();
        self.value(total, all.iter().map(|(_, n)| n).sum())
            .show_last(Show::NotExported);
        for (reason, n) in all {
            let key = format!("{prefix}_{reason}");
            self.labelled(family, key, ("reason", reason), n, Show::NonZero);
        }
        self
    }

    /// Changes how the last sample added is shown in the line.
    pub fn show_last(&mut self, show: Show) -> &mut Self {
        if let Some(s) = self.samples.last_mut() {
            s.show = show;
        }
        self
    }
}

/// Every metric at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// When it was read (milliseconds since the Unix epoch).
    pub unix_ms: u64,
    /// The sections, in the stats line's order.
    pub sections: Vec<Section>,
}

impl Snapshot {
    /// A new empty section at the end.
    pub fn section(&mut self, name: &'static str) -> &mut Section {
        self.section_labelled(name, Vec::new())
    }

    /// A new empty section the line shows without its name
    /// (`| dhcp=3 bad_checksum=0 |`); the JSON still names it.
    pub fn section_bare(&mut self, name: &'static str) -> &mut Section {
        let s = self.section(name);
        s.bare = true;
        s
    }

    /// A new empty section whose samples all carry `labels`.
    pub fn section_labelled(
        &mut self,
        name: &'static str,
        labels: Vec<(&'static str, Cow<'static, str>)>,
    ) -> &mut Section {
        self.sections.push(Section {
            name,
            bare: false,
            labels,
            samples: Vec::new(),
        });
        self.sections.last_mut().expect("just pushed")
    }

    /// The operator's line: `stats: client rx=1 tx=2 | serve hits=3 …`.
    /// Consecutive samples of one key are joined with commas
    /// (`lcores rx=5,7`); a section with nothing to show is left out.
    pub fn line(&self) -> String {
        let mut parts = Vec::with_capacity(self.sections.len());
        for s in &self.sections {
            let mut part = if s.bare {
                String::new()
            } else {
                String::from(s.name)
            };
            let mut last_key: Option<&str> = None;
            let mut shown = 0;
            for x in &s.samples {
                if !x.show.in_line(x.value) {
                    continue;
                }
                shown += 1;
                if last_key == Some(&x.key) {
                    part.push_str(&format!(",{}", x.value));
                } else {
                    let sep = if part.is_empty() { "" } else { " " };
                    part.push_str(&format!("{sep}{}={}", x.key, x.value));
                }
                last_key = Some(&x.key);
            }
            if shown > 0 {
                parts.push(part);
            }
        }
        format!("stats: {}", parts.join(" | "))
    }

    /// One JSON object on one line: `{"unix_ms":…,"serve":{"hits":3,…},…}`,
    /// every sample (also those the line leaves out); a key that occurs
    /// more than once in a section (one value per lcore) is an array.
    pub fn json(&self) -> String {
        use serde_json::{Map, Value};
        let mut top = Map::new();
        top.insert("unix_ms".into(), self.unix_ms.into());
        for s in &self.sections {
            let mut obj = Map::new();
            for x in &s.samples {
                match obj.get_mut(x.key.as_ref()) {
                    None => {
                        obj.insert(x.key.to_string(), x.value.into());
                    }
                    Some(Value::Array(a)) => a.push(x.value.into()),
                    Some(v) => *v = Value::Array(vec![v.take(), x.value.into()]),
                }
            }
            top.insert(s.name.into(), Value::Object(obj));
        }
        Value::Object(top).to_string()
    }

    /// Every sample with the section it is in.
    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.sections.iter().flat_map(|s| s.samples.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Kind, Reader, Unit};

    crate::counters! {
        /// Test counters.
        #[derive(Default)]
        struct Redirect {
            /// Copies.
            #[metric(Counter None "redirect_copied_frames" "copied")]
            copied: u64,
            /// Copies dropped.
            #[metric(Counter None "redirect_copy_dropped_frames" "copy_drops")]
            copy_drops: u64,
        }
    }

    const RX: Desc = Desc {
        name: "lcore_rx_frames",
        help: "Frames each lcore received",
        kind: Kind::Counter,
        unit: Unit::None,
        key: "rx",
        label: None,
    };
    const DISCARDED: Desc = Desc {
        name: "transfers_discarded",
        help: "Transfers given up, by reason",
        kind: Kind::Counter,
        unit: Unit::None,
        key: "discarded",
        label: None,
    };

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        s.section("redirect").fields(
            Redirect::FIELDS,
            &Redirect {
                copied: 10,
                copy_drops: 2,
            },
        );
        let l = s.section("lcores");
        for (i, v) in [5u64, 7].into_iter().enumerate() {
            l.labelled(RX, "rx", ("lcore", i.to_string()), v, Show::Always);
        }
        let t = s.section("transfers");
        t.value(DISCARDED, 4).show_last(Show::NotExported);
        t.labelled(
            DISCARDED,
            "discarded_io",
            ("reason", "io"),
            4,
            Show::NonZero,
        );
        t.labelled(
            DISCARDED,
            "discarded_oack",
            ("reason", "oack"),
            0,
            Show::NonZero,
        );
        s.section_bare("origin").value(
            Desc {
                key: "origin_bytes",
                ..DISCARDED
            },
            9,
        );
        s.section("empty")
            .labelled(DISCARDED, "x", ("reason", "x"), 0, Show::Never);
        s
    }

    #[test]
    fn the_line_keeps_its_format() {
        assert_eq!(
            snapshot().line(),
            "stats: redirect copied=10 copy_drops=2 | lcores rx=5,7 | transfers discarded=4 discarded_io=4 | origin_bytes=9"
        );
    }

    #[test]
    fn json_holds_every_sample_and_reads_back() {
        let s = snapshot();
        let text = format!("noise\n{}\n{{\"not\": \"last\"\n", s.json());
        let r = Reader::last(&text).expect("a JSON line");
        assert_eq!(r.get("redirect", "copied"), Some(10));
        assert_eq!(r.get("transfers", "discarded_oack"), Some(0));
        assert_eq!(r.get("transfers", "nothing"), None);
        assert_eq!(r.get("serve", "hits"), None);
        assert_eq!(r.list("lcores", "rx"), vec![5, 7]);
        assert_eq!(r.get("empty", "x"), Some(0));
        assert_eq!(r.get("origin", "origin_bytes"), Some(9));
    }

    #[test]
    fn doc_comments_become_help() {
        assert_eq!(Redirect::FIELDS[1].desc.help.trim(), "Copies dropped.");
        assert_eq!(Redirect::FIELDS[1].desc.key, "copy_drops");
    }
}
