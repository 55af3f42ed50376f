//! Config parsing (`keygate::config::parse`, what `check-config` and every start run): never
//! panics on arbitrary text or on edits of the shipped example (its commented-out blocks
//! switched on too), and a refusal names the file and says at least one thing.

use keygate::config::parse;

use super::{mutate, Edit, ITERATIONS, TIME};

const EXAMPLE: &str = include_str!("../../../config.example.yaml");
const FILE: &str = "fuzz/config.yaml";

fn check(text: &str) {
    // `admin_token_file` and `secret_file` are read while validating: a device path would
    // have the harness read forever. That is the operator's own file to name, not input.
    if text.contains("/dev/") || text.contains("/proc/") || text.contains("/sys/") {
        return;
    }
    if let Err(e) = parse(text, FILE) {
        assert_eq!(e.file, FILE);
        assert!(e.to_string().starts_with(&format!("{FILE}: invalid configuration\n  - ")), "{e}");
        assert!(e.problems.iter().all(|p| !p.trim().is_empty()), "{e}");
    }
}

/// The example with its commented-out blocks switched on: a `# key:` line at the left edge
/// and the indented `#   ...` lines under it lose their `# `.
fn uncommented() -> String {
    let mut out = String::new();
    let mut in_block = false;
    for line in EXAMPLE.lines() {
        let rest = line.strip_prefix("# ");
        let header = rest.is_some_and(|r| {
            r.split_once(':')
                .is_some_and(|(k, _)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        });
        in_block = header || (in_block && rest.is_some_and(|r| r.starts_with("  ")));
        out.push_str(if in_block { rest.unwrap_or(line) } else { line });
        out.push('\n');
    }
    out
}

#[test]
fn the_seeds_are_configs_worth_mutating() {
    parse(EXAMPLE, FILE).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(uncommented(), EXAMPLE);
    // Switched on, the blocks may conflict (a file store and a PostgreSQL one); they must
    // at least read as YAML, or every edit of them would stop at the first line.
    // Semantic problems name their field ("line 39: keys.file: ..."); a YAML syntax error
    // names none.
    if let Err(e) = parse(&uncommented(), FILE) {
        let names_a_field = |p: &str| {
            let rest = p.split_once(": ").map_or(p, |(line, rest)| if line.starts_with("line ") { rest } else { p });
            rest.split(' ').next().is_some_and(|first| first.ends_with(':'))
        };
        assert!(e.problems.iter().all(|p| names_a_field(p)), "{e}");
    }
}

#[test]
fn config_bytes() {
    bolero::check!(name = "config_bytes").with_iterations(ITERATIONS).with_test_time(TIME).for_each(
        |bytes: &[u8]| {
            check(&String::from_utf8_lossy(bytes));
        },
    );
}

#[test]
fn config_props() {
    let seeds = [EXAMPLE.to_string(), uncommented()];
    bolero::check!(name = "config_props")
        .with_iterations(ITERATIONS)
        .with_test_time(TIME)
        .with_type::<(bool, Vec<Edit>)>()
        .for_each(|(on, edits)| {
            let seed = &seeds[usize::from(*on)];
            check(&mutate(seed, &edits[..edits.len().min(8)]));
        });
}
