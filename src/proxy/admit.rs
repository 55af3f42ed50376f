//! Step 1, admit: what must hold before anything reads the request. The head's framing and
//! size, the client's address, header hygiene, the one canonical path. Everything later reads
//! the `Admitted` facts, never the raw request. All of it is enforced in report-only mode too.

use std::borrow::Cow;

use http::{Extensions, HeaderMap, Method, Uri};

use super::finish::Trail;
use super::{ConnFacts, Proxy};
use crate::error::ApiError;
use crate::head_check::HeadFacts;
use crate::textfmt::IpText;
use crate::{client_ip, framing, path, sanitize};

/// The request as every later step sees it.
pub(super) struct Admitted<'r> {
    /// The method to authorise: an allowed override's, else the request's.
    pub method: Method,
    /// Normalised: the path authorised is the path forwarded.
    pub path: Cow<'r, str>,
    /// The body's declared length (`None`: chunked or none).
    pub body_len: Option<u64>,
}

/// Who the client is (the peer, or what a trusted proxy says); whether the peer is trusted.
pub(super) fn peer(p: &Proxy, headers: &HeaderMap, conn: &ConnFacts, trail: &mut Trail<'_>) -> bool {
    let trusted = &p.config.trusted_proxies;
    trail.client_ip = client_ip::resolve(headers, conn.peer.ip(), trusted);
    if trail.client_ip != conn.peer.ip() {
        trail.client_text = IpText::new(trail.client_ip);
    }
    client_ip::is_trusted(conn.peer.ip(), trusted)
}

/// Refuses what cannot be read one way only, and cleans the rest.
pub(super) fn admit<'r>(
    p: &Proxy,
    uri: &'r Uri,
    method: &Method,
    headers: &mut HeaderMap,
    extensions: &Extensions,
    peer_trusted: bool,
) -> Result<Admitted<'r>, ApiError> {
    let limits = &p.config.limits;
    if let Some(why) = extensions.get::<HeadFacts>().and_then(|f| f.refusal()) {
        return Err(ApiError::BadFraming(why));
    }
    // The parser lets heads through up to twice keygate's limits so that these refusals carry
    // the standard body (see server::builder).
    let target_len = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if headers.len() > limits.max_headers || framing::head_size(target_len, headers) > limits.max_header_bytes {
        return Err(ApiError::HeadersTooLarge);
    }
    let body_len = framing::body_length(headers).map_err(|e| ApiError::BadFraming(e.reason()))?;
    if body_len.is_some_and(|len| len > limits.max_body_bytes) {
        return Err(ApiError::PayloadTooLarge { limit: limits.max_body_bytes });
    }
    let sanitized = sanitize::sanitize(headers, &p.config.headers, peer_trusted)
        .map_err(|why| ApiError::InvalidRequest(why.into()))?;
    let path = path::normalize(uri.path()).map_err(|e| ApiError::InvalidRequest(e.reason().into()))?;
    Ok(Admitted { method: sanitized.method_override.unwrap_or_else(|| method.clone()), path, body_len })
}
