//! Authorisation as a pure function: given a key and the facts of a request, which route it is,
//! whether the key's IPs, scopes and clinics allow it, and what to do about a foreign clinic.
//! No I/O, no clock: everything it needs arrives as arguments.

use std::net::IpAddr;

use bytes::Bytes;
use http::Method;

use crate::keys::KeyRecord;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(String),
    Param(String),
    /// `{*name}` as the last segment: the rest of the path, at least one segment.
    Rest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClinicSource {
    PathParam(String),
    QueryParam(String),
}

/// What a request for a clinic outside the key's list gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignClinic {
    /// The documented behaviour: "requests for other clinics will return empty results".
    EmptyResult,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Required {
    /// `resource:read` for GET/HEAD, `resource:write` for everything else.
    Resource { read: String, write: String },
    /// These scopes, whatever the method.
    Scopes(Vec<String>),
}

/// A configured route, compiled for matching.
#[derive(Debug, Clone)]
pub struct Route {
    pub spec: RouteSpec,
    segs: Vec<Seg>,
}

#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub pattern: String,
    pub methods: Vec<Method>,
    pub required: Required,
    pub clinic: Option<ClinicSource>,
    pub foreign_clinic: ForeignClinic,
    pub empty_body: Bytes,
}

#[derive(Debug, Clone)]
pub struct PublicRoute {
    pub pattern: String,
    segs: Vec<Seg>,
    pub methods: Vec<Method>,
}

/// Routes in the order they were configured; the first match wins (as Envoy's route table).
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    public: Vec<PublicRoute>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    IpNotAllowed,
    RouteNotFound,
    MethodNotAllowed { allow: String },
    InsufficientScope { required: String },
    ClinicNotAllowed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Forward,
    /// Answer with the route's empty body; the upstream never sees the request.
    EmptyResult,
}

/// A refusal, with the route it happened on when the path matched one (for metrics and logs).
#[derive(Debug)]
pub struct Refusal<'r> {
    pub denied: Denied,
    pub route: Option<&'r Route>,
}

#[derive(Debug)]
pub struct Grant<'r> {
    pub route: &'r Route,
    pub decision: Decision,
}

pub struct RequestFacts<'a> {
    pub method: &'a Method,
    /// Already normalised: the exact path that will be forwarded.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub client_ip: IpAddr,
}

fn compile(pattern: &str) -> Result<Vec<Seg>, String> {
    if !pattern.starts_with('/') {
        return Err(format!("route {pattern:?} must start with '/'"));
    }
    if pattern == "/" {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = pattern[1..].split('/').collect();
    let mut segs = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        let seg = if let Some(name) = p.strip_prefix("{*").and_then(|r| r.strip_suffix('}')) {
            if i + 1 != parts.len() || name.is_empty() {
                return Err(format!("route {pattern:?}: {{*{name}}} must be the last segment and named"));
            }
            Seg::Rest
        } else if let Some(name) = p.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("route {pattern:?}: parameter {{{name}}} must be named with [A-Za-z0-9_]"));
            }
            Seg::Param(name.to_string())
        } else if p.is_empty() || p.contains(['{', '}', '%', '\\']) || *p == "." || *p == ".." {
            return Err(format!("route {pattern:?}: segment {p:?} is not a plain path segment"));
        } else {
            Seg::Lit(p.to_string())
        };
        segs.push(seg);
    }
    Ok(segs)
}

/// Matches a normalised path; returns the value of `want` if it is a path parameter.
/// A trailing slash is a different path to most upstreams, so it does not match silently.
fn matches<'p>(segs: &[Seg], path: &'p str, want: Option<&str>) -> Option<Option<&'p str>> {
    let mut rest = path.strip_prefix('/')?;
    if segs.is_empty() {
        return rest.is_empty().then_some(None);
    }
    let mut found = None;
    for (i, seg) in segs.iter().enumerate() {
        let (part, tail) = match rest.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (rest, None),
        };
        match seg {
            Seg::Rest => return (!rest.is_empty()).then_some(found),
            Seg::Lit(l) if part != l => return None,
            Seg::Lit(_) => {}
            Seg::Param(_) if part.is_empty() => return None,
            Seg::Param(name) => {
                if want == Some(name.as_str()) {
                    found = Some(part);
                }
            }
        }
        let last = i + 1 == segs.len();
        match tail {
            None => return (last).then_some(found),
            Some(_) if last => return None,
            Some(t) => rest = t,
        }
    }
    None
}

