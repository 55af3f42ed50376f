//! Hygiene: what the upstream can trust. Keygate's own headers, hop-by-hop, forwarding and
//! URL-rewrite headers in every spelling; the request id; the one canonical path that is both
//! authorised and forwarded; trailers; and the size and time limits that stop a client from
//! holding keygate or the upstream hostage.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const READ_SCOPES: &str = "interactions:read metrics:read campaigns:read clinics:read";

// ---------- owned headers ----------

#[tokio::test]
async fn client_copies_of_owned_headers_are_replaced_in_every_spelling() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_one_clinic").with("    clinics: [clinic_001]\n");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

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
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_tenant");
    let kg = spawn_proxy(up.addr, &[&key], "strip_headers: [X-Tenant-Id]\n").await;

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
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_conn").with("    clinics: [clinic_001]\n");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

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
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_hop");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

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

    let r = kg.get("/api/v1/clinics", &[("authorization", &key.bearer())]).await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["x-upstream"], "yes");
    assert!(r.headers.get("x-internal").is_none(), "{:?}", r.headers);
    assert!(r.headers.get("keep-alive").is_none(), "{:?}", r.headers);
}

// ---------- forwarding headers ----------

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_replaced_by_keygates_own() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_fwd");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

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
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_fwd_trusted");
    let kg = spawn_proxy(up.addr, &[&key], "trusted_proxies: [127.0.0.1/32]\n").await;

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
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_forwarded");
    let kg = spawn_proxy(up.addr, &[&key], "trusted_proxies: [127.0.0.1/32]\n").await;

    let r = kg
        .get("/api/v1/clinics", &[("authorization", &key.bearer()), ("Forwarded", "for=203.0.113.9;proto=https")])
        .await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().one("forwarded"), "for=203.0.113.9;proto=https, for=127.0.0.1;proto=http");
}

#[tokio::test]
async fn several_x_forwarded_for_lines_from_a_trusted_proxy_are_all_kept_in_order() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_xff_lines");
    let kg = spawn_proxy(up.addr, &[&key], "trusted_proxies: [127.0.0.1/32]\n").await;

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
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_rewrite");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

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
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_rewrite_trusted");
    let kg = spawn_proxy(up.addr, &[&key], "trusted_proxies: [127.0.0.1/32]\n").await;

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
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_override").with("    type: full\n");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

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
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_reader").with("    type: read_only\n");
    let kg = spawn_proxy(up.addr, &[&key], "allow_method_override: true\n").await;

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
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_reader").with("    type: read_only\n");
    let kg = spawn_proxy(up.addr, &[&key], "allow_method_override: true\n").await;

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

// ---------- Host ----------

#[tokio::test]
async fn two_host_headers_are_refused() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_host");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

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
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_absolute");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let resp = kg.raw(&raw_get("http://evil.example/api/v1/clinics?page=2", &key)).await;

    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert_eq!(up.count(), 1);
    assert_eq!(up.last().uri, "/api/v1/clinics?page=2");
}

// ---------- request id ----------

#[tokio::test]
async fn a_well_formed_request_id_is_echoed_and_forwarded() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_rid");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get("/api/v1/clinics", &[("authorization", &key.bearer()), ("X-Request-Id", "abc-123")]).await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers.get_all("x-request-id").iter().count(), 1);
    assert_eq!(r.headers["x-request-id"], "abc-123");
    assert_eq!(up.last().one("x-request-id"), "abc-123");
}

#[tokio::test]
async fn a_malformed_request_id_is_replaced_by_a_generated_one() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_rid_bad");
    let kg = spawn_proxy(up.addr, &[&key], "").await;
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
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_rid_underscore");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

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
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_rid_err");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get("/api/v1/clinics", &[("X-Request-Id", "abc-123")]).await;

    r.assert_error(401, "UNAUTHORIZED");
    assert_eq!(r.headers["x-request-id"], "abc-123");
    assert_eq!(r.json()["request_id"], "abc-123");
}

#[tokio::test]
async fn an_error_response_carries_the_generated_request_id_in_header_and_body() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_rid_err2");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let r = kg.get("/api/v1/clinics", &[("X-Request-Id", "bad id!")]).await;

    r.assert_error(401, "UNAUTHORIZED");
    let id = r.headers["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(r.json()["request_id"], id);
}

// ---------- path normalisation ----------

#[tokio::test]
async fn dot_segments_are_resolved_before_forwarding() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_dots");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let resp = kg.raw(&raw_get("/api/v1/clinics/clinic_001/../clinic_001/interactions", &key)).await;

    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert_eq!(up.last().uri, "/api/v1/clinics/clinic_001/interactions");
}

#[tokio::test]
async fn repeated_slashes_are_merged_before_forwarding() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_slashes");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let resp = kg.raw(&raw_get("//api//v1///clinics", &key)).await;

    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert_eq!(up.last().uri, "/api/v1/clinics");
}

#[tokio::test]
async fn percent_encoded_unreserved_characters_are_decoded_before_forwarding() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_unreserved");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let resp = kg.raw(&raw_get("/api/%761/clinics", &key)).await;

    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert_eq!(up.last().uri, "/api/v1/clinics");
}

#[tokio::test]
async fn the_upstream_gets_the_normalised_path_and_the_query_byte_for_byte() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_query");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let resp = kg
        .raw(&raw_get("/api//v1/./clinics/clinic_001/../clinic_001/interactions?from=2026-01-01&q=%2F..%2Fx&&z", &key))
        .await;

    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert_eq!(up.last().uri, "/api/v1/clinics/clinic_001/interactions?from=2026-01-01&q=%2F..%2Fx&&z");
}

