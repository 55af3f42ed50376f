//! Parsing past serde's first error: the field it refuses is blanked out of the text and the
//! rest parsed again (bounded), so one run reports every syntax and type problem, and what is
//! left can still be validated.

use super::messages;
use super::raw::RawConfig;

/// The raw config, if what is left parses once the refused fields are cut out, and the
/// syntax and type problems met on the way.
pub(super) fn parse_lenient(text: &str) -> (Option<RawConfig>, Vec<String>) {
    let mut text = text.to_string();
    let mut problems: Vec<String> = Vec::new();
    let mut cut: Vec<String> = Vec::new();
    for _ in 0..32 {
        let e = match serde_yaml::from_str::<RawConfig>(&text) {
            Ok(raw) => return (Some(raw), problems),
            Err(e) => e,
        };
        let msg = messages::reword(&e.to_string());
        // A field cut out for being wrong then reads as missing: that was said already.
        if cut.iter().any(|f| msg.contains(&format!("missing field `{f}`"))) {
            break;
        }
        let line = e.location().map(|l| l.line()).filter(|l| *l > 0);
        problems.push(match line {
            Some(l) => format!("line {l}: {msg}"),
            None => msg,
        });
        match line.and_then(|l| cut_block(&text, l)) {
            Some((rest, field)) => {
                cut.push(field);
                text = rest;
            }
            None => break,
        }
    }
    (None, problems)
}

/// `text` with line `line` (1-based) and the lines nested under it blanked (so later errors
/// keep their line numbers), and the key it held; `None` when that line holds no key to cut (a
/// syntax error, say).
fn cut_block(text: &str, line: usize) -> Option<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let at = *lines.get(line - 1)?;
    let indent = at.len() - at.trim_start().len();
    let body = at.trim_start().trim_start_matches("- ");
    let field = body.split_once(':')?.0.trim().trim_matches(['"', '\'']).to_string();
    let nested = |l: &&&str| l.trim().is_empty() || l.len() - l.trim_start().len() > indent;
    let end = line + lines[line..].iter().take_while(nested).count();
    // An item's dash stays, so the list keeps its shape.
    let dash = format!("{}- {{}}", " ".repeat(indent));
    let first = if at.trim_start().starts_with("- ") { dash.as_str() } else { "" };
    let out: Vec<&str> = lines[..line - 1]
        .iter()
        .copied()
        .chain(std::iter::once(first))
        .chain(std::iter::repeat_n("", end - line))
        .chain(lines[end..].iter().copied())
        .collect();
    Some((out.join("\n") + "\n", field))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    const GOOD: &str = "environment: live\nupstream:\n  url: http://127.0.0.1:3000\nkeys:\n  file: k.yaml\n";

    #[test]
    fn each_refused_field_is_reported_on_its_own_line() {
        let text = format!("{GOOD}listn: x\nlimits:\n  max_headers: many\n  max_connections: -1\n");
        let (raw, problems) = super::parse_lenient(&text);
        assert!(raw.is_some(), "what is left parses: {problems:?}");
        let lines: Vec<&str> = problems.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(lines, ["line 6", "line 8", "line 9"], "{problems:?}");
    }

    proptest! {
        /// Whatever the text, parsing ends (bounded retries), never panics, and a problem is
        /// reported whenever no config comes out.
        #[test]
        fn never_panics_and_never_fails_silently(lines in prop::collection::vec("[ a-z_:\\-\\[\\]{}0-9\"é]{0,30}", 0..12)) {
            let text = format!("{GOOD}{}\n", lines.join("\n"));
            let (raw, problems) = super::parse_lenient(&text);
            prop_assert!(raw.is_some() || !problems.is_empty());
            let _ = crate::config::parse_all(&text);
        }
    }
}
