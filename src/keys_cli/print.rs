//! What the key commands print: tables, one key's details, a new secret (once), and the JSON
//! shapes of `--json`. Never a hash or a secret other than the one just made.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::keys::file::RawKey;
use crate::keys::lifecycle;
use crate::keys::table::KeyState;
use crate::keys::Environment;

/// The state the proxy would give this entry now (the same rule, `KeyState::at`).
pub fn state_of(k: &RawKey, now: OffsetDateTime) -> &'static str {
    let secs = |t: Option<OffsetDateTime>| t.map(|t| t.unix_timestamp());
    KeyState::at(secs(k.expires_at), secs(k.revoked_at), secs(k.not_before), now.unix_timestamp()).as_str()
}

pub fn ts(t: Option<OffsetDateTime>) -> Option<String> {
    t.and_then(|t| t.format(&Rfc3339).ok())
}

fn access(k: &RawKey) -> String {
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

pub fn print_secret(c: &lifecycle::Created, env: Environment, json: bool, verb: &str) {
    if json {
        println!("{}", serde_json::json!({"id": c.id, "key": c.secret, "environment": env.as_str()}));
    } else {
        println!(
            "{verb} key {} ({env})\n\n    {}\n\nStore it now: keygate keeps only its hash and cannot show it again.",
            c.id, c.secret
        );
    }
}

pub fn print_table(keys: &[&RawKey], now: OffsetDateTime) {
    println!("{:<26} {:<5} {:<13} {:<28} {:<20} {:<25} LABEL", "ID", "ENV", "STATE", "ACCESS", "CLINICS", "EXPIRES");
    for k in keys {
        let clinics = k.clinics.as_ref().map_or_else(|| "*".to_string(), |c| c.join(","));
        println!(
            "{:<26} {:<5} {:<13} {:<28} {:<20} {:<25} {}",
            k.id,
            k.environment.as_str(),
            state_of(k, now),
            access(k),
            clinics,
            fmt_time(k.expires_at),
            k.label
        );
    }
}

pub fn print_show(v: &serde_json::Value) {
    if let Some(obj) = v.as_object() {
        for (k, val) in obj {
            let shown = match val {
                serde_json::Value::Null => "-".to_string(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("{k:<14} {shown}");
        }
    }
}

pub fn fmt_time(t: Option<OffsetDateTime>) -> String {
    ts(t).unwrap_or_else(|| "-".into())
}
