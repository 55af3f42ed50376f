//! The `keys import --tsv` format: one key issued elsewhere a line, `key<TAB>clinics<TAB>scopes`,
//! clinics comma-separated and scopes space-separated, either empty for the default. Blank lines
//! are skipped; fields past the third are ignored. Pure: the caller hashes and stores.

/// One line of the file. `secret` is the plaintext key: never print it.
#[derive(Clone, PartialEq, Eq)]
pub struct Row {
    /// 1-based, for error messages.
    pub line: usize,
    pub secret: String,
    pub clinics: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
}

impl std::fmt::Debug for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Row")
            .field("line", &self.line)
            .field("secret", &"<redacted>")
            .field("clinics", &self.clinics)
            .field("scopes", &self.scopes)
            .finish()
    }
}

pub fn parse(text: &str) -> Vec<Row> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, line)| {
            let mut f = line.split('\t');
            let (secret, clinics, scopes) = (f.next().unwrap_or(""), f.next().unwrap_or(""), f.next().unwrap_or(""));
            Row { line: n + 1, secret: secret.to_string(), clinics: list(clinics, ','), scopes: list(scopes, ' ') }
        })
        .collect()
}

/// The non-empty trimmed items of `s`, or `None` (the default) when there are none.
fn list(s: &str, sep: char) -> Option<Vec<String>> {
    let v: Vec<String> = s.split(sep).map(str::trim).filter(|x| !x.is_empty()).map(String::from).collect();
    (!v.is_empty()).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fields_lists_and_defaults() {
        let rows = parse("k1\tc1, c2\tinteractions:read metrics:read\n\nk2\t\t\nk3\n");
        assert_eq!(rows.len(), 3);
        assert_eq!((rows[0].line, rows[0].secret.as_str()), (1, "k1"));
        assert_eq!(rows[0].clinics, Some(vec!["c1".to_string(), "c2".to_string()]));
        assert_eq!(rows[0].scopes, Some(vec!["interactions:read".to_string(), "metrics:read".to_string()]));
        assert_eq!((rows[1].line, &rows[1].clinics, &rows[1].scopes), (3, &None, &None));
        assert_eq!((rows[2].line, rows[2].secret.as_str()), (4, "k3"));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let rows = parse("dpl_live_secretsecret\t\t\n");
        assert!(!format!("{rows:?}").contains("secretsecret"));
    }

    fn item() -> impl Strategy<Value = String> {
        "[a-z0-9_:.-]{1,12}"
    }

    proptest! {
        #[test]
        fn never_panics_and_counts_every_non_blank_line(text in "[a-z\t ,\n:]{0,200}") {
            let rows = parse(&text);
            prop_assert_eq!(rows.len(), text.lines().filter(|l| !l.trim().is_empty()).count());
            for r in &rows {
                prop_assert!(!r.secret.contains('\t'));
                prop_assert!(r.clinics.iter().flatten().chain(r.scopes.iter().flatten()).all(|x| !x.is_empty() && x.trim() == x));
            }
        }

        #[test]
        fn what_is_written_is_what_is_read(
            rows in prop::collection::vec((item(), prop::option::of(prop::collection::vec(item(), 1..4)),
                                           prop::option::of(prop::collection::vec(item(), 1..4))), 0..8)
        ) {
            let text: String = rows
                .iter()
                .map(|(s, c, sc)| format!("{s}\t{}\t{}\n", c.as_deref().unwrap_or_default().join(","), sc.as_deref().unwrap_or_default().join(" ")))
                .collect();
            let back = parse(&text);
            prop_assert_eq!(back.len(), rows.len());
            for (i, (r, (s, c, sc))) in back.iter().zip(&rows).enumerate() {
                prop_assert_eq!(r.line, i + 1);
                prop_assert_eq!(&r.secret, s);
                prop_assert_eq!(&r.clinics, c);
                prop_assert_eq!(&r.scopes, sc);
            }
        }
    }
}
