//! API keys: their format, their hash, and the in-memory table the proxy looks them up in.
//! Nothing here does network I/O; the file store reads and writes files only.

pub mod credits;
pub mod events;
pub mod file;
pub mod format;
pub mod generate;
pub mod hash;
pub mod lifecycle;
pub mod public;
pub mod scope;
pub mod table;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use http::HeaderValue;
use ipnet::IpNet;
use time::OffsetDateTime;

use crate::ratelimit::credits::{Calendar, CreditPlan};

pub use format::KeyFormat;
pub use hash::KeyHash;
pub use scope::{Catalogue, Scope, ScopeSet};
pub use table::KeyTable;

/// Which keys a proxy accepts: a live proxy refuses test keys and the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Live,
    Test,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Environment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "live" => Ok(Environment::Live),
            "test" => Ok(Environment::Test),
            other => Err(format!("unknown environment {other:?} (expected live or test)")),
        }
    }
}

/// What many keys share: environment, scopes, IPs and tier, with their header values built
/// once. Interned at load, so a million keys with a handful of access profiles hold a handful
/// of these.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Access {
    pub environment: Environment,
    pub scopes: ScopeSet,
    pub allowed_ips: Vec<IpNet>,
    pub rate_limit_tier: Option<String>,
    /// Credits and calendar quotas (`credits:`, `quota:`); most keys have neither.
    pub limits: Option<UsageLimits>,
}

/// A key's own volume limits; its tier's calendar quotas apply to it as well.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct UsageLimits {
    pub credits: Option<CreditPlan>,
    pub quota: Calendar,
    /// The key id whose counter this key spends (a rotated key keeps its predecessor's, so a
    /// rotation neither refills the balance nor restarts the day); its own id when `None`.
    pub counter: Option<Arc<str>>,
}

/// The per-access header values, precomputed.
#[derive(Debug)]
pub struct AccessHeaders {
    pub scopes: HeaderValue,
    pub environment: HeaderValue,
}

#[derive(Debug)]
pub struct Profile {
    pub access: Access,
    pub headers: AccessHeaders,
}

/// No timestamp, in the packed times.
const NONE: u32 = 0;

/// One key as the proxy holds it: 88 bytes plus its id and its clinic list.
/// No secret, no label (that lives in the file, for people). Kept small because a fleet table
/// can hold millions of these. A clone shares everything but the 16 bytes of times.
#[derive(Clone)]
pub struct KeyRecord {
    pub hash: KeyHash,
    /// Shared so that a request's audit line can keep it past the table swap, for a refcount.
    pub id: Arc<str>,
    pub profile: Arc<Profile>,
    /// Comma-joined clinic ids (exactly the `X-Allowed-Clinics` value); `None` = every clinic.
    pub clinics: Option<Arc<str>>,
    /// created, expires, not_before, revoked: Unix seconds (to 2106) or `NONE`. Whole seconds
    /// keep the record small; sub-second instants are rounded to the safe side (expiry and
    /// revocation earlier, not-before later).
    times: [u32; 4],
}

/// Unix seconds, rounded down (`up` rounds up), clamped to 1..=u32::MAX.
fn to_secs(t: Option<OffsetDateTime>, up: bool) -> u32 {
    t.map_or(NONE, |t| {
        let s = t.unix_timestamp() + i64::from(up && t.nanosecond() > 0);
        u32::try_from(s.max(1)).unwrap_or(u32::MAX)
    })
}

fn from_secs(s: u32) -> Option<OffsetDateTime> {
    (s != NONE).then(|| OffsetDateTime::from_unix_timestamp(i64::from(s)).ok()).flatten()
}

/// The times of a key, as given in the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyTimes {
    pub created_at: Option<OffsetDateTime>,
    pub expires_at: Option<OffsetDateTime>,
    pub not_before: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

