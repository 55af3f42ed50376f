//! Token signing keys: PKCS#8 private keys (Ed25519 or P-256) that sign and verify, and SPKI
//! public keys kept only to verify tokens issued before a rotation. Loaded from PEM files at
//! start and on SIGHUP; the set is swapped whole. The JWKS document is built here, once.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

/// One configured key, as written in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySource {
    pub kid: String,
    pub algorithm: Alg,
    /// PKCS#8 private key (signs and verifies) ...
    pub private_key_file: Option<PathBuf>,
    /// ... or an SPKI public key (verifies only: a retired signing key).
    pub public_key_file: Option<PathBuf>,
}

/// The two asymmetric algorithms keygate signs with. Never `none`, never HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    EdDsa,
    Es256,
}

impl Alg {
    pub fn parse(s: &str) -> Option<Alg> {
        match s {
            "EdDSA" | "Ed25519" => Some(Alg::EdDsa),
            "ES256" => Some(Alg::Es256),
            _ => None,
        }
    }

    pub fn jwt(self) -> Algorithm {
        match self {
            Alg::EdDsa => Algorithm::EdDSA,
            Alg::Es256 => Algorithm::ES256,
        }
    }
}

pub struct Key {
    pub kid: String,
    pub alg: Alg,
    pub encoding: Option<EncodingKey>,
    pub decoding: DecodingKey,
    /// This key's JWKS entry.
    pub jwk: serde_json::Value,
}

pub struct KeySet {
    pub keys: Vec<Key>,
    /// The JWKS document (`{"keys":[...]}`), serialised once.
    pub jwks: bytes::Bytes,
}

impl KeySet {
    pub fn find(&self, kid: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// The key that signs new tokens: the first with a private key.
    pub fn signer(&self) -> Option<&Key> {
        self.keys.iter().find(|k| k.encoding.is_some())
    }

    pub fn load(sources: &[KeySource]) -> Result<KeySet, String> {
        let mut keys = Vec::with_capacity(sources.len());
        for s in sources {
            keys.push(load_one(s).map_err(|e| format!("jwt key {:?}: {e}", s.kid))?);
        }
        let jwks = serde_json::to_vec(&serde_json::json!({ "keys": keys.iter().map(|k| &k.jwk).collect::<Vec<_>>() }))
            .expect("JSON values serialise");
        Ok(KeySet { keys, jwks: jwks.into() })
    }
}

fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The DER of the first PKCS#8 private key (`private`) or SPKI public key in a PEM file.
fn pem_der(pem: &[u8], private: bool, path: &Path) -> Result<Vec<u8>, String> {
    use rustls_pemfile::Item;
    for item in rustls_pemfile::read_all(&mut &pem[..]) {
        match (item.map_err(|e| format!("{}: {e}", path.display()))?, private) {
            (Item::Pkcs8Key(k), true) => return Ok(k.secret_pkcs8_der().to_vec()),
            (Item::SubjectPublicKeyInfo(k), false) => return Ok(k.as_ref().to_vec()),
            _ => {}
        }
    }
    let want = if private { "PRIVATE KEY (PKCS#8)" } else { "PUBLIC KEY (SPKI)" };
    Err(format!("{}: no {want} block", path.display()))
}

fn load_one(s: &KeySource) -> Result<Key, String> {
    let (public, encoding) = match (&s.private_key_file, &s.public_key_file) {
        (Some(path), None) => {
            let pem = read_pem(path)?;
            let der = pem_der(&pem, true, path)?;
            let (public, encoding) = match s.algorithm {
                Alg::EdDsa => {
                    let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                        .map_err(|e| format!("{}: not a PKCS#8 Ed25519 private key ({e})", path.display()))?;
                    let enc = EncodingKey::from_ed_der(&der);
                    (ring::signature::KeyPair::public_key(&pair).as_ref().to_vec(), enc)
                }
                Alg::Es256 => {
                    let rng = ring::rand::SystemRandom::new();
                    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
                        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                        &der,
                        &rng,
                    )
                    .map_err(|e| format!("{}: not a PKCS#8 P-256 private key ({e})", path.display()))?;
                    let enc = EncodingKey::from_ec_der(&der);
                    (ring::signature::KeyPair::public_key(&pair).as_ref().to_vec(), enc)
                }
            };
            (public, Some(encoding))
        }
        (None, Some(path)) => {
            let pem = read_pem(path)?;
            let der = pem_der(&pem, false, path)?;
            // SPKI ends with the raw key: 32 bytes for Ed25519, the 65-byte point for P-256.
            let n = match s.algorithm {
                Alg::EdDsa => 32,
                Alg::Es256 => 65,
            };
            if der.len() < n + 10 {
                return Err(format!("{}: not an SPKI public key for {:?}", path.display(), s.algorithm));
            }
            (der[der.len() - n..].to_vec(), None)
        }
        _ => return Err("give exactly one of private_key_file or public_key_file".into()),
    };
    let (decoding, jwk) = match s.algorithm {
        Alg::EdDsa => {
            if public.len() != 32 {
                return Err("an Ed25519 public key is 32 bytes".into());
            }
            let x = B64.encode(&public);
            let dec = DecodingKey::from_ed_components(&x).map_err(|e| e.to_string())?;
            let jwk =
                serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": s.kid, "alg": "EdDSA", "use": "sig"});
            (dec, jwk)
        }
        Alg::Es256 => {
            if public.len() != 65 || public[0] != 4 {
                return Err("a P-256 public key is an uncompressed 65-byte point".into());
            }
            let (x, y) = (B64.encode(&public[1..33]), B64.encode(&public[33..]));
            let dec = DecodingKey::from_ec_components(&x, &y).map_err(|e| e.to_string())?;
            let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": s.kid, "alg": "ES256", "use": "sig"});
            (dec, jwk)
        }
    };
    Ok(Key { kid: s.kid.clone(), alg: s.algorithm, encoding, decoding, jwk })
}

