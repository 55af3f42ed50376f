//! A key's usage limits as its table entry writes them (`credits:` and `quota:`), validated into
//! the plan the limit step charges against. The same JSON object in the file table and in
//! PostgreSQL's `credits` / `quota` columns.

use serde::{Deserialize, Serialize};

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
}
