//! The PostgreSQL key store end to end, against the real database at KEYGATE_TEST_DATABASE_URL
//! (default postgres://postgres@127.0.0.1:5432/test). Without one these tests fail, saying so.
//! Each test works in a schema of its own, dropped at the end, so they run in parallel. The
//! helpers here (a schema, a keygate on it, the CLI) serve `pg_cache` too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::relay::Relay;
pub use crate::support::clinics_status as status;
use crate::support::*;

fn db_url() -> String {
    std::env::var("KEYGATE_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema of this test's own on the live database; dropped when the test ends, pass or fail.
pub struct Db {
    pub url: String,
    pub schema: String,
}

impl Db {
    pub async fn new() -> Db {
        let url = db_url();
        let probe = async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            client.simple_query("SELECT 1").await
        };
        match tokio::time::timeout(Duration::from_secs(5), probe).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!(
                "these tests need a live PostgreSQL, and {} is not reachable: {e:?} (set KEYGATE_TEST_DATABASE_URL)",
                shown(&url)
            ),
            Err(_) => panic!(
                "these tests need a live PostgreSQL, and {} did not answer within 5 s (set KEYGATE_TEST_DATABASE_URL)",
                shown(&url)
            ),
        }
        let schema = format!("kg_it_{}", &uuid::Uuid::now_v7().simple().to_string()[8..]);
        Db { url, schema }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }

    /// The database's address, for a relay to stand in front of.
    pub fn addr(&self) -> SocketAddr {
        let cfg: tokio_postgres::Config = self.url.parse().unwrap();
        let host = match &cfg.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            other => panic!("the relay tests need a TCP database address, not {other:?}"),
        };
        let port = cfg.get_ports().first().copied().unwrap_or(5432);
        std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port)).unwrap().next().unwrap()
    }

    /// The URL with the host and port replaced by `addr` (a relay).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        let cfg: tokio_postgres::Config = self.url.parse().unwrap();
        let user = cfg.get_user().unwrap_or("postgres");
        let pw = cfg.get_password().map(|p| format!(":{}", String::from_utf8_lossy(p))).unwrap_or_default();
        let db = cfg.get_dbname().unwrap_or(user);
        format!("postgres://{user}{pw}@{addr}/{db}")
    }

    /// The `key_store:` section for this schema; `lines` are more of its settings.
    pub fn store_yaml(&self, url: &str, lines: &str) -> String {
        format!("key_store:\n  kind: postgres\n  url: {url}\n  schema: {}\n{lines}", self.schema)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        // Its own thread and runtime: this runs inside the test's runtime, perhaps panicking.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                    let _ = client.batch_execute("SET lock_timeout = '2s'").await;
                    if client.batch_execute(&drop).await.is_err() {
                        // This test's keygate, frozen mid-transaction on the runtime this drop
                        // blocks, holds locks it can never release (the DROP waited forever).
                        let _ = client.execute(HOLDERS_OF_LOCKS_IN, &[&schema]).await;
                        let _ = client.batch_execute(&drop).await;
                    }
                }
            })
        })
        .join();
    }
}

/// Ends every other session holding a lock on a relation in schema `$1` (only this test's).
const HOLDERS_OF_LOCKS_IN: &str = "SELECT pg_terminate_backend(l.pid) FROM pg_locks l \
     JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = $1 AND l.pid <> pg_backend_pid()";

fn shown(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) => format!("{:?}:{:?}", c.get_hosts(), c.get_ports()),
        Err(_) => "the configured URL".into(),
    }
}

/// A config file for a keygate (proxy or CLI) on this store.
pub fn config_file(dir: &Path, name: &str, upstream: SocketAddr, store: &str) -> PathBuf {
    let path = dir.join(name);
    let text = format!(
        "environment: live\nlisten: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nupstream:\n  url: http://{upstream}\nkeys: {{}}\n{store}"
    );
    std::fs::write(&path, text).unwrap();
    path
}

pub async fn spawn_pg_proxy(dir: &Path, name: &str, upstream: SocketAddr, store: &str) -> Proxy {
    spawn_pg_proxy_at(&Clock::system(), dir, name, upstream, store).await
}

