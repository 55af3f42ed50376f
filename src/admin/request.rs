//! The admin API's request bodies and query strings, parsed into the lifecycle's own inputs.
//! Every refusal is a 400 `INVALID_REQUEST` whose message names the field: unknown fields are
//! refused, each field is read on its own so a wrong type names it, and `null` means "clear"
//! only where the lifecycle has a clear (clinics, expiry, rate limit). Pure: no I/O, no clock.

use std::time::Duration;

use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::keys::lifecycle::{KeySpec, LifecycleError, Update};
use crate::keys::scope::KeyType;
use crate::keys::Environment;

/// The largest body the admin API reads.
pub const MAX_BODY: usize = 64 * 1024;

pub fn invalid(field: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::InvalidRequest(format!("field `{field}`: {why}"))
}

/// A JSON object's fields, taken one at a time.
struct Fields(Map<String, Value>);

impl Fields {
    /// An empty body is `{}`; anything else must be an object holding only `known` fields.
    fn parse(body: &[u8], known: &[&str]) -> Result<Fields, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Fields(Map::new()));
        }
        let v: Value = serde_json::from_slice(body).map_err(|e| invalid("body", format!("not JSON ({e})")))?;
        let Value::Object(map) = v else { return Err(invalid("body", "expected a JSON object")) };
        if let Some(k) = map.keys().find(|k| !known.contains(&k.as_str())) {
            // The client's own text, echoed: bounded.
            let k: String = k.chars().take(64).collect();
            return Err(invalid(&k, format!("unknown field (known: {})", known.join(", "))));
        }
        Ok(Fields(map))
    }

    /// Absent: `None`. `null` is refused (this field has nothing to clear).
    fn get<T: DeserializeOwned>(&mut self, name: &str, expected: &str) -> Result<Option<T>, ApiError> {
        match self.0.remove(name) {
            None => Ok(None),
            Some(Value::Null) => Err(invalid(name, format!("may not be null (expected {expected})"))),
            Some(v) => serde_json::from_value(v).map(Some).map_err(|_| invalid(name, format!("expected {expected}"))),
        }
    }

    /// Absent: `None`; `null`: `Some(None)` (clear it).
    fn nullable<T: DeserializeOwned>(&mut self, name: &str, expected: &str) -> Result<Option<Option<T>>, ApiError> {
        match self.0.remove(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(v) => serde_json::from_value(v)
                .map(|t| Some(Some(t)))
                .map_err(|_| invalid(name, format!("expected {expected} or null"))),
        }
    }
}

fn label(l: Option<String>) -> Result<Option<String>, ApiError> {
    match l {
        Some(l) if l.trim().is_empty() => Err(invalid("label", "may not be empty (what is this key for?)")),
        Some(l) if l.len() > 256 => Err(invalid("label", "at most 256 bytes")),
        other => Ok(other),
    }
}

fn key_type(f: &mut Fields) -> Result<Option<KeyType>, ApiError> {
    f.get::<KeyType>("type", "read_only, write or full")
}

fn ips(list: Option<Vec<String>>) -> Result<Option<Vec<IpNet>>, ApiError> {
    let parse = |s: &String| {
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| invalid("allowed_ips", format!("{s:?} is not an IP address or CIDR")))
    };
    list.map(|l| l.iter().map(parse).collect()).transpose()
}

fn expiry(s: Option<String>, now: OffsetDateTime) -> Result<Option<OffsetDateTime>, ApiError> {
    let Some(s) = s else { return Ok(None) };
    let t = OffsetDateTime::parse(&s, &Rfc3339).map_err(|_| invalid("expires_at", "expected RFC 3339"))?;
    if t <= now {
        return Err(invalid("expires_at", format!("{s} is not in the future")));
    }
    Ok(Some(t))
}

fn scopes(f: &mut Fields) -> Result<Option<Vec<String>>, ApiError> {
    let s = f.get::<Vec<String>>("scopes", "an array of scope names")?;
    if s.as_ref().is_some_and(Vec::is_empty) {
        return Err(invalid("scopes", "may not be empty"));
    }
    Ok(s)
}

