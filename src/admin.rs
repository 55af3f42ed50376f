//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process is alive),
//! `/readyz` (a key table is loaded, the store is fresh, the upstream passes its check and the
//! proxy is not shutting down; JSON with the reasons when not), the app's own probes passed
//! through (`admin_probes`), and the read-only operator API `GET /admin/keys/{id}`. Kept off the proxy port so it can be bound to loopback
//! or a pod-internal address; the operator API needs a token unless bound to loopback.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::config::AdminToken;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::proxy::ConnFacts;
use crate::readiness::{ProbePassThrough, UpstreamReadiness};
use crate::server::Handler;
use crate::store::freshness::Freshness;
use crate::store::source::{Found, KeySource};
use crate::usage::UsageBook;

#[derive(Debug, Default)]
pub struct Health {
    pub table_loaded: AtomicBool,
    pub shutting_down: AtomicBool,
    /// With the PostgreSQL store: not ready while the table is too old to serve from.
    pub freshness: Option<Arc<Freshness>>,
    /// With `upstream.readiness`: not ready while the upstream fails its check.
    pub upstream: Option<Arc<UpstreamReadiness>>,
}

impl Health {
    pub fn ready(&self) -> bool {
        self.not_ready_because().is_empty()
    }

    /// Every reason keygate should not get traffic now; empty when ready.
    pub fn not_ready_because(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.shutting_down.load(Ordering::Acquire) {
            reasons.push("shutting down".to_string());
        }
        if !self.table_loaded.load(Ordering::Acquire) {
            reasons.push("key table not loaded".to_string());
        } else if !self.fresh() {
            reasons.push("key store stale".to_string());
        }
        if let Some(why) = self.upstream.as_ref().and_then(|u| u.failing()) {
            reasons.push(format!("upstream not ready: {why}"));
        }
        reasons
    }

    fn fresh(&self) -> bool {
        self.freshness.as_ref().is_none_or(|f| f.may_serve(f.now()))
    }
}

pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub keys: KeySource,
    pub usage: Arc<UsageBook>,
    pub api: AdminApi,
    /// The app's probes answered by the upstream, when `admin_probes` forwards any.
    pub probes: Option<ProbePassThrough>,
}

/// Who may use `/admin/*`: anyone who can reach a loopback listener, a token holder
/// otherwise; with neither, the API is off.
pub struct AdminApi {
    loopback: bool,
    token: Option<AdminToken>,
}

impl AdminApi {
    pub fn new(listen: std::net::SocketAddr, token: Option<AdminToken>) -> AdminApi {
        AdminApi { loopback: listen.ip().is_loopback(), token }
    }

    /// Why this request may not use the API, if it may not. The token is read with the proxy's
    /// own bearer parser (scheme case-insensitive, one header) and compared in constant time.
    fn refusal(&self, headers: &http::HeaderMap) -> Option<ApiError> {
        match &self.token {
            Some(token) => match crate::authn::bearer_token(headers) {
                Ok(presented) if token.matches(presented.expose()) => None,
                _ => Some(ApiError::AdminTokenRequired),
            },
            None if self.loopback => None,
            None => Some(ApiError::AdminApiOff),
        }
    }
}

/// An admin refusal in the standard error body, as the proxy's refusals are.
fn refused(req: &Request<Incoming>, e: &ApiError) -> Response<Full<Bytes>> {
    let (parts, body) = e.standalone(req.headers(), 128).into_parts();
    Response::from_parts(parts, Full::new(body))
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    text(status, "application/json", serde_json::to_vec(v).unwrap_or_default())
}

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

impl Handler for Admin {
    type Body = Full<Bytes>;

