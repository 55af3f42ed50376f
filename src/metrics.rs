//! Prometheus metrics behind named methods. The struct owns its registry (no globals), label
//! sets are fixed, and every label value comes from config or code, never from the request.

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use time::OffsetDateTime;

use crate::keys::table::KeyState;
use crate::keys::{Environment, KeyTable};

/// Label for requests that matched no configured route.
pub const NO_ROUTE: &str = "none";

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    upstream_errors: IntCounterVec,
    keys: IntGaugeVec,
    reloads: IntCounterVec,
    last_reload: Gauge,
    connections: IntGauge,
    in_flight: IntGauge,
}

const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "keygate_requests_total",
                "Requests by decision code (OK, EMPTY_RESULT, PUBLIC or the error code) and route pattern.",
            ),
            &["code", "route"],
        )
        .unwrap();
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "keygate_request_duration_seconds",
                "Time from request headers to response headers, by route pattern.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .unwrap();
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "keygate_upstream_duration_seconds",
                "Time the upstream took to answer with headers, by route pattern.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .unwrap();
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "keygate_upstream_errors_total",
                "Failed upstream exchanges by kind (connect, timeout, protocol).",
            ),
            &["kind"],
        )
        .unwrap();
        let keys = IntGaugeVec::new(
            Opts::new("keygate_key_table_keys", "Keys in the loaded table by environment and state."),
            &["environment", "state"],
        )
        .unwrap();
        let reloads = IntCounterVec::new(
            Opts::new("keygate_key_table_reloads_total", "Key table reload attempts by result (ok, failed)."),
            &["result"],
        )
        .unwrap();
        let last_reload = Gauge::new(
            "keygate_key_table_last_reload_success_timestamp_seconds",
            "Unix time of the last successful key table load.",
        )
        .unwrap();
        let connections = IntGauge::new("keygate_open_connections", "Client connections currently open.").unwrap();
        let in_flight = IntGauge::new("keygate_requests_in_flight", "Requests currently being handled.").unwrap();
        let build =
            IntGaugeVec::new(Opts::new("keygate_build_info", "Always 1; labels carry the version."), &["version"])
                .unwrap();
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        for r in ["ok", "failed"] {
            reloads.with_label_values(&[r]);
        }
        for k in ["connect", "timeout", "protocol"] {
            upstream_errors.with_label_values(&[k]);
        }
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(requests.clone()),
            Box::new(request_duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(keys.clone()),
            Box::new(reloads.clone()),
            Box::new(last_reload.clone()),
            Box::new(connections.clone()),
            Box::new(in_flight.clone()),
            Box::new(build),
        ];
        for c in collectors {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            request_duration,
            upstream_duration,
            upstream_errors,
            keys,
            reloads,
            last_reload,
            connections,
            in_flight,
        }
    }

    pub fn request(&self, code: &str, route: &str, seconds: f64) {
        self.requests.with_label_values(&[code, route]).inc();
        self.request_duration.with_label_values(&[route]).observe(seconds);
    }

    pub fn upstream_answered(&self, route: &str, seconds: f64) {
        self.upstream_duration.with_label_values(&[route]).observe(seconds);
    }

    pub fn upstream_error(&self, kind: &str) {
        self.upstream_errors.with_label_values(&[kind]).inc();
    }

    pub fn table_loaded(&self, table: &KeyTable, now: OffsetDateTime) {
        self.reloads.with_label_values(&["ok"]).inc();
        self.last_reload.set(now.unix_timestamp() as f64);
        self.key_census(table, now);
    }

    /// Expiry moves keys between states without a reload, so this also runs on a timer.
    pub fn key_census(&self, table: &KeyTable, now: OffsetDateTime) {
        for ((env, state), n) in table.census(now) {
            let env: Environment = env;
            let state: KeyState = state;
            self.keys.with_label_values(&[env.as_str(), state.as_str()]).set(n as i64);
        }
    }

    pub fn table_reload_failed(&self) {
        self.reloads.with_label_values(&["failed"]).inc();
    }

    pub fn connection_opened(&self) {
        self.connections.inc();
    }

    pub fn connection_closed(&self) {
        self.connections.dec();
    }

    pub fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is utf-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Decrements the in-flight gauge however the request ends (including a dropped future).
pub struct InFlight<'a>(&'a IntGauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
