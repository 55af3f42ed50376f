//! `sync: cache` and the usage write-back, end to end against the real PostgreSQL (see
//! `pg_store` for the database the tests need and the schema each one gets). What is asserted
//! about the database's load is read from keygate's own metrics.

use std::path::Path;
use std::time::Duration;

use http::Method;

use crate::pg_store::*;
use crate::relay::Relay;
use crate::support::*;

/// The `key_store:` lines of a cache-mode proxy (FAST's timings, then `more`).
fn cache_store(db: &Db, url: &str, more: &str) -> String {
    db.store_yaml(url, &format!("  sync: cache\n{FAST}{more}"))
}

async fn by_hash(kg: &Proxy, result: &str) -> f64 {
    kg.metric(&format!("keygate_key_store_queries_total{{query=\"by_hash\",result=\"{result}\"}}")).await
}

async fn lookups(kg: &Proxy, result: &str) -> f64 {
    kg.metric(&format!("keygate_key_store_cache_lookups_total{{result=\"{result}\"}}")).await
}

async fn get(kg: &Proxy, secret: &str) -> Resp {
    kg.get("/api/v1/clinics", &[("authorization", &format!("Bearer {secret}"))]).await
}

#[tokio::test]
async fn a_cached_key_is_served_without_the_database_and_refused_within_a_second_of_a_revoke() {
    let Migrated { db, up, dir, cli } = Migrated::new().await;
    let (id, secret) = create(&cli, &["--label", "cached", "--clinics", "clinic_001"]).await;
    let kg = spawn_pg_proxy(dir.path(), "kg.yaml", up.addr, &cache_store(&db, &db.url, "")).await;
    eventually(Duration::from_secs(5), async || ready(&kg).await).await;

    assert_eq!(status(&kg, &secret).await, 200);
    assert_eq!(up.last().one("x-api-key-id"), id);
    assert_eq!(up.last().one("x-allowed-clinics"), "clinic_001");
    for _ in 0..5 {
        assert_eq!(status(&kg, &secret).await, 200);
    }
    assert_eq!(by_hash(&kg, "found").await, 1.0, "one query, then hits");
    assert_eq!((lookups(&kg, "miss").await, lookups(&kg, "hit").await), (1.0, 5.0));
    let text = kg.admin_get("/metrics").await.text();
    assert!(!text.contains("keygate_key_table_keys{"), "no table, no table census (no false KeygateNoActiveKeys)");

    let out = keys(&cli, &["revoke", &id, "--reason", "leaked"]).await;
    assert!(out.ok, "{}", out.stderr);
    let took = eventually(Duration::from_secs(1), async || status(&kg, &secret).await == 401).await;
    println!("revoke → refused from the cache: {took:?}");
    get(&kg, &secret).await.assert_error(401, "API_KEY_REVOKED");
    assert!(kg.metric("keygate_key_store_cache_invalidations_total").await >= 1.0);
    assert!(kg.metric("keygate_key_store_version").await >= 2.0);
    assert!(!logs().contains(&secret));
}

#[tokio::test]
async fn an_unknown_well_formed_key_costs_one_query_however_often_it_is_tried() {
    let Migrated { db, up, dir, cli } = Migrated::new().await;
    let kg = spawn_pg_proxy(dir.path(), "kg.yaml", up.addr, &cache_store(&db, &db.url, "")).await;
    eventually(Duration::from_secs(5), async || ready(&kg).await).await;

    // Fewer than the invalid-key burst that would block the address.
    let guess = keygate::keys::generate::generate("dpl_live_");
    for _ in 0..15 {
        get(&kg, &guess).await.assert_error(401, "INVALID_API_KEY");
    }
    assert_eq!(by_hash(&kg, "not_found").await, 1.0, "one query for fifteen tries");
    assert_eq!(lookups(&kg, "negative_hit").await, 14.0);
    // A typo fails the checksum before any lookup.
    let typo = format!("{}{}", &guess[..guess.len() - 1], if guess.ends_with('A') { 'B' } else { 'A' });
    get(&kg, &typo).await.assert_error(401, "INVALID_API_KEY");
    assert_eq!(lookups(&kg, "miss").await + lookups(&kg, "negative_hit").await, 15.0, "the typo looked nothing up");

    // The same key imported after its hash was remembered as unknown works at once, not after
    // negative_ttl: the change notification drops the negative entry too.
    let tsv = dir.path().join("guess.tsv");
    std::fs::write(&tsv, format!("{guess}\t\t\n")).unwrap();
    let out = keys(&cli, &["import", "--tsv", tsv.to_str().unwrap(), "--label", "was unknown"]).await;
    assert!(out.ok, "{}", out.stderr);
    let took = eventually(Duration::from_secs(1), async || status(&kg, &guess).await == 200).await;
    println!("import → the negative entry dropped: {took:?}");
}

