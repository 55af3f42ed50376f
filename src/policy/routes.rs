//! The route table: patterns compiled once at config time, matched per request (first match
//! wins), and checked for routes an earlier one shadows. Which route a request is; whether it
//! may use it is `authorise`'s job.

use bytes::Bytes;
use http::Method;

use super::{ClinicSource, ForeignClinic, Required};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    Lit(String),
    Param(String),
    /// `{*name}` as the last segment: the rest of the path, at least one segment.
    Rest,
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
    /// `enforce:` on the route; `None` follows the listener's.
    pub enforce: Option<super::Enforcement>,
    /// What a forwarded request spends of its key's credits and calendar quotas.
    pub cost: u64,
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

pub(super) fn compile(pattern: &str) -> Result<Vec<Seg>, String> {
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
pub(super) fn matches<'p>(segs: &[Seg], path: &'p str, want: Option<&str>) -> Option<Option<&'p str>> {
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
pub(super) fn covers(a: &[Seg], b: &[Seg]) -> bool {
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

/// A request's route: the one for its method and path (with the clinic from the path), and the
/// first for its path alone (which makes a wrong method a 405 rather than a 404).
#[derive(Debug, Clone, Copy)]
pub struct RouteMatch<'r, 'p> {
    pub(super) hit: Option<(&'r Route, Option<&'p str>)>,
    pub(super) path_matched: Option<&'r Route>,
}

impl<'r> RouteMatch<'r, '_> {
    /// The route the request is for, if any: its label in metrics and logs.
    pub fn route(&self) -> Option<&'r Route> {
        self.hit.map(|(r, _)| r).or(self.path_matched)
    }

    /// What the request spends of its key's credits and quotas if forwarded: its route's cost,
    /// 1 where no route matched (a request forwarded in report-only mode).
    pub fn cost(&self) -> u64 {
        self.route().map_or(1, |r| r.spec.cost)
    }
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
    /// one), and else the first route for the path alone (for a 405). Looked up once a request:
    /// its label for any refusal, then the match `authorise` decides on.
    pub fn lookup<'r, 'p>(&'r self, method: &Method, path: &'p str) -> RouteMatch<'r, 'p> {
        let mut path_matched: Option<&Route> = None;
        for r in &self.routes {
            let want = match &r.spec.clinic {
                Some(ClinicSource::PathParam(p)) => Some(p.as_str()),
                _ => None,
            };
            if let Some(clinic) = matches(&r.segs, path, want) {
                if r.spec.methods.contains(method) {
                    return RouteMatch { hit: Some((r, clinic)), path_matched };
                }
                path_matched.get_or_insert(r);
            }
        }
        RouteMatch { hit: None, path_matched }
    }

    /// The route a request would be judged by, for labelling a refusal made before routing.
    pub fn route_of(&self, method: &Method, path: &str) -> Option<&Route> {
        self.lookup(method, path).route()
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
