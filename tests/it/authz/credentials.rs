//! Who may come in: the Authorization header, the key's shape, environment and validity, what is
//! forwarded of it, and what is logged of it.

use super::*;

// ---------- the Authorization header ----------

#[tokio::test]
async fn missing_authorization_is_401_with_a_bearer_challenge() {
    let (up, _key, kg) = proxy_for(TestKey::live("k1"), "").await;

    let r = kg.get(INTERACTIONS, &[]).await;

    let message = assert_401(&r, "UNAUTHORIZED");
    assert_eq!(message, "Missing Authorization header. Expected: Bearer <api_key>");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_scheme_other_than_bearer_is_401() {
    let (up, _key, kg) = proxy_for(TestKey::live("k1"), "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", "Basic dXNlcjpwYXNz")]).await;

    let message = assert_401(&r, "UNAUTHORIZED");
    assert!(message.to_lowercase().contains("scheme"), "{message}");
    assert!(message.contains("Bearer"), "{message}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn an_empty_bearer_token_is_401() {
    let (up, _key, kg) = proxy_for(TestKey::live("k1"), "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", "Bearer ")]).await;

    let message = assert_401(&r, "UNAUTHORIZED");
    assert!(message.to_lowercase().contains("empty"), "{message}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_bearer_token_with_a_space_is_401_malformed() {
    let (up, _key, kg) = proxy_for(TestKey::live("k1"), "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", "Bearer a b")]).await;

    let message = assert_401(&r, "UNAUTHORIZED");
    assert!(message.to_lowercase().contains("malformed"), "{message}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_bearer_token_with_a_comma_is_401_malformed() {
    let (up, _key, kg) = proxy_for(TestKey::live("k1"), "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", "Bearer a,b")]).await;

    let message = assert_401(&r, "UNAUTHORIZED");
    assert!(message.to_lowercase().contains("malformed"), "{message}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let (up, key, kg) = proxy_for(TestKey::live("k1"), "").await;

    let lower = kg.get(INTERACTIONS, &[("authorization", &format!("bearer {}", key.secret))]).await;
    let upper = kg.get(INTERACTIONS, &[("authorization", &format!("BEARER {}", key.secret))]).await;

    assert_eq!(lower.status, 200, "{}", lower.text());
    assert_eq!(upper.status, 200, "{}", upper.text());
    assert_eq!(up.count(), 2);
    assert_eq!(up.last().one("x-api-key-id"), "k1");
}

#[tokio::test]
async fn two_authorization_headers_are_400() {
    let (up, key, kg) = proxy_for(TestKey::live("k1"), "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer()), ("authorization", &key.bearer())]).await;

    r.assert_error(400, "INVALID_REQUEST");
    assert_eq!(up.count(), 0);
}

// ---------- the key itself ----------

#[tokio::test]
async fn a_key_with_an_unknown_prefix_is_invalid() {
    let (up, key, kg) = proxy_for(TestKey::live("k1"), "").await;
    let prod = key.secret.replace("dpl_live_", "dpl_prod_");

    let r = kg.get(INTERACTIONS, &[("authorization", &format!("Bearer {prod}"))]).await;

    assert_401(&r, "INVALID_API_KEY");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_too_short_key_is_invalid() {
    let (up, _key, kg) = proxy_for(TestKey::live("k1"), "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", "Bearer dpl_live_abc123")]).await;

    assert_401(&r, "INVALID_API_KEY");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_valid_key_with_a_bang_suffix_is_a_malformed_token() {
    // `!` is outside the RFC 6750 token charset: the credentials are malformed, which is
    // UNAUTHORIZED (saying so), not a well-formed token that names no key.
    let (up, key, kg) = proxy_for(TestKey::live("k1"), "").await;

    let r = kg.get(INTERACTIONS, &[("authorization", &format!("{}!", key.bearer()))]).await;

    let msg = assert_401(&r, "UNAUTHORIZED");
    assert!(msg.contains("Malformed bearer token"), "{msg}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_valid_key_with_an_extra_base62_character_is_invalid() {
    let (up, key, kg) = proxy_for(TestKey::live("k1"), "").await;

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

    let r = kg.get_as(&stranger, INTERACTIONS).await;

    let message = assert_401(&r, "INVALID_API_KEY");
    assert_eq!(message, "Invalid API key");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn keys_are_case_sensitive() {
    let (up, key, kg) = proxy_for(TestKey::live("k1"), "").await;
    let flipped = case_flipped(&key.secret);
    assert_ne!(flipped, key.secret);

    let r = kg.get(INTERACTIONS, &[("authorization", &format!("Bearer {flipped}"))]).await;

    assert_401(&r, "INVALID_API_KEY");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_test_key_on_the_live_proxy_is_an_environment_mismatch() {
    let (up, key, kg) = proxy_for(TestKey::test("k_test"), "").await;

    let r = kg.get_as(&key, INTERACTIONS).await;

    let message = assert_401(&r, "API_KEY_ENVIRONMENT_MISMATCH");
    assert!(message.contains("test") && message.contains("live"), "{message}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_revoked_key_is_refused() {
    let (up, key, kg) =
        proxy_for(TestKey::live("k1").with(&format!("    revoked_at: \"{}\"\n", days_from_now(-1))), "").await;

    let r = kg.get_as(&key, INTERACTIONS).await;

    assert_401(&r, "API_KEY_REVOKED");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn an_expired_key_is_refused() {
    let (up, key, kg) =
        proxy_for(TestKey::live("k1").with(&format!("    expires_at: \"{}\"\n", days_from_now(-1))), "").await;

    let r = kg.get_as(&key, INTERACTIONS).await;

    let message = assert_401(&r, "API_KEY_EXPIRED");
    assert_eq!(message, "API key has expired");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_key_not_yet_valid_is_invalid() {
    let (up, key, kg) =
        proxy_for(TestKey::live("k1").with(&format!("    not_before: \"{}\"\n", days_from_now(1))), "").await;

    let r = kg.get_as(&key, INTERACTIONS).await;

    assert_401(&r, "INVALID_API_KEY");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_key_expiring_in_the_future_works() {
    let (up, key, kg) =
        proxy_for(TestKey::live("k1").with(&format!("    expires_at: \"{}\"\n", days_from_now(1))), "").await;

    let r = kg.get_as(&key, INTERACTIONS).await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.count(), 1);
    assert_eq!(up.last().one("x-api-key-id"), "k1");
}

// ---------- forwarding the key ----------

#[tokio::test]
async fn forward_authorization_passes_the_key_to_the_upstream() {
    let (up, key, kg) = proxy_for(TestKey::live("k1"), "forward_authorization: true\n").await;

    let r = kg.get_as(&key, INTERACTIONS).await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().one("authorization"), key.bearer());
}

#[tokio::test]
async fn by_default_the_key_is_not_forwarded() {
    let (up, key, kg) = proxy_for(TestKey::live("k1"), "").await;

    let r = kg.get_as(&key, INTERACTIONS).await;

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

    let ok = kg.get_as(&key, INTERACTIONS).await;
    let unknown = kg.get_as(&stranger, INTERACTIONS).await;
    let wrong_env = kg.get_as(&tester, INTERACTIONS).await;
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

    let ok = kg.get_as(&key, "/api/v1/clinics/clinic_001/metrics").await;
    let denied = kg.get_as(&key, INTERACTIONS).await;
    let unknown = kg.get_as(&stranger, INTERACTIONS).await;
    let wrong_env = kg.get_as(&tester, INTERACTIONS).await;

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
