//! Plots of the scenarios' CSV results, drawn by the test bed's charts
//! ([`bootcache_testbed::plot`]) as SVG and PNG:
//!
//! - `forward-mpps.{png,svg}`: Mpps by frame size, bootcache and testpmd;
//! - `forward-latency-cdf.{png,svg}`: latency CDF at the zero-loss rate, 64 B;
//! - `storm-origin.{png,svg}` and `storm-completion.{png,svg}`: origin bytes
//!   and completion times by number of clients.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub use bootcache_testbed::plot::{short, write, Chart};

/// A CSV file written by [`crate::results::Table`], read back.
pub fn read_csv(path: &Path) -> Result<crate::results::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {} (run the scenario first)", path.display()))?;
    let mut lines = text.lines().map(split_csv);
    let columns = lines.next().context("empty CSV")?;
    let rows = lines.collect();
    Ok(crate::results::Table { columns, rows })
}

fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Column `name` of every row.
fn col<'a>(t: &'a crate::results::Table, name: &str) -> Result<Vec<&'a str>> {
    let i = t
        .columns
        .iter()
        .position(|c| c == name)
        .with_context(|| format!("no column {name:?}"))?;
    Ok(t.rows.iter().map(|r| r[i].as_str()).collect())
}

fn num(s: &str) -> f64 {
    s.parse().unwrap_or(f64::NAN)
}

/// Makes every plot whose CSV is in `dir`; `note` goes under each.
pub fn all(dir: &Path, note: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if dir.join("forward.csv").exists() {
        let t = read_csv(&dir.join("forward.csv"))?;
        let (filter, size) = (col(&t, "filter")?, col(&t, "size")?);
        let mut series = Vec::new();
        for (dev, column) in [
            ("bootcache", "bootcache_mpps"),
            ("dpdk-testpmd io", "testpmd_mpps"),
        ] {
            let v = col(&t, column)?;
            let pts = (0..t.rows.len())
                .filter(|&i| filter[i] == "empty" && size[i] != "imix")
                .map(|i| (num(size[i]), num(v[i])))
                .collect();
            series.push((dev.to_string(), pts));
        }
        let c = Chart {
            title: "Forwarding rate by frame size (filter table empty)".into(),
            x_label: "frame size (bytes)".into(),
            y_label: "Mpps, both directions".into(),
            x_log: false,
            y_log: false,
            series,
            note: note.into(),
            bands: Vec::new(),
        };
        out.extend(write(&c, dir, "forward-mpps")?);
    }
    if dir.join("forward-latency-cdf.csv").exists() {
        let t = read_csv(&dir.join("forward-latency-cdf.csv"))?;
        let (dev, lat, q) = (
            col(&t, "device")?,
            col(&t, "latency_us")?,
            col(&t, "fraction")?,
        );
        let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for i in 0..t.rows.len() {
            let name = if dev[i] == "bootcache" {
                "bootcache"
            } else {
                "dpdk-testpmd io"
            };
            match series.iter_mut().find(|(n, _)| n == name) {
                Some((_, p)) => p.push((num(lat[i]), num(q[i]))),
                None => series.push((name.into(), vec![(num(lat[i]), num(q[i]))])),
            }
        }
        let c = Chart {
            title: "Latency CDF at the zero-loss rate, 64 B, filter empty".into(),
            x_label: "latency (µs), generator → device → generator".into(),
            y_label: "fraction of frames".into(),
            x_log: true,
            y_log: false,
            series,
            note: note.into(),
            bands: Vec::new(),
        };
        out.extend(write(&c, dir, "forward-latency-cdf")?);
    }
    if dir.join("storm.csv").exists() {
        let t = read_csv(&dir.join("storm.csv"))?;
        let n: Vec<f64> = col(&t, "clients")?.into_iter().map(num).collect();
        let pts = |column: &str| -> Result<Vec<(f64, f64)>> {
            Ok(col(&t, column)?
                .into_iter()
                .zip(&n)
                .map(|(v, &x)| (x, num(v)))
                .collect())
        };
        let c = Chart {
            title: "Boot storm: bytes the boot server carries".into(),
            x_label: "clients booting at once".into(),
            y_label: "origin bytes (both directions)".into(),
            x_log: true,
            y_log: true,
            series: vec![
                (
                    "bootcache, all (cold + warm)".into(),
                    pts("bootcache_origin_bytes")?,
                ),
                (
                    "bootcache, TFTP only".into(),
                    pts("bootcache_origin_tftp_bytes")?,
                ),
                ("dpdk-testpmd io".into(), pts("testpmd_origin_bytes")?),
            ],
            note: note.into(),
            bands: Vec::new(),
        };
        out.extend(write(&c, dir, "storm-origin")?);
        let c = Chart {
            title: "Boot storm: per-client completion time".into(),
            x_label: "clients booting at once".into(),
            y_label: "completion (ms)".into(),
            x_log: true,
            y_log: true,
            series: vec![
                ("bootcache warm p99".into(), pts("warm_p99_ms")?),
                ("bootcache warm p50".into(), pts("warm_p50_ms")?),
                ("testpmd io p99".into(), pts("testpmd_p99_ms")?),
                ("one cold client (bootcache)".into(), pts("cold_ms")?),
            ],
            note: note.into(),
            bands: Vec::new(),
        };
        out.extend(write(&c, dir, "storm-completion")?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trips_through_the_reader() {
        let mut t = crate::results::Table::new(&["a", "b,c", "d"]);
        t.push(vec!["x \"y\"".into(), "1".into(), String::new()]);
        let dir = std::env::temp_dir().join(format!("bench-plot-test-{}", std::process::id()));
        t.write(&dir, "t").unwrap();
        assert_eq!(read_csv(&dir.join("t.csv")).unwrap(), t);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
