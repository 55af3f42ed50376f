//! Authentication and authorisation, end to end: who may come in (the Authorization header,
//! the key's shape, environment and validity), from where (allowed IPs, trusted proxies), to
//! which route with which scopes, and for which clinics. Every refusal is checked to have
//! stopped at keygate: the upstream never sees a refused request.

mod access;
mod credentials;

use bytes::Bytes;
use http::Method;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub(crate) use crate::support::*;

const INTERACTIONS: &str = "/api/v1/clinics/clinic_001/interactions";
const EMPTY: &str = r#"{"success":true,"data":[]}"#;

/// Asserts a 401 with the standard error body and a Bearer challenge; returns the message.
fn assert_401(r: &Resp, code: &str) -> String {
    let message = r.assert_error(401, code);
    let challenge = r
        .headers
        .get("www-authenticate")
        .unwrap_or_else(|| panic!("a 401 carries WWW-Authenticate; headers: {:?}", r.headers))
        .to_str()
        .unwrap();
    assert!(challenge.starts_with("Bearer"), "challenge: {challenge}");
    message
}

/// An RFC 3339 timestamp `days` from now (negative: in the past).
fn days_from_now(days: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::days(days)).format(&Rfc3339).unwrap()
}

/// The same secret with the case of every letter in its body flipped (prefix untouched).
fn case_flipped(secret: &str) -> String {
    let (prefix, body) = secret.split_at("dpl_live_".len());
    let flipped: String = body
        .chars()
        .map(|c| if c.is_ascii_lowercase() { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
        .collect();
    format!("{prefix}{flipped}")
}

fn rid(r: &Resp) -> String {
    r.headers["x-request-id"].to_str().unwrap().to_string()
}

/// The audit line keygate wrote for the request with this id.
/// The decision line of a request (anomaly events share its target and request id).
fn audit_line(request_id: &str) -> String {
    logs()
        .lines()
        .find(|l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| {
                v["target"] == "keygate::audit" && v["request_id"] == request_id && v["message"] == "decision"
            })
        })
        .unwrap_or_else(|| panic!("no audit line for request {request_id}"))
        .to_string()
}
