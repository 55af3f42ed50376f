//! The shape of a key (`<prefix><base62 body>`), checked before any lookup so that garbage and
//! keys of the wrong environment never cost a hash or a table probe.

use super::Environment;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFormat {
    /// Longest prefix first, so that overlapping prefixes resolve to the most specific.
    pub prefixes: Vec<(String, Environment)>,
    pub min_body_len: usize,
    pub max_body_len: usize,
    /// Keys end in a CRC32 checksum (as `keygate keys create` makes them). Off only for tables
    /// imported from systems that issued keys without one.
    pub checksum: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatError {
    UnknownPrefix,
    BadLength,
    BadCharacter,
    BadChecksum,
}

impl Default for KeyFormat {
    fn default() -> Self {
        KeyFormat {
            prefixes: vec![("dpl_live_".to_string(), Environment::Live), ("dpl_test_".to_string(), Environment::Test)],
            min_body_len: 32,
            max_body_len: 64,
            checksum: true,
        }
    }
}

/// The prefix new keys of `env` get (the first configured for it).
pub fn prefix_for(prefixes: &[(String, Environment)], env: Environment) -> Option<&str> {
    prefixes.iter().find(|(_, e)| *e == env).map(|(p, _)| p.as_str())
}

impl KeyFormat {
    pub fn new(
        mut prefixes: Vec<(String, Environment)>,
        min_body_len: usize,
        max_body_len: usize,
        checksum: bool,
    ) -> Self {
        prefixes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        KeyFormat { prefixes, min_body_len, max_body_len, checksum }
    }

    /// The environment a well-formed key belongs to.
    pub fn check(&self, key: &str) -> Result<Environment, FormatError> {
        let (body, env) = self
            .prefixes
            .iter()
            .find_map(|(p, env)| key.strip_prefix(p.as_str()).map(|body| (body, *env)))
            .ok_or(FormatError::UnknownPrefix)?;
        if body.len() < self.min_body_len || body.len() > self.max_body_len {
            return Err(FormatError::BadLength);
        }
        if !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(FormatError::BadCharacter);
        }
        if self.checksum && !super::generate::checksum_ok(key) {
            return Err(FormatError::BadChecksum);
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "abcdefghijklmnopqrstuvwxyzABCDEF";

    fn unchecked() -> KeyFormat {
        KeyFormat { checksum: false, ..KeyFormat::default() }
    }

    #[test]
    fn live_and_test_prefixes_map_to_their_environment() {
        let f = unchecked();
        assert_eq!(f.check(&format!("dpl_live_{BODY}")), Ok(Environment::Live));
        assert_eq!(f.check(&format!("dpl_test_{BODY}")), Ok(Environment::Test));
    }

    #[test]
    fn unknown_prefix_is_refused() {
        let f = KeyFormat::default();
        assert_eq!(f.check(&format!("dpl_prod_{BODY}")), Err(FormatError::UnknownPrefix));
        assert_eq!(f.check(&format!("DPL_LIVE_{BODY}")), Err(FormatError::UnknownPrefix));
    }

    #[test]
    fn body_length_is_bounded() {
        let f = KeyFormat::default();
        assert_eq!(f.check("dpl_live_short"), Err(FormatError::BadLength));
        assert_eq!(f.check(&format!("dpl_live_{}", "a".repeat(65))), Err(FormatError::BadLength));
    }

    #[test]
    fn body_must_be_base62() {
        let f = unchecked();
        let bad = format!("dpl_live_{}-", &BODY[1..]);
        assert_eq!(f.check(&bad), Err(FormatError::BadCharacter));
    }

    #[test]
    fn longest_prefix_wins() {
        let f = KeyFormat::new(vec![("k_".into(), Environment::Live), ("k_t_".into(), Environment::Test)], 4, 8, false);
        assert_eq!(f.check("k_t_abcd"), Ok(Environment::Test));
        assert_eq!(f.check("k_abcdef"), Ok(Environment::Live));
    }

    #[test]
    fn checksum_is_verified_when_required() {
        let good = crate::keys::generate::generate("dpl_live_");
        assert_eq!(KeyFormat::default().check(&good), Ok(Environment::Live));
        let mut typo = good.clone();
        typo.replace_range(12..13, if &good[12..13] == "x" { "y" } else { "x" });
        assert_eq!(KeyFormat::default().check(&typo), Err(FormatError::BadChecksum));
        assert_eq!(unchecked().check(&typo), Ok(Environment::Live));
    }
}
