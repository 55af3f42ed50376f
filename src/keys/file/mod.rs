//! The key table file, hashes only, in one of two shapes: YAML (`keys:` list; for people and
//! tables up to tens of thousands of keys) or JSON Lines (one key object per line; for large
//! tables: a million keys load in about a second). The shape is told by the first line. Parsed
//! strictly (unknown fields are errors) and validated whole, so a half-written or hand-mangled
//! file is refused, never half-applied.

use std::fmt;

// Build-time maps hash operator-written data, not request data: a fast non-keyed hasher is
// safe here and halves the load time of a large table.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::credits::{RawCredits, RawQuota};
use super::scope::{Catalogue, KeyType};
use super::{Environment, KeyTable};

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
    /// A credit balance spent by forwarded requests at their route's cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits: Option<RawCredits>,
    /// Calendar quotas of this key, over its tier's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<RawQuota>,
    /// The key whose credit and quota counter this one spends: set by `keys rotate` on the
    /// successor of a key with credits or a quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_counter: Option<String>,
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

mod builder;

use builder::{At, Builder};

#[cfg(test)]
mod tests;
