//! A key's usage limits as its table entry writes them (`credits:` and `quota:`), validated into
//! the plan the limit step charges against. The same JSON object in the file table and in
//! PostgreSQL's `credits` / `quota` columns.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::file::{RawKey, RawTable};

use crate::ratelimit::credits::period::{format_time_of_day, parse_time_of_day};
use crate::ratelimit::credits::{Calendar, CreditPlan, Interval, Refill};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredits {
    /// The balance the key starts with (or was last set to).
    pub balance: u64,
    /// Raised by `keys credits set`: counters start again at `balance`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revision: u64,
    /// Every top-up since the last set, summed (`keys credits topup`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub topped_up: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refill: Option<RawRefill>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRefill {
    pub amount: u64,
    pub interval: RawInterval,
    /// `HH:MM` UTC; midnight when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawInterval {
    Daily,
    Monthly,
}

/// Calendar quotas, in cost units per UTC day and month (a key's, or a tier's in config).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuota {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month: Option<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Counters hold values below 2^53, exact in the Redis script's Lua numbers.
pub const MAX_AMOUNT: u64 = 1 << 50;

impl RawCredits {
    pub fn plan(&self) -> Result<CreditPlan, String> {
        let too_big = |what: &str, n: u64| (n > MAX_AMOUNT).then(|| format!("credits.{what} must be at most 2^50"));
        let refill = match &self.refill {
            None => None,
            Some(r) => {
                let at_secs =
                    r.at.as_deref().map_or(Ok(0), parse_time_of_day).map_err(|e| format!("credits.refill.at: {e}"))?;
                let interval = match r.interval {
                    RawInterval::Daily => Interval::Daily,
                    RawInterval::Monthly => Interval::Monthly,
                };
                if let Some(e) = too_big("refill.amount", r.amount) {
                    return Err(e);
                }
                Some(Refill { amount: r.amount, interval, at_secs })
            }
        };
        for (what, n) in [("balance", self.balance), ("topped_up", self.topped_up), ("revision", self.revision)] {
            if let Some(e) = too_big(what, n) {
                return Err(e);
            }
        }
        Ok(CreditPlan { balance: self.balance, revision: self.revision, topped_up: self.topped_up, refill })
    }
}

impl RawRefill {
    pub fn of(r: &Refill) -> RawRefill {
        let interval = match r.interval {
            Interval::Daily => RawInterval::Daily,
            Interval::Monthly => RawInterval::Monthly,
        };
        RawRefill { amount: r.amount, interval, at: (r.at_secs != 0).then(|| format_time_of_day(r.at_secs)) }
    }
}

impl RawQuota {
    pub fn calendar(&self) -> Result<Calendar, String> {
        if self.day == Some(0) || self.month == Some(0) {
            return Err("quota.day and quota.month must be at least 1 (omit them for no quota)".into());
        }
        Ok(Calendar { day: self.day, month: self.month })
    }
}

/// `keys credits set`: the balance now (and the refill, when given: `Some(None)` removes it).
/// The revision rises past the last one and past the clock (Unix seconds), so even after credits
/// were removed and set again every counter starts over.
pub fn set(
    t: &mut RawTable,
    id: &str,
    balance: u64,
    refill: Option<Option<RawRefill>>,
    now: OffsetDateTime,
) -> Result<RawCredits, String> {
    let k = find(t, id)?;
    let old = k.credits.take();
    let revision = old.as_ref().map_or(0, |c| c.revision + 1).max(u64::try_from(now.unix_timestamp()).unwrap_or(0));
    let refill = refill.unwrap_or_else(|| old.and_then(|c| c.refill));
    let credits = RawCredits { balance, revision, topped_up: 0, refill };
    credits.plan()?;
    k.credits = Some(credits.clone());
    k.updated_at = Some(now);
    Ok(credits)
}

