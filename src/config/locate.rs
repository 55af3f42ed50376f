//! Finds the line of a field in the YAML text, for problems found after parsing (serde_yaml
//! gives positions only for syntax and type errors, and its `Value` keeps none). A small
//! indentation walker over block-style YAML: `routes[2].methods` is the `methods:` key inside
//! the third item of `routes:`. Where the path goes deeper than the text shows (a flow-style
//! `[a, b]` value), the line of the deepest part found is the answer.

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// `routes[2] (/api/v1/x).methods` → [routes, 2, methods]: the text problems name their fields
/// in, with any ` (…)` note on a step dropped. `None` when there is no path to follow.
pub fn parse_path(field: &str) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    let mut rest = field.trim();
    while !rest.is_empty() {
        let end = rest.find(['.', '[', ' ']).unwrap_or(rest.len());
        let (name, tail) = rest.split_at(end);
        if !name.is_empty() {
            steps.push(Step::Key(name.to_string()));
        }
        rest = tail;
        loop {
            if let Some(t) = rest.strip_prefix('[') {
                let (n, after) = t.split_once(']')?;
                steps.push(Step::Index(n.parse().ok()?));
                rest = after;
            } else if let Some(t) = rest.strip_prefix(" (") {
                rest = &t[t.find(')')? + 1..];
            } else {
                break;
            }
        }
        match rest.strip_prefix('.') {
            Some(t) => rest = t,
            None if rest.is_empty() => {}
            None => return None,
        }
    }
    (!steps.is_empty()).then_some(steps)
}

/// A key or a sequence dash, at its column, on its 1-based line.
#[derive(Debug)]
struct Node {
    line: usize,
    col: usize,
    key: Option<String>,
}

fn nodes(text: &str) -> Vec<Node> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let mut col = raw.len() - raw.trim_start_matches(' ').len();
        let mut rest = &raw[col..];
        if rest.is_empty() || rest.starts_with('#') || rest.starts_with("---") {
            continue;
        }
        // `- - key: v`: each dash opens an item, the key sits after the last one.
        while rest == "-" || rest.starts_with("- ") {
            out.push(Node { line: n + 1, col, key: None });
            let after = rest[1..].trim_start_matches(' ');
            col += rest.len() - after.len();
            rest = after;
        }
        if let Some(key) = key_of(rest) {
            out.push(Node { line: n + 1, col, key: Some(key) });
        }
    }
    out
}

/// The key of a `key: value` or `key:` line (quotes removed), if it is one.
fn key_of(s: &str) -> Option<String> {
    if s.starts_with(['{', '[', '#', '|', '>']) {
        return None;
    }
    let (key, quoted) = match s.chars().next() {
        Some(q @ ('"' | '\'')) => {
            let close = s[1..].find(q)? + 1;
            (&s[1..close], &s[close + 1..])
        }
        _ => {
            let i =
                s.match_indices(':').map(|(i, _)| i).find(|&i| matches!(s.as_bytes().get(i + 1), None | Some(b' ')))?;
            (s[..i].trim_end(), &s[i..])
        }
    };
    (quoted.starts_with(':') && !key.is_empty()).then(|| key.to_string())
}

