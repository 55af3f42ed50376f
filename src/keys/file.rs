//! The key table file, hashes only, in one of two shapes: YAML (`keys:` list; for people and
//! tables up to tens of thousands of keys) or JSON Lines (one key object per line; for large
//! tables: a million keys load in about a second). The shape is told by the first line. Parsed
//! strictly (unknown fields are errors) and validated whole, so a half-written or hand-mangled
//! file is refused, never half-applied.

use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;

// Build-time maps hash operator-written data, not request data: a fast non-keyed hasher is
// safe here and halves the load time of a large table.
use rustc_hash::{FxHashMap, FxHashSet};

use http::HeaderValue;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::scope::{Catalogue, KeyType};
use super::{Access, AccessHeaders, Environment, KeyHash, KeyRecord, KeyTable, KeyTimes, Profile, Scope, ScopeSet};

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTable {
    #[serde(default)]
    pub keys: Vec<RawKey>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub id: String,
    pub hash: String,
    #[serde(default)]
    pub label: String,
    pub environment: Environment,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub key_type: Option<KeyType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clinics: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_ips: Vec<IpNet>,
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub created_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub not_before: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_reason: Option<String>,
    /// Rotation links: the key this one replaced, and the key that replaced this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_to: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<OffsetDateTime>,
}

/// Why a table was refused. Every problem is listed, each naming the entry it is in.
#[derive(Debug)]
pub struct TableError {
    pub source: String,
    pub problems: Vec<String>,
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key table {} is invalid:", self.source)?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TableError {}

/// Builds a table from JSON Lines, one line at a time.
pub struct JsonLines {
    builder: Builder,
    problems: Vec<String>,
}

impl JsonLines {
    pub fn new(capacity: usize, scopes: &Catalogue) -> JsonLines {
        JsonLines { builder: Builder::with_capacity(capacity, scopes), problems: Vec::new() }
    }

    pub fn add(&mut self, n: usize, line: &str) {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            return;
        }
        match serde_json::from_str::<RawKey>(l) {
            Ok(k) => self.builder.add(At::Line(n), k),
            Err(e) => self.problems.push(format!("line {n}: {e}")),
        }
    }

    /// A line that ends without a newline: the sign of a cut-off write.
    pub fn problem(&mut self, p: String) {
        self.problems.push(p);
    }

    pub fn finish(mut self) -> Result<KeyTable, Vec<String>> {
        match (self.problems.is_empty(), self.builder.finish()) {
            (true, Ok(t)) => Ok(t),
            (_, Ok(_)) => Err(self.problems),
            (_, Err(more)) => {
                self.problems.extend(more);
                Err(self.problems)
            }
        }
    }
}

/// The two shapes a table file can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Yaml,
    JsonLines,
}

/// JSON Lines when the first line that is not blank or a `#` comment is a JSON object.
pub fn shape_of(text: &str) -> Shape {
    let first = text.lines().map(str::trim_start).find(|l| !l.is_empty() && !l.starts_with('#'));
    match first {
        Some(l) if l.starts_with('{') => Shape::JsonLines,
        _ => Shape::Yaml,
    }
}

pub fn parse(text: &str, source: &str, scopes: &Catalogue) -> Result<KeyTable, TableError> {
    let err = |problems| TableError { source: source.to_string(), problems };
    if text.trim().is_empty() {
        // An empty file is far more often a truncated write than an intent to lock everyone out.
        return Err(err(vec!["file is empty (write `keys: []` to serve with no keys)".into()]));
    }
    match shape_of(text) {
        Shape::Yaml => {
            let raw: RawTable = serde_yaml::from_str(text).map_err(|e| err(vec![yaml_error(&e)]))?;
            build(raw, scopes).map_err(err)
        }
        Shape::JsonLines => {
            if !text.ends_with('\n') {
                // Every line ends in a newline: a missing one is the sign of a cut-off write.
                return Err(err(vec!["the last line has no newline: the file looks truncated".into()]));
            }
            let mut lines = JsonLines::new(text.len() / 160, scopes);
            for (n, line) in text.lines().enumerate() {
                lines.add(n + 1, line);
            }
            lines.finish().map_err(err)
        }
    }
}

