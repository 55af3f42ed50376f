//! The key lifecycle through the real `keygate keys` binary, against a running proxy.

use std::path::Path;
use std::time::Duration;

use crate::support::clinics_status as status;
use crate::support::*;

async fn keys(table: &Path, args: &[&str]) -> Out {
    keys_cli(KeysAt::Table(table), args).await
}

async fn create(table: &Path, args: &[&str]) -> (String, String) {
    create_key(KeysAt::Table(table), args).await
}

#[tokio::test]
async fn a_key_created_by_the_cli_works_within_two_seconds_and_revoke_stops_it() {
    let up = Upstream::spawn().await;
    let kg = spawn_proxy(up.addr, &[], "").await;

    let (id, secret) = create(&kg.keys_path, &["--label", "integration", "--clinics", "clinic_001"]).await;
    assert!(secret.starts_with("dpl_live_"));
    assert!(!std::fs::read_to_string(&kg.keys_path).unwrap().contains(&secret), "only the hash is stored");
    let took = eventually(Duration::from_secs(2), async || status(&kg, &secret).await == 200).await;
    assert_eq!(up.last().one("x-api-key-id"), id);
    assert_eq!(up.last().one("x-allowed-clinics"), "clinic_001");
    println!("create → usable: {took:?}");

    let out = keys(&kg.keys_path, &["revoke", &id, "--reason", "leaked in a ticket"]).await;
    assert!(out.ok, "{}", out.stderr);
    let took = eventually(Duration::from_secs(2), async || status(&kg, &secret).await == 401).await;
    let r = kg.get("/api/v1/clinics", &[("authorization", &format!("Bearer {secret}"))]).await;
    r.assert_error(401, "API_KEY_REVOKED");
    println!("revoke → refused: {took:?}");
    assert!(!logs().contains(&secret));
}

#[tokio::test]
async fn rotate_keeps_both_keys_during_the_grace_period_and_only_the_new_one_after() {
    let up = Upstream::spawn().await;
    let clock = Clock::manual();
    let kg = spawn_proxy_at(&clock, up.addr, &[], "").await;
    let (old_id, old) =
        create(&kg.keys_path, &["--label", "rotating", "--scopes", "interactions:read,clinics:read"]).await;
    eventually(Duration::from_secs(2), async || status(&kg, &old).await == 200).await;

    let out = keys(&kg.keys_path, &["rotate", &old_id, "--grace", "3s", "--json"]).await;
    assert!(out.ok, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let (new_id, new) = (v["id"].as_str().unwrap().to_string(), v["key"].as_str().unwrap().to_string());
    eventually(Duration::from_secs(2), async || status(&kg, &new).await == 200).await;
    assert_eq!(status(&kg, &old).await, 200, "the old key works during the grace period");
    assert_eq!(up.last().one("x-scopes"), "interactions:read clinics:read", "the successor has the same scopes");

    let list = keys(&kg.keys_path, &["list", "--json"]).await;
    let list: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let find = |id: &str| list.as_array().unwrap().iter().find(|k| k["id"] == id).unwrap().clone();
    assert_eq!(find(&old_id)["rotated_to"], new_id.as_str());
    assert_eq!(find(&new_id)["rotated_from"], old_id.as_str());

    // The grace period ends at a whole second: the old key works to its last nanosecond.
    let grace_end = rfc3339(&find(&old_id)["expires_at"]);
    grace_ends_to_the_nanosecond(&clock, grace_end, &[&kg], &old, &new).await;
}

#[tokio::test]
async fn a_checksum_typo_is_refused_without_a_table_lookup() {
    let up = Upstream::spawn().await;
    let real = TestKey::live("k_real");
    // A typo of the real key (last character changed), whose hash is *in* the table: only a
    // check made before the lookup can refuse it.
    let last = real.secret.chars().last().unwrap();
    let typo = format!("{}{}", &real.secret[..real.secret.len() - 1], if last == 'a' { 'b' } else { 'a' });
    let typo_key = TestKey { id: "k_typo".into(), secret: typo.clone(), extra: String::new(), environment: "live" };
    let kg = spawn_proxy(up.addr, &[&real, &typo_key], "").await;

    let r = kg.get("/api/v1/clinics", &[("authorization", &format!("Bearer {typo}"))]).await;

    r.assert_error(401, "INVALID_API_KEY");
    assert_eq!(up.count(), 0);
    assert_eq!(status(&kg, &real.secret).await, 200);
}

#[tokio::test]
async fn concurrent_creates_and_revokes_never_lose_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("keys.yaml");
    racing_clis_lose_no_change(KeysAt::Table(&table), 6).await;
}

