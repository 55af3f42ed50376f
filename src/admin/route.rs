//! The admin key API's routes: method and path to an operation and the scope it needs. Pure,
//! so the route table is tested (and checked against the OpenAPI document) without sockets.

use http::Method;

use super::access::Need;
use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    List,
    Create,
    Show(String),
    Update(String),
    Rotate(String),
    Revoke(String),
    Events(String),
}

impl Op {
    pub fn need(&self) -> Need {
        match self {
            Op::List | Op::Show(_) | Op::Events(_) => Need::Read,
            Op::Create | Op::Update(_) | Op::Rotate(_) | Op::Revoke(_) => Need::Write,
        }
    }

    /// Its name in `keygate_admin_key_api_requests_total` (one of `metrics::ADMIN_OPERATIONS`).
    pub fn name(&self) -> &'static str {
        match self {
            Op::List => "list",
            Op::Create => "create",
            Op::Show(_) => "show",
            Op::Update(_) => "update",
            Op::Rotate(_) => "rotate",
            Op::Revoke(_) => "revoke",
            Op::Events(_) => "events",
        }
    }

    /// Whether the operation reads a request body.
    pub fn has_body(&self) -> bool {
        self.need() == Need::Write
    }
}

/// Every route as the OpenAPI document writes it, with its methods (the document is checked
/// against this list, and this list against `route`).
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/admin/keys", &["get", "post"]),
    ("/admin/keys/{id}", &["get", "patch"]),
    ("/admin/keys/{id}/rotate", &["post"]),
    ("/admin/keys/{id}/revoke", &["post"]),
    ("/admin/keys/{id}/events", &["get"]),
];

/// The operation at `path` (under `/admin/keys`), or why there is none.
pub fn route(method: &Method, path: &str) -> Result<Op, ApiError> {
    let rest = path.strip_prefix("/admin/keys").ok_or(ApiError::NotFound("admin path"))?;
    let parts: Vec<&str> = rest.split('/').skip(1).collect();
    let id = |s: &str| -> Result<String, ApiError> {
        match !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) {
            true => Ok(s.to_string()),
            false => Err(ApiError::NotFound("key id")),
        }
    };
    let wrong = |allow: &str| ApiError::MethodNotAllowed { allow: allow.into() };
    let get = *method == Method::GET || *method == Method::HEAD;
    match (rest, parts.as_slice()) {
        ("", _) if get => Ok(Op::List),
        ("", _) if *method == Method::POST => Ok(Op::Create),
        ("", _) => Err(wrong("GET, HEAD, POST")),
        (_, [k]) if get => Ok(Op::Show(id(k)?)),
        (_, [k]) if *method == Method::PATCH => Ok(Op::Update(id(k)?)),
        (_, [_]) => Err(wrong("GET, HEAD, PATCH")),
        (_, [k, "rotate"]) if *method == Method::POST => Ok(Op::Rotate(id(k)?)),
        (_, [k, "revoke"]) if *method == Method::POST => Ok(Op::Revoke(id(k)?)),
        (_, [_, "rotate" | "revoke"]) => Err(wrong("POST")),
        (_, [k, "events"]) if get => Ok(Op::Events(id(k)?)),
        (_, [_, "events"]) => Err(wrong("GET, HEAD")),
        _ => Err(ApiError::NotFound("admin path")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_names_its_operation_and_scope() {
        assert_eq!(route(&Method::GET, "/admin/keys"), Ok(Op::List));
        assert_eq!(route(&Method::POST, "/admin/keys"), Ok(Op::Create));
        assert_eq!(route(&Method::GET, "/admin/keys/key_1"), Ok(Op::Show("key_1".into())));
        assert_eq!(route(&Method::PATCH, "/admin/keys/key_1"), Ok(Op::Update("key_1".into())));
        assert_eq!(route(&Method::POST, "/admin/keys/key_1/rotate"), Ok(Op::Rotate("key_1".into())));
        assert_eq!(route(&Method::POST, "/admin/keys/key_1/revoke"), Ok(Op::Revoke("key_1".into())));
        assert_eq!(route(&Method::GET, "/admin/keys/key_1/events"), Ok(Op::Events("key_1".into())));
        assert_eq!(Op::Revoke("k".into()).need(), Need::Write);
        assert_eq!(Op::Events("k".into()).need(), Need::Read);
    }

    #[test]
    fn a_wrong_method_says_which_are_allowed() {
        let e = route(&Method::DELETE, "/admin/keys/key_1").unwrap_err();
        assert_eq!(e, ApiError::MethodNotAllowed { allow: "GET, HEAD, PATCH".into() });
        assert_eq!(route(&Method::GET, "/admin/keys/k/rotate").unwrap_err().code(), "METHOD_NOT_ALLOWED");
    }

    #[test]
    fn odd_paths_are_not_found() {
        for p in ["/admin/keysx", "/admin/keys/", "/admin/keys/a/b/c", "/admin/keys/k%2F/events", "/admin/keys/k/x"] {
            assert_eq!(route(&Method::GET, p).unwrap_err().code(), "NOT_FOUND", "{p}");
        }
    }
}
