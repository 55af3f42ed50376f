//! The `jwt` and `upstream_context` sections.

use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawJwt, RawUpstreamContext};
use super::Check;
use crate::jwt::{self, Alg, KeySet, KeySource};

/// How keygate proves to the upstream that the identity headers are its own.
#[derive(Clone)]
pub enum ContextSigning {
    /// `X-Keygate-Signature`, HMAC-SHA256 with a shared secret.
    Hmac { key_id: String, secret: Vec<u8> },
    /// `X-Keygate-Context`, a JWT signed with the token signing key.
    Jwt { ttl: Duration, audience: String },
}

impl std::fmt::Debug for ContextSigning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContextSigning::Hmac { key_id, .. } => write!(f, "Hmac {{ key_id: {key_id:?}, secret: <redacted> }}"),
            ContextSigning::Jwt { ttl, audience } => write!(f, "Jwt {{ ttl: {ttl:?}, audience: {audience:?} }}"),
        }
    }
}

fn valid_path(p: &str) -> bool {
    p.starts_with('/') && !p.contains(['?', '#', ' ']) && crate::path::normalize(p).is_ok_and(|n| n == p)
}

pub(super) fn jwt(c: &mut Check, r: &Option<RawJwt>) -> Option<jwt::Settings> {
    let r = r.as_ref()?;
    let mut keys = Vec::new();
    for (i, k) in r.keys.iter().enumerate() {
        let at = format!("jwt.keys[{i}] ({})", k.kid);
        let Some(algorithm) = Alg::parse(&k.algorithm) else {
            c.0.push(format!("{at}.algorithm: {:?} is not EdDSA or ES256", k.algorithm));
            continue;
        };
        if k.kid.is_empty()
            || k.kid.len() > 64
            || !k.kid.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            c.0.push(format!("{at}.kid: 1-64 characters of [A-Za-z0-9._-]"));
        }
        keys.push(KeySource {
            kid: k.kid.clone(),
            algorithm,
            private_key_file: k.private_key_file.as_ref().map(PathBuf::from),
            public_key_file: k.public_key_file.as_ref().map(PathBuf::from),
        });
    }
    let mut kids: Vec<&str> = keys.iter().map(|k| k.kid.as_str()).collect();
    kids.sort_unstable();
    if kids.windows(2).any(|w| w[0] == w[1]) {
        c.0.push("jwt.keys: every kid must be unique".into());
    }
    // Loaded once, here, so check-config reports unreadable or wrong keys; kept for start-up.
    let loaded = match KeySet::load(&keys) {
        Ok(set) if set.keys.is_empty() => {
            c.0.push("jwt.keys: at least one key".into());
            None
        }
        Ok(set) => Some(std::sync::Arc::new(set)),
        Err(e) => {
            c.0.push(format!("jwt.keys: {e}"));
            None
        }
    };
    let issue = r.issue.as_ref().filter(|i| i.enabled != Some(false)).map(|i| jwt::Issue {
        path: i.path.clone().unwrap_or_else(|| "/auth/token".into()),
        max_ttl: c.duration("jwt.issue.max_ttl", &i.max_ttl, Duration::from_secs(15 * 60)),
        max_body_bytes: i.max_body_bytes.unwrap_or(4096),
    });
    if let Some(i) = &issue {
        if !valid_path(&i.path) {
            c.0.push(format!("jwt.issue.path: {:?} must be a normalised absolute path", i.path));
        }
        if i.max_ttl.as_secs() == 0 {
            c.0.push("jwt.issue.max_ttl: at least 1s".into());
        }
        if loaded.as_ref().is_some_and(|s| s.signer().is_none()) {
            c.0.push("jwt.issue: needs a key with private_key_file to sign with".into());
        }
    }
    let jwks_path = r.jwks_path.clone().unwrap_or_else(|| "/.well-known/jwks.json".into());
    if !valid_path(&jwks_path) {
        c.0.push(format!("jwt.jwks_path: {jwks_path:?} must be a normalised absolute path"));
    }
    Some(jwt::Settings {
        issuer: r.issuer.clone().unwrap_or_else(|| "keygate".into()),
        audience: r.audience.clone().unwrap_or_else(|| "keygate".into()),
        leeway: c.duration("jwt.leeway", &r.leeway, Duration::from_secs(30)),
        keys,
        issue,
        jwks_path,
        loaded: jwt::Loaded(loaded),
    })
}

pub(super) fn upstream_context(
    c: &mut Check,
    r: &Option<RawUpstreamContext>,
    jwt: Option<&jwt::Settings>,
) -> Option<ContextSigning> {
    let r = r.as_ref()?;
    match r.sign.as_str() {
        "none" => None,
        "hmac" => {
            let Some(path) = &r.secret_file else {
                c.0.push("upstream_context.secret_file: required with sign: hmac".into());
                return None;
            };
            let secret =
                c.val("upstream_context.secret_file", std::fs::read(path).map_err(|e| format!("{path}: {e}")))?;
            let secret = String::from_utf8_lossy(&secret).trim().as_bytes().to_vec();
            if secret.len() < 32 {
                c.0.push("upstream_context.secret_file: the secret must be at least 32 bytes".into());
            }
            Some(ContextSigning::Hmac { key_id: r.key_id.clone().unwrap_or_else(|| "1".into()), secret })
        }
        "jwt" => {
            if jwt.is_none_or(|j| j.loaded.0.as_ref().is_none_or(|s| s.signer().is_none())) {
                c.0.push("upstream_context: sign: jwt needs jwt.keys with a private_key_file".into());
            }
            Some(ContextSigning::Jwt {
                ttl: c.duration("upstream_context.ttl", &r.ttl, Duration::from_secs(60)),
                audience: r.audience.clone().unwrap_or_else(|| "upstream".into()),
            })
        }
        other => {
            c.0.push(format!("upstream_context.sign: {other:?} is not hmac, jwt or none"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    /// Validation reads the key files once and start-up uses what it read: the files can be gone
    /// by then (or changed) without the running keys differing from the checked ones.
    #[test]
    fn jwt_keys_are_read_once_by_validation_and_kept() {
        let (_dir, pem) = crate::jwt::keys::ed25519_pem_file();
        let text = format!(
            "environment: live\nupstream:\n  url: http://127.0.0.1:1\nkeys:\n  file: k.yaml\njwt:\n  keys:\n    - {{kid: k1, algorithm: EdDSA, private_key_file: {}}}\n  issue: {{}}\nupstream_context:\n  sign: jwt\n",
            pem.display()
        );
        let cfg = crate::config::parse(&text, "t").unwrap_or_else(|e| panic!("{e}"));
        std::fs::remove_file(&pem).unwrap();
        let tokens = crate::proxy::tokens::Tokens::new(cfg.jwt.unwrap()).expect("the kept keys, not the file");
        assert_eq!(tokens.key_set().keys.len(), 1);
        assert!(tokens.reload().is_err(), "SIGHUP does read the files again");
    }
}
