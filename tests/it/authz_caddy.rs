//! Caddy `forward_auth` in front of the recording upstream, keygate the authorizer, with the
//! shipped deploy/authz/Caddyfile (the same endpoint serves Traefik ForwardAuth and
//! ingress-nginx `auth-url`).

use crate::authz_front::*;
use crate::support::*;

#[tokio::test]
async fn an_allowed_request_reaches_the_upstream_with_keygate_identity_only() {
    let key = TestKey::live("k_caddy").with("    clinics: [clinic_001]\n");
    let (up, _kg, front) = Front::setup(Front::caddy, &[&key], "").await;
    let (_, seen) = allowed_request_carries_keygate_identity_only(&front, &up, &key).await;
    assert!(seen.all("x-keygate-authz-secret").is_empty(), "the secret is between Caddy and keygate");
}

#[tokio::test]
async fn refusals_reach_the_client_with_keygate_status_body_and_headers() {
    let key = TestKey::live("k1").with("    clinics: [clinic_001]\n");
    let (up, _kg, front) = Front::setup(Front::caddy, &[&key], "").await;
    let bearer = key.bearer();
    refusals_reach_the_client_as_keygate_wrote_them(&front, &bearer).await;

    // A 2xx would mean "forward": the empty result is a 403 carrying the empty body (README).
    let r = front.get("/api/v1/clinics/clinic_002/interactions", &[("authorization", &bearer)]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.text(), EMPTY);
    assert_eq!(r.headers["x-keygate-status"], "200");
    assert_eq!(up.count(), 0, "no refusal reached the upstream");
}

#[tokio::test]
async fn rate_limits_count_once_per_request_and_429_keeps_retry_after() {
    rate_limits_count_once_per_request(Front::caddy).await;
}

#[tokio::test]
async fn a_caller_without_the_secret_is_refused() {
    let (_up, key, kg) = authorizer_for(TestKey::live("k1"), "").await;
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
