//! Prometheus metrics behind named methods. The struct owns its registry (no globals), label
//! sets are fixed, and every label value comes from config or code, never from the request.

use std::sync::Arc;

use dashmap::DashMap;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use time::OffsetDateTime;

use crate::keys::table::KeyState;
use crate::keys::{Environment, KeyTable};

/// Label for requests that matched no configured route.
pub const NO_ROUTE: &str = "none";

/// The `key_id` label of keys past the per-key label cap.
pub const OTHER_KEYS: &str = "_other";

/// Every outcome label of `keygate_rate_limit_decisions_total`.
pub const LIMIT_OUTCOMES: [&str; 3] = ["allowed", "near_limit", "limited"];

/// Rate-limit outcome of one request, for the per-key counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitOutcome {
    Allowed,
    /// Allowed, with 80% or more of the burst used.
    NearLimit,
    Limited,
}

/// One key's three counters, resolved once and then reused without label hashing.
#[derive(Clone)]
struct KeyLimitCounters([IntCounter; 3]);

/// One route's series, resolved on its first request: `with_label_values` hashes every label
/// with SipHash and takes the vector's lock (~500 instructions a call, three calls a request).
struct RouteSeries {
    duration: Histogram,
    upstream: Histogram,
    /// By response code: a handful per route, so a scan beats a map.
    requests: std::sync::RwLock<Vec<(&'static str, IntCounter)>>,
}

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
    limit_decisions: IntCounterVec,
    /// Key ids come from the key table: the fast hasher is safe.
    limit_by_key: DashMap<Arc<str>, KeyLimitCounters, rustc_hash::FxBuildHasher>,
    /// Route labels come from the config (a fixed set): the fast hasher is safe.
    routes: DashMap<Box<str>, Arc<RouteSeries>, rustc_hash::FxBuildHasher>,
    max_key_labels: usize,
    ip_limit_decisions: IntCounterVec,
    redis_errors: IntCounterVec,
    redis_fallback: IntCounterVec,
    anomalies: IntCounterVec,
    blocked_ips: IntGauge,
    alerts: IntCounterVec,
    store: StoreMetrics,
    cache: CacheMetrics,
}

/// The PostgreSQL key store's freshness (all zero with the file store).
struct StoreMetrics {
    staleness: Gauge,
    last_sync: Gauge,
    notification_lag: Gauge,
    version: IntGauge,
    connected: IntGauge,
    sync_failures: IntCounter,
}

impl StoreMetrics {
    fn new() -> StoreMetrics {
        StoreMetrics {
            staleness: Gauge::new(
                "keygate_key_store_staleness_seconds",
                "Seconds since the in-memory key table was last known to hold every change in the key store \
                 (since start, before the first sync).",
            )
            .unwrap(),
            last_sync: Gauge::new(
                "keygate_key_store_last_sync_timestamp_seconds",
                "Unix time of the last successful sync with the key store.",
            )
            .unwrap(),
            notification_lag: Gauge::new(
                "keygate_key_store_notification_lag_seconds",
                "Commit-to-receipt time of the last change notification from the key store.",
            )
            .unwrap(),
            version: IntGauge::new("keygate_key_store_version", "The key store change version the table is at.")
                .unwrap(),
            connected: IntGauge::new("keygate_key_store_connected", "1 while connected to the key store.").unwrap(),
            sync_failures: IntCounter::new(
                "keygate_key_store_sync_failures_total",
                "Changes from the key store that could not be applied (the last view kept serving).",
            )
            .unwrap(),
        }
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.staleness.clone()),
            Box::new(self.last_sync.clone()),
            Box::new(self.notification_lag.clone()),
            Box::new(self.version.clone()),
            Box::new(self.connected.clone()),
            Box::new(self.sync_failures.clone()),
        ]
    }
}

/// What one cache-mode lookup found (`keygate_key_store_cache_lookups_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheLookup {
    Hit = 0,
    /// Not cached: answered by a query (this request's, or one it waited for).
    Miss = 1,
    /// Remembered as unknown: refused without a query.
    NegativeHit = 2,
}

/// The `sync: cache` lookups, the queries behind them and the usage write-back.
struct CacheMetrics {
    lookups: IntCounterVec,
    /// `lookups` resolved once per result: the hit path does no label hashing.
    by_result: [IntCounter; 3],
    queries: IntCounterVec,
    entries: IntGaugeVec,
    invalidations: IntCounter,
    pool: IntGauge,
    usage_flushes: IntCounterVec,
    usage_pending: IntGauge,
}

