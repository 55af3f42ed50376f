//! The config file's reloads: attempts by result, whether the last one took, when one last
//! did, and how many restart-only settings the file changed that the process has not applied.

use prometheus::{Gauge, IntCounterVec, IntGauge, Registry};
use time::OffsetDateTime;

use super::{counters, gauge_value, register, Metrics};

pub(super) struct ConfigMetrics {
    reloads: IntCounterVec,
    last_ok: IntGauge,
    last_success: Gauge,
    restart_pending: IntGauge,
}

impl ConfigMetrics {
    pub(super) fn new(registry: &Registry) -> ConfigMetrics {
        ConfigMetrics {
            reloads: counters(
                registry,
                "keygate_config_reloads_total",
                "Config file reload attempts by result (ok, failed).",
                "result",
                &["ok", "failed"],
            ),
            last_ok: register(
                registry,
                IntGauge::new(
                    "keygate_config_last_reload_successful",
                    "1 when the config file as last read was valid and applied, 0 while it is refused.",
                )
                .unwrap(),
            ),
            last_success: register(
                registry,
                Gauge::new(
                    "keygate_config_last_reload_success_timestamp_seconds",
                    "Unix time the config file was last loaded and applied (at start, or by a reload).",
                )
                .unwrap(),
            ),
            restart_pending: register(
                registry,
                IntGauge::new(
                    "keygate_config_restart_pending",
                    "Restart-only settings the config file changed since start (not applied until a restart).",
                )
                .unwrap(),
            ),
        }
    }
}

impl Metrics {
    /// The config keygate started with.
    pub fn config_loaded(&self, now: OffsetDateTime) {
        self.config.last_ok.set(1);
        self.config.last_success.set(now.unix_timestamp() as f64);
    }

    /// A reload applied; `restart_pending` restart-only settings differ from the running ones.
    pub fn config_reloaded(&self, now: OffsetDateTime, restart_pending: usize) {
        self.config.reloads.with_label_values(&["ok"]).inc();
        self.config_loaded(now);
        self.config.restart_pending.set(gauge_value(restart_pending));
    }

    /// A reload refused: the running config stays.
    pub fn config_reload_failed(&self) {
        self.config.reloads.with_label_values(&["failed"]).inc();
        self.config.last_ok.set(0);
    }
}
