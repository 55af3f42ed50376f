//! Rows ↔ `RawKey`: PostgreSQL builds and takes each key as the same JSON object the file
//! table's JSON Lines hold, so one strict parser (unknown fields refused) serves both stores and
//! there is no second hand-written mapping to drift.

use tokio_postgres::GenericClient;

use crate::keys::file::RawKey;

/// One key as a JSON object with the file table's field names (nulls left out).
fn json_expr() -> &'static str {
    "json_strip_nulls(json_build_object(
        'id', id, 'hash', hash, 'label', label, 'environment', environment, 'type', key_type,
        'scopes', scopes, 'clinics', clinics, 'allowed_ips', allowed_ips, 'rate_limit', rate_limit,
        'created_at', created_at, 'expires_at', expires_at, 'not_before', not_before,
        'revoked_at', revoked_at, 'revoke_reason', revoke_reason, 'rotated_from', rotated_from,
        'rotated_to', rotated_to, 'updated_at', updated_at, 'credits', credits, 'quota', quota,
        'usage_counter', usage_counter))::text"
}

/// `SELECT version, <key json>` over the keys whose version is above `$1`. Unordered on
/// purpose: the reader takes the highest version it saw, and an ORDER BY would make a full load
/// sort (and build the JSON of) every row before the first one arrives.
pub fn select_since(schema: &str) -> String {
    format!("SELECT version, {} FROM {schema}.keys WHERE version > $1", json_expr())
}

/// `SELECT version, <key json>` of the one key whose `column` (hash or id, both unique) is `$1`.
pub fn select_by(schema: &str, column: &str) -> String {
    format!("SELECT version, {} FROM {schema}.keys WHERE {column} = $1", json_expr())
}

pub fn parse(json: &str) -> Result<RawKey, String> {
    serde_json::from_str::<RawKey>(json).map_err(|e| format!("row {json:.80}…: {e}"))
}

/// Inserts or replaces `keys`, all stamped with `version`, in one statement.
pub async fn upsert(c: &impl GenericClient, schema: &str, keys: &[&RawKey], version: i64) -> anyhow::Result<u64> {
    let mut docs = Vec::with_capacity(keys.len());
    for k in keys {
        let mut v = serde_json::to_value(k)?;
        if let Some(obj) = v.as_object_mut() {
            if let Some(t) = obj.remove("type") {
                obj.insert("key_type".into(), t);
            }
        }
        docs.push(v);
    }
    let docs = serde_json::Value::Array(docs).to_string();
    let cols = "id, hash, label, environment, key_type, scopes, clinics, allowed_ips, rate_limit, created_at, \
                expires_at, not_before, revoked_at, revoke_reason, rotated_from, rotated_to, updated_at, credits, quota, usage_counter";
    let sql = format!(
        "INSERT INTO {schema}.keys ({cols}, version)
         SELECT id, hash, coalesce(label, ''), environment, key_type, scopes, clinics,
                coalesce(allowed_ips, '{{}}'), rate_limit, created_at, expires_at, not_before, revoked_at,
                revoke_reason, rotated_from, rotated_to, updated_at, credits, quota, usage_counter, $2
         FROM json_populate_recordset(NULL::{schema}.keys, $1::text::json)
         ON CONFLICT (id) DO UPDATE SET
             hash = EXCLUDED.hash, label = EXCLUDED.label, environment = EXCLUDED.environment,
             key_type = EXCLUDED.key_type, scopes = EXCLUDED.scopes, clinics = EXCLUDED.clinics,
             allowed_ips = EXCLUDED.allowed_ips, rate_limit = EXCLUDED.rate_limit,
             created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at,
             not_before = EXCLUDED.not_before, revoked_at = EXCLUDED.revoked_at,
             revoke_reason = EXCLUDED.revoke_reason, rotated_from = EXCLUDED.rotated_from,
             rotated_to = EXCLUDED.rotated_to, updated_at = EXCLUDED.updated_at, credits = EXCLUDED.credits,
             quota = EXCLUDED.quota, usage_counter = EXCLUDED.usage_counter, version = EXCLUDED.version"
    );
    Ok(c.execute(&sql, &[&docs, &version]).await?)
}
