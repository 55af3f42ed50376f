//! The key lifecycle as pure operations on a table: create, revoke, rotate, update. They take
//! the clock and return the new secret (shown once by the caller); they never write files.
//! Bad input is an error and leaves the table as it was.

use std::time::Duration;

use ipnet::IpNet;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::file::{RawKey, RawTable};
use super::generate::generate;
use super::scope::{KeyType, Scope};
use super::{Environment, KeyHash};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LifecycleError {
    #[error("no key with id {0:?}")]
    UnknownId(String),
    /// The catalogue's message: the scope, and the nearest known one or the known list.
    #[error("{0}")]
    UnknownScope(String),
    #[error("{0}")]
    Invalid(String),
    #[error("expiry {0} is not in the future")]
    PastExpiry(String),
    #[error("key {0:?} is revoked; create a new key instead")]
    Revoked(String),
    #[error("key {0:?} was already rotated to {1:?}; rotate that one")]
    AlreadyRotated(String, String),
    #[error("key {0:?} has already expired; create a new key")]
    Expired(String),
}

/// The public id of a key: derived from the secret through a domain-separated hash, so it is
/// stable and unique but says nothing usable about the secret (nor equals its stored hash).
pub fn key_id(secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"keygate/key-id\0");
    h.update(secret.as_bytes());
    format!("key_{}", &hex::encode(h.finalize())[..20])
}

pub use super::scope::Catalogue;

/// Checks scopes a command was given against the catalogue: well formed, known, not empty.
pub fn check_scopes(cat: &Catalogue, scopes: &[String]) -> Result<(), LifecycleError> {
    for s in scopes {
        Scope::parse(s).map_err(LifecycleError::Invalid)?;
        if !cat.knows(s) {
            return Err(LifecycleError::UnknownScope(cat.unknown(s)));
        }
    }
    if scopes.is_empty() {
        return Err(LifecycleError::Invalid("scopes is empty".into()));
    }
    Ok(())
}

/// What a new key may carry. `None` means the default (all read scopes, all clinics, …).
#[derive(Debug, Clone, Default)]
pub struct KeySpec {
    pub label: String,
    pub key_type: Option<KeyType>,
    pub scopes: Option<Vec<String>>,
    pub clinics: Option<Vec<String>>,
    pub allowed_ips: Vec<IpNet>,
    pub expires_at: Option<OffsetDateTime>,
    pub rate_limit: Option<String>,
}

/// A new key: the secret is returned exactly once, here.
#[derive(Debug)]
pub struct Created {
    pub id: String,
    pub secret: String,
}

fn find<'t>(t: &'t mut RawTable, id: &str) -> Result<&'t mut RawKey, LifecycleError> {
    t.keys.iter_mut().find(|k| k.id == id).ok_or_else(|| LifecycleError::UnknownId(id.to_string()))
}

/// The key `id` if it may still change (rotate, update): a revoked key is final.
fn find_unrevoked<'t>(t: &'t mut RawTable, id: &str) -> Result<&'t mut RawKey, LifecycleError> {
    let k = find(t, id)?;
    if k.revoked_at.is_some() {
        return Err(LifecycleError::Revoked(id.to_string()));
    }
    Ok(k)
}

fn check_spec(s: &KeySpec, cat: &Catalogue, now: OffsetDateTime) -> Result<(), LifecycleError> {
    if s.label.trim().is_empty() {
        return Err(LifecycleError::Invalid("a label is required (what is this key for?)".into()));
    }
    if s.key_type.is_some() && s.scopes.is_some() {
        return Err(LifecycleError::Invalid("give --type or --scopes, not both".into()));
    }
    if let Some(scopes) = &s.scopes {
        check_scopes(cat, scopes)?;
    }
    if let Some(exp) = s.expires_at {
        if exp <= now {
            return Err(LifecycleError::PastExpiry(exp.to_string()));
        }
    }
    Ok(())
}

pub fn create(
    t: &mut RawTable,
    spec: KeySpec,
    environment: Environment,
    prefix: &str,
    cat: &Catalogue,
    now: OffsetDateTime,
) -> Result<Created, LifecycleError> {
    check_spec(&spec, cat, now)?;
    let secret = generate(prefix);
    let key = entry(&secret, spec, environment, now);
    validate_entry(&key, cat)?;
    let id = key.id.clone();
    t.keys.push(key);
    Ok(Created { id, secret })
}

/// A fresh table entry for `secret`: hash and derived id, the spec's access, created now.
fn entry(secret: &str, spec: KeySpec, environment: Environment, now: OffsetDateTime) -> RawKey {
    RawKey {
        id: key_id(secret),
        hash: KeyHash::of(secret).to_hex(),
        label: spec.label,
        environment,
        key_type: spec.key_type,
        scopes: spec.scopes,
        clinics: spec.clinics,
        allowed_ips: spec.allowed_ips,
        created_at: Some(now),
        expires_at: spec.expires_at,
        not_before: None,
        revoked_at: None,
        rate_limit: spec.rate_limit,
        revoke_reason: None,
        rotated_from: None,
        rotated_to: None,
        updated_at: None,
        credits: None,
        quota: None,
        usage_counter: None,
    }
}

/// Checks one entry exactly as the proxy's loader will (clinic charset, empty lists, …).
fn validate_entry(k: &RawKey, cat: &Catalogue) -> Result<(), LifecycleError> {
    let probe = RawTable { keys: vec![k.clone()] };
    super::file::build(probe, cat).map(|_| ()).map_err(|p| LifecycleError::Invalid(p.join("; ")))
}

