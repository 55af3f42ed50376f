//! The `rate_limits`, `anomaly` and `alerts` sections: validated into the limiter's tiers, the
//! detectors' settings and the webhook's settings.

use std::path::PathBuf;
use std::time::Duration;

use http::Uri;

use super::alert::AlertSettings;
use super::raw::{self, Backend, Headers, RawAlerts, RawAnomaly, RawRateLimits, RawTier};
use super::Check;
use crate::anomaly::{self, BlockStatus};
use crate::ratelimit::{Quota, Tier, Tiers};

#[derive(Debug, Clone)]
pub struct RateLimits {
    /// `false` turns limiting (and its headers) off entirely.
    pub enabled: bool,
    pub backend: LimitBackend,
    pub headers: LimitHeaders,
    pub tiers: Tiers,
    /// Budget per client address for requests that do not authenticate.
    pub per_ip: Option<Quota>,
    /// Distinct keys with their own `key_id` label in the rate-limit metric.
    pub metrics_key_labels: usize,
}

#[derive(Debug, Clone)]
pub enum LimitBackend {
    Local,
    Redis(RedisBackend),
}

/// Its Debug never shows the URL (it may carry a password).
#[derive(Clone)]
pub struct RedisBackend {
    pub url: String,
    pub key_prefix: String,
    pub timeout: Duration,
    pub retry_after_failure: Duration,
    pub on_error: OnRedisError,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &"<redacted>")
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("retry_after_failure", &self.retry_after_failure)
            .field("on_error", &self.on_error)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRedisError {
    /// Decide with this replica's own limiter (same tiers) until Redis answers again.
    FailOpen,
    /// Refuse with 503 until Redis answers again.
    FailClosed,
}

impl OnRedisError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnRedisError::FailOpen => "fail_open",
            OnRedisError::FailClosed => "fail_closed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHeaders {
    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
    Ietf,
    /// `X-RateLimit-Limit`, `-Remaining`, `-Reset`.
    XRateLimit,
    None,
}

/// `100/s`, `6000/m`, `10/h`, `5/10s`: a count over a period.
fn parse_rate(s: &str) -> Result<(u32, Duration), String> {
    let bad = || format!("{s:?} is not a rate (use e.g. 100/s, 6000/m, 5/10s)");
    let (n, per) = s.split_once('/').ok_or_else(bad)?;
    let n: u32 = n.trim().parse().map_err(|_| bad())?;
    let per = per.trim();
    let period = match per {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        other => humantime::parse_duration(other).map_err(|_| bad())?,
    };
    Ok((n, period))
}

fn valid_tier_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn quota(c: &mut Check, field: &str, t: &RawTier) -> Option<Quota> {
    let (n, period) = c.val(&format!("{field}.rate"), parse_rate(&t.rate))?;
    // Default burst: one second's worth at the sustained rate, at least one.
    let per_sec = (f64::from(n) / period.as_secs_f64()).ceil();
    let burst = t.burst.unwrap_or_else(|| (per_sec as u32).max(1));
    let q = Quota::new(n, period, burst);
    if q.is_none() {
        c.0.push(format!("{field}: rate and burst must be at least 1 (and the rate at most 1e9/s)"));
    }
    q
}

