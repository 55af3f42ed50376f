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
    let old = find(t, id)?;
    if old.revoked_at.is_some() {
        return Err(LifecycleError::Revoked(id.to_string()));
    }
    if let Some(next) = &old.rotated_to {
        return Err(LifecycleError::AlreadyRotated(id.to_string(), next.clone()));
    }
    if old.expires_at.is_some_and(|e| e <= now) {
        return Err(LifecycleError::Invalid(format!("key {id:?} has already expired; create a new key")));
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
    let k = find(t, id)?;
    if k.revoked_at.is_some() {
        return Err(LifecycleError::Revoked(id.to_string()));
    }
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
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

    fn spec(label: &str) -> KeySpec {
        KeySpec { label: label.into(), ..KeySpec::default() }
    }

    fn new_key(t: &mut RawTable, s: KeySpec) -> Result<Created, LifecycleError> {
        create(t, s, Environment::Live, "dpl_live_", &Catalogue::default(), NOW)
    }

    #[test]
    fn create_stores_only_the_hash_and_derives_the_id() {
        let mut t = RawTable::default();
        let c = new_key(&mut t, spec("reporting")).unwrap();
        let text = serde_yaml::to_string(&t).unwrap();
        assert!(!text.contains(&c.secret), "the secret is never stored");
        assert!(text.contains(&KeyHash::of(&c.secret).to_hex()));
        assert_eq!(c.id, key_id(&c.secret));
        assert!(!KeyHash::of(&c.secret).to_hex().contains(&c.id[4..]), "the id is not a slice of the stored hash");
        assert_eq!(t.keys[0].created_at, Some(NOW));
    }

    #[test]
    fn unknown_scope_past_expiry_and_missing_label_change_nothing() {
        let mut t = RawTable::default();
        let bad = [
            KeySpec { scopes: Some(vec!["interactions:delete".into()]), ..spec("x") },
            KeySpec { expires_at: Some(NOW), ..spec("x") },
            spec(" "),
            KeySpec { clinics: Some(vec!["bad clinic".into()]), ..spec("x") },
            KeySpec { key_type: Some(KeyType::Full), scopes: Some(vec!["*".into()]), ..spec("x") },
        ];
        for s in bad {
            assert!(new_key(&mut t, s.clone()).is_err(), "{s:?}");
        }
        assert!(t.keys.is_empty());
    }

    #[test]
    fn custom_route_scopes_are_known_when_the_catalogue_has_them() {
        let mut t = RawTable::default();
        let cat = Catalogue::new(["reports:read".to_string()]);
        let s = KeySpec { scopes: Some(vec!["reports:read".into(), "reports:*".into()]), ..spec("x") };
        assert!(create(&mut t, s, Environment::Live, "dpl_live_", &cat, NOW).is_ok());
    }

    #[test]
    fn revoke_sets_time_and_reason_once() {
        let mut t = RawTable::default();
        let c = new_key(&mut t, spec("x")).unwrap();
        revoke(&mut t, &c.id, Some("leaked".into()), NOW).unwrap();
        assert_eq!(t.keys[0].revoked_at, Some(NOW));
        assert_eq!(t.keys[0].revoke_reason.as_deref(), Some("leaked"));
        let later = NOW + time::Duration::hours(1);
        let again = revoke(&mut t, &c.id, Some("twice".into()), later);
        assert_eq!(again, Ok(Revoked::Already { at: NOW, reason: Some("leaked".into()) }));
        assert_eq!((t.keys[0].revoked_at, t.keys[0].updated_at), (Some(NOW), Some(NOW)), "the first one stands");
        assert_eq!(revoke(&mut t, "nope", None, NOW), Err(LifecycleError::UnknownId("nope".into())));
    }

    #[test]
    fn rotate_links_both_copies_access_and_sets_the_grace_expiry() {
        let mut t = RawTable::default();
        let s = KeySpec {
            scopes: Some(vec!["metrics:read".into()]),
            clinics: Some(vec!["c1".into()]),
            allowed_ips: vec!["10.0.0.0/8".parse().unwrap()],
            expires_at: Some(NOW + time::Duration::days(90)),
            ..spec("billing")
        };
        let old = new_key(&mut t, s).unwrap();
        let later = NOW + time::Duration::days(10);
        let new = rotate(&mut t, &old.id, Duration::from_secs(86400), "dpl_live_", later).unwrap();
        let (o, n) = (&t.keys[0], &t.keys[1]);
        assert_eq!(o.expires_at, Some(later + time::Duration::days(1)));
        assert_eq!(o.rotated_to.as_deref(), Some(new.id.as_str()));
        assert_eq!(n.rotated_from.as_deref(), Some(old.id.as_str()));
        assert_eq!(
            (n.label.as_str(), &n.scopes, &n.clinics, &n.allowed_ips),
            (o.label.as_str(), &o.scopes, &o.clinics, &o.allowed_ips)
        );
        assert_eq!(n.expires_at, Some(later + time::Duration::days(90)), "the 90-day lifetime carries over");
        assert!(matches!(
            rotate(&mut t, &old.id, Duration::ZERO, "dpl_live_", later),
            Err(LifecycleError::AlreadyRotated(..))
        ));
    }

    #[test]
    fn update_validates_before_changing_anything() {
        let mut t = RawTable::default();
        let c = new_key(&mut t, spec("x")).unwrap();
        let cat = Catalogue::default();
        let bad = Update { label: Some("y".into()), scopes: Some(vec!["nope:read".into()]), ..Update::default() };
        assert!(update(&mut t, &c.id, bad, &cat, NOW).is_err());
        assert_eq!(t.keys[0].label, "x", "nothing changed");
        let good = Update {
            clinics: Some(Some(vec!["c9".into()])),
            expires_at: Some(Some(NOW + time::Duration::hours(1))),
            ..Update::default()
        };
        assert_eq!(update(&mut t, &c.id, good, &cat, NOW), Ok(Updated::Changed));
        assert_eq!(t.keys[0].clinics, Some(vec!["c9".to_string()]));
        assert_eq!(t.keys[0].updated_at, Some(NOW));
    }

    #[test]
    fn an_update_that_changes_nothing_keeps_updated_at() {
        let mut t = RawTable::default();
        let c = new_key(&mut t, KeySpec { clinics: Some(vec!["c1".into()]), ..spec("x") }).unwrap();
        let same = Update { label: Some("x".into()), clinics: Some(Some(vec!["c1".into()])), ..Update::default() };
        let later = NOW + time::Duration::hours(1);
        assert_eq!(update(&mut t, &c.id, same, &Catalogue::default(), later), Ok(Updated::Unchanged));
        assert_eq!(t.keys[0].updated_at, None, "no change, no new updated_at");
    }
}