    async fn call(&self, req: Request<Incoming>, _conn: std::sync::Arc<ConnFacts>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return refused(&req, &ApiError::MethodNotAllowed { allow: "GET, HEAD".into() });
        }
        match req.uri().path() {
            "/metrics" => text(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", self.metrics.render()),
            "/healthz" => text(StatusCode::OK, "text/plain", "ok\n"),
            "/readyz" => readyz(&self.health),
            p if self.probes.as_ref().is_some_and(|probes| probes.handles(p)) => {
                let probes = self.probes.as_ref().expect("checked in the guard");
                probes.answer(p).await.map(Full::new)
            }
            p if p.starts_with("/admin/keys/") => {
                let answer = match self.api.refusal(req.headers()) {
                    None => self.key(&p["/admin/keys/".len()..]).await,
                    Some(e) => Err(e),
                };
                answer.unwrap_or_else(|e| refused(&req, &e))
            }
            _ => refused(&req, &ApiError::NotFound("admin path")),
        }
    }
}

/// `{"ready": true}`, or 503 with every reason it is not.
fn readyz(health: &Health) -> Response<Full<Bytes>> {
    let reasons = health.not_ready_because();
    match reasons.is_empty() {
        true => json(StatusCode::OK, &serde_json::json!({"ready": true})),
        false => json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({"ready": false, "reasons": reasons})),
    }
}

fn rfc3339(t: Option<time::OffsetDateTime>) -> serde_json::Value {
    t.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()).into()
}

impl Admin {
    /// Metadata as the proxy sees it (no hash), its state now, and its usage since start.
    async fn key(&self, id: &str) -> Result<Response<Full<Bytes>>, ApiError> {
        let view = self.keys.view();
        let found = match view.by_id(id).await {
            Ok(Some(f)) => f,
            Ok(None) => return Err(ApiError::NotFound("key id")),
            Err(_) => return Err(ApiError::KeyStoreUnavailable),
        };
        let k = Found::record(&found);
        let scopes: Vec<&str> = k.scopes().iter().map(|s| s.as_str()).collect();
        let ips: Vec<String> = k.allowed_ips().iter().map(|n| n.to_string()).collect();
        let t = k.times();
        let body = serde_json::json!({
            "id": &*k.id,
            "environment": k.environment().as_str(),
            "state": k.state_at(time::OffsetDateTime::now_utc()).as_str(),
            "scopes": scopes,
            "clinics": k.clinic_list(),
            "allowed_ips": ips,
            "rate_limit": k.rate_limit_tier(),
            "created_at": rfc3339(t.created_at),
            "expires_at": rfc3339(t.expires_at),
            "not_before": rfc3339(t.not_before),
            "revoked_at": rfc3339(t.revoked_at),
            "usage": self.usage.view(id),
        });
        Ok(json(StatusCode::OK, &body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(listen: &str, token: Option<&str>) -> AdminApi {
        AdminApi::new(listen.parse().unwrap(), token.map(|t| AdminToken::new(t.into())))
    }

    fn bearer(v: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn loopback_without_a_token_is_open() {
        assert_eq!(api("127.0.0.1:9091", None).refusal(&http::HeaderMap::new()), None);
    }

    #[test]
    fn elsewhere_without_a_token_the_api_is_off() {
        assert_eq!(api("0.0.0.0:9091", None).refusal(&bearer("Bearer x")), Some(ApiError::AdminApiOff));
    }

    #[test]
    fn with_a_token_only_that_token_opens_it_wherever_it_listens() {
        let a = api("127.0.0.1:9091", Some("t0ken"));
        assert_eq!(a.refusal(&http::HeaderMap::new()), Some(ApiError::AdminTokenRequired));
        assert_eq!(a.refusal(&bearer("Bearer t0ke")), Some(ApiError::AdminTokenRequired));
        assert_eq!(a.refusal(&bearer("Basic t0ken")), Some(ApiError::AdminTokenRequired));
        assert_eq!(a.refusal(&bearer("Bearer t0ken")), None);
        assert_eq!(a.refusal(&bearer("BEARER t0ken")), None);
    }
}
