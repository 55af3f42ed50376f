//! The admin key API: every call by operation and answer code, so an operator sees key changes
//! made over HTTP and a burst of refused tokens (`ADMIN_TOKEN_REQUIRED`) without reading logs.

use prometheus::{IntCounterVec, Opts, Registry};

use super::{register, Metrics};

/// Every operation the API has (`none`: a path or method it does not route).
pub const ADMIN_OPERATIONS: &[&str] = &["list", "create", "show", "update", "rotate", "revoke", "events", "none"];

pub(super) struct AdminMetrics {
    calls: IntCounterVec,
}

impl AdminMetrics {
    pub(super) fn new(registry: &Registry) -> AdminMetrics {
        let calls = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "keygate_admin_key_api_requests_total",
                    "Admin key API calls by operation and answer code (OK or the error code).",
                ),
                &["operation", "code"],
            )
            .unwrap(),
        );
        for op in ADMIN_OPERATIONS {
            calls.with_label_values(&[op, "OK"]);
        }
        AdminMetrics { calls }
    }
}

impl Metrics {
    /// One admin key API call; `operation` is one of `ADMIN_OPERATIONS`, `code` an answer code.
    pub fn admin_call(&self, operation: &'static str, code: &'static str) {
        self.admin.calls.with_label_values(&[operation, code]).inc();
    }
}
