//! The order of a shutdown: readiness off at once; then, for `shutdown_delay`, keep serving
//! (load balancers and Kubernetes endpoints take seconds to stop sending) while HTTP/1.1
//! answers say `Connection: close` and HTTP/2 connections get GOAWAY, so clients move to other
//! instances; then stop accepting and drain within `drain_timeout`. A second signal skips
//! what is left of the delay.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::admin::Health;

/// Starts the stages of a shutdown; shared by `Running` and the signal handler.
#[derive(Clone)]
pub struct StopHandle {
    health: Arc<Health>,
    wind_down: Arc<watch::Sender<bool>>,
    drain: Arc<watch::Sender<bool>>,
}

/// What the listeners wait on.
pub(super) struct Stages {
    /// Set when the shutdown begins (readiness off, connections told to close).
    pub wind_down: watch::Receiver<bool>,
    /// Set when the listeners stop accepting and drain.
    pub drain: watch::Receiver<bool>,
}

impl StopHandle {
    pub(super) fn new(health: Arc<Health>) -> (StopHandle, Stages) {
        let (wind_tx, wind_rx) = watch::channel(false);
        let (drain_tx, drain_rx) = watch::channel(false);
        let handle = StopHandle { health, wind_down: Arc::new(wind_tx), drain: Arc::new(drain_tx) };
        (handle, Stages { wind_down: wind_rx, drain: drain_rx })
    }

    /// Turns `/readyz` to 503 and starts the shutdown delay (then the drain).
    pub fn shutdown(&self) {
        self.health.shutting_down.store(true, Ordering::Release);
        self.wind_down.send_replace(true);
    }

    /// Skips what is left of the shutdown delay: stop accepting and drain now.
    pub fn drain_now(&self) {
        self.shutdown();
        self.drain.send_replace(true);
    }
}

/// Resolves once `rx` has been set (or its sender is gone).
pub(super) async fn until_set(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|set| *set).await;
}

/// The proxy listener's stop: the shutdown begins, then the delay passes (or is skipped).
pub(super) async fn after_delay(stages: &Stages, delay: Duration) {
    until_set(stages.wind_down.clone()).await;
    if !delay.is_zero() && !*stages.drain.borrow() {
        tracing::info!(delay = %humantime::format_duration(delay), "shutting down: not ready, serving until the delay ends");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = until_set(stages.drain.clone()) => tracing::info!("shutdown delay cut short"),
        }
    }
    tracing::info!("draining: listeners closed, open requests finishing");
}
