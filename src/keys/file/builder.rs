//! Validating a table entry by entry: ids, hashes, clinics, IP lists, scopes against the
//! catalogue, times; access profiles shared between keys; every problem collected, each naming
//! where it is (line or entry).

use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;

use http::HeaderValue;
use rustc_hash::{FxHashMap, FxHashSet};

use super::RawKey;
use crate::keys::scope::Catalogue;
use crate::keys::{
    Access, AccessHeaders, KeyHash, KeyRecord, KeyTable, KeyTimes, Profile, Scope, ScopeSet, UsageLimits,
};

/// Where an entry came from, for error messages; lines are formatted only if there is an error.
pub(super) enum At {
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
pub(super) struct Builder {
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
    pub(super) fn with_capacity(n: usize, known: &Catalogue) -> Builder {
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

    pub(super) fn add(&mut self, at: At, k: RawKey) {
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

    pub(super) fn finish(mut self) -> Result<KeyTable, Vec<String>> {
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
        if k.credits.is_some() || k.quota.is_some() {
            let _ = write!(sig, "|{:?}|{:?}|{:?}", k.credits, k.quota, k.usage_counter);
        }
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
        let limits = usage_limits(k, errs);
        if !errs.is_empty() {
            return None;
        }
        let access = Access {
            environment: k.environment,
            scopes: ScopeSet::new(scopes),
            allowed_ips: k.allowed_ips.clone(),
            rate_limit_tier: k.rate_limit.clone(),
            limits,
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

/// The entry's credits and quotas, validated; `None` when it has neither.
fn usage_limits(k: &RawKey, errs: &mut Vec<String>) -> Option<UsageLimits> {
    if k.credits.is_none() && k.quota.is_none() {
        return None;
    }
    let credits = k.credits.as_ref().and_then(|c| c.plan().map_err(|e| errs.push(e)).ok());
    let quota = k.quota.map(|q| q.calendar().map_err(|e| errs.push(e)).unwrap_or_default()).unwrap_or_default();
    if let Some(c) = k.usage_counter.as_deref().filter(|c| !valid_id(c)) {
        errs.push(format!("usage_counter {c:?} must be a key id (1-64 characters of [A-Za-z0-9_-])"));
    }
    Some(UsageLimits { credits, quota, counter: k.usage_counter.as_deref().map(Arc::from) })
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