#[tokio::test]
async fn fifty_concurrent_requests_for_a_fresh_key_make_one_query() {
    let Migrated { db, up, dir, cli } = Migrated::new().await;
    let (_, secret) = create(&cli, &["--label", "popular"]).await;
    // A long timeout: the test holds the lookup up on a table lock until every request waits.
    let store = db.store_yaml(&db.url, "  sync: cache\n  poll_interval: 200ms\n  timeout: 10s\n  max_staleness: 60s\n");
    let kg = spawn_pg_proxy(dir.path(), "kg.yaml", up.addr, &store).await;
    eventually(Duration::from_secs(5), async || ready(&kg).await).await;

    let mut lock = db.client().await;
    let tx = lock.transaction().await.unwrap();
    tx.batch_execute(&format!("LOCK TABLE {}.keys IN ACCESS EXCLUSIVE MODE", db.schema)).await.unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (client, url, auth) = (client.clone(), kg.url("/api/v1/clinics"), format!("Bearer {secret}"));
        tasks.push(tokio::spawn(async move {
            send(client, &url, Method::GET, &[("authorization", &auth)], bytes::Bytes::new()).await.status
        }));
    }
    eventually(Duration::from_secs(5), async || lookups(&kg, "miss").await == 50.0).await;
    tx.rollback().await.unwrap();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(by_hash(&kg, "found").await, 1.0, "fifty waiting requests, one query");
    assert_eq!(up.count(), 50);
}

#[tokio::test]
async fn the_cache_holds_at_most_max_entries() {
    let Migrated { db, up, dir, cli } = Migrated::new().await;
    let many: Vec<TestKey> = (0..12).map(|i| TestKey::live(&format!("k_many_{i}"))).collect();
    let file = dir.path().join("many.yaml");
    std::fs::write(&file, table_yaml(&many.iter().collect::<Vec<_>>())).unwrap();
    let out = keys(&cli, &["import", file.to_str().unwrap()]).await;
    assert!(out.ok, "{}", out.stderr);
    let kg =
        spawn_pg_proxy(dir.path(), "kg.yaml", up.addr, &cache_store(&db, &db.url, "  cache:\n    max_entries: 5\n"))
            .await;
    eventually(Duration::from_secs(5), async || ready(&kg).await).await;

    for k in &many {
        assert_eq!(status(&kg, &k.secret).await, 200, "{}", k.id);
    }
    let entries = r#"keygate_key_store_cache_entries{cache="by_hash"}"#;
    // moka applies evictions in batches; the gauge is refreshed twice a second, after them.
    eventually(Duration::from_secs(3), async || {
        let n = kg.metric(entries).await;
        n > 0.0 && n <= 5.0
    })
    .await;
    for k in &many {
        assert_eq!(status(&kg, &k.secret).await, 200, "an evicted key is looked up again: {}", k.id);
    }
    assert!(by_hash(&kg, "found").await >= 12.0 + 7.0, "at most five of twelve were still cached");
}

