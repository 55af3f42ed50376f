//! Where from and to what: allowed IPs and trusted proxies, routes and scopes, clinic rules, and
//! public routes.

use super::*;

// ---------- iP allow-lists ----------

/// The client (127.0.0.1, or behind a trusted proxy the X-Forwarded-For address) must be in
/// the key's allowed IPs; a refusal never reaches the upstream.
#[tokio::test]
async fn a_client_outside_allowed_ips_is_403_ip_not_allowed() {
    let trusted = "trusted_proxies: [127.0.0.1/32]\n";
    // (allowed_ips, config, X-Forwarded-For, allowed?)
    let cases = [
        ("[10.0.0.0/8]", "", None, false),
        ("[127.0.0.1/32]", "", None, true),
        // An IPv6-only list refuses an IPv4 client.
        (r#"["::1/128", "2001:db8::/32"]"#, "", None, false),
        // Behind a trusted proxy the client is the forwarded-for address; without one the
        // header is ignored.
        ("[203.0.113.0/24]", trusted, Some("203.0.113.9"), true),
        ("[203.0.113.0/24]", "", Some("203.0.113.9"), false),
    ];
    for (ips, config, xff, allowed) in cases {
        let (up, key, kg) = proxy_for(TestKey::live("k1").with(&format!("    allowed_ips: {ips}\n")), config).await;
        let bearer = key.bearer();
        let mut headers = vec![("authorization", bearer.as_str())];
        headers.extend(xff.map(|x| ("x-forwarded-for", x)));
        let r = kg.get(INTERACTIONS, &headers).await;
        if allowed {
            assert_eq!(r.status, 200, "{ips} {xff:?}: {}", r.text());
        } else {
            r.assert_error(403, "IP_NOT_ALLOWED");
        }
        assert_eq!(up.count(), usize::from(allowed), "{ips} {xff:?}");
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_upstream_sees_the_chain_with_the_peer_appended() {
    let (up, key, kg) = proxy_for(TestKey::live("k1"), "trusted_proxies: [127.0.0.1/32]\n").await;

    let r = kg.get(INTERACTIONS, &[("authorization", &key.bearer()), ("x-forwarded-for", "203.0.113.9")]).await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().one("x-forwarded-for"), "203.0.113.9, 127.0.0.1");
}

// ---------- routes and scopes ----------

#[tokio::test]
async fn an_unknown_path_with_a_valid_key_is_404() {
    let (up, key, kg) = proxy_for(TestKey::live("k1"), "").await;

    let r = kg.get_as(&key, "/api/v2/foo").await;

    r.assert_error(404, "ROUTE_NOT_FOUND");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn an_unknown_path_without_a_key_is_401_not_404() {
    let (up, _key, kg) = proxy_for(TestKey::live("k1"), "").await;

    let r = kg.get("/api/v2/foo", &[]).await;

    assert_401(&r, "UNAUTHORIZED");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_key_without_the_resource_scope_is_403_naming_the_scope() {
    let (up, key, kg) = proxy_for(TestKey::live("k1").with("    scopes: [\"metrics:read\"]\n"), "").await;

    let r = kg.get_as(&key, INTERACTIONS).await;

    let message = r.assert_error(403, "INSUFFICIENT_SCOPE");
    assert!(message.contains("interactions:read"), "{message}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_read_only_key_cannot_post() {
    let (up, key, kg) = proxy_for(TestKey::live("k1"), "").await;

    let r = kg
        .send(Method::POST, INTERACTIONS, &[("authorization", &key.bearer())], Bytes::from_static(b"{\"a\":1}"))
        .await;

    let message = r.assert_error(403, "INSUFFICIENT_SCOPE");
    assert!(message.contains("interactions:write"), "{message}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_write_key_posts_and_the_upstream_gets_the_body() {
    let (up, key, kg) = proxy_for(TestKey::live("k1").with("    type: write\n"), "").await;
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
    let (up, key, kg) = proxy_for(TestKey::live("k1").with("    scopes: [\"interactions:*\"]\n"), "").await;
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
    let (up, key, kg) = proxy_for(TestKey::live("k1").with("    type: full\n"), "").await;
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
    let routes = "routes:\n  - path: /api/v1/reports\n    methods: [GET]\n    resource: metrics\n";
    let (up, key, kg) = proxy_for(TestKey::live("k1").with("    type: full\n"), routes).await;

    let r = kg.send(Method::POST, "/api/v1/reports", &[("authorization", &key.bearer())], Bytes::new()).await;

    r.assert_error(405, "METHOD_NOT_ALLOWED");
    assert_eq!(r.headers["allow"], "GET");
    assert_eq!(up.count(), 0);
}

// ---------- clinics ----------

/// A key of clinic_001: a request naming only its clinic, or none, is forwarded with
/// X-Allowed-Clinics; one naming another clinic (in the path or anywhere in the query, however
/// spelled) gets the empty result without reaching the upstream.
#[tokio::test]
async fn a_key_of_one_clinic_reaches_only_that_clinic() {
    let (up, key, kg) = proxy_for(TestKey::live("k1").with("    clinics: [clinic_001]\n"), "").await;
    // (path, forwarded?)
    let cases = [
        ("/api/v1/clinics/clinic_001/interactions", true),
        ("/api/v1/clinics/clinic_002/interactions", false),
        ("/api/v1/interactions?clinic_id=clinic_001", true),
        ("/api/v1/interactions?clinic_id=clinic_002", false),
        ("/api/v1/interactions?clinic_id=clinic_001&clinic_id=clinic_002", false),
        ("/api/v1/interactions?clinic_id=clinic_001,clinic_002", false),
        // The parameter's name percent-encoded is decoded, as the upstream would.
        ("/api/v1/interactions?clinic%5Fid=clinic_002", false),
        ("/api/v1/interactions", true),
    ];
    for (path, forwarded) in cases {
        let before = up.count();
        let r = kg.get_as(&key, path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.headers["content-type"], "application/json", "{path}");
        assert_eq!(r.text(), if forwarded { UPSTREAM_BODY } else { EMPTY }, "{path}");
        assert_eq!(up.count(), before + usize::from(forwarded), "{path}");
        if forwarded {
            let seen = up.last();
            assert_eq!(seen.uri, path);
            assert_eq!(seen.one("x-allowed-clinics"), "clinic_001", "{path}");
        }
    }
}

#[tokio::test]
async fn an_unrestricted_key_is_forwarded_with_allowed_clinics_star() {
    let (up, key, kg) = proxy_for(TestKey::live("k1"), "").await;

    let r = kg.get_as(&key, "/api/v1/clinics/clinic_002/interactions").await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().one("x-allowed-clinics"), "*");
}

#[tokio::test]
async fn a_foreign_clinic_on_a_deny_route_is_403() {
    let routes = "routes:\n  - path: /api/v1/clinics/{clinic_id}/interactions\n    resource: interactions\n    clinic: {path_param: clinic_id}\n    on_foreign_clinic: deny\n";
    let (up, key, kg) = proxy_for(TestKey::live("k1").with("    clinics: [clinic_001]\n"), routes).await;

    let foreign = kg.get_as(&key, "/api/v1/clinics/clinic_002/interactions").await;
    let own = kg.get_as(&key, "/api/v1/clinics/clinic_001/interactions").await;

    foreign.assert_error(403, "CLINIC_NOT_ALLOWED");
    assert_eq!(own.status, 200, "{}", own.text());
    assert_eq!(up.count(), 1, "only the own-clinic request reaches the upstream");
    assert_eq!(up.last().uri, "/api/v1/clinics/clinic_001/interactions");
}

// ---------- public routes ----------

#[tokio::test]
async fn a_public_route_needs_no_key_and_carries_no_identity() {
    let (up, _key, kg) = proxy_for(TestKey::live("k1"), "public_routes:\n  - path: /health\n").await;

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
    let (up, _key, kg) = proxy_for(TestKey::live("k1"), "public_routes:\n  - path: /health\n").await;

    let r = kg.send(Method::POST, "/health", &[], Bytes::new()).await;

    assert_401(&r, "UNAUTHORIZED");
    assert_eq!(up.count(), 0);
}