/// Does every path `b` matches also match `a`? (A `{param}` takes any one segment, `{*rest}`
/// one or more.)
fn covers(a: &[Seg], b: &[Seg]) -> bool {
    for (i, sa) in a.iter().enumerate() {
        let Some(sb) = b.get(i) else { return false };
        match (sa, sb) {
            (Seg::Rest, _) => return true,
            (Seg::Param(_), Seg::Lit(_) | Seg::Param(_)) => {}
            (Seg::Lit(x), Seg::Lit(y)) if x == y => {}
            _ => return false,
        }
    }
    a.len() == b.len()
}

impl RouteTable {
    pub fn new(specs: Vec<RouteSpec>, public: Vec<(String, Vec<Method>)>) -> Result<RouteTable, Vec<String>> {
        let mut errs = Vec::new();
        let mut routes = Vec::new();
        for s in specs {
            match compile(&s.pattern) {
                Ok(segs) => {
                    if let Some(ClinicSource::PathParam(p)) = &s.clinic {
                        if !segs.contains(&Seg::Param(p.clone())) {
                            errs.push(format!(
                                "route {:?}: clinic path parameter {{{p}}} is not in the pattern",
                                s.pattern
                            ));
                        }
                    }
                    if s.methods.is_empty() {
                        errs.push(format!("route {:?}: methods is empty", s.pattern));
                    }
                    routes.push(Route { spec: s, segs })
                }
                Err(e) => errs.push(e),
            }
        }
        let mut pub_routes = Vec::new();
        for (pattern, methods) in public {
            match compile(&pattern) {
                Ok(segs) => pub_routes.push(PublicRoute { pattern, segs, methods }),
                Err(e) => errs.push(e),
            }
        }
        if errs.is_empty() {
            Ok(RouteTable { routes, public: pub_routes })
        } else {
            Err(errs)
        }
    }

    /// A public route lets the request through without a key.
    pub fn public_route(&self, method: &Method, path: &str) -> Option<&PublicRoute> {
        self.public.iter().find(|r| r.methods.contains(method) && matches(&r.segs, path, None).is_some())
    }

    /// First route for the path and method (with the clinic from the path, if the route takes
    /// one), and else the first route for the path alone (for a 405).
    #[allow(clippy::type_complexity)]
    fn find<'r, 'p>(
        &'r self,
        method: &Method,
        path: &'p str,
    ) -> (Option<(&'r Route, Option<&'p str>)>, Option<&'r Route>) {
        let mut path_matched: Option<&Route> = None;
        for r in &self.routes {
            let want = match &r.spec.clinic {
                Some(ClinicSource::PathParam(p)) => Some(p.as_str()),
                _ => None,
            };
            if let Some(clinic) = matches(&r.segs, path, want) {
                if r.spec.methods.contains(method) {
                    return (Some((r, clinic)), path_matched);
                }
                path_matched.get_or_insert(r);
            }
        }
        (None, path_matched)
    }

