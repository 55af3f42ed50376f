//! Issuing and verifying tokens: pure functions over the claims, the key set and the clock.
//! The signature library is `jsonwebtoken`; this module only decides which algorithm a kid
//! may use, and checks time, issuer and audience itself (so the clock is the caller's).

use jsonwebtoken::{decode, decode_header, encode, Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::KeySet;
use super::Settings;
use crate::keys::{Environment, KeyRecord};

/// The claims keygate puts in a token. `clinics` absent means every clinic the parent has.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The parent key's id.
    pub sub: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    /// Space-separated, as OAuth's `scope`.
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clinics: Option<Vec<String>>,
    pub env: Environment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Malformed, bad signature, unknown kid, wrong algorithm, issuer or audience, not yet
    /// valid, or a parent that does not exist: one answer that does not say which.
    Invalid,
    Expired,
}

/// What a token request may ask for: only ever less than the key has.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Narrowing {
    pub scopes: Option<Vec<String>>,
    pub clinics: Option<Vec<String>>,
    pub ttl_seconds: Option<u64>,
}

/// Why a token request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// A scope the key does not hold (named).
    Scope(String),
    /// A clinic outside the key's clinics.
    Clinic,
    Invalid(String),
    /// No configured key can sign.
    NoSigner,
}

/// Issues a token for `parent`, narrowed as asked. Returns the token and its claims.
pub fn issue(
    s: &Settings,
    keys: &KeySet,
    parent: &KeyRecord,
    ask: &Narrowing,
    now: i64,
    max_ttl: u64,
) -> Result<(String, Claims), Refused> {
    let scope = match &ask.scopes {
        None => parent.scopes().header_value(),
        Some(list) => {
            if list.is_empty() {
                return Err(Refused::Invalid("scopes must not be empty".into()));
            }
            for sc in list {
                crate::keys::Scope::parse(sc).map_err(Refused::Invalid)?;
                if !parent.scopes().grants(sc) {
                    return Err(Refused::Scope(sc.clone()));
                }
            }
            list.join(" ")
        }
    };
    let clinics = match &ask.clinics {
        None => parent.clinic_list().map(|l| l.into_iter().map(String::from).collect()),
        Some(list) => {
            if list.is_empty() {
                return Err(Refused::Invalid("clinics must not be empty".into()));
            }
            if list.iter().any(|c| !parent.allows_clinic(c)) {
                return Err(Refused::Clinic);
            }
            Some(list.clone())
        }
    };
    let ttl = ask.ttl_seconds.unwrap_or(max_ttl).clamp(1, max_ttl);
    // Never outlive the parent.
    let parent_end = parent.times().expires_at.map(|t| t.unix_timestamp());
    let exp = parent_end.map_or(now + ttl as i64, |end| end.min(now + ttl as i64));
    let claims = Claims {
        iss: s.issuer.clone(),
        aud: s.audience.clone(),
        sub: parent.id.to_string(),
        iat: now,
        nbf: now,
        exp,
        jti: uuid::Uuid::now_v7().to_string(),
        scope,
        clinics,
        env: parent.environment(),
    };
    let key = keys.signer().ok_or(Refused::NoSigner)?;
    let mut header = Header::new(key.alg.jwt());
    header.kid = Some(key.kid.clone());
    let token = encode(&header, &claims, key.encoding.as_ref().expect("signer has a private key"))
        .map_err(|e| Refused::Invalid(format!("cannot sign: {e}")))?;
    Ok((token, claims))
}

/// Does this bearer token look like a JWT rather than an API key? (Keys never contain dots.)
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|b| *b == b'.').count() == 2
}

/// Verifies signature, algorithm, kid, issuer, audience and time. The parent's state is the
/// caller's to check (it needs the key table).
pub fn verify(s: &Settings, keys: &KeySet, token: &str, now: i64) -> Result<Claims, TokenError> {
    let header = decode_header(token).map_err(|_| TokenError::Invalid)?;
    let kid = header.kid.as_deref().ok_or(TokenError::Invalid)?;
    let key = keys.find(kid).ok_or(TokenError::Invalid)?;
    // The kid decides the algorithm; the token's header only has to agree. This is what stops
    // `alg: none` and HMAC-with-the-public-key confusion.
    if header.alg != key.alg.jwt() {
        return Err(TokenError::Invalid);
    }
    let mut v = Validation::new(key.alg.jwt());
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    let claims = decode::<Claims>(token, &key.decoding, &v).map_err(|_| TokenError::Invalid)?.claims;
    if claims.iss != s.issuer || claims.aud != s.audience {
        return Err(TokenError::Invalid);
    }
    check_time(s, &claims, now)?;
    Ok(claims)
}

/// `nbf` and `exp` with the configured leeway.
pub fn check_time(s: &Settings, claims: &Claims, now: i64) -> Result<(), TokenError> {
    let leeway = s.leeway.as_secs() as i64;
    if claims.nbf > now + leeway {
        return Err(TokenError::Invalid);
    }
    if claims.exp + leeway <= now {
        return Err(TokenError::Expired);
    }
    Ok(())
}
