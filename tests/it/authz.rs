//! Authentication and authorisation, end to end: who may come in (the Authorization header,
//! the key's shape, environment and validity), from where (allowed IPs, trusted proxies), to
//! which route with which scopes, and for which clinics. Every refusal is checked to have
//! stopped at keygate: the upstream never sees a refused request.

use bytes::Bytes;
use http::Method;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::support::*;

const INTERACTIONS: &str = "/api/v1/clinics/clinic_001/interactions";
const EMPTY: &str = r#"{"success":true,"data":[]}"#;

/// Asserts a 401 with the standard error body and a Bearer challenge; returns the message.
fn assert_401(r: &Resp, code: &str) -> String {
    let message = r.assert_error(401, code);
    let challenge = r
        .headers
        .get("www-authenticate")
        .unwrap_or_else(|| panic!("a 401 carries WWW-Authenticate; headers: {:?}", r.headers))
        .to_str()
        .unwrap();
    assert!(challenge.starts_with("Bearer"), "challenge: {challenge}");
    message
}

/// An RFC 3339 timestamp `days` from now (negative: in the past).
fn days_from_now(days: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::days(days)).format(&Rfc3339).unwrap()
}

/// The same secret with the case of every letter in its body flipped (prefix untouched).
fn case_flipped(secret: &str) -> String {
    let (prefix, body) = secret.split_at("dpl_live_".len());
    let flipped: String = body
        .chars()
        .map(|c| if c.is_ascii_lowercase() { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
        .collect();
    format!("{prefix}{flipped}")
}

fn rid(r: &Resp) -> String {
    r.headers["x-request-id"].to_str().unwrap().to_string()
}

// ---------- the Authorization header ----------

#[tokio::test]
async fn missing_authorization_is_401_with_a_bearer_challenge() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get(INTERACTIONS, &[]).await;

    let message = assert_401(&r, "UNAUTHORIZED");
    assert_eq!(message, "Missing Authorization header. Expected: Bearer <api_key>");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_scheme_other_than_bearer_is_401() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", "Basic dXNlcjpwYXNz")]).await;

    let message = assert_401(&r, "UNAUTHORIZED");
    assert!(message.to_lowercase().contains("scheme"), "{message}");
    assert!(message.contains("Bearer"), "{message}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn an_empty_bearer_token_is_401() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", "Bearer ")]).await;

    let message = assert_401(&r, "UNAUTHORIZED");
    assert!(message.to_lowercase().contains("empty"), "{message}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_bearer_token_with_a_space_is_401_malformed() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", "Bearer a b")]).await;

    let message = assert_401(&r, "UNAUTHORIZED");
    assert!(message.to_lowercase().contains("malformed"), "{message}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_bearer_token_with_a_comma_is_401_malformed() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", "Bearer a,b")]).await;

    let message = assert_401(&r, "UNAUTHORIZED");
    assert!(message.to_lowercase().contains("malformed"), "{message}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let lower = kg.get(INTERACTIONS, &[("authorization", &format!("bearer {}", key.secret))]).await;
    let upper = kg.get(INTERACTIONS, &[("authorization", &format!("BEARER {}", key.secret))]).await;

    assert_eq!(lower.status, 200, "{}", lower.text());
    assert_eq!(upper.status, 200, "{}", upper.text());
    assert_eq!(up.count(), 2);
    assert_eq!(up.last().one("x-api-key-id"), "k1");
}

#[tokio::test]
async fn two_authorization_headers_are_400() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer()), ("authorization", &key.bearer())]).await;

    r.assert_error(400, "INVALID_REQUEST");
    assert_eq!(up.count(), 0);
}

// ---------- the key itself ----------

