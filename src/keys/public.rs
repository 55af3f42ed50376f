//! One key's public description (never its hash): the JSON shape `keygate keys --json` prints
//! and the admin API answers, so the two never drift apart.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::file::RawKey;
use super::table::KeyState;

/// The state the proxy would give this entry now (the same rule, `KeyState::at`).
pub fn state_of(k: &RawKey, now: OffsetDateTime) -> &'static str {
    let secs = |t: Option<OffsetDateTime>| t.map(|t| t.unix_timestamp());
    KeyState::at(secs(k.expires_at), secs(k.revoked_at), secs(k.not_before), now.unix_timestamp()).as_str()
}

pub fn ts(t: Option<OffsetDateTime>) -> Option<String> {
    t.and_then(|t| t.format(&Rfc3339).ok())
}

pub fn access(k: &RawKey) -> String {
    match (&k.key_type, &k.scopes) {
        (Some(t), _) => serde_yaml::to_string(t).unwrap_or_default().trim().to_string(),
        (None, Some(s)) => s.join(","),
        (None, None) => "read_only (default)".into(),
    }
}

/// Everything but the hash.
pub fn public_json(k: &RawKey, now: OffsetDateTime) -> serde_json::Value {
    serde_json::json!({
        "id": k.id,
        "label": k.label,
        "environment": k.environment.as_str(),
        "state": state_of(k, now),
        "access": access(k),
        "scopes": k.scopes,
        "type": k.key_type,
        "clinics": k.clinics,
        "allowed_ips": k.allowed_ips.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        "rate_limit": k.rate_limit,
        "created_at": ts(k.created_at),
        "expires_at": ts(k.expires_at),
        "not_before": ts(k.not_before),
        "revoked_at": ts(k.revoked_at),
        "revoke_reason": k.revoke_reason,
        "rotated_from": k.rotated_from,
        "rotated_to": k.rotated_to,
        "updated_at": ts(k.updated_at),
        "credits": k.credits,
        "quota": k.quota,
    })
}
