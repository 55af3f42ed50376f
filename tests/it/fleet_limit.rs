//! The shared budget end to end: two keygate replicas in front of one upstream share one
//! budget per key through the real Redis; Redis going away mid-run is handled by the
//! configured policy, counted, and recovered from. Also: anomalies reach the alert webhook.

use std::time::Duration;

use crate::redis_limit::{live_redis, redis_addr, via};
use crate::relay::Relay;
use crate::support::*;

const INTERACTIONS: &str = "/api/v1/clinics/clinic_001/interactions";

fn redis_limits(url: &str, prefix: &str, on_error: &str) -> String {
    format!(
        "rate_limits:\n  backend: redis\n  tiers:\n    default: {{rate: 1/m, burst: 6}}\n  redis:\n    url: {url}\n    key_prefix: \"{prefix}\"\n    timeout: 200ms\n    retry_after_failure: 300ms\n    on_error: {on_error}\n"
    )
}

fn prefix(test: &str) -> String {
    format!("keygate-it:{}:{test}:", uuid::Uuid::now_v7())
}

#[tokio::test]
async fn two_replicas_share_one_budget_per_key() {
    let url = live_redis().await;
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_fleet_shared");
    let cfg = redis_limits(&url, &prefix("shared"), "fail_open");
    let kg1 = spawn_proxy(up.addr, &[&key], &cfg).await;
    let kg2 = spawn_proxy(up.addr, &[&key], &cfg).await;
    for i in 0..6 {
        let kg = if i % 2 == 0 { &kg1 } else { &kg2 };
        let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;
        assert_eq!(r.status, 200, "request {i}");
        assert!(r.headers["ratelimit"].to_str().unwrap().starts_with(&format!("\"default\";r={};", 5 - i)));
    }
    kg1.get(INTERACTIONS, &[("authorization", &key.bearer())]).await.assert_error(429, "RATE_LIMIT_EXCEEDED");
    kg2.get(INTERACTIONS, &[("authorization", &key.bearer())]).await.assert_error(429, "RATE_LIMIT_EXCEEDED");
    assert_eq!(up.count(), 6, "six in all across both replicas, not six each");
}

