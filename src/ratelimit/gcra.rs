//! The GCRA decision, over integers (nanoseconds), with the clock passed in.
//!
//! State per key: the TAT, the instant at which the key's bucket would be empty of debt.
//! A request at `now` is allowed when `max(tat, now) + T - tau <= now`, where `T` is the
//! emission interval (`period / rate`) and `tau = T * burst` the tolerance. Allowed requests
//! move the TAT forward by `T`; refused ones leave it alone, so a client hammering a full
//! bucket does not push its own recovery further away.

use std::time::Duration;

/// A tier's limit: `burst` requests at once, refilled at one every `emission`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// How many requests can go at once from a full bucket (the advertised limit).
    pub burst: u32,
    /// Nanoseconds between two requests at the sustained rate.
    pub emission_nanos: u64,
}

impl Quota {
    /// `count` requests per `period`, `burst` at once. `None` for zero or absurd values.
    pub fn new(count: u32, period: Duration, burst: u32) -> Option<Quota> {
        if count == 0 || burst == 0 || period.is_zero() {
            return None;
        }
        let emission_nanos = u64::try_from(period.as_nanos() / u128::from(count)).ok()?;
        if emission_nanos == 0 {
            return None;
        }
        Some(Quota { burst, emission_nanos })
    }

    /// The tolerance: how far ahead of `now` the TAT may run.
    pub fn tau(&self) -> u64 {
        self.emission_nanos.saturating_mul(u64::from(self.burst))
    }

    /// Seconds for an empty bucket to fill again (the window a `RateLimit-Policy` advertises).
    pub fn window_secs(&self) -> u64 {
        self.tau().div_ceil(1_000_000_000).max(1)
    }
}

/// What a decision says, in the terms the response headers and the metrics need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// The burst size (`RateLimit-Limit`).
    pub limit: u32,
    /// Requests that could go right now, after this one.
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset: Duration,
    /// Zero when allowed; else how long until one request would be.
    pub retry_after: Duration,
}

impl Verdict {
    /// At or above 80% of the burst used: worth a metric before it turns into 429s.
    pub fn near_limit(&self) -> bool {
        self.allowed && u64::from(self.remaining) * 5 <= u64::from(self.limit)
    }
}

/// Decide one request at `now` for a key whose TAT is `tat` (0 for a key never seen).
/// Returns the verdict and the TAT to store (unchanged when refused).
pub fn decide(tat: u64, now: u64, q: &Quota) -> (Verdict, u64) {
    let t = q.emission_nanos;
    let tau = q.tau();
    let new_tat = tat.max(now).saturating_add(t);
    // Allowed when new_tat - tau <= now, i.e. the debt after this request fits the tolerance.
    let allow_at = new_tat.saturating_sub(tau);
    if allow_at > now {
        let debt = tat.max(now) - now;
        let verdict = Verdict {
            allowed: false,
            limit: q.burst,
            remaining: 0,
            reset: Duration::from_nanos(debt),
            retry_after: Duration::from_nanos(allow_at - now),
        };
        return (verdict, tat);
    }
    let debt = new_tat - now;
    let remaining = (tau - debt) / t;
    let verdict = Verdict {
        allowed: true,
        limit: q.burst,
        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        reset: Duration::from_nanos(debt),
        retry_after: Duration::ZERO,
    };
    (verdict, new_tat)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn quota(rate: u32, burst: u32) -> Quota {
        Quota::new(rate, Duration::from_secs(1), burst).unwrap()
    }

    /// Runs `n` requests at the same instant; returns how many were allowed and the last TAT.
    fn burst_at(mut tat: u64, now: u64, q: &Quota, n: u32) -> (u32, u64, Vec<Verdict>) {
        let mut allowed = 0;
        let mut all = Vec::new();
        for _ in 0..n {
            let (v, next) = decide(tat, now, q);
            tat = next;
            allowed += u32::from(v.allowed);
            all.push(v);
        }
        (allowed, tat, all)
    }

    #[test]
    fn a_full_bucket_lets_exactly_burst_through_at_once() {
        let q = quota(10, 20);
        let (allowed, _, v) = burst_at(0, 100 * SEC, &q, 21);
        assert_eq!(allowed, 20);
        assert!(!v[20].allowed, "request burst+1 is refused");
        assert_eq!(v[0].remaining, 19);
        assert_eq!(v[19].remaining, 0);
    }

    #[test]
    fn refill_is_one_request_per_emission_interval() {
        let q = quota(10, 5);
        let now = 50 * SEC;
        let (_, tat, _) = burst_at(0, now, &q, 5);
        let (v, _) = decide(tat, now + SEC / 10 - 1, &q);
        assert!(!v.allowed, "not before 100 ms have passed");
        assert_eq!(v.retry_after, Duration::from_nanos(1));
        let (v, tat) = decide(tat, now + SEC / 10, &q);
        assert!(v.allowed);
        assert_eq!(v.remaining, 0);
        // After a whole window, the bucket is full again.
        let (n, _, _) = burst_at(tat, now + 10 * SEC, &q, 6);
        assert_eq!(n, 5);
    }

    #[test]
    fn no_boundary_burst_the_way_fixed_windows_allow() {
        // A fixed window of 10/s lets 20 through across a second boundary; GCRA with burst 10
        // lets 10 plus what refilled in between.
        let q = quota(10, 10);
        let (a, tat, _) = burst_at(0, 10 * SEC - 1, &q, 10);
        let (b, _, _) = burst_at(tat, 10 * SEC + 1, &q, 10);
        assert_eq!(a, 10);
        assert_eq!(b, 0, "2 ns later nothing has refilled");
    }

    #[test]
    fn refused_requests_do_not_push_recovery_further() {
        let q = quota(1, 1);
        let (v, tat) = decide(0, SEC, &q);
        assert!(v.allowed);
        for _ in 0..100 {
            let (v, same) = decide(tat, SEC + 1, &q);
            assert!(!v.allowed);
            assert_eq!(same, tat);
        }
        assert!(decide(tat, 2 * SEC, &q).0.allowed);
    }

    #[test]
    fn reset_and_retry_after_are_honest() {
        let q = quota(2, 4); // T = 500 ms, tau = 2 s
        let (_, tat, v) = burst_at(0, 10 * SEC, &q, 5);
        assert_eq!(v[3].reset, Duration::from_secs(2), "four used: two seconds to refill");
        assert!(!v[4].allowed);
        assert_eq!(v[4].retry_after, Duration::from_millis(500));
        assert_eq!(v[4].reset, Duration::from_secs(2));
        assert_eq!(tat, 12 * SEC);
        assert_eq!(q.window_secs(), 2);
    }

    #[test]
    fn near_limit_from_eighty_percent_used() {
        let q = quota(10, 10);
        let (_, _, v) = burst_at(0, SEC, &q, 10);
        assert!(!v[6].near_limit(), "7 used, 3 left");
        assert!(v[7].near_limit(), "8 used, 2 left");
        assert!(v[9].near_limit());
    }

    #[test]
    fn degenerate_quotas_are_refused() {
        assert!(Quota::new(0, Duration::from_secs(1), 1).is_none());
        assert!(Quota::new(1, Duration::from_secs(1), 0).is_none());
        assert!(Quota::new(1, Duration::ZERO, 1).is_none());
        assert!(Quota::new(u32::MAX, Duration::from_nanos(1), 1).is_none());
    }
}
