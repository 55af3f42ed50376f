//! `admin_tokens:`: who may use the admin key API, each token by id, stored as the SHA-256 of
//! the token (never the token), with the scopes it carries. Reloadable, so a token is rotated
//! by adding the new one, moving the caller over, and removing the old one: no restart.

use serde::Deserialize;

use super::check::Check;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdminToken {
    pub id: String,
    pub sha256: String,
    pub scopes: Vec<String>,
}

/// What an admin token may do. `keys:write` does not imply `keys:read`: a billing system that
/// only revokes needs no list of every key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AdminScopes {
    pub read: bool,
    pub write: bool,
}

impl AdminScopes {
    pub const ALL: AdminScopes = AdminScopes { read: true, write: true };

    pub fn parse(list: &[String]) -> Result<AdminScopes, String> {
        let mut s = AdminScopes::default();
        for scope in list {
            match scope.as_str() {
                "keys:read" => s.read = true,
                "keys:write" => s.write = true,
                other => return Err(format!("unknown admin scope {other:?} (known: keys:read, keys:write)")),
            }
        }
        if list.is_empty() {
            return Err("scopes is empty (keys:read, keys:write)".into());
        }
        Ok(s)
    }
}

/// The hash `admin_tokens[].sha256` holds for `token`.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// One configured admin token: its id (logged with every change it makes) and its hash.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminCredential {
    pub id: String,
    pub sha256: [u8; 32],
    pub scopes: AdminScopes,
}

impl std::fmt::Debug for AdminCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminCredential").field("id", &self.id).field("scopes", &self.scopes).finish_non_exhaustive()
    }
}

/// The admin API token, read from a file at start. Its Debug never shows it.
#[derive(Clone)]
pub struct AdminToken(String);

impl AdminToken {
    pub fn new(token: String) -> AdminToken {
        AdminToken(token)
    }

    pub fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        !presented.is_empty() && bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// `admin_token_file`: the single token of old, with every scope (id `admin_token_file`).
pub(super) fn admin_token_file(c: &mut Check, path: Option<&str>) -> Option<AdminToken> {
    let p = path?;
    let read = std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"));
    let token = c.val("admin_token_file", read)?.trim().to_string();
    if token.len() < 16 {
        c.0.push("admin_token_file: the token must be at least 16 characters".into());
        return None;
    }
    Some(AdminToken(token))
}

pub(super) fn admin_tokens(c: &mut Check, raw: &[RawAdminToken]) -> Vec<AdminCredential> {
    let mut out = Vec::new();
    for (i, t) in raw.iter().enumerate() {
        let field = format!("admin_tokens[{i}]");
        if t.id.trim().is_empty() || t.id.len() > 64 || t.id.chars().any(|ch| ch.is_control() || ch == ' ') {
            c.0.push(format!("{field}.id: {:?} must be 1 to 64 characters without spaces", t.id));
        }
        if raw[..i].iter().any(|o| o.id == t.id) {
            c.0.push(format!("{field}.id: {:?} is used twice (ids name the token in the key event log)", t.id));
        }
        let hash = hex::decode(t.sha256.trim()).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
        let hash = c.val(
            &format!("{field}.sha256"),
            hash.ok_or("expected 64 hex digits, the SHA-256 of the token (keygate admin-token prints it)"),
        );
        let scopes = c.val(&format!("{field}.scopes"), AdminScopes::parse(&t.scopes));
        if let (Some(sha256), Some(scopes)) = (hash, scopes) {
            out.push(AdminCredential { id: t.id.clone(), sha256, scopes });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(id: &str, sha: &str, scopes: &[&str]) -> RawAdminToken {
        RawAdminToken { id: id.into(), sha256: sha.into(), scopes: scopes.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn a_good_token_is_kept_with_its_scopes() {
        let mut c = Check(Vec::new());
        let t = admin_tokens(&mut c, &[raw("portal", &"ab".repeat(32), &["keys:read"])]);
        assert!(c.0.is_empty(), "{:?}", c.0);
        assert_eq!(t[0].scopes, AdminScopes { read: true, write: false });
    }

    #[test]
    fn every_problem_names_its_field() {
        let mut c = Check(Vec::new());
        let t = admin_tokens(
            &mut c,
            &[raw("a", "xyz", &["keys:read"]), raw("a", &"ab".repeat(32), &["keys:admin"]), raw("b", "", &[])],
        );
        assert!(t.is_empty());
        let all = c.0.join("\n");
        for needle in
            ["admin_tokens[0].sha256", "admin_tokens[1].id", "admin_tokens[1].scopes", "admin_tokens[2].scopes"]
        {
            assert!(all.contains(needle), "{needle} in {all}");
        }
    }
}
