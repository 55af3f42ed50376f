//! A key table holding a scope no route or preset knows (`invoices:raed`) is refused like any
//! other invalid table: at start, on reload (the last good table keeps serving), by
//! `check-config`, and by `keys import` into PostgreSQL. Each refusal names the key and scope.

use std::path::Path;
use std::time::Duration;

use crate::pg_store::{keys, Migrated};
use crate::support::*;

const TYPO: &str = "    scopes: [\"interactions:read\", \"invoices:raed\"]\n";

/// A config and key table on disk for the binary; returns the config's path.
fn files(dir: &Path, table: &str) -> std::path::PathBuf {
    let keys_path = dir.join("keys.yaml");
    std::fs::write(&keys_path, table).unwrap();
    let cfg = dir.join("kg.yaml");
    std::fs::write(
        &cfg,
        format!(
            "environment: live\nlisten: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nupstream:\n  url: http://127.0.0.1:1\nkeys:\n  file: {}\n",
            keys_path.display()
        ),
    )
    .unwrap();
    cfg
}

#[tokio::test]
async fn a_reload_with_an_unknown_scope_keeps_the_last_good_table_and_is_logged_and_counted() {
    let up = Upstream::spawn().await;
    let good = TestKey::live("k_scope_good");
    let kg = spawn_proxy(up.addr, &[&good], "").await;
    kg.get_as(&good, "/api/v1/clinics").await.ok();
    let failed = "keygate_key_table_reloads_total{result=\"failed\"}";
    let before = kg.metric(failed).await;

    let typo = TestKey::live("k_scope_typo").with(TYPO);
    kg.write_keys(&table_yaml(&[&good, &typo]));
    kg.running().reload();
    eventually(Duration::from_secs(5), async || kg.metric(failed).await > before).await;

    kg.get_as(&good, "/api/v1/clinics").await.ok();
    let r = kg.get_as(&typo, "/api/v1/clinics").await;
    r.assert_error(401, "INVALID_API_KEY");
    let line = logs()
        .lines()
        .find(|l| l.contains("key table reload failed") && l.contains("k_scope_typo"))
        .expect("a reload failure naming the key")
        .to_string();
    assert!(line.contains("invoices:raed"), "{line}");
}

#[tokio::test]
async fn serve_and_check_config_refuse_a_table_with_an_unknown_scope_naming_key_and_scope() {
    let dir = tempfile::tempdir().unwrap();
    let typo = TestKey::live("k_scope_typo").with(TYPO);
    let cfg = files(dir.path(), &table_yaml(&[&TestKey::live("k_ok"), &typo]));
    let cfg = cfg.to_str().unwrap();

    let check = run_keygate(&["check-config", cfg]).await;
    assert!(!check.ok, "check-config must exit 1: {}", check.stdout);
    assert!(check.stderr.contains("k_scope_typo") && check.stderr.contains("invoices:raed"), "{}", check.stderr);
    // The nearest known scope is suggested only when it is close; here it is not.
    assert!(check.stderr.contains("unknown scope \"invoices:raed\""), "{}", check.stderr);

    let serve = run_keygate(&["serve", "--config", cfg]).await;
    assert!(!serve.ok, "serve must refuse to start");
    assert!(serve.stderr.contains("k_scope_typo") && serve.stderr.contains("invoices:raed"), "{}", serve.stderr);

    // The same table passes once a route requires the scope.
    let mut text = std::fs::read_to_string(cfg).unwrap();
    text.push_str("routes:\n  - path: /api/v1/invoices\n    scopes: [\"invoices:raed\"]\n");
    std::fs::write(cfg, text).unwrap();
    let check = run_keygate(&["check-config", cfg]).await;
    assert!(check.ok, "{}", check.stderr);
}

#[tokio::test]
async fn keys_import_into_postgres_refuses_an_unknown_scope_and_writes_nothing() {
    let Migrated { db: _db, dir, cli, up: _up } = Migrated::new().await;
    let file = dir.path().join("incoming.yaml");
    let typo = TestKey::live("k_scope_typo").with(TYPO);
    std::fs::write(&file, table_yaml(&[&TestKey::live("k_fine"), &typo])).unwrap();

    let out = keys(&cli, &["import", file.to_str().unwrap()]).await;
    assert!(!out.ok, "{}", out.stdout);
    assert!(out.stderr.contains("k_scope_typo") && out.stderr.contains("invoices:raed"), "{}", out.stderr);
    let list = keys(&cli, &["list", "--json"]).await;
    assert!(list.ok, "{}", list.stderr);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&list.stdout).unwrap(), serde_json::json!([]));
}
