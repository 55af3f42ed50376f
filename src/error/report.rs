//! Which refusals report-only mode (`enforce: false`) may pass over: the policy's (who the
//! key is, where it may be used from, what it may reach, its budget, the detectors' blocks),
//! never hygiene (a request that cannot be read one way only, or is too large), keygate's own
//! endpoints or an upstream's failure.

use super::ApiError;

/// Every code `keygate_would_refuse_total` can carry: the reportable refusals', and
/// `EMPTY_RESULT` (a foreign clinic's request a route answers empty, forwarded in report-only
/// mode).
pub const REPORTABLE_CODES: [&str; 19] = [
    "UNAUTHORIZED",
    "INVALID_API_KEY",
    "API_KEY_ENVIRONMENT_MISMATCH",
    "API_KEY_REVOKED",
    "API_KEY_EXPIRED",
    "INVALID_TOKEN",
    "TOKEN_EXPIRED",
    "IP_NOT_ALLOWED",
    "ROUTE_NOT_FOUND",
    "METHOD_NOT_ALLOWED",
    "INSUFFICIENT_SCOPE",
    "CLINIC_NOT_ALLOWED",
    "EMPTY_RESULT",
    "RATE_LIMIT_EXCEEDED",
    "CREDITS_EXHAUSTED",
    "QUOTA_EXCEEDED",
    "IP_BLOCKED",
    "SERVICE_UNAVAILABLE",
    "KEY_STORE_UNAVAILABLE",
];

impl ApiError {
    /// Whether report-only mode may forward a request refused with this (counting it as a
    /// would-be refusal). An outage of the limiter or the key store is reportable: shadow mode
    /// promises that keygate never breaks traffic on its own account.
    pub fn reportable(&self) -> bool {
        match self {
            ApiError::MissingAuthorization
            | ApiError::BadAuthorization(_)
            | ApiError::InvalidApiKey
            | ApiError::EnvironmentMismatch { .. }
            | ApiError::Revoked
            | ApiError::Expired
            | ApiError::InvalidToken
            | ApiError::TokenExpired
            | ApiError::IpNotAllowed
            | ApiError::RouteNotFound
            | ApiError::MethodNotAllowed { .. }
            | ApiError::InsufficientScope { .. }
            | ApiError::ClinicNotAllowed
            | ApiError::RateLimited { .. }
            | ApiError::CreditsExhausted { .. }
            | ApiError::QuotaExceeded { .. }
            | ApiError::IpBlocked { .. }
            | ApiError::RateLimiterUnavailable
            | ApiError::KeyStoreUnavailable => true,
            ApiError::InvalidRequest(_)
            | ApiError::BadFraming(_)
            | ApiError::HeadersTooLarge
            | ApiError::PayloadTooLarge { .. }
            | ApiError::UpstreamUnavailable
            | ApiError::UpstreamTimeout
            | ApiError::CheckCallerRefused
            | ApiError::AdminTokenRequired
            | ApiError::AdminApiOff
            | ApiError::NotFound(_)
            | ApiError::Conflict(_)
            | ApiError::AdminScopeMissing(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_error() -> Vec<ApiError> {
        crate::error::tests::every_error().into_iter().map(|(e, _, _)| e).collect()
    }

    #[test]
    fn hygiene_is_enforced_in_every_mode() {
        for e in [
            ApiError::InvalidRequest("path".into()),
            ApiError::BadFraming("x"),
            ApiError::HeadersTooLarge,
            ApiError::PayloadTooLarge { limit: 1 },
            ApiError::CheckCallerRefused,
        ] {
            assert!(!e.reportable(), "{e:?}");
        }
    }

    #[test]
    fn the_policy_is_reportable() {
        for e in [
            ApiError::MissingAuthorization,
            ApiError::InvalidApiKey,
            ApiError::InsufficientScope { required: "a:read".into() },
            ApiError::ClinicNotAllowed,
            ApiError::RateLimited { retry_after: 1 },
            ApiError::IpBlocked { retry_after: 1 },
        ] {
            assert!(e.reportable(), "{e:?}");
        }
    }

    /// The metric's pre-registered codes are exactly the reportable errors' and `EMPTY_RESULT`.
    #[test]
    fn the_listed_codes_are_the_reportable_ones() {
        let mut from_errors: Vec<&str> = every_error().iter().filter(|e| e.reportable()).map(ApiError::code).collect();
        from_errors.push("EMPTY_RESULT");
        from_errors.sort_unstable();
        from_errors.dedup();
        let mut listed = REPORTABLE_CODES.to_vec();
        listed.sort_unstable();
        assert_eq!(from_errors, listed);
    }
}
