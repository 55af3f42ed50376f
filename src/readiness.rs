//! The upstream's side of readiness: a background check (`upstream.readiness`) whose last
//! result `/readyz` reports, so a pod whose app is down is taken out of rotation instead of
//! answering 502s; and the app's own probes passed through the admin listener
//! (`admin_probes`), for an app that listens on loopback where the kubelet cannot reach it.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use tokio::task::JoinHandle;

use crate::config::{AdminProbes, Readiness, ReadinessCheck};
use crate::forward::Forwarder;
use crate::metrics::Metrics;

/// The last verdict of the upstream check: `None` while it passes.
#[derive(Debug)]
pub struct UpstreamReadiness {
    failing: Mutex<Option<String>>,
    checked: std::sync::atomic::AtomicBool,
}

impl Default for UpstreamReadiness {
    /// Not ready until the first check has passed.
    fn default() -> Self {
        UpstreamReadiness { failing: Mutex::new(Some("not checked yet".into())), checked: Default::default() }
    }
}

impl UpstreamReadiness {
    /// Why the upstream is not ready, or `None` when it is.
    pub fn failing(&self) -> Option<String> {
        self.failing.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records a result; the first and every change are logged (not every interval).
    fn record(&self, result: Result<(), String>) {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        let first = !self.checked.swap(true, std::sync::atomic::Ordering::Relaxed);
        match (failing.is_some(), &result) {
            (true, Ok(())) => tracing::info!("upstream ready: readiness check passed"),
            (was_failing, Err(reason)) if first || !was_failing => {
                tracing::warn!(%reason, "upstream not ready: /readyz answers 503 until its check passes")
            }
            _ => {}
        }
        *failing = result.err();
    }
}

/// Runs the check every `interval` until aborted, the first one at once.
pub fn spawn_check(
    forwarder: Forwarder,
    settings: Readiness,
    state: Arc<UpstreamReadiness>,
    metrics: Arc<Metrics>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let result = check_once(&forwarder, &settings).await;
            metrics.upstream_ready(result.is_ok());
            state.record(result);
        }
    })
}

async fn check_once(forwarder: &Forwarder, settings: &Readiness) -> Result<(), String> {
    match &settings.check {
        ReadinessCheck::Connect => forwarder.probe_connect(settings.timeout).await,
        ReadinessCheck::Http { path } => {
            let answer = forwarder.probe_get(path, settings.timeout).await?;
            let s = answer.status;
            match s.is_success() || s.is_redirection() {
                true => Ok(()),
                false => Err(format!("GET {path} answered {}", s.as_u16())),
            }
        }
    }
}

/// The admin listener's forwarded probe paths.
pub struct ProbePassThrough {
    pub forwarder: Forwarder,
    pub probes: AdminProbes,
}

impl ProbePassThrough {
    pub fn handles(&self, path: &str) -> bool {
        self.probes.target(path).is_some()
    }

    /// The upstream's answer to the probe for `path` (its status, type and body), or 503 with
    /// the reason it could not be asked.
    pub async fn answer(&self, path: &str) -> Response<Bytes> {
        let Some(target) = self.probes.target(path) else {
            return plain(StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n"));
        };
        match self.forwarder.probe_get(target, self.probes.timeout).await {
            Ok(answer) => {
                let mut r = plain(answer.status, answer.body);
                if let Some(ct) = answer.headers.get(header::CONTENT_TYPE) {
                    r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
                }
                r
            }
            Err(reason) => {
                tracing::debug!(probe = path, %reason, "probe pass-through failed");
                plain(StatusCode::SERVICE_UNAVAILABLE, Bytes::from(format!("upstream probe failed: {reason}\n")))
            }
        }
    }
}

fn plain(status: StatusCode, body: Bytes) -> Response<Bytes> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