#[tokio::test]
async fn redis_going_away_fails_open_to_local_limits_and_comes_back() {
    let url = live_redis().await;
    let relay = Relay::start(redis_addr(&url).await).await;
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_fleet_open");
    let clock = Clock::manual();
    let cfg = redis_limits(&via(&url, relay.addr()), &prefix("open"), "fail_open");
    let kg = spawn_proxy_at(&clock, up.addr, &[&key], &cfg).await;
    for _ in 0..2 {
        assert_eq!(kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await.status, 200);
    }
    relay.cut().await;
    // The local fallback has the same tier: six more, then 429, all without Redis.
    for i in 0..6 {
        let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;
        assert_eq!(r.status, 200, "fallback request {i}: {}", r.text());
    }
    kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await.assert_error(429, "RATE_LIMIT_EXCEEDED");
    assert_eq!(kg.metric(r#"keygate_rate_limit_redis_fallback_total{policy="fail_open"}"#).await, 7.0);
    let errors = kg.metric(r#"keygate_rate_limit_redis_errors_total{kind="connection"}"#).await
        + kg.metric(r#"keygate_rate_limit_redis_errors_total{kind="timeout"}"#).await;
    assert!(errors >= 1.0, "the failed call is counted");
    assert!(errors < 7.0, "calls skipped by the open circuit are fallbacks, not errors ({errors})");

    relay.restore();
    // Until the breaker's pause (300 ms) is over, the local budget still decides, without Redis.
    let accepted = relay.accepted();
    clock.advance(Duration::from_millis(300) - Duration::from_nanos(1));
    kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await.assert_error(429, "RATE_LIMIT_EXCEEDED");
    assert_eq!(kg.metric(r#"keygate_rate_limit_redis_fallback_total{policy="fail_open"}"#).await, 8.0);
    assert_eq!(relay.accepted(), accepted, "Redis was not asked");
    // After it, the shared budget (two spent of six) decides again.
    clock.advance(Duration::from_nanos(1));
    let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let back = r.headers["ratelimit"].to_str().unwrap().starts_with("\"default\";r=3;");
    assert!(back, "the shared budget is used again once Redis answers: {:?}", r.headers["ratelimit"]);
}

#[tokio::test]
async fn redis_going_away_fails_closed_with_503_when_configured() {
    let url = live_redis().await;
    let relay = Relay::start(redis_addr(&url).await).await;
    let (up, key, kg) = proxy_for(
        TestKey::live("k_fleet_closed"),
        &redis_limits(&via(&url, relay.addr()), &prefix("closed"), "fail_closed"),
    )
    .await;
    assert_eq!(kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await.status, 200);
    relay.cut().await;
    let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;
    r.assert_error(503, "SERVICE_UNAVAILABLE");
    assert_eq!(r.headers["retry-after"], "1");
    assert_eq!(up.count(), 1, "nothing unlimited reached the upstream");
    assert_eq!(kg.metric(r#"keygate_rate_limit_redis_fallback_total{policy="fail_closed"}"#).await, 1.0);
    let series = r#"keygate_requests_total{code="SERVICE_UNAVAILABLE",route="/api/v1/clinics/{clinic_id}/interactions",shape="inline",status_class="5xx"}"#;
    assert_eq!(kg.metric(series).await, 1.0, "counted under the route it was for");
}

#[tokio::test]
async fn anomalies_reach_the_alert_webhook_once_per_cooldown() {
    let hook = Upstream::spawn().await;
    let up = Upstream::spawn().await;
    let revoked = TestKey::live("k_alert_revoked").with("    revoked_at: 2026-01-01T00:00:00Z\n");
    let cfg = format!(
        "anomaly:\n  event_cooldown: 0s\nalerts:\n  webhook:\n    url: http://{}/hooks/T000/SECRET\n    cooldown: 10m\n    instance: it-pod\n",
        hook.addr
    );
    let kg = spawn_proxy(up.addr, &[&revoked], &cfg).await;
    for _ in 0..3 {
        kg.get(INTERACTIONS, &[("authorization", &revoked.bearer())]).await.assert_error(401, "API_KEY_REVOKED");
    }
    eventually(Duration::from_secs(3), async || hook.count() >= 1).await;
    // Once all three reports are judged (one sent, two held back), nothing more can come.
    let judged = async || {
        kg.metric(r#"keygate_alerts_total{result="sent"}"#).await
            + kg.metric(r#"keygate_alerts_total{result="suppressed"}"#).await
            == 3.0
    };
    eventually(Duration::from_secs(3), judged).await;
    assert_eq!(hook.count(), 1, "three reports, one alert within the cool-down");
    let post = hook.last();
    assert_eq!(post.method, http::Method::POST);
    assert_eq!(post.uri, "/hooks/T000/SECRET");
    let v: serde_json::Value = serde_json::from_slice(&post.body).unwrap();
    assert_eq!(v["kind"], "revoked_key_use");
    assert_eq!(v["subject"], "key k_alert_revoked");
    assert_eq!(v["instance"], "it-pod");
    assert!(v["text"].as_str().unwrap().contains("revoked_key_use"), "{v}");
    assert_eq!(kg.metric(r#"keygate_anomalies_total{kind="revoked_key_use"}"#).await, 3.0, "event_cooldown 0s");
    assert_eq!(kg.metric(r#"keygate_alerts_total{result="sent"}"#).await, 1.0);
    assert_eq!(kg.metric(r#"keygate_alerts_total{result="suppressed"}"#).await, 2.0);
    assert!(!logs().contains("SECRET"), "the webhook's token never reaches the logs");
}

/// An outage under load at `concurrency`: Redis is cut (or, `silent`, stops answering),
/// `per_round` requests go out, then the breaker's pause passes (one probe) and `per_round` more.
async fn outage_at(concurrency: usize, per_round: usize, silent: bool) -> Proxy {
    let url = live_redis().await;
    let relay = Relay::start(redis_addr(&url).await).await;
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_fleet_outage");
    let clock = Clock::manual();
    let cfg = redis_limits(&via(&url, relay.addr()), &prefix("outage"), "fail_open").replace("burst: 6", "burst: 1000");
    let kg = std::sync::Arc::new(spawn_proxy_at(&clock, up.addr, &[&key], &cfg).await);
    assert_eq!(kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await.status, 200);
    assert_eq!(kg.metric("keygate_rate_limit_redis_circuit_open").await, 0.0);
    if silent {
        relay.blackhole().await;
    } else {
        relay.cut().await;
    }
    for round in 0..2 {
        if round == 1 {
            clock.advance(Duration::from_millis(300));
        }
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..concurrency {
            let (kg, bearer) = (std::sync::Arc::clone(&kg), key.bearer());
            let share = per_round / concurrency + usize::from(worker < per_round % concurrency);
            tasks.spawn(async move {
                for _ in 0..share {
                    assert_eq!(kg.get(INTERACTIONS, &[("authorization", &bearer)]).await.status, 200);
                }
            });
        }
        tasks.join_all().await;
    }
    assert_eq!(kg.metric("keygate_rate_limit_redis_circuit_open").await, 1.0);
    relay.restore();
    clock.advance(Duration::from_millis(300));
    assert_eq!(kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await.status, 200);
    assert_eq!(kg.metric("keygate_rate_limit_redis_circuit_open").await, 0.0, "the probe closed it");
    std::sync::Arc::into_inner(kg).expect("the tasks are done")
}

async fn redis_errors(kg: &Proxy) -> f64 {
    let mut sum = 0.0;
    for kind in ["timeout", "connection", "response"] {
        sum += kg.metric(&format!("keygate_rate_limit_redis_errors_total{{kind=\"{kind}\"}}")).await;
    }
    sum
}

#[tokio::test]
async fn an_outage_is_counted_the_same_at_any_concurrency() {
    for (concurrency, silent) in [(1, false), (8, false), (1, true), (8, true)] {
        let kg = outage_at(concurrency, 24, silent).await;
        // The broken (or silent) connection once, however many requests rode it, and the one
        // probe once; every request made while Redis was away once, none after it came back.
        let case = format!("concurrency {concurrency}, silent {silent}");
        assert_eq!(redis_errors(&kg).await, 2.0, "{case}");
        let fallback = kg.metric(r#"keygate_rate_limit_redis_fallback_total{policy="fail_open"}"#).await;
        assert_eq!(fallback, 48.0, "{case}");
        if silent {
            assert_eq!(kg.metric(r#"keygate_rate_limit_redis_errors_total{kind="timeout"}"#).await, 2.0, "{case}");
        }
    }
}
