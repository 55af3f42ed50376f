//! Anomaly detectors that run on the request path: counters, GCRA budgets and an EWMA per key
//! or client address, no I/O and no allocation unless something fires. Each detector returns
//! an `Anomaly`; the pipeline counts it, writes the audit event and hands it to the alerter.
//! Every anomaly passes one gate: at most one per kind and subject per `event_cooldown`, so an
//! attack produces one event per episode, not one per request.

mod ip_watch;
mod key_watch;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

pub use ip_watch::IpWatch;
pub use key_watch::KeyWatch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Many invalid keys from one client address: credential stuffing or key guessing.
    InvalidKeyBurst,
    /// A key used from a network it has not been seen from recently.
    NewNetwork,
    /// A key's request rate far above its own baseline.
    RateSpike,
    /// A key repeatedly refused for scope, clinic or route.
    ScopeProbing,
    RevokedKeyUse,
    ExpiredKeyUse,
    /// A key of the other environment (a test key against a live proxy, or the reverse).
    EnvironmentMismatch,
    /// A rotated-out key still in use close to the end of its grace period.
    RotatedKeyInUse,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::InvalidKeyBurst,
        Kind::NewNetwork,
        Kind::RateSpike,
        Kind::ScopeProbing,
        Kind::RevokedKeyUse,
        Kind::ExpiredKeyUse,
        Kind::EnvironmentMismatch,
        Kind::RotatedKeyInUse,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::InvalidKeyBurst => "invalid_key_burst",
            Kind::NewNetwork => "new_network",
            Kind::RateSpike => "rate_spike",
            Kind::ScopeProbing => "scope_probing",
            Kind::RevokedKeyUse => "revoked_key_use",
            Kind::ExpiredKeyUse => "expired_key_use",
            Kind::EnvironmentMismatch => "environment_mismatch",
            Kind::RotatedKeyInUse => "rotated_key_in_use",
        }
    }
}

/// Who an anomaly is about: a key id from the table, or a client address. Never the
/// presented secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Key(Arc<str>),
    Ip(IpAddr),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Key(id) => write!(f, "key {id}"),
            Subject::Ip(ip) => write!(f, "client {ip}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    pub kind: Kind,
    pub subject: Subject,
    /// One human sentence with the numbers that tripped the detector.
    pub detail: String,
}

/// The clock, passed in: monotonic nanoseconds for windows, Unix seconds for key validity.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: u64,
    pub unix: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockStatus {
    /// 429 RATE_LIMIT_EXCEEDED with Retry-After.
    TooManyRequests,
    /// 403 IP_BLOCKED.
    Forbidden,
}

#[derive(Debug, Clone)]
pub struct InvalidKeyBurst {
    /// Invalid keys from one address in `window` before it counts as a burst.
    pub threshold: u32,
    pub window: Duration,
    /// Refuse everything from the address for this long after a burst; `None` = only report.
    pub block_for: Option<Duration>,
    pub block_status: BlockStatus,
}

#[derive(Debug, Clone)]
pub struct NewNetwork {
    pub remember: Duration,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
}

#[derive(Debug, Clone)]
pub struct RateSpike {
    /// Fires when an interval's rate is above `factor` × the key's baseline ...
    pub factor: f64,
    /// ... and above this many requests per second (quiet keys do not page anyone).
    pub min_rate: f64,
    pub interval: Duration,
    /// Intervals of history before the baseline is trusted.
    pub min_history: u32,
}

#[derive(Debug, Clone)]
pub struct Probing {
    pub threshold: u32,
    pub window: Duration,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub enabled: bool,
    pub event_cooldown: Duration,
    pub invalid_key_burst: InvalidKeyBurst,
    pub new_network: Option<NewNetwork>,
    pub rate_spike: Option<RateSpike>,
    pub probing: Probing,
    /// A rotated-out key used within this long of the end of its grace period is reported.
    pub rotated_key_warn_before: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            event_cooldown: Duration::from_secs(60),
            invalid_key_burst: InvalidKeyBurst {
                threshold: 20,
                window: Duration::from_secs(60),
                block_for: None,
                block_status: BlockStatus::TooManyRequests,
            },
            new_network: Some(NewNetwork {
                remember: Duration::from_secs(24 * 3600),
                ipv4_prefix: 24,
                ipv6_prefix: 48,
            }),
            rate_spike: Some(RateSpike {
                factor: 10.0,
                min_rate: 5.0,
                interval: Duration::from_secs(10),
                min_history: 30,
            }),
            probing: Probing { threshold: 10, window: Duration::from_secs(60) },
            rotated_key_warn_before: Duration::from_secs(24 * 3600),
        }
    }
}

