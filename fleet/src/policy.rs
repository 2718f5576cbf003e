//! The serving policy (issue 14 item 5, patent figures 1c/3c): the boot
//! server decides which requests a bridge serves from its copy and which
//! it sends to the origin. Sans-I/O: the agent parses its policy file
//! into [`Rule`]s and publishes them signed under [`POLICY_KEY`] of the
//! table's bucket; each bridge's mirror keeps the latest signed policy
//! and the serving thread asks [`decide`] at the moment it would serve a
//! hit.
//!
//! Rules are tried in order and the first that matches decides; no match
//! serves. A rule matches when every field it sets matches: `file` (a
//! glob over the normalised name: `*` any run of characters, `?` one),
//! `site` and `bridge` (globs over the bridge's own), `mac` (a glob over
//! the client's MAC as `aa:bb:cc:dd:ee:ff`), `arch` (the client's DHCP
//! architecture, option 93). `action = "origin"` sends the request on;
//! `action = "serve"` serves it — only at the bridge named by `by`, if
//! set (bridges in series on one path: the others pass it on).

use serde::{Deserialize, Serialize};

/// The policy's KV key in the table's bucket.
pub const POLICY_KEY: &str = "policy";
/// Rules a policy holds at most.
pub const MAX_RULES: usize = 256;
/// Longest pattern (each field).
pub const MAX_PATTERN_LEN: usize = 256;

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Serve from the cache (if the copy is current).
    Serve,
    /// Send the request to the origin.
    Origin,
}

/// One rule: the fields it sets must all match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Glob over the normalised file name (default: every file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Glob over the bridge's site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Glob over the bridge's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// Glob over the client's MAC, lower-case `aa:bb:cc:dd:ee:ff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The client's DHCP architecture (option 93).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<u16>,
    /// Serve or send to the origin.
    pub action: Action,
    /// With `serve`: only this bridge serves; the others send it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// The policy as published: the agent run's epoch and publication
/// counter (a replayed older policy is refused) and the rules.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Policy {
    /// The publishing agent's start, ms since the Unix epoch.
    pub epoch: u64,
    /// Its publication counter.
    pub seq: u64,
    /// The rules, first match wins.
    pub rules: Vec<Rule>,
}

/// The policy file (`bootcache-agent --policy FILE`), TOML:
///
/// ```toml
/// [[rule]]
/// file = "kernels/next-*"
/// site = "site-b"
/// action = "origin"
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    rule: Vec<Rule>,
    #[serde(default)]
    cache: Vec<CacheRule>,
}

/// A pre-staging rule of the policy file (issue 14 item 4): every file of
/// the table matching `file` is directed into the caches of `site`'s
/// bridges, or of `bridges`, or of every bridge — once per version.
///
/// ```toml
/// [[cache]]
/// file = "kernels/*"
/// site = "site-b"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRule {
    /// Glob over the normalised file name.
    pub file: String,
    /// Only the bridges of this site.
    #[serde(default)]
    pub site: Option<String>,
    /// Only these bridges.
    #[serde(default)]
    pub bridges: Vec<String>,
}

impl CacheRule {
    /// The directive's target.
    pub fn target(&self) -> crate::doc::Target {
        match (&self.site, self.bridges.as_slice()) {
            (Some(s), _) => crate::doc::Target::Site(s.clone()),
            (None, []) => crate::doc::Target::All,
            (None, b) => crate::doc::Target::Bridges(b.to_vec()),
        }
    }
}

/// The policy file's contents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyFileContents {
    /// The serving rules (published to the bridges).
    pub rules: Vec<Rule>,
    /// The pre-staging rules (carried out by the agent).
    pub cache: Vec<CacheRule>,
}

/// Files directed by [`AutoCache`] remembered at most (name and version);
/// past it nothing more is directed and the refusals are counted.
pub const MAX_AUTO_CACHED: usize = 65536;
/// A pre-staging directive that failed (its put, or a bridge gave a file
/// up) is issued again after this long, doubling per attempt…
pub const AUTO_RETRY_MIN_MS: u64 = 2_000;
/// …up to this.
pub const AUTO_RETRY_MAX_MS: u64 = 300_000;

