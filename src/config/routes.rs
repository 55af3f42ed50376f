//! One configured route: what it requires, where its clinic comes from, what a foreign clinic
//! gets.

use bytes::Bytes;
use http::Method;

use super::{defaults, raw, Check};
use crate::policy::{ClinicSource, Enforcement, ForeignClinic, Required, RouteSpec, RouteTable};

pub(super) fn route(c: &mut Check, i: usize, r: &raw::RawRoute) -> Option<RouteSpec> {
    let at = format!("routes[{i}] ({})", r.path);
    let methods = c.methods(&format!("{at}.methods"), &r.methods, &defaults::ALL_METHODS);
    let required = match (&r.resource, &r.scopes) {
        (Some(res), None) => Required::Resource { read: format!("{res}:read"), write: format!("{res}:write") },
        (None, Some(list)) if !list.is_empty() => {
            for s in list {
                c.val(&format!("{at}.scopes"), crate::keys::Scope::parse(s));
            }
            Required::Scopes(list.clone())
        }
        _ => {
            c.0.push(format!("{at}: give exactly one of `resource` (e.g. interactions) or a non-empty `scopes` list"));
            return None;
        }
    };
    if let Some(res) = &r.resource {
        c.val(&format!("{at}.resource"), crate::keys::Scope::parse(&format!("{res}:read")));
    }
    let foreign_clinic = match r.on_foreign_clinic {
        None | Some(raw::OnForeignClinic::Empty) => ForeignClinic::EmptyResult,
        Some(raw::OnForeignClinic::Deny) => ForeignClinic::Deny,
    };
    let empty_body = r.empty_body.clone().unwrap_or_else(|| defaults::EMPTY_BODY.to_string());
    if serde_json::from_str::<serde_json::Value>(&empty_body).is_err() {
        c.0.push(format!("{at}.empty_body: must be valid JSON"));
    }
    let cost = r.cost.unwrap_or(1);
    if cost > crate::keys::credits::MAX_AMOUNT {
        c.0.push(format!("{at}.cost: must be at most 2^50"));
    }
    let clinic = match r.clinic.as_ref().map(|cl| (&cl.path_param, &cl.query_param)) {
        None => None,
        Some((Some(p), None)) => Some(ClinicSource::PathParam(p.clone())),
        Some((None, Some(q))) => Some(ClinicSource::QueryParam(q.clone())),
        Some(_) => {
            c.0.push(format!("{at}.clinic: give exactly one of path_param or query_param"));
            None
        }
    };
    Some(RouteSpec {
        pattern: r.path.clone(),
        methods,
        required,
        clinic,
        foreign_clinic,
        empty_body: Bytes::from(empty_body),
        enforce: r.enforce.map(Enforcement::from_flag),
        cost,
    })
}

/// The route table: configured routes (else the shipped ones) and public routes, with every
/// route an earlier one shadows refused.
pub(super) fn table(c: &mut Check, routes: &Option<Vec<raw::RawRoute>>, public: &[raw::RawPublicRoute]) -> RouteTable {
    let specs = match routes {
        Some(list) => list.iter().enumerate().filter_map(|(i, r)| route(c, i, r)).collect(),
        None => defaults::clinic_api_routes(),
    };
    let public: Vec<(String, Vec<Method>)> = public
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let m = c.methods(&format!("public_routes[{i}].methods"), &p.methods, &[Method::GET, Method::HEAD]);
            (p.path.clone(), m)
        })
        .collect();
    match RouteTable::new(specs, public) {
        Ok(t) => {
            // The first match wins: a route behind a broader one would silently never apply.
            c.0.extend(t.shadowed());
            t
        }
        Err(errs) => {
            c.0.extend(errs.into_iter().map(|e| format!("routes: {e}")));
            RouteTable::default()
        }
    }
}
