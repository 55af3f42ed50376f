//! Headers the upstream can trust: keygate's own, hop-by-hop, forwarding and URL-rewrite headers in
//! every spelling, method overrides, Host, and the request id.

use super::*;

// ---------- owned headers ----------

#[tokio::test]
async fn client_copies_of_owned_headers_are_replaced_in_every_spelling() {
    let (up, key, kg) = proxy_for(TestKey::live("k_one_clinic").with("    clinics: [clinic_001]\n"), "").await;

    let r = kg
        .get(
            "/api/v1/clinics/clinic_001/interactions",
            &[
                ("authorization", &key.bearer()),
                ("X-Allowed-Clinics", "*"),
                ("x_allowed_clinics", "*"),
                ("X-SCOPES", "*"),
                ("x_scopes", "*"),
                ("X-Api-Key-Id", "admin"),
                ("x_api_key_id", "admin"),
                ("X-Api-Key-Environment", "test"),
                ("x_api_key_environment", "test"),
            ],
        )
        .await;

    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert_eq!(seen.one("x-allowed-clinics"), "clinic_001");
    assert_eq!(seen.one("x-scopes"), READ_SCOPES);
    assert_eq!(seen.one("x-api-key-id"), "k_one_clinic");
    assert_eq!(seen.one("x-api-key-environment"), "live");
    let underscored: Vec<String> = header_names(&seen).into_iter().filter(|n| n.contains('_')).collect();
    assert!(underscored.is_empty(), "underscore spellings reached the upstream: {underscored:?}");
}

#[tokio::test]
async fn configured_strip_headers_never_reach_the_upstream_in_any_spelling() {
    let (up, key, kg) = proxy_for(TestKey::live("k_tenant"), "strip_headers: [X-Tenant-Id]\n").await;

    let r = kg
        .get(
            "/api/v1/clinics",
            &[("authorization", &key.bearer()), ("X-Tenant-Id", "other-tenant"), ("x_tenant_id", "other-tenant")],
        )
        .await;

    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert!(seen.all("x-tenant-id").is_empty(), "{:?}", seen.headers);
    assert!(seen.all("x_tenant_id").is_empty(), "{:?}", seen.headers);
}

// ---------- hop-by-hop ----------

#[tokio::test]
async fn a_connection_header_cannot_remove_what_keygate_injects() {
    let (up, key, kg) = proxy_for(TestKey::live("k_conn").with("    clinics: [clinic_001]\n"), "").await;

    let resp = kg
        .raw(&request(&[
            "GET /api/v1/clinics HTTP/1.1",
            "Host: x",
            &format!("Authorization: {}", key.bearer()),
            "Connection: close, X-Allowed-Clinics, X-Scopes, X-Custom",
            "X-Custom: 1",
        ]))
        .await;

    assert_eq!(raw_status(&resp), 200, "{resp}");
    let seen = up.last();
    assert_eq!(seen.one("x-allowed-clinics"), "clinic_001");
    assert_eq!(seen.one("x-scopes"), READ_SCOPES);
    assert_eq!(seen.one("x-api-key-id"), "k_conn");
    assert!(seen.all("x-custom").is_empty(), "a header named in Connection is hop-by-hop: {:?}", seen.headers);
}

#[tokio::test]
async fn hop_by_hop_request_headers_never_reach_the_upstream() {
    let (up, key, kg) = proxy_for(TestKey::live("k_hop"), "").await;

    let resp = kg
        .raw(&request(&[
            "GET /api/v1/clinics HTTP/1.1",
            "Host: x",
            &format!("Authorization: {}", key.bearer()),
            "Keep-Alive: timeout=5",
            "TE: trailers",
            "Trailer: X-Foo",
            "Upgrade: websocket",
            "Proxy-Authorization: Basic Zm9vOmJhcg==",
            "Proxy-Connection: keep-alive",
            "Connection: close",
        ]))
        .await;

    assert_eq!(raw_status(&resp), 200, "{resp}");
    let seen = up.last();
    for name in ["keep-alive", "te", "trailer", "upgrade", "proxy-authorization", "proxy-connection"] {
        assert!(seen.all(name).is_empty(), "{name} reached the upstream: {:?}", seen.headers);
    }
}

#[tokio::test]
async fn hop_by_hop_response_headers_never_reach_the_client() {
    let up = Upstream::spawn_with(Behaviour {
        headers: vec![("connection", "x-internal"), ("x-internal", "secret"), ("keep-alive", "timeout=5")],
        ..Default::default()
    })
    .await;
    let key = TestKey::live("k_resp");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get_as(&key, "/api/v1/clinics").await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["x-upstream"], "yes");
    assert!(r.headers.get("x-internal").is_none(), "{:?}", r.headers);
    assert!(r.headers.get("keep-alive").is_none(), "{:?}", r.headers);
}

