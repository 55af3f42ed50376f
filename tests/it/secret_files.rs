//! Secrets from mounted files (`url_file`) rather than the config: the Redis URL, the webhook
//! URL and the database URL. Each is used as if written inline, and never shows in logs or in
//! `check-config`'s output.

use std::time::Duration;

use crate::pg_store::{config_file, keys, migrate, Db};
use crate::redis_limit::live_redis;
use crate::support::*;

fn redis_cfg(url_file: &std::path::Path, prefix: &str) -> String {
    format!(
        "rate_limits:\n  backend: redis\n  tiers:\n    default: {{rate: 1/m, burst: 2}}\n  redis:\n    url_file: {}\n    key_prefix: \"{prefix}\"\n    timeout: 200ms\n    on_error: fail_open\n",
        url_file.display()
    )
}

#[tokio::test]
async fn a_redis_url_from_a_file_is_the_shared_budget_and_its_password_is_never_logged() {
    let url = live_redis().await;
    let (_dir, file) = temp_file("redis-url", format!("{url}\n"));
    let prefix = format!("keygate-it:{}:secret-file:", uuid::Uuid::now_v7());
    let (up, key, a) = proxy_for(TestKey::live("k_secret_file"), &redis_cfg(&file, &prefix)).await;
    let b = spawn_proxy(up.addr, &[&key], &redis_cfg(&file, &prefix)).await;
    let auth = [("authorization", key.bearer())];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Two replicas, one budget of 2: only a shared Redis makes the third request a 429.
    a.get("/api/v1/clinics", &auth).await.ok();
    a.get("/api/v1/clinics", &auth).await.ok();
    b.get("/api/v1/clinics", &auth).await.assert_error(429, "RATE_LIMIT_EXCEEDED");

    // A URL with a password, at an address where nothing answers: fail-open serves, and the
    // password is in no log line.
    let dead = dead_addr().await;
    std::fs::write(&file, format!("redis://:pw-from-secret-file@{dead}/0\n")).unwrap();
    let c = spawn_proxy(up.addr, &[&key], &redis_cfg(&file, &prefix)).await;
    eventually(Duration::from_secs(5), async || c.get("/api/v1/clinics", &auth).await.status == 200).await;
    assert!(!logs().contains("pw-from-secret-file"), "the Redis password was logged");
}

#[tokio::test]
async fn a_database_url_from_a_file_serves_the_key_cli_and_check_config_never_shows_it() {
    let db = Db::new().await;
    let (dir, url_file) = temp_file("db-url", format!("{}\n", db.url));
    let store = format!("key_store:\n  kind: postgres\n  url_file: {}\n  schema: {}\n", url_file.display(), db.schema);
    let cfg = config_file(dir.path(), "kg.yaml", dead_addr().await, &store);
    migrate(&cfg).await;
    let out = keys(&cfg, &["create", "--label", "from-a-secret", "--json"]).await;
    assert!(out.ok, "{}", out.stderr);
    let list = keys(&cfg, &["list"]).await;
    assert!(list.stdout.contains("from-a-secret"), "{}", list.stdout);

    // check-config names the setting, never the URL (with a password in it).
    std::fs::write(&url_file, "postgres://kg:db-pw-not-shown@db:5432/keys?sslmode=nonsense\n").unwrap();
    let check = run_keygate(&["check-config", cfg.to_str().unwrap()]).await;
    assert!(!check.ok, "{}", check.stdout);
    assert!(check.stderr.contains("key_store.url"), "{}", check.stderr);
    assert!(!check.stderr.contains("db-pw-not-shown") && !check.stdout.contains("db-pw-not-shown"));
}

#[tokio::test]
async fn check_config_reads_secret_files_and_reports_a_missing_one_without_its_contents() {
    let dir = tempfile::tempdir().unwrap();
    let hook = dir.path().join("hook-url");
    std::fs::write(&hook, "https://hooks.example/services/T000/hook-token-not-shown\n").unwrap();
    let keys_path = dir.path().join("keys.yaml");
    std::fs::write(&keys_path, "keys: []\n").unwrap();
    let cfg = dir.path().join("kg.yaml");
    let write = |hook_file: &std::path::Path| {
        std::fs::write(
            &cfg,
            format!(
                "environment: live\nupstream:\n  url: http://127.0.0.1:1\nkeys:\n  file: {}\nalerts:\n  webhook:\n    url_file: {}\n",
                keys_path.display(),
                hook_file.display()
            ),
        )
        .unwrap()
    };
    write(&hook);
    let ok = run_keygate(&["check-config", cfg.to_str().unwrap()]).await;
    assert!(ok.ok, "{}", ok.stderr);
    assert!(!ok.stdout.contains("hook-token-not-shown"));

    write(&dir.path().join("absent"));
    let bad = run_keygate(&["check-config", cfg.to_str().unwrap()]).await;
    assert!(!bad.ok);
    assert!(bad.stderr.contains("line 8: alerts.webhook.url_file: cannot read"), "{}", bad.stderr);
}
