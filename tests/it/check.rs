//! `Proxy::check`: the inline steps answered without forwarding, as the external-authorization
//! shapes use them. The front proxies themselves are tested in their own modules.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue, Method};
use keygate::proxy::check::{CheckOutcome, CheckRequest, Shape};

use crate::support::*;

fn ask(path: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    CheckRequest {
        method: Method::GET,
        uri: path.parse().unwrap(),
        headers: h,
        client_ip: IpAddr::from([203, 0, 113, 9]),
        shape: Shape::EnvoyHttp,
    }
}

fn denied(o: CheckOutcome) -> (u16, serde_json::Value) {
    match o {
        CheckOutcome::Deny(r) => (r.status().as_u16(), serde_json::from_slice(r.body()).unwrap()),
        CheckOutcome::Allow { .. } => panic!("expected a refusal"),
    }
}

#[tokio::test]
async fn an_allowed_check_sets_the_identity_and_removes_the_clients_copies() {
    let (up, key, kg) = proxy_for(TestKey::live("k_check").with("    clinics: [clinic_001]\n"), "").await;

    let asked = ask(
        "/api/v1/clinics/clinic_001/interactions?x=1",
        &[("authorization", &key.bearer()), ("x-scopes", "everything:write"), ("x_allowed_clinics", "*")],
    );
    let CheckOutcome::Allow { set, remove, response } = kg.running().proxy.check(asked).await else {
        panic!("expected the check to allow")
    };

    assert_eq!(set["x-allowed-clinics"], "clinic_001");
    assert_eq!(set["x-api-key-id"], "k_check");
    assert_eq!(set["x-api-key-environment"], "live");
    assert!(set["x-scopes"].to_str().unwrap().contains("interactions:read"));
    assert_eq!(set["x-request-id"], response["x-request-id"]);
    let removed: Vec<&str> = remove.iter().map(|n| n.as_str()).collect();
    for name in ["authorization", "x-scopes", "x_allowed_clinics"] {
        assert!(removed.contains(&name), "{name} not removed: {removed:?}");
    }
    assert_eq!(up.count(), 0, "a check never forwards");
    assert_eq!(
        kg.metric("keygate_requests_total{code=\"OK\",route=\"/api/v1/clinics/{clinic_id}/interactions\",shape=\"envoy_http\",status_class=\"2xx\"}").await,
        1.0
    );
}

#[tokio::test]
async fn a_refused_check_carries_the_standard_body_and_challenge() {
    let up = Upstream::spawn().await;
    let kg = spawn_proxy(up.addr, &[], "").await;

    let outcome = kg.running().proxy.check(ask("/api/v1/clinics", &[])).await;

    let CheckOutcome::Deny(resp) = outcome else { panic!("expected a refusal") };
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    let body: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(body["error"]["code"], "UNAUTHORIZED");
    assert_eq!(resp.headers()["x-request-id"].to_str().unwrap(), body["request_id"]);
}

#[tokio::test]
async fn a_foreign_clinic_check_answers_the_empty_result() {
    let (_up, key, kg) = proxy_for(TestKey::live("k_check_empty").with("    clinics: [clinic_001]\n"), "").await;

    let outcome = kg
        .running()
        .proxy
        .check(ask("/api/v1/clinics/clinic_002/interactions", &[("authorization", &key.bearer())]))
        .await;

    assert_eq!(denied(outcome), (200, serde_json::json!({"success": true, "data": []})));
}

#[tokio::test]
async fn a_reported_path_that_is_not_normal_is_refused() {
    let (_up, key, kg) = proxy_for(TestKey::live("k_check_path"), "").await;

    for path in
        ["/api/v1/clinics/clinic_001/../clinic_002/interactions", "/api//v1/clinics", "/api/v1/clinics/%252e%252e"]
    {
        let (status, body) = denied(kg.running().proxy.check(ask(path, &[("authorization", &key.bearer())])).await);

        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("INVALID_REQUEST")), "{path}");
    }
}