/// `spawn_pg_proxy` deciding by `clock`.
pub async fn spawn_pg_proxy_at(clock: &Clock, dir: &Path, name: &str, upstream: SocketAddr, store: &str) -> Proxy {
    let cfg_path = config_file(dir, name, upstream, store);
    let cfg = keygate::config::load(&cfg_path).unwrap_or_else(|e| panic!("{e}"));
    let running = keygate::app::start_with_clock(cfg, clock.clone()).await.unwrap();
    Proxy {
        addr: running.proxy_addr,
        admin: running.admin_addr,
        keys_path: cfg_path.clone(),
        config_path: cfg_path,
        dir: tempfile::tempdir().unwrap(),
        running: Some(running),
    }
}

pub async fn keys(cfg: &Path, args: &[&str]) -> Out {
    keys_cli(KeysAt::Config(cfg), args).await
}

pub async fn create(cfg: &Path, args: &[&str]) -> (String, String) {
    create_key(KeysAt::Config(cfg), args).await
}

pub async fn migrate(cfg: &Path) -> String {
    let out = run_keygate(&["migrate", "--config", cfg.to_str().unwrap()]).await;
    assert!(out.ok, "migrate failed: {}", out.stderr);
    out.stdout
}

/// The start of most store tests: a schema of the test's own, migrated through the CLI's config
/// (`cli`, in `dir`), and a recording upstream. Bind every field: the schema and the directory go
/// when dropped.
pub struct Migrated {
    pub db: Db,
    pub up: Upstream,
    pub dir: tempfile::TempDir,
    pub cli: PathBuf,
}

impl Migrated {
    pub async fn new() -> Migrated {
        let (db, up, dir) = (Db::new().await, Upstream::spawn().await, tempfile::tempdir().unwrap());
        let cli = config_file(dir.path(), "cli.yaml", up.addr, &db.store_yaml(&db.url, ""));
        migrate(&cli).await;
        Migrated { db, up, dir, cli }
    }
}

pub async fn ready(kg: &Proxy) -> bool {
    kg.admin_get("/readyz").await.status == 200
}

pub const FAST: &str = "  poll_interval: 200ms\n  timeout: 1s\n  max_staleness: 30s\n";

#[tokio::test]
async fn migrations_from_empty_are_idempotent_and_the_audit_trail_is_append_only() {
    let db = Db::new().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path(), "kg.yaml", dead_addr().await, &db.store_yaml(&db.url, ""));

    let first = migrate(&cfg).await;
    assert!(first.contains("applied migrations [1, 2, 3]"), "{first}");
    let again = migrate(&cfg).await;
    assert!(again.contains("is up to date (version 3)"), "{again}");

    let c = db.client().await;
    let tables: Vec<String> = c
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
            &[&db.schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tables, ["key_events", "key_usage", "keys", "schema_migrations"]);
    let (id, _) = create(&cfg, &["--label", "audited"]).await;
    let tampered = c.execute(&format!("UPDATE {}.key_events SET actor = 'someone else'", db.schema), &[]).await;
    assert!(tampered.is_err(), "key_events refuses updates");
    let who: String = c
        .query_one(&format!("SELECT actor FROM {}.key_events WHERE key_id = $1", db.schema), &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "it-tests");

    // A schema at version 1 (as the first release left it) gets only what it lacks.
    c.batch_execute(&format!(
        "DROP TABLE {s}.key_usage; DELETE FROM {s}.schema_migrations WHERE version = 2",
        s = db.schema
    ))
    .await
    .unwrap();
    let upgraded = migrate(&cfg).await;
    assert!(upgraded.contains("applied migrations [2]"), "{upgraded}");
    let keys: i64 = c.query_one(&format!("SELECT count(*) FROM {}.keys", db.schema), &[]).await.unwrap().get(0);
    assert_eq!(keys, 1, "the upgrade leaves the keys alone");
}

