//! The admin key API end to end: a key created over HTTP is used through the proxy, updated,
//! rotated and revoked, on the file store and on PostgreSQL; token scopes, bad input, token
//! rotation by config reload, concurrent writes and the key event log. Helpers here serve
//! `admin_openapi` too.

use std::time::Duration;

use http::Method;
use serde_json::{json, Value};

use crate::pg_store::{config_file, migrate, ready, spawn_pg_proxy, Db, FAST};
use crate::support::*;

pub const WRITER: &str = "writer-token-0123456789abcdef";
pub const READER: &str = "reader-token-0123456789abcdef";
pub const WRITE_ONLY: &str = "billing-token-0123456789abcdef";

/// Three admin tokens: `portal` may read and write, `dashboard` only read, `billing` only write.
pub fn tokens_yaml() -> String {
    let token = |id: &str, secret: &str, scopes: &str| {
        format!("  - id: {id}\n    sha256: {}\n    scopes: [{scopes}]\n", keygate::admin::token_hash(secret))
    };
    format!(
        "admin_tokens:\n{}{}{}",
        token("portal", WRITER, "keys:read, keys:write"),
        token("dashboard", READER, "keys:read"),
        token("billing", WRITE_ONLY, "keys:write")
    )
}

pub async fn file_proxy() -> (Upstream, Proxy) {
    let up = Upstream::spawn().await;
    let kg = spawn_proxy(up.addr, &[], &tokens_yaml()).await;
    (up, kg)
}

/// Calls as `portal` and expects `status`; returns the JSON body.
pub async fn write(kg: &Proxy, method: Method, path: &str, body: Value, status: u16) -> Value {
    let r = kg.admin_call(method, path, Some(WRITER), &body.to_string()).await;
    assert_eq!(r.status, status, "{path}: {}", r.text());
    r.json()
}

pub async fn read(kg: &Proxy, path: &str) -> Value {
    let r = kg.admin_call(Method::GET, path, Some(READER), "").await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()
}

async fn status_with(kg: &Proxy, secret: &str, clinic: &str) -> u16 {
    let path = format!("/api/v1/clinics/{clinic}/interactions");
    kg.get(&path, &[("authorization", &format!("Bearer {secret}"))]).await.status.as_u16()
}

