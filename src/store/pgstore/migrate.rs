//! The schema, created and upgraded by keygate: numbered SQL migrations embedded in the binary,
//! applied in order inside one transaction under an advisory lock, each recorded in
//! `schema_migrations`. Running them again changes nothing.

use tokio_postgres::Client;

/// (version, name, SQL with `{schema}` for the schema name). Append only: never edit one that
/// has shipped.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "keys and key_events", include_str!("migrations/0001_keys.sql")),
    (2, "key_usage", include_str!("migrations/0002_key_usage.sql")),
    (3, "key credits and quotas", include_str!("migrations/0003_key_credits.sql")),
];

/// The newest schema version this binary knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Applies what is missing; returns the versions applied now (empty when up to date).
/// `schema` must already be validated as a plain identifier (config does that).
pub async fn migrate(client: &mut Client, schema: &str) -> anyhow::Result<Vec<i32>> {
    let tx = client.transaction().await?;
    // Concurrent starters (a fleet with auto_migrate) take turns; the lock needs no schema.
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&format!("keygate.migrate.{schema}")]).await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await?;
    let done: Vec<i32> = tx
        .query(&format!("SELECT version FROM {schema}.schema_migrations"), &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if let Some(newer) = done.iter().copied().filter(|v| *v > latest()).max() {
        anyhow::bail!(
            "schema {schema} is at version {newer}, newer than this keygate knows ({}): upgrade keygate",
            latest()
        );
    }
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| !done.contains(&m.0)) {
        tx.batch_execute(&sql.replace("{schema}", schema))
            .await
            .map_err(|e| anyhow::anyhow!("migration {version} ({name}): {}", db_message(&e)))?;
        tx.execute(
            &format!("INSERT INTO {schema}.schema_migrations (version, name) VALUES ($1, $2)"),
            &[version, name],
        )
        .await?;
        applied.push(*version);
    }
    tx.commit().await?;
    Ok(applied)
}

/// `keygate migrate`: connects with the configured settings and migrates.
pub async fn run(s: &crate::config::PgStore) -> anyhow::Result<Vec<i32>> {
    let mut session = super::connect(s).await?;
    migrate(&mut session.client, &s.schema).await
}

/// The schema's version, or why it cannot be used (missing, or older than this keygate needs).
pub async fn check(client: &Client, schema: &str) -> anyhow::Result<i32> {
    let row = client
        .query_opt(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'schema_migrations'",
            &[&schema],
        )
        .await?;
    if row.is_none() {
        anyhow::bail!("schema {schema} has no keygate tables: run `keygate migrate` (or set key_store.auto_migrate)");
    }
    let v: Option<i32> =
        client.query_one(&format!("SELECT max(version) FROM {schema}.schema_migrations"), &[]).await?.get(0);
    let v = v.unwrap_or(0);
    if v < latest() {
        anyhow::bail!("schema {schema} is at version {v}, this keygate needs {}: run `keygate migrate`", latest());
    }
    Ok(v)
}

/// The server's own message for a database error (tokio-postgres shows only "db error").
pub fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}