#[tokio::test]
async fn ambiguous_paths_are_refused_before_reaching_the_upstream() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_ambiguous").with("    type: full\n");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    for path in [
        "/api/v1/clinics/clinic_001%2F..%2Fclinic_002/interactions",
        "/api/v1/clinics/%2e%2e/x",
        "/api/v1/clinics\\clinic_002",
        "/api/v1/clinics/%00",
        "/api/v1/clinics/%C3",
    ] {
        let resp = kg.raw(&raw_get(path, &key)).await;

        assert_raw_error(&resp, 400, "INVALID_REQUEST");
        assert_eq!(up.count(), 0, "{path} reached the upstream");
    }
}

#[tokio::test]
async fn a_path_traversal_into_a_foreign_clinic_is_judged_as_that_clinic() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_traversal").with("    clinics: [clinic_001]\n");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let resp = kg.raw(&raw_get("/api/v1/clinics/clinic_001/../clinic_002/interactions", &key)).await;

    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert_eq!(raw_json(&resp), serde_json::json!({"success": true, "data": []}));
    assert_eq!(up.count(), 0);
}

// ---------- bodies ----------

#[tokio::test]
async fn request_trailers_are_dropped() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_trailer").with("    type: write\n");
    let kg = spawn_proxy(up.addr, &[&key], "").await;

    let resp = kg
        .raw(&format!(
            "POST /api/v1/clinics/clinic_001/interactions HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: evil\r\n\r\n",
            key.bearer()
        ))
        .await;

    assert_eq!(raw_status(&resp), 200, "{resp}");
    let seen = up.last();
    assert_eq!(seen.body, Bytes::from_static(b"hello"));
    assert!(seen.all("x-trailer").is_empty(), "{:?}", seen.headers);
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_before_reaching_the_upstream() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_big_body").with("    type: write\n");
    let kg = spawn_proxy(up.addr, &[&key], "limits:\n  max_body_bytes: 10\n").await;

    let r = kg
        .send(
            Method::POST,
            "/api/v1/clinics/clinic_001/interactions",
            &[("authorization", &key.bearer()), ("content-type", "application/json")],
            Bytes::from_static(b"12345678901"),
        )
        .await;

    r.assert_error(413, "PAYLOAD_TOO_LARGE");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_refused_as_too_large() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_big_chunked").with("    type: write\n");
    let kg = spawn_proxy(up.addr, &[&key], "limits:\n  max_body_bytes: 10\n").await;

    let resp = kg
        .raw(&format!(
            "POST /api/v1/clinics/clinic_001/interactions HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n",
            key.bearer()
        ))
        .await;

    assert_raw_error(&resp, 413, "PAYLOAD_TOO_LARGE");
    let bodies: Vec<Bytes> = up.requests().into_iter().map(|s| s.body).collect();
    assert!(bodies.iter().all(|b| b.len() <= 10), "the upstream got more than the limit: {bodies:?}");
}

// ---------- header limits and slow clients ----------

#[tokio::test]
async fn an_oversized_header_is_refused_before_reaching_the_upstream() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_big_header");
    let kg = spawn_proxy(up.addr, &[&key], "").await;
    let big = format!("X-Big: {}", "a".repeat(20 * 1024));

    let resp = kg
        .raw(&request(&[
            "GET /api/v1/clinics HTTP/1.1",
            "Host: x",
            &format!("Authorization: {}", key.bearer()),
            &big,
            "Connection: close",
        ]))
        .await;

    assert!(resp.is_empty() || raw_status(&resp) == 431, "expected 431 or a closed connection: {resp}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn too_many_headers_are_refused_before_reaching_the_upstream() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_many_headers");
    let kg = spawn_proxy(up.addr, &[&key], "").await;
    let auth = format!("Authorization: {}", key.bearer());
    let extra: Vec<String> = (0..101).map(|i| format!("X-H-{i}: v")).collect();
    let mut lines = vec!["GET /api/v1/clinics HTTP/1.1", "Host: x", auth.as_str()];
    lines.extend(extra.iter().map(String::as_str));
    lines.push("Connection: close");

    let resp = kg.raw(&request(&lines)).await;

    assert!(resp.is_empty() || raw_status(&resp) == 431, "expected 431 or a closed connection: {resp}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_slowloris");
    let kg = spawn_proxy(up.addr, &[&key], "limits:\n  header_read_timeout: 300ms\n").await;

    let mut s = TcpStream::connect(kg.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;

    assert!(closed.is_ok(), "keygate kept a half-sent request open for 2 s");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_client_dripping_its_headers_is_disconnected_at_the_header_deadline() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_drip");
    let kg = spawn_proxy(up.addr, &[&key], "limits:\n  header_read_timeout: 300ms\n").await;

    let (mut rd, mut wr) = TcpStream::connect(kg.addr).await.unwrap().into_split();
    let drip = tokio::spawn(async move {
        // One byte every 50 ms: never idle, never done.
        for b in b"GET /api/v1/clinics HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter().chain(std::iter::repeat(&b'a')) {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), rd.read_to_end(&mut out)).await;
    drip.abort();

    assert!(closed.is_ok(), "keygate kept a dripping request open for 2 s");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_by_the_idle_timeout() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_silent");
    let kg = spawn_proxy(up.addr, &[&key], "limits:\n  idle_timeout: 500ms\n").await;

    let mut s = TcpStream::connect(kg.addr).await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;

    assert!(closed.is_ok(), "keygate kept a silent connection open for 2 s");
    assert_eq!(up.count(), 0);
}