#[tokio::test]
async fn a_crash_mid_write_loses_nothing() {
    let up = Upstream::spawn().await;
    let kg = spawn_proxy(up.addr, &[], "").await;
    let (_, first) = create(&kg.keys_path, &["--label", "before the crash"]).await;
    eventually(Duration::from_secs(2), async || status(&kg, &first).await == 200).await;

    // What a CLI killed mid-write leaves behind: a half-written temp file beside the table.
    let stray = kg.keys_path.with_file_name(".keys.yaml.tmp-99999");
    let whole = std::fs::read_to_string(&kg.keys_path).unwrap();
    std::fs::write(&stray, &whole[..whole.len() / 2]).unwrap();

    // A reload with the stray beside the table (SIGHUP's, so it certainly happens), then one for
    // the table's own change: both read the table, never the temp file.
    let (ok, failed) =
        ("keygate_key_table_reloads_total{result=\"ok\"}", "keygate_key_table_reloads_total{result=\"failed\"}");
    let before = kg.metric(ok).await;
    kg.running().reload();
    eventually(Duration::from_secs(2), async || kg.metric(ok).await > before).await;
    assert_eq!(status(&kg, &first).await, 200, "the proxy never reads the temp file");
    assert_eq!(kg.metric(failed).await, 0.0);
    let (_, second) = create(&kg.keys_path, &["--label", "after the crash"]).await;
    eventually(Duration::from_secs(2), async || status(&kg, &second).await == 200).await;
    assert_eq!(status(&kg, &first).await, 200);
    assert_eq!(kg.metric(failed).await, 0.0);
}

#[tokio::test]
async fn bad_input_is_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("keys.yaml");
    let (id, _) = create(&table, &["--label", "keep me"]).await;
    let before = std::fs::read(&table).unwrap();
    let cases: [(&[&str], &str); 7] = [
        (&["create", "--label", "x", "--scopes", "interactions:delete"], "unknown scope"),
        (&["create", "--label", "x", "--allow-ip", "10.0.0.0/33"], "not an IP address or CIDR"),
        (&["create", "--label", "x", "--expires-at", "2001-01-01T00:00:00Z"], "not in the future"),
        (&["create", "--label", "x", "--type", "admin"], "expected read_only, write or full"),
        (&["revoke", "key_doesnotexist"], "no key with id"),
        (&["rotate", "key_doesnotexist"], "no key with id"),
        (&["update", &id, "--clinics", "bad clinic"], "clinic"),
    ];
    for (args, want) in cases {
        let out = keys(&table, args).await;
        assert!(!out.ok, "{args:?} should fail");
        assert!(out.stderr.contains(want), "{args:?}: {}", out.stderr);
        assert_eq!(std::fs::read(&table).unwrap(), before, "{args:?} changed the table");
    }
}

