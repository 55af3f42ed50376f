//! Request header sanitising against a model written from the rules (not from sanitize.rs's code;
//! the lists of names are sanitize.rs's own, the rules' data, so the two cannot drift apart):
//! no header keygate owns, configured to strip, hop-by-hop, rewriting or (from an untrusted
//! peer) forwarding survives in any case or `_` spelling, however it is split, repeated or
//! named in `Connection`; nothing else is touched; the method override keygate authorises is
//! the one the upstream will see. Never panics.

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use keygate::sanitize::METHOD_OVERRIDE as OVERRIDE;
use keygate::sanitize::{sanitize, HeaderPolicy, HOP_BY_HOP, OWNED, PROTECTED, REWRITE};

use super::{ITERATIONS, TIME};

/// `strip_headers` as an operator might write them.
const STRIP: [&str; 2] = ["X-Tenant", "x_internal_user"];

/// The name as the rules read it: lowercase (hyper's), `_` as `-`.
fn canon(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

fn forwarding(c: &str) -> bool {
    matches!(c, "forwarded" | "x-real-ip" | "x-client-ip") || (c.starts_with("x-forwarded-") && c.len() > 12)
}

fn owned(c: &str) -> bool {
    OWNED.contains(&c) || STRIP.iter().any(|s| canon(s) == c)
}

/// The names every `Connection` value lists, except those it may not remove. Tokens are ASCII
/// (RFC 9110 5.6.2): a value with other bytes still names its ASCII tokens.
fn connection_named(input: &HeaderMap) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for v in input.get_all("connection") {
        for token in v.as_bytes().split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            let lower = String::from_utf8_lossy(token).to_ascii_lowercase();
            if PROTECTED.contains(&lower.as_str()) || HOP_BY_HOP.contains(&lower.as_str()) || lower == "close" {
                continue;
            }
            if let Ok(n) = HeaderName::from_bytes(token) {
                out.push(n);
            }
        }
    }
    out
}

type Outcome = Result<(HeaderMap, Option<Method>), &'static str>;

/// What sanitising must produce.
fn model(input: &HeaderMap, trusted: bool, allow_override: bool) -> Outcome {
    if input.get_all("host").iter().count() > 1 {
        return Err("two hosts");
    }
    let named = connection_named(input);
    let mut out = HeaderMap::new();
    let mut method = None;
    for (name, value) in input {
        let c = canon(name.as_str());
        let underscored = name.as_str().contains('_');
        let dropped = HOP_BY_HOP.contains(&c.as_str())
            || REWRITE.contains(&c.as_str())
            || owned(&c)
            || (!trusted && forwarding(&c))
            || (underscored && (forwarding(&c) || c == "x-request-id" || c == "host"))
            // Removed before forwarding, so it cannot be what the upstream acts on.
            || named.contains(name);
        if dropped {
            continue;
        }
        if OVERRIDE.contains(&c.as_str()) {
            if !allow_override {
                return Err("override not allowed");
            }
            let m = value.to_str().ok().and_then(|s| Method::from_bytes(s.trim().as_bytes()).ok());
            if method.replace(m.ok_or("bad override")?).is_some() {
                return Err("two overrides");
            }
        }
        out.append(name.clone(), value.clone());
    }
    Ok((out, method))
}

fn check(input: &HeaderMap, trusted: bool, allow_override: bool) {
    let policy = HeaderPolicy::new(&STRIP.map(String::from), allow_override);
    let mut out = input.clone();
    let got = sanitize(&mut out, &policy, trusted).map(|s| s.method_override);
    match (got, model(input, trusted, allow_override)) {
        (Ok(m), Ok((want, want_m))) => {
            for name in out.keys() {
                let c = canon(name.as_str());
                assert!(!owned(&c) && !HOP_BY_HOP.contains(&c.as_str()), "{name} survived: {input:?}");
                assert!(trusted || !forwarding(&c), "{name} survived from an untrusted peer: {input:?}");
            }
            assert_eq!(out, want, "trusted={trusted} override={allow_override} input={input:?}");
            assert_eq!(m, want_m, "override for {input:?}");
        }
        (Err(_), Err(_)) => {}
        (got, want) => panic!("sanitize {got:?}, rules {want:?}, for {input:?} (trusted={trusted})"),
    }
}