// ---------- forwarding headers ----------

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_replaced_by_keygates_own() {
    let (up, key, kg) = proxy_for(TestKey::live("k_fwd"), "").await;

    let r = kg
        .get(
            "/api/v1/clinics",
            &[
                ("authorization", &key.bearer()),
                ("X-Forwarded-For", "6.6.6.6"),
                ("X-Forwarded-Host", "evil"),
                ("X-Forwarded-Proto", "https"),
                ("Forwarded", "for=6.6.6.6"),
                ("X-Real-IP", "6.6.6.6"),
                ("x_forwarded_for", "6.6.6.6"),
            ],
        )
        .await;

    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert_eq!(seen.one("x-forwarded-for"), "127.0.0.1");
    assert_eq!(seen.one("x-forwarded-proto"), "http");
    assert_eq!(seen.one("x-forwarded-host"), kg.addr.to_string());
    assert_eq!(seen.one("x-forwarded-host"), seen.one("host"));
    assert!(seen.all("forwarded").is_empty(), "{:?}", seen.headers);
    assert!(seen.all("x-real-ip").is_empty(), "{:?}", seen.headers);
    assert!(seen.all("x_forwarded_for").is_empty(), "{:?}", seen.headers);
}

#[tokio::test]
async fn forwarding_headers_from_a_trusted_proxy_are_kept_and_appended_to() {
    let (up, key, kg) = proxy_for(TestKey::live("k_fwd_trusted"), "trusted_proxies: [127.0.0.1/32]\n").await;

    let r = kg
        .get(
            "/api/v1/clinics",
            &[
                ("authorization", &key.bearer()),
                ("X-Forwarded-For", "6.6.6.6"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "api.example.com"),
                ("x_forwarded_for", "7.7.7.7"),
            ],
        )
        .await;

    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert_eq!(seen.one("x-forwarded-for"), "6.6.6.6, 127.0.0.1");
    assert_eq!(seen.one("x-forwarded-proto"), "https");
    assert_eq!(seen.one("x-forwarded-host"), "api.example.com");
    assert!(seen.all("x_forwarded_for").is_empty(), "underscore spellings are never a proxy's: {:?}", seen.headers);
}

#[tokio::test]
async fn a_trusted_proxys_forwarded_header_gains_keygates_hop() {
    let (up, key, kg) = proxy_for(TestKey::live("k_forwarded"), "trusted_proxies: [127.0.0.1/32]\n").await;

    let r = kg
        .get("/api/v1/clinics", &[("authorization", &key.bearer()), ("Forwarded", "for=203.0.113.9;proto=https")])
        .await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().one("forwarded"), "for=203.0.113.9;proto=https, for=127.0.0.1;proto=http");
}

