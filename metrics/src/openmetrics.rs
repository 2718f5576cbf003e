//! OpenMetrics text for Prometheus (crate `prometheus-client`), from a
//! [`Snapshot`]: names `bootcache_<name>[_<unit>][_total]`, one family per
//! description, samples grouped under it whatever section they came from.

use std::borrow::Cow;
use std::sync::Arc;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::{Desc, Kind, Sample, Show, Snapshot, Unit};

/// The MIME type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every family of `snapshot` and `bootcache_info{labels} 1`, as
/// OpenMetrics text (ends with `# EOF`).
pub fn encode(snapshot: Arc<Snapshot>, info: &[(&'static str, String)]) -> String {
    let mut registry = Registry::default();
    registry.register(
        "bootcache",
        "The running bootcache: version and a hash of its configuration",
        Info::new(info.to_vec()),
    );
    registry.register_collector(Box::new(Collect(snapshot)));
    let mut out = String::new();
    // Writing to a String cannot fail; an encoder error would be a bug in
    // a description (caught by the tests), not worth a failed scrape.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        out = format!("# encoding failed: {e}\n# EOF\n");
    }
    out
}

#[derive(Debug)]
struct Collect(Arc<Snapshot>);

impl prometheus_client::collector::Collector for Collect {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Families in order of first appearance; a description that occurs
        // in several sections (both ports) is one family.
        let mut families: Vec<(Desc, Vec<&Sample>)> = Vec::new();
        for s in self.0.samples().filter(|s| s.show != Show::NotExported) {
            match families.iter_mut().find(|(d, _)| d.name == s.desc.name) {
                Some((_, v)) => v.push(s),
                None => families.push((s.desc, vec![s])),
            }
        }
        for (desc, samples) in families {
            let (unit, scale) = match desc.unit {
                Unit::None => (None, None),
                Unit::Bytes => (Some(prometheus_client::registry::Unit::Bytes), None),
                Unit::Nanoseconds => (Some(prometheus_client::registry::Unit::Seconds), Some(1e-9)),
                Unit::Milliseconds => {
                    (Some(prometheus_client::registry::Unit::Seconds), Some(1e-3))
                }
            };
            let metric_type = match desc.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
            };
            let name = format!("bootcache_{}", desc.name);
            let mut family =
                encoder.encode_descriptor(&name, desc.help.trim(), unit.as_ref(), metric_type)?;
            if let [s] = samples.as_slice() {
                if s.labels.is_empty() {
                    // Without labels: `name 1`, not `name{} 1`.
                    put(family, desc.kind, scale, s.value)?;
                    continue;
                }
            }
            for s in samples {
                let labels: &[(&'static str, Cow<'static, str>)] = &s.labels;
                put(family.encode_family(&labels)?, desc.kind, scale, s.value)?;
            }
        }
        Ok(())
    }
}

fn put(
    m: prometheus_client::encoding::MetricEncoder<'_>,
    kind: Kind,
    scale: Option<f64>,
    v: u64,
) -> Result<(), std::fmt::Error> {
    match (kind, scale) {
        (Kind::Counter, None) => ConstCounter::new(v).encode(m),
        (Kind::Counter, Some(k)) => ConstCounter::new(v as f64 * k).encode(m),
        (Kind::Gauge, None) => ConstGauge::new(v as i64).encode(m),
        (Kind::Gauge, Some(k)) => ConstGauge::new(v as f64 * k).encode(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RX: Desc = Desc {
        name: "port_rx_frames",
        help: " Frames received.",
        kind: Kind::Counter,
        unit: Unit::None,
        key: "rx",
        label: None,
    };
    const P50: Desc = Desc {
        name: "serve_turnaround_p50",
        help: "ACK to next DATA, median",
        kind: Kind::Gauge,
        unit: Unit::Nanoseconds,
        key: "p50_ns",
        label: None,
    };
    const BYTES: Desc = Desc {
        name: "serve_served",
        help: "Bytes served from the cache",
        kind: Kind::Counter,
        unit: Unit::Bytes,
        key: "served_bytes",
        label: None,
    };

    #[test]
    fn families_follow_prometheus_conventions() {
        let mut s = Snapshot::default();
        for (side, port, v) in [("client", "0", 5), ("server", "1", 7)] {
            s.section_labelled(side, vec![("port", port.into()), ("side", side.into())])
                .value(RX, v);
        }
        s.section("serve").value(BYTES, 4096).labelled(
            P50,
            "p50_ns",
            ("x", "y"),
            2500,
            Show::Always,
        );
        s.section("transfers")
            .value(
                Desc {
                    name: "sum",
                    ..BYTES
                },
                1,
            )
            .show_last(Show::NotExported);
        let text = encode(Arc::new(s), &[("version", "0.1.0".into())]);
        for want in [
            "# TYPE bootcache_port_rx_frames counter",
            "# HELP bootcache_port_rx_frames Frames received.",
            "bootcache_port_rx_frames_total{port=\"0\",side=\"client\"} 5",
            "bootcache_port_rx_frames_total{port=\"1\",side=\"server\"} 7",
            "# UNIT bootcache_serve_served_bytes bytes",
            "bootcache_serve_served_bytes_total 4096",
            "bootcache_serve_turnaround_p50_seconds{x=\"y\"} 0.0000025",
            "bootcache_info{version=\"0.1.0\"} 1",
        ] {
            assert!(text.contains(want), "no {want:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(!text.contains("bootcache_sum"), "a line-only total: {text}");
        // One family per description, not one per section.
        assert_eq!(text.matches("# TYPE bootcache_port_rx_frames ").count(), 1);
    }
}
