//! The security property of `normalize`, checked against three ways an upstream may resolve a
//! path: decode once then resolve dot segments (nginx's `$uri`), strip `;params` then resolve
//! then decode (Servlet containers, Spring), and decode twice. Whatever keygate forwards, each
//! model must read the same segments keygate authorised (so any router over decoded segments
//! picks the same route and resource), or keygate must have refused the path.

use super::normalize;

/// Percent-decodes valid `%HH` escapes, leaving anything else as it is (as lenient servers do).
fn decode(s: &[u8]) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// RFC 3986 dot-segment removal over segments, empty segments merged (as the routers do).
fn resolve(segments: impl Iterator<Item = Vec<u8>>) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for seg in segments {
        match seg.as_slice() {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            _ => out.push(seg),
        }
    }
    out
}

fn split(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|&c| c == b'/').map(<[u8]>::to_vec)
}

/// What keygate authorised: its own segments, each decoded once.
fn authorised(p: &str) -> Vec<Vec<u8>> {
    p.as_bytes().split(|&c| c == b'/').filter(|s| !s.is_empty()).map(decode).collect()
}

fn decode_once(p: &str) -> Vec<Vec<u8>> {
    resolve(split(&decode(p.as_bytes())))
}

fn servlet(p: &str) -> Vec<Vec<u8>> {
    let stripped = split(p.as_bytes()).map(|s| s.split(|&c| c == b';').next().unwrap_or(&[]).to_vec());
    resolve(stripped).into_iter().map(|s| decode(&s)).collect()
}

fn decode_twice(p: &str) -> Vec<Vec<u8>> {
    resolve(split(&decode(&decode(p.as_bytes()))))
}

/// The property for one raw path; `false` means a model reads another resource.
fn agrees(raw: &str) -> bool {
    let Ok(p) = normalize(raw) else { return true };
    let want = authorised(&p);
    let models = [decode_once(&p), servlet(&p), decode_twice(&p)];
    models.iter().all(|m| *m == want) && normalize(&p).as_deref() == Ok(&*p)
}

/// Pieces attackers combine: separators, dots, every spelling of the dangerous bytes.
const PIECES: &[&str] = &[
    "/", "//", ".", "..", "a", "b", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "%00", "%25", "%252e", "%252E", "%252f",
    "%255c", "%2500", "%2525", "%32", "%65", "%35", "%66", "%3b", "%3B", ";", ";x=1", "%41", "%c3", "%a9", "\u{e9}",
    "\\", "%", "%g", "2e", "~", "%7e", "?", "#", "%23", "%3f", " ", "%20",
];

fn raw_from(picks: &[u8]) -> String {
    let mut raw = String::from("/");
    for &i in picks {
        raw.push_str(PIECES[usize::from(i) % PIECES.len()]);
    }
    raw
}

#[test]
fn every_model_reads_what_keygate_authorised_or_keygate_refused() {
    bolero::check!().with_type::<Vec<u8>>().with_iterations(20_000).for_each(|picks| {
        let raw = raw_from(picks);
        assert!(agrees(&raw), "{raw:?} -> {:?}", normalize(&raw));
    });
}

#[test]
fn normalize_never_panics_on_arbitrary_text() {
    bolero::check!().with_type::<String>().with_iterations(20_000).for_each(|s| {
        let _ = normalize(s);
        let _ = normalize(&format!("/{s}"));
    });
}

/// The known attacks, each refused or harmless under every model.
#[test]
fn the_known_attacks_hold() {
    for raw in [
        "/a/%252e%252e/b",
        "/a/..;/b",
        "/a/..%3b/b",
        "/a/%2e%2e;/b",
        "/a/.%252e/b",
        "/a%252fb",
        "/a/%25%32%65%25%32%65/b",
        "/a/%252e%252E%252fb",
        "/public/..;x=1/admin",
        "/a/%25%35%63",
        "/a/x%3b/../b",
    ] {
        assert!(agrees(raw), "{raw:?}");
    }
}

/// The models would have caught the old rules: a model that disagrees is reported.
#[test]
fn the_models_see_the_attacks_that_were_forwarded_before() {
    // Before: forwarded as sent. Decoded twice it is a traversal to another resource.
    assert_ne!(decode_twice("/a/%252e%252e/b"), authorised("/a/%252e%252e/b"));
    // Before: forwarded as an ordinary segment; a Servlet container resolves it.
    assert_ne!(servlet("/a/..;/b"), authorised("/a/..;/b"));
}
