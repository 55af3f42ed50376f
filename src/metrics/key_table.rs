//! The in-memory key table: its keys by environment and state, and its loads.

use prometheus::{Gauge, IntCounterVec, IntGaugeVec, Registry};
use time::OffsetDateTime;

use super::{counters, gauges, register, Metrics};
use crate::keys::table::KeyState;
use crate::keys::{Environment, KeyTable};

pub(super) struct KeyTableMetrics {
    keys: IntGaugeVec,
    reloads: IntCounterVec,
    last_reload: Gauge,
}

impl KeyTableMetrics {
    pub(super) fn new(registry: &Registry) -> KeyTableMetrics {
        KeyTableMetrics {
            keys: gauges(
                registry,
                "keygate_key_table_keys",
                "Keys in the loaded table by environment and state.",
                &["environment", "state"],
                &[],
            ),
            reloads: counters(
                registry,
                "keygate_key_table_reloads_total",
                "Key table reload attempts by result (ok, failed).",
                "result",
                &["ok", "failed"],
            ),
            last_reload: register(
                registry,
                Gauge::new(
                    "keygate_key_table_last_reload_success_timestamp_seconds",
                    "Unix time of the last successful key table load.",
                )
                .unwrap(),
            ),
        }
    }
}

impl Metrics {
    pub fn table_loaded(&self, table: &KeyTable, now: OffsetDateTime) {
        self.key_table.reloads.with_label_values(&["ok"]).inc();
        self.key_table.last_reload.set(now.unix_timestamp() as f64);
        self.key_census(table, now);
    }

    pub fn table_reload_failed(&self) {
        self.key_table.reloads.with_label_values(&["failed"]).inc();
    }

    /// Expiry moves keys between states without a reload, so this also runs on a timer.
    pub fn key_census(&self, table: &KeyTable, now: OffsetDateTime) {
        for ((env, state), n) in table.census(now) {
            let env: Environment = env;
            let state: KeyState = state;
            self.key_table.keys.with_label_values(&[env.as_str(), state.as_str()]).set(n as i64);
        }
    }
}
