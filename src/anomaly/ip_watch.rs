//! Invalid-key bursts per client address. Each address has a GCRA budget of `threshold`
//! invalid keys per `window`; spending past it is a burst. With blocking configured, the
//! address is then refused outright for `block_for`, whatever key it presents.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use super::{nanos, Anomaly, InvalidKeyBurst, Kind, Subject};
use crate::ratelimit::{ip_subject, LocalLimiter, Quota};

/// The budgets and blocks are shared with the watch a reload builds from this one.
pub struct IpWatch {
    budget: Option<Quota>,
    invalid: Arc<LocalLimiter<IpAddr>>,
    block_for: Option<u64>,
    threshold: u32,
    window: Duration,
    /// Address → monotonic nanos when the block ends.
    blocked: Arc<DashMap<IpAddr, u64>>,
    /// Mirrors `blocked.len()` so the common case (nobody blocked) skips the map.
    n_blocked: Arc<AtomicUsize>,
}

impl IpWatch {
    pub fn new(s: &InvalidKeyBurst) -> IpWatch {
        IpWatch {
            budget: Quota::new(s.threshold, s.window, s.threshold),
            invalid: Arc::new(LocalLimiter::new(100_000)),
            block_for: s.block_for.map(nanos),
            threshold: s.threshold,
            window: s.window,
            blocked: Arc::default(),
            n_blocked: Arc::default(),
        }
    }

    /// The same watch under new settings: blocks in force run to the end they were given, and
    /// each address's count of invalid keys carries over to the new threshold.
    pub fn reconfigured(&self, s: &InvalidKeyBurst) -> IpWatch {
        IpWatch {
            invalid: Arc::clone(&self.invalid),
            blocked: Arc::clone(&self.blocked),
            n_blocked: Arc::clone(&self.n_blocked),
            ..IpWatch::new(s)
        }
    }

    /// How long the address stays blocked, if it is.
    pub fn blocked(&self, ip: IpAddr, now: u64) -> Option<Duration> {
        if self.n_blocked.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let until = *self.blocked.get(&ip_subject(ip))?;
        (until > now).then(|| Duration::from_nanos(until - now))
    }

    /// One invalid key from `ip`. Returns the anomaly when this one exceeds the budget (and
    /// blocks the address if configured).
    pub fn invalid_key(&self, ip: IpAddr, now: u64) -> Option<Anomaly> {
        let budget = self.budget.as_ref()?;
        let subject = ip_subject(ip);
        if self.invalid.check(&subject, budget, now).allowed {
            return None;
        }
        if let Some(d) = self.block_for {
            if self.blocked.insert(subject, now.saturating_add(d)).is_none() {
                self.n_blocked.fetch_add(1, Ordering::Relaxed);
            }
        }
        Some(Anomaly {
            kind: Kind::InvalidKeyBurst,
            subject: Subject::Ip(subject),
            detail: format!(
                "more than {} invalid keys in {}{}",
                self.threshold,
                humantime::format_duration(self.window),
                if self.block_for.is_some() { "; address blocked" } else { "" }
            ),
        })
    }

    pub fn blocked_count(&self) -> usize {
        self.n_blocked.load(Ordering::Relaxed)
    }

    pub fn sweep(&self, now: u64) {
        self.invalid.sweep(now);
        self.blocked.retain(|_, until| *until > now);
        self.n_blocked.store(self.blocked.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::BlockStatus;

    const SEC: u64 = 1_000_000_000;

    fn watch(block: Option<Duration>) -> IpWatch {
        IpWatch::new(&InvalidKeyBurst {
            threshold: 5,
            window: Duration::from_secs(60),
            block_for: block,
            block_status: BlockStatus::TooManyRequests,
        })
    }

    #[test]
    fn a_burst_fires_past_the_threshold_not_before() {
        let w = watch(None);
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(w.invalid_key(ip, SEC), None);
        }
        let a = w.invalid_key(ip, SEC).expect("the sixth invalid key in a minute is a burst");
        assert_eq!(a.kind, Kind::InvalidKeyBurst);
        assert_eq!(a.subject, Subject::Ip(ip));
        assert!(a.detail.contains("more than 5 invalid keys in 1m"), "{}", a.detail);
        assert_eq!(w.blocked(ip, SEC), None, "reporting only");
    }

    #[test]
    fn ordinary_typos_do_not_fire() {
        // One invalid key every 15 s is four a minute: under a threshold of five, forever.
        let w = watch(None);
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        for i in 0..100 {
            assert_eq!(w.invalid_key(ip, i * 15 * SEC), None);
        }
    }

    #[test]
    fn a_block_covers_the_address_for_its_duration() {
        let w = watch(Some(Duration::from_secs(300)));
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let other: IpAddr = "203.0.113.10".parse().unwrap();
        for _ in 0..6 {
            w.invalid_key(ip, SEC);
        }
        assert_eq!(w.blocked(ip, 2 * SEC), Some(Duration::from_secs(299)));
        assert_eq!(w.blocked(other, 2 * SEC), None);
        assert_eq!(w.blocked_count(), 1);
        assert_eq!(w.blocked(ip, 301 * SEC), None, "the block ends");
        w.sweep(301 * SEC);
        assert_eq!(w.blocked_count(), 0);
    }

    #[test]
    fn a_reload_keeps_blocks_and_counts_under_the_new_threshold() {
        let w = watch(Some(Duration::from_secs(300)));
        let (blocked, counted): (IpAddr, IpAddr) = ("203.0.113.9".parse().unwrap(), "203.0.113.20".parse().unwrap());
        for _ in 0..6 {
            w.invalid_key(blocked, SEC);
        }
        for _ in 0..5 {
            assert_eq!(w.invalid_key(counted, SEC), None);
        }
        let after = w.reconfigured(&InvalidKeyBurst {
            threshold: 5,
            window: Duration::from_secs(60),
            block_for: Some(Duration::from_secs(10)),
            block_status: BlockStatus::Forbidden,
        });
        assert_eq!(after.blocked(blocked, 2 * SEC), Some(Duration::from_secs(299)), "the block runs its course");
        assert!(after.invalid_key(counted, SEC).is_some(), "five invalid keys before the reload count");
        assert_eq!(after.blocked(counted, SEC), Some(Duration::from_secs(10)), "the new block length applies");
    }
}