/// What `revoke` did: revoking twice is not an error (a retried script, two operators), but
/// the first revocation's time and reason stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    Now,
    Already { at: OffsetDateTime, reason: Option<String> },
}

pub fn revoke(
    t: &mut RawTable,
    id: &str,
    reason: Option<String>,
    now: OffsetDateTime,
) -> Result<Revoked, LifecycleError> {
    let k = find(t, id)?;
    if let Some(at) = k.revoked_at {
        return Ok(Revoked::Already { at, reason: k.revoke_reason.clone() });
    }
    k.revoked_at = Some(now);
    k.revoke_reason = reason;
    k.updated_at = Some(now);
    Ok(Revoked::Now)
}

/// Issues a successor with the same label, scopes, clinics, IPs and tier. The old key keeps
/// working for `grace`, then answers `API_KEY_EXPIRED`. A key with a lifetime passes it on.
pub fn rotate(
    t: &mut RawTable,
    id: &str,
    grace: Duration,
    prefix: &str,
    now: OffsetDateTime,
) -> Result<Created, LifecycleError> {
    let old = find_unrevoked(t, id)?;
    if let Some(next) = &old.rotated_to {
        return Err(LifecycleError::AlreadyRotated(id.to_string(), next.clone()));
    }
    if old.expires_at.is_some_and(|e| e <= now) {
        return Err(LifecycleError::Expired(id.to_string()));
    }
    let secret = generate(prefix);
    let new_id = key_id(&secret);
    let lifetime = match (old.created_at, old.expires_at) {
        (Some(c), Some(e)) if e > c => Some(e - c),
        _ => None,
    };
    let grace_end = now + grace;
    old.expires_at = Some(old.expires_at.map_or(grace_end, |e| e.min(grace_end)));
    old.rotated_to = Some(new_id.clone());
    old.updated_at = Some(now);
    let new = RawKey {
        id: new_id.clone(),
        hash: KeyHash::of(&secret).to_hex(),
        created_at: Some(now),
        expires_at: lifetime.map(|l| now + l),
        not_before: None,
        revoked_at: None,
        revoke_reason: None,
        rotated_from: Some(id.to_string()),
        rotated_to: None,
        updated_at: None,
        // The successor spends the same credits and quotas, however many rotations later.
        usage_counter: (old.credits.is_some() || old.quota.is_some())
            .then(|| old.usage_counter.clone().unwrap_or_else(|| id.to_string())),
        ..old.clone()
    };
    t.keys.push(new);
    Ok(Created { id: new_id, secret })
}

/// Adds a key issued elsewhere (its secret given, not generated): hashed on the way in, with
/// its id derived as for keys made here. The environment comes from the key's prefix.
pub fn import(
    t: &mut RawTable,
    secret: &str,
    spec: KeySpec,
    format: &super::KeyFormat,
    now: OffsetDateTime,
) -> Result<String, LifecycleError> {
    let environment = format
        .check(secret)
        .map_err(|e| LifecycleError::Invalid(format!("the key is not in the configured format ({e:?})")))?;
    let key = entry(secret, spec, environment, now);
    let id = key.id.clone();
    t.keys.push(key);
    Ok(id)
}

/// Changes to an existing key; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct Update {
    pub label: Option<String>,
    pub key_type: Option<KeyType>,
    pub scopes: Option<Vec<String>>,
    /// `Some(None)`: every clinic.
    pub clinics: Option<Option<Vec<String>>>,
    pub allowed_ips: Option<Vec<IpNet>>,
    /// `Some(None)`: never expires.
    pub expires_at: Option<Option<OffsetDateTime>>,
    pub rate_limit: Option<Option<String>>,
}

pub fn update(
    t: &mut RawTable,
    id: &str,
    u: Update,
    cat: &Catalogue,
    now: OffsetDateTime,
) -> Result<Updated, LifecycleError> {
    let k = find_unrevoked(t, id)?;
    let mut next = k.clone();
    if let Some(l) = u.label {
        if l.trim().is_empty() {
            return Err(LifecycleError::Invalid("label cannot be empty".into()));
        }
        next.label = l;
    }
    match (u.key_type, u.scopes) {
        (Some(_), Some(_)) => return Err(LifecycleError::Invalid("give --type or --scopes, not both".into())),
        (Some(ty), None) => {
            next.key_type = Some(ty);
            next.scopes = None;
        }
        (None, Some(scopes)) => {
            check_scopes(cat, &scopes)?;
            next.key_type = None;
            next.scopes = Some(scopes);
        }
        (None, None) => {}
    }
    if let Some(c) = u.clinics {
        next.clinics = c;
    }
    if let Some(ips) = u.allowed_ips {
        next.allowed_ips = ips;
    }
    if let Some(exp) = u.expires_at {
        if let Some(e) = exp.filter(|e| *e <= now) {
            return Err(LifecycleError::PastExpiry(e.to_string()));
        }
        next.expires_at = exp;
    }
    if let Some(r) = u.rate_limit {
        next.rate_limit = r;
    }
    // A change that changes nothing leaves the key as it was, `updated_at` included.
    if next == *k {
        return Ok(Updated::Unchanged);
    }
    next.updated_at = Some(now);
    validate_entry(&next, cat)?;
    *k = next;
    Ok(Updated::Changed)
}

/// Whether `update` changed the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Updated {
    Changed,
    Unchanged,
}

#[cfg(test)]
mod tests;