#[tokio::test]
async fn several_x_forwarded_for_lines_from_a_trusted_proxy_are_all_kept_in_order() {
    let (up, key, kg) = proxy_for(TestKey::live("k_xff_lines"), "trusted_proxies: [127.0.0.1/32]\n").await;

    let r = kg
        .get(
            "/api/v1/clinics",
            &[("authorization", &key.bearer()), ("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "2.2.2.2")],
        )
        .await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().one("x-forwarded-for"), "1.1.1.1, 2.2.2.2, 127.0.0.1");
}

#[tokio::test]
async fn url_rewrite_headers_never_reach_the_upstream() {
    let (up, key, kg) = proxy_for(TestKey::live("k_rewrite"), "").await;

    let r = kg
        .get(
            "/api/v1/clinics",
            &[
                ("authorization", &key.bearer()),
                ("X-Original-URL", "/admin"),
                ("X-Rewrite-URL", "/admin"),
                ("X-Original-URI", "/admin"),
                ("x_original_url", "/admin"),
            ],
        )
        .await;

    assert_eq!(r.status, 200, "{}", r.text());
    let names = header_names(&up.last());
    let leaked: Vec<&String> = names.iter().filter(|n| n.contains("original") || n.contains("rewrite")).collect();
    assert!(leaked.is_empty(), "rewrite headers reached the upstream: {leaked:?}");
}

#[tokio::test]
async fn url_rewrite_headers_never_reach_the_upstream_even_from_a_trusted_proxy() {
    let (up, key, kg) = proxy_for(TestKey::live("k_rewrite_trusted"), "trusted_proxies: [127.0.0.1/32]\n").await;

    let r = kg
        .get(
            "/api/v1/clinics",
            &[("authorization", &key.bearer()), ("X-Original-URL", "/admin"), ("X-Rewrite-URL", "/admin")],
        )
        .await;

    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert!(seen.all("x-original-url").is_empty(), "{:?}", seen.headers);
    assert!(seen.all("x-rewrite-url").is_empty(), "{:?}", seen.headers);
}

// ---------- method override ----------

#[tokio::test]
async fn a_method_override_header_is_refused_by_default() {
    let (up, key, kg) = proxy_for(TestKey::live("k_override").with("    type: full\n"), "").await;

    let r = kg
        .get(
            "/api/v1/clinics/clinic_001/interactions",
            &[("authorization", &key.bearer()), ("X-HTTP-Method-Override", "DELETE")],
        )
        .await;

    r.assert_error(400, "INVALID_REQUEST");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn an_allowed_method_override_is_what_gets_authorised() {
    let (up, key, kg) =
        proxy_for(TestKey::live("k_reader").with("    type: read_only\n"), "allow_method_override: true\n").await;

    let r = kg
        .get(
            "/api/v1/clinics/clinic_001/interactions",
            &[("authorization", &key.bearer()), ("X-HTTP-Method-Override", "DELETE")],
        )
        .await;

    let message = r.assert_error(403, "INSUFFICIENT_SCOPE");
    assert!(message.contains("interactions:write"), "{message}");
    assert_eq!(up.count(), 0);
}

/// Found by the header fuzz target: an override header the client also names in `Connection`
/// is removed before forwarding, so the upstream acts on the request's own method; keygate must
/// authorise that method, not the override (a read key could DELETE by overriding to GET).
#[tokio::test]
async fn a_method_override_named_in_connection_is_not_what_gets_authorised() {
    let (up, key, kg) =
        proxy_for(TestKey::live("k_reader").with("    type: read_only\n"), "allow_method_override: true\n").await;

    let resp = kg
        .raw(&request(&[
            "DELETE /api/v1/clinics/clinic_001/interactions HTTP/1.1",
            "Host: x",
            &format!("Authorization: {}", key.bearer()),
            "X-HTTP-Method-Override: GET",
            "Connection: close, X-HTTP-Method-Override",
        ]))
        .await;

    assert_raw_error(&resp, 403, "INSUFFICIENT_SCOPE");
    assert_eq!(up.count(), 0, "the upstream never sees the DELETE");
}

// ---------- host ----------

#[tokio::test]
async fn two_host_headers_are_refused() {
    let (up, key, kg) = proxy_for(TestKey::live("k_host"), "").await;

    let resp = kg
        .raw(&request(&[
            "GET /api/v1/clinics HTTP/1.1",
            "Host: x",
            "Host: internal-admin",
            &format!("Authorization: {}", key.bearer()),
            "Connection: close",
        ]))
        .await;

    assert_raw_error(&resp, 400, "INVALID_REQUEST");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn an_absolute_form_target_is_forwarded_to_the_configured_upstream_as_a_path() {
    let (up, key, kg) = proxy_for(TestKey::live("k_absolute"), "").await;

    let resp = kg.raw(&raw_get("http://evil.example/api/v1/clinics?page=2", &key)).await;

    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert_eq!(up.count(), 1);
    assert_eq!(up.last().uri, "/api/v1/clinics?page=2");
}

// ---------- request id ----------

#[tokio::test]
async fn a_well_formed_request_id_is_echoed_and_forwarded() {
    let (up, key, kg) = proxy_for(TestKey::live("k_rid"), "").await;

    let r = kg.get("/api/v1/clinics", &[("authorization", &key.bearer()), ("X-Request-Id", "abc-123")]).await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers.get_all("x-request-id").iter().count(), 1);
    assert_eq!(r.headers["x-request-id"], "abc-123");
    assert_eq!(up.last().one("x-request-id"), "abc-123");
}

#[tokio::test]
async fn a_malformed_request_id_is_replaced_by_a_generated_one() {
    let (up, key, kg) = proxy_for(TestKey::live("k_rid_bad"), "").await;
    let too_long = "a".repeat(200);

    for bad in ["bad id!", too_long.as_str()] {
        let r = kg.get("/api/v1/clinics", &[("authorization", &key.bearer()), ("X-Request-Id", bad)]).await;

        assert_eq!(r.status, 200, "{}", r.text());
        let id = r.headers["x-request-id"].to_str().unwrap().to_string();
        assert_ne!(id, bad);
        assert_eq!(id.len(), 36, "{id}");
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        assert_eq!(up.last().one("x-request-id"), id);
    }
}

#[tokio::test]
async fn an_underscore_spelling_of_x_request_id_never_reaches_the_upstream() {
    let (up, key, kg) = proxy_for(TestKey::live("k_rid_underscore"), "").await;

    let r = kg
        .get(
            "/api/v1/clinics",
            &[("authorization", &key.bearer()), ("X-Request-Id", "abc-123"), ("x_request_id", "evil")],
        )
        .await;

    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert_eq!(seen.one("x-request-id"), "abc-123");
    assert!(seen.all("x_request_id").is_empty(), "{:?}", seen.headers);
}

#[tokio::test]
async fn an_error_response_carries_the_callers_request_id_in_header_and_body() {
    let (_up, _key, kg) = proxy_for(TestKey::live("k_rid_err"), "").await;

    let r = kg.get("/api/v1/clinics", &[("X-Request-Id", "abc-123")]).await;

    r.assert_error(401, "UNAUTHORIZED");
    assert_eq!(r.headers["x-request-id"], "abc-123");
    assert_eq!(r.json()["request_id"], "abc-123");
}

#[tokio::test]
async fn an_error_response_carries_the_generated_request_id_in_header_and_body() {
    let (_up, _key, kg) = proxy_for(TestKey::live("k_rid_err2"), "").await;

    let r = kg.get("/api/v1/clinics", &[("X-Request-Id", "bad id!")]).await;

    r.assert_error(401, "UNAUTHORIZED");
    let id = r.headers["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(r.json()["request_id"], id);
}
