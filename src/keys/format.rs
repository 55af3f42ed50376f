//! The shape of a key (`<prefix><base62 body>`), checked before any lookup so that garbage and
//! keys of the wrong environment never cost a hash or a table probe.

use super::Environment;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFormat {
    /// Longest prefix first, so that overlapping prefixes resolve to the most specific.
    pub prefixes: Vec<(String, Environment)>,
    pub min_body_len: usize,
    pub max_body_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatError {
    UnknownPrefix,
    BadLength,
    BadCharacter,
}

impl Default for KeyFormat {
    fn default() -> Self {
        KeyFormat {
            prefixes: vec![("dpl_live_".to_string(), Environment::Live), ("dpl_test_".to_string(), Environment::Test)],
            min_body_len: 32,
            max_body_len: 64,
        }
    }
}

impl KeyFormat {
    pub fn new(mut prefixes: Vec<(String, Environment)>, min_body_len: usize, max_body_len: usize) -> Self {
        prefixes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        KeyFormat { prefixes, min_body_len, max_body_len }
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
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "abcdefghijklmnopqrstuvwxyzABCDEF";

    #[test]
    fn live_and_test_prefixes_map_to_their_environment() {
        let f = KeyFormat::default();
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
        let f = KeyFormat::default();
        let bad = format!("dpl_live_{}-", &BODY[1..]);
        assert_eq!(f.check(&bad), Err(FormatError::BadCharacter));
    }

    #[test]
    fn longest_prefix_wins() {
        let f = KeyFormat::new(vec![("k_".into(), Environment::Live), ("k_t_".into(), Environment::Test)], 4, 8);
        assert_eq!(f.check("k_t_abcd"), Ok(Environment::Test));
        assert_eq!(f.check("k_abcdef"), Ok(Environment::Live));
    }
}
