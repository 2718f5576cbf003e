//! Reading bootcache's JSON statistics back (tests, the benchmark): the
//! one reader of its output, so nothing parses the text line.

use serde_json::Value;

/// One JSON statistics object ([`crate::Snapshot::json`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Reader(Value);

impl Reader {
    /// The last complete JSON statistics object in `output` (bootcache's
    /// stdout with `--stats-json`), if any: a line still being written is
    /// skipped.
    pub fn last(output: &str) -> Option<Reader> {
        output
            .lines()
            .rev()
            .filter(|l| l.starts_with('{'))
            .find_map(Reader::parse)
    }

    /// Every JSON statistics object in `output`, oldest first.
    pub fn all(output: &str) -> Vec<Reader> {
        output
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(Reader::parse)
            .collect()
    }

    /// One line, if it is a statistics object.
    pub fn parse(line: &str) -> Option<Reader> {
        match serde_json::from_str::<Value>(line) {
            Ok(v @ Value::Object(_)) if v.get("unix_ms").is_some() => Some(Reader(v)),
            _ => None,
        }
    }

    /// `key` of `section` (a per-lcore list reads as its sum).
    pub fn get(&self, section: &str, key: &str) -> Option<u64> {
        match self.0.get(section)?.get(key)? {
            Value::Array(a) => Some(a.iter().filter_map(Value::as_u64).sum()),
            v => v.as_u64(),
        }
    }

    /// `key` of `section` as a list (one value per lcore; one value reads
    /// as a list of one, a missing key as an empty list).
    pub fn list(&self, section: &str, key: &str) -> Vec<u64> {
        match self.0.get(section).and_then(|s| s.get(key)) {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).collect(),
            Some(v) => v.as_u64().into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// Whether the object has `section`.
    pub fn has(&self, section: &str) -> bool {
        self.0.get(section).is_some()
    }
}