#[tokio::test]
async fn with_the_link_down_a_cached_key_is_served_an_uncached_one_is_503_and_both_work_after() {
    let Migrated { db, up, dir, cli } = Migrated::new().await;
    let relay = Relay::start(db.addr()).await;
    let (_, cached) = create(&cli, &["--label", "seen before"]).await;
    let (_, uncached) = create(&cli, &["--label", "first seen during the outage"]).await;
    let (_, third) = create(&cli, &["--label", "first seen in the blackhole"]).await;
    let kg = spawn_pg_proxy(dir.path(), "kg.yaml", up.addr, &cache_store(&db, &db.url_via(relay.addr()), "")).await;
    eventually(Duration::from_secs(5), async || ready(&kg).await).await;
    assert_eq!(status(&kg, &cached).await, 200);

    relay.cut().await;
    assert_eq!(status(&kg, &cached).await, 200, "a hit needs no database");
    get(&kg, &uncached).await.assert_error(503, "KEY_STORE_UNAVAILABLE");
    assert!(ready(&kg).await, "within max_staleness the proxy stays ready");
    eventually(Duration::from_secs(2), async || kg.metric("keygate_key_store_pool_connections").await == 0.0).await;

    relay.restore();
    let took = eventually(Duration::from_secs(10), async || status(&kg, &uncached).await == 200).await;
    println!("restore → uncached key served: {took:?}");
    assert!(by_hash(&kg, "error").await >= 1.0);

    // A silent link: the lookup is cut at the store timeout, the hit still served.
    relay.blackhole().await;
    let started = std::time::Instant::now();
    get(&kg, &third).await.assert_error(503, "KEY_STORE_UNAVAILABLE");
    assert!(started.elapsed() < Duration::from_secs(3), "bounded by the 1 s timeout: {:?}", started.elapsed());
    assert_eq!(status(&kg, &cached).await, 200);
    relay.restore();
    eventually(Duration::from_secs(10), async || status(&kg, &third).await == 200).await;
}

#[tokio::test]
async fn past_max_staleness_even_a_cached_key_is_refused_then_served_again() {
    // The follower can no longer vouch for the cache: a revocation might be missing from it.
    stale_past_max_staleness_then_recovered("  sync: cache\n").await;
}

#[tokio::test]
async fn a_tokens_parent_is_looked_up_by_id_and_its_revocation_reaches_the_token() {
    let Migrated { db, up, dir, cli } = Migrated::new().await;
    let (id, secret) = create(&cli, &["--label", "parent", "--scopes", "interactions:read"]).await;
    let pem = dir.path().join("jwt.pem");
    std::fs::write(&pem, rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap().serialize_pem()).unwrap();
    let jwt = format!(
        "jwt:\n  issuer: https://keygate.test\n  audience: clinic-api\n  keys:\n    - {{kid: k1, algorithm: EdDSA, private_key_file: {}}}\n  issue: {{max_ttl: 15m}}\n",
        pem.display()
    );
    let kg = spawn_pg_proxy(dir.path(), "kg.yaml", up.addr, &format!("{}{jwt}", cache_store(&db, &db.url, ""))).await;
    eventually(Duration::from_secs(5), async || ready(&kg).await).await;

    let r = kg
        .send(Method::POST, "/auth/token", &[("authorization", &format!("Bearer {secret}"))], Default::default())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["access_token"].as_str().unwrap().to_string();
    let path = "/api/v1/clinics/clinic_001/interactions";
    let with_token = async || kg.get(path, &[("authorization", &format!("Bearer {token}"))]).await;
    assert_eq!(with_token().await.status, 200);
    assert_eq!(up.last().one("x-api-key-id"), id);
    assert_eq!(with_token().await.status, 200);
    let by_id = r#"keygate_key_store_queries_total{query="by_id",result="found"}"#;
    assert_eq!(kg.metric(by_id).await, 1.0, "the parent is cached by id");

    let out = keys(&cli, &["revoke", &id]).await;
    assert!(out.ok, "{}", out.stderr);
    eventually(Duration::from_secs(1), async || with_token().await.status == 401).await;
    with_token().await.assert_error(401, "API_KEY_REVOKED");
}

/// `keys show --json` on the PostgreSQL store.
async fn fleet_usage(cli: &Path, id: &str) -> serde_json::Value {
    let out = keys(cli, &["show", id, "--json"]).await;
    assert!(out.ok, "{}", out.stderr);
    serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()["usage"].clone()
}

const QUICK_FLUSH: &str = "  usage:\n    flush_interval: 200ms\n";

