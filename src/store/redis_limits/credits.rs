//! The credits script: `ratelimit::credits::decide` in Lua, over one hash per key, so the check
//! and the decrement of credits, day and month counters are one atomic round trip for the whole
//! fleet. The time arrives as arguments (periods computed from the caller's wall clock, which a
//! test can move); each field only moves forward, so a replica whose clock or table lags cannot
//! refill twice or undo a `set`.

use redis::Value;

use crate::ratelimit::credits::{Args, Counter, Verdict};

/// KEYS[1]: the key's hash (v revision, p period, r remaining, t topped up, d/du day and used,
/// m/mu month and used). ARGV: mode (0 charge, 1 read), cost, credits (0|1), revision, balance,
/// period, refill amount, topped up, day limit (0 none), month limit (0 none), day, month.
/// Returns {verdict (0 allowed, 1 credits exhausted, 2 quota exceeded), has revision, v, p, r,
/// t, d, du, m, mu}. Numbers stay below 2^53 (validated), exact in Lua.
pub(super) const CREDITS_LUA: &str = r"
local k = KEYS[1]
local a = {}
for i = 1, 12 do a[i] = tonumber(ARGV[i]) end
local s = redis.call('HMGET', k, 'v', 'p', 'r', 't', 'd', 'du', 'm', 'mu')
local v = tonumber(s[1] or -1) or -1
local p, r, t = tonumber(s[2] or 0), tonumber(s[3] or 0), tonumber(s[4] or 0)
local d, du, m, mu = tonumber(s[5] or 0), tonumber(s[6] or 0), tonumber(s[7] or 0), tonumber(s[8] or 0)
local function reply(verdict)
  return {verdict, v >= 0 and 1 or 0, math.max(v, 0), p, r, t, d, du, m, mu}
end
if a[1] == 1 then return reply(0) end
local cost, credits, rev = a[2], a[3] == 1, a[4]
if credits then
  if v < rev then
    v, p, r, t = rev, a[6], a[5], 0
  elseif v == rev and a[6] > p then
    p, r, t = a[6], a[7], math.max(t, a[8])
  end
  if v == rev and a[8] > t then
    r, t = r + a[8] - t, a[8]
  end
end
if a[11] > d then d, du = a[11], 0 end
if a[12] > m then m, mu = a[12], 0 end
local verdict = 0
if (a[9] > 0 and du + cost > a[9]) or (a[10] > 0 and mu + cost > a[10]) then
  verdict = 2
elseif credits and r < cost then
  verdict = 1
else
  if credits then r = r - cost end
  du, mu = du + cost, mu + cost
end
local f = function(n) return string.format('%.0f', n) end
redis.call('HSET', k, 'v', f(v), 'p', f(p), 'r', f(r), 't', f(t), 'd', f(d), 'du', f(du), 'm', f(m), 'mu', f(mu))
if credits or v >= 0 then
  redis.call('PERSIST', k)
else
  redis.call('EXPIRE', k, 3024000)
end
return reply(verdict)
";

fn index(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

pub(super) fn script_args(a: &Args) -> [u64; 12] {
    [
        0,
        a.cost,
        u64::from(a.credits),
        a.revision,
        a.balance,
        index(a.period),
        a.refill_amount,
        a.topped_up,
        a.day_limit.unwrap_or(0),
        a.month_limit.unwrap_or(0),
        index(a.day),
        index(a.month),
    ]
}

pub(super) fn read_args() -> [u64; 12] {
    let mut a = [0; 12];
    a[0] = 1;
    a
}

/// The script's reply, checked: anything else is `None`, never an "allowed".
pub(super) fn from_reply(reply: &Value) -> Option<(Verdict, Counter)> {
    let Value::Array(items) = reply else { return None };
    let mut n = [0u64; 10];
    if items.len() != n.len() {
        return None;
    }
    for (slot, item) in n.iter_mut().zip(items) {
        let Value::Int(i) = item else { return None };
        *slot = u64::try_from(*i).ok()?;
    }
    let verdict = match n[0] {
        0 => Verdict::Allowed,
        1 => Verdict::CreditsExhausted,
        2 => Verdict::QuotaExceeded,
        _ => return None,
    };
    let signed = |x: u64| i64::try_from(x).ok();
    let counter = Counter {
        revision: (n[1] == 1).then_some(n[2]),
        period: signed(n[3])?,
        remaining: n[4],
        topped_up: n[5],
        day: signed(n[6])?,
        day_used: n[7],
        month: signed(n[8])?,
        month_used: n[9],
    };
    Some((verdict, counter))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(fields: &[i64]) -> Value {
        Value::Array(fields.iter().map(|n| Value::Int(*n)).collect())
    }

    #[test]
    fn a_reply_becomes_a_counter_and_anything_else_is_refused() {
        let (v, c) = from_reply(&reply(&[1, 1, 3, 20, 0, 5, 20_500, 7, 24_314, 9])).unwrap();
        assert_eq!(v, Verdict::CreditsExhausted);
        assert_eq!(c.revision, Some(3));
        assert_eq!((c.remaining, c.topped_up, c.day_used, c.month_used), (0, 5, 7, 9));
        assert_eq!(from_reply(&reply(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0])).unwrap().1.revision, None);
        for bad in [
            Value::Nil,
            reply(&[3, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            reply(&[0, 0, 0]),
            reply(&[0, 0, 0, 0, -1, 0, 0, 0, 0, 0]),
        ] {
            assert_eq!(from_reply(&bad), None, "{bad:?}");
        }
    }
}
