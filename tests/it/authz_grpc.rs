//! Envoy ext_authz over gRPC: a tonic client built from the same `envoy-types` drives keygate's
//! `Check` with requests shaped as Envoy sends them (lower-cased headers with the pseudo-headers,
//! `:path` with its query, the source address Envoy resolved, TLS facts), and every field of the
//! answers is asserted. No Envoy binary is reachable here; this is the protocol as Envoy speaks it.

use std::collections::HashMap;

use envoy_types::ext_authz::v3::pb::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{address, Address, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request, TlsSession};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};

use crate::authz_front::SECRET;
use crate::support::*;

const INTERACTIONS: &str = "/api/v1/clinics/clinic_001/interactions";
const EMPTY: &str = r#"{"success":true,"data":[]}"#;
/// keygate with the gRPC check listener too (and the shared secret), in front of nothing: a
/// check never forwards.
async fn keygate(keys: &[&TestKey], extra: &str) -> (Proxy, Client) {
    let up = Upstream::spawn().await;
    let kg = crate::authz_front::keygate(&up, keys, &format!("  grpc_listen: 127.0.0.1:0\n{extra}")).await;
    let addr = kg.running().authz_grpc_addr.expect("grpc listener");
    let client = AuthorizationClient::connect(format!("http://{addr}")).await.unwrap();
    (kg, client)
}

/// A check as Envoy sends it for `method target` from `source`.
fn envoy_check(method: &str, target: &str, headers: &[(&str, &str)], source: &str) -> tonic::Request<CheckRequest> {
    let mut h: HashMap<String, String> =
        [(":method", method), (":path", target), (":authority", "api.example"), (":scheme", "https")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    h.extend(headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())));
    h.insert("x-request-id".into(), "envoy-rid-1".into());
    let peer = |ip: &str, port: u32| Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(
                    envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(port),
                ),
                ..Default::default()
            })),
        }),
        ..Default::default()
    };
    let http = HttpRequest {
        id: "envoy-rid-1".into(),
        method: method.into(),
        headers: h,
        path: target.into(),
        host: "api.example".into(),
        scheme: "https".into(),
        protocol: "HTTP/1.1".into(),
        ..Default::default()
    };
    let mut req = tonic::Request::new(CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(source, 51234)),
            destination: Some(peer("10.0.0.10", 443)),
            request: Some(Request { http: Some(http), ..Default::default() }),
            tls_session: Some(TlsSession { sni: "api.example".into() }),
            ..Default::default()
        }),
    });
    req.metadata_mut().insert("x-keygate-authz-secret", SECRET.parse().unwrap());
    req
}

type Client = AuthorizationClient<tonic::transport::Channel>;

/// Envoy's answer to `GET target` with `bearer` as the credential, from 203.0.113.7.
async fn check_get(client: &mut Client, bearer: &str, target: &str) -> CheckResponse {
    let req = envoy_check("GET", target, &[("authorization", bearer)], "203.0.113.7");
    client.check(req).await.unwrap().into_inner()
}

/// A check the engine never saw is counted under no route and audited with its status and
/// code, as the envoy_grpc shape.
async fn assert_counted_and_audited(kg: &Proxy, request_id: &str, status: u64, code: &str) {
    let series = format!(r#"keygate_requests_total{{code="{code}",route="none",shape="envoy_grpc"}}"#);
    assert_eq!(kg.metric(&series).await, 1.0);
    let v: serde_json::Value = serde_json::from_str(&audit_line(request_id)).unwrap();
    assert_eq!(
        (v["status"].as_u64(), v["code"].as_str(), v["shape"].as_str()),
        (Some(status), Some(code), Some("envoy_grpc"))
    );
    assert_eq!(v["client_ip"], "127.0.0.1", "the caller's address: the source it reported is not read");
}

fn ok(r: CheckResponse) -> OkHttpResponse {
    assert_eq!(r.status.as_ref().unwrap().code, 0, "{r:?}");
    match r.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok,
        other => panic!("not an OK response: {other:?}"),
    }
}

fn denied(r: CheckResponse, grpc_code: i32) -> DeniedHttpResponse {
    assert_eq!(r.status.as_ref().unwrap().code, grpc_code, "{r:?}");
    match r.http_response {
        Some(HttpResponse::DeniedResponse(d)) => d,
        other => panic!("not a denied response: {other:?}"),
    }
}

