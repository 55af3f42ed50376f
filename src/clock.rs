//! The time keygate decides by. It is read at the edges (a request's first step, the stores,
//! the upstream pool, the alerter) and handed to the pure decisions as a value. In production
//! it is the system's clock; a test hands `app::start` a manual one that stands still until
//! the test moves it, so a cool-down, a block or an expiry is checked on both sides of its
//! boundary without sleeping. Timers (poll intervals, timeouts) stay on tokio's real time:
//! tokio's paused time cannot be used with the real sockets the tests talk through.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

/// Cheap to clone. The system clock costs what `Instant::now()` and `OffsetDateTime::now_utc()`
/// cost, plus a branch.
#[derive(Clone, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(Arc<Manual>),
}

/// A clock that reads the moment it was made, plus however far it has been advanced.
#[derive(Debug)]
pub struct Manual {
    instant: Instant,
    wall: OffsetDateTime,
    advanced_ns: AtomicU64,
}

impl Clock {
    pub fn system() -> Clock {
        Clock::System
    }

    /// For tests: stands still at the current time until `advance` moves it.
    pub fn manual() -> Clock {
        Clock::Manual(Arc::new(Manual {
            instant: Instant::now(),
            wall: OffsetDateTime::now_utc(),
            advanced_ns: AtomicU64::new(0),
        }))
    }

    /// The monotonic reading budgets, windows, blocks and idle times are measured in.
    #[inline]
    pub fn now(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            Clock::Manual(m) => m.instant + m.advanced(),
        }
    }

    /// The calendar reading key validity, tokens and usage are judged by.
    #[inline]
    pub fn wall(&self) -> OffsetDateTime {
        match self {
            Clock::System => OffsetDateTime::now_utc(),
            Clock::Manual(m) => m.wall + m.advanced(),
        }
    }

    /// Both readings at once, for a request that has just read `Instant::now()` anyway (to time
    /// itself): the system clock uses that reading instead of taking a second one.
    #[inline]
    pub fn read_at(&self, real: Instant) -> (Instant, OffsetDateTime) {
        match self {
            Clock::System => (real, OffsetDateTime::now_utc()),
            Clock::Manual(_) => (self.now(), self.wall()),
        }
    }

    /// Moves a manual clock forward; both readings move together.
    ///
    /// # Panics
    /// On the system clock, which only time moves.
    pub fn advance(&self, by: Duration) {
        let Clock::Manual(m) = self else { panic!("only a manual clock can be advanced") };
        let ns = u64::try_from(by.as_nanos()).expect("an advance under 584 years");
        m.advanced_ns.fetch_add(ns, Ordering::AcqRel);
    }
}

impl Manual {
    fn advanced(&self) -> Duration {
        Duration::from_nanos(self.advanced_ns.load(Ordering::Acquire))
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Clock::System => f.write_str("Clock::System"),
            Clock::Manual(m) => write!(f, "Clock::Manual(+{:?})", m.advanced()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_stands_still_until_advanced_and_both_readings_move_together() {
        let c = Clock::manual();
        let (i0, w0) = (c.now(), c.wall());
        assert_eq!((c.now(), c.wall()), (i0, w0));
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.now() - i0, Duration::from_millis(1500));
        assert_eq!(c.wall() - w0, time::Duration::milliseconds(1500));
        assert_eq!(c.read_at(Instant::now()), (c.now(), c.wall()));
    }

    #[test]
    fn the_system_clock_reuses_the_reading_it_is_given() {
        let real = Instant::now();
        assert_eq!(Clock::system().read_at(real).0, real);
    }
}
