//! Every check is a decision like an inline request: counted in `keygate_requests_total` and
//! written to the audit line under the shape that asked, refusals before the engine saw the
//! check (not our front proxy, a path no shape has, a report it cannot read) included.

use bytes::Bytes;
use http::Method;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::authz_front::{authorizer_for, SECRET};
use crate::support::*;

const INTERACTIONS: &str = "/api/v1/clinics/clinic_001/interactions";
const ROUTE: &str = "/api/v1/clinics/{clinic_id}/interactions";

/// A check sent straight to keygate's check listener, as a front proxy would send it.
async fn check(kg: &Proxy, path: &str, headers: &[(&str, &str)]) -> Resp {
    let url = format!("http://{}{path}", kg.running().authz_addr.unwrap());
    send(Client::builder(TokioExecutor::new()).build_http(), &url, Method::GET, headers, Bytes::new()).await
}

fn decisions(code: &str, route: &str, shape: &str) -> String {
    format!("keygate_requests_total{{code=\"{code}\",route=\"{route}\",shape=\"{shape}\"}}")
}

fn audit(rid: &str) -> serde_json::Value {
    serde_json::from_str(&audit_line(rid)).unwrap()
}

#[tokio::test]
async fn each_shape_is_its_own_series_and_audit_field() {
    let (_up, key, kg) = authorizer_for(TestKey::live("k_shapes"), "").await;
    let bearer = key.bearer();
    let common =
        [("authorization", bearer.as_str()), ("x-keygate-authz-secret", SECRET), ("x-forwarded-for", "203.0.113.5")];

    let nginx = [("x-original-method", "GET"), ("x-original-uri", INTERACTIONS), ("x-request-id", "shape-nginx")];
    let forward = [("x-forwarded-method", "GET"), ("x-forwarded-uri", INTERACTIONS), ("x-request-id", "shape-fwd")];
    let envoy = [("x-request-id", "shape-envoy")];
    assert_eq!(check(&kg, "/check/nginx", &[&common[..], &nginx].concat()).await.status, 200);
    assert_eq!(check(&kg, "/check/forward-auth", &[&common[..], &forward].concat()).await.status, 200);
    let envoy_path = format!("/check/envoy{INTERACTIONS}");
    assert_eq!(check(&kg, &envoy_path, &[&common[..], &envoy].concat()).await.status, 200);
    kg.get(INTERACTIONS, &[("authorization", &bearer), ("x-request-id", "shape-inline")]).await.ok();

    for (rid, shape) in [
        ("shape-nginx", "nginx_auth_request"),
        ("shape-fwd", "forward_auth"),
        ("shape-envoy", "envoy_http"),
        ("shape-inline", "inline"),
    ] {
        assert_eq!(kg.metric(&decisions("OK", ROUTE, shape)).await, 1.0, "{shape}");
        let line = audit(rid);
        assert_eq!(line["shape"], shape, "{line}");
        assert_eq!(line["key_id"], "k_shapes", "{line}");
        assert_eq!(line["route"], ROUTE, "{line}");
    }
    assert_eq!(audit("shape-nginx")["client_ip"], "203.0.113.5", "the client, by the shape's rule");
}

#[tokio::test]
async fn refusals_before_the_check_are_counted_and_audited_with_their_code_and_shape() {
    let (up, key, kg) = authorizer_for(TestKey::live("k_refused"), "").await;
    let bearer = key.bearer();
    let report = [("x-original-method", "GET"), ("x-original-uri", INTERACTIONS), ("authorization", &bearer)];

    // Not our front proxy: a wrong secret, then none at all.
    let wrong = [("x-keygate-authz-secret", "not-the-secret-0123456789"), ("x-request-id", "pre-wrong")];
    let r = check(&kg, "/check/nginx", &[&report[..], &wrong].concat()).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.headers["x-keygate-status"], "403");
    let r = check(&kg, "/check/nginx", &[&report[..], &[("x-request-id", "pre-none")]].concat()).await;
    assert_eq!(r.status, 403);
    // Our front proxy, misconfigured: no X-Original-URI; a path no shape has; no X-Forwarded-Method.
    let secret = ("x-keygate-authz-secret", SECRET);
    let no_uri = [secret, ("x-original-method", "GET"), ("x-request-id", "pre-no-uri")];
    let r = check(&kg, "/check/nginx", &no_uri).await;
    assert_eq!((r.status.as_u16(), r.headers["x-keygate-status"].to_str().unwrap()), (403, "400"), "nginx's way");
    let r = check(&kg, "/check/traefik", &[secret, ("x-request-id", "pre-path")]).await;
    r.assert_error(404, "ROUTE_NOT_FOUND");
    let fwd =
        [secret, ("x-forwarded-uri", INTERACTIONS), ("x-forwarded-for", "203.0.113.5"), ("x-request-id", "pre-fwd")];
    check(&kg, "/check/forward-auth", &fwd).await.assert_error(400, "INVALID_REQUEST");

    assert_eq!(kg.metric(&decisions("CHECK_CALLER_REFUSED", "none", "nginx_auth_request")).await, 2.0);
    assert_eq!(kg.metric(&decisions("INVALID_REQUEST", "none", "nginx_auth_request")).await, 1.0);
    assert_eq!(kg.metric(&decisions("ROUTE_NOT_FOUND", "none", "none")).await, 1.0);
    assert_eq!(kg.metric(&decisions("INVALID_REQUEST", "none", "forward_auth")).await, 1.0);
    for (rid, status, code, shape) in [
        ("pre-wrong", 403, "CHECK_CALLER_REFUSED", "nginx_auth_request"),
        ("pre-none", 403, "CHECK_CALLER_REFUSED", "nginx_auth_request"),
        ("pre-no-uri", 400, "INVALID_REQUEST", "nginx_auth_request"),
        ("pre-path", 404, "ROUTE_NOT_FOUND", "none"),
        ("pre-fwd", 400, "INVALID_REQUEST", "forward_auth"),
    ] {
        let line = audit(rid);
        assert_eq!((line["status"].as_u64().unwrap(), line["code"].as_str().unwrap()), (status, code), "{line}");
        assert_eq!(line["shape"], shape, "{line}");
        // The client's address was never read: the line names the front proxy that asked.
        assert_eq!(line["client_ip"], "127.0.0.1", "{line}");
        assert_eq!(line["key_id"], "", "{line}");
    }
    assert!(!logs().contains(&key.secret), "a refused check's key is never logged");
    assert_eq!(up.count(), 0);
}
