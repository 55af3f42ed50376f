//! API keys: their format, their hash, and the in-memory table the proxy looks them up in.
//! Nothing here does network I/O; the file store reads and writes files only.

pub mod file;
pub mod format;
pub mod generate;
pub mod hash;
pub mod lifecycle;
pub mod reload;
pub mod scope;
pub mod store;
pub mod table;

use std::fmt;
use std::str::FromStr;

use http::HeaderValue;
use ipnet::IpNet;
use time::OffsetDateTime;

pub use format::KeyFormat;
pub use hash::KeyHash;
pub use scope::{Scope, ScopeSet};
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

/// One key as the proxy needs it. Holds no secret: only the public id and the hash.
/// Header values are built once at load so the request path only clones them.
#[derive(Clone)]
pub struct KeyRecord {
    pub id: String,
    pub hash: KeyHash,
    pub label: String,
    pub environment: Environment,
    pub scopes: ScopeSet,
    /// `None` means every clinic.
    pub clinics: Option<Vec<String>>,
    pub allowed_ips: Vec<IpNet>,
    pub created_at: Option<OffsetDateTime>,
    pub expires_at: Option<OffsetDateTime>,
    pub not_before: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
    pub rate_limit_tier: Option<String>,
    pub headers: InjectedHeaders,
}

/// The identity headers forwarded upstream for this key, precomputed.
#[derive(Clone, Debug)]
pub struct InjectedHeaders {
    pub allowed_clinics: HeaderValue,
    pub scopes: HeaderValue,
    pub key_id: HeaderValue,
    pub environment: HeaderValue,
}

impl KeyRecord {
    /// Clinic restriction check; `None` list means unrestricted.
    pub fn allows_clinic(&self, clinic: &str) -> bool {
        match &self.clinics {
            None => true,
            Some(list) => list.iter().any(|c| c == clinic),
        }
    }
}

// The hash is not the secret, but there is no reason to print it either: Debug shows what an
// operator needs to identify the key and nothing that helps an attacker.
impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("label", &self.label)
            .field("environment", &self.environment)
            .field("scopes", &self.scopes)
            .field("clinics", &self.clinics)
            .field("hash", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A presented bearer token. Its `Debug` and `Display` never show the secret.
pub struct Secret<'a>(pub &'a str);

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
    fn secret_debug_and_display_are_redacted() {
        let s = Secret("dpl_live_abcdefghijklmnopqrstuvwxyz012345");
        assert!(!format!("{s:?}").contains("abcdef"));
        assert!(!format!("{s}").contains("abcdef"));
    }
}