/// name → (value, append action), asserting each name appears once.
fn by_name(list: &[envoy_types::pb::envoy::config::core::v3::HeaderValueOption]) -> HashMap<String, (String, i32)> {
    let mut m = HashMap::new();
    for o in list {
        let h = o.header.as_ref().unwrap();
        assert!(m.insert(h.key.clone(), (h.value.clone(), o.append_action)).is_none(), "{} twice", h.key);
    }
    m
}

const OVERWRITE: i32 = HeaderAppendAction::OverwriteIfExistsOrAdd as i32;

#[tokio::test]
async fn an_allowed_check_sets_identity_by_overwrite_and_removes_client_copies() {
    let key = TestKey::live("k_grpc").with("    clinics: [clinic_001]\n");
    let (_kg, mut client) = keygate(&[&key], "").await;
    let bearer = key.bearer();
    let req = envoy_check(
        "GET",
        &format!("{INTERACTIONS}?page=2"),
        &[("authorization", &bearer), ("x-api-key-id", "spoofed"), ("x-scopes", "admin:write"), ("accept", "*/*")],
        "203.0.113.7",
    );
    let ok = ok(client.check(req).await.unwrap().into_inner());

    let set = by_name(&ok.headers);
    assert_eq!(set["x-api-key-id"], ("k_grpc".to_string(), OVERWRITE));
    assert_eq!(set["x-allowed-clinics"], ("clinic_001".to_string(), OVERWRITE));
    assert_eq!(set["x-api-key-environment"], ("live".to_string(), OVERWRITE));
    assert_eq!(set["x-scopes"].1, OVERWRITE);
    assert!(!set["x-scopes"].0.contains("admin:write"), "keygate's scopes, not the client's: {set:?}");
    assert_eq!(set["x-request-id"], ("envoy-rid-1".to_string(), OVERWRITE), "Envoy's request id is kept");
    assert_eq!(set.len(), 5, "{set:?}");

    let mut removed = ok.headers_to_remove.clone();
    removed.sort();
    assert!(removed.contains(&"authorization".to_string()), "{removed:?}");
    for spoofed in ["x-api-key-id", "x-scopes"] {
        assert!(removed.contains(&spoofed.to_string()), "the client's {spoofed} must go: {removed:?}");
    }
    assert!(!removed.contains(&"accept".to_string()), "{removed:?}");
    let answer = by_name(&ok.response_headers_to_add);
    assert_eq!(answer["x-request-id"], ("envoy-rid-1".to_string(), OVERWRITE));
    assert!(ok.query_parameters_to_set.is_empty() && ok.query_parameters_to_remove.is_empty());
}

#[tokio::test]
async fn a_missing_key_is_a_401_denied_response_with_the_standard_body() {
    let key = TestKey::live("k1");
    let (_kg, mut client) = keygate(&[&key], "").await;
    let d = denied(client.check(envoy_check("GET", INTERACTIONS, &[], "203.0.113.7")).await.unwrap().into_inner(), 16);
    assert_eq!(d.status.unwrap().code, 401);
    let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], "UNAUTHORIZED");
    assert_eq!(body["request_id"], "envoy-rid-1");
    let h = by_name(&d.headers);
    assert_eq!(h["www-authenticate"], ("Bearer realm=\"keygate\"".to_string(), OVERWRITE));
    assert_eq!(h["content-type"].0, "application/json");
    assert_eq!(h["x-request-id"].0, "envoy-rid-1");
}

#[tokio::test]
async fn a_foreign_clinic_is_a_200_denied_response_with_the_empty_body() {
    let key = TestKey::live("k1").with("    clinics: [clinic_001]\n");
    let (_kg, mut client) = keygate(&[&key], "").await;
    let bearer = key.bearer();
    let d = denied(check_get(&mut client, &bearer, "/api/v1/clinics/clinic_002/interactions").await, 7);
    assert_eq!(d.status.unwrap().code, 200);
    assert_eq!(d.body, EMPTY);
    assert_eq!(by_name(&d.headers)["content-type"].0, "application/json");
}

#[tokio::test]
async fn over_budget_is_a_429_with_retry_after_and_ratelimit_headers() {
    let key = TestKey::live("k1");
    let (_kg, mut client) = keygate(&[&key], "rate_limits:\n  tiers:\n    default: {rate: 1/m, burst: 1}\n").await;
    let bearer = key.bearer();
    let ok = ok(check_get(&mut client, &bearer, INTERACTIONS).await);
    let rl = by_name(&ok.response_headers_to_add);
    assert!(rl.keys().any(|k| k.starts_with("ratelimit")), "RateLimit headers for the client: {rl:?}");

    let d = denied(check_get(&mut client, &bearer, INTERACTIONS).await, 7);
    assert_eq!(d.status.unwrap().code, 429);
    let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
    assert_eq!(body["error"]["code"], "RATE_LIMIT_EXCEEDED");
    let h = by_name(&d.headers);
    assert!(h["retry-after"].0.parse::<u64>().unwrap() >= 1, "{h:?}");
    assert!(h.keys().any(|k| k.starts_with("ratelimit")), "{h:?}");
}

