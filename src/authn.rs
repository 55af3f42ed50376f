//! Authentication: one `Authorization: Bearer <key>` header, a key of the right shape and
//! environment, found in the table and currently valid. Pure: headers, table and clock in,
//! the key record (or why not) out.

use http::{header, HeaderMap};
use time::OffsetDateTime;

use crate::keys::table::KeyState;
use crate::keys::{Environment, KeyFormat, KeyHash, KeyRecord, KeyTable, Secret};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthnError {
    Missing,
    Multiple,
    Malformed(&'static str),
    BadFormat,
    WrongEnvironment {
        key: Environment,
        proxy: Environment,
    },
    Unknown,
    Revoked,
    Expired,
    NotYetValid,
    /// A bearer JWT that is malformed, badly signed, of an unknown kid or another audience, or
    /// whose parent key is gone or of the other environment.
    TokenInvalid,
    TokenExpired,
    /// A token naming only clinics its parent key no longer has.
    TokenClinicsRevoked,
}

/// RFC 6750 `b64token`: ALPHA DIGIT - . _ ~ + / then optional trailing '='.
fn is_b64token(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/'))
}

/// The bearer token, borrowed from the request headers.
pub fn bearer_token(headers: &HeaderMap) -> Result<Secret<'_>, AuthnError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthnError::Missing)?;
    if values.next().is_some() {
        return Err(AuthnError::Multiple);
    }
    let value =
        value.to_str().map_err(|_| AuthnError::Malformed("Authorization header contains non-ASCII characters"))?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthnError::Malformed("Unsupported authorization scheme"));
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() {
        return Err(AuthnError::Malformed("Empty bearer token"));
    }
    if !is_b64token(token) {
        return Err(AuthnError::Malformed("Malformed bearer token"));
    }
    Ok(Secret::new(token))
}

/// Format and environment are checked before the table is touched: garbage and keys meant for
/// the other environment never cost a hash or a probe.
pub fn authenticate<'t>(
    token: Secret<'_>,
    format: &KeyFormat,
    proxy_env: Environment,
    table: &'t KeyTable,
    now: OffsetDateTime,
) -> Result<&'t KeyRecord, AuthnError> {
    let hash = key_hash(token, format, proxy_env)?;
    judge(table.lookup(&hash), proxy_env, now)
}

/// The first half, for a store that is asked rather than probed (`sync: cache`): the format,
/// checksum and environment of the token, then its hash. Nothing is looked up for a token
/// that fails here.
pub fn key_hash(token: Secret<'_>, format: &KeyFormat, proxy_env: Environment) -> Result<KeyHash, AuthnError> {
    let token = token.expose();
    let key_env = format.check(token).map_err(|_| AuthnError::BadFormat)?;
    if key_env != proxy_env {
        return Err(AuthnError::WrongEnvironment { key: key_env, proxy: proxy_env });
    }
    Ok(KeyHash::of(token))
}

/// The second half: what the store found for the hash, judged now.
pub fn judge(found: Option<&KeyRecord>, proxy_env: Environment, now: OffsetDateTime) -> Result<&KeyRecord, AuthnError> {
    let record = found.ok_or(AuthnError::Unknown)?;
    if record.environment() != proxy_env {
        // The table says otherwise than the prefix: trust neither.
        return Err(AuthnError::Unknown);
    }
    match record.state_at(now) {
        KeyState::Active => Ok(record),
        KeyState::Revoked => Err(AuthnError::Revoked),
        KeyState::Expired => Err(AuthnError::Expired),
        KeyState::NotYetValid => Err(AuthnError::NotYetValid),
    }
}