    /// The route a request would be judged by, for labelling a refusal made before routing.
    pub fn route_of(&self, method: &Method, path: &str) -> Option<&Route> {
        let (hit, path_matched) = self.find(method, path);
        hit.map(|(r, _)| r).or(path_matched)
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Routes an earlier route answers first, for some or all of their methods (the first match
    /// wins, so those never apply): one message per such route, naming the earlier one.
    pub fn shadowed(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (j, later) in self.routes.iter().enumerate() {
            let mut taken: Vec<(String, usize)> = Vec::new();
            for m in &later.spec.methods {
                let first =
                    self.routes[..j].iter().position(|r| r.spec.methods.contains(m) && covers(&r.segs, &later.segs));
                if let Some(i) = first {
                    taken.push((m.to_string(), i));
                }
            }
            if taken.is_empty() {
                continue;
            }
            let by: Vec<String> =
                taken.iter().map(|(m, i)| format!("{m} by routes[{i}] ({})", self.routes[*i].spec.pattern)).collect();
            let what = if taken.len() == later.spec.methods.len() { "is unreachable" } else { "is partly unreachable" };
            out.push(format!("routes[{j}] ({}): {what}: answered first for {}", later.spec.pattern, by.join(", ")));
        }
        out
    }

    pub fn public_routes(&self) -> &[PublicRoute] {
        &self.public
    }
}

/// The whole authorisation decision for an authenticated key. Order matters and is the order a
/// user reads the errors in: where you are (IP), what you asked for (route, method), whether
/// the key may (scope), and for which clinic.
pub fn authorise<'r>(table: &'r RouteTable, key: &KeyRecord, req: &RequestFacts<'_>) -> Result<Grant<'r>, Refusal<'r>> {
    let refuse = |denied, route| Refusal { denied, route };
    let ips = key.allowed_ips();
    if !ips.is_empty() && !ips.iter().any(|net| net.contains(&req.client_ip)) {
        return Err(refuse(Denied::IpNotAllowed, None));
    }
    let (hit, path_matched) = table.find(req.method, req.path);
    let (route, path_clinic) = match (hit, path_matched) {
        (Some(h), _) => h,
        (None, Some(r)) => {
            let allow: Vec<&str> = r.spec.methods.iter().map(Method::as_str).collect();
            return Err(refuse(Denied::MethodNotAllowed { allow: allow.join(", ") }, Some(r)));
        }
        (None, None) => return Err(refuse(Denied::RouteNotFound, None)),
    };
    check_scopes(&route.spec.required, req.method, key).map_err(|d| refuse(d, Some(route)))?;
    let allowed = match (&route.spec.clinic, path_clinic) {
        (Some(ClinicSource::PathParam(_)), Some(c)) => key.allows_clinic(c),
        (Some(ClinicSource::QueryParam(name)), _) => query_clinics_allowed(req.query, name, key),
        _ => true,
    };
    let decision = match (allowed, route.spec.foreign_clinic) {
        (true, _) => Decision::Forward,
        (false, ForeignClinic::EmptyResult) => Decision::EmptyResult,
        (false, ForeignClinic::Deny) => return Err(refuse(Denied::ClinicNotAllowed, Some(route))),
    };
    Ok(Grant { route, decision })
}

pub fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

fn check_scopes(required: &Required, method: &Method, key: &KeyRecord) -> Result<(), Denied> {
    let missing = match required {
        Required::Resource { read, write } => {
            let need = if is_read(method) { read } else { write };
            (!key.scopes().grants(need)).then(|| need.clone())
        }
        Required::Scopes(list) => list.iter().find(|s| !key.scopes().grants(s)).cloned(),
    };
    match missing {
        Some(required) => Err(Denied::InsufficientScope { required }),
        None => Ok(()),
    }
}

/// Every value of the parameter (decoded as the upstream will decode it, repeated or
/// comma-separated) must be an allowed clinic; one foreign id taints the request.
fn query_clinics_allowed(query: Option<&str>, name: &str, key: &KeyRecord) -> bool {
    if key.clinics.is_none() {
        return true;
    }
    let Some(q) = query else { return true };
    form_urlencoded::parse(q.as_bytes())
        .filter(|(k, _)| k == name)
        .all(|(_, v)| v.split(',').map(str::trim).filter(|c| !c.is_empty()).all(|c| key.allows_clinic(c)))
}

#[cfg(test)]
mod tests {
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
}
