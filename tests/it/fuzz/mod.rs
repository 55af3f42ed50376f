//! Fuzz and property targets for the parsers and hygiene that see hostile input: header
//! sanitising, bearer and key format, key tables, config, JWTs. Each area has a byte-level
//! target (`<area>_bytes`: the input read as text, a readable corpus in `__fuzz__/<name>/corpus/`
//! replayed on every run, and what libFuzzer mutates under `cargo bolero test`) and a structured
//! one (`<area>_props`: values built from the interesting pieces, so plain `cargo test` reaches
//! the cases random bytes would not). Under `cargo test` each is bounded by `ITERATIONS` and
//! `TIME`; under `cargo bolero test` it runs until stopped.

use std::time::Duration;

mod admin;
mod config;
mod credits;
mod headers;
mod jwt;
mod keys;
mod table;

/// Generated inputs per target under plain `cargo test` (the corpus is replayed on top).
const ITERATIONS: usize = 3000;
/// And never longer than this, on a slow or busy machine.
const TIME: Duration = Duration::from_millis(1500);

/// One edit of a seed text: what a fuzzer's mutator does, as plain data a generator can make.
/// `at` is taken modulo the text's length; `arg` picks a byte or a dictionary token.
pub type Edit = (u16, u8, u16);

/// Tokens that change meaning in the formats under test (YAML, JSON, JWT, headers).
const DICTIONARY: &[&str] = &[
    "\n",
    ": ",
    "- ",
    "#",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\"",
    "'",
    "~",
    "null",
    "0",
    "-1",
    "1e999",
    "99999999999999999999",
    "&a ",
    "*a",
    "<<: *a\n",
    "!!binary ",
    "\t",
    "\r\n",
    "  ",
    ".",
    "=",
    "%00",
    "\u{fffd}",
    "é",
    "\u{0}",
    "true",
    "no",
    "eyJ",
    "_",
    "-",
];

/// Applies `edits` to `seed` in order: replace a byte, delete a run, insert a byte or a
/// dictionary token, duplicate or drop a line. Works on bytes; the result is read back lossily
/// (the targets are about text, and the byte-level targets cover invalid UTF-8).
pub fn mutate(seed: &str, edits: &[Edit]) -> String {
    let mut b = seed.as_bytes().to_vec();
    for &(at, op, arg) in edits {
        let at = if b.is_empty() { 0 } else { at as usize % b.len() };
        match op % 6 {
            0 if !b.is_empty() => b[at] = arg as u8,
            1 => {
                let end = (at + 1 + arg as usize % 16).min(b.len());
                b.drain(at..end);
            }
            2 => b.insert(at, arg as u8),
            3 => {
                let tok = DICTIONARY[arg as usize % DICTIONARY.len()].as_bytes();
                b.splice(at..at, tok.iter().copied());
            }
            4 | 5 => {
                let start = b[..at].iter().rposition(|c| *c == b'\n').map_or(0, |i| i + 1);
                let end = b[at..].iter().position(|c| *c == b'\n').map_or(b.len(), |i| at + i + 1);
                let line: Vec<u8> = b[start..end].to_vec();
                if op % 6 == 4 {
                    b.splice(end..end, line);
                } else {
                    b.drain(start..end);
                }
            }
            _ => {}
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

#[test]
fn mutate_edits_as_documented() {
    assert_eq!(mutate("abc", &[(1, 0, b'X' as u16)]), "aXc");
    assert_eq!(mutate("abcdef", &[(1, 1, 1)]), "adef");
    assert_eq!(mutate("ab", &[(1, 2, b'-' as u16)]), "a-b");
    assert_eq!(mutate("ab", &[(1, 3, 1)]), "a: b");
    assert_eq!(mutate("a\nb\n", &[(2, 4, 0)]), "a\nb\nb\n");
    assert_eq!(mutate("a\nb\n", &[(0, 5, 0)]), "b\n");
    assert_eq!(mutate("", &[(7, 0, 1), (7, 1, 1), (7, 4, 0)]), "");
}