#[tokio::test]
async fn a_key_with_an_unknown_prefix_is_invalid() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1");
    let kg = spawn_proxy(up.addr, &[&key], "").await;
    let prod = key.secret.replace("dpl_live_", "dpl_prod_");

    let r = kg.get(INTERACTIONS, &[("authorization", &format!("Bearer {prod}"))]).await;

    assert_401(&r, "INVALID_API_KEY");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_too_short_key_is_invalid() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", "Bearer dpl_live_abc123")]).await;

    assert_401(&r, "INVALID_API_KEY");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_valid_key_with_a_bang_suffix_is_a_malformed_token() {
    // `!` is outside the RFC 6750 token charset: the credentials are malformed, which is
    // UNAUTHORIZED (saying so), not a well-formed token that names no key.
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", &format!("{}!", key.bearer()))]).await;

    let msg = assert_401(&r, "UNAUTHORIZED");
    assert!(msg.contains("Malformed bearer token"), "{msg}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_valid_key_with_an_extra_base62_character_is_invalid() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", &format!("{}A", key.bearer()))]).await;

    assert_401(&r, "INVALID_API_KEY");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn an_unknown_well_formed_key_is_invalid() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1");
    let stranger = TestKey::live("not_in_the_table");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", &stranger.bearer())]).await;

    let message = assert_401(&r, "INVALID_API_KEY");
    assert_eq!(message, "Invalid API key");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn keys_are_case_sensitive() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1");
    let kg = spawn_proxy(up.addr, &[&key], "").await;
    let flipped = case_flipped(&key.secret);
    assert_ne!(flipped, key.secret);

    let r = kg.get(INTERACTIONS, &[("authorization", &format!("Bearer {flipped}"))]).await;

    assert_401(&r, "INVALID_API_KEY");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_test_key_on_the_live_proxy_is_an_environment_mismatch() {
    let up = Upstream::spawn().await;
    let key = TestKey::test("k_test");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;

    let message = assert_401(&r, "API_KEY_ENVIRONMENT_MISMATCH");
    assert!(message.contains("test") && message.contains("live"), "{message}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_revoked_key_is_refused() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1").with(&format!("    revoked_at: \"{}\"\n", days_from_now(-1)));
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;

    assert_401(&r, "API_KEY_REVOKED");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn an_expired_key_is_refused() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1").with(&format!("    expires_at: \"{}\"\n", days_from_now(-1)));
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;

    let message = assert_401(&r, "API_KEY_EXPIRED");
    assert_eq!(message, "API key has expired");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_key_not_yet_valid_is_invalid() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1").with(&format!("    not_before: \"{}\"\n", days_from_now(1)));
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;

    assert_401(&r, "INVALID_API_KEY");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_key_expiring_in_the_future_works() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1").with(&format!("    expires_at: \"{}\"\n", days_from_now(1)));
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.count(), 1);
    assert_eq!(up.last().one("x-api-key-id"), "k1");
}

// ---------- IP allow-lists ----------

#[tokio::test]
async fn a_client_outside_allowed_ips_is_403() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1").with("    allowed_ips: [10.0.0.0/8]\n");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;

    r.assert_error(403, "IP_NOT_ALLOWED");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_client_inside_allowed_ips_is_forwarded() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1").with("    allowed_ips: [127.0.0.1/32]\n");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn an_ipv6_only_allow_list_refuses_an_ipv4_client() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1").with("    allowed_ips: [\"::1/128\", \"2001:db8::/32\"]\n");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;

    r.assert_error(403, "IP_NOT_ALLOWED");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_client_is_the_forwarded_for_address() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1").with("    allowed_ips: [203.0.113.0/24]\n");
    let kg = spawn_proxy(up.addr, &[&key], "trusted_proxies: [127.0.0.1/32]\n").await;

    let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer()), ("x-forwarded-for", "203.0.113.9")]).await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn without_trusted_proxies_x_forwarded_for_is_ignored() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1").with("    allowed_ips: [203.0.113.0/24]\n");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer()), ("x-forwarded-for", "203.0.113.9")]).await;

    r.assert_error(403, "IP_NOT_ALLOWED");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_upstream_sees_the_chain_with_the_peer_appended() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1");
    let kg = spawn_proxy(up.addr, &[&key], "trusted_proxies: [127.0.0.1/32]\n").await;

    let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer()), ("x-forwarded-for", "203.0.113.9")]).await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().one("x-forwarded-for"), "203.0.113.9, 127.0.0.1");
}

// ---------- routes and scopes ----------