/// Writes a table in the given shape (what `keygate keys` writes back).
pub fn render(table: &RawTable, shape: Shape) -> anyhow::Result<String> {
    let header = "# keygate key table: SHA-256 hashes only, never keys. Managed by `keygate keys`.\n";
    Ok(match shape {
        Shape::Yaml => format!("{header}{}", serde_yaml::to_string(table)?),
        Shape::JsonLines => {
            let mut out = String::from(header);
            for k in &table.keys {
                out.push_str(&serde_json::to_string(k)?);
                out.push('\n');
            }
            out
        }
    })
}

/// Reads a whole table into its raw entries (for the key CLI), in either shape.
pub fn parse_raw(text: &str) -> Result<RawTable, String> {
    match shape_of(text) {
        Shape::Yaml if text.trim().is_empty() => Ok(RawTable::default()),
        Shape::Yaml => serde_yaml::from_str(text).map_err(|e| yaml_error(&e)),
        Shape::JsonLines => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|(n, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", n + 1)))
            .collect::<Result<Vec<RawKey>, String>>()
            .map(|keys| RawTable { keys }),
    }
}

fn yaml_error(e: &serde_yaml::Error) -> String {
    match e.location() {
        Some(loc) => format!("line {}, column {}: {e}", loc.line(), loc.column()),
        None => e.to_string(),
    }
}

pub fn build(raw: RawTable, scopes: &Catalogue) -> Result<KeyTable, Vec<String>> {
    let mut b = Builder::with_capacity(raw.keys.len(), scopes);
    for (i, k) in raw.keys.into_iter().enumerate() {
        b.add(At::Text(format!("keys[{i}] (id {:?})", k.id)), k);
    }
    b.finish()
}

/// Builds a table one entry at a time, validated as a file is (a store's full load streams
/// rows through this rather than holding them all).
pub struct TableBuilder {
    builder: Builder,
    rows: usize,
}

impl TableBuilder {
    pub fn with_capacity(n: usize, scopes: &Catalogue) -> TableBuilder {
        TableBuilder { builder: Builder::with_capacity(n, scopes), rows: 0 }
    }

    pub fn add(&mut self, k: RawKey) {
        self.rows += 1;
        self.builder.add(At::Row(self.rows), k);
    }

    pub fn finish(self) -> Result<KeyTable, Vec<String>> {
        self.builder.finish()
    }
}

/// Where an entry came from, for error messages; lines are formatted only if there is an error.
enum At {
    Text(String),
    Line(usize),
    Row(usize),
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Text(s) => f.write_str(s),
            At::Line(n) => write!(f, "line {n}"),
            At::Row(n) => write!(f, "row {n}"),
        }
    }
}

/// Builds a table entry by entry, interning what keys share (access profiles),
/// and collecting every problem rather than stopping at the first.
struct Builder {
    records: Vec<KeyRecord>,
    at: Vec<At>,
    problems: Vec<String>,
    /// Interning by the raw text of the access fields (cheap to form, no per-key parsing).
    profiles: FxHashMap<String, Arc<Profile>>,
    scratch: String,
    /// Ids of keys that have a successor (rotated out, in their grace period or past it).
    rotated: Vec<Arc<str>>,
    /// The scopes a key may hold (checked once per distinct access profile).
    known: Catalogue,
}

impl Builder {
    fn with_capacity(n: usize, known: &Catalogue) -> Builder {
        Builder {
            records: Vec::with_capacity(n),
            at: Vec::with_capacity(n),
            problems: Vec::new(),
            profiles: FxHashMap::default(),
            scratch: String::new(),
            rotated: Vec::new(),
            known: known.clone(),
        }
    }

    fn add(&mut self, at: At, k: RawKey) {
        let rotated = k.rotated_to.is_some();
        match self.record(k) {
            Ok(r) => {
                if rotated {
                    self.rotated.push(Arc::clone(&r.id));
                }
                self.records.push(r);
                self.at.push(at);
            }
            // A line or row number alone does not say which key: name it (YAML's `at` does).
            Err((errs, id)) => match at {
                At::Text(_) => self.problems.extend(errs.into_iter().map(|e| format!("{at}: {e}"))),
                At::Line(_) | At::Row(_) => {
                    self.problems.extend(errs.into_iter().map(|e| format!("{at} (id {id:?}): {e}")))
                }
            },
        }
    }