/// Waits for the proxy's reload to show a change: `want` for this key on this clinic.
async fn until_status(kg: &Proxy, secret: &str, clinic: &str, want: u16) -> Duration {
    let mut last = 0;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        last = status_with(kg, secret, clinic).await;
        if last == want {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{clinic}: still {last}, not {want}, after 5 s");
}

/// The whole lifecycle over HTTP, each step checked through the proxy; the same on both stores.
async fn lifecycle_story(kg: &Proxy, up: &Upstream) {
    let created =
        write(kg, Method::POST, "/admin/keys", json!({"label": "customer 1", "clinics": ["clinic_001"]}), 201).await;
    let (id, secret) = (created["id"].as_str().unwrap().to_string(), created["secret"].as_str().unwrap().to_string());
    assert_eq!(created["key"]["label"], "customer 1");
    assert!(!created.to_string().contains("hash"), "no hash in the answer");
    let took = until_status(kg, &secret, "clinic_001", 200).await;
    println!("created over HTTP → usable through the proxy: {took:?}");
    assert_eq!(up.last().one("x-api-key-id"), id);
    assert_eq!(read(kg, &format!("/admin/keys/{id}")).await["clinics"], json!(["clinic_001"]));

    let updated = write(kg, Method::PATCH, &format!("/admin/keys/{id}"), json!({"clinics": ["clinic_002"]}), 200).await;
    assert_eq!(updated["changed"], true);
    // A clinic the key may not see is answered with an empty result, not forwarded: the
    // upstream seeing the new list is the proof the update arrived.
    eventually(Duration::from_secs(5), async || {
        status_with(kg, &secret, "clinic_002").await == 200 && up.last().one("x-allowed-clinics") == "clinic_002"
    })
    .await;

    let rotated = write(kg, Method::POST, &format!("/admin/keys/{id}/rotate"), json!({"grace": "1h"}), 200).await;
    let (new_id, new_secret) = (rotated["id"].as_str().unwrap(), rotated["secret"].as_str().unwrap());
    assert_eq!(rotated["old_key"]["rotated_to"], new_id);
    until_status(kg, new_secret, "clinic_002", 200).await;
    assert_eq!(status_with(kg, &secret, "clinic_002").await, 200, "the old key works through its grace");

    let revoked =
        write(kg, Method::POST, &format!("/admin/keys/{new_id}/revoke"), json!({"reason": "leaked"}), 200).await;
    assert_eq!(revoked["already_revoked"], false);
    let took = until_status(kg, new_secret, "clinic_002", 401).await;
    println!("revoked over HTTP → refused by the proxy: {took:?}");
    let again = write(kg, Method::POST, &format!("/admin/keys/{new_id}/revoke"), json!({}), 200).await;
    assert_eq!(again["already_revoked"], true);
    let r = kg.admin_call(Method::POST, &format!("/admin/keys/{new_id}/rotate"), Some(WRITER), "").await;
    r.assert_error(409, "CONFLICT");

    let events = read(kg, &format!("/admin/keys/{id}/events")).await;
    let seen: Vec<(&str, &str)> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["event"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(seen, [("created", "portal"), ("updated", "portal"), ("rotated", "portal")]);
    let new_events = read(kg, &format!("/admin/keys/{new_id}/events")).await;
    assert_eq!(new_events["events"][1]["reason"], "leaked");
}

#[tokio::test]
async fn the_lifecycle_over_http_on_the_file_store() {
    let (up, kg) = file_proxy().await;
    lifecycle_story(&kg, &up).await;
    let log = std::fs::read_to_string(kg.keys_path.with_file_name("keys.yaml.events.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 5, "created, updated, rotated + created, revoked; not the repeated revoke:\n{log}");
}

/// A keygate on this test's schema (migrated), with the admin tokens, ready.
async fn pg_proxy(db: &Db, up: &Upstream, dir: &std::path::Path) -> Proxy {
    let store = format!("{}{}", db.store_yaml(&db.url, FAST), tokens_yaml());
    migrate(&config_file(dir, "cli.yaml", up.addr, &store)).await;
    let kg = spawn_pg_proxy(dir, "kg.yaml", up.addr, &store).await;
    eventually(Duration::from_secs(5), async || ready(&kg).await).await;
    kg
}

#[tokio::test]
async fn the_lifecycle_over_http_on_postgres() {
    let (db, up, dir) = (Db::new().await, Upstream::spawn().await, tempfile::tempdir().unwrap());
    let kg = pg_proxy(&db, &up, dir.path()).await;
    lifecycle_story(&kg, &up).await;
    let c = db.client().await;
    let actors = c.query(&format!("SELECT DISTINCT actor FROM {}.key_events", db.schema), &[]).await.unwrap();
    assert_eq!(actors.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>(), ["portal"]);
}

#[tokio::test]
async fn a_read_token_cannot_write_and_an_unknown_token_is_refused() {
    let (_up, kg) = file_proxy().await;
    let body = json!({"label": "x"}).to_string();
    let r = kg.admin_call(Method::POST, "/admin/keys", Some(READER), &body).await;
    assert!(r.assert_error(403, "INSUFFICIENT_SCOPE").contains("keys:write"));
    kg.admin_call(Method::GET, "/admin/keys", Some("not-a-configured-token"), "")
        .await
        .assert_error(401, "ADMIN_TOKEN_REQUIRED");
    kg.admin_call(Method::GET, "/admin/keys", None, "").await.assert_error(401, "ADMIN_TOKEN_REQUIRED");
    assert_eq!(read(&kg, "/admin/keys").await["keys"], json!([]), "nothing was created");
    let counted = |code: &str| format!("keygate_admin_key_api_requests_total{{operation=\"list\",code=\"{code}\"}}");
    assert_eq!(kg.metric(&counted("ADMIN_TOKEN_REQUIRED")).await, 2.0);
    assert_eq!(kg.metric(&counted("OK")).await, 1.0);
    assert_eq!(
        kg.metric("keygate_admin_key_api_requests_total{operation=\"create\",code=\"INSUFFICIENT_SCOPE\"}").await,
        1.0
    );
}

#[tokio::test]
async fn writes_need_a_token_even_on_loopback() {
    let up = Upstream::spawn().await;
    let kg = spawn_proxy(up.addr, &[], "").await;
    assert_eq!(kg.admin_call(Method::GET, "/admin/keys", None, "").await.status, 200);
    kg.admin_call(Method::POST, "/admin/keys", None, r#"{"label":"x"}"#)
        .await
        .assert_error(401, "ADMIN_TOKEN_REQUIRED");
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_field() {
    let (_up, kg) = file_proxy().await;
    let cases = [
        (Method::POST, "/admin/keys", "{\"label\": ", "field `body`"),
        (Method::POST, "/admin/keys", r#"{"label":"x","owner":"me"}"#, "field `owner`"),
        (Method::POST, "/admin/keys", r#"{"label":"x","scopes":["nope:read"]}"#, "field `scopes`"),
        (Method::POST, "/admin/keys", r#"{"label":"x","scopes":"interactions:read"}"#, "field `scopes`"),
        (Method::POST, "/admin/keys", r#"{"label":"x","rate_limit":"platinum"}"#, "field `rate_limit`"),
        (Method::GET, "/admin/keys?state=lost", "", "field `state`"),
    ];
    for (method, path, body, field) in cases {
        let r = kg.admin_call(method, path, Some(WRITER), body).await;
        let message = r.assert_error(400, "INVALID_REQUEST");
        assert!(message.contains(field), "{body}: {message}");
    }
    let big = format!(r#"{{"label":"{}"}}"#, "x".repeat(70_000));
    kg.admin_call(Method::POST, "/admin/keys", Some(WRITER), &big).await.assert_error(413, "PAYLOAD_TOO_LARGE");
    let r = kg.admin_call(Method::PATCH, "/admin/keys/key_missing", Some(WRITER), r#"{"label":"y"}"#).await;
    r.assert_error(404, "NOT_FOUND");
}

/// 20 creates at once: every one answered 201, persisted, logged, and listed once.
async fn twenty_concurrent_creates(kg: &Proxy) {
    let mut set = tokio::task::JoinSet::new();
    let start = std::time::Instant::now();
    for i in 0..20 {
        let (admin, body) = (kg.admin, json!({"label": format!("bulk {i}")}).to_string());
        set.spawn(async move { admin_call(admin, Method::POST, "/admin/keys", Some(WRITER), &body).await });
    }
    let mut ids = Vec::new();
    while let Some(r) = set.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, 201, "{}", r.text());
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    println!("20 concurrent creates answered in {:?}", start.elapsed());
    ids.sort();
    let mut listed = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = read(kg, &format!("/admin/keys?label=bulk&limit=7{cursor}")).await;
        listed.extend(page["keys"].as_array().unwrap().iter().map(|k| k["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(listed, ids, "every create persisted, listed once each in id order");
    for id in &ids {
        assert_eq!(read(kg, &format!("/admin/keys/{id}/events")).await["events"][0]["event"], "created");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_creates_all_persist_on_the_file_store() {
    let (_up, kg) = file_proxy().await;
    twenty_concurrent_creates(&kg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_creates_all_persist_on_postgres() {
    let (db, up, dir) = (Db::new().await, Upstream::spawn().await, tempfile::tempdir().unwrap());
    let kg = pg_proxy(&db, &up, dir.path()).await;
    twenty_concurrent_creates(&kg).await;
}

#[tokio::test]
async fn an_admin_token_is_rotated_by_a_config_reload() {
    let (_up, kg) = file_proxy().await;
    let fresh = "fresh-token-0123456789abcdef";
    let text = kg.config_text().replace(&keygate::admin::token_hash(READER), &keygate::admin::token_hash(fresh));
    kg.write_config(&text);
    eventually(Duration::from_secs(5), async || {
        kg.admin_call(Method::GET, "/admin/keys", Some(fresh), "").await.status == 200
    })
    .await;
    kg.admin_call(Method::GET, "/admin/keys", Some(READER), "").await.assert_error(401, "ADMIN_TOKEN_REQUIRED");
}

#[tokio::test]
async fn the_cli_drives_a_remote_admin_api() {
    let (_up, kg) = file_proxy().await;
    let token_file = kg.dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{WRITER}\n")).unwrap();
    let url = format!("http://{}", kg.admin);
    let remote = |args: &[&str]| {
        let mut all = vec!["keys", "--admin-url", &url, "--admin-token-file", token_file.to_str().unwrap()];
        all.extend_from_slice(args);
        all.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = async |args: Vec<String>| {
        let out = run_keygate(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        assert!(out.ok, "{args:?}: {}", out.stderr);
        out.stdout
    };
    let created: Value =
        serde_json::from_str(&run(remote(&["create", "--label", "from the cli", "--json"])).await).unwrap();
    let id = created["id"].as_str().unwrap();
    assert!(created["secret"].as_str().unwrap().starts_with("dpl_live_"));
    let listed: Value = serde_json::from_str(&run(remote(&["list", "--label", "cli", "--json"])).await).unwrap();
    assert_eq!(listed[0]["id"], id);
    run(remote(&["update", id, "--clinics", "clinic_009"])).await;
    run(remote(&["revoke", id, "--reason", "test over"])).await;
    let events = read(&kg, &format!("/admin/keys/{id}/events")).await;
    let kinds: Vec<&str> = events["events"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created", "updated", "revoked"]);

    std::fs::write(&token_file, READER).unwrap();
    let refused = run_keygate(&remote(&["revoke", id]).iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(!refused.ok && refused.stderr.contains("INSUFFICIENT_SCOPE"), "{}", refused.stderr);
}

#[tokio::test]
async fn a_minted_admin_token_prints_its_config_entry() {
    let out = run_keygate(&["admin-token", "--id", "ops", "--scopes", "keys:read,keys:write"]).await;
    assert!(out.ok, "{}", out.stderr);
    let token = out.stdout.split_whitespace().find(|w| w.starts_with("kgadm_")).unwrap();
    assert!(out.stdout.contains(&format!("sha256: {}", keygate::admin::token_hash(token))));
    assert!(out.stdout.contains("scopes: [keys:read, keys:write]"));
    assert!(!run_keygate(&["admin-token", "--id", "ops", "--scopes", "keys:all"]).await.ok);
}