/// A fresh Ed25519 private key as PKCS#8 PEM (for the demo and benchmarks; in production
/// `openssl genpkey -algorithm ed25519 -out jwt.pem`).
pub fn generate_ed25519_pem() -> String {
    let rng = ring::rand::SystemRandom::new();
    let der = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("the system RNG works");
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

/// A fresh Ed25519 key written to `jwt.pem` in a directory of its own (gone with the `TempDir`).
#[cfg(test)]
pub(crate) fn ed25519_pem_file() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwt.pem");
    std::fs::write(&path, generate_ed25519_pem()).unwrap();
    (dir, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh Ed25519 key file, offered as a key of `algorithm`.
    fn source(algorithm: Alg) -> (tempfile::TempDir, KeySource) {
        let (dir, path) = ed25519_pem_file();
        (dir, KeySource { kid: "k1".into(), algorithm, private_key_file: Some(path), public_key_file: None })
    }

    #[test]
    fn a_generated_key_loads_signs_and_publishes_its_jwk() {
        let (_dir, src) = source(Alg::EdDsa);
        let set = KeySet::load(&[src]).unwrap();
        assert_eq!(set.signer().unwrap().kid, "k1");
        let jwks: serde_json::Value = serde_json::from_slice(&set.jwks).unwrap();
        assert_eq!(jwks["keys"][0]["kty"], "OKP");
        assert_eq!(jwks["keys"][0]["x"].as_str().unwrap().len(), 43, "32 bytes, base64url");
    }

    #[test]
    fn a_key_of_the_wrong_kind_is_a_clear_error() {
        let (_dir, src) = source(Alg::Es256);
        let e = KeySet::load(&[src]).err().unwrap();
        assert!(e.contains("not a PKCS#8 P-256 private key"), "{e}");
    }
}