#[tokio::test]
async fn a_cli_key_works_at_two_instances_and_a_revoke_is_refused_by_both_within_a_second() {
    let Migrated { db, up, dir, cli } = Migrated::new().await;
    let store = db.store_yaml(&db.url, FAST);
    let kg1 = spawn_pg_proxy(dir.path(), "kg1.yaml", up.addr, &store).await;
    let kg2 = spawn_pg_proxy(dir.path(), "kg2.yaml", up.addr, &store).await;
    eventually(Duration::from_secs(5), async || ready(&kg1).await && ready(&kg2).await).await;

    let (id, secret) = create(&cli, &["--label", "fleet", "--clinics", "clinic_001"]).await;
    let took = eventually(Duration::from_secs(2), async || {
        status(&kg1, &secret).await == 200 && status(&kg2, &secret).await == 200
    })
    .await;
    println!("create → usable at both: {took:?}");
    assert_eq!(up.last().one("x-api-key-id"), id);

    let out = keys(&cli, &["revoke", &id, "--reason", "leaked in a ticket"]).await;
    assert!(out.ok, "{}", out.stderr);
    let took = eventually(Duration::from_secs(1), async || {
        status(&kg1, &secret).await == 401 && status(&kg2, &secret).await == 401
    })
    .await;
    println!("revoke → refused by both: {took:?}");
    for kg in [&kg1, &kg2] {
        kg.get("/api/v1/clinics", &[("authorization", &format!("Bearer {secret}"))])
            .await
            .assert_error(401, "API_KEY_REVOKED");
    }

    let events: Vec<(String, Option<String>)> = db
        .client()
        .await
        .query(&format!("SELECT event, reason FROM {}.key_events WHERE key_id = $1 ORDER BY seq", db.schema), &[&id])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(events, [("created".into(), None), ("revoked".into(), Some("leaked in a ticket".into()))]);
    assert!(kg1.metric("keygate_key_store_version").await >= 2.0);
    assert_eq!(kg1.metric("keygate_key_store_connected").await, 1.0);
    assert!(!logs().contains(&secret));
}