pub(super) fn rate_limits(c: &mut Check, r: &RawRateLimits) -> RateLimits {
    let mut list = Vec::new();
    match &r.tiers {
        None => list.push(Tier {
            name: "default".into(),
            quota: Quota::new(100, Duration::from_secs(1), 200).expect("valid default"),
            calendar: Default::default(),
        }),
        Some(map) => {
            for (name, t) in map {
                if !valid_tier_name(name) {
                    c.0.push(format!("rate_limits.tiers.{name}: tier names are 1-64 characters of [a-z0-9_-]"));
                }
                if let Some(q) = quota(c, &format!("rate_limits.tiers.{name}"), t) {
                    let calendar = t.quota.map_or(Ok(Default::default()), |q| q.calendar());
                    let calendar = c.val(&format!("rate_limits.tiers.{name}.quota"), calendar).unwrap_or_default();
                    list.push(Tier { name: name.clone(), quota: q, calendar });
                }
            }
        }
    }
    let default = r.default_tier.clone().unwrap_or_else(|| "default".into());
    let tiers = Tiers::new(list, &default).unwrap_or_else(|| {
        c.0.push(format!("rate_limits.default_tier: {default:?} is not one of rate_limits.tiers"));
        Tiers::new(
            vec![Tier {
                name: default.clone(),
                quota: Quota::new(1, Duration::from_secs(1), 1).unwrap(),
                calendar: Default::default(),
            }],
            &default,
        )
        .expect("one tier")
    });
    let per_ip = r.per_ip.as_ref().and_then(|t| quota(c, "rate_limits.per_ip", t));
    let headers = match r.headers {
        None | Some(Headers::Ietf) => LimitHeaders::Ietf,
        Some(Headers::XRateLimit) => LimitHeaders::XRateLimit,
        Some(Headers::None) => LimitHeaders::None,
    };
    let backend = match (r.backend, &r.redis) {
        (None | Some(Backend::Local), _) => LimitBackend::Local,
        (Some(Backend::Redis), None) => {
            c.0.push("rate_limits.redis: required with backend: redis (url at least)".into());
            LimitBackend::Local
        }
        (Some(Backend::Redis), Some(rd)) => {
            let field = "rate_limits.redis.url";
            let url = super::secrets::inline_or_file(c, field, rd.url.as_deref(), rd.url_file.as_deref());
            if rd.url.is_none() && rd.url_file.is_none() {
                c.0.push(format!("{field}: required with backend: redis (or {field}_file)"));
            }
            let url = url.unwrap_or_default();
            // Never echo the URL: it may carry a password.
            let scheme_ok = ["redis://", "rediss://", "unix://"].iter().any(|s| url.starts_with(s));
            if !url.is_empty() && !scheme_ok {
                c.0.push(format!("{field}: must start with redis://, rediss:// or unix://"));
            }
            let on_error = match rd.on_error {
                None | Some(raw::OnRedisError::FailOpen) => OnRedisError::FailOpen,
                Some(raw::OnRedisError::FailClosed) => OnRedisError::FailClosed,
            };
            LimitBackend::Redis(RedisBackend {
                url,
                key_prefix: rd.key_prefix.clone().unwrap_or_else(|| "keygate:rl:".into()),
                timeout: c.duration("rate_limits.redis.timeout", &rd.timeout, Duration::from_millis(50)),
                retry_after_failure: c.duration(
                    "rate_limits.redis.retry_after_failure",
                    &rd.retry_after_failure,
                    Duration::from_secs(1),
                ),
                on_error,
            })
        }
    };
    RateLimits {
        enabled: r.enabled.unwrap_or(true),
        backend,
        headers,
        tiers,
        per_ip,
        metrics_key_labels: r.metrics_key_labels.unwrap_or(1000),
    }
}

