//! The shipped route table for the clinic API, used when the config lists no `routes`.

use bytes::Bytes;
use http::Method;

use crate::policy::{ClinicSource, ForeignClinic, Required, RouteSpec};

pub const EMPTY_BODY: &str = r#"{"success":true,"data":[]}"#;

pub const ALL_METHODS: [Method; 6] =
    [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];

fn spec(pattern: &str, resource: &str, clinic: Option<ClinicSource>) -> RouteSpec {
    RouteSpec {
        pattern: pattern.to_string(),
        methods: ALL_METHODS.to_vec(),
        required: Required::Resource { read: format!("{resource}:read"), write: format!("{resource}:write") },
        clinic,
        foreign_clinic: ForeignClinic::EmptyResult,
        empty_body: Bytes::from_static(EMPTY_BODY.as_bytes()),
        enforce: None,
        cost: 1,
    }
}

pub fn clinic_api_routes() -> Vec<RouteSpec> {
    let path = || Some(ClinicSource::PathParam("clinic_id".into()));
    let query = || Some(ClinicSource::QueryParam("clinic_id".into()));
    let mut routes =
        vec![spec("/api/v1/clinics", "clinics", None), spec("/api/v1/clinics/{clinic_id}", "clinics", path())];
    // Each collection and everything below it, under the same scope and clinic rule.
    for (pattern, resource, clinic) in [
        ("/api/v1/clinics/{clinic_id}/interactions", "interactions", path()),
        ("/api/v1/clinics/{clinic_id}/metrics", "metrics", path()),
        ("/api/v1/clinics/{clinic_id}/campaigns", "campaigns", path()),
        ("/api/v1/interactions", "interactions", query()),
        ("/api/v1/metrics", "metrics", query()),
        ("/api/v1/campaigns", "campaigns", query()),
    ] {
        routes.push(spec(pattern, resource, clinic.clone()));
        routes.push(spec(&format!("{pattern}/{{*rest}}"), resource, clinic));
    }
    routes
}
