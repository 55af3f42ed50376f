//! Request ids: keep a caller's well-formed `X-Request-Id` so traces join up across services,
//! otherwise mint a UUIDv7 (time-ordered to the millisecond, so ids sort like the log).

use http::{HeaderMap, HeaderName, HeaderValue};
use time::OffsetDateTime;
use uuid::{NoContext, Timestamp, Uuid};

/// Parsed once: a `&str` name is parsed and hashed on every lookup.
pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

fn well_formed(v: &HeaderValue, max_len: usize) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= max_len
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
}

/// The id for this request. Several incoming ids are as bad as a malformed one: mint our own.
/// `now` is the request's one clock reading.
pub fn accept_or_generate(headers: &HeaderMap, max_len: usize, now: OffsetDateTime) -> HeaderValue {
    let mut all = headers.get_all(&HEADER).iter();
    match (all.next(), all.next()) {
        (Some(v), None) if well_formed(v, max_len) => v.clone(),
        _ => generate(now),
    }
}

/// A UUIDv7 for `now`: its millisecond, then 74 random bits. No shared counter orders the ids
/// of one millisecond (`Uuid::now_v7` keeps one behind a lock and reads the clock again); the
/// random bits keep them apart.
pub fn generate(now: OffsetDateTime) -> HeaderValue {
    let secs = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    let id = Uuid::new_v7(Timestamp::from_unix(NoContext, secs, now.nanosecond()));
    let mut buf = Uuid::encode_buffer();
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut buf)).expect("uuid is ascii")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(HEADER.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    #[test]
    fn well_formed_id_is_kept() {
        assert_eq!(accept_or_generate(&with(&["abc-123_x.y:z"]), 128, now()), "abc-123_x.y:z");
    }

    #[test]
    fn minted_ids_are_v7_for_the_given_millisecond_and_differ() {
        let t = time::macros::datetime!(2026-12-03 07:40:01.234567 UTC);
        let a = generate(t);
        let b = generate(t);
        assert_ne!(a, b, "random bits keep ids of one millisecond apart");
        let id = Uuid::parse_str(a.to_str().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 7);
        let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
        assert_eq!((secs, nanos / 1_000_000), (t.unix_timestamp() as u64, 234));
        // Later milliseconds sort later, as text too.
        let later = generate(t + time::Duration::milliseconds(1));
        assert!(later.to_str().unwrap() > b.to_str().unwrap());
    }

    #[test]
    fn malformed_long_or_repeated_ids_are_replaced() {
        for h in [with(&["has space"]), with(&["<script>"]), with(&[&"a".repeat(129)]), with(&["a", "b"]), with(&[])] {
            let id = accept_or_generate(&h, 128, now());
            assert_eq!(id.len(), 36, "{id:?}");
            assert!(uuid::Uuid::parse_str(id.to_str().unwrap()).is_ok());
        }
    }
}