#[tokio::test]
async fn show_reports_usage_from_the_running_proxy() {
    let up = Upstream::spawn().await;
    let kg = spawn_proxy(up.addr, &[], "").await;
    let (id, secret) = create(&kg.keys_path, &["--label", "watched", "--scopes", "clinics:read"]).await;
    eventually(Duration::from_secs(2), async || status(&kg, &secret).await == 200).await;
    for _ in 0..2 {
        kg.get("/api/v1/clinics", &[("authorization", &format!("Bearer {secret}"))]).await;
    }
    kg.get("/api/v1/interactions", &[("authorization", &format!("Bearer {secret}"))]).await; // 403

    let out = keys(&kg.keys_path, &["show", &id, "--json", "--admin", &kg.admin.to_string()]).await;
    assert!(out.ok, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["label"], "watched");
    assert!(v.get("hash").is_none(), "never the hash");
    assert_eq!(v["usage"]["requests"]["2xx"], 3, "{v}");
    assert_eq!(v["usage"]["requests"]["4xx"], 1, "{v}");
    assert!(v["usage"]["last_used_at"].as_str().is_some(), "{v}");

    // Without a reachable proxy, show still shows the table's view and says why usage is missing.
    let out = keys(&kg.keys_path, &["show", &id, "--json", "--admin", &dead_addr().await.to_string()]).await;
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(v["usage"]["unavailable"].as_str().unwrap().contains("not reachable"), "{v}");
}

#[tokio::test]
async fn the_admin_key_api_needs_the_token_when_one_is_configured() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_adm");
    let (_token_dir, token_file) = temp_file("token", "s3cret-admin-token-0123456789\n");
    let kg = spawn_proxy(up.addr, &[&key], &format!("admin_token_file: {}\n", token_file.display())).await;

    let token = [("authorization", "Bearer s3cret-admin-token-0123456789")];
    let r = kg.admin_get("/admin/keys/k_adm").await;
    r.assert_error(401, "ADMIN_TOKEN_REQUIRED");
    assert!(r.headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    kg.admin_get_with("/admin/keys/k_adm", &[("authorization", "Bearer wrong")])
        .await
        .assert_error(401, "ADMIN_TOKEN_REQUIRED");
    let r = kg.admin_get_with("/admin/keys/k_adm", &token).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["id"], "k_adm");
    assert_eq!(r.json()["state"], "active");
    // The scheme is case-insensitive, as on the proxy port (RFC 9110 11.1).
    let lower = [("authorization", "bearer s3cret-admin-token-0123456789")];
    assert_eq!(kg.admin_get_with("/admin/keys/k_adm", &lower).await.status, 200);
    kg.admin_get_with("/admin/keys/nope", &token).await.assert_error(404, "NOT_FOUND");
    kg.admin_get_with("/admin/nothing", &token).await.assert_error(404, "NOT_FOUND");
    // Metrics and probes stay open for the kubelet and Prometheus.
    assert_eq!(kg.admin_get("/metrics").await.status, 200);
    assert!(!logs().contains("s3cret-admin-token"));
}

#[tokio::test]
async fn a_rate_limit_tier_must_be_one_the_config_has() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("keys.yaml");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "environment: live\nupstream:\n  url: http://127.0.0.1:1\nkeys:\n  file: {}\nrate_limits:\n  tiers:\n    default: {{rate: 10/s}}\n    bulk: {{rate: 100/s}}\n",
            table.display()
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let out = keys(&table, &["create", "--config", c, "--label", "x", "--rate-limit", "gold"]).await;
    assert!(!out.ok);
    assert!(out.stderr.contains("\"gold\" is not a tier") && out.stderr.contains("bulk, default"), "{}", out.stderr);
    assert!(!table.exists(), "nothing written");
    let (id, _) = create(&table, &["--config", c, "--label", "x", "--rate-limit", "bulk"]).await;
    assert!(std::fs::read_to_string(&table).unwrap().contains("rate_limit: bulk"));
    let out = keys(&table, &["update", "--config", c, &id, "--rate-limit", "platinum"]).await;
    assert!(!out.ok && out.stderr.contains("\"platinum\" is not a tier"), "{}", out.stderr);
}

