//! How current the in-memory key table is, for a store that can fall behind (PostgreSQL): the
//! last instant the replica knew it had every change, and the rule for when that is too old to
//! serve from. Atomics only, read once per request; the instant is passed in, read from the
//! clock this was made with (`now`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::clock::Clock;

#[derive(Debug)]
pub struct Freshness {
    clock: Clock,
    epoch: Instant,
    /// Milliseconds after `epoch` at which the view was last known current, plus one; 0 = never.
    current_at: AtomicU64,
    max_staleness: Duration,
    serve_stale: bool,
}

impl Freshness {
    pub fn new(max_staleness: Duration, serve_stale: bool, clock: Clock) -> Freshness {
        Freshness { epoch: clock.now(), clock, current_at: AtomicU64::new(0), max_staleness, serve_stale }
    }

    /// A reading of the clock the view's age is measured on.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// The view held every change committed before `as_of` (when the confirming query started).
    pub fn mark_current(&self, as_of: Instant) {
        let ms = u64::try_from(as_of.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX - 1);
        self.current_at.fetch_max(ms + 1, Ordering::AcqRel);
    }

    /// How old the view is at `now`; `None` before the first sync.
    pub fn age(&self, now: Instant) -> Option<Duration> {
        match self.current_at.load(Ordering::Acquire) {
            0 => None,
            ms => Some(now.saturating_duration_since(self.epoch + Duration::from_millis(ms - 1))),
        }
    }

    /// Whether requests may be decided from the view at `now`. Never before a first sync: an
    /// empty table would call every key invalid.
    pub fn may_serve(&self, now: Instant) -> bool {
        match self.age(now) {
            None => false,
            Some(age) => self.serve_stale || age <= self.max_staleness,
        }
    }

    pub fn max_staleness(&self) -> Duration {
        self.max_staleness
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_served_before_the_first_sync() {
        let f = Freshness::new(Duration::from_secs(1), true, Clock::system());
        assert_eq!(f.age(f.now()), None);
        assert!(!f.may_serve(f.now()), "even with on_stale: serve");
    }

    #[test]
    fn past_max_staleness_refuses_unless_told_to_serve() {
        let (refuse, serve) = (
            Freshness::new(Duration::from_secs(1), false, Clock::system()),
            Freshness::new(Duration::from_secs(1), true, Clock::system()),
        );
        // On the epoch itself: the mark is kept in whole milliseconds, rounded to the older side.
        refuse.mark_current(refuse.epoch);
        serve.mark_current(serve.epoch);
        assert!(refuse.may_serve(refuse.epoch + Duration::from_millis(1000)));
        assert!(!refuse.may_serve(refuse.epoch + Duration::from_millis(1001)));
        assert!(serve.may_serve(serve.epoch + Duration::from_secs(3600)));
    }

    #[test]
    fn an_older_confirmation_never_moves_the_mark_back() {
        let f = Freshness::new(Duration::from_secs(1), false, Clock::system());
        let t0 = f.epoch;
        f.mark_current(t0 + Duration::from_secs(5));
        f.mark_current(t0);
        assert_eq!(f.age(t0 + Duration::from_secs(6)), Some(Duration::from_secs(1)));
    }
}
