//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process is alive) and
//! `/readyz` (a key table is loaded and the proxy is not shutting down). Kept off the proxy
//! port so it can be bound to loopback or a pod-internal address.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::metrics::Metrics;
use crate::pipeline::ConnFacts;
use crate::server::Handler;

#[derive(Debug, Default)]
pub struct Health {
    pub table_loaded: AtomicBool,
    pub shutting_down: AtomicBool,
}

impl Health {
    pub fn ready(&self) -> bool {
        self.table_loaded.load(Ordering::Acquire) && !self.shutting_down.load(Ordering::Acquire)
    }
}

pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
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

    async fn call(&self, req: Request<Incoming>, _conn: ConnFacts) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "method not allowed\n");
        }
        match req.uri().path() {
            "/metrics" => text(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", self.metrics.render()),
            "/healthz" => text(StatusCode::OK, "text/plain", "ok\n"),
            "/readyz" if self.health.ready() => text(StatusCode::OK, "text/plain", "ready\n"),
            "/readyz" if self.health.shutting_down.load(Ordering::Acquire) => {
                text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "shutting down\n")
            }
            "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "key table not loaded\n"),
            _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        }
    }
}
