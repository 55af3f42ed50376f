//! The circuit breaker in front of Redis: lock-free, on the limiter's own monotonic clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Open means "until" (nanoseconds since the limiter started); 0 means closed. While open, calls
/// fail at once; the first call after the deadline pushes it on and probes, so a down Redis sees
/// one attempt per `retry_after` from each replica, not one per request.
pub(super) struct Breaker {
    open_until: AtomicU64,
    pub(super) retry_after: Duration,
    /// How long a probe keeps others out: it may take up to the call timeout.
    probe_hold: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admit {
    Closed,
    Probe,
    Reject,
}

impl Breaker {
    pub(super) fn new(retry_after: Duration, timeout: Duration) -> Breaker {
        Breaker { open_until: AtomicU64::new(0), retry_after, probe_hold: retry_after.max(timeout) }
    }

    pub(super) fn admit(&self, now: u64) -> Admit {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Admit::Closed;
        }
        if now < until {
            return Admit::Reject;
        }
        let hold = deadline(now, self.probe_hold);
        match self.open_until.compare_exchange(until, hold, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Admit::Probe,
            Err(_) => Admit::Reject,
        }
    }

    /// True when this failure opened the circuit (for a single log line per outage).
    pub(super) fn failure(&self, now: u64) -> bool {
        self.open_until.swap(deadline(now, self.retry_after), Ordering::AcqRel) == 0
    }

    /// True when this success closed the circuit. No write while already closed: this runs on
    /// every call, from every thread.
    pub(super) fn success(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0 && self.open_until.swap(0, Ordering::AcqRel) != 0
    }

    pub(super) fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }
}

/// Never 0, which means "closed".
pub(super) fn deadline(now: u64, after: Duration) -> u64 {
    now.saturating_add(u64::try_from(after.as_nanos()).unwrap_or(u64::MAX)).max(1)
}