/// One file version [`AutoCache`] directed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Directed {
    /// The directive that carries it now (`None` while a retry waits).
    id: Option<String>,
    /// Directives issued for it so far.
    attempts: u32,
    /// When to issue it again (ms since the epoch), after a failure.
    retry_at_ms: Option<u64>,
}

/// A directive [`AutoCache`] wants put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoDirective {
    /// Its id (from the caller's generator).
    pub id: String,
    /// The pre-staging rule (index in the file's `[[cache]]` list).
    pub rule: usize,
    /// The files.
    pub files: Vec<String>,
    /// Whether it retries files that failed before.
    pub retry: bool,
}

/// The agent's side of the pre-staging rules, sans-I/O: which table files
/// are due to be directed, each (name, SHA-256) once — and again, with
/// backoff, when the directive's put failed or a bridge gave a file up
/// (the origin did not answer, the bytes were wrong), so a failure is not
/// forgotten.
#[derive(Debug, Default)]
pub struct AutoCache {
    directed: std::collections::HashMap<(String, [u8; 32]), Directed>,
    /// Files not directed because [`MAX_AUTO_CACHED`] were remembered.
    pub refused: u64,
    /// Retries scheduled.
    pub retries: u64,
}

impl AutoCache {
    /// The directives due at `now_ms` for `table` (name, SHA-256 of each
    /// hashed file): per rule, the matching files not directed before at
    /// this version, or whose retry is due (first matching rule only; at
    /// most `MAX_DIRECTIVE_FILES` each). `new_id` names each directive.
    pub fn due<'a>(
        &mut self,
        now_ms: u64,
        rules: &[CacheRule],
        table: impl IntoIterator<Item = (&'a str, [u8; 32])>,
        mut new_id: impl FnMut() -> String,
    ) -> Vec<AutoDirective> {
        let mut out: Vec<AutoDirective> = Vec::new();
        let mut table: Vec<(&str, [u8; 32])> = table.into_iter().collect();
        table.sort();
        for (name, sha) in table {
            let Some(i) = rules
                .iter()
                .position(|r| glob(r.file.as_bytes(), name.as_bytes()))
            else {
                continue;
            };
            let key = (name.to_owned(), sha);
            let retry = match self.directed.get(&key) {
                Some(d) if d.retry_at_ms.is_some_and(|t| now_ms >= t) => true,
                Some(_) => continue,
                None if self.directed.len() >= MAX_AUTO_CACHED => {
                    self.refused += 1;
                    continue;
                }
                None => false,
            };
            let d = match out.iter_mut().find(|d| {
                d.rule == i && d.retry == retry && d.files.len() < crate::doc::MAX_DIRECTIVE_FILES
            }) {
                Some(d) => d,
                None => {
                    out.push(AutoDirective {
                        id: new_id(),
                        rule: i,
                        files: Vec::new(),
                        retry,
                    });
                    out.last_mut().expect("just pushed")
                }
            };
            d.files.push(name.to_owned());
            let e = self.directed.entry(key).or_insert(Directed {
                id: None,
                attempts: 0,
                retry_at_ms: None,
            });
            e.id = Some(d.id.clone());
            e.attempts += 1;
            e.retry_at_ms = None;
        }
        out
    }

    fn schedule(&mut self, now_ms: u64, id: &str, file: Option<&str>) {
        for ((name, _), d) in &mut self.directed {
            if d.id.as_deref() != Some(id) || file.is_some_and(|f| f != name) {
                continue;
            }
            let wait = AUTO_RETRY_MIN_MS
                .saturating_mul(1 << (d.attempts.saturating_sub(1)).min(20))
                .min(AUTO_RETRY_MAX_MS);
            d.id = None;
            d.retry_at_ms = Some(now_ms + wait);
            self.retries += 1;
            log::warn!(
                "policy: {name}: directive {id} failed (attempt {}): again in {} s",
                d.attempts,
                wait / 1000
            );
        }
    }