/// Text as a header block: `name: value` lines; `@trusted` and `@override` lines set the peer
/// and the policy. Lines that are no header are skipped (hyper would refuse them earlier).
fn from_text(bytes: &[u8]) -> (HeaderMap, bool, bool) {
    let (mut map, mut trusted, mut allow) = (HeaderMap::new(), false, false);
    for line in bytes.split(|b| *b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)) {
        match line {
            b"@trusted" => trusted = true,
            b"@override" => allow = true,
            _ => {
                let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
                let (n, v) = (&line[..colon], line[colon + 1..].trim_ascii());
                if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
                    map.append(n, v);
                }
            }
        }
    }
    (map, trusted, allow)
}

#[test]
fn sanitize_bytes() {
    bolero::check!(name = "sanitize_bytes").with_iterations(ITERATIONS).with_test_time(TIME).for_each(
        |bytes: &[u8]| {
            let (map, trusted, allow) = from_text(bytes);
            check(&map, trusted, allow);
        },
    );
}

/// Every name the rules mention (with OWNED and HOP_BY_HOP), and some they do not.
const OTHER_NAMES: &[&str] = &[
    "x-tenant",
    "x-internal-user",
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "host",
    "content-length",
    "content-type",
    "authorization",
    "x-request-id",
    "accept",
    "x-custom",
    "etag",
    "close",
];
const VALUES: &[&str] = &["GET", "DELETE", " PATCH ", "not a method", "*", "1", "", "keep-alive", "close"];

/// A pool name, each `-` turned to `_` and each letter upper-cased where `bits` says.
fn spelled(i: u8, bits: u16) -> String {
    let all = OWNED.len() + HOP_BY_HOP.len() + OTHER_NAMES.len();
    OWNED
        .iter()
        .chain(&HOP_BY_HOP)
        .chain(OTHER_NAMES)
        .nth(i as usize % all)
        .expect("in range")
        .chars()
        .enumerate()
        .map(|(k, ch)| match (bits >> (k % 16)) & 1 == 1 {
            true if ch == '-' => '_',
            true => ch.to_ascii_uppercase(),
            false => ch,
        })
        .collect()
}

#[test]
fn sanitize_props() {
    bolero::check!(name = "sanitize_props")
        .with_iterations(ITERATIONS)
        .with_test_time(TIME)
        .with_type::<(bool, bool, Vec<(u8, u8, u16, Vec<u8>)>)>()
        .for_each(|(trusted, allow, entries)| {
            let mut map = HeaderMap::new();
            for (kind, pick, bits, raw) in entries {
                let (name, value): (Vec<u8>, Vec<u8>) = match kind % 4 {
                    // A `Connection` header naming pool names, odd separators, maybe a non-ASCII token.
                    0 => {
                        let mut v: Vec<String> = raw.iter().take(3).map(|i| spelled(*i, *bits)).collect();
                        if pick % 3 == 0 {
                            v.push("é".into());
                        }
                        let sep = [",", ", ", " ,\t"][*pick as usize % 3];
                        (b"connection".to_vec(), v.join(sep).into_bytes())
                    }
                    // Arbitrary bytes for both: whatever hyper would accept.
                    1 => (raw.clone(), raw.iter().rev().copied().collect()),
                    _ => {
                        let v = match raw.first() {
                            Some(b) if b % 2 == 0 => raw[1..].to_vec(),
                            _ => VALUES[*pick as usize % VALUES.len()].as_bytes().to_vec(),
                        };
                        (spelled(*pick, *bits).into_bytes(), v)
                    }
                };
                if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(&name), HeaderValue::from_bytes(&value)) {
                    map.append(n, v);
                }
            }
            check(&map, *trusted, *allow);
        });
}
