//! Step 5, upstream: the identity headers (client copies were removed in admit), the forwarding
//! headers, the optional signed context, keygate's own `Content-Length`, then the exchange with
//! the upstream, its failures sorted into the client's fault, "unavailable" and "too slow".

use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri};
use http_body_util::Either;
use hyper::body::Incoming;
use time::OffsetDateTime;

use super::finish::Trail;
use super::{forwarded, Body, ConnFacts, Proxy};
use crate::error::ApiError;
use crate::forward::{upstream_body, ForwardError};
use crate::keys::KeyRecord;
use crate::request_id;

pub static X_ALLOWED_CLINICS: HeaderName = HeaderName::from_static("x-allowed-clinics");
pub static X_SCOPES: HeaderName = HeaderName::from_static("x-scopes");
pub static X_API_KEY_ID: HeaderName = HeaderName::from_static("x-api-key-id");
pub static X_API_KEY_ENV: HeaderName = HeaderName::from_static("x-api-key-environment");
pub static X_KEYGATE_WOULD_REFUSE: HeaderName = HeaderName::from_static("x-keygate-would-refuse");
static X_KEYGATE_SIGNATURE: HeaderName = HeaderName::from_static("x-keygate-signature");
static X_KEYGATE_CONTEXT: HeaderName = HeaderName::from_static("x-keygate-context");

/// The authorised path, byte for byte, in origin form (the forwarder connects to the
/// upstream's scheme and authority).
pub(super) fn uri(path: &str, query: Option<&str>) -> Result<Uri, ApiError> {
    let mut pq = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1));
    pq.push_str(path);
    if let Some(q) = query {
        pq.push('?');
        pq.push_str(q);
    }
    Uri::builder()
        .path_and_query(pq)
        .build()
        .map_err(|_| ApiError::InvalidRequest("request target cannot be forwarded".into()))
}

/// The headers that say who is asking: what the upstream trusts because keygate set them.
pub(super) fn identity(h: &mut http::HeaderMap, k: &KeyRecord) {
    let clinics = match &k.clinics {
        Some(list) => HeaderValue::from_str(list).expect("clinic ids are validated at load"),
        None => HeaderValue::from_static("*"),
    };
    h.insert(X_ALLOWED_CLINICS.clone(), clinics);
    h.insert(X_SCOPES.clone(), k.profile.headers.scopes.clone());
    h.insert(X_API_KEY_ID.clone(), HeaderValue::from_str(&k.id).expect("key ids are validated at load"));
    h.insert(X_API_KEY_ENV.clone(), k.profile.headers.environment.clone());
}

/// In report-only mode, the refusal an enforcing keygate would have answered, when the upstream
/// is to be told (`Trail::tell_upstream`).
pub(super) fn would_refuse(h: &mut http::HeaderMap, trail: &Trail<'_>) {
    if let Some(code) = trail.would_refuse.filter(|_| trail.tell_upstream()) {
        h.insert(X_KEYGATE_WOULD_REFUSE.clone(), HeaderValue::from_static(code));
    }
}