    /// Directive `id` could not be put (engine down): all its files are
    /// retried with backoff.
    pub fn put_failed(&mut self, now_ms: u64, id: &str) {
        self.schedule(now_ms, id, None);
    }

    /// A bridge gave up `file` of directive `id`: retried with backoff
    /// (a directive of an earlier run or another issuer is not ours).
    pub fn file_failed(&mut self, now_ms: u64, id: &str, file: &str) {
        self.schedule(now_ms, id, Some(file));
    }

    /// Files waiting for a retry.
    pub fn waiting(&self) -> usize {
        self.directed
            .values()
            .filter(|d| d.retry_at_ms.is_some())
            .count()
    }
}

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not TOML of the policy's shape (the parser's message).
    #[error("{0}")]
    Syntax(String),
    /// More than [`MAX_RULES`] rules.
    #[error("{0} rules: at most {MAX_RULES}")]
    TooMany(usize),
    /// A field's value is not allowed (rule number from 1, field, why).
    #[error("rule {0}: {1}: {2}")]
    Field(usize, &'static str, String),
}

/// Parses and checks a policy file's serving rules.
pub fn parse_file(text: &str) -> Result<Vec<Rule>, PolicyError> {
    parse_policy_file(text).map(|c| c.rules)
}

/// Parses and checks a policy file: serving rules and pre-staging rules.
pub fn parse_policy_file(text: &str) -> Result<PolicyFileContents, PolicyError> {
    let f: PolicyFile = toml::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
    check(&f.rule)?;
    if f.cache.len() > MAX_RULES {
        return Err(PolicyError::TooMany(f.cache.len()));
    }
    for (i, c) in f.cache.iter().enumerate() {
        if c.file.is_empty() || c.file.len() > MAX_PATTERN_LEN {
            return Err(PolicyError::Field(
                i + 1,
                "cache.file",
                format!("must be 1-{MAX_PATTERN_LEN} characters"),
            ));
        }
        for id in c.site.iter().chain(&c.bridges) {
            if !crate::doc::valid_id(id) {
                return Err(PolicyError::Field(
                    i + 1,
                    "cache.site/bridges",
                    format!("{id:?}: letters, digits, '-', '_'"),
                ));
            }
        }
        if c.site.is_some() && !c.bridges.is_empty() {
            return Err(PolicyError::Field(
                i + 1,
                "cache",
                "site or bridges, not both".into(),
            ));
        }
    }
    Ok(PolicyFileContents {
        rules: f.rule,
        cache: f.cache,
    })
}

/// Checks rules (the agent before publishing, the mirror after verifying:
/// the bound holds even for a policy signed by a buggy agent).
pub fn check(rules: &[Rule]) -> Result<(), PolicyError> {
    if rules.len() > MAX_RULES {
        return Err(PolicyError::TooMany(rules.len()));
    }
    for (i, r) in rules.iter().enumerate() {
        let n = i + 1;
        for (field, v) in [
            ("file", &r.file),
            ("site", &r.site),
            ("bridge", &r.bridge),
            ("mac", &r.mac),
            ("by", &r.by),
        ] {
            match v {
                Some(p) if p.is_empty() || p.len() > MAX_PATTERN_LEN => {
                    return Err(PolicyError::Field(
                        n,
                        field,
                        format!("must be 1-{MAX_PATTERN_LEN} characters"),
                    ))
                }
                _ => {}
            }
        }
        if let Some(m) = &r.mac {
            if m.chars()
                .any(|c| !(c.is_ascii_hexdigit() || matches!(c, ':' | '*' | '?')))
                || m.chars().any(|c| c.is_ascii_uppercase())
            {
                return Err(PolicyError::Field(
                    n,
                    "mac",
                    format!("{m:?}: lower-case hex digits, ':', '*' and '?' only"),
                ));
            }
        }
        if let Some(b) = &r.by {
            if r.action != Action::Serve {
                return Err(PolicyError::Field(
                    n,
                    "by",
                    "only with action = \"serve\"".into(),
                ));
            }
            if !crate::doc::valid_id(b) {
                return Err(PolicyError::Field(
                    n,
                    "by",
                    format!("{b:?}: a bridge id (letters, digits, '-', '_')"),
                ));
            }
        }
    }
    Ok(())
}

