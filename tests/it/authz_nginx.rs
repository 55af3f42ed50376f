//! nginx `auth_request` in front of the recording upstream, keygate the authorizer, with the
//! shipped deploy/authz/nginx/keygate-authz.conf. What a client and the upstream see through
//! nginx is what they would see with keygate inline.

use std::time::Duration;

use crate::authz_front::*;
use crate::support::*;

#[tokio::test]
async fn an_allowed_request_reaches_the_upstream_with_keygate_identity_only() {
    let key = TestKey::live("k_nginx").with("    clinics: [clinic_001]\n");
    let (up, _kg, front) = Front::setup(Front::nginx, &[&key], "").await;
    let (r, seen) = allowed_request_carries_keygate_identity_only(&front, &up, &key).await;
    let rid = r.headers["x-request-id"].to_str().unwrap();
    assert_eq!(seen.one("x-request-id"), rid, "the upstream and the client see keygate's request id");
    assert!(r.headers.contains_key("ratelimit"), "{:?}", r.headers);
}

#[tokio::test]
async fn refusals_reach_the_client_with_keygate_status_body_and_headers() {
    let key = TestKey::live("k1").with("    clinics: [clinic_001]\n");
    let (up, _kg, front) = Front::setup(Front::nginx, &[&key], "").await;
    let bearer = key.bearer();

    let r = refusals_reach_the_client_as_keygate_wrote_them(&front, &bearer).await;
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.json()["request_id"], r.headers["x-request-id"].to_str().unwrap());

    let r = front.send(http::Method::PATCH, INTERACTIONS, &[("authorization", &bearer)]).await;
    let v = assert_error(&r, 403, "INSUFFICIENT_SCOPE");
    assert_eq!(v["error"]["message"], "API key lacks the required scope: interactions:write");

    // nginx resolves `..` for its own routing but reports the target as sent: refused.
    let r = front.get("/api/v1/clinics/clinic_002/../clinic_001/interactions", &[("authorization", &bearer)]).await;
    assert_error(&r, 400, "INVALID_REQUEST");

    // The clinic "empty result" keeps its 200 and its body (restored by @keygate_denied).
    let r = front.get("/api/v1/clinics/clinic_002/interactions", &[("authorization", &bearer)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), EMPTY);
    assert_eq!(up.count(), 0, "no refusal reached the upstream");
    assert!(!front.log().contains("[crit]"), "{}", front.log());
}

#[tokio::test]
async fn rate_limits_count_once_per_request_and_429_keeps_retry_after() {
    let kg = rate_limits_count_once_per_request(Front::nginx).await;
    let allowed =
        kg.metric("keygate_requests_total{code=\"OK\",route=\"/api/v1/clinics/{clinic_id}/interactions\",shape=\"nginx_auth_request\",status_class=\"2xx\"}").await;
    assert_eq!(allowed, 3.0, "one decision per client request");
}

#[tokio::test]
async fn the_client_address_is_nginx_peer_not_what_the_client_wrote() {
    let key = TestKey::live("k1").with("    allowed_ips: [198.51.100.0/24]\n");
    let (up, _kg, front) = Front::setup(Front::nginx, &[&key], "").await;
    let bearer = key.bearer();
    let r = front.get(INTERACTIONS, &[("authorization", &bearer), ("x-forwarded-for", "198.51.100.9")]).await;
    assert_error(&r, 403, "IP_NOT_ALLOWED");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_revoked_key_is_refused_through_nginx_as_soon_as_inline() {
    let key = TestKey::live("k_rev");
    let (_up, kg, front) = Front::setup(Front::nginx, &[&key], "").await;
    let bearer = key.bearer();
    front.get(INTERACTIONS, &[("authorization", &bearer)]).await.ok();
    let revoked =
        TestKey { secret: key.secret.clone(), ..TestKey::live("k_rev") }.with("    revoked_at: 2020-01-01T00:00:00Z\n");
    kg.write_keys(&table_yaml(&[&revoked]));
    let inline = eventually(Duration::from_secs(5), async || {
        kg.get(INTERACTIONS, &[("authorization", &bearer)]).await.status == 401
    })
    .await;
    // No cache in between: the very next request through nginx is refused too.
    let r = front.get(INTERACTIONS, &[("authorization", &bearer)]).await;
    assert_error(&r, 401, "API_KEY_REVOKED");
    assert!(inline < Duration::from_secs(5));
}
