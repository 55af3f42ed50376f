//! The shape of the code, checked: decision modules stay pure (no runtime, sockets, metrics
//! registry, file system or threads outside their tests), and no two top-level modules import
//! each other, directly or around a cycle. A change that breaks either fails here, naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's code without its test module and comments (what ships).
fn shipped(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    code.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The decisions: pure functions over plain data (STYLE.md).
const DECISION_MODULES: &[&str] = &[
    "keys",
    "policy",
    "authn.rs",
    "path",
    "sanitize.rs",
    "framing.rs",
    "head_check.rs",
    "ratelimit",
    "anomaly",
    "jwt/token.rs",
    "client_ip.rs",
    "request_id.rs",
    "authz/request.rs",
    "authz/outcome.rs",
    "admin/access.rs",
    "admin/request.rs",
    "admin/route.rs",
];

const IO: &[&str] = &["tokio::", "hyper::", "hyper_util::", "prometheus::", "std::fs", "std::thread", "std::net::Tcp"];

/// The clock is read at the edges (`clock::Clock`) and passed in, so tests can move it.
const CLOCK_READS: &[&str] = &["Instant::now", "SystemTime::now", "now_utc"];

#[test]
fn decision_modules_do_no_io_and_read_no_clock() {
    let mut offences = Vec::new();
    for module in DECISION_MODULES {
        let path = src().join(module);
        let mut files = Vec::new();
        if path.is_dir() {
            rust_files(&path, &mut files);
        } else {
            files.push(path);
        }
        for file in files {
            let code = shipped(&file);
            for io in IO.iter().chain(CLOCK_READS) {
                if code.contains(io) {
                    offences.push(format!("{} uses {io}", file.strip_prefix(src()).unwrap().display()));
                }
            }
        }
    }
    assert!(offences.is_empty(), "decision modules doing I/O or reading the clock:\n{}", offences.join("\n"));
}

/// Top-level module of a file under src/ (`proxy/admit.rs` -> `proxy`).
fn top_module(path: &Path) -> String {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_string()
}

/// `crate::x` and `crate::{x, y::z}` references in shipped code.
fn imports(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            out.extend(inner.split(',').map(|p| ident(p.trim())).filter(|m| !m.is_empty()));
        } else {
            out.insert(ident(rest));
        }
    }
    out
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = top_module(file);
        let to = imports(&shipped(file));
        deps.entry(from.clone()).or_default().extend(to.into_iter().filter(|m| *m != from));
    }
    // A cycle exists when a module reaches itself.
    let mut cycles = Vec::new();
    for start in deps.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        while let Some((at, trail)) = stack.pop() {
            for next in deps.get(&at).into_iter().flatten() {
                if next == start {
                    cycles.push(format!("{} -> {start}", trail.join(" -> ")));
                } else if seen.insert(next.clone()) {
                    let mut t = trail.clone();
                    t.push(next.clone());
                    stack.push((next.clone(), t));
                }
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_checks_can_fail() {
    // The reader sees both import forms, so a cycle through either is found.
    assert_eq!(
        imports("use crate::a::B;\nuse crate::{c, d::E};\nlet x = crate::f::g();"),
        ["a", "c", "d", "f"].iter().map(|s| s.to_string()).collect()
    );
}
