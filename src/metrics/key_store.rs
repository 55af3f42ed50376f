//! The PostgreSQL key store: how fresh the replica is and the usage write-back, and in
//! `sync: cache` mode the lookups, the queries behind them and the pool. Registered only for
//! the store in use (`KeySeries`): a file store exports none of them.

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use time::OffsetDateTime;

use super::{counters, gauge_value, gauges, register, Metrics};

/// What one cache-mode lookup found (`keygate_key_store_cache_lookups_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheLookup {
    Hit = 0,
    /// Not cached: answered by a query (this request's, or one it waited for).
    Miss = 1,
    /// Remembered as unknown: refused without a query.
    NegativeHit = 2,
}

/// Which key-store series exist: those of the store in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySeries {
    File,
    Postgres,
    /// PostgreSQL with `sync: cache`: the cache's series too.
    PostgresCache,
}

/// The store's freshness and the usage write-back.
pub(super) struct StoreMetrics {
    staleness: Gauge,
    last_sync: Gauge,
    notification_lag: Gauge,
    version: IntGauge,
    connected: IntGauge,
    sync_failures: IntCounter,
    usage_flushes: IntCounterVec,
    usage_pending: IntGauge,
}

/// The `sync: cache` lookups, the queries behind them and the usage write-back.
pub(super) struct CacheMetrics {
    /// `keygate_key_store_cache_lookups_total` resolved once per result: the hit path does no
    /// label hashing.
    by_result: [IntCounter; 3],
    queries: IntCounterVec,
    entries: IntGaugeVec,
    invalidations: IntCounter,
    pool: IntGauge,
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Gauge {
    register(registry, Gauge::new(name, help).unwrap())
}

fn int_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help).unwrap())
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help).unwrap())
}

impl StoreMetrics {
    pub(super) fn new(r: &Registry) -> StoreMetrics {
        StoreMetrics {
            staleness: gauge(
                r,
                "keygate_key_store_staleness_seconds",
                "Seconds since the in-memory key table was last known to hold every change in the key store \
                 (since start, before the first sync).",
            ),
            last_sync: gauge(
                r,
                "keygate_key_store_last_sync_timestamp_seconds",
                "Unix time of the last successful sync with the key store.",
            ),
            notification_lag: gauge(
                r,
                "keygate_key_store_notification_lag_seconds",
                "Commit-to-receipt time of the last change notification from the key store.",
            ),
            version: int_gauge(r, "keygate_key_store_version", "The key store change version the table is at."),
            connected: int_gauge(r, "keygate_key_store_connected", "1 while connected to the key store."),
            sync_failures: counter(
                r,
                "keygate_key_store_sync_failures_total",
                "Changes from the key store that could not be applied (the last view kept serving).",
            ),
            usage_flushes: counters(
                r,
                "keygate_key_store_usage_flushes_total",
                "Usage write-backs to the key store by result (ok, failed = kept for the next one).",
                "result",
                &["ok", "failed"],
            ),
            usage_pending: int_gauge(
                r,
                "keygate_key_store_usage_pending_keys",
                "Keys with usage not yet written back to the key store.",
            ),
        }
    }
}

impl CacheMetrics {
    pub(super) fn new(r: &Registry) -> CacheMetrics {
        let lookups = counters(
            r,
            "keygate_key_store_cache_lookups_total",
            "Key lookups in sync: cache mode by result (hit, miss = answered by a query, \
             negative_hit = remembered as unknown).",
            "result",
            &[],
        );
        let queries = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "keygate_key_store_queries_total",
                    "Key lookups for PostgreSQL in sync: cache mode, by query (by_hash, by_id) and result \
                     (found, not_found, error = failed, timed out, or no lookup connection was up).",
                ),
                &["query", "result"],
            )
            .unwrap(),
        );
        for q in ["by_hash", "by_id"] {
            for res in ["found", "not_found", "error"] {
                queries.with_label_values(&[q, res]);
            }
        }
        CacheMetrics {
            by_result: ["hit", "miss", "negative_hit"].map(|res| lookups.with_label_values(&[res])),
            queries,
            entries: gauges(
                r,
                "keygate_key_store_cache_entries",
                "Entries in the sync: cache mode caches (by_hash, by_id, negative = unknown hashes).",
                &["cache"],
                &[&["by_hash"], &["by_id"], &["negative"]],
            ),
            invalidations: counter(
                r,
                "keygate_key_store_cache_invalidations_total",
                "Cache entries dropped because the key store said their row changed.",
            ),
            pool: int_gauge(
                r,
                "keygate_key_store_pool_connections",
                "Connections of the sync: cache lookup pool that are up.",
            ),
        }
    }
}

impl Metrics {
    /// The PostgreSQL store's series, when that is the store in use.
    fn pg(&self) -> Option<&StoreMetrics> {
        self.store.as_ref()
    }

    /// The `sync: cache` series, when that is the mode in use.
    fn cached(&self) -> Option<&CacheMetrics> {
        self.cache.as_ref()
    }

    pub fn key_store_staleness(&self, age: std::time::Duration) {
        if let Some(store) = self.pg() {
            store.staleness.set(age.as_secs_f64());
        }
    }

    /// The table holds every change up to `version`, as of now.
    pub fn key_store_synced(&self, version: i64) {
        if let Some(store) = self.pg() {
            store.version.set(version);
            store.last_sync.set(OffsetDateTime::now_utc().unix_timestamp() as f64);
        }
    }

    pub fn key_store_sync_failed(&self) {
        if let Some(store) = self.pg() {
            store.sync_failures.inc();
        }
    }

    pub fn key_store_notification_lag(&self, seconds: f64) {
        if let Some(store) = self.pg() {
            store.notification_lag.set(seconds);
        }
    }

    pub fn key_store_connected(&self, up: bool) {
        if let Some(store) = self.pg() {
            store.connected.set(i64::from(up));
        }
    }

    pub fn key_cache_lookup(&self, result: CacheLookup) {
        if let Some(cache) = self.cached() {
            cache.by_result[result as usize].inc();
        }
    }

    /// `query`: by_hash or by_id; `result`: found, not_found or error.
    pub fn key_store_query(&self, query: &str, result: &str) {
        if let Some(cache) = self.cached() {
            cache.queries.with_label_values(&[query, result]).inc();
        }
    }

    pub fn key_cache_entries(&self, by_hash: u64, by_id: u64, negative: u64) {
        for (c, n) in [("by_hash", by_hash), ("by_id", by_id), ("negative", negative)] {
            if let Some(cache) = self.cached() {
                cache.entries.with_label_values(&[c]).set(gauge_value(n));
            }
        }
    }

    pub fn key_cache_invalidated(&self, n: usize) {
        if let Some(cache) = self.cached() {
            cache.invalidations.inc_by(n as u64);
        }
    }

    pub fn key_store_pool(&self, up: usize) {
        if let Some(cache) = self.cached() {
            cache.pool.set(gauge_value(up));
        }
    }

    pub fn usage_flushed(&self, ok: bool) {
        if let Some(store) = self.pg() {
            store.usage_flushes.with_label_values(&[if ok { "ok" } else { "failed" }]).inc();
        }
    }

    pub fn usage_pending(&self, keys: usize) {
        if let Some(store) = self.pg() {
            store.usage_pending.set(gauge_value(keys));
        }
    }
}
