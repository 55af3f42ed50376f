//! Who may come in: the Authorization header, the key's shape, environment and validity, what is
//! forwarded of it, and what is logged of it.

use super::*;

// ---------- the Authorization header ----------

/// Every Authorization value that is not a usable key's credential is a 401 with a Bearer
/// challenge and a message saying which (never the key's): the upstream sees none of them.
#[tokio::test]
async fn an_unusable_authorization_is_401_saying_why() {
    let (up, key, kg) = proxy_for(TestKey::live("k1"), "").await;
    let flipped = case_flipped(&key.secret);
    assert_ne!(flipped, key.secret);
    let expected = |why: &str| format!("{why}. Expected: Bearer <api_key>");
    let (missing, invalid) =
        ("Missing Authorization header. Expected: Bearer <api_key>".to_string(), "Invalid API key");
    // (Authorization, code, message)
    let cases = [
        (None, "UNAUTHORIZED", missing),
        (Some("Basic dXNlcjpwYXNz".into()), "UNAUTHORIZED", expected("Unsupported authorization scheme")),
        (Some("Bearer ".into()), "UNAUTHORIZED", expected("Empty bearer token")),
        (Some("Bearer a b".into()), "UNAUTHORIZED", expected("Malformed bearer token")),
        (Some("Bearer a,b".into()), "UNAUTHORIZED", expected("Malformed bearer token")),
        // `!` is outside the RFC 6750 token charset: the credentials are malformed, which is
        // UNAUTHORIZED (saying so), not a well-formed token that names no key.
        (Some(format!("{}!", key.bearer())), "UNAUTHORIZED", expected("Malformed bearer token")),
        // Well-formed tokens that name no key: an unknown prefix, too short, one character too
        // many, the case of the secret flipped (keys are case-sensitive), a key not in the table.
        (Some(format!("Bearer {}", key.secret.replace("dpl_live_", "dpl_prod_"))), "INVALID_API_KEY", invalid.into()),
        (Some("Bearer dpl_live_abc123".into()), "INVALID_API_KEY", invalid.into()),
        (Some(format!("{}A", key.bearer())), "INVALID_API_KEY", invalid.into()),
        (Some(format!("Bearer {flipped}")), "INVALID_API_KEY", invalid.into()),
        (Some(TestKey::live("not_in_the_table").bearer()), "INVALID_API_KEY", invalid.into()),
    ];
    for (authorization, code, message) in cases {
        let headers: Vec<(&str, &str)> = authorization.iter().map(|a| ("authorization", a.as_str())).collect();
        let r = kg.get(INTERACTIONS, &headers).await;
        assert_eq!(assert_401(&r, code), message, "{authorization:?}");
    }
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

/// A key works only on a proxy of its environment and inside its validity window.
#[tokio::test]
async fn a_key_works_only_in_its_environment_and_validity_window() {
    let at = |field: &str, days: i64| format!("    {field}: \"{}\"\n", days_from_now(days));
    let keys = [
        TestKey::test("k_test"),
        TestKey::live("k_revoked").with(&at("revoked_at", -1)),
        TestKey::live("k_expired").with(&at("expires_at", -1)),
        TestKey::live("k_not_yet").with(&at("not_before", 1)),
        TestKey::live("k_expiring").with(&at("expires_at", 1)),
    ];
    let up = Upstream::spawn().await;
    let kg = spawn_proxy(up.addr, &keys.iter().collect::<Vec<_>>(), "").await;
    // (key, code, message; None: any)
    let refused = [
        (
            &keys[0],
            "API_KEY_ENVIRONMENT_MISMATCH",
            Some("API key is a test key, but this endpoint only accepts live keys"),
        ),
        (&keys[1], "API_KEY_REVOKED", None),
        (&keys[2], "API_KEY_EXPIRED", Some("API key has expired")),
        (&keys[3], "INVALID_API_KEY", None),
    ];
    for (key, code, message) in refused {
        let said = assert_401(&kg.get_as(key, INTERACTIONS).await, code);
        assert!(message.is_none_or(|m| m == said), "{}: {said}", key.id);
    }
    assert_eq!(up.count(), 0);

    let r = kg.get_as(&keys[4], INTERACTIONS).await;
    assert_eq!(r.status, 200, "a key expiring in the future works: {}", r.text());
    assert_eq!(up.count(), 1);
    assert_eq!(up.last().one("x-api-key-id"), "k_expiring");
}

// ---------- forwarding the key ----------

#[tokio::test]
async fn the_key_reaches_the_upstream_only_with_forward_authorization() {
    for (config, forwarded) in [("forward_authorization: true\n", true), ("", false)] {
        let (up, key, kg) = proxy_for(TestKey::live("k1"), config).await;
        let r = kg.get_as(&key, INTERACTIONS).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let seen = up.last().all("authorization");
        assert_eq!(seen, if forwarded { vec![key.bearer()] } else { vec![] }, "{config:?}");
    }
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