impl KeyRecord {
    pub fn new(hash: KeyHash, id: Arc<str>, profile: Arc<Profile>, clinics: Option<Arc<str>>, t: KeyTimes) -> Self {
        let times = [
            to_secs(t.created_at, false),
            to_secs(t.expires_at, false),
            to_secs(t.not_before, true),
            to_secs(t.revoked_at, false),
        ];
        KeyRecord { hash, id, profile, clinics, times }
    }

    pub fn environment(&self) -> Environment {
        self.profile.access.environment
    }

    pub fn scopes(&self) -> &ScopeSet {
        &self.profile.access.scopes
    }

    pub fn allowed_ips(&self) -> &[IpNet] {
        &self.profile.access.allowed_ips
    }

    pub fn rate_limit_tier(&self) -> Option<&str> {
        self.profile.access.rate_limit_tier.as_deref()
    }

    pub fn usage_limits(&self) -> Option<&UsageLimits> {
        self.profile.access.limits.as_ref()
    }

    pub fn times(&self) -> KeyTimes {
        KeyTimes {
            created_at: from_secs(self.times[0]),
            expires_at: from_secs(self.times[1]),
            not_before: from_secs(self.times[2]),
            revoked_at: from_secs(self.times[3]),
        }
    }

    /// The instants that decide validity, as Unix seconds (0 = none).
    pub(crate) fn expires_revoked_not_before(&self) -> (u32, u32, u32) {
        (self.times[1], self.times[3], self.times[2])
    }

    /// Clinic restriction check; no list means unrestricted. Lists are short: a scan of the
    /// joined header value beats a per-key set.
    pub fn allows_clinic(&self, clinic: &str) -> bool {
        match &self.clinics {
            None => true,
            Some(list) => list.split(',').any(|c| c == clinic),
        }
    }

    pub fn clinic_list(&self) -> Option<Vec<&str>> {
        self.clinics.as_ref().map(|c| c.split(',').collect())
    }
}

// The hash is not the secret, but there is no reason to print it either: Debug shows what an
// operator needs to identify the key and nothing that helps an attacker.
impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("environment", &self.environment())
            .field("scopes", self.scopes())
            .field("clinics", &self.clinics)
            .field("hash", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A presented bearer token, as it travels from the header to the hash. Its `Debug` and
/// `Display` never show the secret, so a careless log line cannot leak it.
#[derive(Clone, Copy)]
pub struct Secret<'a>(&'a str);

impl<'a> Secret<'a> {
    pub fn new(token: &'a str) -> Secret<'a> {
        Secret(token)
    }

    /// The token itself, for the format check and the hash only.
    pub fn expose(&self) -> &'a str {
        self.0
    }
}

impl fmt::Debug for Secret<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_stays_small() {
        // A fleet table holds millions: this is the budget the memory figures in the README
        // rest on.
        assert_eq!(std::mem::size_of::<KeyRecord>(), 88);
    }

    #[test]
    fn secret_debug_and_display_are_redacted() {
        let s = Secret::new("dpl_live_abcdefghijklmnopqrstuvwxyz012345");
        assert!(!format!("{s:?}").contains("abcdef"));
        assert!(!format!("{s}").contains("abcdef"));
    }

    #[test]
    fn sub_second_times_round_to_the_safe_side() {
        use time::macros::datetime;
        let t = KeyTimes {
            created_at: None,
            expires_at: Some(datetime!(2026-06-01 12:00:00.7 UTC)),
            not_before: Some(datetime!(2026-06-01 11:00:00.3 UTC)),
            revoked_at: None,
        };
        let times = [0, to_secs(t.expires_at, false), to_secs(t.not_before, true), 0];
        assert_eq!(from_secs(times[1]), Some(datetime!(2026-06-01 12:00:00 UTC)), "expiry earlier");
        assert_eq!(from_secs(times[2]), Some(datetime!(2026-06-01 11:00:01 UTC)), "not_before later");
        assert_eq!(to_secs(None, false), NONE);
    }
}
