//! Key table parsing, YAML and JSON Lines: never panics, never half-loads. A table either
//! loads whole (every entry the text holds is in it, found by id and hash) or is refused, and
//! a valid table with one corrupt entry is refused naming that entry, never served smaller.
//! Streaming a file (`load`) and parsing its text (`parse`) agree.

use std::io::{Seek as _, Write as _};

use keygate::keys::file::{parse, parse_raw};
use keygate::keys::{Catalogue, KeyHash};

use super::{mutate, Edit, ITERATIONS, TIME};

const SOURCE: &str = "fuzz.keys";

/// What any text must satisfy; `file`, scratch space for the streaming loader, when it is to be
/// compared too (a file per input costs more than the parse).
fn check_text(text: &str, file: Option<&mut tempfile::NamedTempFile>) {
    let parsed = parse(text, SOURCE, &Catalogue::default());
    match &parsed {
        Ok(t) => {
            let raw = parse_raw(text).unwrap_or_else(|e| panic!("loaded, yet its entries do not read: {e}\n{text}"));
            assert_eq!(t.len(), raw.keys.len(), "entries lost:\n{text}");
            for k in &raw.keys {
                let r = t.by_id(&k.id).unwrap_or_else(|| panic!("{} missing:\n{text}", k.id));
                assert_eq!(Some(r.hash), KeyHash::from_hex(&k.hash).ok(), "{} has another hash", k.id);
            }
        }
        Err(e) => {
            assert!(!e.problems.is_empty(), "refused for no reason:\n{text}");
            assert!(e.to_string().starts_with(&format!("key table {SOURCE} is invalid:")), "{e}");
        }
    }
    let Some(file) = file else { return };
    rewrite(file, text.as_bytes());
    let loaded = keygate::store::table_file::load(file.path(), &Catalogue::default());
    assert_eq!(
        loaded.as_ref().map(|t| t.len()).map_err(|_| ()),
        parsed.as_ref().map(|t| t.len()).map_err(|_| ()),
        "load and parse disagree: {:?}\n{text}",
        loaded.err().map(|e| e.to_string())
    );
}

/// In memory where the system has it: a file rewritten per input costs more on a disk.
fn scratch() -> tempfile::NamedTempFile {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(f) = tempfile::NamedTempFile::new_in(shm) {
            return f;
        }
    }
    tempfile::NamedTempFile::new().unwrap()
}

