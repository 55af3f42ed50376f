//! Usage limits that are volumes, not rates: a key's credit balance (spent by each forwarded
//! request at its route's cost, optionally refilled at a fixed UTC time) and calendar quotas per
//! UTC day and month (per tier, or per key). One pure state transition (`decide`) over one
//! counter per key; the local store keeps counters in memory, the Redis script runs the same
//! transition atomically for the fleet. Every field of a counter only moves forward (revision,
//! refill period, top-up total, day, month), so replicas that see a change at different moments
//! (a reload, a clock a little behind) can never apply it twice or undo it.

pub mod local;
pub mod period;

pub use period::{Interval, Refill};

/// A key's credits, as its table entry configures them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CreditPlan {
    /// The balance the key starts with (or was last set to).
    pub balance: u64,
    /// Raised by every `credits set`: a counter under an older revision starts again at `balance`.
    pub revision: u64,
    /// Every top-up since the last `set`, summed: a counter adds only what it has not added yet.
    pub topped_up: u64,
    pub refill: Option<Refill>,
}

/// Calendar quotas: at most this many (cost units) per UTC day and per UTC month.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Calendar {
    pub day: Option<u64>,
    pub month: Option<u64>,
}

impl Calendar {
    pub fn is_none(&self) -> bool {
        self.day.is_none() && self.month.is_none()
    }

    /// A key's own quotas override its tier's, field by field.
    pub fn over(self, tier: Calendar) -> Calendar {
        Calendar { day: self.day.or(tier.day), month: self.month.or(tier.month) }
    }
}

/// One request's charge: what the key has, what the route costs, and when (Unix seconds).
#[derive(Debug, Clone, Copy)]
pub struct Charge<'a> {
    pub plan: Option<&'a CreditPlan>,
    pub calendar: Calendar,
    pub cost: u64,
    pub now: i64,
}

/// The numbers the counter is moved to: what `decide` (and the Redis script) take as arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Args {
    pub cost: u64,
    pub credits: bool,
    pub revision: u64,
    pub balance: u64,
    /// The refill period now (0 without a refill).
    pub period: i64,
    pub refill_amount: u64,
    pub topped_up: u64,
    pub day_limit: Option<u64>,
    pub month_limit: Option<u64>,
    pub day: i64,
    pub month: i64,
}

impl Charge<'_> {
    pub fn args(&self) -> Args {
        let plan = self.plan;
        let refill = plan.and_then(|p| p.refill);
        Args {
            cost: self.cost,
            credits: plan.is_some(),
            revision: plan.map_or(0, |p| p.revision),
            balance: plan.map_or(0, |p| p.balance),
            period: refill.map_or(0, |r| r.period(self.now)),
            refill_amount: refill.map_or(0, |r| r.amount),
            topped_up: plan.map_or(0, |p| p.topped_up),
            day_limit: self.calendar.day,
            month_limit: self.calendar.month,
            day: period::day_index(self.now),
            month: period::month_index(self.now),
        }
    }
}

/// One key's live counter. `revision: None` until credits were first charged to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub revision: Option<u64>,
    pub period: i64,
    pub remaining: u64,
    pub topped_up: u64,
    pub day: i64,
    pub day_used: u64,
    pub month: i64,
    pub month_used: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    CreditsExhausted,
    QuotaExceeded,
}

/// Moves `c` to now and charges the request if everything allows it (a refused request spends
/// nothing). The Redis script (`store::redis_limits::credits`) is this function in Lua.
pub fn decide(c: &mut Counter, a: &Args) -> Verdict {
    if a.credits {
        match c.revision {
            Some(r) if r > a.revision => {} // a replica that has not seen the latest `set` yet
            Some(r) if r == a.revision => {
                if a.period > c.period {
                    // Top-ups so far are forfeited with the rest; the total never goes back, so
                    // a replica that has not seen the last one cannot add it again after.
                    c.period = a.period;
                    c.remaining = a.refill_amount;
                    c.topped_up = c.topped_up.max(a.topped_up);
                }
                add_topups(c, a);
            }
            _ => {
                *c = Counter { revision: Some(a.revision), period: a.period, remaining: a.balance, topped_up: 0, ..*c };
                add_topups(c, a);
            }
        }
    }
    if a.day > c.day {
        (c.day, c.day_used) = (a.day, 0);
    }
    if a.month > c.month {
        (c.month, c.month_used) = (a.month, 0);
    }
    let over = |used: u64, limit: Option<u64>| limit.is_some_and(|l| used.saturating_add(a.cost) > l);
    if over(c.day_used, a.day_limit) || over(c.month_used, a.month_limit) {
        return Verdict::QuotaExceeded;
    }
    if a.credits && c.remaining < a.cost {
        return Verdict::CreditsExhausted;
    }
    if a.credits {
        c.remaining -= a.cost;
    }
    c.day_used = c.day_used.saturating_add(a.cost);
    c.month_used = c.month_used.saturating_add(a.cost);
    Verdict::Allowed
}

fn add_topups(c: &mut Counter, a: &Args) {
    if a.topped_up > c.topped_up {
        c.remaining = c.remaining.saturating_add(a.topped_up - c.topped_up);
        c.topped_up = a.topped_up;
    }
}

/// What the client is told: the verdict, the remaining amounts and when they reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub credits_remaining: Option<u64>,
    /// Seconds to the next refill (none without a refill).
    pub credits_reset: Option<u64>,
    /// The smaller of the day's and the month's remaining.
    pub quota_remaining: Option<u64>,
    /// Seconds until the quota that binds (the exhausted one, else the tighter one) resets.
    pub quota_reset: Option<u64>,
}

impl Outcome {
    /// From the counter after `decide`: the same for both stores.
    pub fn of(verdict: Verdict, c: &Counter, ch: &Charge<'_>) -> Outcome {
        let secs = |at: i64| u64::try_from(at - ch.now).unwrap_or(0);
        let day = ch.calendar.day.map(|l| (l.saturating_sub(c.day_used), secs(period::next_day(ch.now))));
        let month = ch.calendar.month.map(|l| (l.saturating_sub(c.month_used), secs(period::next_month(ch.now))));
        let exhausted = |w: &(u64, u64)| w.0 < ch.cost;
        // The binding window: an exhausted one (the later reset if both), else the tighter one.
        let quota = match (day, month) {
            (Some(_), Some(m)) if exhausted(&m) => Some(m),
            (Some(d), Some(_)) if exhausted(&d) => Some(d),
            (Some(d), Some(m)) => Some(if m.0 < d.0 { m } else { d }),
            (d, m) => d.or(m),
        };
        Outcome {
            verdict,
            credits_remaining: ch.plan.map(|_| c.remaining),
            credits_reset: ch.plan.and_then(|p| p.refill).map(|r| secs(r.next(ch.now))),
            quota_remaining: quota.map(|q| q.0),
            quota_reset: quota.map(|q| q.1),
        }
    }

    /// How long a refused client should wait: until its quota or its credits come back.
    pub fn retry_after(&self) -> Option<u64> {
        match self.verdict {
            Verdict::Allowed => None,
            Verdict::QuotaExceeded => self.quota_reset,
            Verdict::CreditsExhausted => self.credits_reset,
        }
    }
}

#[cfg(test)]
mod tests;
