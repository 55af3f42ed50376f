//! Prometheus metrics behind named methods. The struct owns its registry (no globals), label
//! sets are fixed, and every label value comes from config or code, never from the request.
//! Each subsystem declares its series once, in its own file, with the methods that feed them:
//! requests and the upstream, rate limits, the key table and store, anomalies and alerts, the
//! config file's reloads, report-only mode's would-be refusals.

use prometheus::core::Collector;
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

mod admin;
mod anomalies;
mod config;
mod key_store;
mod key_table;
mod labels;
mod limits;
mod requests;
mod shadow;
#[cfg(test)]
mod tests;

pub use admin::ADMIN_OPERATIONS;
pub use key_store::{CacheLookup, KeySeries};
pub use labels::{RequestDone, METHODS, STATUS_CLASSES};
pub use limits::{LimitOutcome, QuotaOutcome, QuotaStore, LIMIT_OUTCOMES, OTHER_KEYS};
pub use requests::{InFlight, NO_ROUTE};

pub struct Metrics {
    registry: Registry,
    requests: requests::RequestMetrics,
    limits: limits::LimitMetrics,
    key_table: key_table::KeyTableMetrics,
    /// Only with the PostgreSQL store, and the cache's only with `sync: cache`.
    store: Option<key_store::StoreMetrics>,
    cache: Option<key_store::CacheMetrics>,
    anomalies: anomalies::AnomalyMetrics,
    config: config::ConfigMetrics,
    shadow: shadow::ShadowMetrics,
    admin: admin::AdminMetrics,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::with_key_label_cap(1000)
    }

    /// `max_key_labels`: how many distinct keys get their own `key_id` label; the rest are
    /// counted under `_other`, so a huge table cannot blow up the scrape. The file store's series.
    pub fn with_key_label_cap(max_key_labels: usize) -> Metrics {
        Metrics::for_store(max_key_labels, KeySeries::File)
    }

    /// With the series of the key store in use, and the process's own (`process_*`).
    pub fn for_store(max_key_labels: usize, store: KeySeries) -> Metrics {
        let registry = Registry::new();
        let pg = store != KeySeries::File;
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("process_* names are unique");
        Metrics {
            requests: requests::RequestMetrics::new(&registry),
            limits: limits::LimitMetrics::new(&registry, max_key_labels),
            key_table: key_table::KeyTableMetrics::new(&registry),
            store: pg.then(|| key_store::StoreMetrics::new(&registry)),
            cache: (store == KeySeries::PostgresCache).then(|| key_store::CacheMetrics::new(&registry)),
            anomalies: anomalies::AnomalyMetrics::new(&registry),
            config: config::ConfigMetrics::new(&registry),
            shadow: shadow::ShadowMetrics::new(&registry),
            admin: admin::AdminMetrics::new(&registry),
            registry,
        }
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

/// Registers `c` and hands it back: each series is declared and registered in one expression.
fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry.register(Box::new(c.clone())).expect("metric names are unique");
    c
}

/// A counter family with one label, every value in `zero` pre-registered at zero so that
/// `increase()` works from the first event.
fn counters(registry: &Registry, name: &str, help: &str, label: &str, zero: &[&str]) -> IntCounterVec {
    let vec = register(registry, IntCounterVec::new(Opts::new(name, help), &[label]).unwrap());
    for v in zero {
        vec.with_label_values(&[v]);
    }
    vec
}

/// A gauge family; like `counters`, with the given label sets shown from the start.
fn gauges(registry: &Registry, name: &str, help: &str, labels: &[&str], zero: &[&[&str]]) -> IntGaugeVec {
    let vec = register(registry, IntGaugeVec::new(Opts::new(name, help), labels).unwrap());
    for v in zero {
        vec.with_label_values(v);
    }
    vec
}

/// A count as a gauge value, saturating rather than wrapping.
fn gauge_value(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}
