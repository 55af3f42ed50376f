//! Request ids: keep a caller's well-formed `X-Request-Id` so traces join up across services,
//! otherwise mint a UUIDv7 (time-ordered, so ids sort like the log).

use http::{HeaderMap, HeaderName, HeaderValue};

pub const HEADER: &str = "x-request-id";
/// Parsed once: a `&str` name is parsed and hashed on every lookup.
static HEADER_NAME: HeaderName = HeaderName::from_static(HEADER);

fn well_formed(v: &HeaderValue, max_len: usize) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= max_len
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
}

/// The id for this request. Several incoming ids are as bad as a malformed one: mint our own.
pub fn accept_or_generate(headers: &HeaderMap, max_len: usize) -> HeaderValue {
    let mut all = headers.get_all(&HEADER_NAME).iter();
    match (all.next(), all.next()) {
        (Some(v), None) if well_formed(v, max_len) => v.clone(),
        _ => generate(),
    }
}

pub fn generate() -> HeaderValue {
    let mut buf = uuid::Uuid::encode_buffer();
    let s = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(s).expect("uuid is ascii")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(HEADER, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn well_formed_id_is_kept() {
        assert_eq!(accept_or_generate(&with(&["abc-123_x.y:z"]), 128), "abc-123_x.y:z");
    }

    #[test]
    fn malformed_long_or_repeated_ids_are_replaced() {
        for h in [with(&["has space"]), with(&["<script>"]), with(&[&"a".repeat(129)]), with(&["a", "b"]), with(&[])] {
            let id = accept_or_generate(&h, 128);
            assert_eq!(id.len(), 36, "{id:?}");
            assert!(uuid::Uuid::parse_str(id.to_str().unwrap()).is_ok());
        }
    }
}