/// The gate every anomaly passes: one per kind and subject per cool-down. Bounded: past
/// `MAX_GATED` subjects, old entries are swept first; if still full, events pass ungated
/// (the webhook de-duplicates again) rather than being lost.
pub struct Gate {
    /// Shared with the gate a reload builds from this one: a reload does not repeat an event.
    last: Arc<DashMap<(Kind, Subject), u64>>,
    cooldown: u64,
    swept_at: AtomicU64,
}

const MAX_GATED: usize = 100_000;

impl Gate {
    pub fn new(cooldown: Duration) -> Gate {
        Gate { last: Arc::default(), cooldown: nanos(cooldown), swept_at: AtomicU64::new(0) }
    }

    pub fn reconfigured(&self, cooldown: Duration) -> Gate {
        Gate { last: Arc::clone(&self.last), ..Gate::new(cooldown) }
    }

    /// True when this anomaly should be reported now.
    pub fn pass(&self, a: &Anomaly, now: u64) -> bool {
        let key = (a.kind, a.subject.clone());
        if let Some(mut at) = self.last.get_mut(&key) {
            if now.saturating_sub(*at) < self.cooldown {
                return false;
            }
            *at = now;
            return true;
        }
        if self.last.len() >= MAX_GATED {
            self.sweep(now);
            if self.last.len() >= MAX_GATED {
                return true;
            }
        }
        self.last.insert(key, now);
        true
    }

    pub fn sweep(&self, now: u64) {
        self.swept_at.store(now, Ordering::Relaxed);
        self.last.retain(|_, at| now.saturating_sub(*at) < self.cooldown);
    }
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// All detectors, as the pipeline holds them.
pub struct Detectors {
    pub settings: Settings,
    pub ips: IpWatch,
    pub keys: KeyWatch,
    pub gate: Gate,
}

impl Detectors {
    pub fn new(settings: Settings) -> Detectors {
        Detectors {
            ips: IpWatch::new(&settings.invalid_key_burst),
            keys: KeyWatch::new(&settings),
            gate: Gate::new(settings.event_cooldown),
            settings,
        }
    }

    /// The same detectors under new settings, remembering what they had seen (see each watch).
    pub fn reconfigured(&self, settings: Settings) -> Detectors {
        Detectors {
            ips: self.ips.reconfigured(&settings.invalid_key_burst),
            keys: self.keys.reconfigured(&settings),
            gate: self.gate.reconfigured(settings.event_cooldown),
            settings,
        }
    }

    /// Forgets what no longer matters: full budgets, expired blocks, old networks and gates.
    pub fn sweep(&self, now: Now) {
        self.ips.sweep(now.mono);
        self.keys.sweep(now);
        self.gate.sweep(now.mono);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_lets_one_event_per_kind_and_subject_per_cooldown() {
        let g = Gate::new(Duration::from_secs(60));
        let a = Anomaly { kind: Kind::RevokedKeyUse, subject: Subject::Key("k1".into()), detail: String::new() };
        let b = Anomaly { subject: Subject::Key("k2".into()), ..a.clone() };
        let c = Anomaly { kind: Kind::ExpiredKeyUse, ..a.clone() };
        let s = 1_000_000_000;
        assert!(g.pass(&a, s));
        assert!(!g.pass(&a, 2 * s));
        assert!(g.pass(&b, 2 * s), "another subject");
        assert!(g.pass(&c, 2 * s), "another kind");
        assert!(g.pass(&a, 61 * s), "after the cool-down");
    }
}