    fn finish(mut self) -> Result<KeyTable, Vec<String>> {
        let mut ids: FxHashSet<&str> = FxHashSet::with_capacity_and_hasher(self.records.len(), Default::default());
        for (r, at) in self.records.iter().zip(&self.at) {
            if !ids.insert(&r.id) {
                self.problems.push(format!("{at}: duplicate id {:?}", r.id));
            }
        }
        drop(ids);
        let mut table = KeyTable::from_records(std::mem::take(&mut self.records));
        table.set_rotated_out(std::mem::take(&mut self.rotated));
        let dups = table.duplicate_hashes();
        for i in dups {
            self.problems.push(format!("{}: duplicate hash (the same key is listed twice)", self.at[i]));
        }
        if self.problems.is_empty() {
            Ok(table)
        } else {
            Err(self.problems)
        }
    }

    /// The record for `k`, or every problem with it and its id.
    fn record(&mut self, k: RawKey) -> Result<KeyRecord, (Vec<String>, String)> {
        let mut errs = Vec::new();
        if !valid_id(&k.id) {
            errs.push("id must be 1-64 characters of [A-Za-z0-9_-]".to_string());
        }
        let hash = KeyHash::from_hex(&k.hash).unwrap_or_else(|e| {
            errs.push(e);
            KeyHash([0; 32])
        });
        if k.scopes.is_some() && k.key_type.is_some() {
            errs.push("give either `type` or `scopes`, not both".into());
        }
        if k.scopes.as_ref().is_some_and(|s| s.is_empty()) {
            errs.push("scopes is empty: the key could reach nothing (omit it for the default read scopes)".into());
        }
        if let Some(clinics) = &k.clinics {
            if clinics.is_empty() {
                errs.push("clinics is empty: omit it for every clinic, or list at least one".into());
            }
            for c in clinics.iter().filter(|c| !valid_clinic(c)) {
                errs.push(format!("clinic {c:?} must be 1-128 characters of [A-Za-z0-9_.-]"));
            }
        }
        if let (Some(nb), Some(exp)) = (k.not_before, k.expires_at) {
            if nb >= exp {
                errs.push("not_before is not before expires_at".into());
            }
        }
        let profile = self.profile(&k, &mut errs);
        if !errs.is_empty() {
            return Err((errs, k.id));
        }
        // Not interned: real clinic lists are mostly per integration, and a million-entry
        // intern map cost more load time than the sharing saved memory.
        let clinics = k.clinics.as_ref().map(|list| Arc::<str>::from(list.join(",")));
        let times = KeyTimes {
            created_at: k.created_at,
            expires_at: k.expires_at,
            not_before: k.not_before,
            revoked_at: k.revoked_at,
        };
        Ok(KeyRecord::new(hash, Arc::from(k.id), profile.expect("no errors means a profile"), clinics, times))
    }