/// `keys credits topup`: adds `amount` to the top-up total, which every counter adds once.
pub fn topup(t: &mut RawTable, id: &str, amount: u64, now: OffsetDateTime) -> Result<RawCredits, String> {
    let k = find(t, id)?;
    let Some(c) = k.credits.as_mut() else {
        return Err(format!("{id} has no credits to top up: give it a balance with `keys credits set`"));
    };
    c.topped_up =
        c.topped_up.checked_add(amount).filter(|n| *n <= MAX_AMOUNT).ok_or("the top-up total would pass 2^50")?;
    let out = c.clone();
    k.updated_at = Some(now);
    Ok(out)
}

/// `keys credits quota`: the key's own day and month quotas (`Some(None)` removes one).
pub fn set_quota(
    t: &mut RawTable,
    id: &str,
    day: Option<Option<u64>>,
    month: Option<Option<u64>>,
    now: OffsetDateTime,
) -> Result<Option<RawQuota>, String> {
    let k = find(t, id)?;
    let mut q = k.quota.unwrap_or_default();
    q.day = day.unwrap_or(q.day);
    q.month = month.unwrap_or(q.month);
    q.calendar()?;
    k.quota = (q != RawQuota::default()).then_some(q);
    k.updated_at = Some(now);
    Ok(k.quota)
}

fn find<'t>(t: &'t mut RawTable, id: &str) -> Result<&'t mut RawKey, String> {
    t.keys.iter_mut().find(|k| k.id == id).ok_or_else(|| format!("no key with id {id:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_is_validated_and_round_trips() {
        let raw: RawCredits =
            serde_json::from_str(r#"{"balance":100,"refill":{"amount":50,"interval":"daily","at":"06:30"}}"#).unwrap();
        let plan = raw.plan().unwrap();
        assert_eq!(plan.refill, Some(Refill { amount: 50, interval: Interval::Daily, at_secs: 6 * 3600 + 1800 }));
        assert_eq!(RawRefill::of(&plan.refill.unwrap()), raw.refill.unwrap());
        let bad: RawCredits =
            serde_json::from_str(r#"{"balance":1,"refill":{"amount":1,"interval":"monthly","at":"25:00"}}"#).unwrap();
        assert!(bad.plan().unwrap_err().contains("credits.refill.at"));
        assert!(serde_json::from_str::<RawCredits>(r#"{"balance":1,"extra":1}"#).is_err(), "unknown fields refused");
        assert!(RawCredits { balance: u64::MAX, revision: 0, topped_up: 0, refill: None }.plan().is_err());
        assert!(RawQuota { day: Some(0), month: None }.calendar().is_err());
    }

    fn table() -> RawTable {
        let k = r#"{"id":"k1","hash":"00","environment":"live"}"#;
        RawTable { keys: vec![serde_json::from_str(k).unwrap()] }
    }

    #[test]
    fn set_raises_the_revision_past_the_clock_and_clears_top_ups() {
        let mut t = table();
        let now = OffsetDateTime::from_unix_timestamp(1_000).unwrap();
        assert!(topup(&mut t, "k1", 5, now).unwrap_err().contains("no credits"));
        assert_eq!(set(&mut t, "k1", 10, None, now).unwrap().revision, 1_000);
        assert_eq!(topup(&mut t, "k1", 5, now).unwrap().topped_up, 5);
        assert_eq!(topup(&mut t, "k1", 2, now).unwrap().topped_up, 7, "a total: each counter adds what it lacks");
        let again = set(&mut t, "k1", 3, None, now).unwrap();
        assert_eq!((again.revision, again.topped_up, again.balance), (1_001, 0, 3));
        assert!(set(&mut t, "nope", 1, None, now).is_err());
    }

    #[test]
    fn a_quota_is_set_field_by_field_and_removed_when_empty() {
        let mut t = table();
        let now = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(
            set_quota(&mut t, "k1", Some(Some(5)), None, now).unwrap(),
            Some(RawQuota { day: Some(5), month: None })
        );
        let both = set_quota(&mut t, "k1", None, Some(Some(50)), now).unwrap();
        assert_eq!(both, Some(RawQuota { day: Some(5), month: Some(50) }));
        assert_eq!(set_quota(&mut t, "k1", Some(None), Some(None), now).unwrap(), None);
        assert!(set_quota(&mut t, "k1", Some(Some(0)), None, now).is_err());
    }
}
