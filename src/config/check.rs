//! The problem collector every section's validation writes into, with the parsers for the
//! value shapes many sections share (durations, addresses, methods).

use std::net::SocketAddr;
use std::time::Duration;

use http::Method;

/// Collects problems instead of stopping at the first, so one run shows them all.
pub(super) struct Check(pub(super) Vec<String>);

impl Check {
    pub(super) fn val<T, E: std::fmt::Display>(&mut self, field: &str, r: Result<T, E>) -> Option<T> {
        r.map_err(|e| self.0.push(format!("{field}: {e}"))).ok()
    }

    pub(super) fn duration(&mut self, field: &str, v: &Option<String>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => self
                .val(field, humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 500ms, 10s, 2m)")))
                .unwrap_or(default),
        }
    }

    pub(super) fn addr(&mut self, field: &str, v: &Option<String>, default: &str) -> SocketAddr {
        let s = v.as_deref().unwrap_or(default);
        self.val(field, s.parse::<SocketAddr>().map_err(|e| format!("{s:?}: {e} (expected ip:port)")))
            .unwrap_or_else(|| default.parse().expect("default address parses"))
    }

    pub(super) fn methods(&mut self, field: &str, v: &Option<Vec<String>>, default: &[Method]) -> Vec<Method> {
        match v {
            None => default.to_vec(),
            Some(list) => list
                .iter()
                .filter_map(|m| {
                    let upper = m.to_ascii_uppercase();
                    self.val(
                        field,
                        Method::from_bytes(upper.as_bytes()).map_err(|_| format!("{m:?} is not an HTTP method")),
                    )
                })
                .collect(),
        }
    }
}
