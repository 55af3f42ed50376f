//! Step 4, authorize: the key's IP list, the route, its scope and its clinic rule, decided by
//! `policy`. Either the request goes upstream, or it is answered here: a refusal, or the
//! route's "empty result" for a clinic the key may not see.

use bytes::Bytes;
use http::Response;

use super::admit::Admitted;
use super::finish::Trail;
use super::Proxy;
use crate::error::{json_no_store, ApiError};
use crate::keys::KeyRecord;
use crate::policy::{self, Decision, RequestFacts, RouteMatch};

pub(super) enum Verdict {
    Forward,
    /// The documented empty answer; the upstream never sees the request.
    EmptyResult(Response<Bytes>),
}

/// The route the request is for, looked up once before authentication: every refusal from
/// here on (a revoked key, a store or limiter outage) is counted under it, and `authorize`
/// decides on the same match. Which refusal wins does not change.
pub(super) fn route_for<'s, 'p>(p: &'s Proxy, req: &'p Admitted<'_>, trail: &mut Trail<'s>) -> RouteMatch<'s, 'p> {
    let matched = p.config.routes.lookup(&req.method, &req.path);
    if let Some(route) = matched.route() {
        trail.route = &route.spec.pattern;
    }
    matched
}

pub(super) fn authorize<'s>(
    p: &'s Proxy,
    key: &KeyRecord,
    req: &Admitted<'_>,
    matched: RouteMatch<'s, '_>,
    query: Option<&str>,
    trail: &mut Trail<'s>,
) -> Result<Verdict, ApiError> {
    let facts = RequestFacts { method: &req.method, path: &req.path, query, client_ip: trail.client_ip };
    let grant = match policy::authorise_matched(matched, key, &facts) {
        Ok(grant) => grant,
        Err(r) => {
            if let Some(route) = r.route {
                trail.route = &route.spec.pattern;
            }
            p.anomalies.refused(&key.id, &r.denied, trail.clock, trail.rid());
            return Err(r.denied.into());
        }
    };
    trail.route = &grant.route.spec.pattern;
    Ok(match grant.decision {
        Decision::Forward => Verdict::Forward,
        Decision::EmptyResult => {
            trail.outcome = "EMPTY_RESULT";
            Verdict::EmptyResult(json_no_store(grant.route.spec.empty_body.clone()))
        }
    })
}
