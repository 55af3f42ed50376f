//! Rate limiting through the real proxy: exact budgets, refill, the headers a client reads,
//! budgets keyed on the validated key (not the header text), the per-address budget for
//! unauthenticated traffic, and the per-key metrics.

use std::time::Duration;

use crate::support::*;

const INTERACTIONS: &str = "/api/v1/clinics/clinic_001/interactions";

/// Key `id` on tier `tier` (`spec`, e.g. `{rate: 1/m, burst: 5}`) and the config that has it.
fn on_tier(id: &str, tier: &str, spec: &str) -> (TestKey, String) {
    let key = TestKey::live(id).with(&format!("    rate_limit: {tier}\n"));
    (key, limits(&format!("    {tier}: {spec}\n"), ""))
}

fn limits(tiers: &str, more: &str) -> String {
    format!(
        "rate_limits:\n  default_tier: standard\n  tiers:\n    standard: {{rate: 1000/s, burst: 1000}}\n{tiers}{more}"
    )
}

#[tokio::test]
async fn exactly_burst_requests_pass_then_429_with_retry_after_and_headers() {
    let (key, cfg) = on_tier("k_rl_exact", "tiny", "{rate: 1/m, burst: 5}");
    let (up, key, kg) = proxy_for(key, &cfg).await;

    for i in 0..5 {
        let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.headers["ratelimit-policy"], "\"tiny\";q=5;w=300");
        let remaining = 4 - i;
        let rl = r.headers["ratelimit"].to_str().unwrap().to_string();
        assert!(rl.starts_with(&format!("\"tiny\";r={remaining};t=")), "request {i}: {rl}");
    }
    let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;
    let msg = r.assert_error(429, "RATE_LIMIT_EXCEEDED");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((59..=60).contains(&retry), "one request a minute: retry after {retry}");
    assert!(msg.contains(&format!("Retry after {retry} seconds")), "{msg}");
    assert!(r.headers["ratelimit"].to_str().unwrap().starts_with("\"tiny\";r=0;t="), "429s carry the headers too");
    assert_eq!(up.count(), 5, "the refused request never reached the upstream");
    assert!(!r.text().contains(&key.secret[9..]));
}

#[tokio::test]
async fn the_budget_refills_at_the_tier_rate() {
    let clock = Clock::manual();
    let (key, cfg) = on_tier("k_rl_refill", "quick", "{rate: 4/s, burst: 2}");
    let (_up, key, kg) = proxy_for_at(&clock, key, &cfg).await;
    let auth = [("authorization", key.bearer())];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(kg.get(INTERACTIONS, &auth).await.status, 200);
    assert_eq!(kg.get(INTERACTIONS, &auth).await.status, 200);
    kg.get(INTERACTIONS, &auth).await.assert_error(429, "RATE_LIMIT_EXCEEDED");
    // One emission interval is 250 ms: not a nanosecond sooner.
    clock.advance(Duration::from_millis(250) - Duration::from_nanos(1));
    kg.get(INTERACTIONS, &auth).await.assert_error(429, "RATE_LIMIT_EXCEEDED");
    clock.advance(Duration::from_nanos(1));
    assert_eq!(kg.get(INTERACTIONS, &auth).await.status, 200, "one more after one emission interval");
    kg.get(INTERACTIONS, &auth).await.assert_error(429, "RATE_LIMIT_EXCEEDED");
}

#[tokio::test]
async fn the_budget_belongs_to_the_key_not_to_the_header_text() {
    let (key, cfg) = on_tier("k_rl_shared", "tiny", "{rate: 1/m, burst: 3}");
    let (_up, key, kg) = proxy_for(key, &cfg).await;
    // Invalid keys first: they must not be charged to anyone.
    for _ in 0..10 {
        let forged = format!("Bearer {}x", &key.secret);
        assert_eq!(kg.get(INTERACTIONS, &[("authorization", &forged)]).await.status, 401);
    }
    let spellings =
        [format!("Bearer {}", key.secret), format!("bearer {}", key.secret), format!("BEARER  {}", key.secret)];
    for s in &spellings {
        assert_eq!(kg.get(INTERACTIONS, &[("authorization", s)]).await.status, 200, "{}", &s[..7]);
    }
    let r = kg.get(INTERACTIONS, &[("authorization", &spellings[1])]).await;
    r.assert_error(429, "RATE_LIMIT_EXCEEDED");
}

