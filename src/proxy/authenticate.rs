//! Step 2, authenticate: the bearer credential, an API key or a JWT keygate issued, turned into
//! the key it stands for (a token acts as its parent, narrowed). Every failure, of a key or a
//! token, is one `AuthnError`: the detectors hear of it, the address's budget pays for it.

use std::sync::Arc;

use http::HeaderMap;

use super::finish::Trail;
use super::Proxy;
use crate::authn::{self, AuthnError};
use crate::error::ApiError;
use crate::jwt::token::looks_like_jwt;
use crate::keys::KeyRecord;
use crate::store::pgstore::cache::StoreDown;
use crate::store::source::{Found, KeyView};

/// How the request authenticated, holding what the key was found in.
pub(super) enum Authenticated<'v> {
    Key(Found<'v>),
    /// A JWT: its parent narrowed to the token (`derived`), and the parent as found.
    Token {
        derived: KeyRecord,
        parent: Found<'v>,
    },
}

impl Authenticated<'_> {
    pub fn key(&self) -> &KeyRecord {
        match self {
            Authenticated::Key(found) => found.record(),
            Authenticated::Token { derived, .. } => derived,
        }
    }

    pub fn by_token(&self) -> bool {
        matches!(self, Authenticated::Token { .. })
    }

    fn found(&self) -> &Found<'_> {
        match self {
            Authenticated::Key(found) | Authenticated::Token { parent: found, .. } => found,
        }
    }
}

/// The keys as this request will see them, or a refusal when the store has fallen too far
/// behind to be trusted (a revocation could be missing); `None` when report-only mode passed
/// that over (no key is judged).
pub(super) fn view<'p>(p: &'p Proxy, trail: &mut Trail<'_>) -> Result<Option<KeyView<'p>>, ApiError> {
    if let Some(f) = &p.freshness {
        if !f.may_serve(trail.instant) {
            return trail.excuse(Err(ApiError::KeyStoreUnavailable));
        }
    }
    Ok(Some(p.keys.view()))
}

/// The key the request stands for; `None` without a view, or when report-only mode passed over
/// the refusal (the request goes on as if unauthenticated: no identity headers).
pub(super) async fn authenticate<'v>(
    p: &Proxy,
    view: Option<&'v KeyView<'_>>,
    headers: &HeaderMap,
    trail: &mut Trail<'_>,
) -> Result<Option<Authenticated<'v>>, ApiError> {
    let Some(view) = view else { return Ok(None) };
    // The store could not be asked (a lookup outage), or the credential failed: either way
    // report-only mode goes on without a key.
    let identified = identify(p, view, headers, trail).await;
    let who = match trail.excuse(identified)? {
        None => return Ok(None),
        Some(Ok(who)) => who,
        Some(Err((why, known))) => {
            let refused = refuse(p, why, known, trail);
            return trail.excuse(Err(refused));
        }
    };
    let key = who.key();
    trail.key_id = Some(Arc::clone(&key.id));
    trail.auth = if who.by_token() { "token" } else { "key" };
    p.anomalies.authenticated(key, || who.found().rotated_out(), trail.client_ip, trail.clock, trail.rid());
    Ok(Some(who))
}

/// The key or token's verdict (`Err` inside: why not, and the store's id of the key when it
/// exists); the outer `Err` only when the store could not be asked.
async fn identify<'v>(
    p: &Proxy,
    view: &'v KeyView<'_>,
    headers: &HeaderMap,
    trail: &Trail<'_>,
) -> Result<Result<Authenticated<'v>, (AuthnError, Option<Arc<str>>)>, ApiError> {
    let cfg = &*p.config;
    let token = authn::bearer_token(headers);
    if let (Some(tokens), Ok(t)) = (&p.tokens, token) {
        if looks_like_jwt(t.expose()) {
            let claims = match tokens.claims(t.expose(), trail.now) {
                Ok(c) => c,
                Err(r) => return Ok(Err((r.why, r.parent))),
            };
            let parent = view.by_id(&claims.sub).await.map_err(store_down)?;
            return Ok(
                match (tokens.act_as(&claims, parent.as_ref().map(Found::record), cfg.environment, trail.now), parent) {
                    (Ok(derived), Some(parent)) => Ok(Authenticated::Token { derived, parent }),
                    (Ok(_), None) => Err((AuthnError::TokenInvalid, None)),
                    (Err(r), _) => Err((r.why, r.parent)),
                },
            );
        }
    }
    // Format, checksum and environment first: nothing is looked up for a token that fails them.
    let hash = match token.and_then(|t| authn::key_hash(t, &cfg.keys.format, cfg.environment)) {
        Ok(h) => h,
        Err(why) => return Ok(Err((why, None))),
    };
    let found = view.by_hash(&hash).await.map_err(store_down)?;
    let verdict = authn::judge(found.as_ref().map(Found::record), cfg.environment, trail.now).map(|_| ());
    Ok(match (verdict, found) {
        (Ok(()), Some(found)) => Ok(Authenticated::Key(found)),
        (verdict, found) => {
            let why = verdict.err().unwrap_or(AuthnError::Unknown);
            // The store's id of a revoked or expired key, for the anomaly report.
            let known = authn::refused_id(&why, || found.as_ref().map(Found::record));
            Err((why, known))
        }
    })
}

/// A request that did not authenticate: the detectors hear of it, the address's budget pays
/// for it, and the failure is the answer (or the 429 the address earned).
fn refuse(p: &Proxy, why: AuthnError, key_id: Option<Arc<str>>, trail: &mut Trail<'_>) -> ApiError {
    p.anomalies.authn_failed(&why, key_id.as_ref(), trail.client_ip, trail.clock, trail.rid());
    trail.key_id = key_id;
    match p.limiter.unauthenticated(trail.client_ip, trail.clock.mono) {
        Ok(()) => why.into(),
        Err(limited) => limited,
    }
}

/// A cache miss the database could not answer: no key can be judged (the reason, which names
/// no key, is for the debug log; the pool's keeper logs the outage itself).
fn store_down(e: StoreDown) -> ApiError {
    tracing::debug!(reason = %e.0, "key lookup failed");
    ApiError::KeyStoreUnavailable
}
