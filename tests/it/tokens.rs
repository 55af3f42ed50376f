//! Time-limited tokens through the real proxy: exchange then use, narrowing that can never
//! widen, every way a forged or stale token is refused, key rotation, parent revocation, the
//! JWKS and the signed upstream context checked by an independent implementation (Python's
//! PyJWT and hmac, not keygate's code).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

use crate::support::*;

const INTERACTIONS: &str = "/api/v1/clinics/clinic_001/interactions";
const ISS: &str = "https://keygate.test";
const AUD: &str = "clinic-api";

struct Keys {
    dir: tempfile::TempDir,
    /// PKCS#8 PEM of the signing key (kid k-new, EdDSA) and of the retired key (kid k-old, ES256).
    new_pem: String,
    old_pem: String,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let new = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let old = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        std::fs::write(dir.path().join("new.pem"), new.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("old.pub.pem"), old.public_key_pem()).unwrap();
        std::fs::write(dir.path().join("ctx.key"), "an-hmac-secret-of-at-least-32-bytes-0123456789\n").unwrap();
        Keys { new_pem: new.serialize_pem(), old_pem: old.serialize_pem(), dir }
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    fn config(&self, with_old: bool, context: &str) -> String {
        let old = if with_old {
            format!("    - {{kid: k-old, algorithm: ES256, public_key_file: {}}}\n", self.path("old.pub.pem").display())
        } else {
            String::new()
        };
        format!(
            "jwt:\n  issuer: {ISS}\n  audience: {AUD}\n  leeway: 0s\n  keys:\n    - {{kid: k-new, algorithm: EdDSA, private_key_file: {}}}\n{old}  issue: {{max_ttl: 15m}}\n{context}",
            self.path("new.pem").display()
        )
    }

    fn hmac_context(&self) -> String {
        format!("upstream_context: {{sign: hmac, key_id: ctx1, secret_file: {}}}\n", self.path("ctx.key").display())
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn claims(sub: &str) -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": sub, "iat": now(), "nbf": now(), "exp": now() + 300,
           "jti": "t1", "scope": "interactions:read", "env": "live"})
}

/// A token signed by the test itself, with any header and claims.
fn forge(kid: &str, alg: jsonwebtoken::Algorithm, key: &EncodingKey, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    encode(&h, claims, key).unwrap()
}

async fn exchange(kg: &Proxy, key: &TestKey, body: &str) -> Resp {
    kg.send(
        Method::POST,
        "/auth/token",
        &[("authorization", &key.bearer()), ("content-type", "application/json")],
        Bytes::from(body.to_string()),
    )
    .await
}

