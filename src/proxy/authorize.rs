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
use crate::policy::{self, Decision, Enforcement, PublicRoute, RequestFacts, RouteMatch};

pub(super) enum Verdict {
    Forward,
    /// The documented empty answer; the upstream never sees the request.
    EmptyResult(Response<Bytes>),
}

/// The route the request is for, looked up once before authentication: every refusal from
/// here on (a blocked address, a revoked key, a store or limiter outage) is counted under it
/// and judged by its enforcement, and `authorize` decides on the same match. Which refusal
/// wins does not change.
pub(super) fn route_for<'s, 'p>(p: &'s Proxy, req: &'p Admitted<'_>, trail: &mut Trail<'s>) -> RouteMatch<'s, 'p> {
    let matched = p.config.routes.lookup(&req.method, &req.path);
    if let Some(route) = matched.route() {
        trail.route = &route.spec.pattern;
        trail.enforcement = Enforcement::resolve(trail.listener, route.spec.enforce);
        trail.clinic_rule = route.spec.clinic.is_some();
    }
    matched
}

/// The routes outside the route table: a public route is counted under its own pattern and
/// judged by the listener's enforcement (only a blocked address can refuse it); the token
/// exchange is always enforced: nothing upstream could answer it, and a key that failed must
/// never get a token.
pub(super) fn special_routes<'s>(public: Option<&'s PublicRoute>, exchange: bool, trail: &mut Trail<'s>) {
    if let Some(public) = public {
        trail.route = &public.pattern;
        (trail.enforcement, trail.clinic_rule) = (trail.listener, false);
    }
    if exchange {
        trail.enforcement = Enforcement::Enforce;
    }
}

/// The verdict for the key; `None` without a key, or when report-only mode passed over the
/// refusal.
pub(super) fn authorize<'s>(
    p: &'s Proxy,
    key: Option<&KeyRecord>,
    req: &Admitted<'_>,
    matched: RouteMatch<'s, '_>,
    query: Option<&str>,
    trail: &mut Trail<'s>,
) -> Result<Option<Verdict>, ApiError> {
    let Some(key) = key else { return Ok(None) };
    let verdict = decide(p, key, req, matched, query, trail);
    trail.excuse(verdict)
}

fn decide<'s>(
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
        // Report-only: forwarded, and the upstream always told (a clinic rule's `tell_upstream`).
        Decision::EmptyResult if trail.enforcement.reports() => {
            trail.would_refuse.get_or_insert("EMPTY_RESULT");
            Verdict::Forward
        }
        Decision::EmptyResult => {
            trail.outcome = "EMPTY_RESULT";
            Verdict::EmptyResult(json_no_store(grant.route.spec.empty_body.clone()))
        }
    })
}
