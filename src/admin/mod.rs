//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process is alive),
//! `/readyz` (a key table is loaded, the store is fresh, the upstream passes its check and the
//! proxy is not shutting down; JSON with the reasons when not), the app's own probes passed
//! through (`admin_probes`), the key API under `/admin/keys` (create, list, show, update,
//! rotate, revoke, events; `access` says who may, `route` what, `keys` does it) and its OpenAPI
//! document at `/admin/openapi.yaml`. Kept off the proxy port so it can be bound to loopback or a
//! pod-internal address.

mod access;
mod keys;
pub mod request;
pub mod route;

pub use crate::config::token_hash;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::proxy::{ConnFacts, Live};
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

/// Who may use `/admin/keys`: the tokens of the config in force (so a reload rotates them),
/// and whether the listener is loopback (see `access::Access::check`).
pub struct AdminApi {
    loopback: bool,
    live: Live,
}

impl AdminApi {
    pub fn new(listen: std::net::SocketAddr, live: Live) -> AdminApi {
        AdminApi { loopback: listen.ip().is_loopback(), live }
    }
}

/// The admin API's contract, served as written (and checked against the server by a test).
pub const OPENAPI: &str = include_str!("../../openapi/admin.yaml");

/// An admin refusal in the standard error body, as the proxy's refusals are.
fn refused(headers: &http::HeaderMap, e: &ApiError) -> Response<Full<Bytes>> {
    let (parts, body) = e.standalone(headers, 128).into_parts();
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
        if req.uri().path().starts_with("/admin/keys") {
            let headers = req.headers().clone();
            let op = route::route(req.method(), req.uri().path());
            let operation = op.as_ref().map_or("none", route::Op::name);
            let answer = match op {
                Ok(op) => self.keys_api(op, req).await,
                Err(e) => Err(e),
            };
            self.metrics.admin_call(operation, answer.as_ref().map_or_else(|e| e.code(), |_| "OK"));
            return answer.unwrap_or_else(|e| refused(&headers, &e));
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return refused(req.headers(), &ApiError::MethodNotAllowed { allow: "GET, HEAD".into() });
        }
        match req.uri().path() {
            "/metrics" => text(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", self.metrics.render()),
            "/healthz" => text(StatusCode::OK, "text/plain", "ok\n"),
            "/readyz" => readyz(&self.health),
            p if self.probes.as_ref().is_some_and(|probes| probes.handles(p)) => {
                let probes = self.probes.as_ref().expect("checked in the guard");
                probes.answer(p).await.map(Full::new)
            }
            "/admin/openapi.yaml" => text(StatusCode::OK, "application/yaml", OPENAPI),
            _ => refused(req.headers(), &ApiError::NotFound("admin path")),
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
    /// `/admin/keys…` once routed: check the caller's token and scope, read a bounded body, answer.
    async fn keys_api(&self, op: route::Op, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, ApiError> {
        let config = Arc::clone(&self.api.live.load().config);
        let tokens = access::Access {
            loopback: self.api.loopback,
            legacy: config.admin_token.as_ref(),
            tokens: &config.admin_tokens,
        };
        let caller = tokens.check(req.headers(), op.need())?;
        if let route::Op::Show(id) = &op {
            return self.key(id).await;
        }
        let query = req.uri().query().map(str::to_string);
        let body = if op.has_body() { read_body(req.into_body()).await? } else { Bytes::new() };
        let (status, v) = keys::answer(config, op, caller, body, query).await?;
        Ok(json(status, &v))
    }

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

/// The whole body, up to `request::MAX_BODY`, within a deadline (a slow client cannot hold a
/// writer waiting).
async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, request::MAX_BODY);
    match tokio::time::timeout(std::time::Duration::from_secs(10), limited.collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge { limit: request::MAX_BODY as u64 })
        }
        Ok(Err(_)) | Err(_) => Err(request::invalid("body", "could not be read")),
    }
}
