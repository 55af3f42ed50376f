//! Anomaly detection through the real proxy: each detector fires on the pattern it is for,
//! once per episode, as a metric and an audit event; ordinary traffic fires nothing.

use std::time::Duration;

use crate::support::*;

const INTERACTIONS: &str = "/api/v1/clinics/clinic_001/interactions";
const METRICS: &str = "/api/v1/clinics/clinic_001/metrics";

fn anomaly(kind: &str) -> String {
    format!(r#"keygate_anomalies_total{{kind="{kind}"}}"#)
}

/// The anomaly audit events of `kind` that mention `needle`.
fn events(kind: &str, needle: &str) -> Vec<serde_json::Value> {
    logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "keygate::audit" && v["event"] == "anomaly" && v["kind"] == kind)
        .filter(|v| v.to_string().contains(needle))
        .collect()
}

#[tokio::test]
async fn ordinary_traffic_fires_nothing() {
    let (_up, key, kg) = proxy_for(TestKey::live("k_an_plain").with("    scopes: [\"interactions:read\"]\n"), "").await;
    for i in 0..50 {
        let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;
        assert_eq!(r.status, 200);
        if i % 20 == 0 {
            // A typo now and then, and a scope the key does not have.
            kg.get(INTERACTIONS, &[("authorization", "Bearer dpl_live_typo")]).await;
            kg.get(METRICS, &[("authorization", &key.bearer())]).await;
        }
    }
    let text = kg.admin_get("/metrics").await.text();
    for line in text.lines().filter(|l| l.starts_with("keygate_anomalies_total{")) {
        assert!(line.ends_with(" 0"), "{line}");
    }
}

#[tokio::test]
async fn an_invalid_key_burst_is_reported_once_and_blocks_the_address() {
    let clock = Clock::manual();
    let (_up, key, kg) = proxy_for_at(
        &clock,
        TestKey::live("k_an_victim"),
        "anomaly:\n  invalid_key_burst: {threshold: 5, window: 1m, block_for: 2s, block_status: 403}\n",
    )
    .await;
    for i in 0..5 {
        let guess = format!("Bearer dpl_live_guess{i:030}");
        kg.get(INTERACTIONS, &[("authorization", &guess)]).await.assert_error(401, "INVALID_API_KEY");
    }
    assert_eq!(kg.metric(&anomaly("invalid_key_burst")).await, 0.0, "five is within the threshold");
    let r = kg.get(INTERACTIONS, &[("authorization", "Bearer dpl_live_guess6")]).await;
    r.assert_error(401, "INVALID_API_KEY");
    // Blocked now, whatever the key.
    let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;
    r.assert_error(403, "IP_BLOCKED");
    assert!(r.headers.contains_key("retry-after"));
    for _ in 0..10 {
        kg.get(INTERACTIONS, &[("authorization", "Bearer dpl_live_more")]).await.assert_error(403, "IP_BLOCKED");
    }
    assert_eq!(kg.metric(&anomaly("invalid_key_burst")).await, 1.0, "one episode, one anomaly");
    assert_eq!(kg.metric("keygate_blocked_client_ips").await, 1.0);
    // The log is the whole test binary's: other tests' keygates on 127.0.0.1 may have a burst of
    // their own (the default detector), so this one's is found by its own threshold.
    let ev = events("invalid_key_burst", "more than 5 invalid keys in 1m");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert!(ev[0].to_string().contains("127.0.0.1"));
    assert!(!logs().contains("dpl_live_guess0000"), "presented keys are never logged");
    clock.advance(Duration::from_secs(2) - Duration::from_nanos(1));
    let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;
    r.assert_error(403, "IP_BLOCKED");
    assert_eq!(r.headers["retry-after"], "1", "a nanosecond left, rounded up");
    clock.advance(Duration::from_nanos(1));
    assert_eq!(kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await.status, 200, "the block ends");
}

#[tokio::test]
async fn revoked_expired_and_wrong_environment_keys_are_reported_by_key_id() {
    let up = Upstream::spawn().await;
    let revoked = TestKey::live("k_an_revoked").with("    revoked_at: 2026-01-01T00:00:00Z\n");
    let expired = TestKey::live("k_an_expired").with("    expires_at: 2026-01-01T00:00:00Z\n");
    let tester = TestKey::test("k_an_tester");
    let kg = spawn_proxy(up.addr, &[&revoked, &expired, &tester], "").await;
    for _ in 0..3 {
        kg.get(INTERACTIONS, &[("authorization", &revoked.bearer())]).await.assert_error(401, "API_KEY_REVOKED");
        kg.get(INTERACTIONS, &[("authorization", &expired.bearer())]).await.assert_error(401, "API_KEY_EXPIRED");
        kg.get(INTERACTIONS, &[("authorization", &tester.bearer())])
            .await
            .assert_error(401, "API_KEY_ENVIRONMENT_MISMATCH");
    }
    assert_eq!(kg.metric(&anomaly("revoked_key_use")).await, 1.0);
    assert_eq!(kg.metric(&anomaly("expired_key_use")).await, 1.0);
    assert_eq!(kg.metric(&anomaly("environment_mismatch")).await, 1.0);
    let ev = events("revoked_key_use", "k_an_revoked");
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["key_id"], "k_an_revoked");
    assert_eq!(events("expired_key_use", "k_an_expired")[0]["key_id"], "k_an_expired");
}

