//! The token step of the request path: the JWKS document, the token exchange endpoint, and a
//! bearer JWT turned into the key it stands for (its parent, narrowed to the token's scopes and
//! clinics) so that routes, clinics, limits, injection and audit treat it like a key.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use dashmap::DashMap;
use http::{header, HeaderValue, Response};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::authn::AuthnError;
use crate::error::ApiError;
use crate::jwt::token::{self, Refused};
use crate::jwt::{Claims, KeySet, Narrowing, Settings, TokenError};
use crate::keys::table::KeyState;
use crate::keys::{Access, AccessHeaders, Environment, KeyRecord, KeyTable, Profile, Scope, ScopeSet};

pub struct Tokens {
    pub settings: Settings,
    keys: ArcSwap<KeySet>,
    /// Tokens whose signature, kid and issuer/audience checked out, by SHA-256 of the token:
    /// an integration reuses its token for many requests, and a signature check costs ~60 µs
    /// against ~0.3 µs for a key. Time and the parent are still checked on every use; the
    /// cache is emptied when the keys are reloaded, and bounded.
    verified: DashMap<[u8; 32], Arc<Claims>>,
}

const MAX_VERIFIED: usize = 100_000;

/// Why a bearer JWT was refused, with the parent's id when the parent exists (revoked or
/// expired), for the anomaly report.
pub struct TokenRefusal {
    pub why: AuthnError,
    pub parent: Option<Arc<str>>,
}

fn invalid(e: TokenError) -> TokenRefusal {
    let why = match e {
        TokenError::Invalid => AuthnError::TokenInvalid,
        TokenError::Expired => AuthnError::TokenExpired,
    };
    TokenRefusal { why, parent: None }
}

impl Tokens {
    /// Starts with the keys validation loaded (read only if it did not); SIGHUP re-reads them.
    pub fn new(settings: Settings) -> Result<Tokens, String> {
        let keys = match &settings.loaded.0 {
            Some(set) => Arc::clone(set),
            None => Arc::new(KeySet::load(&settings.keys)?),
        };
        Ok(Tokens { settings, keys: ArcSwap::new(keys), verified: DashMap::new() })
    }

    /// Re-reads the key files (SIGHUP); on failure the current keys stay.
    pub fn reload(&self) -> Result<usize, String> {
        let keys = KeySet::load(&self.settings.keys)?;
        let n = keys.keys.len();
        self.keys.store(Arc::new(keys));
        self.verified.clear();
        Ok(n)
    }

