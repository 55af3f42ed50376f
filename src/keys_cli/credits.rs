//! `keygate keys credits …`: a key's credit balance and calendar quotas in the key table (file or
//! PostgreSQL), and its live counter when the fleet keeps one in Redis. `set` and `topup` change
//! what counters start from and add; the counters themselves apply each change exactly once
//! (see `ratelimit::credits`).

use anyhow::{bail, Context};
use time::OffsetDateTime;

use super::{check_id, KeysContext};
use crate::cli::CreditsCommand;
use crate::keys::credits::{self, RawCredits, RawInterval, RawQuota, RawRefill};
use crate::ratelimit::credits::{decide, Calendar, Charge, Counter};
use crate::store::redis_limits::{RedisLimiter, RedisSettings};

pub(super) fn run(ctx: &KeysContext, cmd: CreditsCommand, now: OffsetDateTime) -> anyhow::Result<()> {
    match cmd {
        CreditsCommand::Set { id, balance, refill, refill_every, refill_at, no_refill, json } => {
            check_id(ctx, &id)?;
            let refill = match (refill, no_refill) {
                (_, true) => Some(None),
                (None, false) => None,
                (Some(amount), false) => Some(Some(RawRefill {
                    amount,
                    interval: parse_interval(refill_every.as_deref().unwrap_or("daily"))?,
                    at: refill_at,
                })),
            };
            let c = ctx.store.modify(|t| credits::set(t, &id, balance, refill, now).map_err(anyhow::Error::msg))?;
            report(ctx, &id, json, &c, &format!("Set {id}'s credits to {balance}"))
        }
        CreditsCommand::Topup { id, amount, json } => {
            check_id(ctx, &id)?;
            let c = ctx.store.modify(|t| credits::topup(t, &id, amount, now).map_err(anyhow::Error::msg))?;
            report(ctx, &id, json, &c, &format!("Topped up {id} by {amount}"))
        }
        CreditsCommand::Quota { id, day, month, no_day, no_month, json } => {
            check_id(ctx, &id)?;
            let day = if no_day { Some(None) } else { day.map(Some) };
            let month = if no_month { Some(None) } else { month.map(Some) };
            let q = ctx.store.modify(|t| credits::set_quota(t, &id, day, month, now).map_err(anyhow::Error::msg))?;
            if json {
                println!("{}", serde_json::json!({"id": id, "quota": q}));
            } else {
                println!(
                    "{id}'s own quota is now {}; proxies apply it {}.",
                    quota_text(q.as_ref()),
                    ctx.store.propagation()
                );
            }
            Ok(())
        }
        CreditsCommand::Show { id, json } => show(ctx, &id, json, now),
    }
}

fn parse_interval(s: &str) -> anyhow::Result<RawInterval> {
    match s {
        "daily" => Ok(RawInterval::Daily),
        "monthly" => Ok(RawInterval::Monthly),
        other => bail!("--refill-every {other:?}: expected daily or monthly"),
    }
}

fn report(ctx: &KeysContext, id: &str, json: bool, c: &RawCredits, what: &str) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::json!({"id": id, "credits": c}));
    } else {
        println!("{what}: {}. Proxies apply it {}.", credits_text(c), ctx.store.propagation());
    }
    Ok(())
}

fn credits_text(c: &RawCredits) -> String {
    let mut s = format!("balance {}", c.balance);
    if c.topped_up > 0 {
        s.push_str(&format!(" + {} topped up", c.topped_up));
    }
    if let Some(r) = &c.refill {
        let every = match r.interval {
            RawInterval::Daily => "every day",
            RawInterval::Monthly => "on the 1st of every month",
        };
        s.push_str(&format!(", refilled to {} {every} at {} UTC", r.amount, r.at.as_deref().unwrap_or("00:00")));
    }
    s
}

fn quota_text(q: Option<&RawQuota>) -> String {
    match q {
        Some(RawQuota { day: None, month: None }) | None => "none (the tier's applies)".into(),
        Some(q) => {
            let part = |n: Option<u64>, per: &str| n.map(|n| format!("{n} per UTC {per}"));
            [part(q.day, "day"), part(q.month, "month")].into_iter().flatten().collect::<Vec<_>>().join(", ")
        }
    }
}

fn show(ctx: &KeysContext, id: &str, json: bool, now: OffsetDateTime) -> anyhow::Result<()> {
    check_id(ctx, id)?;
    let t = ctx.store.read()?;
    let k = t.keys.iter().find(|k| k.id == id).with_context(|| format!("no key with id {id:?}"))?;
    let tier = ctx.tiers.as_ref().map_or(Calendar::default(), |t| t.resolve(k.rate_limit.as_deref()).calendar);
    let own = k.quota.map(|q| q.calendar()).transpose().map_err(anyhow::Error::msg)?.unwrap_or_default();
    let plan = k.credits.as_ref().map(RawCredits::plan).transpose().map_err(anyhow::Error::msg)?;
    let charge = Charge { plan: plan.as_ref(), calendar: own.over(tier), cost: 0, now: now.unix_timestamp() };
    let live = match &ctx.redis {
        None => serde_json::json!({"unavailable": "the local backend keeps counters in each proxy's memory"}),
        Some(_) if charge.plan.is_none() && charge.calendar.is_none() => serde_json::Value::Null,
        // A rotated key's counter is its first predecessor's.
        Some(r) => match live_counter(r, k.usage_counter.as_deref().unwrap_or(id)) {
            Ok(counter) => {
                // Moved to now as the next request would move it, spending nothing.
                let mut c = counter.unwrap_or_default();
                decide(&mut c, &charge.args());
                let credits = plan.map(|_| c.remaining);
                serde_json::json!({"remaining": credits, "day_used": c.day_used, "month_used": c.month_used, "source": "redis"})
            }
            Err(e) => serde_json::json!({"unavailable": format!("{e:#}")}),
        },
    };
    let v = serde_json::json!({
        "id": id,
        "credits": k.credits,
        "quota": {"key": k.quota, "effective": {"day": charge.calendar.day, "month": charge.calendar.month}},
        "live": live,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{id}");
    println!("  credits: {}", k.credits.as_ref().map_or("none".into(), credits_text));
    println!(
        "  quota:   {} (key), day {:?} / month {:?} in effect",
        quota_text(k.quota.as_ref()),
        charge.calendar.day,
        charge.calendar.month
    );
    println!("  live:    {live}");
    Ok(())
}

fn live_counter(r: &crate::config::RedisBackend, id: &str) -> anyhow::Result<Option<Counter>> {
    let settings = RedisSettings {
        url: r.url.clone(),
        key_prefix: r.key_prefix.clone(),
        timeout: r.timeout,
        retry_after_failure: r.retry_after_failure,
    };
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
        let redis = RedisLimiter::new(settings, crate::clock::Clock::system(), None).map_err(anyhow::Error::msg)?;
        redis.read_credits(id).await.map_err(|e| anyhow::anyhow!("redis: {e}"))
    })
}