#[tokio::test]
async fn usage_served_by_two_instances_is_summed_in_keys_show() {
    let Migrated { db, up, dir, cli } = Migrated::new().await;
    let (id, secret) = create(&cli, &["--label", "busy", "--scopes", "clinics:read"]).await;
    // One of each mode: the write-back does not care how keys are found.
    let kg1 =
        spawn_pg_proxy(dir.path(), "kg1.yaml", up.addr, &db.store_yaml(&db.url, &format!("{FAST}{QUICK_FLUSH}"))).await;
    let kg2 = spawn_pg_proxy(dir.path(), "kg2.yaml", up.addr, &cache_store(&db, &db.url, QUICK_FLUSH)).await;
    eventually(Duration::from_secs(5), async || ready(&kg1).await && ready(&kg2).await).await;

    for _ in 0..3 {
        assert_eq!(status(&kg1, &secret).await, 200);
    }
    for _ in 0..2 {
        assert_eq!(status(&kg2, &secret).await, 200);
    }
    let denied = kg2.get("/api/v1/metrics?clinic_id=c1", &[("authorization", &format!("Bearer {secret}"))]).await;
    denied.assert_error(403, "INSUFFICIENT_SCOPE");

    let mut usage = serde_json::Value::Null;
    eventually(Duration::from_secs(5), async || {
        usage = fleet_usage(&cli, &id).await;
        usage["requests"]["2xx"] == 5 && usage["requests"]["4xx"] == 1
    })
    .await;
    assert_eq!(usage["rate_limited"], 0);
    assert!(usage["last_used_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{usage}");
    assert!(usage["source"].as_str().unwrap().contains("every proxy"), "{usage}");
    assert!(kg1.metric(r#"keygate_key_store_usage_flushes_total{result="ok"}"#).await >= 1.0);

    // Nothing new, nothing added: the next flushes leave the sums alone. One more refusal at
    // each instance makes sure each has flushed again (a flush with nothing new writes nothing).
    for kg in [&kg1, &kg2] {
        let denied = kg.get("/api/v1/metrics?clinic_id=c1", &[("authorization", &format!("Bearer {secret}"))]).await;
        denied.assert_error(403, "INSUFFICIENT_SCOPE");
    }
    eventually(Duration::from_secs(5), async || fleet_usage(&cli, &id).await["requests"]["4xx"] == 3).await;
    assert_eq!(fleet_usage(&cli, &id).await["requests"]["2xx"], 5);
}

#[tokio::test]
async fn usage_counted_while_the_database_is_away_is_written_when_it_returns() {
    let Migrated { db, up, dir, cli } = Migrated::new().await;
    let relay = Relay::start(db.addr()).await;
    let (id, secret) = create(&cli, &["--label", "patient"]).await;
    let store = db.store_yaml(&db.url_via(relay.addr()), &format!("{FAST}{QUICK_FLUSH}"));
    let kg = spawn_pg_proxy(dir.path(), "kg.yaml", up.addr, &store).await;
    eventually(Duration::from_secs(5), async || status(&kg, &secret).await == 200).await;
    eventually(Duration::from_secs(5), async || fleet_usage(&cli, &id).await["requests"]["2xx"] == 1).await;

    let failed = r#"keygate_key_store_usage_flushes_total{result="failed"}"#;
    let failed_before = kg.metric(failed).await;
    relay.cut().await;
    for _ in 0..4 {
        assert_eq!(status(&kg, &secret).await, 200, "the replica serves through the outage");
    }
    eventually(Duration::from_secs(5), async || kg.metric(failed).await > failed_before).await;
    assert_eq!(kg.metric("keygate_key_store_usage_pending_keys").await, 1.0);
    assert_eq!(fleet_usage(&cli, &id).await["requests"]["2xx"], 1, "nothing reached the store");

    relay.restore();
    eventually(Duration::from_secs(10), async || fleet_usage(&cli, &id).await["requests"]["2xx"] == 5).await;
    // The commit is visible a moment before the writer hears of it.
    eventually(Duration::from_secs(1), async || kg.metric("keygate_key_store_usage_pending_keys").await == 0.0).await;
    assert!(logs().contains("usage write-back to the key store failed; keeping the counts for the next flush"));
}
