//! The same steps answered to a front proxy that holds the request (Envoy ext_authz, nginx
//! `auth_request`, Traefik/Caddy forward auth): admit, authenticate, limit, authorize, then
//! finish, but instead of forwarding, the answer says which headers to set and remove. Every
//! decision, metric and audit line is the inline proxy's; in report-only mode a passed-over
//! refusal is an allow, with the identity headers only for a key that authenticated.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{Extensions, HeaderMap, Method, Response, Uri};

use super::finish::{self, Trail};
use super::{admit, authenticate, authorize, credits, limit, upstream, Proxy};
use crate::error::ApiError;
use crate::policy::Enforcement;
use crate::request_id;
use crate::textfmt::IpText;

/// What a front proxy reports about the request it is holding.
pub struct CheckRequest {
    pub method: Method,
    /// Path and query as the front proxy will forward them (origin form).
    pub uri: Uri,
    /// The client's headers (`Authorization` included).
    pub headers: HeaderMap,
    /// Already resolved by the shape's own trust rules.
    pub client_ip: IpAddr,
    pub shape: Shape,
}

/// Which deployment shape answered (for metrics and the audit line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Inline,
    EnvoyGrpc,
    EnvoyHttp,
    NginxAuthRequest,
    ForwardAuth,
}

/// The `shape` label and audit field of a check to a path no shape has.
pub const NO_SHAPE: &str = "none";

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

pub enum CheckOutcome {
    /// Forward: set `set` on the upstream request (overwriting), remove `remove` (the client's
    /// copies of keygate's headers, `Authorization` unless configured), and add `response` to
    /// the client's answer (the request id, RateLimit headers).
    Allow { set: HeaderMap, remove: Vec<HeaderName>, response: HeaderMap },
    /// Answer the client with this: the standard JSON refusal, or a clinic's "empty result"
    /// (status 200).
    Deny(Response<Bytes>),
}

enum Checked {
    Allow { set: HeaderMap, remove: Vec<HeaderName> },
    Answer(Response<Bytes>),
}

impl Proxy {
    pub async fn check(&self, mut req: CheckRequest) -> CheckOutcome {
        let _in_flight = self.metrics.in_flight();
        let client = (req.client_ip, IpText::new(req.client_ip));
        let mut trail = Trail::start(self, &req.headers, &req.method, client);
        trail.shape = req.shape.as_str();
        trail.listener = Enforcement::resolve(self.config.enforce, self.config.authz_enforce);
        trail.enforcement = trail.listener;
        let checked = match self.decide(&mut req, &mut trail).await {
            Ok(c) => c,
            Err(e) => Checked::Answer(finish::refusal(&e, &mut trail)),
        };
        let mut response = HeaderMap::new();
        finish::answer_headers(self, &trail, &mut response);
        match checked {
            Checked::Allow { mut set, remove } => {
                set.insert(request_id::HEADER.clone(), trail.rid.clone());
                finish::record(self, &trail, http::StatusCode::OK);
                CheckOutcome::Allow { set, remove, response }
            }
            Checked::Answer(mut resp) => {
                resp.headers_mut().extend(response);
                finish::record(self, &trail, resp.status());
                CheckOutcome::Deny(resp)
            }
        }
    }

    /// A check refused before the engine saw it: not from our front proxy (the shared secret),
    /// a path no shape has, or a report that cannot be read. Counted and audited like any
    /// decision, under the shape that asked; the client is the front proxy (`peer`), since the
    /// client's own address was not read. The caller says it in the shape's protocol.
    pub fn refuse_check(
        &self,
        e: &ApiError,
        shape: Option<Shape>,
        method: &Method,
        headers: &HeaderMap,
        peer: IpAddr,
    ) -> Response<Bytes> {
        let mut trail = Trail::start(self, headers, method, (peer, IpText::new(peer)));
        trail.shape = shape.map_or(NO_SHAPE, Shape::as_str);
        let mut resp = finish::refusal(e, &mut trail);
        finish::answer_headers(self, &trail, resp.headers_mut());
        finish::record(self, &trail, resp.status());
        resp
    }

    async fn decide<'s>(&'s self, req: &mut CheckRequest, trail: &mut Trail<'s>) -> Result<Checked, ApiError> {
        let before: Vec<HeaderName> = req.headers.keys().cloned().collect();
        // The front proxy's forwarding headers are its own business: trusted like a peer's.
        let admitted = admit::admit(self, &req.uri, &req.method, &mut req.headers, &Extensions::new(), true)?;
        // keygate cannot rewrite what the front proxy forwards, so the path it authorises must
        // already be the one the upstream will see.
        if admitted.path != req.uri.path() {
            return Err(ApiError::InvalidRequest(
                "path is not in normal form (dot segments, repeated slashes or encoded unreserved characters)".into(),
            ));
        }
        let mut remove: Vec<HeaderName> = before.into_iter().filter(|n| !req.headers.contains_key(n)).collect();
        if !self.config.forward_authorization {
            remove.push(header::AUTHORIZATION);
        }
        let route = authorize::route_for(self, &admitted, trail);
        let public = self.config.routes.public_route(&admitted.method, &admitted.path);
        authorize::special_routes(public, false, trail);
        let blocked = self.anomalies.blocked(trail.client_ip, trail.clock);
        trail.excuse(blocked)?;
        let mut set = HeaderMap::new();
        if public.is_some() {
            trail.outcome = "PUBLIC";
            upstream::would_refuse(&mut set, trail);
            return Ok(Checked::Allow { set, remove });
        }
        // As the inline proxy's `run`: in report-only mode a passed-over refusal leaves no key.
        let view = authenticate::view(self, trail)?;
        let who = authenticate::authenticate(self, view.as_ref(), &req.headers, trail).await?;
        let key = who.as_ref().map(authenticate::Authenticated::key);
        limit::charge_excused(self, key, trail).await?;
        let cost = route.cost();
        if let Some(authorize::Verdict::EmptyResult(resp)) =
            authorize::authorize(self, key, &admitted, route, req.uri.query(), trail)?
        {
            return Ok(Checked::Answer(resp));
        }
        credits::spend_excused(self, key, cost, trail).await?;
        if let Some(key) = key {
            upstream::identity(&mut set, key);
        }
        upstream::would_refuse(&mut set, trail);
        Ok(Checked::Allow { set, remove })
    }
}
