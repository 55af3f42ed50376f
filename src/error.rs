//! The one request error type and the one place it becomes the standard JSON error body.
//! Every refusal the proxy makes, whatever module decided it, ends up here.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::authn::AuthnError;
use crate::policy::Denied;
mod report;
pub use report::REPORTABLE_CODES;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    MissingAuthorization,
    /// Wrong scheme or malformed credentials; the reason is ours, never the client's text.
    BadAuthorization(&'static str),
    InvalidRequest(String),
    /// The body's framing could be read two ways, or broke mid-stream: refused, and the
    /// connection closed, since client and keygate may disagree where the next request starts.
    BadFraming(&'static str),
    /// The head is over `limits.max_header_bytes` or `limits.max_headers`.
    HeadersTooLarge,
    InvalidApiKey,
    EnvironmentMismatch {
        key: &'static str,
        proxy: &'static str,
    },
    Revoked,
    Expired,
    IpNotAllowed,
    RouteNotFound,
    MethodNotAllowed {
        allow: String,
    },
    InsufficientScope {
        required: String,
    },
    ClinicNotAllowed,
    PayloadTooLarge {
        limit: u64,
    },
    UpstreamUnavailable,
    UpstreamTimeout,
    /// Over the key's (or, unauthenticated, the address's) budget: retry in whole seconds.
    RateLimited {
        retry_after: u64,
    },
    /// The address is blocked for a while after an invalid-key burst (configured as 403).
    IpBlocked {
        retry_after: u64,
    },
    /// The key's credits do not cover the route's cost; `retry_after` is the next refill, if any.
    CreditsExhausted {
        retry_after: Option<u64>,
    },
    /// The key's calendar quota (UTC day or month) is used up until it resets.
    QuotaExceeded {
        retry_after: u64,
    },
    /// Shared limiter unreachable and configured to fail closed.
    RateLimiterUnavailable,
    /// A bearer JWT that is malformed, badly signed, of an unknown kid, for another audience...
    InvalidToken,
    TokenExpired,
    /// The key store's view is older than `max_staleness` (or was never loaded): a revocation
    /// could be missing, so no key is judged.
    KeyStoreUnavailable,
    /// A check endpoint's caller did not present the shared secret: not a front proxy of ours.
    CheckCallerRefused,
    /// The admin API (`/admin/*`) needs the admin token and this request did not carry it.
    AdminTokenRequired,
    /// The admin API is off: a non-loopback admin listener with no admin token configured.
    AdminApiOff,
    /// Nothing of that name on the admin listener (a path, a key id).
    NotFound(&'static str),
    /// An admin change the key's state does not allow (rotating a revoked key, …).
    Conflict(String),
    /// A valid admin token without the scope this call needs (`keys:write`).
    AdminScopeMissing(&'static str),
}

#[derive(Serialize)]
struct Body<'a> {
    success: bool,
    error: ErrorBody<'a>,
    request_id: &'a str,
    timestamp: &'a str,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingAuthorization
            | ApiError::BadAuthorization(_)
            | ApiError::InvalidApiKey
            | ApiError::EnvironmentMismatch { .. }
            | ApiError::Revoked
            | ApiError::Expired
            | ApiError::InvalidToken
            | ApiError::TokenExpired
            | ApiError::AdminTokenRequired => StatusCode::UNAUTHORIZED,
            ApiError::InvalidRequest(_) | ApiError::BadFraming(_) => StatusCode::BAD_REQUEST,
            ApiError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::IpNotAllowed | ApiError::InsufficientScope { .. } | ApiError::ClinicNotAllowed => {
                StatusCode::FORBIDDEN
            }
            ApiError::RouteNotFound | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            ApiError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::RateLimiterUnavailable | ApiError::KeyStoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RateLimited { .. } | ApiError::CreditsExhausted { .. } | ApiError::QuotaExceeded { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::CheckCallerRefused | ApiError::AdminApiOff | ApiError::AdminScopeMissing(_) => {
                StatusCode::FORBIDDEN
            }
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::IpBlocked { .. } => StatusCode::FORBIDDEN,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MissingAuthorization | ApiError::BadAuthorization(_) => "UNAUTHORIZED",
            ApiError::InvalidRequest(_) | ApiError::BadFraming(_) => "INVALID_REQUEST",
            ApiError::HeadersTooLarge => "REQUEST_HEADERS_TOO_LARGE",
            ApiError::InvalidApiKey => "INVALID_API_KEY",
            ApiError::EnvironmentMismatch { .. } => "API_KEY_ENVIRONMENT_MISMATCH",
            ApiError::Revoked => "API_KEY_REVOKED",
            ApiError::Expired => "API_KEY_EXPIRED",
            ApiError::IpNotAllowed => "IP_NOT_ALLOWED",
            ApiError::RouteNotFound => "ROUTE_NOT_FOUND",
            ApiError::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            ApiError::InsufficientScope { .. } => "INSUFFICIENT_SCOPE",
            ApiError::ClinicNotAllowed => "CLINIC_NOT_ALLOWED",
            ApiError::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            ApiError::UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            ApiError::UpstreamTimeout => "UPSTREAM_TIMEOUT",
            ApiError::RateLimiterUnavailable => "SERVICE_UNAVAILABLE",
            ApiError::RateLimited { .. } => "RATE_LIMIT_EXCEEDED",
            ApiError::CreditsExhausted { .. } => "CREDITS_EXHAUSTED",
            ApiError::QuotaExceeded { .. } => "QUOTA_EXCEEDED",
            ApiError::IpBlocked { .. } => "IP_BLOCKED",
            ApiError::InvalidToken => "INVALID_TOKEN",
            ApiError::TokenExpired => "TOKEN_EXPIRED",
            ApiError::KeyStoreUnavailable => "KEY_STORE_UNAVAILABLE",
            ApiError::CheckCallerRefused => "CHECK_CALLER_REFUSED",
            ApiError::AdminTokenRequired => "ADMIN_TOKEN_REQUIRED",
            ApiError::AdminApiOff => "ADMIN_API_OFF",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::AdminScopeMissing(_) => "INSUFFICIENT_SCOPE",
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::MissingAuthorization => "Missing Authorization header. Expected: Bearer <api_key>".into(),
            ApiError::BadAuthorization(why) => format!("{why}. Expected: Bearer <api_key>"),
            ApiError::InvalidRequest(why) => format!("Invalid request: {why}"),
            ApiError::BadFraming(why) => format!("Invalid request: {why}"),
            ApiError::HeadersTooLarge => "Request headers are too large or too many".into(),
            ApiError::InvalidApiKey => "Invalid API key".into(),
            ApiError::EnvironmentMismatch { key, proxy } => {
                format!("API key is a {key} key, but this endpoint only accepts {proxy} keys")
            }
            ApiError::Revoked => "API key has been revoked".into(),
            ApiError::Expired => "API key has expired".into(),
            ApiError::IpNotAllowed => "Requests with this API key are not allowed from this IP address".into(),
            ApiError::RouteNotFound => "No route matches this path".into(),
            ApiError::MethodNotAllowed { allow } => format!("Method not allowed on this route (allowed: {allow})"),
            ApiError::InsufficientScope { required } => format!("API key lacks the required scope: {required}"),
            ApiError::ClinicNotAllowed => "API key is not allowed to access this clinic".into(),
            ApiError::PayloadTooLarge { limit } => format!("Request body exceeds the limit of {limit} bytes"),
            ApiError::UpstreamUnavailable => "The upstream service is unavailable".into(),
            ApiError::UpstreamTimeout => "The upstream service did not answer in time".into(),
            ApiError::RateLimited { retry_after } => {
                format!("Rate limit exceeded. Retry after {retry_after} second{}", plural(*retry_after))
            }
            ApiError::CreditsExhausted { retry_after: None } => "API key has no credits left".into(),
            ApiError::CreditsExhausted { retry_after: Some(s) } => {
                format!("API key has no credits left. They are refilled in {s} second{}", plural(*s))
            }
            ApiError::QuotaExceeded { retry_after } => {
                format!("API key quota exceeded. It resets in {retry_after} second{}", plural(*retry_after))
            }
            ApiError::IpBlocked { retry_after } => format!(
                "Requests from this address are blocked after repeated invalid API keys. Retry after {retry_after} second{}",
                plural(*retry_after)
            ),
            ApiError::RateLimiterUnavailable => "The rate limiter is unavailable; retry shortly".into(),
            ApiError::InvalidToken => "Invalid token".into(),
            ApiError::TokenExpired => "Token has expired".into(),
            ApiError::KeyStoreUnavailable => "The key store is unavailable; retry shortly".into(),
            ApiError::CheckCallerRefused => "The check endpoint answers only its configured front proxy".into(),
            ApiError::AdminTokenRequired => "The admin API needs the admin token as a Bearer credential".into(),
            ApiError::AdminApiOff => {
                "The admin API is off: admin_listen is not loopback and no admin_tokens (or admin_token_file) are configured"
                    .into()
            }
            ApiError::NotFound(what) => format!("No such {what}"),
            ApiError::Conflict(why) => format!("Conflict: {why}"),
            ApiError::AdminScopeMissing(scope) => format!("The admin token lacks the scope {scope}"),
        }
    }

    /// The RFC 6750 challenge for 401s: `invalid_request` when the credentials were malformed,
    /// `invalid_token` when they were well-formed but not good, nothing when absent.
    fn www_authenticate(&self) -> Option<&'static str> {
        match self {
            ApiError::MissingAuthorization => Some("Bearer realm=\"keygate\""),
            ApiError::BadAuthorization(_) => Some("Bearer realm=\"keygate\", error=\"invalid_request\""),
            ApiError::InvalidApiKey
            | ApiError::EnvironmentMismatch { .. }
            | ApiError::Revoked
            | ApiError::Expired
            | ApiError::InvalidToken
            | ApiError::TokenExpired => Some("Bearer realm=\"keygate\", error=\"invalid_token\""),
            ApiError::AdminTokenRequired => Some("Bearer realm=\"keygate-admin\""),
            ApiError::InvalidRequest(_)
            | ApiError::BadFraming(_)
            | ApiError::HeadersTooLarge
            | ApiError::IpNotAllowed
            | ApiError::RouteNotFound
            | ApiError::MethodNotAllowed { .. }
            | ApiError::InsufficientScope { .. }
            | ApiError::ClinicNotAllowed
            | ApiError::PayloadTooLarge { .. }
            | ApiError::UpstreamUnavailable
            | ApiError::UpstreamTimeout
            | ApiError::RateLimited { .. }
            | ApiError::CreditsExhausted { .. }
            | ApiError::QuotaExceeded { .. }
            | ApiError::IpBlocked { .. }
            | ApiError::RateLimiterUnavailable
            | ApiError::KeyStoreUnavailable
            | ApiError::CheckCallerRefused
            | ApiError::AdminApiOff
            | ApiError::NotFound(_)
            | ApiError::Conflict(_)
            | ApiError::AdminScopeMissing(_) => None,
        }
    }

    pub fn to_response(&self, request_id: &str, timestamp: &str) -> Response<Bytes> {
        let message = self.message();
        let body =
            Body { success: false, error: ErrorBody { code: self.code(), message: &message }, request_id, timestamp };
        let json = serde_json::to_vec(&body).expect("plain strings serialise");
        let mut resp = json_no_store(Bytes::from(json));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        if let Some(challenge) = self.www_authenticate() {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let ApiError::MethodNotAllowed { allow } = self {
            if let Ok(v) = HeaderValue::from_str(allow) {
                h.insert(header::ALLOW, v);
            }
        }
        if let ApiError::BadFraming(_) = self {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let ApiError::RateLimited { retry_after }
        | ApiError::IpBlocked { retry_after }
        | ApiError::QuotaExceeded { retry_after }
        | ApiError::CreditsExhausted { retry_after: Some(retry_after) } = self
        {
            h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        if let ApiError::RateLimiterUnavailable | ApiError::KeyStoreUnavailable = self {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

impl ApiError {
    /// A refusal made outside the request path (the admin API, a check the engine never saw):
    /// the standard body with the request id the client sent, if well formed, or a new one.
    pub fn standalone(&self, request: &http::HeaderMap, request_id_max: usize) -> Response<Bytes> {
        let rid = crate::request_id::accept_or_generate(request, request_id_max, time::OffsetDateTime::now_utc());
        let mut resp = self.to_response(rid.to_str().unwrap_or(""), &timestamp(time::OffsetDateTime::now_utc()));
        resp.headers_mut().insert(crate::request_id::HEADER.clone(), rid);
        resp
    }
}

/// RFC 3339 UTC with milliseconds, as in the reference error body.
pub fn timestamp(at: time::OffsetDateTime) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    at.to_offset(time::UtcOffset::UTC).format(&fmt).unwrap_or_default()
}

/// A JSON answer no cache may keep: every refusal, the clinic "empty result", issued tokens.
pub fn json_no_store(body: Bytes) -> Response<Bytes> {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

impl From<AuthnError> for ApiError {
    fn from(e: AuthnError) -> Self {
        match e {
            AuthnError::Missing => ApiError::MissingAuthorization,
            AuthnError::Multiple => ApiError::InvalidRequest("more than one Authorization header".into()),
            AuthnError::Malformed(why) => ApiError::BadAuthorization(why),
            AuthnError::BadFormat | AuthnError::Unknown | AuthnError::NotYetValid => ApiError::InvalidApiKey,
            AuthnError::WrongEnvironment { key, proxy } => {
                ApiError::EnvironmentMismatch { key: key.as_str(), proxy: proxy.as_str() }
            }
            AuthnError::Revoked => ApiError::Revoked,
            AuthnError::Expired => ApiError::Expired,
            AuthnError::TokenInvalid => ApiError::InvalidToken,
            AuthnError::TokenExpired => ApiError::TokenExpired,
            AuthnError::TokenClinicsRevoked => ApiError::ClinicNotAllowed,
        }
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        match d {
            Denied::IpNotAllowed => ApiError::IpNotAllowed,
            Denied::RouteNotFound => ApiError::RouteNotFound,
            Denied::MethodNotAllowed { allow } => ApiError::MethodNotAllowed { allow },
            Denied::InsufficientScope { required } => ApiError::InsufficientScope { required },
            Denied::ClinicNotAllowed => ApiError::ClinicNotAllowed,
        }
    }
}

#[cfg(test)]
mod tests;