/// The bridge deciding.
#[derive(Debug, Clone, Copy)]
pub struct Bridge<'a> {
    /// Its id.
    pub id: &'a str,
    /// Its site.
    pub site: &'a str,
}

/// The client asking, as far as the bridge knows it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Client {
    /// Its MAC.
    pub mac: Option<[u8; 6]>,
    /// Its DHCP architecture (from its DHCP messages, if seen).
    pub arch: Option<u16>,
}

/// What the policy decided, and which rule (index from 0) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Serve or send to the origin.
    pub action: Action,
    /// The rule that matched; `None`: no rule did (served).
    pub rule: Option<usize>,
}

/// The first matching rule's decision for `name` (normalised), asked at
/// `bridge` by `client`; no match serves.
pub fn decide(rules: &[Rule], name: &str, bridge: Bridge<'_>, client: Client) -> Decision {
    // The MAC as text, on the stack: no allocation per request.
    let mut mac_text = [b':'; 17];
    if let Some(m) = client.mac {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in m.iter().enumerate() {
            mac_text[i * 3] = HEX[usize::from(b >> 4)];
            mac_text[i * 3 + 1] = HEX[usize::from(b & 15)];
        }
    }
    let mac = client.mac.map(|_| &mac_text[..]);
    let field = |pattern: &Option<String>, value: Option<&[u8]>| match (pattern, value) {
        (None, _) => true,
        (Some(p), Some(v)) => glob(p.as_bytes(), v),
        (Some(_), None) => false,
    };
    for (i, r) in rules.iter().enumerate() {
        let matches = field(&r.file, Some(name.as_bytes()))
            && field(&r.site, Some(bridge.site.as_bytes()))
            && field(&r.bridge, Some(bridge.id.as_bytes()))
            && field(&r.mac, mac)
            && r.arch.is_none_or(|a| client.arch == Some(a));
        if !matches {
            continue;
        }
        let action = match (&r.action, &r.by) {
            (Action::Serve, Some(by)) if by != bridge.id => Action::Origin,
            (a, _) => *a,
        };
        return Decision {
            action,
            rule: Some(i),
        };
    }
    Decision {
        action: Action::Serve,
        rule: None,
    }
}

