//! Who may use the admin API, decided from the request's headers and the configured tokens:
//! a pure function, so each rule has its own test. Presented tokens are hashed and compared to
//! every configured hash in constant time; the matching token's id is the actor the key event
//! log records.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AdminCredential, AdminScopes, AdminToken};
use crate::error::ApiError;

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read,
    Write,
}

/// Who is calling: the token's id (or `loopback`), for the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub id: String,
}

/// The id changes made with `admin_token_file`'s token are logged under.
pub const LEGACY_TOKEN_ID: &str = "admin_token_file";

/// The tokens in force (a config snapshot's) and where the listener is bound.
pub struct Access<'c> {
    pub loopback: bool,
    pub legacy: Option<&'c AdminToken>,
    pub tokens: &'c [AdminCredential],
}

impl Access<'_> {
    /// The caller, or why not. Without any token configured a loopback listener answers reads
    /// to anyone who can reach it (as before scoped tokens); a write always needs a token with
    /// `keys:write`, because a sidecar's loopback is shared with the app, and an SSRF there
    /// must not mint keys.
    pub fn check(&self, headers: &http::HeaderMap, need: Need) -> Result<Caller, ApiError> {
        let configured = self.legacy.is_some() || !self.tokens.is_empty();
        if !configured {
            return match (self.loopback, need) {
                (true, Need::Read) => Ok(Caller { id: "loopback".into() }),
                (true, Need::Write) => Err(ApiError::AdminTokenRequired),
                (false, _) => Err(ApiError::AdminApiOff),
            };
        }
        let presented = crate::authn::bearer_token(headers).map_err(|_| ApiError::AdminTokenRequired)?;
        let (id, scopes) = self.identify(presented.expose()).ok_or(ApiError::AdminTokenRequired)?;
        let allowed = match need {
            Need::Read => scopes.read,
            Need::Write => scopes.write,
        };
        match allowed {
            true => Ok(Caller { id }),
            false if need == Need::Read => Err(ApiError::AdminScopeMissing("keys:read")),
            false => Err(ApiError::AdminScopeMissing("keys:write")),
        }
    }

    /// The token's id and scopes. Every configured hash is compared (no early exit), so the
    /// time taken says nothing about which, if any, matched.
    fn identify(&self, presented: &str) -> Option<(String, AdminScopes)> {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for t in self.tokens {
            if bool::from(t.sha256.ct_eq(&hash)) && found.is_none() {
                found = Some((t.id.clone(), t.scopes));
            }
        }
        let legacy = self.legacy.is_some_and(|l| l.matches(presented));
        match (found, legacy) {
            (Some(f), _) => Some(f),
            (None, true) => Some((LEGACY_TOKEN_ID.into(), AdminScopes::ALL)),
            (None, false) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::token_hash;
    use http::{header, HeaderValue};

    fn bearer(v: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    fn cred(id: &str, token: &str, read: bool, write: bool) -> AdminCredential {
        let sha256 = <[u8; 32]>::try_from(hex::decode(token_hash(token)).unwrap()).unwrap();
        AdminCredential { id: id.into(), sha256, scopes: AdminScopes { read, write } }
    }

    fn access<'c>(loopback: bool, legacy: Option<&'c AdminToken>, tokens: &'c [AdminCredential]) -> Access<'c> {
        Access { loopback, legacy, tokens }
    }

    #[test]
    fn loopback_without_tokens_reads_but_never_writes() {
        let a = access(true, None, &[]);
        assert_eq!(a.check(&http::HeaderMap::new(), Need::Read), Ok(Caller { id: "loopback".into() }));
        assert_eq!(a.check(&http::HeaderMap::new(), Need::Write), Err(ApiError::AdminTokenRequired));
        assert_eq!(a.check(&bearer("Bearer anything"), Need::Write), Err(ApiError::AdminTokenRequired));
    }

    #[test]
    fn elsewhere_without_tokens_the_api_is_off() {
        assert_eq!(access(false, None, &[]).check(&bearer("Bearer x"), Need::Read), Err(ApiError::AdminApiOff));
    }

    #[test]
    fn a_read_token_reads_and_may_not_write() {
        let tokens = [cred("portal", "read-token-0123456789", true, false)];
        let a = access(false, None, &tokens);
        let h = bearer("Bearer read-token-0123456789");
        assert_eq!(a.check(&h, Need::Read), Ok(Caller { id: "portal".into() }));
        assert_eq!(a.check(&h, Need::Write), Err(ApiError::AdminScopeMissing("keys:write")));
    }

    #[test]
    fn a_write_only_token_may_not_read() {
        let tokens = [cred("billing", "write-token-0123456789", false, true)];
        let h = bearer("Bearer write-token-0123456789");
        assert_eq!(access(true, None, &tokens).check(&h, Need::Read), Err(ApiError::AdminScopeMissing("keys:read")));
    }

    #[test]
    fn an_unknown_or_missing_token_is_401_wherever_it_listens() {
        let tokens = [cred("portal", "read-token-0123456789", true, true)];
        for loopback in [true, false] {
            let a = access(loopback, None, &tokens);
            assert_eq!(a.check(&bearer("Bearer read-token-012345678"), Need::Read), Err(ApiError::AdminTokenRequired));
            assert_eq!(a.check(&http::HeaderMap::new(), Need::Read), Err(ApiError::AdminTokenRequired));
        }
    }

    #[test]
    fn the_single_token_file_has_every_scope() {
        let legacy = AdminToken::new("legacy-token-0123456789".into());
        let a = access(false, Some(&legacy), &[]);
        let h = bearer("BEARER legacy-token-0123456789");
        assert_eq!(a.check(&h, Need::Write), Ok(Caller { id: LEGACY_TOKEN_ID.into() }));
        assert_eq!(a.check(&bearer("Basic legacy-token-0123456789"), Need::Read), Err(ApiError::AdminTokenRequired));
    }
}