#[tokio::test]
async fn an_unknown_path_with_a_valid_key_is_404() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get("/api/v2/foo", &[("authorization", &key.bearer())]).await;

    r.assert_error(404, "ROUTE_NOT_FOUND");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn an_unknown_path_without_a_key_is_401_not_404() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get("/api/v2/foo", &[]).await;

    assert_401(&r, "UNAUTHORIZED");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_key_without_the_resource_scope_is_403_naming_the_scope() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1").with("    scopes: [\"metrics:read\"]\n");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;

    let message = r.assert_error(403, "INSUFFICIENT_SCOPE");
    assert!(message.contains("interactions:read"), "{message}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_read_only_key_cannot_post() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg
        .send(Method::POST, INTERACTIONS, &[("authorization", &key.bearer())], Bytes::from_static(b"{\"a\":1}"))
        .await;

    let message = r.assert_error(403, "INSUFFICIENT_SCOPE");
    assert!(message.contains("interactions:write"), "{message}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_write_key_posts_and_the_upstream_gets_the_body() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1").with("    type: write\n");
    let kg = spawn_proxy(up.addr, &[&key], "").await;
    let body = Bytes::from_static(br#"{"kind":"call","notes":"first visit"}"#);

    let r = kg
        .send(
            Method::POST,
            INTERACTIONS,
            &[("authorization", &key.bearer()), ("content-type", "application/json")],
            body.clone(),
        )
        .await;

    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.uri, INTERACTIONS);
    assert_eq!(seen.body, body);
}

#[tokio::test]
async fn a_resource_wildcard_scope_reads_and_writes_that_resource_only() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1").with("    scopes: [\"interactions:*\"]\n");
    let kg = spawn_proxy(up.addr, &[&key], "").await;
    let auth = key.bearer();

    let get = kg.get(INTERACTIONS, &[("authorization", &auth)]).await;
    let post = kg.send(Method::POST, INTERACTIONS, &[("authorization", &auth)], Bytes::from_static(b"{}")).await;
    let metrics = kg.get("/api/v1/clinics/clinic_001/metrics", &[("authorization", &auth)]).await;

    assert_eq!(get.status, 200, "{}", get.text());
    assert_eq!(post.status, 200, "{}", post.text());
    let message = metrics.assert_error(403, "INSUFFICIENT_SCOPE");
    assert!(message.contains("metrics:read"), "{message}");
    assert_eq!(up.count(), 2, "only the two interactions requests reach the upstream");
    assert_eq!(up.last().method, Method::POST);
}

#[tokio::test]
async fn a_full_key_may_do_everything() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1").with("    type: full\n");
    let kg = spawn_proxy(up.addr, &[&key], "").await;
    let auth = key.bearer();

    let requests = [
        (Method::GET, "/api/v1/clinics/clinic_001/metrics/daily"),
        (Method::POST, "/api/v1/campaigns"),
        (Method::PUT, "/api/v1/clinics/clinic_001"),
        (Method::PATCH, "/api/v1/clinics/clinic_001/campaigns/c9"),
        (Method::DELETE, "/api/v1/clinics/clinic_001/interactions/i1"),
    ];
    for (method, path) in &requests {
        let r = kg.send(method.clone(), path, &[("authorization", &auth)], Bytes::from_static(b"{}")).await;
        assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
        let seen = up.last();
        assert_eq!((&seen.method, seen.uri.as_str()), (method, *path));
    }
    assert_eq!(up.count(), requests.len());
    assert_eq!(up.last().one("x-scopes"), "*");
}

#[tokio::test]
async fn a_method_outside_a_custom_route_is_405_with_allow() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1").with("    type: full\n");
    let routes = "routes:\n  - path: /api/v1/reports\n    methods: [GET]\n    resource: metrics\n";
    let kg = spawn_proxy(up.addr, &[&key], routes).await;

    let r = kg.send(Method::POST, "/api/v1/reports", &[("authorization", &key.bearer())], Bytes::new()).await;

    r.assert_error(405, "METHOD_NOT_ALLOWED");
    assert_eq!(r.headers["allow"], "GET");
    assert_eq!(up.count(), 0);
}

// ---------- clinics ----------

#[tokio::test]
async fn an_own_clinic_in_the_path_is_forwarded_with_allowed_clinics() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1").with("    clinics: [clinic_001]\n");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get("/api/v1/clinics/clinic_001/interactions", &[("authorization", &key.bearer())]).await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), UPSTREAM_BODY);
    assert_eq!(up.count(), 1);
    assert_eq!(up.last().one("x-allowed-clinics"), "clinic_001");
}

