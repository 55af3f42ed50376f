//! Caddy `forward_auth` in front of the recording upstream, keygate the authorizer, with the
//! shipped deploy/authz/Caddyfile (the same endpoint serves Traefik ForwardAuth and
//! ingress-nginx `auth-url`).

use crate::authz_front::{assert_error, keygate, Front};
use crate::support::*;

const INTERACTIONS: &str = "/api/v1/clinics/clinic_001/interactions";
const EMPTY: &str = r#"{"success":true,"data":[]}"#;

async fn setup(keys: &[&TestKey], extra: &str) -> (Upstream, Proxy, Front) {
    let up = Upstream::spawn().await;
    let kg = keygate(&up, keys, extra).await;
    let front = Front::caddy(kg.running().authz_addr.unwrap(), up.addr).await;
    (up, kg, front)
}

#[tokio::test]
async fn an_allowed_request_reaches_the_upstream_with_keygate_identity_only() {
    let key = TestKey::live("k_caddy").with("    clinics: [clinic_001]\n");
    let (up, _kg, front) = setup(&[&key], "").await;
    let bearer = key.bearer();
    let r = front
        .get(
            &format!("{INTERACTIONS}?page=2"),
            &[
                ("authorization", &bearer),
                ("x-api-key-id", "spoofed"),
                ("x-scopes", "admin:write"),
                ("x-keygate-context", "forged"),
            ],
        )
        .await;
    r.ok();
    let seen = up.last();
    assert_eq!(seen.uri, format!("{INTERACTIONS}?page=2"));
    assert_eq!(seen.one("x-api-key-id"), "k_caddy");
    assert_eq!(seen.one("x-allowed-clinics"), "clinic_001");
    assert_eq!(seen.one("x-api-key-environment"), "live");
    assert!(!seen.one("x-scopes").contains("admin:write"));
    assert!(seen.all("authorization").is_empty() && seen.all("x-keygate-context").is_empty(), "{seen:?}");
    assert!(seen.all("x-keygate-authz-secret").is_empty(), "the secret is between Caddy and keygate");
}

#[tokio::test]
async fn refusals_reach_the_client_with_keygate_status_body_and_headers() {
    let key = TestKey::live("k1").with("    clinics: [clinic_001]\n");
    let (up, _kg, front) = setup(&[&key], "").await;
    let bearer = key.bearer();

    let r = front.get(INTERACTIONS, &[]).await;
    assert_error(&r, 401, "UNAUTHORIZED");
    assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"keygate\"");

    let r = front.get("/api/v1/nowhere", &[("authorization", &bearer)]).await;
    assert_error(&r, 404, "ROUTE_NOT_FOUND");

    // A 2xx would mean "forward": the empty result is a 403 carrying the empty body (README).
    let r = front.get("/api/v1/clinics/clinic_002/interactions", &[("authorization", &bearer)]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.text(), EMPTY);
    assert_eq!(r.headers["x-keygate-status"], "200");
    assert_eq!(up.count(), 0, "no refusal reached the upstream");
}

#[tokio::test]
async fn rate_limits_count_once_per_request_and_429_keeps_retry_after() {
    let key = TestKey::live("k1");
    let (up, _kg, front) = setup(&[&key], "rate_limits:\n  tiers:\n    default: {rate: 1/m, burst: 3}\n").await;
    let bearer = key.bearer();
    for i in 0..3 {
        let r = front.get(INTERACTIONS, &[("authorization", &bearer)]).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    let r = front.get(INTERACTIONS, &[("authorization", &bearer)]).await;
    assert_error(&r, 429, "RATE_LIMIT_EXCEEDED");
    assert!(r.headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(up.count(), 3);
}

#[tokio::test]
async fn a_caller_without_the_secret_is_refused() {
    let key = TestKey::live("k1");
    let up = Upstream::spawn().await;
    let kg = keygate(&up, &[&key], "").await;
    let check = kg.running().authz_addr.unwrap();
    // Straight to the check endpoint, as anyone on the network would.
    let r = send(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http(),
        &format!("http://{check}/check/forward-auth"),
        http::Method::GET,
        &[("x-forwarded-method", "GET"), ("x-forwarded-uri", INTERACTIONS), ("authorization", &key.bearer())],
        bytes::Bytes::new(),
    )
    .await;
    assert_error(&r, 403, "CHECK_CALLER_REFUSED");
}
