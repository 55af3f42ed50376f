//! The limit step of the request path: which tier a key is on, its budget (this replica's, or
//! the fleet's in Redis), the per-address budget for traffic that did not authenticate, and the
//! `RateLimit` headers that tell a client where it stands. Counts every decision.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::clock::Clock;
use crate::config::{LimitBackend, LimitHeaders, OnRedisError, RateLimits};
use crate::error::ApiError;
use crate::keys::KeyRecord;
use crate::metrics::{LimitOutcome, Metrics};
use crate::ratelimit::credits::local::LocalCredits;
use crate::ratelimit::credits::Calendar;
use crate::ratelimit::{LocalLimits, Tier, Verdict};
use crate::store::redis_limits::{RedisLimiter, RedisSettings};

/// A key's decision, kept for the response headers (429s carry them too).
#[derive(Debug, Clone, Copy)]
pub struct Applied<'a> {
    pub tier: &'a Tier,
    pub verdict: Verdict,
}

pub struct Limiter {
    cfg: RateLimits,
    local: LocalLimits,
    /// The fleet's shared budget, and what to do when it cannot be reached (restart-only).
    pub(super) shared: Option<(Arc<RedisLimiter>, OnRedisError)>,
    pub(super) metrics: Arc<Metrics>,
    /// Credit and quota counters kept here (the local backend, or failing open): shared by
    /// every reloaded limiter, so a reload never gives a key its balance back.
    pub(super) credits: Arc<LocalCredits>,
    /// Whether any tier has calendar quotas: when none has, keys without their own skip them.
    tier_calendars: bool,
    /// `RateLimit-Policy` per tier, built once.
    policies: Vec<HeaderValue>,
}

static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Whole seconds, rounded up: a client told `0` would retry at once and be refused again.
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Limiter {
    /// Fails only on a malformed Redis URL; an unreachable Redis is handled per request.
    pub fn new(cfg: &RateLimits, metrics: Arc<Metrics>, clock: &Clock) -> Result<Limiter, String> {
        let shared = match &cfg.backend {
            LimitBackend::Local => None,
            LimitBackend::Redis(r) => {
                let settings = RedisSettings {
                    url: r.url.clone(),
                    key_prefix: r.key_prefix.clone(),
                    timeout: r.timeout,
                    retry_after_failure: r.retry_after_failure,
                };
                Some((Arc::new(RedisLimiter::new(settings, clock.clone(), Some(Arc::clone(&metrics)))?), r.on_error))
            }
        };
        let local = LocalLimits::new(10_000_000, 100_000);
        Ok(Limiter {
            policies: policies(cfg),
            local: configured(&local, cfg),
            cfg: cfg.clone(),
            shared,
            metrics,
            credits: Arc::default(),
            tier_calendars: tier_calendars(cfg),
        })
    }

    /// This limiter under reloaded tiers (the backend is restart-only and stays): a key's
    /// local bucket carries over when its tier's quota did not change, and starts full when it
    /// did. With Redis the fleet's budget is in Redis, which keeps the key's debt in time.
    pub fn reconfigured(&self, cfg: &RateLimits) -> Limiter {
        Limiter {
            policies: policies(cfg),
            local: configured(&self.local, cfg),
            cfg: cfg.clone(),
            shared: self.shared.clone(),
            metrics: Arc::clone(&self.metrics),
            credits: Arc::clone(&self.credits),
            tier_calendars: tier_calendars(cfg),
        }
    }

    /// The calendar quotas of the key's tier (none when no tier has any).
    pub fn tier_calendar(&self, key: &KeyRecord) -> Calendar {
        if !self.tier_calendars {
            return Calendar::default();
        }
        self.cfg.tiers.resolve(key.rate_limit_tier()).calendar
    }

    pub fn enabled(&self) -> bool {
        self.cfg.enabled
    }

    /// Charges one request to the key's budget. `None` when limiting is off.
    pub async fn key(&self, key: &KeyRecord, now: u64) -> Result<Option<Applied<'_>>, ApiError> {
        if !self.cfg.enabled {
            return Ok(None);
        }
        let tier = self.cfg.tiers.resolve(key.rate_limit_tier());
        let verdict = match &self.shared {
            None => self.local.check_key(&key.id, &tier.quota, now),
            Some((redis, on_error)) => {
                // The limiter counts each failure once, however many requests saw it; here each
                // request decided without Redis is counted once.
                // Boxed: the Redis call's future is large, moved with every request's future if inline.
                match Box::pin(redis.check(&key.id, &tier.quota)).await {
                    Ok(v) => v,
                    Err(_) => {
                        self.metrics.redis_fallback(on_error.as_str());
                        match on_error {
                            OnRedisError::FailOpen => self.local.check_key(&key.id, &tier.quota, now),
                            OnRedisError::FailClosed => return Err(ApiError::RateLimiterUnavailable),
                        }
                    }
                }
            }
        };
        let outcome = match (verdict.allowed, verdict.near_limit()) {
            (false, _) => LimitOutcome::Limited,
            (true, true) => LimitOutcome::NearLimit,
            (true, false) => LimitOutcome::Allowed,
        };
        self.metrics.rate_limit(&key.id, &tier.name, outcome);
        Ok(Some(Applied { tier, verdict }))
    }

    /// Charges a request that did not authenticate to its address's budget. `Err` when over.
    pub fn unauthenticated(&self, ip: IpAddr, now: u64) -> Result<(), ApiError> {
        let Some(q) = self.cfg.per_ip.as_ref().filter(|_| self.cfg.enabled) else { return Ok(()) };
        let v = self.local.check_ip(ip, q, now);
        self.metrics.ip_rate_limit(!v.allowed);
        if v.allowed {
            Ok(())
        } else {
            Err(ApiError::RateLimited { retry_after: ceil_secs(v.retry_after).max(1) })
        }
    }

    /// The configured rate-limit headers for a key's decision.
    pub fn headers(&self, h: &mut HeaderMap, a: &Applied<'_>) {
        let v = &a.verdict;
        let reset = ceil_secs(v.reset);
        match self.cfg.headers {
            LimitHeaders::Ietf => {
                let i = self.cfg.tiers.iter().position(|t| std::ptr::eq(t, a.tier)).unwrap_or(0);
                h.insert(RATELIMIT_POLICY.clone(), self.policies[i].clone());
                let mut value = String::with_capacity(a.tier.name.len() + 24);
                value.push('"');
                value.push_str(&a.tier.name);
                value.push_str("\";r=");
                crate::textfmt::push_u64(&mut value, u64::from(v.remaining));
                value.push_str(";t=");
                crate::textfmt::push_u64(&mut value, reset);
                h.insert(RATELIMIT.clone(), HeaderValue::from_str(&value).expect("ascii"));
            }
            LimitHeaders::XRateLimit => {
                h.insert(X_LIMIT.clone(), HeaderValue::from(v.limit));
                h.insert(X_REMAINING.clone(), HeaderValue::from(v.remaining));
                h.insert(X_RESET.clone(), HeaderValue::from(reset));
            }
            LimitHeaders::None => {}
        }
    }

    pub fn sweep(&self, now: u64) {
        self.local.sweep(now);
    }
}