async fn token(kg: &Proxy, key: &TestKey, body: &str) -> String {
    let r = exchange(kg, key, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["access_token"].as_str().unwrap().to_string()
}

async fn with(kg: &Proxy, path: &str, jwt: &str) -> Resp {
    kg.get(path, &[("authorization", &format!("Bearer {jwt}"))]).await
}

#[tokio::test]
async fn exchange_then_use_as_the_key() {
    let keys = Keys::new();
    let (up, key, kg) = proxy_for(
        TestKey::live("k_tok_parent").with("    scopes: [\"interactions:read\", \"metrics:read\"]\n"),
        &keys.config(true, ""),
    )
    .await;
    let r = exchange(&kg, &key, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["cache-control"], "no-store");
    let v = r.json();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 900, "default and cap: 15 minutes");
    assert_eq!(v["scope"], "interactions:read metrics:read");
    let jwt = v["access_token"].as_str().unwrap();
    assert!(!jwt.contains(&key.secret[9..]));

    let r = with(&kg, INTERACTIONS, jwt).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert_eq!(seen.one("x-api-key-id"), "k_tok_parent");
    assert_eq!(seen.one("x-scopes"), "interactions:read metrics:read");
    assert!(seen.headers.get("authorization").is_none());
    assert!(r.headers["ratelimit"].to_str().unwrap().starts_with("\"default\";r="), "limited as the parent");
    assert!(!logs().contains(jwt), "tokens are never logged");
    let rid = r.headers["x-request-id"].to_str().unwrap().to_string();
    let line = logs()
        .lines()
        .find(|l| l.contains(&rid) && l.contains("\"decision\""))
        .expect("an audit line for the token request")
        .to_string();
    assert!(line.contains(r#""auth":"token""#) && line.contains(r#""key_id":"k_tok_parent""#), "{line}");
}

#[tokio::test]
async fn narrowing_works_and_can_never_widen() {
    let keys = Keys::new();
    let (up, key, kg) = proxy_for(
        TestKey::live("k_tok_narrow")
            .with("    scopes: [\"interactions:read\", \"metrics:read\"]\n    clinics: [clinic_001, clinic_002]\n"),
        &keys.config(false, ""),
    )
    .await;
    let r = exchange(&kg, &key, r#"{"scopes":["interactions:read"],"clinics":["clinic_001"],"ttl_seconds":60}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["expires_in"], 60);
    assert_eq!(r.json()["scope"], "interactions:read");
    let jwt = r.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(with(&kg, INTERACTIONS, &jwt).await.status, 200);
    assert_eq!(up.last().one("x-allowed-clinics"), "clinic_001");
    with(&kg, "/api/v1/clinics/clinic_001/metrics", &jwt).await.assert_error(403, "INSUFFICIENT_SCOPE");
    let foreign = with(&kg, "/api/v1/clinics/clinic_002/interactions", &jwt).await;
    assert_eq!(foreign.json()["data"], json!([]), "clinic_002 is outside the token, though the key has it");

    exchange(&kg, &key, r#"{"scopes":["campaigns:read"]}"#).await.assert_error(403, "INSUFFICIENT_SCOPE");
    exchange(&kg, &key, r#"{"scopes":["interactions:*"]}"#).await.assert_error(403, "INSUFFICIENT_SCOPE");
    exchange(&kg, &key, r#"{"clinics":["clinic_009"]}"#).await.assert_error(403, "CLINIC_NOT_ALLOWED");
    exchange(&kg, &key, r#"{"scope":"x"}"#).await.assert_error(400, "INVALID_REQUEST");
    assert_eq!(exchange(&kg, &key, r#"{"ttl_seconds":99999}"#).await.json()["expires_in"], 900, "capped");
    // A token cannot mint a token, and the endpoint takes POST only.
    let r = kg.send(Method::POST, "/auth/token", &[("authorization", &format!("Bearer {jwt}"))], Bytes::new()).await;
    r.assert_error(400, "INVALID_REQUEST");
    kg.get_as(&key, "/auth/token").await.assert_error(405, "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn forged_and_stale_tokens_are_refused_with_one_message() {
    let keys = Keys::new();
    let (up, key, kg) = proxy_for(TestKey::live("k_tok_forge"), &keys.config(true, "")).await;
    let good = token(&kg, &key, "").await;
    let ed = EncodingKey::from_ed_pem(keys.new_pem.as_bytes()).unwrap();
    let es_old = EncodingKey::from_ec_pem(keys.old_pem.as_bytes()).unwrap();
    let (h, p, s) = {
        let parts: Vec<&str> = good.split('.').collect();
        (parts[0].to_string(), parts[1].to_string(), parts[2].to_string())
    };
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut payload: Value = serde_json::from_slice(&b64.decode(&p).unwrap()).unwrap();
    payload["scope"] = json!("*");
    let tampered_payload = format!("{h}.{}.{s}", b64.encode(payload.to_string()));
    let mut sig = b64.decode(&s).unwrap();
    sig[0] ^= 1;
    let tampered_sig = format!("{h}.{p}.{}", b64.encode(&sig));
    let none = format!("{}.{p}.", b64.encode(r#"{"alg":"none","typ":"JWT","kid":"k-new"}"#));
    let header_swapped = format!("{}.{p}.{s}", b64.encode(r#"{"alg":"ES256","typ":"JWT","kid":"k-new"}"#));
    // Algorithm confusion: HS256 keyed with the public key the JWKS publishes.
    let jwks = kg.get("/.well-known/jwks.json", &[]).await.json();
    let x = jwks["keys"][0]["x"].as_str().unwrap().to_string();
    let confused =
        forge("k-new", jsonwebtoken::Algorithm::HS256, &EncodingKey::from_secret(x.as_bytes()), &claims("k_tok_forge"));
    let unknown_kid = forge("k-nope", jsonwebtoken::Algorithm::EdDSA, &ed, &claims("k_tok_forge"));
    // Signed with the current key, one claim off.
    let with_claim = |sub: &str, name: &str, value: Value| {
        let mut c = claims(sub);
        c[name] = value;
        forge("k-new", jsonwebtoken::Algorithm::EdDSA, &ed, &c)
    };
    let wrong_iss = with_claim("k_tok_forge", "iss", json!("https://evil.test"));
    let wrong_aud = with_claim("k_tok_forge", "aud", json!("other-api"));
    let future = with_claim("k_tok_forge", "nbf", json!(now() + 60));
    let no_parent = with_claim("k_tok_nobody", "sub", json!("k_tok_nobody"));
    let wrong_env = with_claim("k_tok_forge", "env", json!("test"));
    // The retired key's kid with the wrong algorithm family.
    let old_as_ed = forge("k-old", jsonwebtoken::Algorithm::EdDSA, &ed, &claims("k_tok_forge"));

    for (name, t) in [
        ("tampered payload", &tampered_payload),
        ("tampered signature", &tampered_sig),
        ("alg none", &none),
        ("header alg swapped", &header_swapped),
        ("HS256 with the public key", &confused),
        ("unknown kid", &unknown_kid),
        ("wrong iss", &wrong_iss),
        ("wrong aud", &wrong_aud),
        ("nbf in the future", &future),
        ("parent not in the table", &no_parent),
        ("other environment", &wrong_env),
        ("retired kid, other algorithm", &old_as_ed),
    ] {
        let r = with(&kg, INTERACTIONS, t).await;
        let msg = r.assert_error(401, "INVALID_TOKEN");
        assert_eq!(msg, "Invalid token", "{name}: one message that does not say which");
        assert!(r.headers["www-authenticate"].to_str().unwrap().contains("invalid_token"), "{name}");
        assert!(!r.text().contains(t.as_str()), "{name}: never echoed");
    }

    let mut c = claims("k_tok_forge");
    c["exp"] = json!(now() - 1);
    let expired = forge("k-new", jsonwebtoken::Algorithm::EdDSA, &ed, &c);
    with(&kg, INTERACTIONS, &expired).await.assert_error(401, "TOKEN_EXPIRED");
    // A token from the retired key still verifies while its kid is listed.
    let old = forge("k-old", jsonwebtoken::Algorithm::ES256, &es_old, &claims("k_tok_forge"));
    assert_eq!(with(&kg, INTERACTIONS, &old).await.status, 200);
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn a_retired_kid_stops_verifying_once_removed_and_sighup_reloads_the_signer() {
    let keys = Keys::new();
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_tok_rotate");
    let es_old = EncodingKey::from_ec_pem(keys.old_pem.as_bytes()).unwrap();
    let old = forge("k-old", jsonwebtoken::Algorithm::ES256, &es_old, &claims("k_tok_rotate"));
    let kg = spawn_proxy(up.addr, &[&key], &keys.config(false, "")).await;
    with(&kg, INTERACTIONS, &old).await.assert_error(401, "INVALID_TOKEN");

    let before = token(&kg, &key, "").await;
    let jwks_before = kg.get("/.well-known/jwks.json", &[]).await.json();
    // New key material under the same file: SIGHUP picks it up.
    let fresh = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    std::fs::write(keys.path("new.pem"), fresh.serialize_pem()).unwrap();
    kg.running().reload();
    let jwks_after = kg.get("/.well-known/jwks.json", &[]).await.json();
    assert_ne!(jwks_before["keys"][0]["x"], jwks_after["keys"][0]["x"]);
    with(&kg, INTERACTIONS, &before).await.assert_error(401, "INVALID_TOKEN");
    let after = token(&kg, &key, "").await;
    assert_eq!(with(&kg, INTERACTIONS, &after).await.status, 200);
}

#[tokio::test]
async fn revoking_the_parent_kills_its_tokens() {
    let keys = Keys::new();
    let (_up, key, kg) = proxy_for(TestKey::live("k_tok_doomed"), &keys.config(false, "")).await;
    let jwt = token(&kg, &key, "").await;
    assert_eq!(with(&kg, INTERACTIONS, &jwt).await.status, 200);
    let revoked = TestKey { extra: "    revoked_at: 2026-01-01T00:00:00Z\n".into(), ..key };
    kg.write_keys(&table_yaml(&[&revoked]));
    eventually(Duration::from_secs(3), async || with(&kg, INTERACTIONS, &jwt).await.status == 401).await;
    with(&kg, INTERACTIONS, &jwt).await.assert_error(401, "API_KEY_REVOKED");
}

// ---------- independent verification (Python) ----------

/// A Python with PyJWT and cryptography, in a venv under the target dir (made once).
fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pyjwt-venv");
        let py = venv.join("bin/python");
        let ready = venv.join(".ready");
        if !ready.exists() {
            let run = |cmd: &mut std::process::Command| {
                let out = cmd.output().unwrap_or_else(|e| panic!("these tests need python3 ({e})"));
                assert!(
                    out.status.success(),
                    "setting up PyJWT for the independent verification failed (needs python3-venv and PyPI): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            run(std::process::Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv));
            run(std::process::Command::new(&py).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "PyJWT[crypto]==2.10.1",
            ]));
            std::fs::write(&ready, "").unwrap();
        }
        py
    })
}

fn py(script: &str, args: &[&str]) -> String {
    let py = python().to_path_buf();
    let out = std::process::Command::new(py).arg("-c").arg(script).args(args).output().unwrap();
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

const VERIFY_WITH_JWKS: &str = r#"
import json, sys, jwt
jwks, token, aud, iss = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(jwks).keys}
k = keys[jwt.get_unverified_header(token)["kid"]]
print(json.dumps(jwt.decode(token, k.key, algorithms=[k.algorithm_name], audience=aud, issuer=iss)))
"#;

#[tokio::test]
async fn issued_tokens_verify_with_pyjwt_against_the_served_jwks() {
    let keys = Keys::new();
    let (_up, key, kg) =
        proxy_for(TestKey::live("k_tok_pyjwt").with("    clinics: [clinic_001]\n"), &keys.config(true, "")).await;
    let jwks = kg.get("/.well-known/jwks.json", &[]).await;
    assert_eq!(jwks.status, 200);
    assert_eq!(jwks.json()["keys"].as_array().unwrap().len(), 2);
    let jwt = token(&kg, &key, "").await;
    let claims: Value = serde_json::from_str(&py(VERIFY_WITH_JWKS, &[&jwks.text(), &jwt, AUD, ISS])).unwrap();
    assert_eq!(claims["sub"], "k_tok_pyjwt");
    assert_eq!(claims["clinics"], json!(["clinic_001"]));
    assert_eq!(claims["env"], "live");
    for c in ["iat", "nbf", "exp", "jti", "scope"] {
        assert!(!claims[c].is_null(), "claim {c}");
    }
}

const VERIFY_HMAC: &str = r#"
import hmac, hashlib, sys
secret, header, rid, method, pq, clinics, scopes, key_id = sys.argv[1:9]
fields = dict(p.split("=", 1) for p in header.split(",")[1:])
msg = "\n".join(["v1", fields["t"], rid, method, pq, clinics, scopes, key_id])
good = hmac.compare_digest(fields["sig"], hmac.new(secret.encode(), msg.encode(), hashlib.sha256).hexdigest())
print("ok" if good and header.startswith("v1,") else "bad")
"#;

#[tokio::test]
async fn the_hmac_context_verifies_independently_and_fails_on_any_change() {
    let keys = Keys::new();
    let (up, key, kg) = proxy_for(
        TestKey::live("k_tok_ctx").with("    clinics: [clinic_001]\n"),
        &keys.config(false, &keys.hmac_context()),
    )
    .await;
    let r = kg
        .get(
            "/api/v1/clinics/clinic_001/interactions?from=2026-01-01",
            &[("authorization", &key.bearer()), ("x-keygate-signature", "v1,kid=ctx1,t=1,sig=forged")],
        )
        .await;
    assert_eq!(r.status, 200);
    let seen = up.last();
    let header = seen.one("x-keygate-signature");
    assert_ne!(header, "v1,kid=ctx1,t=1,sig=forged", "a client's copy never survives");
    let secret = "an-hmac-secret-of-at-least-32-bytes-0123456789";
    let facts = [
        seen.one("x-request-id"),
        "GET".to_string(),
        seen.uri.clone(),
        seen.one("x-allowed-clinics"),
        seen.one("x-scopes"),
        seen.one("x-api-key-id"),
    ];
    let args = |f: &[String]| {
        let mut a = vec![secret.to_string(), header.clone()];
        a.extend_from_slice(f);
        a
    };
    let ok = args(&facts);
    assert_eq!(py(VERIFY_HMAC, &ok.iter().map(String::as_str).collect::<Vec<_>>()).trim(), "ok");
    for i in 0..facts.len() {
        let mut changed = facts.clone();
        changed[i].push('x');
        let a = args(&changed);
        assert_eq!(py(VERIFY_HMAC, &a.iter().map(String::as_str).collect::<Vec<_>>()).trim(), "bad", "fact {i}");
    }
}

#[tokio::test]
async fn the_jwt_context_verifies_with_pyjwt() {
    let keys = Keys::new();
    let (up, key, kg) =
        proxy_for(TestKey::live("k_tok_ctxjwt"), &keys.config(false, "upstream_context: {sign: jwt, ttl: 30s}\n"))
            .await;
    assert_eq!(kg.get_as(&key, INTERACTIONS).await.status, 200);
    let seen = up.last();
    let jwks = kg.get("/.well-known/jwks.json", &[]).await.text();
    let claims: Value =
        serde_json::from_str(&py(VERIFY_WITH_JWKS, &[&jwks, &seen.one("x-keygate-context"), "upstream", ISS])).unwrap();
    assert_eq!(claims["sub"], "k_tok_ctxjwt");
    assert_eq!(claims["rid"], seen.one("x-request-id"));
    assert_eq!(claims["path"], INTERACTIONS);
    assert_eq!(claims["clinics"], "*");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 30);
}

/// Report-only mode (`enforce: false`) never issues a token to a key that failed, and never
/// signs the context of a request it would have refused.
#[tokio::test]
async fn shadow_mode_enforces_the_exchange_and_signs_only_what_it_would_allow() {
    let keys = Keys::new();
    let shadow = format!("{}enforce: false\n", keys.hmac_context());
    let (up, key, kg) = proxy_for(TestKey::live("k_tok_shadow"), &keys.config(false, &shadow)).await;
    let ghost = TestKey::live("k_tok_shadow_ghost");
    exchange(&kg, &ghost, "").await.assert_error(401, "INVALID_API_KEY");
    assert_eq!(up.count(), 0, "keygate's own endpoint: nothing forwarded");

    kg.get_as(&ghost, INTERACTIONS).await.ok();
    assert!(up.last().all("x-keygate-signature").is_empty(), "a would-be refusal is not vouched for");
    kg.get_as(&key, INTERACTIONS).await.ok();
    assert_eq!(up.last().all("x-keygate-signature").len(), 1, "an allowed request is signed as usual");
}
