//! Canonicalises the request path once, so the path the proxy authorises is
//! byte-for-byte the path it forwards: upstream can't read it differently.
//! Anything with more than one plausible reading is refused, not guessed at.

use std::borrow::Cow;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    InvalidPercentEncoding,
    EncodedSlash,
    Backslash,
    EncodedDotSegment,
    Nul,
    InvalidUtf8,
    ControlChar,
    /// `%25` followed by two hex digits: an upstream that decodes twice reads another path.
    DoubleEncoding,
    /// A literal `;`: Servlet containers and Spring strip `;params` before resolving dot
    /// segments, so `..;` is a traversal to them and an ordinary segment to everyone else.
    PathParameter,
}

impl PathError {
    /// Never echoes the path: it is attacker-controlled and may end up in logs.
    #[must_use]
    pub fn reason(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path does not start with '/'",
            PathError::InvalidPercentEncoding => "path contains a malformed percent-encoding",
            PathError::EncodedSlash => "path contains an encoded '/' (%2F)",
            PathError::Backslash => "path contains a backslash",
            PathError::EncodedDotSegment => "path contains a percent-encoded dot segment",
            PathError::Nul => "path contains a NUL byte",
            PathError::InvalidUtf8 => "path does not decode to valid UTF-8",
            PathError::ControlChar => "path contains a control character",
            PathError::DoubleEncoding => "path contains a double percent-encoding (%25 followed by hex digits)",
            PathError::PathParameter => "path contains ';' (path parameters are not accepted)",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for PathError {}

/// Normalises an absolute request path (query already split off).
///
/// # Errors
/// Any [`PathError`]: the path is refused rather than guessed at.
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(raw.as_bytes()) {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    // Reused across segments so the slow path allocates it at most once.
    let mut decoded = Vec::new();
    let mut trailing_slash = false;
    for seg in raw[1..].split('/') {
        if seg.is_empty() {
            // Merges "//" runs, but a final empty segment means a trailing '/'.
            trailing_slash = true;
            continue;
        }
        let start = out.len();
        out.push('/');
        match push_segment(seg, &mut out, &mut decoded)? {
            Segment::Normal => trailing_slash = false,
            Segment::Dot => {
                out.truncate(start);
                trailing_slash = true;
            }
            Segment::DotDot => {
                out.truncate(start);
                // Segments never hold a literal '/', so this finds the parent.
                let parent = out.rfind('/').unwrap_or(0);
                out.truncate(parent);
                trailing_slash = true;
            }
        }
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    // e.g. "/a%20b" needed a look but came out unchanged: don't hand back a copy.
    if out == raw {
        Ok(Cow::Borrowed(raw))
    } else {
        Ok(Cow::Owned(out))
    }
}

/// One pass that rules out every rewrite, so the hot path never allocates.
fn is_normal(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().all(|(i, &c)| match c {
        b'%' | b'\\' | b';' | 0x00..=0x1F | 0x7F => false,
        b'/' => {
            !matches!(&bytes[i + 1..], [b'/', ..] | [b'.'] | [b'.', b'/', ..] | [b'.', b'.'] | [b'.', b'.', b'/', ..])
        }
        _ => true,
    })
}

enum Segment {
    Normal,
    Dot,
    DotDot,
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Appends the canonical form of one segment (no slashes) to `out`.
fn push_segment(seg: &str, out: &mut String, decoded: &mut Vec<u8>) -> Result<Segment, PathError> {
    let bytes = seg.as_bytes();
    let start = out.len();
    decoded.clear();
    let mut encoded_dot = false;
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            if bytes[i] == b';' {
                return Err(PathError::PathParameter);
            }
            check_byte(bytes[i])?;
            i += 1;
            continue;
        }
        // Slicing at '%' is safe: ASCII is always a char boundary.
        out.push_str(&seg[run..i]);
        decoded.extend_from_slice(&bytes[run..i]);
        let hi = bytes.get(i + 1).and_then(|&h| hex_value(h));
        let lo = bytes.get(i + 2).and_then(|&l| hex_value(l));
        let (Some(hi), Some(lo)) = (hi, lo) else {
            return Err(PathError::InvalidPercentEncoding);
        };
        let v = (hi << 4) | lo;
        match v {
            b'/' => return Err(PathError::EncodedSlash),
            _ => check_byte(v)?,
        }
        decoded.push(v);
        if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
            // Unreserved: both spellings mean the same, so keep just one.
            out.push(char::from(v));
            encoded_dot |= v == b'.';
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(v >> 4)]));
            out.push(char::from(HEX[usize::from(v & 0xF)]));
        }
        i += 3;
        run = i;
    }
    out.push_str(&seg[run..]);
    decoded.extend_from_slice(&bytes[run..]);
    // Upstream may decode; bytes that aren't UTF-8 could be read several ways.
    if std::str::from_utf8(decoded).is_err() {
        return Err(PathError::InvalidUtf8);
    }
    // Decoded once, `%25` + two hex digits is a percent-escape again: refused whatever it
    // encodes, so decoding twice never yields another path than decoding once. Checked on the
    // output, since decoding unreserved bytes (`%25%34%31` -> `%2541`) can make one.
    if has_double_encoding(&out.as_bytes()[start..]) {
        return Err(PathError::DoubleEncoding);
    }
    // A server that decodes before stripping `;params` would read `..%3B` as `..`.
    if let Some(semi) = decoded.iter().position(|&c| c == b';') {
        if matches!(&decoded[..semi], b"" | b"." | b"..") {
            return Err(PathError::PathParameter);
        }
    }
    match &out[start..] {
        // Servers that decode before resolving would see a traversal we didn't.
        "." | ".." if encoded_dot => Err(PathError::EncodedDotSegment),
        "." => Ok(Segment::Dot),
        ".." => Ok(Segment::DotDot),
        _ => Ok(Segment::Normal),
    }
}

