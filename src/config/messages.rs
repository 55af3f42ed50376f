//! Problems as an operator reads them: serde's messages without Rust type names (`expected
//! usize` → "expected a whole number"), an unknown key with the nearest valid name, and the
//! line of every problem the text can place.

use super::locate;

/// serde's wording for a type, and what to say instead.
const TYPE_WORDS: [(&str, &str); 14] = [
    ("usize", "a whole number (0 or more)"),
    ("u64", "a whole number (0 or more)"),
    ("u32", "a whole number (0 or more)"),
    ("u16", "a whole number (0 or more)"),
    ("u8", "a whole number (0 or more)"),
    ("i64", "a whole number"),
    ("i32", "a whole number"),
    ("f64", "a number"),
    ("f32", "a number"),
    ("a boolean", "true or false"),
    ("a sequence", "a list"),
    ("a string", "text"),
    ("a map", "a mapping (indented `key: value` lines)"),
    ("option", "a value"),
];

/// One of serde_yaml's messages, reworded: no type names, no trailing position (the caller
/// puts the line first), and for an unknown key or value the nearest allowed name.
pub fn reword(msg: &str) -> String {
    let msg = match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains(" column ") => &msg[..i],
        _ => msg,
    };
    for what in ["unknown field", "unknown variant"] {
        if let Some(text) = unknown(msg, what) {
            return text;
        }
    }
    let Some((head, expected)) = msg.rsplit_once(", expected ") else { return msg.to_string() };
    let word = if expected.starts_with("struct ") || expected.starts_with("enum ") {
        "a mapping (indented `key: value` lines)".to_string()
    } else {
        TYPE_WORDS.iter().find(|(t, _)| *t == expected).map_or_else(|| expected.to_string(), |(_, w)| w.to_string())
    };
    format!("{head}, expected {word}")
}

/// "unknown field `listn`, expected one of `environment`, `listen`" → "unknown field `listn`
/// (did you mean `listen`?)", or the allowed names when none is close.
fn unknown(msg: &str, what: &str) -> Option<String> {
    let at = msg.find(what)?;
    let (prefix, rest) = msg.split_at(at);
    let name = rest.split('`').nth(1)?;
    let allowed: Vec<&str> = match rest.split_once("expected ") {
        Some((_, list)) => list.split('`').skip(1).step_by(2).collect(),
        None => Vec::new(),
    };
    let near =
        allowed.iter().map(|a| (strsim::levenshtein(a, name), *a)).filter(|(d, a)| *d <= 2.max(a.len() / 3)).min();
    let hint = match (near, allowed.is_empty()) {
        (Some((_, a)), _) => format!(" (did you mean `{a}`?)"),
        (None, false) => format!(" (allowed here: {})", allowed.join(", ")),
        (None, true) => " (nothing is allowed here)".to_string(),
    };
    Some(format!("{prefix}{what} `{name}`{hint}"))
}

/// "field: message" → "line N: field: message" when the text shows where `field` is.
pub fn with_line(text: &str, problem: String) -> String {
    let field = problem.split_once(": ").map(|(f, _)| f).unwrap_or("");
    match locate::parse_path(field).and_then(|p| locate::line_of(text, &p)) {
        Some(line) => format!("line {line}: {problem}"),
        None => problem,
    }
}

/// Problems in file order: those with a line by line, the rest after them as they came.
pub fn sort_by_line(problems: &mut [String]) {
    let line = |p: &String| p.strip_prefix("line ").and_then(|r| r.split(':').next()?.parse::<usize>().ok());
    problems.sort_by_key(|p| line(p).unwrap_or(usize::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_become_words() {
        assert_eq!(
            reword("limits.max_connections: invalid type: string \"lots\", expected usize at line 8 column 20"),
            "limits.max_connections: invalid type: string \"lots\", expected a whole number (0 or more)"
        );
        assert_eq!(
            reword("upstream: invalid type: sequence, expected struct RawUpstream at line 2 column 11"),
            "upstream: invalid type: sequence, expected a mapping (indented `key: value` lines)"
        );
        assert_eq!(
            reword("x: invalid type: string \"maybe\", expected a boolean"),
            "x: invalid type: string \"maybe\", expected true or false"
        );
    }

    #[test]
    fn an_unknown_name_gets_the_nearest_allowed_one() {
        assert_eq!(
            reword("unknown field `listn`, expected one of `environment`, `listen`, `admin_listen` at line 2 column 1"),
            "unknown field `listn` (did you mean `listen`?)"
        );
        assert_eq!(
            reword("log: unknown field `colour`, expected `format` or `level`"),
            "log: unknown field `colour` (allowed here: format, level)"
        );
        assert_eq!(
            reword("k: unknown variant `ful`, expected one of `read_only`, `write`, `full`"),
            "k: unknown variant `ful` (did you mean `full`?)"
        );
    }

    #[test]
    fn lines_are_added_where_the_field_is_found() {
        let text = "environment: live\nlimits:\n  max_header_bytes: 10\n";
        assert_eq!(
            with_line(text, "limits.max_header_bytes: must be at least 8192".into()),
            "line 3: limits.max_header_bytes: must be at least 8192"
        );
        assert_eq!(with_line(text, "jwt.keys: missing".into()), "jwt.keys: missing");
    }
}