/// `RateLimit-Policy` per tier, built once per config.
fn policies(cfg: &RateLimits) -> Vec<HeaderValue> {
    cfg.tiers
        .iter()
        .map(|t| {
            let v = format!("\"{}\";q={};w={}", t.name, t.quota.burst, t.quota.window_secs());
            HeaderValue::from_str(&v).expect("tier names are validated as [a-z0-9_-]")
        })
        .collect()
}

fn tier_calendars(cfg: &RateLimits) -> bool {
    cfg.tiers.iter().any(|t| !t.calendar.is_none())
}

fn configured(local: &LocalLimits, cfg: &RateLimits) -> LocalLimits {
    local.configured(cfg.tiers.iter().map(|t| t.quota), cfg.per_ip)
}

/// The 429 for a refused key decision.
pub fn refusal(a: &Applied<'_>) -> ApiError {
    ApiError::RateLimited { retry_after: ceil_secs(a.verdict.retry_after).max(1) }
}

/// Step 3, limit: the key's budget, charged before authorisation so that a key probing routes
/// it may not use spends budget too. Its decision rides in the trail for the response headers.
pub(super) async fn charge<'s>(
    p: &'s super::Proxy,
    key: &KeyRecord,
    trail: &mut super::finish::Trail<'s>,
) -> Result<(), ApiError> {
    let Some(applied) = p.limiter.key(key, trail.clock.mono).await? else { return Ok(()) };
    trail.limit = Some(applied);
    if applied.verdict.allowed {
        return Ok(());
    }
    Err(refusal(&applied))
}

/// `charge` for the key the request authenticated as (none: nothing to charge), its refusal
/// under the request's enforcement: in report-only mode the budget is still spent, so the
/// counts and the would-be refusals are the ones enforcing would see.
pub(super) async fn charge_excused<'s>(
    p: &'s super::Proxy,
    key: Option<&KeyRecord>,
    trail: &mut super::finish::Trail<'s>,
) -> Result<(), ApiError> {
    let Some(key) = key else { return Ok(()) };
    let charged = charge(p, key, trail).await;
    trail.excuse(charged).map(drop)
}
