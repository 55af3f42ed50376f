//! Requests, the upstream, connections and the build: the proxy's own traffic.

use std::sync::Arc;

use dashmap::DashMap;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::{counters, gauges, register, Metrics};

/// Label for requests that matched no configured route.
pub const NO_ROUTE: &str = "none";

const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

pub(super) struct RequestMetrics {
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    upstream_errors: IntCounterVec,
    connections: IntGauge,
    refused: IntCounterVec,
    in_flight: IntGauge,
    /// Registered on the first readiness check: absent when no check is configured.
    upstream_ready: std::sync::OnceLock<IntGauge>,
    /// Route labels come from the config (a fixed set): the fast hasher is safe.
    routes: DashMap<Box<str>, Arc<RouteSeries>, rustc_hash::FxBuildHasher>,
}

/// One route's series, resolved on its first request: `with_label_values` hashes every label
/// with SipHash and takes the vector's lock, three times a request otherwise.
struct RouteSeries {
    duration: Histogram,
    upstream: Histogram,
    /// By response code: a handful per route, so a scan beats a map.
    requests: std::sync::RwLock<Vec<(&'static str, IntCounter)>>,
}

fn latency(registry: &Registry, name: &str, help: &str) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    register(registry, HistogramVec::new(opts, &["route"]).unwrap())
}

impl RequestMetrics {
    pub(super) fn new(registry: &Registry) -> RequestMetrics {
        let build = gauges(
            registry,
            "keygate_build_info",
            "Always 1; labels carry the version.",
            &["version"],
            &[&[env!("CARGO_PKG_VERSION")]],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        RequestMetrics {
            requests: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "keygate_requests_total",
                        "Requests by decision code (OK, EMPTY_RESULT, PUBLIC or the error code) and route pattern.",
                    ),
                    &["code", "route"],
                )
                .unwrap(),
            ),
            request_duration: latency(
                registry,
                "keygate_request_duration_seconds",
                "Time from request headers to response headers, by route pattern.",
            ),
            upstream_duration: latency(
                registry,
                "keygate_upstream_duration_seconds",
                "Time the upstream took to answer with headers, by route pattern.",
            ),
            upstream_errors: counters(
                registry,
                "keygate_upstream_errors_total",
                "Failed upstream exchanges by kind (connect, timeout, protocol).",
                "kind",
                &["connect", "timeout", "protocol"],
            ),
            connections: register(
                registry,
                IntGauge::new("keygate_open_connections", "Client connections currently open.").unwrap(),
            ),
            refused: counters(
                registry,
                "keygate_connections_refused_total",
                "Client connections closed on arrival, by reason (per_ip: the address had max_connections_per_ip open).",
                "reason",
                &["per_ip"],
            ),
            in_flight: register(
                registry,
                IntGauge::new("keygate_requests_in_flight", "Requests currently being handled.").unwrap(),
            ),
            upstream_ready: std::sync::OnceLock::new(),
            routes: DashMap::default(),
        }
    }

    fn route(&self, route: &str) -> Arc<RouteSeries> {
        if let Some(r) = self.routes.get(route) {
            return Arc::clone(&r);
        }
        let series = Arc::new(RouteSeries {
            duration: self.request_duration.with_label_values(&[route]),
            upstream: self.upstream_duration.with_label_values(&[route]),
            requests: Default::default(),
        });
        self.routes.insert(route.into(), Arc::clone(&series));
        series
    }
}

impl Metrics {
    pub fn request(&self, code: &'static str, route: &str, seconds: f64) {
        let r = self.requests.route(route);
        r.duration.observe(seconds);
        let counted = {
            let codes = r.requests.read().unwrap_or_else(|e| e.into_inner());
            codes.iter().find(|(c, _)| *c == code).map(|(_, n)| n.inc()).is_some()
        };
        if !counted {
            let n = self.requests.requests.with_label_values(&[code, route]);
            n.inc();
            r.requests.write().unwrap_or_else(|e| e.into_inner()).push((code, n));
        }
    }

    pub fn upstream_answered(&self, route: &str, seconds: f64) {
        self.requests.route(route).upstream.observe(seconds);
    }

    pub fn upstream_error(&self, kind: &str) {
        self.requests.upstream_errors.with_label_values(&[kind]).inc();
    }

    /// The last result of the upstream readiness check (`upstream.readiness`).
    pub fn upstream_ready(&self, ready: bool) {
        let help = "1 while the upstream readiness check passes (only with upstream.readiness).";
        let gauge = self
            .requests
            .upstream_ready
            .get_or_init(|| register(&self.registry, IntGauge::new("keygate_upstream_ready", help).unwrap()));
        gauge.set(i64::from(ready));
    }

    pub fn connection_opened(&self) {
        self.requests.connections.inc();
    }

    pub fn connection_closed(&self) {
        self.requests.connections.dec();
    }

    pub fn connection_refused(&self, reason: &str) {
        self.requests.refused.with_label_values(&[reason]).inc();
    }

    pub fn in_flight(&self) -> InFlight<'_> {
        self.requests.in_flight.inc();
        InFlight(&self.requests.in_flight)
    }
}

/// Decrements the in-flight gauge however the request ends (including a dropped future).
pub struct InFlight<'a>(&'a IntGauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
