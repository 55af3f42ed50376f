//! The engine's entry point as the authz shapes see it. Until `proxy::check` lands on main these
//! are its agreed types, held here so the mappings can be built and tested against them; at the
//! merge this file becomes a re-export of `crate::proxy::check`.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, Response, Uri};
use std::net::IpAddr;

/// What a front proxy reports about the request it is holding.
#[derive(Debug)]
pub struct CheckRequest {
    pub method: Method,
    /// Path and query as the front proxy reports them (origin form).
    pub uri: Uri,
    /// The client's headers (Authorization included).
    pub headers: HeaderMap,
    /// Already resolved by the shape's own trust rules.
    pub client_ip: IpAddr,
    pub shape: Shape,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Inline,
    EnvoyGrpc,
    EnvoyHttp,
    NginxAuthRequest,
    ForwardAuth,
}

impl Shape {
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::Inline => "inline",
            Shape::EnvoyGrpc => "envoy_grpc",
            Shape::EnvoyHttp => "envoy_http",
            Shape::NginxAuthRequest => "nginx_auth_request",
            Shape::ForwardAuth => "forward_auth",
        }
    }
}

#[derive(Debug)]
pub enum CheckOutcome {
    /// Forward: set `set` on the upstream request (overwrite), remove `remove`, and add
    /// `response` headers to the client response.
    Allow { set: HeaderMap, remove: Vec<HeaderName>, response: HeaderMap },
    /// Answer the client with this (the standard JSON error body, or the clinic "empty result"
    /// with status 200).
    Deny(Response<Bytes>),
}
