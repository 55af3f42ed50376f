//! The key CLI's writes: one transaction each, serialised by an advisory lock, that reads the
//! table, applies the same pure lifecycle operation the file store does, checks the result as a
//! proxy would, and writes the changed rows with a new change version, an audit event per
//! change, and a NOTIFY, all committed together or not at all.
//!
//! The lock also orders change versions by commit: a replica that has seen version N has seen
//! every change numbered below N.

use tokio_postgres::{Client, GenericClient};

use super::rows;
pub use crate::keys::events::{changes, Event};
use crate::keys::file::{self, RawKey, RawTable};
use crate::keys::Catalogue;

/// What a committed write did.
#[derive(Debug, Default)]
pub struct Written {
    /// The change version, when something changed.
    pub version: Option<i64>,
    pub events: Vec<Event>,
}

/// The whole table, as a reader outside any write sees it.
pub async fn read_all(c: &impl GenericClient, schema: &str) -> anyhow::Result<RawTable> {
    let rows = c.query(&rows::select_since(schema), &[&0i64]).await?;
    let mut keys = Vec::with_capacity(rows.len());
    for r in rows {
        keys.push(rows::parse(r.get(1)).map_err(anyhow::Error::msg)?);
    }
    Ok(RawTable { keys })
}

/// Runs `f` on the current table inside a locked transaction and writes what it changed.
pub async fn modify<T>(
    client: &mut Client,
    schema: &str,
    actor: &str,
    scopes: &Catalogue,
    f: impl FnOnce(&mut RawTable) -> anyhow::Result<T>,
) -> anyhow::Result<(T, Written)> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&format!("keygate.keys.{schema}")]).await?;
    let before = read_all(&tx, schema).await?;
    let mut after = RawTable { keys: before.keys.clone() };
    let out = f(&mut after)?;
    let events = changes(&before, &after);
    if events.is_empty() {
        tx.commit().await?;
        return Ok((out, Written::default()));
    }
    // The same whole-table check the file store makes before it writes, so PostgreSQL never
    // holds a table a proxy would refuse.
    file::build(RawTable { keys: after.keys.clone() }, scopes)
        .map_err(|p| anyhow::anyhow!("the change would make the key table invalid:\n  - {}", p.join("\n  - ")))?;
    let version: i64 = tx.query_one(&format!("SELECT nextval('{schema}.key_version')"), &[]).await?.get(0);
    let changed: Vec<&RawKey> = {
        let ids: std::collections::HashSet<&str> = events.iter().map(|e| e.key_id.as_str()).collect();
        after.keys.iter().filter(|k| ids.contains(k.id.as_str())).collect()
    };
    rows::upsert(&tx, schema, &changed, version).await?;
    let (ids, kinds, reasons): (Vec<&str>, Vec<&str>, Vec<Option<&str>>) = events
        .iter()
        .map(|e| (e.key_id.as_str(), e.kind, e.reason.as_deref()))
        .fold((Vec::new(), Vec::new(), Vec::new()), |(mut a, mut b, mut c), (x, y, z)| {
            a.push(x);
            b.push(y);
            c.push(z);
            (a, b, c)
        });
    tx.execute(
        &format!(
            "INSERT INTO {schema}.key_events (key_id, event, reason, actor, version)
             SELECT k, e, r, $4, $5 FROM unnest($1::text[], $2::text[], $3::text[]) AS u(k, e, r)"
        ),
        &[&ids, &kinds, &reasons, &actor, &version],
    )
    .await?;
    // Payload: the version and the commit-side clock, so replicas can report notification lag.
    tx.execute(
        "SELECT pg_notify($1, $2::bigint::text || ' ' || (extract(epoch FROM clock_timestamp()) * 1000)::bigint::text)",
        &[&super::channel(schema), &version],
    )
    .await?;
    tx.commit().await?;
    Ok((out, Written { version: Some(version), events }))
}

/// One key's events, oldest first.
pub async fn events(
    c: &impl GenericClient,
    schema: &str,
    id: &str,
) -> Result<Vec<crate::store::writer::LoggedEvent>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT key_id, event, reason, actor, (extract(epoch FROM at) * 1000)::bigint
         FROM {schema}.key_events WHERE key_id = $1 ORDER BY seq"
    );
    let rows = c.query(&sql, &[&id]).await?;
    Ok(rows
        .iter()
        .map(|r| crate::store::writer::LoggedEvent {
            key_id: r.get(0),
            event: r.get(1),
            reason: r.get(2),
            actor: r.get(3),
            at: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(r.get::<_, i64>(4)) * 1_000_000)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        })
        .collect())
}

/// Who is making a change, for the audit trail.
pub fn actor() -> String {
    ["KEYGATE_ACTOR", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::lifecycle::{self, Catalogue, KeySpec};
    use crate::keys::Environment;
    use time::macros::datetime;

    #[test]
    fn lifecycle_operations_become_the_documented_events() {
        let now = datetime!(2026-06-01 12:00 UTC);
        let mut t = RawTable::default();
        let spec = KeySpec { label: "x".into(), ..KeySpec::default() };
        let a = lifecycle::create(&mut t, spec.clone(), Environment::Live, "dpl_live_", &Catalogue::default(), now)
            .unwrap();
        let b = lifecycle::create(&mut t, spec, Environment::Live, "dpl_live_", &Catalogue::default(), now).unwrap();
        let before = RawTable { keys: t.keys.clone() };
        lifecycle::revoke(&mut t, &a.id, Some("leaked".into()), now).unwrap();
        let new = lifecycle::rotate(&mut t, &b.id, std::time::Duration::from_secs(60), "dpl_live_", now).unwrap();
        let ev = changes(&before, &t);
        let kinds: Vec<(&str, &str)> = ev.iter().map(|e| (e.key_id.as_str(), e.kind)).collect();
        assert_eq!(kinds, vec![(a.id.as_str(), "revoked"), (b.id.as_str(), "rotated"), (new.id.as_str(), "created")]);
        assert_eq!(ev[0].reason.as_deref(), Some("leaked"));
        assert!(changes(&t, &RawTable { keys: t.keys.clone() }).is_empty(), "no change, no event");
    }
}
