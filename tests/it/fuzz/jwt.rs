//! Bearer JWTs (`jwt::token::verify` and the cached claims path of `tokens::Tokens`): never
//! panic on any string, and accept nothing but the tokens keygate issued. Forgeries tried on
//! top of arbitrary edits: segments of different tokens spliced, a header naming another
//! algorithm or kid (`none`, HMAC keyed with the public key), claims changed under a kept
//! signature.

use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use keygate::jwt::token::{self, Narrowing};
use keygate::jwt::{Alg, Claims, Issue, KeySource, Settings};
use keygate::keys::{file, Catalogue, Environment, KeyTable};
use keygate::proxy::tokens::Tokens;
use time::OffsetDateTime;

use super::{mutate, Edit, ITERATIONS, TIME};

struct Fixture {
    _dir: tempfile::TempDir,
    settings: Settings,
    tokens: Tokens,
    table: KeyTable,
    now: OffsetDateTime,
    /// Tokens keygate issued: EdDSA, EdDSA narrowed, ES256 (the retired-key algorithm).
    valid: Vec<String>,
    /// The Ed25519 public key, raw: the secret of an HMAC confusion attack.
    ed_public: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let es = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        std::fs::write(dir.path().join("ed.pem"), ed.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("es.pem"), es.serialize_pem()).unwrap();
        let source = |kid: &str, algorithm, f: &str| KeySource {
            kid: kid.into(),
            algorithm,
            private_key_file: Some(dir.path().join(f)),
            public_key_file: None,
        };
        let settings = Settings {
            issuer: "https://keygate.test".into(),
            audience: "clinic-api".into(),
            leeway: Duration::ZERO,
            keys: vec![source("k-ed", Alg::EdDsa, "ed.pem"), source("k-es", Alg::Es256, "es.pem")],
            issue: Some(Issue { path: "/auth/token".into(), max_ttl: Duration::from_secs(900), max_body_bytes: 4096 }),
            jwks_path: "/.well-known/jwks.json".into(),
            loaded: Default::default(),
        };
        let tokens = Tokens::new(settings.clone()).unwrap();
        let table = file::parse(
            &format!(
                "keys:\n  - id: k_parent\n    hash: {}\n    environment: live\n    clinics: [c1, c2]\n",
                "a".repeat(64)
            ),
            "t",
            &Catalogue::default(),
        )
        .unwrap();
        let now = OffsetDateTime::now_utc();
        let parent = table.by_id("k_parent").unwrap();
        let keys = tokens.key_set();
        let issue = |ask: &Narrowing| token::issue(&settings, &keys, parent, ask, now.unix_timestamp(), 900).unwrap();
        let (plain, claims) = issue(&Narrowing::default());
        let narrowed = Narrowing {
            scopes: Some(vec!["interactions:read".into()]),
            clinics: Some(vec!["c1".into()]),
            ttl_seconds: Some(60),
        };
        let (narrow, _) = issue(&narrowed);
        let es256 =
            sign(Algorithm::ES256, "k-es", &claims, &EncodingKey::from_ec_pem(es.serialize_pem().as_bytes()).unwrap());
        let x = keys.keys[0].jwk["x"].as_str().unwrap();
        let ed_public = B64.decode(x).unwrap();
        Fixture { _dir: dir, settings, tokens, table, now, valid: vec![plain, narrow, es256], ed_public }
    })
}

fn sign(alg: Algorithm, kid: &str, claims: &impl serde::Serialize, key: &EncodingKey) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    encode(&h, claims, key).unwrap()
}