    /// The shared access profile for this entry's environment, scopes, IPs and tier: parsed
    /// and validated the first time a combination is seen, looked up by its text after that.
    fn profile(&mut self, k: &RawKey, errs: &mut Vec<String>) -> Option<Arc<Profile>> {
        self.scratch.clear();
        let sig = &mut self.scratch;
        let _ = write!(sig, "{}|{:?}|", k.environment.as_str(), k.key_type);
        for s in k.scopes.iter().flatten() {
            sig.push_str(s);
            sig.push(' ');
        }
        sig.push('|');
        for ip in &k.allowed_ips {
            let _ = write!(sig, "{ip} ");
        }
        sig.push('|');
        sig.push_str(k.rate_limit.as_deref().unwrap_or(""));
        if let Some(p) = self.profiles.get(sig.as_str()) {
            return Some(Arc::clone(p));
        }
        let scopes: Vec<Scope> = match (&k.scopes, k.key_type) {
            (Some(list), None) => {
                let mut parsed = Vec::with_capacity(list.len());
                for s in list {
                    match Scope::parse(s) {
                        Ok(scope) if self.known.knows(s) => parsed.push(scope),
                        Ok(_) => errs.push(self.known.unknown(s)),
                        Err(e) => errs.push(e),
                    }
                }
                parsed
            }
            (None, Some(t)) => t.scopes(),
            (None, None) => ScopeSet::default_read().iter().cloned().collect(),
            (Some(_), Some(_)) => return None,
        };
        if !errs.is_empty() {
            return None;
        }
        let access = Access {
            environment: k.environment,
            scopes: ScopeSet::new(scopes),
            allowed_ips: k.allowed_ips.clone(),
            rate_limit_tier: k.rate_limit.clone(),
        };
        let headers = AccessHeaders {
            scopes: header(&access.scopes.header_value()),
            environment: HeaderValue::from_static(access.environment.as_str()),
        };
        let p = Arc::new(Profile { access, headers });
        self.profiles.insert(self.scratch.clone(), Arc::clone(&p));
        Some(p)
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn valid_clinic(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= 128
        && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Scopes were validated to a header-safe charset above.
fn header(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("validated to a header-safe charset")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, source: &str) -> Result<KeyTable, TableError> {
        super::parse(text, source, &Catalogue::default())
    }

    fn h(c: char) -> String {
        c.to_string().repeat(64)
    }

    #[test]
    fn a_good_table_loads_with_default_read_scopes() {
        let t = parse(
            &format!("keys:\n  - id: k1\n    hash: {}\n    environment: live\n    clinics: [c1, c2]\n", h('a')),
            "t",
        )
        .unwrap();
        let r = t.lookup(&KeyHash::from_hex(&h('a')).unwrap()).unwrap();
        assert_eq!(r.clinics.as_deref(), Some("c1,c2"));
        assert_eq!(r.profile.headers.scopes, "interactions:read metrics:read campaigns:read clinics:read");
        assert_eq!(r.profile.headers.environment, "live");
    }

    #[test]
    fn every_key_is_found_by_its_id_and_nothing_else_is() {
        let mut text = String::from("keys:\n");
        for i in 0..2000 {
            text.push_str(&format!("  - id: key_{i}\n    hash: {:064x}\n    environment: live\n", i + 1));
        }
        let t = parse(&text, "t").unwrap();
        for i in 0..2000 {
            assert_eq!(&*t.by_id(&format!("key_{i}")).expect("found").id, format!("key_{i}"));
        }
        assert!(t.by_id("key_2000").is_none());
        assert!(t.by_id("").is_none());
    }

    #[test]
    fn unknown_field_is_an_error_with_a_line_number() {
        let e =
            parse(&format!("keys:\n  - id: k1\n    hash: {}\n    environment: live\n    scope: [x]\n", h('a')), "t")
                .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("line 5"), "{msg}");
        assert!(msg.contains("unknown field `scope`"), "{msg}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = format!(
            "keys:\n  - id: k1\n    hash: {a}\n    environment: live\n  - id: k1\n    hash: {a}\n    environment: test\n  - id: k3\n    hash: nothex\n    environment: live\n  - id: k4\n    hash: {b}\n    environment: live\n    scopes: [bad]\n",
            a = h('a'),
            b = h('b')
        );
        let e = parse(&text, "t").unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.problems.len(), 4, "{msg}");
        for want in ["keys[1] (id \"k1\"): duplicate id", "keys[1] (id \"k1\"): duplicate hash", "keys[2]", "keys[3]"] {
            assert!(msg.contains(want), "{want} in {msg}");
        }
    }

