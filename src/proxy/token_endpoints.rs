//! The token endpoints keygate answers itself (when `tokens` is configured): the public JWKS
//! document, and the exchange of an API key for a short-lived, narrower JWT.

use http::Method;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;

use super::admit::Admitted;
use super::authenticate::Authenticated;
use super::finish::Trail;
use super::tokens::Tokens;
use super::{Body, Proxy};
use crate::error::ApiError;
use crate::jwt::Issue;

/// `GET`/`HEAD` of the JWKS path, served without a key.
pub(super) fn jwks<'s>(p: &'s Proxy, req: &Admitted<'_>, trail: &mut Trail<'s>) -> Option<http::Response<Body>> {
    let tokens = p.tokens.as_ref()?;
    let wanted = (req.method == Method::GET || req.method == Method::HEAD) && req.path == tokens.settings.jwks_path;
    if !wanted {
        return None;
    }
    trail.route = &tokens.settings.jwks_path;
    trail.outcome = "PUBLIC";
    Some(tokens.jwks().map(|b| Either::Left(Full::new(b))))
}

/// The exchange endpoint, when this request is for it.
pub(super) fn exchange_route<'s>(p: &'s Proxy, req: &Admitted<'_>) -> Option<(&'s Tokens, &'s Issue)> {
    let tokens = p.tokens.as_deref()?;
    let issue = tokens.settings.issue.as_ref()?;
    (req.path == issue.path).then_some((tokens, issue))
}

/// `POST` to the issue path with a key (never a token): the OAuth 2.0 token response.
pub(super) async fn exchange<'s>(
    (tokens, issue): (&'s Tokens, &'s Issue),
    who: &Authenticated<'_>,
    req: &Admitted<'_>,
    body: Incoming,
    trail: &mut Trail<'s>,
) -> Result<http::Response<Body>, ApiError> {
    trail.route = &issue.path;
    if who.by_token() {
        return Err(ApiError::InvalidRequest("a token cannot be exchanged; present the API key".into()));
    }
    if req.method != Method::POST {
        return Err(ApiError::MethodNotAllowed { allow: "POST".into() });
    }
    let body = Limited::new(body, issue.max_body_bytes)
        .collect()
        .await
        .map_err(|_| ApiError::PayloadTooLarge { limit: issue.max_body_bytes as u64 })?
        .to_bytes();
    let resp = tokens.exchange(who.key(), &body, trail.now)?;
    trail.outcome = "TOKEN_ISSUED";
    Ok(resp.map(|b| Either::Left(Full::new(b))))
}
