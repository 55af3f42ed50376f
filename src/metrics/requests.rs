//! Requests, the upstream, connections and the build: the proxy's own traffic.

use std::sync::{Arc, OnceLock, RwLock};

use dashmap::DashMap;
use http::Method;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::labels::{class_index, method_index, RequestDone, METHODS, STATUS_CLASSES, ZEROED_CLASSES};
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
    /// `keygate_upstream_responses_total` by status class, resolved once.
    upstream_responses: [IntCounter; 5],
    connections: IntGauge,
    refused: IntCounterVec,
    in_flight: IntGauge,
    /// Registered on the first readiness check: absent when no check is configured.
    upstream_ready: OnceLock<IntGauge>,
    /// Registered when a certificate is loaded: absent without TLS.
    tls_expiry: OnceLock<IntGauge>,
    /// Route labels come from the config (a fixed set): the fast hasher is safe.
    routes: DashMap<Box<str>, Arc<RouteSeries>, rustc_hash::FxBuildHasher>,
}

/// One route's series, each resolved on its first use: `with_label_values` hashes every label
/// with SipHash and takes the vector's lock, three times a request otherwise.
struct RouteSeries {
    route: Box<str>,
    /// By method (`METHODS`).
    duration: [OnceLock<Histogram>; 8],
    upstream: [OnceLock<Histogram>; 8],
    /// By decision code, shape and status class: a handful per route, so a scan beats a map.
    requests: RwLock<Vec<(&'static str, &'static str, usize, IntCounter)>>,
}

fn latency(registry: &Registry, name: &str, help: &str) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    register(registry, HistogramVec::new(opts, &["method", "route"]).unwrap())
}

impl RouteSeries {
    fn latency<'a>(&self, series: &'a [OnceLock<Histogram>; 8], vec: &HistogramVec, m: &Method) -> &'a Histogram {
        let i = method_index(m);
        series[i].get_or_init(|| vec.with_label_values(&[METHODS[i], &self.route]))
    }

    /// Adds `n` to the counter for (code, shape, class), registered on first use.
    fn count(&self, vec: &IntCounterVec, code: &'static str, shape: &'static str, class: usize, n: u64) {
        let counted = {
            let codes = self.requests.read().unwrap_or_else(|e| e.into_inner());
            codes
                .iter()
                .find(|(c, s, k, _)| *c == code && *s == shape && *k == class)
                .map(|(.., counter)| counter.inc_by(n))
                .is_some()
        };
        if !counted {
            let counter = vec.with_label_values(&[code, &self.route, shape, STATUS_CLASSES[class]]);
            counter.inc_by(n);
            self.requests.write().unwrap_or_else(|e| e.into_inner()).push((code, shape, class, counter));
        }
    }
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
                        "Requests by decision code (OK, EMPTY_RESULT, PUBLIC or the error code), route pattern, \
                         shape (inline, or the front proxy's protocol for an external-authorization check) and \
                         the class of the status the client got.",
                    ),
                    &["code", "route", "shape", "status_class"],
                )
                .unwrap(),
            ),
            request_duration: latency(
                registry,
                "keygate_request_duration_seconds",
                "Time from request headers to response headers, by method and route pattern.",
            ),
            upstream_duration: latency(
                registry,
                "keygate_upstream_duration_seconds",
                "Time the upstream took to answer with headers, by method and route pattern.",
            ),
            upstream_errors: counters(
                registry,
                "keygate_upstream_errors_total",
                "Failed upstream exchanges by kind (connect, timeout, protocol).",
                "kind",
                &["connect", "timeout", "protocol"],
            ),
            upstream_responses: {
                let vec = counters(
                    registry,
                    "keygate_upstream_responses_total",
                    "Answers from the upstream by status class (its own status, passed to the client).",
                    "status_class",
                    &ZEROED_CLASSES.map(|c| STATUS_CLASSES[c]),
                );
                STATUS_CLASSES.map(|c| vec.with_label_values(&[c]))
            },
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
            upstream_ready: OnceLock::new(),
            tls_expiry: OnceLock::new(),
            routes: DashMap::default(),
        }
    }

    fn route(&self, route: &str) -> Arc<RouteSeries> {
        if let Some(r) = self.routes.get(route) {
            return Arc::clone(&r);
        }
        let series = Arc::new(RouteSeries {
            route: route.into(),
            duration: Default::default(),
            upstream: Default::default(),
            requests: Default::default(),
        });
        Arc::clone(self.routes.entry(route.into()).or_insert(series).value())
    }
}

impl Metrics {
    pub fn request(&self, done: &RequestDone<'_>) {
        let m = &self.requests;
        let r = m.route(done.route);
        r.latency(&r.duration, &m.request_duration, done.method).observe(done.seconds);
        r.count(&m.requests, done.code, done.shape, class_index(done.status), 1);
    }

    /// `keygate_requests_total` at 0 from the start for each (route, code) given, in every
    /// status class a client can get, so rates and ratios exist before the first request.
    pub fn routes_known<'a>(&self, routes: impl IntoIterator<Item = (&'a str, &'static str)>) {
        for (route, code) in routes {
            let r = self.requests.route(route);
            for class in ZEROED_CLASSES {
                r.count(&self.requests.requests, code, "inline", class, 0);
            }
        }
    }

    /// An answer from the upstream: its time to headers and its status class.
    pub fn upstream_answered(&self, route: &str, method: &Method, status: u16, seconds: f64) {
        let m = &self.requests;
        let r = m.route(route);
        r.latency(&r.upstream, &m.upstream_duration, method).observe(seconds);
        m.upstream_responses[class_index(status)].inc();
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

    /// The served certificate's notAfter (Unix seconds), set at start and on every reload.
    pub fn tls_certificate_expires(&self, not_after: i64) {
        let help = "Unix time at which the certificate keygate serves (tls.cert_file) expires.";
        let name = "keygate_tls_certificate_expiry_timestamp_seconds";
        let gauge =
            self.requests.tls_expiry.get_or_init(|| register(&self.registry, IntGauge::new(name, help).unwrap()));
        gauge.set(not_after);
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