impl CacheMetrics {
    fn new() -> CacheMetrics {
        let lookups = IntCounterVec::new(
            Opts::new(
                "keygate_key_store_cache_lookups_total",
                "Key lookups in sync: cache mode by result (hit, miss = answered by a query, \
                 negative_hit = remembered as unknown).",
            ),
            &["result"],
        )
        .unwrap();
        let by_result = ["hit", "miss", "negative_hit"].map(|r| lookups.with_label_values(&[r]));
        let queries = IntCounterVec::new(
            Opts::new(
                "keygate_key_store_queries_total",
                "Key lookups for PostgreSQL in sync: cache mode, by query (by_hash, by_id) and result \
                 (found, not_found, error = failed, timed out, or no lookup connection was up).",
            ),
            &["query", "result"],
        )
        .unwrap();
        for q in ["by_hash", "by_id"] {
            for r in ["found", "not_found", "error"] {
                queries.with_label_values(&[q, r]);
            }
        }
        let entries = IntGaugeVec::new(
            Opts::new(
                "keygate_key_store_cache_entries",
                "Entries in the sync: cache mode caches (by_hash, by_id, negative = unknown hashes).",
            ),
            &["cache"],
        )
        .unwrap();
        for c in ["by_hash", "by_id", "negative"] {
            entries.with_label_values(&[c]);
        }
        let usage_flushes = IntCounterVec::new(
            Opts::new(
                "keygate_key_store_usage_flushes_total",
                "Usage write-backs to the key store by result (ok, failed = kept for the next one).",
            ),
            &["result"],
        )
        .unwrap();
        for r in ["ok", "failed"] {
            usage_flushes.with_label_values(&[r]);
        }
        CacheMetrics {
            lookups,
            by_result,
            queries,
            entries,
            invalidations: IntCounter::new(
                "keygate_key_store_cache_invalidations_total",
                "Cache entries dropped because the key store said their row changed.",
            )
            .unwrap(),
            pool: IntGauge::new(
                "keygate_key_store_pool_connections",
                "Connections of the sync: cache lookup pool that are up.",
            )
            .unwrap(),
            usage_flushes,
            usage_pending: IntGauge::new(
                "keygate_key_store_usage_pending_keys",
                "Keys with usage not yet written back to the key store.",
            )
            .unwrap(),
        }
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.lookups.clone()),
            Box::new(self.queries.clone()),
            Box::new(self.entries.clone()),
            Box::new(self.invalidations.clone()),
            Box::new(self.pool.clone()),
            Box::new(self.usage_flushes.clone()),
            Box::new(self.usage_pending.clone()),
        ]
    }
}