pub(super) async fn forward(
    p: &Proxy,
    mut parts: http::request::Parts,
    (body, body_len): (Incoming, Option<u64>),
    uri: Uri,
    key: Option<&KeyRecord>,
    conn: &ConnFacts,
    trail: &mut Trail<'_>,
) -> Result<Response<Body>, ApiError> {
    let cfg = &*p.config;
    let original_authority = parts.uri.authority().cloned();
    let h = &mut parts.headers;
    // Room for what is added below (request id, four key headers, three forwarding ones):
    // one resize instead of a rehash per doubling.
    h.reserve(8);
    if !cfg.forward_authorization {
        h.remove(header::AUTHORIZATION);
    }
    if !h.contains_key(header::HOST) {
        if let Some(a) = &original_authority {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                h.insert(header::HOST, v);
            }
        }
    }
    h.insert(request_id::HEADER.clone(), trail.rid.clone());
    // keygate's rendering of the length it parsed, never the client's text ("007").
    if let Some(len) = body_len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    if let Some(k) = key {
        identity(h, k);
    }
    would_refuse(h, trail);
    forwarded::apply(h, &conn.hop);
    // A signed context vouches that keygate authorised the request: never for one it would
    // have refused (report-only mode), which the upstream then sees unsigned.
    if let Some(signing) = cfg.upstream_context.as_ref().filter(|_| trail.would_refuse.is_none()) {
        sign_context(p, signing, &mut parts.headers, &parts.method, &uri, &trail.rid, trail.now);
    }
    parts.uri = uri;
    // The upstream speaks HTTP/1.1 whatever the client spoke.
    parts.version = http::Version::HTTP_11;
    let req = Request::from_parts(parts, upstream_body(body, cfg.limits.max_body_bytes));

    let sent = Instant::now();
    trail.forwarding = true;
    let result = p.forwarder.send(req).await;
    let took = sent.elapsed().as_secs_f64();
    match result {
        Ok(mut resp) => {
            // An HTTP/1.0 upstream must not make hyper answer a 1.1 client in 1.0 and close its
            // connection; hyper still speaks 1.0 to a 1.0 client.
            *resp.version_mut() = http::Version::HTTP_11;
            trail.upstream_seconds = Some(took);
            p.metrics.upstream_answered(trail.route, &trail.method, resp.status().as_u16(), took);
            crate::sanitize::sanitize_response(resp.headers_mut());
            Ok(resp.map(Either::Right))
        }
        Err(ForwardError::Timeout) => {
            p.metrics.upstream_error("timeout");
            let timeout_ms = cfg.upstream.response_timeout.as_millis() as u64;
            tracing::warn!(request_id = trail.rid(), timeout_ms, "upstream gave no response in time");
            Err(ApiError::UpstreamTimeout)
        }
        Err(ForwardError::BodyTooLarge) => Err(ApiError::PayloadTooLarge { limit: cfg.limits.max_body_bytes }),
        // The client's fault, not the upstream's: counted as the client's refusal only.
        Err(ForwardError::ClientBody) => {
            Err(ApiError::BadFraming("the request body ended early or its chunked framing is malformed"))
        }
        Err(ForwardError::Unavailable { kind, cause }) => {
            p.metrics.upstream_error(kind);
            tracing::warn!(request_id = trail.rid(), stage = kind, cause, "upstream unavailable");
            Err(ApiError::UpstreamUnavailable)
        }
    }
}

/// The signed upstream context over exactly what is forwarded (see `jwt::context`).
fn sign_context(
    p: &Proxy,
    signing: &crate::config::ContextSigning,
    h: &mut http::HeaderMap,
    method: &Method,
    uri: &Uri,
    rid: &HeaderValue,
    now: OffsetDateTime,
) {
    use crate::jwt::context::{self, Facts};
    let get = |n: &HeaderName| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let f = Facts {
        request_id: rid.to_str().unwrap_or(""),
        method: method.as_str(),
        path_and_query: uri.path_and_query().map_or("/", |pq| pq.as_str()),
        clinics: get(&X_ALLOWED_CLINICS),
        scopes: get(&X_SCOPES),
        key_id: get(&X_API_KEY_ID),
    };
    let t = now.unix_timestamp();
    let value = match signing {
        crate::config::ContextSigning::Hmac { key_id, secret } => {
            Some((X_KEYGATE_SIGNATURE.clone(), context::hmac_header(key_id, secret, t, &f)))
        }
        crate::config::ContextSigning::Jwt { ttl, audience } => p.tokens.as_ref().and_then(|tokens| {
            let claims = context::ContextClaims {
                iss: &tokens.settings.issuer,
                aud: audience,
                iat: t,
                exp: t + ttl.as_secs() as i64,
                facts: &f,
            };
            context::sign_jwt(&tokens.key_set(), &claims).map(|jwt| (X_KEYGATE_CONTEXT.clone(), jwt))
        }),
    };
    if let Some((name, v)) = value {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(name, v);
        }
    }
}