#[tokio::test]
async fn a_foreign_clinic_in_the_path_gets_an_empty_result_without_the_upstream() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1").with("    clinics: [clinic_001]\n");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get("/api/v1/clinics/clinic_002/interactions", &[("authorization", &key.bearer())]).await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), EMPTY);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_foreign_clinic_in_the_query_gets_an_empty_result() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1").with("    clinics: [clinic_001]\n");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get("/api/v1/interactions?clinic_id=clinic_002", &[("authorization", &key.bearer())]).await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), EMPTY);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn an_own_clinic_in_the_query_is_forwarded() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1").with("    clinics: [clinic_001]\n");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get("/api/v1/interactions?clinic_id=clinic_001", &[("authorization", &key.bearer())]).await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), UPSTREAM_BODY);
    let seen = up.last();
    assert_eq!(seen.uri, "/api/v1/interactions?clinic_id=clinic_001");
    assert_eq!(seen.one("x-allowed-clinics"), "clinic_001");
}

#[tokio::test]
async fn a_repeated_clinic_param_with_one_foreign_value_gets_an_empty_result() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1").with("    clinics: [clinic_001]\n");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg
        .get("/api/v1/interactions?clinic_id=clinic_001&clinic_id=clinic_002", &[("authorization", &key.bearer())])
        .await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), EMPTY);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_comma_separated_clinic_param_with_one_foreign_value_gets_an_empty_result() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1").with("    clinics: [clinic_001]\n");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get("/api/v1/interactions?clinic_id=clinic_001,clinic_002", &[("authorization", &key.bearer())]).await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), EMPTY);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_percent_encoded_clinic_param_name_is_decoded_as_the_upstream_would() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1").with("    clinics: [clinic_001]\n");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get("/api/v1/interactions?clinic%5Fid=clinic_002", &[("authorization", &key.bearer())]).await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), EMPTY);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn no_clinic_in_the_query_is_forwarded_with_the_allowed_clinics() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1").with("    clinics: [clinic_001]\n");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get("/api/v1/interactions", &[("authorization", &key.bearer())]).await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), UPSTREAM_BODY);
    assert_eq!(up.last().one("x-allowed-clinics"), "clinic_001");
}

#[tokio::test]
async fn an_unrestricted_key_is_forwarded_with_allowed_clinics_star() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get("/api/v1/clinics/clinic_002/interactions", &[("authorization", &key.bearer())]).await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().one("x-allowed-clinics"), "*");
}

#[tokio::test]
async fn a_foreign_clinic_on_a_deny_route_is_403() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1").with("    clinics: [clinic_001]\n");
    let routes = "routes:\n  - path: /api/v1/clinics/{clinic_id}/interactions\n    resource: interactions\n    clinic: {path_param: clinic_id}\n    on_foreign_clinic: deny\n";
    let kg = spawn_proxy(up.addr, &[&key], routes).await;

    let foreign = kg.get("/api/v1/clinics/clinic_002/interactions", &[("authorization", &key.bearer())]).await;
    let own = kg.get("/api/v1/clinics/clinic_001/interactions", &[("authorization", &key.bearer())]).await;

    foreign.assert_error(403, "CLINIC_NOT_ALLOWED");
    assert_eq!(own.status, 200, "{}", own.text());
    assert_eq!(up.count(), 1, "only the own-clinic request reaches the upstream");
    assert_eq!(up.last().uri, "/api/v1/clinics/clinic_001/interactions");
}

// ---------- public routes ----------

#[tokio::test]
async fn a_public_route_needs_no_key_and_carries_no_identity() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1");
    let kg = spawn_proxy(up.addr, &[&key], "public_routes:\n  - path: /health\n").await;

    let r = kg
        .get(
            "/health",
            &[
                ("x-allowed-clinics", "*"),
                ("x-scopes", "*"),
                ("x-api-key-id", "admin"),
                ("x-api-key-environment", "live"),
            ],
        )
        .await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), UPSTREAM_BODY);
    let seen = up.last();
    assert_eq!(seen.uri, "/health");
    for h in ["x-allowed-clinics", "x-scopes", "x-api-key-id", "x-api-key-environment"] {
        assert!(seen.all(h).is_empty(), "upstream saw {h}: {:?}", seen.all(h));
    }
}

