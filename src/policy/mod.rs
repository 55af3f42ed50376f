//! Authorisation as a pure function: given a key and the facts of a request, which route it is,
//! whether the key's IPs, scopes and clinics allow it, and what to do about a foreign clinic.
//! No I/O, no clock: everything it needs arrives as arguments.

use std::net::IpAddr;

use http::Method;

use crate::keys::KeyRecord;

mod enforcement;
mod routes;

pub use enforcement::{tell_upstream, Enforcement};
pub use routes::{PublicRoute, Route, RouteMatch, RouteSpec, RouteTable};

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

/// The whole authorisation decision for an authenticated key. Order matters and is the order a
/// user reads the errors in: where you are (IP), what you asked for (route, method), whether
/// the key may (scope), and for which clinic.
pub fn authorise<'r>(table: &'r RouteTable, key: &KeyRecord, req: &RequestFacts<'_>) -> Result<Grant<'r>, Refusal<'r>> {
    authorise_matched(table.lookup(req.method, req.path), key, req)
}

/// `authorise` on a route already looked up (`RouteTable::lookup` for `req`'s method and path).
pub fn authorise_matched<'r>(
    matched: RouteMatch<'r, '_>,
    key: &KeyRecord,
    req: &RequestFacts<'_>,
) -> Result<Grant<'r>, Refusal<'r>> {
    let refuse = |denied, route| Refusal { denied, route };
    let ips = key.allowed_ips();
    if !ips.is_empty() && !ips.iter().any(|net| net.contains(&req.client_ip)) {
        return Err(refuse(Denied::IpNotAllowed, None));
    }
    let (route, path_clinic) = match (matched.hit, matched.path_matched) {
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
mod tests;
