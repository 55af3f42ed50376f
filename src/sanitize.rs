//! Header hygiene before anything else reads the request: keygate's own headers, hop-by-hop
//! headers and anything a client could use to impersonate a proxy or rewrite the URL are
//! removed, in every spelling (case is folded by hyper; `_` is folded to `-` here), so the
//! upstream can trust what keygate injects afterwards.

use http::header::{self, HeaderName};
use http::{HeaderMap, Method};

/// Headers keygate sets itself; client copies never survive.
pub const OWNED: [&str; 7] = [
    "x-allowed-clinics",
    "x-scopes",
    "x-api-key-id",
    "x-api-key-environment",
    "x-keygate-signature",
    "x-keygate-context",
    "x-keygate-would-refuse",
];

/// Hop-by-hop (RFC 9110 7.6.1, and the proxy ones): never forwarded.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Set by whoever is the client's first proxy; from an untrusted peer they are lies.
const FORWARDING: [&str; 3] = ["forwarded", "x-real-ip", "x-client-ip"];
const FORWARDING_PREFIX: &str = "x-forwarded-";

/// Would let the upstream route or authorise a different URL than keygate did.
pub const REWRITE: [&str; 3] = ["x-original-url", "x-rewrite-url", "x-original-uri"];

/// What a client may use to ask for another method than the request line's.
pub const METHOD_OVERRIDE: [&str; 3] = ["x-http-method-override", "x-http-method", "x-method-override"];

/// A `Connection` header may not remove these: framing and routing stay keygate's to decide.
pub const PROTECTED: [&str; 4] = ["host", "content-length", "content-type", "authorization"];

#[derive(Debug, Clone, Default)]
pub struct HeaderPolicy {
    /// `OWNED` plus configured extras, lowercase with `-`.
    pub owned: Vec<String>,
    pub allow_method_override: bool,
}

impl HeaderPolicy {
    pub fn new(extra: &[String], allow_method_override: bool) -> HeaderPolicy {
        let mut owned: Vec<String> = OWNED.iter().map(|s| s.to_string()).collect();
        owned.extend(extra.iter().map(|s| s.to_ascii_lowercase().replace('_', "-")));
        owned.dedup();
        HeaderPolicy { owned, allow_method_override }
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sanitized {
    /// The method the upstream will act on, when an allowed override header names one.
    pub method_override: Option<Method>,
}

/// `name` equals `canonical` once `_` is read as `-` (names arrive lowercase from hyper).
fn same_name(name: &str, canonical: &str) -> bool {
    name.len() == canonical.len()
        && name.bytes().zip(canonical.bytes()).all(|(a, b)| a == b || (a == b'_' && b == b'-'))
}

fn any_of(name: &str, list: &[&str]) -> bool {
    list.iter().any(|c| same_name(name, c))
}

fn is_forwarding(name: &str) -> bool {
    any_of(name, &FORWARDING)
        || (name.len() > FORWARDING_PREFIX.len() && same_name(&name[..FORWARDING_PREFIX.len()], FORWARDING_PREFIX))
}

/// The headers a `Connection` header names (RFC 9110 7.6.1), except those it may not remove.
/// Hop-by-hop names are skipped: every caller removes them anyway, and `keep-alive` is the
/// common token, so the common case allocates nothing.
fn connection_named(headers: &HeaderMap, out: &mut Vec<HeaderName>) {
    for value in headers.get_all(header::CONNECTION) {
        // Bytes, not `to_str`: one non-ASCII byte anywhere in the value must not hide the
        // names beside it (a token with such a byte is no header name and names nothing).
        let v = value.as_bytes();
        // The usual value names no header: said once, not token by token.
        let whole = v.trim_ascii();
        if whole.eq_ignore_ascii_case(b"keep-alive") || whole.eq_ignore_ascii_case(b"close") {
            continue;
        }
        for token in v.split(|b| *b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty()) {
            let listed = |list: &[&str]| list.iter().any(|p| token.eq_ignore_ascii_case(p.as_bytes()));
            if listed(&PROTECTED) || listed(&HOP_BY_HOP) || token.eq_ignore_ascii_case(b"close") {
                continue;
            }
            // `from_bytes` lower-cases; a token that is no header name names nothing.
            if let Ok(name) = HeaderName::from_bytes(token) {
                out.push(name);
            }
        }
    }
}

/// Cleans `headers` in place. `peer_trusted`: the TCP peer is a configured trusted proxy, so its
/// forwarding headers are kept (the caller appends to them).
pub fn sanitize(headers: &mut HeaderMap, policy: &HeaderPolicy, peer_trusted: bool) -> Result<Sanitized, &'static str> {
    if headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Err("more than one Host header");
    }
    let mut out = Sanitized::default();
    let mut remove: Vec<HeaderName> = Vec::new();
    connection_named(headers, &mut remove);
    let named = remove.len();
    for (name, value) in headers.iter() {
        let n = name.as_str();
        // A header named in `Connection` is removed below; were it a method override, keygate
        // would authorise a method the upstream never hears of.
        let drop = remove[..named].contains(name)
            || any_of(n, &HOP_BY_HOP)
            || any_of(n, &REWRITE)
            || policy.owned.iter().any(|o| same_name(n, o))
            || (!peer_trusted && is_forwarding(n))
            // Underscore spellings of headers keygate sets are never the real thing.
            || (n.contains('_') && (same_name(n, "x-request-id") || is_forwarding(n) || same_name(n, "host")));
        if drop {
            remove.push(name.clone());
            continue;
        }
        if any_of(n, &METHOD_OVERRIDE) {
            if !policy.allow_method_override {
                return Err("method override headers are not allowed");
            }
            let m = value
                .to_str()
                .ok()
                .and_then(|s| Method::from_bytes(s.trim().as_bytes()).ok())
                .ok_or("method override header is not a valid method")?;
            if out.method_override.replace(m).is_some() {
                return Err("more than one method override header");
            }
        }
    }
    for name in remove {
        headers.remove(&name);
    }
    Ok(out)
}

