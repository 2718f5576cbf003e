//! Result tables: printed for the reader, written as CSV and JSON under the
//! results directory for plots and later comparison.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A table of named columns; cells are kept as text (numbers already
/// formatted to the precision worth reporting).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows, each as long as `columns`.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these columns.
    pub fn new(columns: &[&str]) -> Table {
        Table {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (panics if its length differs from the columns': a
    /// programming error in the scenario, not bad input).
    pub fn push(&mut self, row: Vec<String>) {
        assert_eq!(row.len(), self.columns.len(), "row length");
        self.rows.push(row);
    }

    /// The table as RFC 4180 CSV: a header line, then one line per row;
    /// cells with commas, quotes or line breaks are quoted.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        for row in std::iter::once(&self.columns).chain(&self.rows) {
            let cells: Vec<String> = row.iter().map(|c| csv_cell(c)).collect();
            out += &cells.join(",");
            out += "\n";
        }
        out
    }

    /// The table as a JSON array of objects, numbers as numbers.
    pub fn to_json(&self) -> serde_json::Value {
        let rows = self
            .rows
            .iter()
            .map(|row| {
                let obj = self
                    .columns
                    .iter()
                    .zip(row)
                    .map(|(k, v)| {
                        let val = match v.parse::<f64>() {
                            Ok(x) if x.is_finite() => serde_json::json!(x),
                            _ => serde_json::json!(v),
                        };
                        (k.clone(), val)
                    })
                    .collect::<serde_json::Map<_, _>>();
                serde_json::Value::Object(obj)
            })
            .collect();
        serde_json::Value::Array(rows)
    }

    /// The table aligned for a terminal.
    pub fn render(&self) -> String {
        let mut width: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
        for row in &self.rows {
            for (w, c) in width.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.columns).chain(&self.rows) {
            for (i, (c, w)) in row.iter().zip(&width).enumerate() {
                let pad = w - c.chars().count();
                if i == 0 {
                    let _ = write!(out, "{c}{}", " ".repeat(pad));
                } else {
                    let _ = write!(out, "  {}{c}", " ".repeat(pad));
                }
            }
            out += "\n";
        }
        out
    }

    /// Writes `<dir>/<name>.csv` and `<dir>/<name>.json`; returns the paths.
    pub fn write(&self, dir: &Path, name: &str) -> Result<[PathBuf; 2]> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating results directory {}", dir.display()))?;
        let csv = dir.join(format!("{name}.csv"));
        let json = dir.join(format!("{name}.json"));
        std::fs::write(&csv, self.to_csv())
            .with_context(|| format!("writing {}", csv.display()))?;
        let text = serde_json::to_string_pretty(&self.to_json())? + "\n";
        std::fs::write(&json, text).with_context(|| format!("writing {}", json.display()))?;
        Ok([csv, json])
    }
}

fn csv_cell(c: &str) -> String {
    if c.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", c.replace('"', "\"\""))
    } else {
        c.to_string()
    }
}

/// `x` with `digits` decimals.
pub fn f(x: f64, digits: usize) -> String {
    format!("{x:.digits$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new(&["device", "size", "mpps"]);
        t.push(vec!["bootcache".into(), "64".into(), f(12.345, 2)]);
        t.push(vec![
            "testpmd, io".into(),
            "imix".into(),
            "say \"hi\"".into(),
        ]);
        t
    }

    #[test]
    fn csv_has_a_header_and_quotes_what_needs_it() {
        assert_eq!(
            sample().to_csv(),
            "device,size,mpps\nbootcache,64,12.35\n\"testpmd, io\",imix,\"say \"\"hi\"\"\"\n"
        );
    }

    #[test]
    fn json_keeps_numbers_as_numbers() {
        let j = sample().to_json();
        assert_eq!(j[0]["mpps"], serde_json::json!(12.35));
        assert_eq!(j[0]["size"], serde_json::json!(64.0));
        assert_eq!(j[1]["size"], serde_json::json!("imix"));
        assert_eq!(j[1]["device"], serde_json::json!("testpmd, io"));
    }

    #[test]
    fn render_aligns_columns_and_files_are_written() {
        let r = sample().render();
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines
            .iter()
            .all(|l| l.chars().count() == lines[0].chars().count()));
        let dir = std::env::temp_dir().join(format!("bench-results-test-{}", std::process::id()));
        let [csv, json] = sample().write(&dir, "t").unwrap();
        assert_eq!(std::fs::read_to_string(csv).unwrap(), sample().to_csv());
        let back: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
        assert_eq!(back, sample().to_json());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    #[should_panic(expected = "row length")]
    fn a_short_row_is_a_bug() {
        Table::new(&["a", "b"]).push(vec!["x".into()]);
    }
}
