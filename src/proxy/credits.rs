//! Step 5, spend: a request about to go upstream pays its route's cost from its key's credits
//! and calendar quotas, after authorisation (a refused request spends nothing). Keys without
//! credits or quotas, on tiers without quotas, skip this step entirely. With Redis the fleet
//! shares one counter per key; without it (or failing open while Redis is down) this replica's.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::finish::Trail;
use super::limit::Limiter;
use super::Proxy;
use crate::config::OnRedisError;
use crate::error::ApiError;
use crate::keys::KeyRecord;
use crate::metrics::{QuotaOutcome, QuotaStore};
use crate::ratelimit::credits::{Calendar, Charge, Outcome, Verdict};

static CREDITS_REMAINING: HeaderName = HeaderName::from_static("x-credits-remaining");
static CREDITS_RESET: HeaderName = HeaderName::from_static("x-credits-reset");
static QUOTA_REMAINING: HeaderName = HeaderName::from_static("x-quota-remaining");
static QUOTA_RESET: HeaderName = HeaderName::from_static("x-quota-reset");

async fn spend(p: &Proxy, key: &KeyRecord, cost: u64, trail: &mut Trail<'_>) -> Result<(), ApiError> {
    let limits = key.usage_limits();
    let tier = p.limiter.tier_calendar(key);
    if limits.is_none() && tier.is_none() {
        return Ok(());
    }
    let calendar = limits.map_or(Calendar::default(), |l| l.quota).over(tier);
    let plan = limits.and_then(|l| l.credits.as_ref());
    if plan.is_none() && calendar.is_none() {
        return Ok(());
    }
    let charge = Charge { plan, calendar, cost, now: trail.now.unix_timestamp() };
    let counter = limits.and_then(|l| l.counter.as_ref()).unwrap_or(&key.id);
    // Boxed: the Redis call's future is large, and inline it would be moved with every request's
    // future, metered or not.
    let outcome = Box::pin(p.limiter.charge_credits(counter, &charge)).await?;
    trail.credits = Some(outcome);
    match outcome.verdict {
        Verdict::Allowed => Ok(()),
        Verdict::CreditsExhausted => Err(ApiError::CreditsExhausted { retry_after: outcome.retry_after() }),
        Verdict::QuotaExceeded => {
            Err(ApiError::QuotaExceeded { retry_after: outcome.retry_after().unwrap_or(1).max(1) })
        }
    }
}

/// `spend` for the key the request authenticated as (none: nothing to spend), its refusal under
/// the request's enforcement: in report-only mode an exhausted key's request goes on unspent.
pub(super) async fn spend_excused(
    p: &Proxy,
    key: Option<&KeyRecord>,
    cost: u64,
    trail: &mut Trail<'_>,
) -> Result<(), ApiError> {
    let Some(key) = key else { return Ok(()) };
    let spent = spend(p, key, cost, trail).await;
    trail.excuse(spent).map(drop)
}

impl Limiter {
    /// Charges `charge` to the key's counter: the fleet's in Redis, else this replica's.
    pub(super) async fn charge_credits(&self, id: &Arc<str>, charge: &Charge<'_>) -> Result<Outcome, ApiError> {
        let (outcome, store) = match &self.shared {
            None => (self.credits.charge(id, charge), QuotaStore::Local),
            Some((redis, on_error)) => match redis.charge_credits(id, &charge.args()).await {
                Ok((verdict, counter)) => (Outcome::of(verdict, &counter, charge), QuotaStore::Redis),
                Err(_) => {
                    self.metrics.redis_fallback(on_error.as_str());
                    match on_error {
                        OnRedisError::FailOpen => (self.credits.charge(id, charge), QuotaStore::Fallback),
                        OnRedisError::FailClosed => {
                            self.metrics.quota_decision(QuotaOutcome::Unavailable, QuotaStore::Redis);
                            return Err(ApiError::RateLimiterUnavailable);
                        }
                    }
                }
            },
        };
        let label = match outcome.verdict {
            Verdict::Allowed => QuotaOutcome::Allowed,
            Verdict::CreditsExhausted => QuotaOutcome::CreditsExhausted,
            Verdict::QuotaExceeded => QuotaOutcome::QuotaExceeded,
        };
        self.metrics.quota_decision(label, store);
        Ok(outcome)
    }
}

/// The remaining amounts and their resets (seconds), on the answer and on the 429.
pub(super) fn headers(h: &mut HeaderMap, o: &Outcome) {
    let pairs = [
        (&CREDITS_REMAINING, o.credits_remaining),
        (&CREDITS_RESET, o.credits_reset),
        (&QUOTA_REMAINING, o.quota_remaining),
        (&QUOTA_RESET, o.quota_reset),
    ];
    for (name, value) in pairs {
        if let Some(v) = value {
            h.insert(name.clone(), HeaderValue::from(v));
        }
    }
}