#[tokio::test]
async fn the_source_address_is_the_client_for_ip_rules() {
    let key = TestKey::live("k1").with("    allowed_ips: [198.51.100.0/24]\n");
    let (_kg, mut client) = keygate(&[&key], "").await;
    let bearer = key.bearer();
    // A client-written X-Forwarded-For is not believed: the source address is Envoy's word.
    let from_outside = envoy_check(
        "GET",
        INTERACTIONS,
        &[("authorization", &bearer), ("x-forwarded-for", "198.51.100.9")],
        "203.0.113.7",
    );
    let d = denied(client.check(from_outside).await.unwrap().into_inner(), 7);
    assert_eq!(d.status.unwrap().code, 403);
    assert!(d.body.contains("IP_NOT_ALLOWED"), "{}", d.body);
    let from_inside = envoy_check("GET", INTERACTIONS, &[("authorization", &bearer)], "::ffff:198.51.100.9");
    ok(client.check(from_inside).await.unwrap().into_inner());
}

#[tokio::test]
async fn hygiene_applies_to_the_reported_path() {
    let key = TestKey::live("k1");
    let (_kg, mut client) = keygate(&[&key], "").await;
    let bearer = key.bearer();
    for target in ["/api/v1/clinics/clinic_001/../clinic_002/interactions", "/api/v1/clinics/clinic_001/interactions;x"]
    {
        let d = denied(check_get(&mut client, &bearer, target).await, 7);
        assert_eq!(d.status.unwrap().code, 400, "{target}");
        assert!(d.body.contains("INVALID_REQUEST"), "{target}: {}", d.body);
    }
}

#[tokio::test]
async fn a_caller_without_the_secret_gets_a_grpc_error_not_an_answer() {
    let key = TestKey::live("k1");
    let (kg, mut client) = keygate(&[&key], "").await;
    let bearer = key.bearer();
    let mut req = envoy_check("GET", INTERACTIONS, &[("authorization", &bearer)], "203.0.113.7");
    req.metadata_mut().insert("x-keygate-authz-secret", "wrong-secret-0123456789".parse().unwrap());
    req.metadata_mut().insert("x-request-id", "grpc-wrong-secret".parse().unwrap());
    let e = client.check(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(logs().contains("check refused: the shared secret was missing or wrong"));
    assert!(!logs().contains(SECRET), "the secret is never logged");
    // Counted and audited like any refusal, though Envoy gets an error and not the body.
    assert_counted_and_audited(&kg, "grpc-wrong-secret", 403, "CHECK_CALLER_REFUSED").await;
}

#[tokio::test]
async fn an_unreadable_report_is_a_grpc_error_counted_and_audited() {
    let key = TestKey::live("k1");
    let (kg, mut client) = keygate(&[&key], "").await;
    let mut req = envoy_check("GET", "http://elsewhere/x", &[], "203.0.113.7");
    req.metadata_mut().insert("x-request-id", "grpc-unreadable".parse().unwrap());
    let e = client.check(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("not a path"), "{}", e.message());
    assert_counted_and_audited(&kg, "grpc-unreadable", 400, "INVALID_REQUEST").await;
}

#[tokio::test]
async fn the_audit_line_of_a_check_is_the_inline_one() {
    let key = TestKey::live("k_audit_grpc");
    let (kg, mut client) = keygate(&[&key], "").await;
    let bearer = key.bearer();
    let mut req = envoy_check("GET", INTERACTIONS, &[("authorization", &bearer)], "203.0.113.77");
    req.get_mut()
        .attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap()
        .headers
        .insert("x-request-id".into(), "grpc-audit-rid".into());
    ok(client.check(req).await.unwrap().into_inner());
    let v: serde_json::Value = serde_json::from_str(&audit_line("grpc-audit-rid")).unwrap();
    assert_eq!(v["key_id"], "k_audit_grpc");
    assert_eq!(v["client_ip"], "203.0.113.77");
    assert_eq!(v["status"], 200);
    assert_eq!(v["shape"], "envoy_grpc");
    let series =
        r#"keygate_requests_total{code="OK",route="/api/v1/clinics/{clinic_id}/interactions",shape="envoy_grpc"}"#;
    assert_eq!(kg.metric(series).await, 1.0);
}