/// What any string must satisfy: accepted only if keygate issued it, and then it acts as its
/// parent. Both the uncached verifier and the caching claims path are asked.
fn check(f: &Fixture, jwt: &str) {
    let issued = f.valid.iter().any(|v| v == jwt);
    let _ = token::looks_like_jwt(jwt);
    let direct = token::verify(&f.settings, &f.tokens.key_set(), jwt, f.now.unix_timestamp());
    assert_eq!(direct.is_ok(), issued, "verify: {jwt:?} -> {direct:?}");
    let cached = f.tokens.claims(jwt, f.now);
    assert_eq!(cached.is_ok(), issued, "claims: {jwt:?}");
    let acting = f.tokens.authenticate(jwt, &f.table, Environment::Live, f.now);
    assert_eq!(acting.as_ref().map(|k| &*k.id).ok(), issued.then_some("k_parent"), "authenticate: {jwt:?}");
}

#[test]
fn jwt_bytes() {
    // A panic fails the test; nothing observes the token cache after one.
    let f = AssertUnwindSafe(fixture());
    bolero::check!(name = "jwt_bytes").with_iterations(ITERATIONS).with_test_time(TIME).for_each(|bytes: &[u8]| {
        check(&f, &String::from_utf8_lossy(bytes));
    });
}

fn segments(t: &str) -> [&str; 3] {
    let mut it = t.splitn(3, '.');
    [it.next().unwrap(), it.next().unwrap(), it.next().unwrap()]
}

/// A forgery built from the issued tokens; `pick` chooses the tokens and the kind.
fn forge(f: &Fixture, kind: u8, pick: [u8; 3]) -> String {
    let t = |i: u8| segments(&f.valid[i as usize % f.valid.len()]);
    let [h, p, s] = t(pick[0]);
    match kind % 5 {
        // Header, claims and signature of different tokens.
        0 => format!("{}.{}.{}", h, t(pick[1])[1], t(pick[2])[2]),
        // Another algorithm or kid in the header, the signature kept or dropped.
        1 => {
            let headers = [
                r#"{"alg":"none","kid":"k-ed"}"#,
                r#"{"alg":"none"}"#,
                r#"{"alg":"EdDSA","kid":"k-es"}"#,
                r#"{"alg":"ES256","kid":"k-ed"}"#,
                r#"{"alg":"EdDSA","kid":"k-ed","crit":["x"]}"#,
                r#"{"alg":"EdDSA","kid":"k-ed","jku":"http://evil"}"#,
            ];
            let header = B64.encode(headers[pick[1] as usize % headers.len()]);
            format!("{header}.{p}.{}", if pick[2].is_multiple_of(2) { s } else { "" })
        }
        // HMAC keyed with the public key, under the EdDSA key's kid.
        2 => {
            let claims: serde_json::Value = serde_json::from_slice(&B64.decode(p).unwrap()).unwrap();
            sign(Algorithm::HS256, "k-ed", &claims, &EncodingKey::from_secret(&f.ed_public))
        }
        // One claim changed, the signature kept.
        3 => {
            let mut claims: Claims = serde_json::from_slice(&B64.decode(p).unwrap()).unwrap();
            match pick[1] % 5 {
                0 => claims.exp += 3600,
                1 => claims.sub = "k_other".into(),
                2 => claims.scope = "*".into(),
                3 => claims.clinics = None,
                _ => claims.env = Environment::Test,
            }
            format!("{h}.{}.{s}", B64.encode(serde_json::to_vec(&claims).unwrap()))
        }
        // The same claims, padded or followed by whitespace: another spelling of them.
        _ => format!("{h}.{p}{}.{s}", ["=", "==", "\n", " "][pick[1] as usize % 4]),
    }
}

#[test]
fn jwt_props() {
    let f = AssertUnwindSafe(fixture());
    for v in &f.valid {
        check(&f, v);
    }
    bolero::check!(name = "jwt_props")
        .with_iterations(ITERATIONS)
        .with_test_time(TIME)
        .with_type::<(u8, [u8; 3], Vec<Edit>)>()
        .for_each(|(kind, pick, edits)| {
            let forged = forge(&f, *kind, *pick);
            check(&f, &forged);
            check(&f, &mutate(&forged, &edits[..edits.len().min(4)]));
            check(&f, &mutate(&f.valid[pick[0] as usize % f.valid.len()], &edits[..edits.len().min(4)]));
        });
}