#[tokio::test]
async fn revoke_twice_succeeds_a_no_op_update_keeps_updated_at_and_both_speak_json() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("keys.yaml");
    let (id, secret) = create(&table, &["--label", "twice", "--clinics", "c1"]).await;

    let out = keys(&table, &["update", &id, "--label", "renamed", "--json"]).await;
    assert!(out.ok, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!((v["changed"].as_bool(), v["label"].as_str()), (Some(true), Some("renamed")));
    let stamped = v["updated_at"].as_str().expect("a change sets updated_at").to_string();
    // Back-date the stamp, so a no-op that wrongly stamped "now" could not match it by chance.
    let text = std::fs::read_to_string(&table).unwrap().replace(&stamped, "2020-01-01T00:00:00Z");
    std::fs::write(&table, text).unwrap();
    let stamped = "2020-01-01T00:00:00Z";
    let out = keys(&table, &["update", &id, "--label", "renamed", "--clinics", "c1", "--json"]).await;
    assert!(out.ok, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!((v["changed"].as_bool(), v["updated_at"].as_str()), (Some(false), Some(stamped)));
    let plain = keys(&table, &["update", &id, "--label", "renamed"]).await;
    assert!(plain.stdout.contains("nothing changed"), "{}", plain.stdout);

    let first = keys(&table, &["revoke", &id, "--reason", "leaked", "--json"]).await;
    assert!(first.ok, "{}", first.stderr);
    let v: serde_json::Value = serde_json::from_str(&first.stdout).unwrap();
    assert_eq!((v["id"].as_str(), v["already_revoked"].as_bool()), (Some(id.as_str()), Some(false)));
    let revoked_at = v["revoked_at"].as_str().unwrap().to_string();
    let again = keys(&table, &["revoke", &id, "--json"]).await;
    assert!(again.ok, "revoking twice succeeds: {}", again.stderr);
    let v: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!((v["already_revoked"].as_bool(), v["revoked_at"].as_str()), (Some(true), Some(revoked_at.as_str())));
    let plain = keys(&table, &["revoke", &id]).await;
    assert!(plain.ok && plain.stdout.contains("already revoked"), "{}", plain.stdout);
    assert!(!std::fs::read_to_string(&table).unwrap().contains(&secret));
}

#[tokio::test]
async fn show_given_a_secret_refuses_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("keys.yaml");
    let (_, secret) = create(&table, &["--label", "shown"]).await;
    for cmd in ["show", "revoke", "rotate", "update"] {
        let out = keys(&table, &[cmd, &secret]).await;
        assert!(!out.ok, "{cmd} accepted a secret");
        assert!(out.stderr.contains("looks like a key's secret"), "{cmd}: {}", out.stderr);
        assert!(!out.stderr.contains(&secret) && !out.stdout.contains(&secret), "{cmd} echoed the secret");
    }
}

#[tokio::test]
async fn keys_secret_publishes_the_table_a_mounted_keygate_serves() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("keys.yaml");
    let (id, secret) = create(&table, &["--label", "published"]).await;

    let out = keys(&table, &["secret", "--name", "keygate-keys", "--namespace", "clinic"]).await;

    assert!(out.ok, "{}", out.stderr);
    assert!(!out.stdout.contains(&secret), "a manifest holds hashes only");
    let m: serde_yaml::Value = serde_yaml::from_str(&out.stdout).unwrap();
    assert_eq!((m["kind"].as_str(), m["metadata"]["name"].as_str()), (Some("Secret"), Some("keygate-keys")));
    assert_eq!(m["metadata"]["namespace"], "clinic");
    // What the kubelet would write into the mount is a table keygate serves (written before the
    // reloader's first look: it compares with the file as loaded, not as first seen).
    let mounted = m["stringData"]["keys.yaml"].as_str().unwrap();
    let up = Upstream::spawn().await;
    let kg = spawn_proxy(up.addr, &[], "").await;
    kg.write_keys(mounted);
    eventually(Duration::from_secs(5), async || status(&kg, &secret).await == 200).await;
    assert_eq!(up.last().one("x-api-key-id"), id);

    let out = keys(&table, &["secret", "--name", "Keygate_Keys"]).await;
    assert!(!out.ok && out.stderr.contains("not a valid Secret name"), "{}", out.stderr);
}
