//! Short-lived tokens (JWT) traded for an API key at `POST /auth/token`, verified locally with
//! no table lookup for the signature, and always checked against their parent key's current
//! state: revoking or expiring the key kills its tokens with the same freshness as the key.
//! Also the signed upstream context, so an upstream can prove its identity headers came from
//! keygate.

pub mod context;
pub mod keys;
pub mod token;

use std::time::Duration;

pub use keys::{Alg, KeySet, KeySource};
pub use token::{Claims, Narrowing, TokenError};

#[derive(Debug, Clone)]
pub struct Settings {
    pub issuer: String,
    pub audience: String,
    pub leeway: Duration,
    pub keys: Vec<KeySource>,
    pub issue: Option<Issue>,
    pub jwks_path: String,
    /// The key files as validation read them, kept so start-up does not read them again (a
    /// file changed in between would make the running keys differ from the checked ones).
    pub loaded: Loaded,
}

/// A loaded key set, shared; Debug says only how many keys.
#[derive(Clone, Default)]
pub struct Loaded(pub Option<std::sync::Arc<KeySet>>);

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(set) => write!(f, "Loaded({} keys)", set.keys.len()),
            None => f.write_str("NotLoaded"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Issue {
    pub path: String,
    pub max_ttl: Duration,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
}
