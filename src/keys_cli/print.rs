//! What the key commands print: tables, one key's details, a new secret (once), and the JSON
//! shapes of `--json`. Never a hash or a secret other than the one just made.

use time::OffsetDateTime;

use crate::keys::file::RawKey;
use crate::keys::lifecycle;
use crate::keys::Environment;

pub use crate::keys::public::{access, public_json, state_of, ts};

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