/// `POST /admin/keys`: what the new key carries and its environment (else the proxy's).
pub fn create(body: &[u8], now: OffsetDateTime) -> Result<(KeySpec, Option<Environment>), ApiError> {
    const KNOWN: &[&str] =
        &["label", "environment", "type", "scopes", "clinics", "allowed_ips", "expires_at", "rate_limit"];
    let mut f = Fields::parse(body, KNOWN)?;
    let label = label(f.get("label", "a string")?)?.ok_or_else(|| invalid("label", "is required"))?;
    let environment = f
        .get::<String>("environment", "live or test")?
        .map(|e| e.parse::<Environment>().map_err(|_| invalid("environment", "expected live or test")))
        .transpose()?;
    let (key_type, scopes) = (key_type(&mut f)?, scopes(&mut f)?);
    if key_type.is_some() && scopes.is_some() {
        return Err(invalid("type", "give type or scopes, not both"));
    }
    let spec = KeySpec {
        label,
        key_type,
        scopes,
        clinics: f.get("clinics", "an array of clinic ids")?,
        allowed_ips: ips(f.get("allowed_ips", "an array of CIDRs")?)?.unwrap_or_default(),
        expires_at: expiry(f.get("expires_at", "an RFC 3339 time")?, now)?,
        rate_limit: f.get("rate_limit", "a tier name")?,
    };
    Ok((spec, environment))
}

/// `PATCH /admin/keys/{id}`: only the fields given change; `null` clears clinics (every
/// clinic), expires_at (never) and rate_limit (the default tier).
pub fn update(body: &[u8], now: OffsetDateTime) -> Result<Update, ApiError> {
    const KNOWN: &[&str] = &["label", "type", "scopes", "clinics", "allowed_ips", "expires_at", "rate_limit"];
    let mut f = Fields::parse(body, KNOWN)?;
    let label = label(f.get("label", "a string")?)?;
    let (key_type, scopes) = (key_type(&mut f)?, scopes(&mut f)?);
    if key_type.is_some() && scopes.is_some() {
        return Err(invalid("type", "give type or scopes, not both"));
    }
    let expires_at = match f.nullable::<String>("expires_at", "an RFC 3339 time")? {
        Some(Some(s)) => Some(expiry(Some(s), now)?),
        Some(None) => Some(None),
        None => None,
    };
    Ok(Update {
        label,
        key_type,
        scopes,
        clinics: f.nullable("clinics", "an array of clinic ids")?,
        allowed_ips: ips(f.get("allowed_ips", "an array of CIDRs")?)?,
        expires_at,
        rate_limit: f.nullable("rate_limit", "a tier name")?,
    })
}

/// `POST /admin/keys/{id}/rotate`: the old key's grace period (default 24h, as the CLI's).
pub fn rotate(body: &[u8]) -> Result<Duration, ApiError> {
    let mut f = Fields::parse(body, &["grace"])?;
    let grace = f.get::<String>("grace", "a duration such as 24h")?.unwrap_or_else(|| "24h".into());
    humantime::parse_duration(&grace).map_err(|_| invalid("grace", format!("{grace:?} is not a duration such as 24h")))
}

/// `POST /admin/keys/{id}/revoke`: an optional reason, kept in the event log.
pub fn revoke(body: &[u8]) -> Result<Option<String>, ApiError> {
    Fields::parse(body, &["reason"])?.get("reason", "a string")
}

/// `GET /admin/keys?…`: filters and one page.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub label: Option<String>,
    pub environment: Option<Environment>,
    pub state: Option<String>,
    pub limit: usize,
    /// The last id of the previous page: keys are listed in id order, after it.
    pub cursor: Option<String>,
}

pub const STATES: &[&str] = &["active", "expired", "revoked", "not_yet_valid"];

pub fn list(query: Option<&str>) -> Result<ListQuery, ApiError> {
    let mut q = ListQuery { limit: 100, ..ListQuery::default() };
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*k {
            "label" => q.label = Some(v.into_owned()),
            "environment" => {
                q.environment = Some(v.parse().map_err(|_| invalid("environment", "expected live or test"))?)
            }
            "state" if STATES.contains(&&*v) => q.state = Some(v.into_owned()),
            "state" => return Err(invalid("state", format!("expected one of {}", STATES.join(", ")))),
            "limit" => {
                q.limit =
                    v.parse().ok().filter(|n| (1..=1000).contains(n)).ok_or_else(|| invalid("limit", "1 to 1000"))?
            }
            "cursor" => q.cursor = Some(v.into_owned()),
            other => return Err(invalid(other, "unknown query parameter")),
        }
    }
    Ok(q)
}

/// A lifecycle refusal as the admin API answers it: a missing key is 404, a key whose state
/// forbids the change 409, anything about the input 400 naming its field.
pub fn refused(e: LifecycleError) -> ApiError {
    match e {
        LifecycleError::UnknownId(_) => ApiError::NotFound("key id"),
        LifecycleError::UnknownScope(m) => invalid("scopes", m),
        LifecycleError::PastExpiry(m) => invalid("expires_at", format!("{m} is not in the future")),
        LifecycleError::Revoked(_) | LifecycleError::AlreadyRotated(..) | LifecycleError::Expired(_) => {
            ApiError::Conflict(e.to_string())
        }
        LifecycleError::Invalid(m) => invalid("body", m),
    }
}

#[cfg(test)]
mod tests;