fn rewrite(file: &mut tempfile::NamedTempFile, bytes: &[u8]) {
    let f = file.as_file_mut();
    f.set_len(0).unwrap();
    f.rewind().unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn table_bytes() {
    let mut file = scratch();
    bolero::check!(name = "table_bytes").with_iterations(ITERATIONS).with_test_time(TIME).for_each(|bytes: &[u8]| {
        match std::str::from_utf8(bytes) {
            Ok(text) => check_text(text, Some(&mut file)),
            // Not UTF-8: refused, never a panic (the loader reads bytes; parse sees text).
            Err(_) => {
                rewrite(&mut file, bytes);
                assert!(
                    keygate::store::table_file::load(file.path(), &Catalogue::default()).is_err(),
                    "a table that is not UTF-8 loaded"
                );
            }
        }
    });
}

/// One entry's fields, as `(yaml, json)` values; `None` leaves a field out.
struct Entry {
    fields: Vec<(&'static str, String, String)>,
}

impl Entry {
    /// A valid entry; `pick` chooses among the optional fields.
    fn valid(i: usize, pick: u8) -> Entry {
        let mut e = Entry { fields: Vec::new() };
        e.set("id", format!("k{i}"), format!("\"k{i}\""));
        e.set("hash", format!("{:064x}", i + 1), format!("\"{:064x}\"", i + 1));
        let env = if pick & 1 == 0 { "live" } else { "test" };
        e.set("environment", env.into(), format!("\"{env}\""));
        if pick & 2 != 0 {
            e.set("scopes", "[interactions:read, metrics:*]".into(), r#"["interactions:read","metrics:*"]"#.into());
        } else if pick & 4 != 0 {
            e.set("type", "write".into(), "\"write\"".into());
        }
        if pick & 8 != 0 {
            e.set("clinics", "[clinic_001, c.2]".into(), r#"["clinic_001","c.2"]"#.into());
        }
        if pick & 16 != 0 {
            e.set("not_before", "2026-01-01T00:00:00Z".into(), "\"2026-01-01T00:00:00Z\"".into());
            e.set("expires_at", "2027-01-01T00:00:00Z".into(), "\"2027-01-01T00:00:00Z\"".into());
        }
        if pick & 32 != 0 {
            e.set("allowed_ips", "[10.0.0.0/8, \"2001:db8::/32\"]".into(), r#"["10.0.0.0/8","2001:db8::/32"]"#.into());
        }
        if pick & 64 != 0 {
            e.set("label", "\"Praxis Müller: #1\"".into(), r#""Praxis Müller: #1""#.into());
        }
        e
    }

    fn set(&mut self, k: &'static str, yaml: String, json: String) {
        self.fields.retain(|(f, _, _)| *f != k);
        self.fields.push((k, yaml, json));
    }

    /// Makes this entry invalid, one way of many; `other` is another entry's index (or none).
    fn corrupt(&mut self, how: u8, other: Option<usize>) {
        let s = |v: &str| (v.to_string(), format!("\"{v}\""));
        let (k, (y, j)): (&'static str, (String, String)) = match (how % 14, other) {
            (0, _) => ("hash", s(&"a".repeat(63))),
            (1, _) => ("hash", s(&format!("g{}", "a".repeat(63)))),
            (2, _) => ("id", s("k 1!")),
            (3, Some(o)) => ("id", s(&format!("k{o}"))),
            (3, None) => ("id", ("\"\"".into(), "\"\"".into())),
            (4, Some(o)) => ("hash", s(&format!("{:064x}", o + 1))),
            (4, None) => ("hash", s(&"a".repeat(65))),
            (5, _) => ("scope", ("[x]".into(), "[\"x\"]".into())),
            (6, _) => ("environment", s("prod")),
            (7, _) => ("scopes", ("[]".into(), "[]".into())),
            (8, _) => ("scopes", ("[Not A Scope]".into(), "[\"Not A Scope\"]".into())),
            (9, _) => ("clinics", ("[]".into(), "[]".into())),
            (10, _) => ("clinics", ("[\"bad clinic!\"]".into(), "[\"bad clinic!\"]".into())),
            (11, _) => {
                self.set("expires_at", "2026-01-01T00:00:00Z".into(), "\"2026-01-01T00:00:00Z\"".into());
                ("not_before", s("2026-01-01T00:00:00Z"))
            }
            (12, _) => {
                self.set("type", "full".into(), "\"full\"".into());
                ("scopes", ("[\"*\"]".into(), "[\"*\"]".into()))
            }
            _ => ("allowed_ips", ("[300.1.1.1/8]".into(), "[\"300.1.1.1/8\"]".into())),
        };
        self.set(k, y, j);
    }

    fn yaml(&self) -> String {
        let mut out = String::new();
        for (n, (k, v, _)) in self.fields.iter().enumerate() {
            out.push_str(if n == 0 { "  - " } else { "    " });
            out.push_str(&format!("{k}: {v}\n"));
        }
        out
    }

    fn json(&self) -> String {
        let body: Vec<String> = self.fields.iter().map(|(k, _, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}\n", body.join(","))
    }
}

fn render(entries: &[Entry], yaml: bool) -> String {
    let mut out = String::from("# keygate key table\n");
    if yaml {
        out.push_str("keys:\n");
    }
    for e in entries {
        out.push_str(&if yaml { e.yaml() } else { e.json() });
    }
    out
}

#[test]
fn table_props() {
    let mut file = scratch();
    bolero::check!(name = "table_props")
        .with_iterations(ITERATIONS)
        .with_test_time(TIME)
        .with_type::<(bool, Vec<u8>, u8, u8, Vec<Edit>)>()
        .for_each(|(yaml, picks, bad, how, edits)| {
            let picks = if picks.is_empty() { vec![0] } else { picks[..picks.len().min(6)].to_vec() };
            let mut entries: Vec<Entry> = picks.iter().enumerate().map(|(i, p)| Entry::valid(i, *p)).collect();
            let text = render(&entries, *yaml);
            let t = parse(&text, SOURCE, &Catalogue::default()).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(t.len(), entries.len());
            check_text(&text, None);

            // One corrupt entry among good ones: the whole table is refused, naming that entry.
            let bad = *bad as usize % entries.len();
            let other = (entries.len() > 1).then(|| (bad + 1) % entries.len());
            entries[bad].corrupt(*how, other);
            let text = render(&entries, *yaml);
            let e = parse(&text, SOURCE, &Catalogue::default())
                .err()
                .unwrap_or_else(|| panic!("a corrupt entry was accepted:\n{text}"));
            let msg = e.to_string();
            // Each entry is on its own line in JSON Lines; YAML names it by index or line.
            let line = |n: usize| format!("line {n}");
            let index = |n: usize| format!("keys[{n}]");
            let named = if *yaml {
                msg.contains(&index(bad)) || other.is_some_and(|o| msg.contains(&index(o))) || msg.contains("line ")
            } else {
                msg.contains(&line(bad + 2)) || other.is_some_and(|o| msg.contains(&line(o + 2)))
            };
            assert!(named, "{msg}\n{text}");
            check_text(&text, None);

            // And whatever the edits make of it: whole or refused.
            check_text(&mutate(&text, edits), Some(&mut file));
        });
}
