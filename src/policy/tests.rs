use bytes::Bytes;

use super::*;
use crate::keys::file;

fn route(pattern: &str, resource: &str, clinic: Option<ClinicSource>, foreign: ForeignClinic) -> RouteSpec {
    RouteSpec {
        pattern: pattern.into(),
        methods: vec![Method::GET, Method::HEAD, Method::POST],
        required: Required::Resource { read: format!("{resource}:read"), write: format!("{resource}:write") },
        clinic,
        foreign_clinic: foreign,
        empty_body: Bytes::from_static(b"{}"),
        enforce: None,
        cost: 1,
    }
}

fn table() -> RouteTable {
    RouteTable::new(
        vec![
            route(
                "/c/{clinic_id}/i",
                "interactions",
                Some(ClinicSource::PathParam("clinic_id".into())),
                ForeignClinic::EmptyResult,
            ),
            route("/i", "interactions", Some(ClinicSource::QueryParam("clinic_id".into())), ForeignClinic::Deny),
            route("/files/{*rest}", "campaigns", None, ForeignClinic::EmptyResult),
            route("/", "clinics", None, ForeignClinic::EmptyResult),
        ],
        vec![("/health".into(), vec![Method::GET])],
    )
    .unwrap()
}

/// One key from a one-line table entry, e.g. "scopes: [interactions:read]".
fn key(extra: &str) -> crate::keys::KeyTable {
    let text = format!("keys:\n  - id: k\n    hash: {}\n    environment: live\n    {extra}\n", "a".repeat(64));
    file::parse(&text, "t", &crate::keys::Catalogue::unchecked()).unwrap()
}

fn decide(extra: &str, method: Method, path: &str, query: Option<&str>) -> Result<Decision, Denied> {
    let t = key(extra);
    let k = t.records().next().unwrap();
    let routes = table();
    let facts = RequestFacts { method: &method, path, query, client_ip: "10.1.2.3".parse().unwrap() };
    authorise(&routes, k, &facts).map(|g| g.decision).map_err(|r| r.denied)
}

#[test]
fn no_route_is_not_found() {
    assert_eq!(decide("type: full", Method::GET, "/nope", None), Err(Denied::RouteNotFound));
}

#[test]
fn trailing_slash_is_another_path() {
    assert_eq!(decide("type: full", Method::GET, "/i/", None), Err(Denied::RouteNotFound));
}

#[test]
fn rest_needs_at_least_one_segment() {
    assert_eq!(decide("type: full", Method::GET, "/files/a/b", None), Ok(Decision::Forward));
    assert_eq!(decide("type: full", Method::GET, "/files", None), Err(Denied::RouteNotFound));
}

#[test]
fn root_route_matches_only_root() {
    assert_eq!(decide("type: full", Method::GET, "/", None), Ok(Decision::Forward));
}

#[test]
fn method_outside_the_route_is_405_with_allow() {
    let r = decide("type: full", Method::DELETE, "/i", None);
    assert_eq!(r, Err(Denied::MethodNotAllowed { allow: "GET, HEAD, POST".into() }));
}

#[test]
fn reads_need_read_and_writes_need_write() {
    assert_eq!(decide("type: read_only", Method::HEAD, "/i", None), Ok(Decision::Forward));
    assert_eq!(
        decide("type: read_only", Method::POST, "/i", None),
        Err(Denied::InsufficientScope { required: "interactions:write".into() })
    );
    assert_eq!(decide("type: write", Method::POST, "/i", None), Ok(Decision::Forward));
}

#[test]
fn ip_allow_list_is_checked_first() {
    assert_eq!(decide("allowed_ips: [192.168.0.0/16]", Method::GET, "/nope", None), Err(Denied::IpNotAllowed));
    assert_eq!(decide("allowed_ips: [10.0.0.0/8]", Method::GET, "/i", None), Ok(Decision::Forward));
}

#[test]
fn foreign_clinic_in_path_is_an_empty_result() {
    assert_eq!(decide("clinics: [c1]", Method::GET, "/c/c1/i", None), Ok(Decision::Forward));
    assert_eq!(decide("clinics: [c1]", Method::GET, "/c/c2/i", None), Ok(Decision::EmptyResult));
}

#[test]
fn foreign_clinic_in_query_on_a_deny_route_is_refused() {
    assert_eq!(decide("clinics: [c1]", Method::GET, "/i", Some("clinic_id=c1")), Ok(Decision::Forward));
    assert_eq!(decide("clinics: [c1]", Method::GET, "/i", Some("clinic_id=c2")), Err(Denied::ClinicNotAllowed));
}

#[test]
fn every_query_value_must_be_allowed() {
    for q in ["clinic_id=c1&clinic_id=c2", "clinic_id=c1,c2", "clinic%5Fid=c2", "clinic_id=c1%2Cc2"] {
        assert_eq!(decide("clinics: [c1]", Method::GET, "/i", Some(q)), Err(Denied::ClinicNotAllowed), "{q}");
    }
}

#[test]
fn no_clinic_named_is_forwarded_for_the_upstream_to_filter() {
    assert_eq!(decide("clinics: [c1]", Method::GET, "/i", Some("page=2")), Ok(Decision::Forward));
}

#[test]
fn unrestricted_keys_pass_any_clinic() {
    assert_eq!(decide("type: read_only", Method::GET, "/c/anything/i", None), Ok(Decision::Forward));
}

#[test]
fn public_routes_match_their_methods_only() {
    let t = table();
    assert!(t.public_route(&Method::GET, "/health").is_some());
    assert!(t.public_route(&Method::POST, "/health").is_none());
    assert!(t.public_route(&Method::GET, "/health/x").is_none());
}

#[test]
fn a_route_behind_a_broader_earlier_one_is_reported() {
    let spec = |p: &str, methods: &[Method]| RouteSpec {
        methods: methods.to_vec(),
        ..route(p, "x", None, ForeignClinic::EmptyResult)
    };
    let t = RouteTable::new(
        vec![
            spec("/api/{*rest}", &[Method::GET]),
            spec("/api/v1/items", &[Method::GET, Method::POST]),
            spec("/api/v1/{id}", &[Method::GET]),
            spec("/other/{id}", &[Method::GET]),
            spec("/other/fixed", &[Method::GET]),
            spec("/other/{id}/deeper", &[Method::GET]),
            spec("/", &[Method::GET]),
            spec("/api", &[Method::GET]),
        ],
        vec![],
    )
    .unwrap();
    let s = t.shadowed();
    assert_eq!(s.len(), 3, "{s:#?}");
    assert!(
        s[0].starts_with("routes[1] (/api/v1/items): is partly unreachable: answered first for GET by routes[0]"),
        "{}",
        s[0]
    );
    assert!(s[1].starts_with("routes[2] (/api/v1/{id}): is unreachable"), "{}", s[1]);
    assert!(s[2].starts_with("routes[4] (/other/fixed): is unreachable"), "{}", s[2]);
}

#[test]
fn bad_patterns_are_refused() {
    for p in ["nope", "/a/{}", "/a/{*rest}/b", "/a//b", "/a/%2e", "/a/{bad-name}"] {
        let spec = route(p, "x", None, ForeignClinic::EmptyResult);
        assert!(RouteTable::new(vec![spec], vec![]).is_err(), "{p}");
    }
}