#[tokio::test]
async fn a_public_route_is_public_only_for_its_methods() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1");
    let kg = spawn_proxy(up.addr, &[&key], "public_routes:\n  - path: /health\n").await;

    let r = kg.send(Method::POST, "/health", &[], Bytes::new()).await;

    assert_401(&r, "UNAUTHORIZED");
    assert_eq!(up.count(), 0);
}

// ---------- forwarding the key ----------

#[tokio::test]
async fn forward_authorization_passes_the_key_to_the_upstream() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1");
    let kg = spawn_proxy(up.addr, &[&key], "forward_authorization: true\n").await;

    let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().one("authorization"), key.bearer());
}

#[tokio::test]
async fn by_default_the_key_is_not_forwarded() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert!(up.last().all("authorization").is_empty());
}

// ---------- logs ----------

#[tokio::test]
async fn secrets_never_appear_in_the_logs() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_log_secret");
    let stranger = TestKey::live("k_log_stranger");
    let tester = TestKey::test("k_log_tester");
    let kg = spawn_proxy(up.addr, &[&key, &tester], "").await;

    let ok = kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;
    let unknown = kg.get(INTERACTIONS, &[("authorization", &stranger.bearer())]).await;
    let wrong_env = kg.get(INTERACTIONS, &[("authorization", &tester.bearer())]).await;
    let bad_scheme = kg.get(INTERACTIONS, &[("authorization", &format!("Basic {}", key.secret))]).await;

    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_401(&unknown, "INVALID_API_KEY");
    assert_401(&wrong_env, "API_KEY_ENVIRONMENT_MISMATCH");
    assert_401(&bad_scheme, "UNAUTHORIZED");
    // Each request has been audited by the time its response is out.
    for r in [&ok, &unknown, &wrong_env, &bad_scheme] {
        audit_line(&rid(r));
    }
    let logs = logs();
    for k in [&key, &stranger, &tester] {
        let body = &k.secret["dpl_live_".len()..];
        assert!(!logs.contains(body), "the secret of {} is in the logs", k.id);
    }
}

#[tokio::test]
async fn every_decision_is_audited_with_request_id_key_id_and_code() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_audit").with("    scopes: [\"metrics:read\"]\n");
    let stranger = TestKey::live("k_audit_stranger");
    let tester = TestKey::test("k_audit_tester");
    let kg = spawn_proxy(up.addr, &[&key, &tester], "").await;

    let ok = kg.get("/api/v1/clinics/clinic_001/metrics", &[("authorization", &key.bearer())]).await;
    let denied = kg.get(INTERACTIONS, &[("authorization", &key.bearer())]).await;
    let unknown = kg.get(INTERACTIONS, &[("authorization", &stranger.bearer())]).await;
    let wrong_env = kg.get(INTERACTIONS, &[("authorization", &tester.bearer())]).await;

    assert_eq!(ok.status, 200, "{}", ok.text());
    denied.assert_error(403, "INSUFFICIENT_SCOPE");
    assert_401(&unknown, "INVALID_API_KEY");
    assert_401(&wrong_env, "API_KEY_ENVIRONMENT_MISMATCH");

    let line = audit_line(&rid(&denied));
    assert!(line.contains(r#""key_id":"k_audit""#), "{line}");
    assert!(line.contains(r#""code":"INSUFFICIENT_SCOPE""#), "{line}");
    assert!(line.contains(r#""status":403"#), "{line}");

    let line = audit_line(&rid(&ok));
    assert!(line.contains(r#""key_id":"k_audit""#), "{line}");
    assert!(line.contains(r#""code":"OK""#), "{line}");

    let line = audit_line(&rid(&unknown));
    assert!(line.contains(r#""code":"INVALID_API_KEY""#), "{line}");
    assert!(!line.contains("k_audit_stranger"), "an unknown key has no id to log: {line}");

    let line = audit_line(&rid(&wrong_env));
    assert!(line.contains(r#""code":"API_KEY_ENVIRONMENT_MISMATCH""#), "{line}");

    let logs = logs();
    for k in [&key, &stranger, &tester] {
        assert!(!logs.contains(&k.secret[9..]), "the secret of {} is in the logs", k.id);
    }
}