/// Glob match: `*` any run of bytes (also empty), `?` one byte, anything
/// else itself. Iterative with one backtrack point: O(pattern × text) at
/// worst, no recursion.
pub fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                // The last star takes one more byte.
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Bridge<'static> = Bridge {
        id: "bridge-a",
        site: "site-a",
    };
    const B: Bridge<'static> = Bridge {
        id: "bridge-b",
        site: "site-b",
    };

    fn rules(toml: &str) -> Vec<Rule> {
        parse_file(toml).unwrap()
    }

    #[test]
    fn globs() {
        for (p, t, m) in [
            ("*", "", true),
            ("*", "x/y", true),
            ("a*", "abc", true),
            ("*c", "abc", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("kernels/*", "kernels/vmlinuz", true),
            ("kernels/*", "initrd.img", false),
            ("", "", true),
            ("", "a", false),
            ("**a", "ba", true),
            ("52:54:00:*", "52:54:00:12:34:56", true),
        ] {
            assert_eq!(glob(p.as_bytes(), t.as_bytes()), m, "{p:?} on {t:?}");
        }
        // A pathological pattern ends (one backtrack point, no recursion).
        let text = "a".repeat(1000);
        assert!(!glob("*a*a*a*a*a*a*b".as_bytes(), text.as_bytes()));
    }

    #[test]
    fn no_rule_serves_and_the_first_match_wins() {
        let c = Client::default();
        assert_eq!(
            decide(&[], "x", A, c),
            Decision {
                action: Action::Serve,
                rule: None
            }
        );
        let r = rules(
            r#"
            [[rule]]
            file = "vmlinuz-new"
            site = "site-a"
            action = "serve"
            [[rule]]
            file = "vmlinuz-*"
            action = "origin"
            "#,
        );
        assert_eq!(
            decide(&r, "vmlinuz-new", A, c),
            Decision {
                action: Action::Serve,
                rule: Some(0)
            }
        );
        // Site B is not site A: the second rule sends it to the origin.
        assert_eq!(
            decide(&r, "vmlinuz-new", B, c),
            Decision {
                action: Action::Origin,
                rule: Some(1)
            }
        );
        assert_eq!(decide(&r, "pxelinux.0", B, c).rule, None);
    }

    #[test]
    fn clients_by_mac_and_architecture() {
        let r = rules(
            r#"
            [[rule]]
            mac = "52:54:00:*"
            action = "origin"
            [[rule]]
            arch = 7
            file = "*.efi"
            action = "origin"
            "#,
        );
        let vm = Client {
            mac: Some([0x52, 0x54, 0, 0xab, 0xcd, 0xef]),
            arch: None,
        };
        let efi = Client {
            mac: Some([2, 0, 0, 0, 0, 1]),
            arch: Some(7),
        };
        let bios = Client {
            mac: Some([2, 0, 0, 0, 0, 1]),
            arch: Some(0),
        };
        assert_eq!(decide(&r, "x", A, vm).action, Action::Origin);
        assert_eq!(decide(&r, "grubx64.efi", A, efi).rule, Some(1));
        assert_eq!(decide(&r, "grubx64.efi", A, bios).rule, None);
        assert_eq!(decide(&r, "pxelinux.0", A, efi).rule, None);
        // A client the bridge knows nothing of matches no client rule.
        assert_eq!(decide(&r, "grubx64.efi", A, Client::default()).rule, None);
    }

    #[test]
    fn the_named_bridge_serves_and_the_others_pass_it_on() {
        let r = rules(
            r#"
            [[rule]]
            site = "site-*"
            action = "serve"
            by = "bridge-b"
            "#,
        );
        let c = Client::default();
        assert_eq!(decide(&r, "x", B, c).action, Action::Serve);
        assert_eq!(decide(&r, "x", A, c).action, Action::Origin);
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        for (text, want) in [
            ("[[rule]]\naction = \"maybe\"", "unknown variant"),
            ("[[rule]]\nfile = \"x\"", "missing field `action`"),
            (
                "[[rule]]\naction = \"serve\"\nfiles = \"x\"",
                "unknown field",
            ),
            ("[[rule]]\naction = \"origin\"\nby = \"a\"", "rule 1: by"),
            ("[[rule]]\naction = \"serve\"\nby = \"a.b\"", "rule 1: by"),
            (
                "[[rule]]\naction = \"serve\"\nmac = \"52:54:00:XX\"",
                "rule 1: mac",
            ),
            ("[[rule]]\naction = \"serve\"\nfile = \"\"", "rule 1: file"),
            ("[[rule]]\naction = \"serve\"\narch = 70000", "arch"),
        ] {
            let e = parse_file(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let many = "[[rule]]\naction = \"serve\"\n".repeat(MAX_RULES + 1);
        assert_eq!(
            parse_file(&many).unwrap_err(),
            PolicyError::TooMany(MAX_RULES + 1)
        );
        assert_eq!(parse_file("").unwrap(), Vec::new());
    }

    #[test]
    fn cache_rules_direct_each_version_once() {
        let c = parse_policy_file(
            "[[cache]]\nfile = \"kernels/*\"\nsite = \"site-b\"\n[[cache]]\nfile = \"*.efi\"\n",
        )
        .unwrap();
        assert_eq!(
            c.cache[0].target(),
            crate::doc::Target::Site("site-b".into())
        );
        assert_eq!(c.cache[1].target(), crate::doc::Target::All);
        let mut a = AutoCache::default();
        let table = [
            ("kernels/a", [1; 32]),
            ("kernels/b", [2; 32]),
            ("x.efi", [3; 32]),
            ("other", [4; 32]),
        ];
        let mut n = 0;
        let mut id = || {
            n += 1;
            format!("d{n}")
        };
        let short = |d: Vec<AutoDirective>| -> Vec<(usize, Vec<String>)> {
            d.into_iter().map(|d| (d.rule, d.files)).collect()
        };
        let due = short(a.due(0, &c.cache, table, &mut id));
        assert_eq!(
            due,
            vec![
                (0, vec!["kernels/a".to_string(), "kernels/b".to_string()]),
                (1, vec!["x.efi".to_string()])
            ]
        );
        assert!(
            a.due(0, &c.cache, table, &mut id).is_empty(),
            "directed once"
        );
        // A new version of one file: directed again, alone.
        let changed = [("kernels/a", [9; 32]), ("kernels/b", [2; 32])];
        assert_eq!(
            short(a.due(0, &c.cache, changed, &mut id)),
            vec![(0, vec!["kernels/a".to_string()])]
        );
        for (text, want) in [
            ("[[cache]]\nsite = \"s\"", "missing field `file`"),
            (
                "[[cache]]\nfile = \"x\"\nsite = \"a.b\"",
                "rule 1: cache.site",
            ),
            (
                "[[cache]]\nfile = \"x\"\nsite = \"a\"\nbridges = [\"b\"]",
                "not both",
            ),
        ] {
            let e = parse_policy_file(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_failed_pre_staging_directive_is_retried_with_backoff() {
        let c = parse_policy_file("[[cache]]\nfile = \"k*\"\n").unwrap();
        let mut a = AutoCache::default();
        let mut n = 0;
        let mut id = || {
            n += 1;
            format!("d{n}")
        };
        let table = [("k1", [1; 32]), ("k2", [2; 32])];
        let d = a.due(0, &c.cache, table, &mut id);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].id.as_str(), d[0].retry), ("d1", false));
        // A bridge gave k2 up (the origin did not answer): k2 alone again,
        // after AUTO_RETRY_MIN_MS, in a retry directive.
        a.file_failed(1_000, "d1", "k2");
        a.file_failed(1_000, "other-run", "k1");
        assert_eq!(a.waiting(), 1);
        assert!(a
            .due(1_000 + AUTO_RETRY_MIN_MS - 1, &c.cache, table, &mut id)
            .is_empty());
        let d = a.due(1_000 + AUTO_RETRY_MIN_MS, &c.cache, table, &mut id);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].id.as_str(), d[0].retry), ("d2", true));
        assert_eq!(d[0].files, vec!["k2".to_string()]);
        assert_eq!(a.waiting(), 0);
        // The old directive's failure, seen again (a replayed watch), is
        // not the current one's: nothing scheduled.
        a.file_failed(4_000, "d1", "k2");
        assert_eq!(a.waiting(), 0);
        // The retry's put failed: again after twice the wait, then the
        // wait doubles up to AUTO_RETRY_MAX_MS.
        a.put_failed(5_000, "d2");
        assert!(a
            .due(5_000 + 2 * AUTO_RETRY_MIN_MS - 1, &c.cache, table, &mut id)
            .is_empty());
        let mut now = 5_000 + 2 * AUTO_RETRY_MIN_MS;
        let mut last_wait = 0;
        for _ in 0..12 {
            let d = a.due(now, &c.cache, table, &mut id);
            assert_eq!(d.len(), 1, "due at {now}");
            a.put_failed(now, &d[0].id);
            let next = (now..now + AUTO_RETRY_MAX_MS + 1)
                .step_by(1_000)
                .find(|t| {
                    a.directed
                        .values()
                        .any(|e| e.retry_at_ms.is_some_and(|r| r <= *t))
                })
                .unwrap();
            last_wait = next - now;
            now = next;
        }
        assert_eq!(last_wait, AUTO_RETRY_MAX_MS);
        assert_eq!(a.retries, 14);
    }
}
