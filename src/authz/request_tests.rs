use super::*;
use envoy_types::pb::envoy::config::core::v3::{address, Address, HeaderMap as PbHeaderMap, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;

fn h(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    m
}

fn xff(hops: usize) -> ClientIpSource {
    ClientIpSource::Header { name: HeaderName::from_static("x-forwarded-for"), trusted_hops: hops }
}

#[test]
fn nginx_reads_and_removes_the_original_method_and_uri() {
    let mut m = h(&[("x-original-method", "POST"), ("x-original-uri", "/v1/a?b=c"), ("authorization", "Bearer x")]);
    let (method, uri) = nginx(&mut m).unwrap();
    assert_eq!((method, uri.to_string()), (Method::POST, "/v1/a?b=c".to_string()));
    assert!(!m.contains_key("x-original-method") && !m.contains_key("x-original-uri"));
    assert_eq!(m["authorization"], "Bearer x", "the client's headers stay");
}

#[test]
fn nginx_without_or_with_two_original_uris_is_unreadable() {
    let e = nginx(&mut h(&[("x-original-method", "GET")])).unwrap_err();
    assert_eq!(e.0, "the front proxy did not send x-original-uri");
    let mut two = h(&[("x-original-method", "GET"), ("x-original-uri", "/a"), ("x-original-uri", "/b")]);
    assert_eq!(nginx(&mut two).unwrap_err().0, "the front proxy sent x-original-uri more than once");
}

#[test]
fn forward_auth_restores_the_host() {
    let mut m = h(&[
        ("x-forwarded-method", "DELETE"),
        ("x-forwarded-uri", "/v1/x"),
        ("x-forwarded-host", "api.example"),
        ("host", "keygate:9191"),
    ]);
    let (method, uri) = forward_auth(&mut m).unwrap();
    assert_eq!((method, uri.path()), (Method::DELETE, "/v1/x"));
    assert_eq!(m["host"], "api.example");
    assert!(!m.contains_key("x-forwarded-uri") && !m.contains_key("x-forwarded-host"));
}

#[test]
fn reported_targets_must_be_paths() {
    for bad in ["", "v1/a", "http://evil/v1", "*", "/a b", "/a#frag"] {
        assert!(origin_uri(bad.as_bytes()).is_err(), "{bad:?} accepted");
    }
    // Normalisation and hygiene are the engine's, on exactly what was reported.
    assert_eq!(origin_uri(b"/v1/../admin?x=%2e").unwrap().to_string(), "/v1/../admin?x=%2e");
    assert_eq!(origin_uri(b"//evil.example/x").unwrap().path(), "//evil.example/x", "a path, not an authority");
}

#[test]
fn bad_method_is_unreadable() {
    let mut m = h(&[("x-forwarded-method", "GE T"), ("x-forwarded-uri", "/")]);
    assert_eq!(forward_auth(&mut m).unwrap_err().0, "the reported method is not an HTTP method");
}

#[test]
fn envoy_http_strips_the_path_prefix() {
    let u: Uri = "/check/envoy/v1/a?x=1".parse().unwrap();
    assert_eq!(envoy_http(&u, "/check/envoy").unwrap().to_string(), "/v1/a?x=1");
    for bad in ["/check/envoy", "/check/envoyx/a", "/other/v1"] {
        assert!(envoy_http(&bad.parse().unwrap(), "/check/envoy").is_err(), "{bad}");
    }
}

#[test]
fn client_ip_takes_the_hop_the_rule_names() {
    let m = h(&[("x-forwarded-for", "6.6.6.6, 203.0.113.7"), ("x-forwarded-for", "10.0.0.2")]);
    assert_eq!(client_ip(&xff(0), &m, None).unwrap(), "10.0.0.2".parse::<IpAddr>().unwrap());
    assert_eq!(client_ip(&xff(1), &m, None).unwrap(), "203.0.113.7".parse::<IpAddr>().unwrap());
    assert!(client_ip(&xff(3), &m, None).is_err(), "more hops than entries");
}

#[test]
fn client_ip_never_falls_back_to_the_front_proxy() {
    let e = client_ip(&xff(0), &HeaderMap::new(), Some("10.0.0.1".parse().unwrap())).unwrap_err();
    assert!(e.0.contains("did not report the client address in x-forwarded-for"), "{}", e.0);
    assert!(client_ip(&xff(0), &h(&[("x-forwarded-for", "nonsense")]), None).is_err());
    assert!(client_ip(&ClientIpSource::SourceAddress, &HeaderMap::new(), None).is_err());
}

#[test]
fn ipv4_mapped_addresses_read_as_ipv4() {
    let m = h(&[("x-forwarded-for", "::ffff:203.0.113.7")]);
    assert_eq!(client_ip(&xff(0), &m, None).unwrap(), "203.0.113.7".parse::<IpAddr>().unwrap());
}

fn grpc(headers: &[(&str, &str)], path: &str, source: Option<&str>) -> pb::CheckRequest {
    let http = HttpRequest {
        method: "GET".into(),
        path: path.into(),
        host: "api.example".into(),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    };
    let source = source.map(|ip| Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress { address: ip.into(), ..Default::default() })),
        }),
        ..Default::default()
    });
    pb::CheckRequest {
        attributes: Some(AttributeContext {
            source,
            request: Some(Request { http: Some(http), ..Default::default() }),
            ..Default::default()
        }),
    }
}

