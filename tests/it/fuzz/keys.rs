//! Bearer parsing, key format and checksum, against models written from the rules: a bearer
//! token is what follows `Bearer` and is an RFC 6750 b64token; a key is a known prefix, 32-64
//! base62 characters, the last six the base62 CRC32 of the rest. Every generated key passes and
//! round-trips; any single-character typo of one is refused. Never panics.

use http::{header, HeaderMap, HeaderValue};
use keygate::authn::{bearer_token, key_hash};
use keygate::keys::generate::generate;
use keygate::keys::{Environment, KeyFormat, KeyHash, Secret};

use super::{ITERATIONS, TIME};

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The environment `key` is a well-formed key of, by the rules.
fn model_key(key: &str, checksum: bool) -> Option<Environment> {
    let (body, env) = match key {
        k if k.starts_with("dpl_live_") => (&k[9..], Environment::Live),
        k if k.starts_with("dpl_test_") => (&k[9..], Environment::Test),
        _ => return None,
    };
    if !(32..=64).contains(&body.len()) || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    if checksum {
        let (rest, sum) = key.split_at(key.len() - 6);
        let mut n = crc32fast::hash(rest.as_bytes());
        let mut want = [0u8; 6];
        for d in want.iter_mut().rev() {
            *d = BASE62[(n % 62) as usize];
            n /= 62;
        }
        if sum.as_bytes() != want {
            return None;
        }
    }
    Some(env)
}

/// The token of an `Authorization` value, by RFC 6750: visible ASCII, `Bearer` in any case,
/// spaces, then a b64token (`[A-Za-z0-9-._~+/]+` and optional trailing `=`).
fn model_bearer(v: &[u8]) -> Option<&[u8]> {
    if !v.iter().all(|b| (32..127).contains(b) || *b == b'\t') {
        return None;
    }
    if v.len() < 7 || !v[..7].eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = &v[7..];
    let token = &token[token.iter().take_while(|b| **b == b' ').count()..];
    let body_len = token.len() - token.iter().rev().take_while(|b| **b == b'=').count();
    let ok = body_len > 0 && token[..body_len].iter().all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(b));
    ok.then_some(token)
}

fn check_key(key: &str) {
    for checksum in [true, false] {
        let format = KeyFormat { checksum, ..KeyFormat::default() };
        let got = format.check(key).ok();
        assert_eq!(got, model_key(key, checksum), "{key:?} checksum={checksum}");
        for env in [Environment::Live, Environment::Test] {
            match key_hash(Secret::new(key), &format, env) {
                Ok(h) => assert!(got == Some(env) && h == KeyHash::of(key), "{key:?}"),
                Err(_) => assert_ne!(got, Some(env), "{key:?} refused by key_hash"),
            }
        }
    }
}

fn check_authorization(value: &[u8]) {
    let Ok(v) = HeaderValue::from_bytes(value) else { return };
    let mut h = HeaderMap::new();
    h.insert(header::AUTHORIZATION, v);
    let got = bearer_token(&h).ok().map(|s| s.expose().as_bytes().to_vec());
    let want = model_bearer(value).map(<[u8]>::to_vec);
    assert_eq!(got, want, "{:?}", String::from_utf8_lossy(value));
    if let Some(token) = got {
        check_key(std::str::from_utf8(&token).expect("a b64token is ASCII"));
    }
}

#[test]
fn keys_bytes() {
    bolero::check!(name = "keys_bytes").with_iterations(ITERATIONS).with_test_time(TIME).for_each(|bytes: &[u8]| {
        check_authorization(bytes);
        check_key(&String::from_utf8_lossy(bytes));
    });
}

#[test]
fn keys_props() {
    bolero::check!(name = "keys_props")
        .with_iterations(ITERATIONS)
        .with_test_time(TIME)
        .with_type::<(bool, u8, u8, u8)>()
        .for_each(|(live, at, byte, op)| {
            let (prefix, env) = if *live { ("dpl_live_", Environment::Live) } else { ("dpl_test_", Environment::Test) };
            let key = generate(prefix);
            assert_eq!(KeyFormat::default().check(&key), Ok(env), "{key}");
            assert_eq!(model_key(&key, true), Some(env), "{key}");
            check_authorization(format!("Bearer {key}").as_bytes());
            assert_eq!(key_hash(Secret::new(&key), &KeyFormat::default(), env), Ok(KeyHash::of(&key)));

            // One typo: a character replaced, two neighbours swapped, one dropped or one added.
            // Replacements and swaps are bursts CRC32 always detects; a dropped or added
            // character changes the length, and slips through with odds of 2^-32.
            let mut typo = key.clone().into_bytes();
            let i = *at as usize % typo.len();
            match op % 4 {
                0 => typo[i] = *byte,
                1 => typo.swap(i, (i + 1) % key.len()),
                2 => drop(typo.remove(i)),
                _ => typo.insert(i, *byte),
            }
            let typo = String::from_utf8_lossy(&typo).into_owned();
            if typo != key {
                assert!(KeyFormat::default().check(&typo).is_err(), "typo {typo:?} of {key:?} accepted");
                check_key(&typo);
            }
        });
}
