//! Headers the upstream can trust: keygate's own, hop-by-hop, forwarding and URL-rewrite headers in
//! every spelling, method overrides, Host, and the request id.

use super::*;

/// Header lines as a test writes them: (name, value).
type Headers<'a> = &'a [(&'a str, &'a str)];

/// What the upstream saw of `GET path` with `key`'s credential and `headers`, sent to a keygate
/// (with `config`) that must forward it; and that keygate.
async fn forwarded(key: TestKey, config: &str, path: &str, headers: Headers<'_>) -> (Seen, Proxy) {
    let (up, key, kg) = proxy_for(key, config).await;
    let bearer = key.bearer();
    let r = kg.get(path, &[&[("authorization", bearer.as_str())], headers].concat()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    (up.last(), kg)
}

/// The identity keygate injected for key `id` of clinic_001 with the default read scopes, one
/// copy of each.
fn assert_keygates_identity(seen: &Seen, id: &str) {
    assert_eq!(seen.one("x-allowed-clinics"), "clinic_001");
    assert_eq!(seen.one("x-scopes"), READ_SCOPES);
    assert_eq!(seen.one("x-api-key-id"), id);
}

// ---------- owned headers ----------

#[tokio::test]
async fn client_copies_of_owned_headers_are_replaced_in_every_spelling() {
    let sent = [
        ("X-Allowed-Clinics", "*"),
        ("x_allowed_clinics", "*"),
        ("X-SCOPES", "*"),
        ("x_scopes", "*"),
        ("X-Api-Key-Id", "admin"),
        ("x_api_key_id", "admin"),
        ("X-Api-Key-Environment", "test"),
        ("x_api_key_environment", "test"),
    ];
    let key = TestKey::live("k_one_clinic").with("    clinics: [clinic_001]\n");
    let (seen, _kg) = forwarded(key, "", "/api/v1/clinics/clinic_001/interactions", &sent).await;
    assert_keygates_identity(&seen, "k_one_clinic");
    assert_eq!(seen.one("x-api-key-environment"), "live");
    let underscored: Vec<String> = header_names(&seen).into_iter().filter(|n| n.contains('_')).collect();
    assert!(underscored.is_empty(), "underscore spellings reached the upstream: {underscored:?}");
}

// ---------- hop-by-hop ----------

#[tokio::test]
async fn a_connection_header_cannot_remove_what_keygate_injects() {
    let (up, key, kg) = proxy_for(TestKey::live("k_conn").with("    clinics: [clinic_001]\n"), "").await;

    let connection = "Connection: close, X-Allowed-Clinics, X-Scopes, X-Custom";
    let resp = kg.raw(&keyed_request("GET /api/v1/clinics HTTP/1.1", &key, &[connection, "X-Custom: 1"])).await;

    assert_eq!(raw_status(&resp), 200, "{resp}");
    let seen = up.last();
    assert_keygates_identity(&seen, "k_conn");
    assert!(seen.all("x-custom").is_empty(), "a header named in Connection is hop-by-hop: {:?}", seen.headers);
}

#[tokio::test]
async fn hop_by_hop_request_headers_never_reach_the_upstream() {
    let (up, key, kg) = proxy_for(TestKey::live("k_hop"), "").await;

    let resp = kg
        .raw(&keyed_request(
            "GET /api/v1/clinics HTTP/1.1",
            &key,
            &[
                "Keep-Alive: timeout=5",
                "TE: trailers",
                "Trailer: X-Foo",
                "Upgrade: websocket",
                "Proxy-Authorization: Basic Zm9vOmJhcg==",
                "Proxy-Connection: keep-alive",
                "Connection: close",
            ],
        ))
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
    let sent = [
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-Host", "evil"),
        ("X-Forwarded-Proto", "https"),
        ("Forwarded", "for=6.6.6.6"),
        ("X-Real-IP", "6.6.6.6"),
        ("x_forwarded_for", "6.6.6.6"),
    ];
    let (seen, kg) = forwarded(TestKey::live("k_fwd"), "", "/api/v1/clinics", &sent).await;
    assert_eq!(seen.one("x-forwarded-for"), "127.0.0.1");
    assert_eq!(seen.one("x-forwarded-proto"), "http");
    assert_eq!(seen.one("x-forwarded-host"), kg.addr.to_string());
    assert_eq!(seen.one("x-forwarded-host"), seen.one("host"));
    for gone in ["forwarded", "x-real-ip", "x_forwarded_for"] {
        assert!(seen.all(gone).is_empty(), "{gone}: {:?}", seen.headers);
    }
}

/// From a trusted proxy, forwarding headers are kept, keygate's hop appended, several lines kept
/// in order; underscore spellings are never a proxy's.
#[tokio::test]
async fn forwarding_headers_from_a_trusted_proxy_are_kept_and_appended_to() {
    let (up, key, kg) = proxy_for(TestKey::live("k_fwd_trusted"), "trusted_proxies: [127.0.0.1/32]\n").await;
    let bearer = key.bearer();
    // (sent, what the upstream sees, what it never sees)
    let cases: [(Headers, Headers, &[&str]); 3] = [
        (
            &[
                ("X-Forwarded-For", "6.6.6.6"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "api.example.com"),
                ("x_forwarded_for", "7.7.7.7"),
            ],
            &[
                ("x-forwarded-for", "6.6.6.6, 127.0.0.1"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "api.example.com"),
            ],
            &["x_forwarded_for"],
        ),
        (
            &[("Forwarded", "for=203.0.113.9;proto=https")],
            &[("forwarded", "for=203.0.113.9;proto=https, for=127.0.0.1;proto=http")],
            &[],
        ),
        (
            &[("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "2.2.2.2")],
            &[("x-forwarded-for", "1.1.1.1, 2.2.2.2, 127.0.0.1")],
            &[],
        ),
    ];
    for (sent, kept, gone) in cases {
        let r = kg.get("/api/v1/clinics", &[&[("authorization", bearer.as_str())], sent].concat()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let seen = up.last();
        for (name, value) in kept {
            assert_eq!(seen.one(name), *value, "{sent:?}");
        }
        for name in gone {
            assert!(seen.all(name).is_empty(), "{name} from {sent:?}: {:?}", seen.headers);
        }
    }
}

/// Configured strip_headers, and URL-rewrite headers even from a trusted proxy, never reach the
/// upstream, in any spelling: no header whose name holds any of the words is forwarded.
#[tokio::test]
async fn stripped_and_url_rewrite_headers_never_reach_the_upstream() {
    let rewrite = [("X-Original-URL", "/admin"), ("X-Rewrite-URL", "/admin")];
    // (key, config, sent, words no forwarded name may hold)
    let cases: [(&str, &str, Headers, &[&str]); 3] = [
        (
            "k_tenant",
            "strip_headers: [X-Tenant-Id]\n",
            &[("X-Tenant-Id", "other-tenant"), ("x_tenant_id", "other-tenant")],
            &["x-tenant-id", "x_tenant_id"],
        ),
        (
            "k_rewrite",
            "",
            &[rewrite[0], rewrite[1], ("X-Original-URI", "/admin"), ("x_original_url", "/admin")],
            &["original", "rewrite"],
        ),
        ("k_rewrite_trusted", "trusted_proxies: [127.0.0.1/32]\n", &rewrite, &["x-original-url", "x-rewrite-url"]),
    ];
    for (id, config, sent, words) in cases {
        let (seen, _kg) = forwarded(TestKey::live(id), config, "/api/v1/clinics", sent).await;
        let names = header_names(&seen);
        let leaked: Vec<&String> = names.iter().filter(|n| words.iter().any(|w| n.contains(w))).collect();
        assert!(leaked.is_empty(), "{id}: reached the upstream: {leaked:?}");
    }
}

// ---------- method override ----------

/// X-HTTP-Method-Override is refused unless allowed; allowed, the override is what gets
/// authorised (a read key asking to DELETE is refused for want of interactions:write).
#[tokio::test]
async fn a_method_override_is_refused_by_default_and_authorised_when_allowed() {
    // (key type, config, status, code, the message names)
    let cases = [
        ("full", "", 400, "INVALID_REQUEST", ""),
        ("read_only", "allow_method_override: true\n", 403, "INSUFFICIENT_SCOPE", "interactions:write"),
    ];
    for (kind, config, status, code, names) in cases {
        let (up, key, kg) = proxy_for(TestKey::live("k_override").with(&format!("    type: {kind}\n")), config).await;
        let override_ = [("authorization", key.bearer()), ("X-HTTP-Method-Override", "DELETE".into())];
        let headers: Vec<(&str, &str)> = override_.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let message = kg.get("/api/v1/clinics/clinic_001/interactions", &headers).await.assert_error(status, code);
        assert!(message.contains(names), "{kind}: {message}");
        assert_eq!(up.count(), 0, "{kind}");
    }
}

/// Found by the header fuzz target: an override header the client also names in `Connection`
/// is removed before forwarding, so the upstream acts on the request's own method; keygate must
/// authorise that method, not the override (a read key could DELETE by overriding to GET).
#[tokio::test]
async fn a_method_override_named_in_connection_is_not_what_gets_authorised() {
    let (up, key, kg) =
        proxy_for(TestKey::live("k_reader").with("    type: read_only\n"), "allow_method_override: true\n").await;

    let resp = kg
        .raw(&keyed_request(
            "DELETE /api/v1/clinics/clinic_001/interactions HTTP/1.1",
            &key,
            &["X-HTTP-Method-Override: GET", "Connection: close, X-HTTP-Method-Override"],
        ))
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
    let sent = [("X-Request-Id", "abc-123"), ("x_request_id", "evil")];
    let (seen, _kg) = forwarded(TestKey::live("k_rid_underscore"), "", "/api/v1/clinics", &sent).await;
    assert_eq!(seen.one("x-request-id"), "abc-123");
    assert!(seen.all("x_request_id").is_empty(), "{:?}", seen.headers);
}

/// A refusal carries the request id in its header and body: the caller's when well-formed,
/// else a generated one.
#[tokio::test]
async fn an_error_response_carries_the_request_id_in_header_and_body() {
    let (_up, _key, kg) = proxy_for(TestKey::live("k_rid_err"), "").await;
    for sent in ["abc-123", "bad id!"] {
        let r = kg.get("/api/v1/clinics", &[("X-Request-Id", sent)]).await;
        r.assert_error(401, "UNAUTHORIZED");
        let id = r.headers["x-request-id"].to_str().unwrap();
        if sent == "abc-123" {
            assert_eq!(id, sent);
        } else {
            assert_eq!(id.len(), 36, "{id}");
        }
        assert_eq!(r.json()["request_id"], id);
    }
}