#[test]
fn envoy_grpc_reads_what_envoy_sends() {
    let req = grpc(
        &[(":path", "/v1/a?b=1"), (":method", "GET"), ("authorization", "Bearer k"), ("x-scopes", "admin")],
        "/v1/a?b=1",
        Some("::ffff:198.51.100.9"),
    );
    let (m, uri, headers, source) = envoy_grpc(&req).unwrap();
    assert_eq!((m, uri.to_string()), (Method::GET, "/v1/a?b=1".to_string()));
    assert_eq!(headers["authorization"], "Bearer k");
    assert_eq!(headers["x-scopes"], "admin", "client copies reach the engine, which strips them");
    assert_eq!(headers["host"], "api.example");
    assert!(!headers.keys().any(|k| k.as_str().starts_with(':')));
    assert_eq!(source, Some("198.51.100.9".parse().unwrap()));
}

#[test]
fn envoy_grpc_raw_header_map_keeps_repeated_headers() {
    let mut req = grpc(&[], "/v1/a", None);
    let http = req.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap();
    let hv = |k: &str, v: &str| envoy_types::pb::envoy::config::core::v3::HeaderValue {
        key: k.into(),
        raw_value: v.as_bytes().to_vec(),
        ..Default::default()
    };
    http.header_map =
        Some(PbHeaderMap { headers: vec![hv("authorization", "Bearer a"), hv("authorization", "Bearer b")] });
    let (_, _, headers, source) = envoy_grpc(&req).unwrap();
    assert_eq!(headers.get_all("authorization").iter().count(), 2, "the engine refuses two, as inline");
    assert_eq!(source, None);
}

#[test]
fn envoy_grpc_without_http_attributes_is_unreadable() {
    assert!(envoy_grpc(&pb::CheckRequest::default()).is_err());
}

#[test]
fn secret_header_is_removed() {
    let mut m = h(&[("x-keygate-authz-secret", "s"), ("accept", "*/*")]);
    strip_secret(&mut m, Some(&HeaderName::from_static("x-keygate-authz-secret")));
    assert_eq!(m.len(), 1);
}

/// Whatever a front proxy reports, reading it never panics, and an accepted target is a path
/// the engine receives byte for byte.
#[test]
fn reported_target_property() {
    bolero::check!().with_type::<(Vec<u8>, Vec<u8>, u8)>().for_each(|(target, xff_value, hops)| {
        if let Ok(uri) = origin_uri(target) {
            assert!(uri.path().starts_with('/'));
            assert_eq!(uri.path_and_query().unwrap().as_str().as_bytes(), &target[..]);
        }
        if let Ok(v) = HeaderValue::from_bytes(xff_value) {
            let mut m = HeaderMap::new();
            m.insert("x-forwarded-for", v);
            let _ = client_ip(&xff(usize::from(*hops)), &m, None);
        }
    });
}