#[tokio::test]
async fn rotation_grace_holds_at_every_instance() {
    let db = Db::new().await;
    let up = Upstream::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let store = db.store_yaml(&db.url, &format!("  auto_migrate: true\n{FAST}"));
    let cli = config_file(dir.path(), "cli.yaml", up.addr, &store);
    // One clock for the fleet, standing still unless moved: the grace period is not raced.
    let clock = Clock::manual();
    let kg1 = spawn_pg_proxy_at(&clock, dir.path(), "kg1.yaml", up.addr, &store).await;
    let kg2 = spawn_pg_proxy_at(&clock, dir.path(), "kg2.yaml", up.addr, &store).await;
    eventually(Duration::from_secs(5), async || ready(&kg1).await && ready(&kg2).await).await;
    let (old_id, old) = create(&cli, &["--label", "rotating"]).await;

    let out = keys(&cli, &["rotate", &old_id, "--grace", "3s", "--json"]).await;
    assert!(out.ok, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let new = v["key"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(1), async || status(&kg1, &new).await == 200 && status(&kg2, &new).await == 200)
        .await;
    assert_eq!((status(&kg1, &old).await, status(&kg2, &old).await), (200, 200), "grace period at both");
    let shown = keys(&cli, &["show", &old_id, "--json"]).await;
    let grace_end = rfc3339(&serde_json::from_str::<serde_json::Value>(&shown.stdout).unwrap()["expires_at"]);
    grace_ends_to_the_nanosecond(&clock, grace_end, &[&kg1, &kg2], &old, &new).await;
}

#[tokio::test]
async fn concurrent_clis_never_lose_a_change() {
    let Migrated { db, cli, dir: _dir, up: _up } = Migrated::new().await;
    racing_clis_lose_no_change(KeysAt::Config(&cli), 4).await;
    let versions: Vec<i64> = db
        .client()
        .await
        .query(&format!("SELECT DISTINCT version FROM {}.key_events ORDER BY 1", db.schema), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions.len(), 12, "one change version per command: {versions:?}");
}

#[tokio::test]
async fn a_cut_connection_keeps_serving_reconnects_and_catches_up() {
    let Migrated { db, up, dir, cli } = Migrated::new().await;
    let relay = Relay::start(db.addr()).await;
    let (a_id, a) = create(&cli, &["--label", "before the cut"]).await;
    let clock = Clock::manual();
    let store = db.store_yaml(&db.url_via(relay.addr()), FAST);
    let kg = spawn_pg_proxy_at(&clock, dir.path(), "kg.yaml", up.addr, &store).await;
    eventually(Duration::from_secs(5), async || status(&kg, &a).await == 200).await;

    relay.cut().await;
    let (_, b) = create(&cli, &["--label", "made while cut"]).await;
    let out = keys(&cli, &["revoke", &a_id]).await;
    assert!(out.ok, "{}", out.stderr);
    // The follower knows it is cut off, so no sync can come; its last was at the clock's reading
    // now (it has not moved). max_staleness is 30 s.
    eventually(Duration::from_secs(2), async || kg.metric("keygate_key_store_connected").await == 0.0).await;
    clock.advance(Duration::from_secs(30));
    assert_eq!(status(&kg, &a).await, 200, "the last view keeps serving within max_staleness");
    assert_eq!(status(&kg, &b).await, 401, "and knows nothing newer");
    assert!(ready(&kg).await);
    clock.advance(Duration::from_nanos(1));
    assert_eq!(status(&kg, &a).await, 503, "and not a nanosecond longer");
    assert!(!ready(&kg).await);

    relay.restore();
    let took =
        eventually(Duration::from_secs(10), async || status(&kg, &b).await == 200 && status(&kg, &a).await == 401)
            .await;
    println!("restore → caught up: {took:?}");
    assert!(logs().contains("key store unreachable; serving the last view while reconnecting"));
}

/// A keygate on a manual clock whose store is reached through a relay, serving one key.
pub struct Relayed {
    pub relay: Relay,
    pub key: String,
    pub clock: Clock,
    pub kg: Proxy,
    /// Kept alive for the test: the schema, the upstream, the config directory.
    pub held: (Db, Upstream, tempfile::TempDir),
}

/// `lines`: the store's settings (poll interval, timeout, staleness). Returns once the key works.
pub async fn relayed(lines: &str) -> Relayed {
    let Migrated { db, up, dir, cli } = Migrated::new().await;
    let relay = Relay::start(db.addr()).await;
    let (_, key) = create(&cli, &["--label", "steady"]).await;
    let store = db.store_yaml(&db.url_via(relay.addr()), lines);
    let clock = Clock::manual();
    let kg = spawn_pg_proxy_at(&clock, dir.path(), "kg.yaml", up.addr, &store).await;
    eventually(Duration::from_secs(5), async || status(&kg, &key).await == 200).await;
    Relayed { relay, key, clock, kg, held: (db, up, dir) }
}

#[tokio::test]
async fn past_max_staleness_it_answers_503_key_store_unavailable_then_recovers() {
    stale_past_max_staleness_then_recovered("").await;
}

/// A keygate whose store (with `sync`: `sync: cache` or nothing) falls silent: it serves to the
/// last nanosecond of max_staleness (1 s), then answers 503 KEY_STORE_UNAVAILABLE and is not
/// ready, counted under the route, until the store answers again.
pub async fn stale_past_max_staleness_then_recovered(sync: &str) {
    let Relayed { relay, key, clock, kg, held: _held } =
        relayed(&format!("{sync}  poll_interval: 100ms\n  timeout: 300ms\n  max_staleness: 1s\n")).await;

    // No sync can come through now; the last was at the clock's reading now (it has not moved).
    relay.blackhole().await;
    clock.advance(Duration::from_secs(1));
    assert_eq!(status(&kg, &key).await, 200, "stale only past max_staleness");
    assert!(ready(&kg).await);
    clock.advance(Duration::from_nanos(1));
    assert_eq!(status(&kg, &key).await, 503);
    let r = kg.get("/api/v1/clinics", &[("authorization", &format!("Bearer {key}"))]).await;
    r.assert_error(503, "KEY_STORE_UNAVAILABLE");
    let series = r#"keygate_requests_total{code="KEY_STORE_UNAVAILABLE",route="/api/v1/clinics",shape="inline",status_class="5xx"}"#;
    assert!(kg.metric(series).await >= 2.0, "counted under the route it was for");
    assert_eq!(
        kg.metric(
            r#"keygate_requests_total{code="KEY_STORE_UNAVAILABLE",route="none",shape="inline",status_class="5xx"}"#
        )
        .await,
        0.0
    );
    let rz = kg.admin_get("/readyz").await;
    assert_eq!((rz.status.as_u16(), rz.json()["reasons"].clone()), (503, serde_json::json!(["key store stale"])));
    // The gauge is refreshed twice a second.
    eventually(Duration::from_secs(2), async || kg.metric("keygate_key_store_staleness_seconds").await >= 1.0).await;

    relay.restore();
    eventually(Duration::from_secs(10), async || status(&kg, &key).await == 200).await;
    assert!(ready(&kg).await);
}

#[tokio::test]
async fn with_the_database_down_at_start_it_is_not_ready_then_loads_when_it_returns() {
    let Migrated { db, up, dir, cli } = Migrated::new().await;
    let relay = Relay::start(db.addr()).await;
    let (_, key) = create(&cli, &["--label", "waiting"]).await;
    relay.cut().await;

    let kg = spawn_pg_proxy(dir.path(), "kg.yaml", up.addr, &db.store_yaml(&db.url_via(relay.addr()), FAST)).await;
    // The follower has tried: the relay took its connection, and closed it.
    eventually(Duration::from_secs(2), async || relay.accepted() >= 1).await;
    let rz = kg.admin_get("/readyz").await;
    assert_eq!((rz.status.as_u16(), rz.json()["reasons"].clone()), (503, serde_json::json!(["key table not loaded"])));
    kg.get("/api/v1/clinics", &[("authorization", &format!("Bearer {key}"))])
        .await
        .assert_error(503, "KEY_STORE_UNAVAILABLE");
    assert_eq!(up.count(), 0);

    relay.restore();
    eventually(Duration::from_secs(10), async || ready(&kg).await).await;
    assert_eq!(status(&kg, &key).await, 200);
}

#[tokio::test]
async fn import_and_export_move_a_table_between_the_file_store_and_postgres() {
    let Migrated { db: _db, dir, cli, up: _up } = Migrated::new().await;
    let (k1, k2) = (TestKey::live("k_one"), TestKey::live("k_two").with("    clinics: [c1, c2]\n"));
    let file = dir.path().join("keys.yaml");
    std::fs::write(&file, table_yaml(&[&k1, &k2])).unwrap();

    let out = keys(&cli, &["import", file.to_str().unwrap()]).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("Imported 2 keys"), "{}", out.stdout);
    let again = keys(&cli, &["import", file.to_str().unwrap()]).await;
    assert!(again.stdout.contains("Imported 0 keys") && again.stdout.contains("2 already there"), "{}", again.stdout);

    let back = dir.path().join("back.jsonl");
    let out = keys(&cli, &["export", "--jsonl", "--out", back.to_str().unwrap()]).await;
    assert!(out.ok, "{}", out.stderr);
    let text = std::fs::read_to_string(&back).unwrap();
    assert!(!text.contains(&k1.secret), "hashes only");
    let table = keygate::store::table_file::load(&back, &keygate::keys::Catalogue::default()).unwrap();
    let r = table.lookup(&keygate::keys::KeyHash::of(&k2.secret)).expect("k_two made the round trip");
    assert_eq!((&*r.id, r.clinics.as_deref()), ("k_two", Some("c1,c2")));

    // The same id with other contents is refused, and nothing is written.
    std::fs::write(&file, table_yaml(&[&TestKey::live("k_one")])).unwrap();
    let clash = keys(&cli, &["import", file.to_str().unwrap()]).await;
    assert!(!clash.ok && clash.stderr.contains("k_one"), "{}", clash.stderr);
}