    #[test]
    fn a_scope_no_route_knows_is_refused_naming_the_key_in_either_shape() {
        let yaml = format!(
            "keys:\n  - id: k_typo\n    hash: {}\n    environment: live\n    scopes: [\"invoices:raed\"]\n",
            h('a')
        );
        let msg = parse(&yaml, "t").unwrap_err().to_string();
        assert!(msg.contains(r#"keys[0] (id "k_typo"): unknown scope "invoices:raed""#), "{msg}");
        let line = format!(r#"{{"id":"k_typo","hash":"{}","environment":"live","scopes":["invoices:raed"]}}"#, h('a'));
        let msg = parse(&jsonl(&[line]), "t").unwrap_err().to_string();
        assert!(msg.contains(r#"line 1 (id "k_typo"): unknown scope "invoices:raed""#), "{msg}");
        // The same table is fine where the routes require that scope.
        let cat = Catalogue::new(["invoices:raed".to_string()]);
        assert_eq!(super::parse(&yaml, "t", &cat).unwrap().len(), 1);
    }

    #[test]
    fn every_key_holding_an_unknown_scope_is_named_though_they_share_a_profile() {
        let yaml = format!(
            "keys:\n  - id: k1\n    hash: {}\n    environment: live\n    scopes: [\"x:read\"]\n  - id: k2\n    hash: {}\n    environment: live\n    scopes: [\"x:read\"]\n",
            h('a'),
            h('b')
        );
        let e = parse(&yaml, "t").unwrap_err();
        assert_eq!(e.problems.len(), 2, "{e}");
    }

    #[test]
    fn empty_file_is_refused() {
        assert!(parse("  \n", "t").is_err());
        assert_eq!(parse("keys: []\n", "t").unwrap().len(), 0);
    }

    #[test]
    fn truncated_file_is_refused() {
        let full = format!("keys:\n  - id: k1\n    hash: {}\n    environment: live\n", h('a'));
        assert!(parse(&full[..full.len() - 10], "t").is_err());
    }

    fn jsonl(lines: &[String]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    #[test]
    fn json_lines_tables_load_and_report_lines() {
        let good = jsonl(&[
            "# comment".into(),
            format!(r#"{{"id":"k1","hash":"{}","environment":"live","clinics":["c1"]}}"#, h('a')),
            format!(r#"{{"id":"k2","hash":"{}","environment":"test","type":"full"}}"#, h('b')),
        ]);
        assert_eq!(shape_of(&good), Shape::JsonLines);
        let t = parse(&good, "t").unwrap();
        assert_eq!(t.len(), 2);
        assert!(t.lookup(&KeyHash::from_hex(&h('b')).unwrap()).unwrap().scopes().grants("x:write"));

        let bad = jsonl(&[
            format!(r#"{{"id":"k1","hash":"{}","environment":"live"}}"#, h('a')),
            format!(r#"{{"id":"k1","hash":"{}","environment":"live","scope":[]}}"#, h('c')),
            format!(r#"{{"id":"k1","hash":"{}","environment":"live"}}"#, h('a')),
        ]);
        let msg = parse(&bad, "t").unwrap_err().to_string();
        assert!(msg.contains("line 2: unknown field `scope`"), "{msg}");
        assert!(msg.contains("line 3: duplicate id"), "{msg}");
        assert!(msg.contains("line 3: duplicate hash"), "{msg}");
    }

    #[test]
    fn a_json_lines_table_cut_mid_line_is_refused() {
        let full = format!("{{\"id\":\"k1\",\"hash\":\"{}\",\"environment\":\"live\"}}\n", h('a'));
        assert!(parse(&full[..full.len() - 1], "t").is_err());
        assert!(parse(&full[..full.len() - 5], "t").is_err());
    }

    #[test]
    fn keys_with_the_same_access_share_one_profile() {
        let t = parse(
            &format!(
                "keys:\n  - id: k1\n    hash: {}\n    environment: live\n    clinics: [c1]\n  - id: k2\n    hash: {}\n    environment: live\n    clinics: [c1]\n",
                h('a'),
                h('b')
            ),
            "t",
        )
        .unwrap();
        let a = t.lookup(&KeyHash::from_hex(&h('a')).unwrap()).unwrap();
        let b = t.lookup(&KeyHash::from_hex(&h('b')).unwrap()).unwrap();
        assert!(Arc::ptr_eq(&a.profile, &b.profile));
    }

    #[test]
    fn rendering_round_trips_in_both_shapes() {
        let raw = parse_raw(&format!("keys:\n  - id: k1\n    hash: {}\n    environment: live\n", h('a'))).unwrap();
        for shape in [Shape::Yaml, Shape::JsonLines] {
            let text = render(&raw, shape).unwrap();
            assert_eq!(shape_of(&text), shape);
            assert_eq!(parse(&text, "t").unwrap().len(), 1);
            assert_eq!(parse_raw(&text).unwrap().keys[0].id, "k1");
        }
    }
}
