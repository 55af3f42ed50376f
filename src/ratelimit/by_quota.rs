//! Budgets kept per quota, so that a config reload keeps a key's bucket exactly when the quota
//! it counts against did not change. A TAT means nothing under another quota (a key that spent
//! a 1-per-minute tier would owe a minute under a 100-per-second one), so a changed quota starts
//! its subjects with a full bucket instead.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use super::gcra::{Quota, Verdict};
use super::local::{LocalLimiter, Subject};

pub struct ByQuota<K: Hash + Eq, S> {
    /// A handful (one per tier): a scan beats hashing the quota.
    maps: Vec<(Quota, Arc<LocalLimiter<K, S>>)>,
    /// For a quota not configured (callers that pass their own, such as benchmarks and tests).
    others: Arc<LocalLimiter<K, S>>,
    max_subjects: usize,
}

impl<K: Hash + Eq, S: BuildHasher + Clone + Default> ByQuota<K, S> {
    pub fn new(max_subjects: usize) -> Self {
        ByQuota { maps: Vec::new(), others: Arc::new(LocalLimiter::new(max_subjects)), max_subjects }
    }

    /// The maps for `quotas`: each one this already keeps is shared (its buckets carry over),
    /// each new one starts empty (full buckets); maps for quotas no longer listed are dropped
    /// with the last snapshot that holds them.
    pub fn configured(&self, quotas: impl IntoIterator<Item = Quota>) -> Self {
        let mut maps: Vec<(Quota, Arc<LocalLimiter<K, S>>)> = Vec::new();
        for q in quotas {
            if maps.iter().any(|(m, _)| *m == q) {
                continue;
            }
            let map = match self.maps.iter().find(|(m, _)| *m == q) {
                Some((_, kept)) => Arc::clone(kept),
                None => Arc::new(LocalLimiter::new(self.max_subjects)),
            };
            maps.push((q, map));
        }
        ByQuota { maps, others: Arc::clone(&self.others), max_subjects: self.max_subjects }
    }

    pub fn check<Q>(&self, subject: &Q, quota: &Quota, now: u64) -> Verdict
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized + Subject<K>,
    {
        let map = self.maps.iter().find(|(q, _)| q == quota).map_or(&self.others, |(_, m)| m);
        map.check(subject, quota, now)
    }

    pub fn sweep(&self, now: u64) {
        self.maps.iter().for_each(|(_, m)| m.sweep(now));
        self.others.sweep(now);
    }

    pub fn len(&self) -> usize {
        self.maps.iter().map(|(_, m)| m.len()).sum::<usize>() + self.others.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SEC: u64 = 1_000_000_000;

    fn q(n: u32, burst: u32) -> Quota {
        Quota::new(n, Duration::from_secs(60), burst).unwrap()
    }

    #[test]
    fn an_unchanged_quota_keeps_its_buckets_and_a_changed_one_starts_full() {
        let (small, other) = (q(1, 1), q(2, 2));
        let before: ByQuota<Arc<str>, std::hash::RandomState> = ByQuota::new(100).configured([small, other]);
        assert!(before.check("k", &small, SEC).allowed);
        assert!(before.check("j", &other, SEC).allowed);
        assert!(before.check("j", &other, SEC).allowed);
        assert!(!before.check("k", &small, SEC).allowed, "spent");

        let bigger = q(100, 100);
        let after = before.configured([bigger, other]);
        assert!(after.check("k", &bigger, SEC).allowed, "the new quota starts the key with a full bucket");
        assert!(!after.check("j", &other, SEC).allowed, "the unchanged quota kept what j spent");
        assert!(!before.check("k", &small, SEC).allowed, "the old snapshot still sees its own buckets");
    }

    #[test]
    fn an_unlisted_quota_still_limits() {
        let b: ByQuota<Arc<str>, std::hash::RandomState> = ByQuota::new(100);
        let one = q(1, 1);
        assert!(b.check("k", &one, SEC).allowed);
        assert!(!b.check("k", &one, SEC).allowed);
        assert_eq!(b.len(), 1);
    }
}
