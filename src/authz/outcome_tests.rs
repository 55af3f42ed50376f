use super::*;
use http::HeaderValue;

fn allow() -> CheckOutcome {
    let mut set = HeaderMap::new();
    set.insert("x-api-key-id", HeaderValue::from_static("key_1"));
    set.insert("x-allowed-clinics", HeaderValue::from_static("c1,c2"));
    set.insert("x-scopes", HeaderValue::from_static("interactions:read"));
    set.insert("x-api-key-environment", HeaderValue::from_static("live"));
    set.insert("x-request-id", HeaderValue::from_static("rid-1"));
    let mut response = HeaderMap::new();
    response.insert("ratelimit-limit", HeaderValue::from_static("10"));
    response.insert("ratelimit-remaining", HeaderValue::from_static("9"));
    let remove = ["authorization", "x-keygate-signature"].map(HeaderName::from_static).to_vec();
    CheckOutcome::Allow { set, remove, response }
}

fn deny(status: u16, body: &str, headers: &[(&'static str, &'static str)]) -> CheckOutcome {
    let mut r = Response::new(Bytes::from(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    for (k, v) in headers {
        r.headers_mut().append(*k, HeaderValue::from_static(v));
    }
    CheckOutcome::Deny(r)
}

const BODY_429: &str = r#"{"success":false,"error":{"code":"RATE_LIMIT_EXCEEDED","message":"Rate limit exceeded. Retry after 3 seconds"},"request_id":"r","timestamp":"t"}"#;

#[test]
fn http_allow_carries_identity_and_ratelimit_headers() {
    for shape in [Shape::NginxAuthRequest, Shape::ForwardAuth, Shape::EnvoyHttp] {
        let r = http_answer(allow(), shape);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-api-key-id"], "key_1");
        assert_eq!(r.headers()["x-allowed-clinics"], "c1,c2");
        assert_eq!(r.headers()["ratelimit-remaining"], "9");
        assert!(r.body().is_empty());
        let removal = r.headers().get("x-envoy-auth-headers-to-remove");
        match shape {
            Shape::EnvoyHttp => assert_eq!(removal.unwrap(), "authorization,x-keygate-signature"),
            _ => assert!(removal.is_none(), "{shape:?}: only Envoy reads the removal list"),
        }
    }
}

#[test]
fn nginx_denial_is_401_or_403_with_the_real_status_and_body_in_headers() {
    let r = http_answer(deny(429, BODY_429, &[("retry-after", "3")]), Shape::NginxAuthRequest);
    assert_eq!(r.status(), 403, "auth_request would turn a 429 into a 500");
    assert_eq!(r.headers()["x-keygate-status"], "429");
    assert_eq!(r.headers()["x-keygate-body"].as_bytes(), BODY_429.as_bytes());
    assert_eq!(r.headers()["retry-after"], "3");
    assert_eq!(r.body().as_ref(), BODY_429.as_bytes());

    let r = http_answer(deny(401, "{}", &[("www-authenticate", "Bearer realm=\"keygate\"")]), Shape::NginxAuthRequest);
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-keygate-status"], "401");
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"keygate\"");
}

#[test]
fn empty_result_is_never_a_2xx_to_an_http_front_proxy() {
    for shape in [Shape::NginxAuthRequest, Shape::ForwardAuth, Shape::EnvoyHttp] {
        let r = http_answer(deny(200, r#"{"success":true,"data":[]}"#, &[]), shape);
        assert_eq!(r.status(), 403, "{shape:?}");
        assert_eq!(r.headers()["x-keygate-status"], "200", "{shape:?}");
        assert_eq!(r.body().as_ref(), br#"{"success":true,"data":[]}"#);
    }
}

#[test]
fn forward_auth_and_envoy_http_keep_keygate_status() {
    for shape in [Shape::ForwardAuth, Shape::EnvoyHttp] {
        let r = http_answer(deny(429, BODY_429, &[("retry-after", "3")]), shape);
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "3");
        assert!(r.headers().get("x-keygate-status").is_none() && r.headers().get("x-keygate-body").is_none());
        assert_eq!(r.body().as_ref(), BODY_429.as_bytes());
    }
}

fn ok_of(r: CheckResponse) -> OkHttpResponse {
    assert_eq!(r.status.unwrap().code, 0);
    match r.http_response.unwrap() {
        check_response::HttpResponse::OkResponse(ok) => ok,
        other => panic!("not ok: {other:?}"),
    }
}

fn denied_of(r: CheckResponse, grpc: i32) -> DeniedHttpResponse {
    assert_eq!(r.status.unwrap().code, grpc);
    match r.http_response.unwrap() {
        check_response::HttpResponse::DeniedResponse(d) => d,
        other => panic!("not denied: {other:?}"),
    }
}

fn kv(o: &HeaderValueOption) -> (String, String, i32) {
    let h = o.header.as_ref().unwrap();
    (h.key.clone(), h.value.clone(), o.append_action)
}

#[test]
fn grpc_allow_overwrites_and_removes() {
    let ok = ok_of(grpc_answer(allow()));
    let overwrite = HeaderAppendAction::OverwriteIfExistsOrAdd as i32;
    let mut headers: Vec<_> = ok.headers.iter().map(kv).collect();
    headers.sort();
    assert_eq!(
        headers,
        [
            ("x-allowed-clinics", "c1,c2"),
            ("x-api-key-environment", "live"),
            ("x-api-key-id", "key_1"),
            ("x-request-id", "rid-1"),
            ("x-scopes", "interactions:read"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string(), overwrite))
    );
    assert_eq!(ok.headers_to_remove, ["authorization", "x-keygate-signature"]);
    let mut resp: Vec<_> = ok.response_headers_to_add.iter().map(kv).collect();
    resp.sort();
    assert_eq!(
        resp,
        [("ratelimit-limit", "10"), ("ratelimit-remaining", "9")].map(|(k, v)| (
            k.to_string(),
            v.to_string(),
            overwrite
        ))
    );
    assert!(ok.query_parameters_to_set.is_empty() && ok.query_parameters_to_remove.is_empty());
}

#[test]
fn grpc_denial_carries_status_body_and_headers() {
    let d = denied_of(grpc_answer(deny(429, BODY_429, &[("retry-after", "3")])), 7);
    assert_eq!(d.status.unwrap().code, 429);
    assert_eq!(d.body, BODY_429);
    let headers: Vec<_> = d.headers.iter().map(kv).collect();
    let overwrite = HeaderAppendAction::OverwriteIfExistsOrAdd as i32;
    assert!(headers.contains(&("retry-after".into(), "3".into(), overwrite)), "{headers:?}");
    assert!(headers.contains(&("content-type".into(), "application/json".into(), overwrite)), "{headers:?}");

    let d = denied_of(grpc_answer(deny(401, "{}", &[("www-authenticate", "Bearer realm=\"keygate\"")])), 16);
    assert_eq!(d.status.unwrap().code, 401);
}

#[test]
fn grpc_empty_result_is_a_200_denied_response() {
    let d = denied_of(grpc_answer(deny(200, r#"{"success":true,"data":[]}"#, &[])), 7);
    assert_eq!(d.status.unwrap().code, 200);
    assert_eq!(d.body, r#"{"success":true,"data":[]}"#);
}

#[test]
fn repeated_values_overwrite_once_then_append() {
    let mut h = HeaderMap::new();
    h.append("ratelimit-policy", HeaderValue::from_static("10;w=1"));
    h.append("ratelimit-policy", HeaderValue::from_static("100;w=60"));
    let actions: Vec<_> = options(&h).iter().map(|o| o.append_action).collect();
    assert_eq!(
        actions,
        [HeaderAppendAction::OverwriteIfExistsOrAdd as i32, HeaderAppendAction::AppendIfExistsOrAdd as i32]
    );
}