pub(super) fn anomaly(c: &mut Check, r: &RawAnomaly) -> anomaly::Settings {
    let d = anomaly::Settings::default();
    let ikb = r.invalid_key_burst.as_ref();
    let block_status = match ikb.and_then(|b| b.block_status) {
        None | Some(429) => BlockStatus::TooManyRequests,
        Some(403) => BlockStatus::Forbidden,
        Some(other) => {
            c.0.push(format!("anomaly.invalid_key_burst.block_status: {other} is not 429 or 403"));
            BlockStatus::TooManyRequests
        }
    };
    let invalid_key_burst = anomaly::InvalidKeyBurst {
        threshold: ikb.and_then(|b| b.threshold).unwrap_or(d.invalid_key_burst.threshold),
        window: c.duration(
            "anomaly.invalid_key_burst.window",
            &ikb.and_then(|b| b.window.clone()),
            d.invalid_key_burst.window,
        ),
        block_for: ikb
            .and_then(|b| b.block_for.clone())
            .map(|s| c.duration("anomaly.invalid_key_burst.block_for", &Some(s), Duration::ZERO))
            .filter(|d| !d.is_zero()),
        block_status,
    };
    let nn = r.new_network.as_ref();
    let dn = d.new_network.clone().expect("on by default");
    let new_network = (nn.and_then(|n| n.enabled) != Some(false)).then(|| anomaly::NewNetwork {
        remember: c.duration("anomaly.new_network.remember", &nn.and_then(|n| n.remember.clone()), dn.remember),
        ipv4_prefix: nn.and_then(|n| n.ipv4_prefix).unwrap_or(dn.ipv4_prefix),
        ipv6_prefix: nn.and_then(|n| n.ipv6_prefix).unwrap_or(dn.ipv6_prefix),
    });
    if let Some(n) = &new_network {
        if n.ipv4_prefix > 32 || n.ipv6_prefix > 128 {
            c.0.push("anomaly.new_network: ipv4_prefix is at most 32 and ipv6_prefix at most 128".into());
        }
    }
    let rs = r.rate_spike.as_ref();
    let ds = d.rate_spike.clone().expect("on by default");
    let rate_spike = (rs.and_then(|s| s.enabled) != Some(false)).then(|| anomaly::RateSpike {
        factor: rs.and_then(|s| s.factor).unwrap_or(ds.factor),
        min_rate: rs.and_then(|s| s.min_rate).unwrap_or(ds.min_rate),
        interval: c.duration("anomaly.rate_spike.interval", &rs.and_then(|s| s.interval.clone()), ds.interval),
        min_history: rs.and_then(|s| s.min_history).unwrap_or(ds.min_history),
    });
    if let Some(s) = &rate_spike {
        // Written so that NaN fails too.
        let sane = s.factor > 1.0 && s.min_rate >= 0.0 && !s.interval.is_zero();
        if !sane {
            c.0.push("anomaly.rate_spike: factor must be above 1, min_rate at least 0, interval above 0".into());
        }
    }
    let pr = r.probing.as_ref();
    let probing = anomaly::Probing {
        threshold: pr.and_then(|p| p.threshold).unwrap_or(d.probing.threshold),
        window: c.duration("anomaly.probing.window", &pr.and_then(|p| p.window.clone()), d.probing.window),
    };
    if invalid_key_burst.threshold == 0 || probing.threshold == 0 {
        c.0.push("anomaly: thresholds must be at least 1".into());
    }
    anomaly::Settings {
        enabled: r.enabled.unwrap_or(true),
        event_cooldown: c.duration("anomaly.event_cooldown", &r.event_cooldown, d.event_cooldown),
        invalid_key_burst,
        new_network,
        rate_spike,
        probing,
        rotated_key_warn_before: c.duration(
            "anomaly.rotated_key_warn_before",
            &r.rotated_key_warn_before,
            d.rotated_key_warn_before,
        ),
    }
}

pub(super) fn webhook(c: &mut Check, r: &RawAlerts) -> Option<AlertSettings> {
    let w = r.webhook.as_ref()?;
    let field = "alerts.webhook.url";
    let Some(text) = super::secrets::inline_or_file(c, field, w.url.as_deref(), w.url_file.as_deref()) else {
        if w.url.is_none() && w.url_file.is_none() {
            c.0.push(format!("{field}: required (or {field}_file)"));
        }
        return None;
    };
    // Never echo the URL: webhook URLs carry their token in the path or query.
    let url = match text.parse::<Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => u,
        _ => {
            c.0.push(format!("{field}: must be an http:// or https:// URL with a host"));
            return None;
        }
    };
    // The defaults live with the alerter (AlertSettings::new); the config only overrides them.
    let instance = w.instance.clone().or_else(|| std::env::var("HOSTNAME").ok()).unwrap_or_else(|| "keygate".into());
    let mut s = AlertSettings::new(url, instance);
    s.cooldown = c.duration("alerts.webhook.cooldown", &w.cooldown, s.cooldown);
    s.timeout = c.duration("alerts.webhook.timeout", &w.timeout, s.timeout);
    s.queue = w.queue.unwrap_or(s.queue);
    if s.queue == 0 {
        c.0.push("alerts.webhook.queue: must be at least 1".into());
        s.queue = 1;
    }
    s.ca_file = w.ca_file.as_ref().map(PathBuf::from);
    let token = super::secrets::inline_or_file(c, "alerts.webhook.token", w.token.as_deref(), w.token_file.as_deref());
    s.authorization = token.and_then(|t| match http::HeaderValue::from_str(&format!("Bearer {t}")) {
        Ok(mut v) => {
            v.set_sensitive(true);
            Some(v)
        }
        Err(_) => {
            c.0.push("alerts.webhook.token: must be printable text on one line".into());
            None
        }
    });
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_a_count_over_a_period() {
        assert_eq!(parse_rate("100/s").unwrap(), (100, Duration::from_secs(1)));
        assert_eq!(parse_rate("6000/m").unwrap(), (6000, Duration::from_secs(60)));
        assert_eq!(parse_rate("5/10s").unwrap(), (5, Duration::from_secs(10)));
        assert!(parse_rate("100").is_err());
        assert!(parse_rate("x/s").is_err());
        assert!(parse_rate("1/fortnight").is_err());
    }
}
