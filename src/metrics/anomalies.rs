//! Anomalies seen on the request path, the client IPs blocked for them, and the alerts sent.

use prometheus::{IntCounterVec, IntGauge, Registry};

use super::{counters, gauge_value, register, Metrics};

pub(super) struct AnomalyMetrics {
    anomalies: IntCounterVec,
    blocked_ips: IntGauge,
    alerts: IntCounterVec,
}

impl AnomalyMetrics {
    pub(super) fn new(registry: &Registry) -> AnomalyMetrics {
        AnomalyMetrics {
            anomalies: counters(
                registry,
                "keygate_anomalies_total",
                "Anomalies detected on the request path, by kind.",
                "kind",
                &crate::anomaly::Kind::ALL.map(|k| k.as_str()),
            ),
            blocked_ips: register(
                registry,
                IntGauge::new("keygate_blocked_client_ips", "Client IPs currently blocked after an invalid-key burst.")
                    .unwrap(),
            ),
            alerts: counters(
                registry,
                "keygate_alerts_total",
                "Anomaly alerts by webhook result (sent, failed, suppressed = within cool-down, dropped = queue full).",
                "result",
                &["sent", "failed", "suppressed", "dropped"],
            ),
        }
    }
}

impl Metrics {
    pub fn anomaly(&self, kind: &str) {
        self.anomalies.anomalies.with_label_values(&[kind]).inc();
    }

    pub fn blocked_ips(&self, n: usize) {
        self.anomalies.blocked_ips.set(gauge_value(n));
    }

    /// `result`: sent, failed, suppressed or dropped.
    pub fn alert(&self, result: &str) {
        self.anomalies.alerts.with_label_values(&[result]).inc();
    }
}
