//! Rate-limit decisions: per key (capped), per client IP, and the shared Redis budget's failures.

use std::sync::Arc;

use dashmap::DashMap;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::{counters, register, Metrics};

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

pub(super) struct LimitMetrics {
    decisions: IntCounterVec,
    /// Key ids come from the key table: the fast hasher is safe.
    by_key: DashMap<Arc<str>, KeyLimitCounters, rustc_hash::FxBuildHasher>,
    max_key_labels: usize,
    ip_decisions: IntCounterVec,
    redis_errors: IntCounterVec,
    redis_fallback: IntCounterVec,
    redis_circuit_open: IntGauge,
    /// Every (outcome, store) child resolved once: metered requests hash no labels.
    quota_decisions: [[IntCounter; QUOTA_STORES.len()]; QUOTA_OUTCOMES.len()],
}

/// A credits/quota decision, in `QUOTA_OUTCOMES` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaOutcome {
    Allowed,
    CreditsExhausted,
    QuotaExceeded,
    Unavailable,
}

/// Who decided, in `QUOTA_STORES` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaStore {
    Local,
    Redis,
    /// This replica's counters while Redis is unreachable (failing open).
    Fallback,
}

/// Every outcome label of `keygate_quota_decisions_total`.
pub const QUOTA_OUTCOMES: [&str; 4] = ["allowed", "credits_exhausted", "quota_exceeded", "unavailable"];
/// Every store label of `keygate_quota_decisions_total`: who decided.
pub const QUOTA_STORES: [&str; 3] = ["local", "redis", "fallback"];

impl LimitMetrics {
    pub(super) fn new(registry: &Registry, max_key_labels: usize) -> LimitMetrics {
        LimitMetrics {
            decisions: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "keygate_rate_limit_decisions_total",
                        "Rate-limit decisions for authenticated requests by key id, tier and outcome \
                         (allowed, near_limit = allowed with at least 80% of the burst used, limited = answered 429).",
                    ),
                    &["key_id", "tier", "outcome"],
                )
                .unwrap(),
            ),
            by_key: DashMap::default(),
            max_key_labels,
            ip_decisions: counters(
                registry,
                "keygate_ip_rate_limit_decisions_total",
                "Per-client-IP rate-limit decisions for requests that did not authenticate, by outcome.",
                "outcome",
                &["allowed", "limited"],
            ),
            redis_errors: counters(
                registry,
                "keygate_rate_limit_redis_errors_total",
                "Failures reaching the Redis rate-limit store, by kind (timeout, connection, response): each \
                 broken or silent connection once, each failed connect (circuit-breaker probes included) once.",
                "kind",
                &["timeout", "connection", "response"],
            ),
            redis_fallback: counters(
                registry,
                "keygate_rate_limit_redis_fallback_total",
                "Requests decided without Redis, each once, by policy (fail_open = local limiter, fail_closed = refused).",
                "policy",
                &["fail_open", "fail_closed"],
            ),
            redis_circuit_open: register(
                registry,
                IntGauge::new(
                    "keygate_rate_limit_redis_circuit_open",
                    "1 while the Redis rate-limit store is known down (its circuit breaker is open), else 0.",
                )
                .unwrap(),
            ),
            quota_decisions: quota_decisions(registry),
        }
    }
}

fn quota_decisions(registry: &Registry) -> [[IntCounter; QUOTA_STORES.len()]; QUOTA_OUTCOMES.len()] {
    let v = register(
        registry,
        IntCounterVec::new(
            Opts::new(
                "keygate_quota_decisions_total",
                "Credit and calendar-quota decisions for forwarded requests of keys that have them, by outcome \
                 (allowed, credits_exhausted, quota_exceeded: answered 429, unavailable: Redis unreachable and \
                 failing closed) and store (local, redis, fallback = this replica's counters while Redis is \
                 unreachable and failing open).",
            ),
            &["outcome", "store"],
        )
        .unwrap(),
    );
    QUOTA_OUTCOMES.map(|o| QUOTA_STORES.map(|s| v.with_label_values(&[o, s])))
}

impl Metrics {
    /// One authenticated request's rate-limit outcome. `key_id` comes from the key table, never
    /// from the request; past the label cap keys share the `_other` series.
    pub fn rate_limit(&self, key_id: &Arc<str>, tier: &str, outcome: LimitOutcome) {
        let m = &self.limits;
        let i = outcome as usize;
        if let Some(c) = m.by_key.get(key_id) {
            c.0[i].inc();
            return;
        }
        let label = if m.by_key.len() < m.max_key_labels { &**key_id } else { OTHER_KEYS };
        let counters = KeyLimitCounters(LIMIT_OUTCOMES.map(|o| m.decisions.with_label_values(&[label, tier, o])));
        counters.0[i].inc();
        if label != OTHER_KEYS {
            m.by_key.insert(Arc::clone(key_id), counters);
        }
    }

    pub fn ip_rate_limit(&self, limited: bool) {
        self.limits.ip_decisions.with_label_values(&[if limited { "limited" } else { "allowed" }]).inc();
    }

    pub fn redis_error(&self, kind: &str) {
        self.limits.redis_errors.with_label_values(&[kind]).inc();
    }

    /// One credits/quota decision: `outcome` indexes `QUOTA_OUTCOMES`, `store` `QUOTA_STORES`.
    pub fn quota_decision(&self, outcome: QuotaOutcome, store: QuotaStore) {
        self.limits.quota_decisions[outcome as usize][store as usize].inc();
    }

    pub fn redis_fallback(&self, policy: &str) {
        self.limits.redis_fallback.with_label_values(&[policy]).inc();
    }

    /// The shared limiter's circuit breaker opened (Redis known down) or closed again.
    pub fn redis_circuit_open(&self, open: bool) {
        self.limits.redis_circuit_open.set(i64::from(open));
    }
}
