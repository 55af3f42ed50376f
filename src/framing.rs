//! How the request body is framed, decided once and never taken from the client's text: a
//! request is refused when its framing could be read two ways (RFC 9112 §6.3), and the
//! `Content-Length` forwarded is keygate's rendering of the parsed value. The head-size limits
//! live here too, so they are answered with the standard body instead of the parser's bare 431.

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::HeaderMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// Both `Content-Length` and `Transfer-Encoding`: which one a server believes varies.
    BothLengths,
    /// Anything but exactly one `Transfer-Encoding: chunked`.
    TransferEncoding,
    /// Unreadable or disagreeing `Content-Length` values.
    ContentLength,
}

impl FramingError {
    #[must_use]
    pub fn reason(self) -> &'static str {
        match self {
            FramingError::BothLengths => "both Content-Length and Transfer-Encoding are present",
            FramingError::TransferEncoding => "Transfer-Encoding other than a single 'chunked' is not accepted",
            FramingError::ContentLength => "Content-Length is not one non-negative whole number",
        }
    }
}

/// The body's declared length: `None` when chunked or absent.
///
/// # Errors
/// Any [`FramingError`]; the connection should be closed after the refusal, since the
/// client and keygate may disagree on where the next request starts.
pub fn body_length(headers: &HeaderMap) -> Result<Option<u64>, FramingError> {
    let mut te = headers.get_all(TRANSFER_ENCODING).iter();
    let mut cl = headers.get_all(CONTENT_LENGTH).iter();
    match (te.next(), cl.next()) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(FramingError::BothLengths),
        (Some(v), None) => {
            let single = te.next().is_none() && v.to_str().is_ok_and(|s| s.trim().eq_ignore_ascii_case("chunked"));
            if single {
                Ok(None)
            } else {
                Err(FramingError::TransferEncoding)
            }
        }
        (None, Some(first)) => {
            let len = parse_length(first.as_bytes())?;
            // Repeats are tolerated only when they say the same number (RFC 9110 §8.6).
            for v in cl {
                if parse_length(v.as_bytes())? != len {
                    return Err(FramingError::ContentLength);
                }
            }
            Ok(Some(len))
        }
    }
}

/// Digits only (a comma list of one repeated value counts, as hyper accepts it), at most
/// 19 of them so the value fits a u64.
pub(crate) fn parse_length(v: &[u8]) -> Result<u64, FramingError> {
    let mut value: Option<u64> = None;
    for part in v.split(|&c| c == b',') {
        let digits = part.trim_ascii();
        if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(FramingError::ContentLength);
        }
        let n = digits.iter().fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
        if value.is_some_and(|prev| prev != n) {
            return Err(FramingError::ContentLength);
        }
        value = Some(n);
    }
    value.ok_or(FramingError::ContentLength)
}

/// Bytes the head took on the wire, near enough to hold a limit to: the request target plus,
/// per field, name, value and the four bytes of `: ` and CRLF.
#[must_use]
pub fn head_size(target_len: usize, headers: &HeaderMap) -> usize {
    headers.iter().fold(target_len, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn no_body_headers_means_no_length() {
        assert_eq!(body_length(&h(&[])), Ok(None));
    }

    #[test]
    fn content_length_is_parsed_not_copied() {
        assert_eq!(body_length(&h(&[("content-length", "0007")])), Ok(Some(7)));
        assert_eq!(body_length(&h(&[("content-length", "5"), ("content-length", "005")])), Ok(Some(5)));
        assert_eq!(body_length(&h(&[("content-length", "5, 5")])), Ok(Some(5)));
    }

    #[test]
    fn unreadable_or_disagreeing_content_length_is_refused() {
        for v in ["", "-1", "+5", "5a", "0x10", "99999999999999999999", "5, 6", ","] {
            assert_eq!(body_length(&h(&[("content-length", v)])), Err(FramingError::ContentLength), "{v:?}");
        }
        assert_eq!(
            body_length(&h(&[("content-length", "5"), ("content-length", "6")])),
            Err(FramingError::ContentLength)
        );
    }

    #[test]
    fn both_lengths_are_refused() {
        let both = h(&[("content-length", "3"), ("transfer-encoding", "chunked")]);
        assert_eq!(body_length(&both), Err(FramingError::BothLengths));
    }

    #[test]
    fn only_one_plain_chunked_is_accepted() {
        assert_eq!(body_length(&h(&[("transfer-encoding", "chunked")])), Ok(None));
        assert_eq!(body_length(&h(&[("transfer-encoding", " Chunked ")])), Ok(None));
        for te in [
            &[("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")][..],
            &[("transfer-encoding", "chunked, chunked")],
            &[("transfer-encoding", "gzip, chunked")],
            &[("transfer-encoding", "gzip")],
            &[("transfer-encoding", "identity")],
            &[("transfer-encoding", "")],
        ] {
            assert_eq!(body_length(&h(te)), Err(FramingError::TransferEncoding), "{te:?}");
        }
    }

    #[test]
    fn head_size_counts_names_values_and_separators() {
        assert_eq!(head_size(10, &h(&[("ab", "cde")])), 10 + 2 + 3 + 4);
    }
}
