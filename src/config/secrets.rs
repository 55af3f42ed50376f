//! Settings that carry a secret (the Redis URL with its password, the webhook URL with its
//! token, the database URL) can be written inline or read from a file with the same name plus
//! `_file`, so in Kubernetes they come from a mounted Secret rather than the ConfigMap. Read
//! once at start. Neither the value nor the file's text ever appears in a problem.

use super::Check;

/// The value of `field`, inline or from `field_file` (trailing newline dropped); `None` when
/// neither is given or the one given is unusable (the problem is recorded).
pub(super) fn inline_or_file(c: &mut Check, field: &str, inline: Option<&str>, file: Option<&str>) -> Option<String> {
    match (inline, file) {
        (Some(_), Some(_)) => {
            c.0.push(format!("{field}: give {field} or {field}_file, not both"));
            None
        }
        (Some(v), None) => Some(v.to_string()),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) if text.trim().is_empty() => {
                c.0.push(format!("{field}_file: {path} is empty"));
                None
            }
            Ok(text) => Some(text.trim_end_matches(['\n', '\r']).to_string()),
            Err(e) => {
                c.0.push(format!("{field}_file: cannot read {path}: {e}"));
                None
            }
        },
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_file_both_and_neither() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("url");
        std::fs::write(&p, "redis://:s3cret@r:6379\n").unwrap();
        let path = p.to_str().unwrap();
        let mut c = Check(Vec::new());
        assert_eq!(inline_or_file(&mut c, "x.url", Some("v"), None).as_deref(), Some("v"));
        assert_eq!(inline_or_file(&mut c, "x.url", None, Some(path)).as_deref(), Some("redis://:s3cret@r:6379"));
        assert_eq!(inline_or_file(&mut c, "x.url", None, None), None);
        assert!(c.0.is_empty());
        assert_eq!(inline_or_file(&mut c, "x.url", Some("v"), Some(path)), None);
        assert_eq!(inline_or_file(&mut c, "x.url", None, Some("/nonexistent/url")), None);
        std::fs::write(&p, "\n").unwrap();
        assert_eq!(inline_or_file(&mut c, "x.url", None, Some(path)), None);
        assert_eq!(c.0.len(), 3, "{:?}", c.0);
        assert!(c.0.iter().all(|p| !p.contains("s3cret")));
    }
}
