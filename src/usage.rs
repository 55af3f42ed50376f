//! Per-key usage for operators (`GET /admin/keys/{id}`, `keygate keys show`): when a key was
//! last used and its responses by status class. Entries exist only for keys that were used,
//! and only for ids from the key table, so an attacker cannot grow this map. With the
//! PostgreSQL store the counts are also written back (`pgstore::usage`): `Counts::since` is the
//! rule for what a flush adds.

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

impl Usage {
    fn counts(&self) -> Counts {
        Counts {
            last_used_ms: self.last_used_unix_ms.load(Ordering::Relaxed),
            by_class: std::array::from_fn(|i| self.by_class[i].load(Ordering::Relaxed)),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
        }
    }
}

/// One key's counters as plain numbers: a snapshot, or what a flush adds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Unix ms; 0 = never.
    pub last_used_ms: i64,
    /// 1xx..5xx.
    pub by_class: [u64; 5],
    pub rate_limited: u64,
}

impl Counts {
    /// What `self` (a snapshot now) adds to `written` (the snapshot the store last accepted):
    /// `None` when nothing is new. Counters that went down belong to an entry that was dropped
    /// and counted again from zero, so all of theirs is new.
    pub fn since(&self, written: &Counts) -> Option<Counts> {
        let sub = |now: u64, was: u64| if now >= was { now - was } else { now };
        let d = Counts {
            last_used_ms: self.last_used_ms,
            by_class: std::array::from_fn(|i| sub(self.by_class[i], written.by_class[i])),
            rate_limited: sub(self.rate_limited, written.rate_limited),
        };
        let counted = d.by_class.iter().any(|n| *n > 0) || d.rate_limited > 0;
        (counted || self.last_used_ms > written.last_used_ms).then_some(d)
    }
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

    /// Every entry's counts as of now (for the write-back; walks the map).
    pub fn snapshot(&self) -> Vec<(Arc<str>, Counts)> {
        self.by_id.iter().map(|e| (Arc::clone(e.key()), e.value().counts())).collect()
    }

    /// Drops the entries `idle` says may go, unless a request is counting into one right now
    /// (it holds the entry while it does). Returns the ids dropped.
    pub fn forget(&self, idle: impl Fn(&str, &Counts) -> bool) -> Vec<Arc<str>> {
        let candidates: Vec<Arc<str>> =
            self.by_id.iter().filter(|e| idle(e.key(), &e.value().counts())).map(|e| Arc::clone(e.key())).collect();
        candidates
            .into_iter()
            .filter(|id| {
                // The shard is write-locked here: a count clones the entry under the read lock,
                // so a count of one means nobody is between finding it and counting.
                self.by_id.remove_if(id, |id, u| Arc::strong_count(u) == 1 && idle(id, &u.counts())).is_some()
            })
            .collect()
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

    #[test]
    fn a_flush_adds_only_what_is_new_since_the_last_accepted_one() {
        let written = Counts { last_used_ms: 1_000, by_class: [0, 5, 0, 2, 0], rate_limited: 1 };
        let now = Counts { last_used_ms: 2_000, by_class: [0, 7, 0, 2, 1], rate_limited: 1 };
        assert_eq!(
            now.since(&written),
            Some(Counts { last_used_ms: 2_000, by_class: [0, 2, 0, 0, 1], rate_limited: 0 })
        );
        assert_eq!(written.since(&written), None, "nothing new, nothing written");
        assert_eq!(now.since(&Counts::default()), Some(now), "first flush: everything");
    }

    #[test]
    fn counters_that_went_down_started_again_from_zero() {
        let written = Counts { last_used_ms: 5_000, by_class: [0, 9, 0, 0, 0], rate_limited: 3 };
        let recounted = Counts { last_used_ms: 6_000, by_class: [0, 2, 0, 1, 0], rate_limited: 1 };
        assert_eq!(recounted.since(&written), Some(recounted));
    }

    #[test]
    fn snapshot_and_forget_leave_busy_entries_alone() {
        let b = UsageBook::default();
        b.record("idle", 200, 1_000);
        b.record("busy", 200, 1_000);
        let snap: std::collections::HashMap<_, _> = b.snapshot().into_iter().collect();
        assert_eq!(snap[&Arc::from("idle")].by_class[1], 1);
        let held = Arc::clone(&b.by_id.get("busy").unwrap());
        let gone = b.forget(|_, _| true);
        assert_eq!(gone, vec![Arc::<str>::from("idle")]);
        assert_eq!(b.view("busy").requests.c2, 1, "an entry a request holds stays");
        drop(held);
        assert_eq!(b.forget(|id, _| id == "busy").len(), 1);
        assert!(b.is_empty());
    }
}
