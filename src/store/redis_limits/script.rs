//! The one Lua script behind every shared decision, and the numbers in and out of it: the
//! quota in Redis's clock unit, and the reply checked before it becomes a verdict.

use std::time::Duration;

use redis::Value;

use crate::ratelimit::{Quota, Verdict};

/// GCRA over microseconds on Redis's clock: the same decision as `gcra::decide`.
/// KEYS[1] holds the subject's TAT. ARGV[1] = T (emission interval), ARGV[2] = tau (T * burst).
/// Returns {allowed (0|1), remaining, reset, retry_after}, the last two in microseconds.
/// Numbers stay below 2^53 (exact in Lua's doubles). The TAT is stored formatted with %.0f, so it
/// is a plain integer whatever number format the server's Lua bridge (or `tostring`) would use.
pub(super) const GCRA_LUA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0) or 0
local base = math.max(tat, now)
local new_tat = base + t
local allow_at = new_tat - tau
if allow_at > now then
  return {0, 0, base - now, allow_at - now}
end
local debt = new_tat - now
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', string.format('%.0f', math.ceil(debt / 1000)))
local room = tau - debt
local remaining = math.floor(room / t)
if remaining * t > room then remaining = remaining - 1 end
return {1, remaining, debt, 0}
";

/// Sums of these with Redis's clock (≈2^50.7 µs today) stay below 2^53 until the 22nd century.
pub(super) const MAX_SCRIPT_MICROS: u64 = 1 << 51;

/// `(T, tau)` in whole microseconds, Redis's clock unit. T rounds up, so the shared budget is never
/// more generous than the configured rate; absurd windows (over 70 years) are capped.
pub(super) fn script_quota(q: &Quota) -> (u64, u64) {
    let t = q.emission_nanos.div_ceil(1_000).clamp(1, MAX_SCRIPT_MICROS);
    let tau = t.saturating_mul(u64::from(q.burst)).min(MAX_SCRIPT_MICROS);
    (t, tau)
}

/// The script's reply, checked: anything else (a foreign script under the same SHA, a proxy
/// that mangles replies) is `None`, never a panic and never an "allowed".
pub(super) fn verdict_from_reply(reply: &Value, quota: &Quota) -> Option<Verdict> {
    let Value::Array(items) = reply else { return None };
    let [allowed, remaining, reset, retry_after] = items.as_slice() else { return None };
    let int = |v: &Value| match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    };
    let (allowed, remaining, reset, retry_after) = (int(allowed)?, int(remaining)?, int(reset)?, int(retry_after)?);
    let allowed = match (allowed, retry_after, remaining) {
        (1, 0, _) => true,
        (0, 1.., 0) => false,
        _ => return None,
    };
    Some(Verdict {
        allowed,
        limit: quota.burst,
        remaining: u32::try_from(remaining).unwrap_or(u32::MAX).min(quota.burst),
        reset: Duration::from_micros(reset),
        retry_after: Duration::from_micros(retry_after),
    })
}
