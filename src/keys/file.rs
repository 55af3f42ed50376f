//! The key table file: YAML, one entry per key, hashes only. Parsed strictly (unknown fields
//! are errors) and validated whole, so a half-written or hand-mangled file is refused, never
//! half-applied.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use http::HeaderValue;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::scope::KeyType;
use super::{Environment, InjectedHeaders, KeyHash, KeyRecord, KeyTable, Scope, ScopeSet};

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTable {
    #[serde(default)]
    pub keys: Vec<RawKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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

pub fn load(path: &Path) -> Result<KeyTable, TableError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| TableError { source: path.display().to_string(), problems: vec![format!("cannot read: {e}")] })?;
    parse(&text, &path.display().to_string())
}

pub fn parse(text: &str, source: &str) -> Result<KeyTable, TableError> {
    let err = |problems| TableError { source: source.to_string(), problems };
    if text.trim().is_empty() {
        // An empty file is far more often a truncated write than an intent to lock everyone out.
        return Err(err(vec!["file is empty (write `keys: []` to serve with no keys)".into()]));
    }
    let raw: RawTable = serde_yaml::from_str(text).map_err(|e| err(vec![yaml_error(&e)]))?;
    build(raw).map_err(err)
}

fn yaml_error(e: &serde_yaml::Error) -> String {
    match e.location() {
        Some(loc) => format!("line {}, column {}: {e}", loc.line(), loc.column()),
        None => e.to_string(),
    }
}

pub fn build(raw: RawTable) -> Result<KeyTable, Vec<String>> {
    let mut problems = Vec::new();
    let mut ids = HashSet::new();
    let mut hashes = HashSet::new();
    let mut records = Vec::with_capacity(raw.keys.len());
    for (i, k) in raw.keys.into_iter().enumerate() {
        let at = format!("keys[{i}] (id {:?})", k.id);
        if !ids.insert(k.id.clone()) {
            problems.push(format!("{at}: duplicate id"));
        }
        if !hashes.insert(k.hash.to_ascii_lowercase()) {
            problems.push(format!("{at}: duplicate hash (the same key is listed twice)"));
        }
        match record(k) {
            Ok(r) => records.push(r),
            Err(errs) => problems.extend(errs.into_iter().map(|e| format!("{at}: {e}"))),
        }
    }
    if problems.is_empty() {
        Ok(KeyTable::from_records(records))
    } else {
        Err(problems)
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

fn record(k: RawKey) -> Result<KeyRecord, Vec<String>> {
    let mut errs = Vec::new();
    if !valid_id(&k.id) {
        errs.push("id must be 1-64 characters of [A-Za-z0-9_-]".to_string());
    }
    let hash = KeyHash::from_hex(&k.hash).unwrap_or_else(|e| {
        errs.push(e);
        KeyHash([0; 32])
    });
    let scopes: Vec<Scope> = match (&k.scopes, k.key_type) {
        (Some(_), Some(_)) => {
            errs.push("give either `type` or `scopes`, not both".into());
            Vec::new()
        }
        (Some(list), None) => list.iter().filter_map(|s| Scope::parse(s).map_err(|e| errs.push(e)).ok()).collect(),
        (None, Some(t)) => t.scopes(),
        (None, None) => ScopeSet::default_read().iter().cloned().collect(),
    };
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
    if !errs.is_empty() {
        return Err(errs);
    }
    let scopes = ScopeSet::new(scopes);
    let headers = InjectedHeaders {
        allowed_clinics: header(&k.clinics.as_ref().map_or_else(|| "*".to_string(), |c| c.join(","))),
        scopes: header(&scopes.header_value()),
        key_id: header(&k.id),
        environment: HeaderValue::from_static(k.environment.as_str()),
    };
    Ok(KeyRecord {
        id: k.id,
        hash,
        label: k.label,
        environment: k.environment,
        scopes,
        clinics: k.clinics,
        allowed_ips: k.allowed_ips,
        created_at: k.created_at,
        expires_at: k.expires_at,
        not_before: k.not_before,
        revoked_at: k.revoked_at,
        rate_limit_tier: k.rate_limit,
        headers,
    })
}

/// Ids, clinics and scopes were validated to a header-safe charset above.
fn header(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("validated to a header-safe charset")
}

/// Where the table lives; shared by the proxy's reloader and the key CLI.
#[derive(Debug, Clone)]
pub struct FileSource {
    pub path: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(r.headers.allowed_clinics, "c1,c2");
        assert_eq!(r.headers.scopes, "interactions:read metrics:read campaigns:read clinics:read");
        assert_eq!(r.headers.environment, "live");
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
            "keys:\n  - id: k1\n    hash: {a}\n    environment: live\n    scopes: [bad]\n  - id: k1\n    hash: {a}\n    environment: test\n  - id: k3\n    hash: nothex\n    environment: live\n",
            a = h('a')
        );
        let e = parse(&text, "t").unwrap_err();
        assert_eq!(e.problems.len(), 4, "{e}");
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
}
