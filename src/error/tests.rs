use super::*;

/// Every variant with its documented status and code (also what `report`'s tests walk).
pub(super) fn every_error() -> Vec<(ApiError, u16, &'static str)> {
    vec![
        (ApiError::MissingAuthorization, 401, "UNAUTHORIZED"),
        (ApiError::BadAuthorization("x"), 401, "UNAUTHORIZED"),
        (ApiError::InvalidRequest("x".into()), 400, "INVALID_REQUEST"),
        (ApiError::BadFraming("x"), 400, "INVALID_REQUEST"),
        (ApiError::HeadersTooLarge, 431, "REQUEST_HEADERS_TOO_LARGE"),
        (ApiError::InvalidApiKey, 401, "INVALID_API_KEY"),
        (ApiError::EnvironmentMismatch { key: "test", proxy: "live" }, 401, "API_KEY_ENVIRONMENT_MISMATCH"),
        (ApiError::Revoked, 401, "API_KEY_REVOKED"),
        (ApiError::Expired, 401, "API_KEY_EXPIRED"),
        (ApiError::IpNotAllowed, 403, "IP_NOT_ALLOWED"),
        (ApiError::RouteNotFound, 404, "ROUTE_NOT_FOUND"),
        (ApiError::MethodNotAllowed { allow: "GET".into() }, 405, "METHOD_NOT_ALLOWED"),
        (ApiError::InsufficientScope { required: "a:read".into() }, 403, "INSUFFICIENT_SCOPE"),
        (ApiError::ClinicNotAllowed, 403, "CLINIC_NOT_ALLOWED"),
        (ApiError::PayloadTooLarge { limit: 1 }, 413, "PAYLOAD_TOO_LARGE"),
        (ApiError::UpstreamUnavailable, 502, "UPSTREAM_UNAVAILABLE"),
        (ApiError::UpstreamTimeout, 504, "UPSTREAM_TIMEOUT"),
        (ApiError::RateLimited { retry_after: 1 }, 429, "RATE_LIMIT_EXCEEDED"),
        (ApiError::CreditsExhausted { retry_after: None }, 429, "CREDITS_EXHAUSTED"),
        (ApiError::QuotaExceeded { retry_after: 1 }, 429, "QUOTA_EXCEEDED"),
        (ApiError::IpBlocked { retry_after: 1 }, 403, "IP_BLOCKED"),
        (ApiError::RateLimiterUnavailable, 503, "SERVICE_UNAVAILABLE"),
        (ApiError::InvalidToken, 401, "INVALID_TOKEN"),
        (ApiError::TokenExpired, 401, "TOKEN_EXPIRED"),
        (ApiError::KeyStoreUnavailable, 503, "KEY_STORE_UNAVAILABLE"),
        (ApiError::CheckCallerRefused, 403, "CHECK_CALLER_REFUSED"),
        (ApiError::AdminTokenRequired, 401, "ADMIN_TOKEN_REQUIRED"),
        (ApiError::AdminApiOff, 403, "ADMIN_API_OFF"),
        (ApiError::NotFound("key id"), 404, "NOT_FOUND"),
        (ApiError::Conflict("key_1 is revoked".into()), 409, "CONFLICT"),
        (ApiError::AdminScopeMissing("keys:write"), 403, "INSUFFICIENT_SCOPE"),
    ]
}

/// Pins every code to its status: a change here is a change of the public contract.
#[test]
fn every_code_has_its_documented_status() {
    for (e, status, code) in every_error() {
        assert_eq!(e.status().as_u16(), status, "{code}");
        assert_eq!(e.code(), code);
    }
}

#[test]
fn body_is_the_documented_shape() {
    let r = ApiError::MissingAuthorization.to_response("req-1", "2026-01-01T00:00:00Z");
    assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer realm=\"keygate\"");
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "success": false,
            "error": {"code": "UNAUTHORIZED", "message": "Missing Authorization header. Expected: Bearer <api_key>"},
            "request_id": "req-1",
            "timestamp": "2026-01-01T00:00:00Z"
        })
    );
}

#[test]
fn refusals_for_a_while_say_how_long_in_retry_after() {
    let r = ApiError::RateLimited { retry_after: 3 }.to_response("r", "t");
    assert_eq!(r.headers()[header::RETRY_AFTER], "3");
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(v["error"]["message"], "Rate limit exceeded. Retry after 3 seconds");
    let r = ApiError::IpBlocked { retry_after: 60 }.to_response("r", "t");
    assert_eq!(r.headers()[header::RETRY_AFTER], "60");
    assert_eq!(ApiError::RateLimiterUnavailable.to_response("r", "t").headers()[header::RETRY_AFTER], "1");
}

#[test]
fn a_framing_refusal_closes_the_connection() {
    let r = ApiError::BadFraming("x").to_response("r", "t");
    assert_eq!(r.headers()[header::CONNECTION], "close");
    assert!(ApiError::InvalidRequest("x".into()).to_response("r", "t").headers().get(header::CONNECTION).is_none());
}

#[test]
fn expired_and_invalid_messages_match_the_reference() {
    assert_eq!(ApiError::InvalidApiKey.message(), "Invalid API key");
    assert_eq!(ApiError::Expired.message(), "API key has expired");
}

#[test]
fn environment_mismatch_names_both() {
    let m = ApiError::EnvironmentMismatch { key: "test", proxy: "live" }.message();
    assert!(m.contains("test") && m.contains("live"), "{m}");
}

#[test]
fn credits_and_quota_refusals_say_when_to_come_back() {
    let r = ApiError::QuotaExceeded { retry_after: 3600 }.to_response("r", "t");
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()[header::RETRY_AFTER], "3600");
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(v["error"]["code"], "QUOTA_EXCEEDED");
    assert_eq!(v["error"]["message"], "API key quota exceeded. It resets in 3600 seconds");
    let r = ApiError::CreditsExhausted { retry_after: Some(60) }.to_response("r", "t");
    assert_eq!(r.headers()[header::RETRY_AFTER], "60");
    let r = ApiError::CreditsExhausted { retry_after: None }.to_response("r", "t");
    assert!(r.headers().get(header::RETRY_AFTER).is_none(), "no refill: nothing to wait for");
}