    pub fn key_set(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    pub fn jwks(&self) -> Response<Bytes> {
        let mut r = Response::new(self.keys.load().jwks.clone());
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
        r
    }

    /// A bearer JWT → the key it acts as. The parent's current state decides as it would for
    /// the key itself: revoked parent → API_KEY_REVOKED, expired → API_KEY_EXPIRED.
    pub fn authenticate(
        &self,
        jwt: &str,
        table: &KeyTable,
        proxy_env: Environment,
        now: OffsetDateTime,
    ) -> Result<KeyRecord, TokenRefusal> {
        let claims = self.claims(jwt, now)?;
        self.act_as(&claims, table.by_id(&claims.sub), proxy_env, now)
    }

    /// The first half, for a store that is asked rather than probed: the token's signature and
    /// time, before any lookup (a forged token never reaches the store). `sub` names the parent.
    pub fn claims(&self, jwt: &str, now: OffsetDateTime) -> Result<Arc<Claims>, TokenRefusal> {
        self.verify(jwt, now.unix_timestamp()).map_err(invalid)
    }

    /// The second half: the parent the store found for `claims.sub`, narrowed to the token.
    pub fn act_as(
        &self,
        claims: &Claims,
        parent: Option<&KeyRecord>,
        proxy_env: Environment,
        now: OffsetDateTime,
    ) -> Result<KeyRecord, TokenRefusal> {
        let parent = parent.ok_or_else(|| invalid(TokenError::Invalid))?;
        if claims.env != proxy_env || parent.environment() != proxy_env {
            return Err(invalid(TokenError::Invalid));
        }
        let refused = |why| TokenRefusal { why, parent: Some(Arc::clone(&parent.id)) };
        match parent.state_at(now) {
            KeyState::Active => {}
            KeyState::Revoked => return Err(refused(AuthnError::Revoked)),
            KeyState::Expired => return Err(refused(AuthnError::Expired)),
            KeyState::NotYetValid => return Err(invalid(TokenError::Invalid)),
        }
        // What the token says, within what the parent holds now: narrowing the key narrows
        // its tokens too.
        let scopes: Vec<Scope> = claims
            .scope
            .split(' ')
            .filter(|s| parent.scopes().grants(s))
            .filter_map(|s| Scope::parse(s).ok())
            .collect();
        let clinics = match &claims.clinics {
            None => parent.clinics.clone(),
            Some(list) => {
                let kept: Vec<&str> = list.iter().map(String::as_str).filter(|c| parent.allows_clinic(c)).collect();
                if kept.is_empty() {
                    return Err(refused(AuthnError::TokenClinicsRevoked));
                }
                Some(Arc::from(kept.join(",")))
            }
        };
        let access = Access {
            environment: parent.environment(),
            scopes: ScopeSet::new(scopes),
            allowed_ips: parent.allowed_ips().to_vec(),
            rate_limit_tier: parent.rate_limit_tier().map(String::from),
            // A token spends its parent's credits (the counter is kept per key id).
            limits: parent.profile.access.limits.clone(),
        };
        let headers = AccessHeaders {
            scopes: HeaderValue::from_str(&access.scopes.header_value()).expect("scopes are validated"),
            environment: parent.profile.headers.environment.clone(),
        };
        let profile = Arc::new(Profile { access, headers });
        Ok(KeyRecord::new(parent.hash, Arc::clone(&parent.id), profile, clinics, parent.times()))
    }

    /// The signature is checked once per token; time on every use.
    fn verify(&self, jwt: &str, now: i64) -> Result<Arc<Claims>, TokenError> {
        let digest: [u8; 32] = Sha256::digest(jwt.as_bytes()).into();
        if let Some(c) = self.verified.get(&digest) {
            token::check_time(&self.settings, &c, now)?;
            return Ok(Arc::clone(&c));
        }
        let claims = Arc::new(token::verify(&self.settings, &self.keys.load(), jwt, now)?);
        if self.verified.len() < MAX_VERIFIED {
            self.verified.insert(digest, Arc::clone(&claims));
        }
        Ok(claims)
    }

    /// Forgets expired tokens.
    pub fn sweep(&self, now: i64) {
        let leeway = self.settings.leeway.as_secs() as i64;
        self.verified.retain(|_, c| c.exp + leeway > now);
    }

    /// `POST` to the issue path with a key: the OAuth 2.0 token response.
    pub fn exchange(&self, parent: &KeyRecord, body: &[u8], now: OffsetDateTime) -> Result<Response<Bytes>, ApiError> {
        let issue = self.settings.issue.as_ref().expect("only routed here when issuing is on");
        let ask: Narrowing = if body.iter().all(u8::is_ascii_whitespace) {
            Narrowing::default()
        } else {
            serde_json::from_slice(body).map_err(|e| ApiError::InvalidRequest(format!("token request body: {e}")))?
        };
        let keys = self.keys.load();
        let (jwt, claims) =
            token::issue(&self.settings, &keys, parent, &ask, now.unix_timestamp(), issue.max_ttl.as_secs()).map_err(
                |r| match r {
                    Refused::Scope(s) => ApiError::InsufficientScope { required: s },
                    Refused::Clinic => ApiError::ClinicNotAllowed,
                    Refused::Invalid(why) => ApiError::InvalidRequest(why),
                    Refused::NoSigner => ApiError::InvalidRequest("token issuing has no signing key".into()),
                },
            )?;
        let body = serde_json::json!({
            "access_token": jwt,
            "token_type": "Bearer",
            "expires_in": claims.exp - claims.iat,
            "scope": claims.scope,
        });
        let mut r = crate::error::json_no_store(Bytes::from(serde_json::to_vec(&body).expect("JSON values serialise")));
        r.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        Ok(r)
    }
}
