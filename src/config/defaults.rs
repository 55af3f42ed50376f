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
    vec![
        spec("/api/v1/clinics", "clinics", None),
        spec("/api/v1/clinics/{clinic_id}", "clinics", path()),
        spec("/api/v1/clinics/{clinic_id}/interactions", "interactions", path()),
        spec("/api/v1/clinics/{clinic_id}/interactions/{*rest}", "interactions", path()),
        spec("/api/v1/clinics/{clinic_id}/metrics", "metrics", path()),
        spec("/api/v1/clinics/{clinic_id}/metrics/{*rest}", "metrics", path()),
        spec("/api/v1/clinics/{clinic_id}/campaigns", "campaigns", path()),
        spec("/api/v1/clinics/{clinic_id}/campaigns/{*rest}", "campaigns", path()),
        spec("/api/v1/interactions", "interactions", query()),
        spec("/api/v1/interactions/{*rest}", "interactions", query()),
        spec("/api/v1/metrics", "metrics", query()),
        spec("/api/v1/metrics/{*rest}", "metrics", query()),
        spec("/api/v1/campaigns", "campaigns", query()),
        spec("/api/v1/campaigns/{*rest}", "campaigns", query()),
    ]
}