#[tokio::test]
async fn keys_without_a_tier_share_nothing_but_the_default_limit() {
    let up = Upstream::spawn().await;
    let a = TestKey::live("k_rl_a");
    let b = TestKey::live("k_rl_b");
    let kg = spawn_proxy(
        up.addr,
        &[&a, &b],
        "rate_limits:\n  tiers:\n    default: {rate: 1/m, burst: 2}\n  headers: x-ratelimit\n",
    )
    .await;
    for k in [&a, &b] {
        for i in 0..2 {
            let r = kg.get(INTERACTIONS, &[("authorization", &k.bearer())]).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.headers["x-ratelimit-limit"], "2");
            assert_eq!(r.headers["x-ratelimit-remaining"], (1 - i).to_string().as_str());
            assert!(r.headers.get("ratelimit").is_none(), "one header style at a time");
        }
        kg.get(INTERACTIONS, &[("authorization", &k.bearer())]).await.assert_error(429, "RATE_LIMIT_EXCEEDED");
    }
}

#[tokio::test]
async fn unauthenticated_traffic_has_a_per_address_budget() {
    let (_up, key, kg) = proxy_for(TestKey::live("k_rl_ip"), &limits("", "  per_ip: {rate: 1/m, burst: 3}\n")).await;
    for _ in 0..3 {
        kg.get(INTERACTIONS, &[("authorization", "Bearer dpl_live_nope")]).await.assert_error(401, "INVALID_API_KEY");
    }
    let r = kg.get(INTERACTIONS, &[]).await;
    r.assert_error(429, "RATE_LIMIT_EXCEEDED");
    assert!(r.headers.contains_key("retry-after"));
    // Authenticated traffic from the same address is not charged to that budget.
    for _ in 0..5 {
        assert_eq!(kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await.status, 200);
    }
    assert_eq!(kg.metric(r#"keygate_ip_rate_limit_decisions_total{outcome="limited"}"#).await, 1.0);
    assert_eq!(kg.metric(r#"keygate_ip_rate_limit_decisions_total{outcome="allowed"}"#).await, 3.0);
}

#[tokio::test]
async fn every_decision_is_counted_per_key_tier_and_outcome() {
    let (key, cfg) = on_tier("k_rl_metrics", "ten", "{rate: 1/m, burst: 10}");
    let (_up, key, kg) = proxy_for(key, &cfg).await;
    for _ in 0..12 {
        kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;
    }
    let m =
        |o: &str| format!(r#"keygate_rate_limit_decisions_total{{key_id="k_rl_metrics",outcome="{o}",tier="ten"}}"#);
    assert_eq!(kg.metric(&m("allowed")).await, 7.0, "remaining 9..3");
    assert_eq!(kg.metric(&m("near_limit")).await, 3.0, "remaining 2, 1, 0: 80% used or more");
    assert_eq!(kg.metric(&m("limited")).await, 2.0, "every 429 is counted");
    // Charged before routing, but a 429 is still counted under the route it was for.
    let series = r#"keygate_requests_total{code="RATE_LIMIT_EXCEEDED",route="/api/v1/clinics/{clinic_id}/interactions",shape="inline",status_class="4xx"}"#;
    assert_eq!(kg.metric(series).await, 2.0);
}

#[tokio::test]
async fn per_key_labels_stop_at_the_cap() {
    let up = Upstream::spawn().await;
    let keys: Vec<TestKey> = (0..4).map(|i| TestKey::live(&format!("k_rl_cap{i}"))).collect();
    let refs: Vec<&TestKey> = keys.iter().collect();
    let kg = spawn_proxy(up.addr, &refs, &limits("", "  metrics_key_labels: 2\n")).await;
    for k in &keys {
        kg.get(INTERACTIONS, &[("authorization", &k.bearer())]).await;
    }
    let text = kg.admin_get("/metrics").await.text();
    let labelled = text.lines().filter(|l| l.starts_with("keygate_rate_limit_decisions_total{")).count();
    assert_eq!(labelled, 3 * 3, "two keys and _other, three outcomes each:\n{text}");
    assert_eq!(
        kg.metric(r#"keygate_rate_limit_decisions_total{key_id="_other",outcome="allowed",tier="standard"}"#).await,
        2.0
    );
}

#[tokio::test]
async fn limiting_off_means_no_headers_and_no_refusals() {
    let (_up, key, kg) = proxy_for(
        TestKey::live("k_rl_off"),
        "rate_limits:\n  enabled: false\n  tiers:\n    default: {rate: 1/m, burst: 1}\n",
    )
    .await;
    for _ in 0..3 {
        let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;
        assert_eq!(r.status, 200);
        assert!(r.headers.get("ratelimit").is_none());
    }
}