/// The 1-based line of `path`, or of the deepest part of it the text shows; `None` if not even
/// its first step is there.
pub fn line_of(text: &str, path: &[Step]) -> Option<usize> {
    let all = nodes(text);
    let (mut lo, mut hi) = (0, all.len());
    let mut found = None;
    for step in path {
        let col = all.get(lo..hi)?.first()?.col;
        let at = match step {
            Step::Key(k) => (lo..hi).find(|&i| all[i].col == col && all[i].key.as_deref() == Some(k)),
            Step::Index(n) => (lo..hi).filter(|&i| all[i].col == col && all[i].key.is_none()).nth(*n),
        };
        let Some(i) = at else { break };
        found = Some(all[i].line);
        // What belongs to node i: the nodes after it deeper than it, and for a key, a sequence
        // written at the key's own column.
        let is_key = all[i].key.is_some();
        let end = (i + 1..hi)
            .find(|&j| all[j].col < all[i].col || (all[j].col == all[i].col && !(is_key && all[j].key.is_none())))
            .unwrap_or(hi);
        // A key's sequence at its own column ends where the next key of that column starts.
        (lo, hi) = (i + 1, end);
        if lo >= hi {
            break;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(text: &str, field: &str) -> Option<usize> {
        line_of(text, &parse_path(field).unwrap())
    }

    const CFG: &str = "environment: live\nupstream:\n  url: http://x\n  # a comment\n\n  connect_timeout: 2s\nroutes:\n  - path: /a\n    resource: a\n  - path: /b\n    methods: [GET]\n    clinic:\n      path_param: c\npublic_routes:\n- path: /healthz\n- path: /x\n  methods: [get]\nlimits: {max_headers: 3}\n";

    #[test]
    fn keys_items_and_nesting() {
        assert_eq!(at(CFG, "environment"), Some(1));
        assert_eq!(at(CFG, "upstream.connect_timeout"), Some(6));
        assert_eq!(at(CFG, "routes[1] (/b).methods"), Some(11));
        assert_eq!(at(CFG, "routes[1].clinic.path_param"), Some(13));
        assert_eq!(at(CFG, "routes[0]"), Some(8));
        assert_eq!(at(CFG, "public_routes[1].methods"), Some(17), "a list at its key's own column");
        assert_eq!(at(CFG, "limits.max_headers"), Some(18), "flow style: the enclosing key");
        assert_eq!(at(CFG, "routes[5].methods"), Some(7), "past the text: the deepest part found");
        assert_eq!(at(CFG, "nothing"), None);
    }

    #[test]
    fn paths_as_problems_write_them() {
        use Step::*;
        assert_eq!(
            parse_path("routes[2] (/api/v1/{id}).scopes"),
            Some(vec![Key("routes".into()), Index(2), Key("scopes".into())])
        );
        assert_eq!(
            parse_path("rate_limits.tiers[0].name"),
            Some(vec![Key("rate_limits".into()), Key("tiers".into()), Index(0), Key("name".into())])
        );
        assert_eq!(parse_path("has spaces in it"), None);
        assert_eq!(parse_path(""), None);
    }

    /// A random config-shaped tree, rendered by hand so the line of every field is known.
    #[derive(Debug, Clone)]
    enum Tree {
        Scalar,
        Map(Vec<(String, Tree)>),
        List(Vec<Tree>),
    }

    fn tree() -> impl Strategy<Value = Tree> {
        let leaf = Just(Tree::Scalar);
        leaf.prop_recursive(4, 40, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 1..4).prop_map(Tree::List),
                prop::collection::btree_map("[a-z_]{1,6}", inner, 1..4)
                    .prop_map(|m| Tree::Map(m.into_iter().collect())),
            ]
        })
    }

    /// Renders `t` at `indent`, recording (path, line) of every key and item. Lists under a key
    /// are written at the key's column when `flush` says so, as YAML allows.
    fn render(
        t: &Tree,
        indent: usize,
        path: &mut Vec<Step>,
        out: &mut Vec<String>,
        seen: &mut Vec<(Vec<Step>, usize)>,
        flush: bool,
        noise: &mut impl Iterator<Item = bool>,
    ) {
        let pad = " ".repeat(indent);
        match t {
            Tree::Scalar => {}
            Tree::Map(entries) => {
                for (k, v) in entries {
                    if noise.next().unwrap_or(false) {
                        out.push(format!("{pad}# note"));
                    }
                    path.push(Step::Key(k.clone()));
                    seen.push((path.clone(), out.len() + 1));
                    match v {
                        Tree::Scalar => out.push(format!("{pad}{k}: v")),
                        Tree::Map(_) => {
                            out.push(format!("{pad}{k}:"));
                            render(v, indent + 2, path, out, seen, flush, noise);
                        }
                        Tree::List(_) => {
                            out.push(format!("{pad}{k}:"));
                            render(v, if flush { indent } else { indent + 2 }, path, out, seen, flush, noise);
                        }
                    }
                    path.pop();
                }
            }
            Tree::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(Step::Index(i));
                    seen.push((path.clone(), out.len() + 1));
                    match item {
                        Tree::Scalar => out.push(format!("{pad}- v")),
                        _ => {
                            out.push(format!("{pad}-"));
                            render(item, indent + 2, path, out, seen, flush, noise);
                        }
                    }
                    path.pop();
                }
            }
        }
    }

    proptest! {
        #[test]
        fn every_field_is_found_on_the_line_it_was_written(
            entries in prop::collection::btree_map("[a-z_]{1,6}", tree(), 1..5),
            flush: bool,
            noise in prop::collection::vec(any::<bool>(), 64),
        ) {
            let (mut out, mut seen) = (Vec::new(), Vec::new());
            let root = Tree::Map(entries.into_iter().collect());
            render(&root, 0, &mut Vec::new(), &mut out, &mut seen, flush, &mut noise.into_iter());
            let text = out.join("\n");
            prop_assert!(serde_yaml::from_str::<serde_yaml::Value>(&text).is_ok(), "the test renders YAML:\n{}", text);
            for (path, line) in seen {
                prop_assert_eq!(line_of(&text, &path), Some(line), "{:?} in\n{}", path, text);
            }
        }

        #[test]
        fn never_panics_on_any_text(text in "[ a-z:#\\-\\[\\]{}'\"\n]{0,200}", field in "[a-z\\[\\]0-9. ()]{0,20}") {
            if let Some(p) = parse_path(&field) {
                let _ = line_of(&text, &p);
            }
        }
    }
}
