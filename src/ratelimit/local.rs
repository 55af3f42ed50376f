//! The in-process store: one TAT per subject in a sharded map, updated with a compare-and-swap
//! (no lock is held beyond the shard read guard, and never across an await). Subjects whose
//! bucket is full again carry no information and are swept away, so the map holds only the
//! keys and addresses that were busy in the last window.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::gcra::{decide, Quota, Verdict};

/// `S` is the map's hasher: SipHash (the default) where an attacker picks the subjects (client
/// addresses), FxHash where the table does (key ids).
pub struct LocalLimiter<K: Hash + Eq, S = std::hash::RandomState> {
    buckets: DashMap<K, AtomicU64, S>,
    /// Beyond this many subjects, new ones share one bucket: a flood of distinct addresses
    /// cannot grow memory, and cannot escape the limit either.
    max_subjects: usize,
    overflow: AtomicU64,
}

impl<K: Hash + Eq, S: std::hash::BuildHasher + Clone + Default> LocalLimiter<K, S> {
    pub fn new(max_subjects: usize) -> Self {
        LocalLimiter { buckets: DashMap::with_hasher(S::default()), max_subjects, overflow: AtomicU64::new(0) }
    }

    /// Decide one request for `subject` at `now` (nanoseconds on a monotonic clock).
    pub fn check<Q>(&self, subject: &Q, quota: &Quota, now: u64) -> Verdict
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized + Subject<K>,
    {
        if let Some(cell) = self.buckets.get(subject) {
            return update(&cell, quota, now);
        }
        if self.buckets.len() >= self.max_subjects {
            return update(&self.overflow, quota, now);
        }
        let cell = self.buckets.entry(subject.to_key()).or_insert_with(|| AtomicU64::new(0));
        update(&cell, quota, now)
    }

    /// Drops subjects whose bucket has refilled completely by `now`.
    pub fn sweep(&self, now: u64) {
        self.buckets.retain(|_, tat| tat.load(Ordering::Relaxed) > now);
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// How a borrowed subject becomes a map key, only when it is first seen.
pub trait Subject<K> {
    fn to_key(&self) -> K;
}

impl Subject<Arc<str>> for str {
    fn to_key(&self) -> Arc<str> {
        Arc::from(self)
    }
}

impl<T: Copy> Subject<T> for T {
    fn to_key(&self) -> T {
        *self
    }
}

fn update(cell: &AtomicU64, quota: &Quota, now: u64) -> Verdict {
    let mut tat = cell.load(Ordering::Acquire);
    loop {
        let (verdict, next) = decide(tat, now, quota);
        if next == tat {
            return verdict;
        }
        match cell.compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return verdict,
            Err(seen) => tat = seen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn subjects_have_separate_budgets() {
        let l: LocalLimiter<Arc<str>> = LocalLimiter::new(100);
        let q = Quota::new(1, Duration::from_secs(1), 2).unwrap();
        assert!(l.check("a", &q, SEC).allowed);
        assert!(l.check("a", &q, SEC).allowed);
        assert!(!l.check("a", &q, SEC).allowed);
        assert!(l.check("b", &q, SEC).allowed);
    }

    #[test]
    fn sweep_forgets_only_full_buckets() {
        let l: LocalLimiter<Arc<str>> = LocalLimiter::new(100);
        let q = Quota::new(1, Duration::from_secs(1), 5).unwrap();
        l.check("idle", &q, SEC);
        for _ in 0..5 {
            l.check("busy", &q, 3 * SEC);
        }
        l.sweep(3 * SEC);
        assert_eq!(l.len(), 1, "idle refilled by now, busy owes five seconds");
        assert!(!l.check("busy", &q, 3 * SEC).allowed, "sweeping did not reset the busy key");
    }

    #[test]
    fn past_the_cap_newcomers_share_one_bucket() {
        let l: LocalLimiter<u32> = LocalLimiter::new(2);
        let q = Quota::new(1, Duration::from_secs(1), 1).unwrap();
        assert!(l.check(&1, &q, SEC).allowed);
        assert!(l.check(&2, &q, SEC).allowed);
        assert!(l.check(&3, &q, SEC).allowed, "the overflow bucket's first request");
        assert!(!l.check(&4, &q, SEC).allowed, "a fourth address is charged to the same overflow");
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn concurrent_requests_never_exceed_the_burst() {
        let l: Arc<LocalLimiter<Arc<str>>> = Arc::new(LocalLimiter::new(10));
        let q = Quota::new(1, Duration::from_secs(3600), 1000).unwrap();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let l = Arc::clone(&l);
                std::thread::spawn(move || (0..1000).filter(|_| l.check("k", &q, SEC).allowed).count())
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 1000);
    }
}