#[tokio::test]
async fn repeated_scope_refusals_are_probing() {
    let (_up, key, kg) = proxy_for(
        TestKey::live("k_an_prober").with("    scopes: [\"metrics:read\"]\n"),
        "anomaly:\n  probing: {threshold: 3, window: 1m}\n",
    )
    .await;
    for _ in 0..3 {
        kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await.assert_error(403, "INSUFFICIENT_SCOPE");
    }
    assert_eq!(kg.metric(&anomaly("scope_probing")).await, 0.0);
    kg.get("/api/v1/nowhere", &[("authorization", &key.bearer())]).await.assert_error(404, "ROUTE_NOT_FOUND");
    assert_eq!(kg.metric(&anomaly("scope_probing")).await, 1.0);
    assert_eq!(events("scope_probing", "k_an_prober").len(), 1);
}

#[tokio::test]
async fn a_key_from_a_new_network_is_reported() {
    let (_up, key, kg) = proxy_for(TestKey::live("k_an_roamer"), "trusted_proxies: [127.0.0.1]\n").await;
    let from = |ip: &'static str| [("authorization", key.bearer()), ("x-forwarded-for", ip.to_string())];
    for ip in ["10.20.30.1", "10.20.30.2", "10.20.30.1"] {
        let h = from(ip);
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(kg.get(INTERACTIONS, &h).await.status, 200);
    }
    assert_eq!(kg.metric(&anomaly("new_network")).await, 0.0, "one /24 so far");
    let h = from("198.51.100.77");
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(kg.get(INTERACTIONS, &h).await.status, 200, "reported, not refused");
    assert_eq!(kg.metric(&anomaly("new_network")).await, 1.0);
    let ev = events("new_network", "k_an_roamer");
    assert!(ev[0]["detail"].as_str().unwrap().contains("198.51.100.0/24"), "{:?}", ev[0]);
}

#[tokio::test]
async fn a_rate_far_above_the_keys_baseline_is_a_spike() {
    let clock = Clock::manual();
    let (_up, key, kg) = proxy_for_at(
        &clock,
        TestKey::live("k_an_spiky"),
        "anomaly:\n  rate_spike: {interval: 100ms, min_history: 5, factor: 5, min_rate: 1}\n",
    )
    .await;
    // Baseline: 10 requests a second for 0.8 s.
    for _ in 0..8 {
        kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;
        clock.advance(Duration::from_millis(100));
    }
    assert_eq!(kg.metric(&anomaly("rate_spike")).await, 0.0, "steady traffic");
    for _ in 0..60 {
        kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;
    }
    assert_eq!(kg.metric(&anomaly("rate_spike")).await, 1.0);
    let ev = events("rate_spike", "k_an_spiky");
    assert!(ev[0]["detail"].as_str().unwrap().contains("against a baseline of"), "{:?}", ev[0]);
}

#[tokio::test]
async fn a_rotated_out_key_near_the_end_of_its_grace_is_reported() {
    let up = Upstream::spawn().await;
    let soon = (time::OffsetDateTime::now_utc() + time::Duration::hours(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let old = TestKey::live("k_an_old").with(&format!("    expires_at: {soon}\n    rotated_to: k_an_new\n"));
    let unrotated = TestKey::live("k_an_expiring").with(&format!("    expires_at: {soon}\n"));
    let kg = spawn_proxy(up.addr, &[&old, &unrotated], "").await;
    assert_eq!(kg.get(INTERACTIONS, &[("authorization", &old.bearer())]).await.status, 200);
    assert_eq!(kg.get(INTERACTIONS, &[("authorization", &unrotated.bearer())]).await.status, 200);
    assert_eq!(kg.metric(&anomaly("rotated_key_in_use")).await, 1.0, "only the rotated-out key");
    let ev = events("rotated_key_in_use", "k_an_old");
    assert!(ev[0]["detail"].as_str().unwrap().contains("stops working in "), "{:?}", ev[0]);
}
