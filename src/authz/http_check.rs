//! The HTTP check endpoints, one path per shape (each front proxy names its own):
//! `/check/envoy/<original target>` for Envoy's HTTP ext_authz (`path_prefix: /check/envoy`),
//! `/check/nginx` for nginx `auth_request`, `/check/forward-auth` for Traefik ForwardAuth, Caddy
//! `forward_auth` and ingress-nginx `auth-url`. Served by keygate's own listener (limits, drain).

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;

use super::check_api::{CheckOutcome, CheckRequest, Shape};
use super::{outcome, request};
use crate::config::{Authz, ClientIpSource};
use crate::error::ApiError;
use crate::proxy::{ConnFacts, Live};
use crate::server::Handler;

pub const ENVOY_PREFIX: &str = "/check/envoy";
pub const NGINX_PATH: &str = "/check/nginx";
pub const FORWARD_AUTH_PATH: &str = "/check/forward-auth";

pub struct HttpCheck {
    pub proxy: Live,
    pub settings: Authz,
}

impl Handler for HttpCheck {
    type Body = Full<Bytes>;

    fn call(&self, req: Request<Incoming>, conn: Arc<ConnFacts>) -> impl Future<Output = Response<Self::Body>> + Send {
        // The body (there is none from a well-configured front proxy) is never read.
        let (parts, _body) = req.into_parts();
        self.answer(parts.method, parts.uri, parts.headers, conn.peer.ip())
    }
}

/// Which shape a check target is for.
pub fn shape_of(path: &str) -> Option<Shape> {
    match path {
        NGINX_PATH => Some(Shape::NginxAuthRequest),
        FORWARD_AUTH_PATH => Some(Shape::ForwardAuth),
        p if p.strip_prefix(ENVOY_PREFIX).is_some_and(|rest| rest.starts_with('/')) => Some(Shape::EnvoyHttp),
        _ => None,
    }
}

impl HttpCheck {
    async fn answer(&self, method: Method, uri: Uri, mut headers: HeaderMap, peer: IpAddr) -> Response<Full<Bytes>> {
        let refuse = |e: ApiError, shape: Option<Shape>, headers: &HeaderMap| {
            let resp = self.proxy.load().refuse_check(&e, shape, &method, headers, peer);
            // A path no shape has is answered as plain HTTP, the forward-auth way.
            outcome::http_answer(CheckOutcome::Deny(resp), shape.unwrap_or(Shape::ForwardAuth)).map(Full::new)
        };
        let Some(shape) = shape_of(uri.path()) else {
            tracing::warn!(path = uri.path(), "check refused: no shape answers at this path");
            return refuse(ApiError::RouteNotFound, None, &headers);
        };
        if let Some(secret) = &self.settings.secret {
            let presented = headers.get(&secret.header).map(|v| v.as_bytes()).unwrap_or_default();
            if !secret.matches(presented) {
                tracing::warn!(shape = shape.as_str(), "check refused: the shared secret was missing or wrong");
                return refuse(ApiError::CheckCallerRefused, Some(shape), &headers);
            }
        }
        request::strip_secret(&mut headers, self.settings.secret.as_ref().map(|s| &s.header));
        let read = match shape {
            Shape::NginxAuthRequest => request::nginx(&mut headers),
            Shape::ForwardAuth => request::forward_auth(&mut headers),
            _ => request::envoy_http(&uri, ENVOY_PREFIX).map(|u| (method.clone(), u)),
        };
        let rule = match shape {
            Shape::NginxAuthRequest => &self.settings.client_ip.nginx,
            Shape::ForwardAuth => &self.settings.client_ip.forward_auth,
            _ => &self.settings.client_ip.envoy_http,
        };
        let client = request::client_ip(rule, &headers, None);
        let (method, uri, client_ip) = match (read, client) {
            (Ok((m, u)), Ok(ip)) => (m, u, ip),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(shape = shape.as_str(), reason = %e.0, "check refused: the front proxy's report is unreadable");
                return refuse(e.into(), Some(shape), &headers);
            }
        };
        if let ClientIpSource::Header { name, .. } = rule {
            // Read by the shape's rule; the engine must not read it again by the inline one.
            headers.remove(name);
        }
        let outcome = self.proxy.check(CheckRequest { method, uri, headers, client_ip, shape }).await;
        outcome::http_answer(outcome, shape).map(Full::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_path_names_its_shape() {
        assert_eq!(shape_of("/check/nginx"), Some(Shape::NginxAuthRequest));
        assert_eq!(shape_of("/check/forward-auth"), Some(Shape::ForwardAuth));
        assert_eq!(shape_of("/check/envoy/v1/a"), Some(Shape::EnvoyHttp));
        for other in ["/check/envoy", "/check/envoyx/a", "/check/nginx/", "/", "/v1/a"] {
            assert_eq!(shape_of(other), None, "{other}");
        }
    }
}