/// The store's id of a key refused as revoked or expired (for reporting who is still using
/// it), from `found` (what the lookup returned); `None` for every other refusal, so nothing the
/// client wrote becomes an id.
pub fn refused_id<'r>(why: &AuthnError, found: impl FnOnce() -> Option<&'r KeyRecord>) -> Option<std::sync::Arc<str>> {
    match why {
        AuthnError::Revoked | AuthnError::Expired => found().map(|r| std::sync::Arc::clone(&r.id)),
        AuthnError::Missing
        | AuthnError::Multiple
        | AuthnError::Malformed(_)
        | AuthnError::BadFormat
        | AuthnError::WrongEnvironment { .. }
        | AuthnError::Unknown
        | AuthnError::NotYetValid
        | AuthnError::TokenInvalid
        | AuthnError::TokenExpired
        | AuthnError::TokenClinicsRevoked => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::file;
    use http::HeaderValue;
    use time::macros::datetime;

    const LIVE: &str = "dpl_live_abcdefghijklmnopqrstuvwxyzABCDEF";
    const TEST: &str = "dpl_test_abcdefghijklmnopqrstuvwxyzABCDEF";

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn table(extra: &str) -> KeyTable {
        let text =
            format!("keys:\n  - id: k1\n    hash: {}\n    environment: live\n{extra}", KeyHash::of(LIVE).to_hex());
        file::parse(&text, "t", &crate::keys::Catalogue::unchecked()).unwrap()
    }

    fn auth(t: &KeyTable, token: &str, now: OffsetDateTime) -> Result<String, AuthnError> {
        let format = KeyFormat { checksum: false, ..KeyFormat::default() };
        authenticate(Secret::new(token), &format, Environment::Live, t, now).map(|r| r.id.to_string())
    }

    const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

    #[test]
    fn missing_header() {
        assert_eq!(bearer_token(&headers(&[])).err(), Some(AuthnError::Missing));
    }

    #[test]
    fn two_headers_are_refused() {
        assert_eq!(bearer_token(&headers(&["Bearer a", "Bearer b"])).err(), Some(AuthnError::Multiple));
    }

    #[test]
    fn scheme_is_case_insensitive() {
        assert_eq!(bearer_token(&headers(&["bEaReR abc"])).map(|s| s.expose()), Ok("abc"));
    }

    #[test]
    fn other_schemes_empty_and_malformed_tokens_are_refused() {
        for v in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", "Bearer a b", "Bearer a,b", "Token abc"] {
            assert!(matches!(bearer_token(&headers(&[v])), Err(AuthnError::Malformed(_))), "{v:?}");
        }
    }

    #[test]
    fn a_valid_key_authenticates() {
        assert_eq!(auth(&table(""), LIVE, NOW), Ok("k1".into()));
    }

    #[test]
    fn keys_are_case_sensitive() {
        assert_eq!(auth(&table(""), &LIVE.replace('a', "A"), NOW), Err(AuthnError::Unknown));
    }

    #[test]
    fn bad_format_before_lookup() {
        assert_eq!(auth(&table(""), "dpl_live_short", NOW), Err(AuthnError::BadFormat));
        assert_eq!(auth(&table(""), &format!("{LIVE}x!"), NOW), Err(AuthnError::BadFormat));
    }

    #[test]
    fn bad_checksum_is_refused_before_lookup() {
        let key = crate::keys::generate::generate("dpl_live_");
        let typo = format!("{}{}", &key[..key.len() - 1], if key.ends_with('A') { 'B' } else { 'A' });
        let t = table("");
        let r = authenticate(Secret::new(&typo), &KeyFormat::default(), Environment::Live, &t, NOW);
        assert_eq!(r.map(|k| k.id.to_string()), Err(AuthnError::BadFormat));
    }

    #[test]
    fn test_key_on_live_proxy_is_a_mismatch() {
        assert_eq!(
            auth(&table(""), TEST, NOW),
            Err(AuthnError::WrongEnvironment { key: Environment::Test, proxy: Environment::Live })
        );
    }

    #[test]
    fn revoked_wins_over_expired() {
        let t = table("    revoked_at: 2026-01-01T00:00:00Z\n    expires_at: 2026-02-01T00:00:00Z\n");
        assert_eq!(auth(&t, LIVE, NOW), Err(AuthnError::Revoked));
    }

    #[test]
    fn expiry_boundary_is_exact() {
        let t = table("    expires_at: 2026-06-01T12:00:00Z\n");
        assert_eq!(auth(&t, LIVE, NOW - time::Duration::seconds(1)), Ok("k1".into()));
        assert_eq!(auth(&t, LIVE, NOW), Err(AuthnError::Expired));
    }

    #[test]
    fn the_two_halves_agree_with_the_whole() {
        let format = KeyFormat { checksum: false, ..KeyFormat::default() };
        let t = table("    revoked_at: 2026-01-01T00:00:00Z\n");
        let hash = key_hash(Secret::new(LIVE), &format, Environment::Live).unwrap();
        assert_eq!(judge(t.lookup(&hash), Environment::Live, NOW).map(|_| ()), Err(AuthnError::Revoked));
        assert_eq!(judge(None, Environment::Live, NOW).map(|_| ()), Err(AuthnError::Unknown));
        assert_eq!(key_hash(Secret::new("dpl_live_short"), &format, Environment::Live), Err(AuthnError::BadFormat));
        let found = || t.lookup(&hash);
        assert_eq!(refused_id(&AuthnError::Revoked, found).as_deref(), Some("k1"));
        assert_eq!(refused_id(&AuthnError::Unknown, found), None, "only revoked and expired keys are named");
    }

    #[test]
    fn not_before_in_the_future_is_refused() {
        let t = table("    not_before: 2026-06-01T12:00:01Z\n");
        assert_eq!(auth(&t, LIVE, NOW), Err(AuthnError::NotYetValid));
        assert_eq!(auth(&t, LIVE, NOW + time::Duration::seconds(1)), Ok("k1".into()));
    }
}
