//! Per-key usage for operators (`GET /admin/keys/{id}`, `keygate keys show`): when a key was
//! last used and its responses by status class. Entries exist only for keys that were used,
//! and only for ids from the key table, so an attacker cannot grow this map.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use serde::Serialize;

#[derive(Debug, Default)]
pub struct Usage {
    last_used_unix_ms: AtomicI64,
    by_class: [AtomicU64; 5],
    rate_limited: AtomicU64,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct UsageView {
    pub last_used_at: Option<String>,
    pub requests: RequestsByClass,
    /// 429s answered to this key (counted in 4xx too).
    pub rate_limited: u64,
}

#[derive(Debug, Serialize, PartialEq, Eq, Default)]
pub struct RequestsByClass {
    #[serde(rename = "1xx")]
    pub c1: u64,
    #[serde(rename = "2xx")]
    pub c2: u64,
    #[serde(rename = "3xx")]
    pub c3: u64,
    #[serde(rename = "4xx")]
    pub c4: u64,
    #[serde(rename = "5xx")]
    pub c5: u64,
}

#[derive(Default)]
pub struct UsageBook {
    /// Key ids come from the key table: the fast hasher is safe.
    by_id: DashMap<Arc<str>, Arc<Usage>, rustc_hash::FxBuildHasher>,
}

impl UsageBook {
    /// Counts one response for a key that authenticated (ids come from the table only).
    pub fn record(&self, key_id: &str, status: u16, now_unix_ms: i64) {
        let usage = match self.by_id.get(key_id) {
            Some(u) => Arc::clone(&u),
            None => Arc::clone(&self.by_id.entry(Arc::from(key_id)).or_default()),
        };
        usage.last_used_unix_ms.fetch_max(now_unix_ms, Ordering::Relaxed);
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        usage.by_class[class].fetch_add(1, Ordering::Relaxed);
        if status == 429 {
            usage.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn view(&self, key_id: &str) -> UsageView {
        let Some(u) = self.by_id.get(key_id).map(|u| Arc::clone(&u)) else {
            return UsageView { last_used_at: None, requests: RequestsByClass::default(), rate_limited: 0 };
        };
        let n = |i: usize| u.by_class[i].load(Ordering::Relaxed);
        let ms = u.last_used_unix_ms.load(Ordering::Relaxed);
        let last = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
        UsageView {
            last_used_at: last,
            requests: RequestsByClass { c1: n(0), c2: n(1), c3: n(2), c4: n(3), c5: n(4) },
            rate_limited: u.rate_limited.load(Ordering::Relaxed),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Drops entries of keys no longer in the table (after a reload).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.by_id.retain(|id, _| keep(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_class_and_keeps_the_latest_time() {
        let b = UsageBook::default();
        b.record("k", 200, 2_000);
        b.record("k", 403, 1_000);
        b.record("k", 502, 3_000);
        b.record("k", 429, 2_500);
        let v = b.view("k");
        assert_eq!(v.requests, RequestsByClass { c2: 1, c4: 2, c5: 1, ..Default::default() });
        assert_eq!(v.rate_limited, 1);
        assert_eq!(v.last_used_at.as_deref(), Some("1970-01-01T00:00:03Z"));
        assert_eq!(b.view("other").last_used_at, None);
        b.retain(|id| id != "k");
        assert_eq!(b.view("k").requests, RequestsByClass::default());
    }
}