fn has_double_encoding(seg: &[u8]) -> bool {
    seg.windows(5).any(|w| w[..3] == *b"%25" && hex_value(w[3]).is_some() && hex_value(w[4]).is_some())
}

/// Shared by literal and decoded bytes: neither spelling is acceptable.
fn check_byte(c: u8) -> Result<(), PathError> {
    match c {
        b'\\' => Err(PathError::Backslash),
        0x00 => Err(PathError::Nul),
        0x01..=0x1F | 0x7F => Err(PathError::ControlChar),
        _ => Ok(()),
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PathError::*;

    fn ok(raw: &str) -> String {
        normalize(raw).unwrap().into_owned()
    }

    #[test]
    fn rule1_must_be_absolute() {
        for raw in ["", "*", "abc", "a/b", "%2Fa"] {
            assert_eq!(normalize(raw), Err(NotAbsolute), "{raw:?}");
        }
    }

    #[test]
    fn rule2_percent_encoding() {
        assert_eq!(normalize("/a%"), Err(InvalidPercentEncoding));
        assert_eq!(normalize("/a%4/b"), Err(InvalidPercentEncoding));
        assert_eq!(ok("/%41%7a%30%2D%2e%5F%7e"), "/Az0-._~");
        assert_eq!(normalize("/a%2fb"), Err(EncodedSlash));
        assert_eq!(normalize("/a%5Cb"), Err(Backslash));
        assert_eq!(normalize("/a%00"), Err(Nul));
        assert_eq!(normalize("/a%1f"), Err(ControlChar));
        assert_eq!(normalize("/a%7F"), Err(ControlChar));
        assert_eq!(ok("/%c3%a9/%25%3f%23"), "/%C3%A9/%25%3F%23");
        assert_eq!(normalize("/%C3/%A9"), Err(InvalidUtf8));
        assert_eq!(normalize("/%C3é"), Err(InvalidUtf8));
    }

    #[test]
    fn rule3_literal_bytes() {
        assert_eq!(normalize("/a\\b"), Err(Backslash));
        assert_eq!(normalize("/a\0b"), Err(Nul));
        assert_eq!(normalize("/a\tb"), Err(ControlChar));
        assert_eq!(normalize("/a\x7f"), Err(ControlChar));
        assert_eq!(ok("/caf\u{e9}//x"), "/caf\u{e9}/x");
    }

    #[test]
    fn rule4_encoded_dot_segments() {
        for raw in ["/a/%2E./b", "/a/%2e", "/%2e/a", "/a/%2E%2e"] {
            assert_eq!(normalize(raw), Err(EncodedDotSegment), "{raw:?}");
        }
        assert_eq!(ok("/a/%2e%2e%2e"), "/a/...");
        assert_eq!(ok("/a/x%2e"), "/a/x.");
    }

    #[test]
    fn rule5_merge_slashes() {
        assert_eq!(ok("//a///b////"), "/a/b/");
        assert_eq!(ok("//"), "/");
    }

    #[test]
    fn rule6_dot_segments() {
        assert_eq!(ok("/a/./b/../c"), "/a/c");
        assert_eq!(ok("/../a"), "/a");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a/."), "/a/");
        assert_eq!(ok("/a/b/../.."), "/");
    }

    #[test]
    fn rule7_trailing_slash_and_other_chars_kept() {
        assert_eq!(ok("/a/"), "/a/");
        assert_eq!(ok("/a=c/d:e@f!$&'()*+,"), "/a=c/d:e@f!$&'()*+,");
    }

    #[test]
    fn rule8_borrowed_when_already_normal() {
        for raw in ["/", "/api/v1/clinics", "/a/", "/a/...b", "/.well-known/x", "/a%20b", "/%C3%A9"] {
            assert!(matches!(normalize(raw), Ok(Cow::Borrowed(_))), "{raw:?}");
        }
        assert!(matches!(normalize("/a//b"), Ok(Cow::Owned(_))));
        assert!(matches!(normalize("/%c3%a9"), Ok(Cow::Owned(_))));
    }

    #[test]
    fn error_display_is_reason() {
        assert_eq!(EncodedSlash.to_string(), "path contains an encoded '/' (%2F)");
        assert_eq!(NotAbsolute.to_string(), NotAbsolute.reason());
    }

    const TABLE: &[(&str, Result<&str, PathError>)] = &[
        ("/api/v1/clinics", Ok("/api/v1/clinics")),
        ("/api//v1///clinics", Ok("/api/v1/clinics")),
        ("/api/v1/./clinics", Ok("/api/v1/clinics")),
        ("/api/v1/x/../clinics", Ok("/api/v1/clinics")),
        ("/api/%761/clinics", Ok("/api/v1/clinics")),
        ("/a/%2e%2e/b", Err(EncodedDotSegment)),
        ("/a/.%2E/b", Err(EncodedDotSegment)),
        ("/a/%2e/b", Err(EncodedDotSegment)),
        ("/a%2Fb", Err(EncodedSlash)),
        ("/a%5cb", Err(Backslash)),
        ("/a\\b", Err(Backslash)),
        ("/a%00", Err(Nul)),
        ("/a%zz", Err(InvalidPercentEncoding)),
        ("/a%4", Err(InvalidPercentEncoding)),
        ("/%C3%A9", Ok("/%C3%A9")),
        ("/%c3%a9", Ok("/%C3%A9")),
        ("/%C3", Err(InvalidUtf8)),
        ("/%FF", Err(InvalidUtf8)),
        ("/a/b/..", Ok("/a/")),
        ("/..", Ok("/")),
        ("/.", Ok("/")),
        ("/../../etc/passwd", Ok("/etc/passwd")),
        ("/a/...b", Ok("/a/...b")),
        ("/a/...", Ok("/a/...")),
        ("/a/.b/..c", Ok("/a/.b/..c")),
        ("/%7Euser", Ok("/~user")),
        ("/%41", Ok("/A")),
        ("/a;b/c", Err(PathParameter)),
        ("/a/..;/b", Err(PathParameter)),
        ("/a/..;x=1/b", Err(PathParameter)),
        ("/a/.;/b", Err(PathParameter)),
        ("/a/;/b", Err(PathParameter)),
        ("/a/..%3B/b", Err(PathParameter)),
        ("/a/%3Bx/b", Err(PathParameter)),
        ("/a/x%3By/b", Ok("/a/x%3By/b")),
        ("/a/%252e%252e/b", Err(DoubleEncoding)),
        ("/a%252fb", Err(DoubleEncoding)),
        ("/a%255Cb", Err(DoubleEncoding)),
        ("/a%2500", Err(DoubleEncoding)),
        ("/a/%252E%252E/b", Err(DoubleEncoding)),
        ("/a%25", Ok("/a%25")),
        ("/a%25zz", Ok("/a%25zz")),
        ("/a%25%41", Ok("/a%25A")),
        ("/a%25%34%31", Err(DoubleEncoding)),
        ("/a%20b", Ok("/a%20b")),
        ("/a%0a", Err(ControlChar)),
        ("/a\nb", Err(ControlChar)),
        ("/", Ok("/")),
        ("", Err(NotAbsolute)),
        ("*", Err(NotAbsolute)),
        ("/a/b/", Ok("/a/b/")),
        ("/a/b/./", Ok("/a/b/")),
        ("/a/%2561", Err(DoubleEncoding)),
        ("/x/%2e%2e%2fetc", Err(EncodedSlash)),
        ("/a/..%2fb", Err(EncodedSlash)),
    ];

    #[test]
    fn table() {
        assert!(TABLE.len() >= 30);
        for &(raw, want) in TABLE {
            assert_eq!(normalize(raw).as_deref(), want.as_ref().map(|s| *s), "{raw:?}");
        }
    }

    #[test]
    fn idempotent() {
        let extra = ["//./a/%2d/../b//", "/%e2%82%ac/./x", "/a/b/c/../../..", "/%7e/%2E%2E%2E"];
        let inputs = TABLE.iter().map(|&(raw, _)| raw).chain(extra);
        for raw in inputs {
            if let Ok(once) = normalize(raw) {
                let twice = normalize(&once).unwrap();
                assert_eq!(twice, once, "{raw:?}");
                assert!(matches!(twice, Cow::Borrowed(_)), "{raw:?}");
            }
        }
    }
}

#[cfg(test)]
mod differential;