const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::with_key_label_cap(1000)
    }

    /// `max_key_labels`: how many distinct keys get their own `key_id` label; the rest are
    /// counted under `_other`, so a huge table cannot blow up the scrape.
    pub fn with_key_label_cap(max_key_labels: usize) -> Metrics {
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
        let limit_decisions = IntCounterVec::new(
            Opts::new(
                "keygate_rate_limit_decisions_total",
                "Rate-limit decisions for authenticated requests by key id, tier and outcome \
                 (allowed, near_limit = allowed with at least 80% of the burst used, limited = answered 429).",
            ),
            &["key_id", "tier", "outcome"],
        )
        .unwrap();
        let ip_limit_decisions = IntCounterVec::new(
            Opts::new(
                "keygate_ip_rate_limit_decisions_total",
                "Per-client-IP rate-limit decisions for requests that did not authenticate, by outcome.",
            ),
            &["outcome"],
        )
        .unwrap();
        let redis_errors = IntCounterVec::new(
            Opts::new(
                "keygate_rate_limit_redis_errors_total",
                "Failed Redis rate-limit calls by kind (timeout, connection, response).",
            ),
            &["kind"],
        )
        .unwrap();
        let redis_fallback = IntCounterVec::new(
            Opts::new(
                "keygate_rate_limit_redis_fallback_total",
                "Decisions made without Redis, by policy (fail_open = local limiter, fail_closed = refused).",
            ),
            &["policy"],
        )
        .unwrap();
        let anomalies = IntCounterVec::new(
            Opts::new("keygate_anomalies_total", "Anomalies detected on the request path, by kind."),
            &["kind"],
        )
        .unwrap();
        let blocked_ips =
            IntGauge::new("keygate_blocked_client_ips", "Client IPs currently blocked after an invalid-key burst.")
                .unwrap();
        let alerts = IntCounterVec::new(
            Opts::new(
                "keygate_alerts_total",
                "Anomaly alerts by webhook result (sent, failed, suppressed = within cool-down, dropped = queue full).",
            ),
            &["result"],
        )
        .unwrap();
        // Pre-registered at zero so that `increase()` works from the first event.
        for k in crate::anomaly::Kind::ALL {
            anomalies.with_label_values(&[k.as_str()]);
        }
        for r in ["sent", "failed", "suppressed", "dropped"] {
            alerts.with_label_values(&[r]);
        }
        for o in ["allowed", "limited"] {
            ip_limit_decisions.with_label_values(&[o]);
        }
        for k in ["timeout", "connection", "response"] {
            redis_errors.with_label_values(&[k]);
        }
        for p in ["fail_open", "fail_closed"] {
            redis_fallback.with_label_values(&[p]);
        }
        for r in ["ok", "failed"] {
            reloads.with_label_values(&[r]);
        }
        for k in ["connect", "timeout", "protocol"] {
            upstream_errors.with_label_values(&[k]);
        }
        let store = StoreMetrics::new();
        let mut collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
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
            Box::new(limit_decisions.clone()),
            Box::new(ip_limit_decisions.clone()),
            Box::new(redis_errors.clone()),
            Box::new(redis_fallback.clone()),
            Box::new(anomalies.clone()),
            Box::new(blocked_ips.clone()),
            Box::new(alerts.clone()),
        ];
        collectors.extend(store.collectors());
        let cache = CacheMetrics::new();
        collectors.extend(cache.collectors());
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
            limit_decisions,
            limit_by_key: DashMap::default(),
            routes: DashMap::default(),
            max_key_labels,
            ip_limit_decisions,
            redis_errors,
            redis_fallback,
            anomalies,
            blocked_ips,
            alerts,
            store,
            cache,
        }
    }

    /// One authenticated request's rate-limit outcome. `key_id` comes from the key table, never
    /// from the request; past the label cap keys share the `_other` series.
    pub fn rate_limit(&self, key_id: &Arc<str>, tier: &str, outcome: LimitOutcome) {
        let i = outcome as usize;
        if let Some(c) = self.limit_by_key.get(key_id) {
            c.0[i].inc();
            return;
        }
        let label = if self.limit_by_key.len() < self.max_key_labels { &**key_id } else { OTHER_KEYS };
        let counters =
            KeyLimitCounters(LIMIT_OUTCOMES.map(|o| self.limit_decisions.with_label_values(&[label, tier, o])));
        counters.0[i].inc();
        if label != OTHER_KEYS {
            self.limit_by_key.insert(Arc::clone(key_id), counters);
        }
    }

    pub fn ip_rate_limit(&self, limited: bool) {
        self.ip_limit_decisions.with_label_values(&[if limited { "limited" } else { "allowed" }]).inc();
    }

    pub fn redis_error(&self, kind: &str) {
        self.redis_errors.with_label_values(&[kind]).inc();
    }

    pub fn redis_fallback(&self, policy: &str) {
        self.redis_fallback.with_label_values(&[policy]).inc();
    }

    pub fn anomaly(&self, kind: &str) {
        self.anomalies.with_label_values(&[kind]).inc();
    }

    pub fn blocked_ips(&self, n: usize) {
        self.blocked_ips.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// `result`: sent, failed, suppressed or dropped.
    pub fn alert(&self, result: &str) {
        self.alerts.with_label_values(&[result]).inc();
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

    pub fn request(&self, code: &'static str, route: &str, seconds: f64) {
        let r = self.route(route);
        r.duration.observe(seconds);
        let counted = {
            let codes = r.requests.read().unwrap_or_else(|e| e.into_inner());
            codes.iter().find(|(c, _)| *c == code).map(|(_, n)| n.inc()).is_some()
        };
        if !counted {
            let n = self.requests.with_label_values(&[code, route]);
            n.inc();
            r.requests.write().unwrap_or_else(|e| e.into_inner()).push((code, n));
        }
    }

    pub fn upstream_answered(&self, route: &str, seconds: f64) {
        self.route(route).upstream.observe(seconds);
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

    pub fn key_store_staleness(&self, age: std::time::Duration) {
        self.store.staleness.set(age.as_secs_f64());
    }

    /// The table holds every change up to `version`, as of now.
    pub fn key_store_synced(&self, version: i64) {
        self.store.version.set(version);
        self.store.last_sync.set(OffsetDateTime::now_utc().unix_timestamp() as f64);
    }

    pub fn key_store_sync_failed(&self) {
        self.store.sync_failures.inc();
    }

    pub fn key_store_notification_lag(&self, seconds: f64) {
        self.store.notification_lag.set(seconds);
    }

    pub fn key_store_connected(&self, up: bool) {
        self.store.connected.set(i64::from(up));
    }

    pub fn key_cache_lookup(&self, result: CacheLookup) {
        self.cache.by_result[result as usize].inc();
    }

    /// `query`: by_hash or by_id; `result`: found, not_found or error.
    pub fn key_store_query(&self, query: &str, result: &str) {
        self.cache.queries.with_label_values(&[query, result]).inc();
    }

    pub fn key_cache_entries(&self, by_hash: u64, by_id: u64, negative: u64) {
        for (c, n) in [("by_hash", by_hash), ("by_id", by_id), ("negative", negative)] {
            self.cache.entries.with_label_values(&[c]).set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    pub fn key_cache_invalidated(&self, n: usize) {
        self.cache.invalidations.inc_by(n as u64);
    }

    pub fn key_store_pool(&self, up: usize) {
        self.cache.pool.set(i64::try_from(up).unwrap_or(i64::MAX));
    }

    pub fn usage_flushed(&self, ok: bool) {
        self.cache.usage_flushes.with_label_values(&[if ok { "ok" } else { "failed" }]).inc();
    }

    pub fn usage_pending(&self, keys: usize) {
        self.cache.usage_pending.set(i64::try_from(keys).unwrap_or(i64::MAX));
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
