//! Report-only (shadow) mode: the refusals it passed over, by the code an enforcing keygate
//! would have answered and the route, so a rollout can be watched before it is enforced.

use prometheus::{IntCounterVec, Opts, Registry};

use super::{register, Metrics};
use crate::error::REPORTABLE_CODES;

pub(super) struct ShadowMetrics {
    would_refuse: IntCounterVec,
}

impl ShadowMetrics {
    pub(super) fn new(registry: &Registry) -> ShadowMetrics {
        let opts = Opts::new(
            "keygate_would_refuse_total",
            "Requests forwarded in report-only mode (enforce: false) that an enforcing keygate would have \
             refused, by the code it would have answered and the route pattern.",
        );
        ShadowMetrics { would_refuse: register(registry, IntCounterVec::new(opts, &["code", "route"]).unwrap()) }
    }
}

impl Metrics {
    /// A refusal report-only mode passed over (`code` is one of `REPORTABLE_CODES`).
    pub fn would_refuse(&self, code: &str, route: &str) {
        self.shadow.would_refuse.with_label_values(&[code, route]).inc();
    }

    /// `keygate_would_refuse_total` at 0 from the start for each route given and every code,
    /// so `increase()` sees a route's first would-be refusal.
    pub fn would_refuse_known<'a>(&self, routes: impl IntoIterator<Item = &'a str>) {
        for route in routes {
            for code in REPORTABLE_CODES {
                self.shadow.would_refuse.with_label_values(&[code, route]);
            }
        }
    }
}