/// Response side: hop-by-hop headers of the upstream's connection are not the client's.
pub fn sanitize_response(headers: &mut HeaderMap) {
    let mut remove: Vec<HeaderName> = Vec::new();
    connection_named(headers, &mut remove);
    remove.extend(headers.keys().filter(|n| any_of(n.as_str(), &HOP_BY_HOP)).cloned());
    for name in remove {
        headers.remove(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = h.keys().map(|k| k.to_string()).collect();
        v.sort();
        v
    }

    fn policy() -> HeaderPolicy {
        HeaderPolicy::new(&["X-Tenant".to_string()], false)
    }

    #[test]
    fn owned_headers_are_removed_in_every_spelling() {
        let mut h = map(&[
            ("x-allowed-clinics", "*"),
            ("X_Allowed_Clinics", "*"),
            ("x-scopes", "*"),
            ("x_api_key_id", "k"),
            ("x-api-key-environment", "live"),
            ("x-tenant", "t"),
            ("x_tenant", "t"),
            ("accept", "application/json"),
        ]);
        sanitize(&mut h, &policy(), false).unwrap();
        assert_eq!(names(&h), vec!["accept"]);
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Custom, x-allowed-clinics, host, content-length"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-foo"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("x-custom", "1"),
            ("host", "example"),
            ("content-length", "0"),
        ]);
        sanitize(&mut h, &policy(), false).unwrap();
        assert_eq!(names(&h), vec!["content-length", "host"]);
    }

    #[test]
    fn a_connection_value_with_a_non_ascii_byte_still_removes_the_names_it_lists() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_bytes(b"x-custom, \xc3\xa9").unwrap());
        h.append("x-custom", HeaderValue::from_static("1"));
        h.append("etag", HeaderValue::from_static("x"));
        sanitize(&mut h, &policy(), true).unwrap();
        assert_eq!(names(&h), vec!["etag"]);
    }

    #[test]
    fn an_override_named_in_connection_is_removed_not_applied() {
        let allow = HeaderPolicy::new(&[], true);
        let mut h = map(&[("connection", "x-http-method-override"), ("x-http-method-override", "GET")]);
        assert_eq!(sanitize(&mut h, &allow, false).unwrap().method_override, None);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn forwarding_headers_from_untrusted_peers_are_removed() {
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x_forwarded_for", "1.2.3.4"),
            ("x-forwarded-host", "evil"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
        ]);
        sanitize(&mut h, &policy(), false).unwrap();
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn forwarding_headers_from_trusted_peers_are_kept_but_underscore_spellings_are_not() {
        let mut h = map(&[("x-forwarded-for", "1.2.3.4"), ("x_forwarded_for", "6.6.6.6")]);
        sanitize(&mut h, &policy(), true).unwrap();
        assert_eq!(names(&h), vec!["x-forwarded-for"]);
    }

    #[test]
    fn rewrite_headers_never_pass() {
        let mut h = map(&[("x-original-url", "/admin"), ("x_rewrite_url", "/admin")]);
        sanitize(&mut h, &policy(), true).unwrap();
        assert!(h.is_empty());
    }

    #[test]
    fn method_override_is_refused_unless_configured() {
        let mut h = map(&[("x-http-method-override", "DELETE")]);
        assert!(sanitize(&mut h, &policy(), false).is_err());
        let allow = HeaderPolicy::new(&[], true);
        let mut h = map(&[("x-http-method-override", "DELETE")]);
        assert_eq!(sanitize(&mut h, &allow, false).unwrap().method_override, Some(Method::DELETE));
    }

    #[test]
    fn two_host_headers_are_refused() {
        let mut h = map(&[("host", "a"), ("host", "b")]);
        assert!(sanitize(&mut h, &policy(), false).is_err());
    }

    #[test]
    fn upstream_response_hop_by_hop_headers_are_removed() {
        let mut h =
            map(&[("connection", "close, x-internal"), ("x-internal", "1"), ("keep-alive", "5"), ("etag", "x")]);
        sanitize_response(&mut h);
        assert_eq!(names(&h), vec!["etag"]);
    }

    #[test]
    fn a_lone_keep_alive_or_close_names_nothing_but_is_itself_removed() {
        for v in ["keep-alive", " Keep-Alive ", "close", "CLOSE"] {
            let mut h = map(&[("connection", v), ("etag", "x"), ("content-length", "3")]);
            sanitize_response(&mut h);
            assert_eq!(names(&h), vec!["content-length", "etag"], "{v:?}");
        }
    }
}
