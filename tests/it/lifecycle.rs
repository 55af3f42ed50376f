//! Lifecycle: the happy path end to end, HTTP/2, TLS, key table reload, upstream failures,
//! graceful shutdown, admin endpoints.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn a_valid_key_reaches_the_upstream_with_identity_headers() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_reader").with("    clinics: [clinic_001, clinic_002]\n");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get("/api/v1/clinics/clinic_001/interactions?from=2026-01-01", &[("authorization", &key.bearer())]).await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), UPSTREAM_BODY);
    assert_eq!(r.headers["x-upstream"], "yes");
    let seen = up.last();
    assert_eq!(seen.uri, "/api/v1/clinics/clinic_001/interactions?from=2026-01-01");
    assert_eq!(seen.one("x-allowed-clinics"), "clinic_001,clinic_002");
    assert_eq!(seen.one("x-scopes"), "interactions:read metrics:read campaigns:read clinics:read");
    assert_eq!(seen.one("x-api-key-id"), "k_reader");
    assert_eq!(seen.one("x-api-key-environment"), "live");
    assert_eq!(seen.one("x-forwarded-for"), "127.0.0.1");
    assert_eq!(seen.one("x-forwarded-proto"), "http");
    assert!(seen.all("authorization").is_empty(), "the key is not forwarded by default");
    assert_eq!(seen.one("x-request-id"), r.headers["x-request-id"].to_str().unwrap());
}

#[tokio::test]
async fn http2_prior_knowledge_is_served_and_forwarded_as_http1() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_h2");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get_h2("/api/v1/clinics", &[("authorization", &key.bearer())]).await;

    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert_eq!(seen.version, http::Version::HTTP_11);
    assert_eq!(seen.one("x-api-key-id"), "k_h2");
    assert!(!seen.one("host").is_empty(), "HTTP/2 :authority becomes Host for the HTTP/1.1 upstream");
    let missing = kg.get_h2("/api/v1/clinics", &[]).await;
    missing.assert_error(401, "UNAUTHORIZED");
    let _ = Duration::ZERO;
}
