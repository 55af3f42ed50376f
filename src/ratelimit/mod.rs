//! Rate limiting: GCRA (the generic cell rate algorithm) per key after authentication, and per
//! client IP for traffic that did not authenticate. GCRA has no window boundary to burst
//! across: a tier of `rate` per second with `burst` lets `burst` requests through at once and
//! then one every `1/rate`, whatever the wall clock says. The decision is a pure function over
//! one number per key (its theoretical arrival time, TAT); the stores only keep that number.

pub mod by_quota;
pub mod credits;
pub mod gcra;
pub mod local;

use std::net::IpAddr;
use std::sync::Arc;

use by_quota::ByQuota;
pub use gcra::{decide, Quota, Verdict};
pub use local::LocalLimiter;

/// A named limit from config. Keys choose one by name in the key table (`rate_limit:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    pub name: String,
    pub quota: Quota,
    /// Calendar quotas of every key on this tier (a key's own override them).
    pub calendar: credits::Calendar,
}

/// The configured tiers; a key naming no tier, or one that is not configured, gets the default.
#[derive(Debug, Clone)]
pub struct Tiers {
    list: Vec<Tier>,
    default: usize,
}

impl Tiers {
    /// `default` must name one of `list` (checked by config validation).
    pub fn new(list: Vec<Tier>, default: &str) -> Option<Tiers> {
        let default = list.iter().position(|t| t.name == default)?;
        Some(Tiers { list, default })
    }

    /// A handful of tiers: a scan beats hashing the name.
    pub fn resolve(&self, name: Option<&str>) -> &Tier {
        name.and_then(|n| self.list.iter().find(|t| t.name == n)).unwrap_or(&self.list[self.default])
    }

    pub fn is_known(&self, name: &str) -> bool {
        self.list.iter().any(|t| t.name == name)
    }

    /// When `name` is not a tier here, the known ones, for the refusal (a key naming an
    /// unknown tier would silently get the default one).
    pub fn unknown(&self, name: &str) -> Option<String> {
        let known = || self.list.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ");
        (!self.is_known(name)).then(known)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Tier> {
        self.list.iter()
    }
}

/// Per-process limiter state: one TAT per key id (after validation, so `bearer K` and
/// `Bearer K` share a budget and invalid keys are never charged to a real one), and one per
/// client network for traffic that did not authenticate; each kept per quota (see `by_quota`).
pub struct LocalLimits {
    /// Key ids come from the key table, not from clients: the fast hasher is safe here.
    keys: ByQuota<Arc<str>, rustc_hash::FxBuildHasher>,
    ips: ByQuota<IpAddr, std::hash::RandomState>,
}

impl LocalLimits {
    /// `max_keys` bounds each key map (the table size is the natural bound; this is the
    /// backstop); `max_ips` each per-address map.
    pub fn new(max_keys: usize, max_ips: usize) -> LocalLimits {
        LocalLimits { keys: ByQuota::new(max_keys), ips: ByQuota::new(max_ips) }
    }

    /// The same limits for these tiers' quotas and this per-address quota: a bucket carries
    /// over when its quota is still configured, and starts full under a new one.
    pub fn configured(&self, keys: impl IntoIterator<Item = Quota>, ip: Option<Quota>) -> LocalLimits {
        LocalLimits { keys: self.keys.configured(keys), ips: self.ips.configured(ip) }
    }

    pub fn check_key(&self, id: &str, quota: &Quota, now: u64) -> Verdict {
        self.keys.check(id, quota, now)
    }

    /// IPv6 clients are limited per /64: one host usually owns the whole prefix.
    pub fn check_ip(&self, ip: IpAddr, quota: &Quota, now: u64) -> Verdict {
        self.ips.check(&ip_subject(ip), quota, now)
    }

    pub fn sweep(&self, now: u64) {
        self.keys.sweep(now);
        self.ips.sweep(now);
    }

    pub fn tracked(&self) -> (usize, usize) {
        (self.keys.len(), self.ips.len())
    }
}

/// The address a per-IP budget is kept for: IPv4 as is, IPv6 by its /64.
pub fn ip_subject(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tier(name: &str, burst: u32) -> Tier {
        Tier {
            name: name.into(),
            quota: Quota::new(1, Duration::from_secs(1), burst).unwrap(),
            calendar: Default::default(),
        }
    }

    #[test]
    fn unknown_or_missing_tier_names_get_the_default() {
        let t = Tiers::new(vec![tier("default", 5), tier("bulk", 50)], "default").unwrap();
        assert_eq!(t.resolve(Some("bulk")).quota.burst, 50);
        assert_eq!(t.resolve(Some("nope")).name, "default");
        assert_eq!(t.resolve(None).name, "default");
        assert!(Tiers::new(vec![tier("a", 1)], "b").is_none());
    }

    #[test]
    fn ipv6_clients_share_a_budget_per_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_subject(a), ip_subject(b));
        assert_ne!(ip_subject(a), ip_subject(c));
        let v4: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(ip_subject(v4), v4);
    }

    #[test]
    fn keys_and_addresses_have_separate_budgets() {
        let l = LocalLimits::new(10, 10);
        let q = Quota::new(1, Duration::from_secs(60), 1).unwrap();
        let now = 1_000_000_000;
        assert!(l.check_key("k1", &q, now).allowed);
        assert!(!l.check_key("k1", &q, now).allowed);
        assert!(l.check_ip("127.0.0.1".parse().unwrap(), &q, now).allowed);
    }
}
