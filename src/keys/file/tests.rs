use super::*;
use std::sync::Arc;

use crate::keys::KeyHash;

fn parse(text: &str, source: &str) -> Result<KeyTable, TableError> {
    super::parse(text, source, &Catalogue::default())
}

fn h(c: char) -> String {
    c.to_string().repeat(64)
}

#[test]
fn a_good_table_loads_with_default_read_scopes() {
    let t =
        parse(&format!("keys:\n  - id: k1\n    hash: {}\n    environment: live\n    clinics: [c1, c2]\n", h('a')), "t")
            .unwrap();
    let r = t.lookup(&KeyHash::from_hex(&h('a')).unwrap()).unwrap();
    assert_eq!(r.clinics.as_deref(), Some("c1,c2"));
    assert_eq!(r.profile.headers.scopes, "interactions:read metrics:read campaigns:read clinics:read");
    assert_eq!(r.profile.headers.environment, "live");
}

#[test]
fn every_key_is_found_by_its_id_and_nothing_else_is() {
    let mut text = String::from("keys:\n");
    for i in 0..2000 {
        text.push_str(&format!("  - id: key_{i}\n    hash: {:064x}\n    environment: live\n", i + 1));
    }
    let t = parse(&text, "t").unwrap();
    for i in 0..2000 {
        assert_eq!(&*t.by_id(&format!("key_{i}")).expect("found").id, format!("key_{i}"));
    }
    assert!(t.by_id("key_2000").is_none());
    assert!(t.by_id("").is_none());
}

#[test]
fn unknown_field_is_an_error_with_a_line_number() {
    let e = parse(&format!("keys:\n  - id: k1\n    hash: {}\n    environment: live\n    scope: [x]\n", h('a')), "t")
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("line 5"), "{msg}");
    assert!(msg.contains("unknown field `scope`"), "{msg}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = format!(
        "keys:\n  - id: k1\n    hash: {a}\n    environment: live\n  - id: k1\n    hash: {a}\n    environment: test\n  - id: k3\n    hash: nothex\n    environment: live\n  - id: k4\n    hash: {b}\n    environment: live\n    scopes: [bad]\n",
        a = h('a'),
        b = h('b')
    );
    let e = parse(&text, "t").unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.problems.len(), 4, "{msg}");
    for want in ["keys[1] (id \"k1\"): duplicate id", "keys[1] (id \"k1\"): duplicate hash", "keys[2]", "keys[3]"] {
        assert!(msg.contains(want), "{want} in {msg}");
    }
}

#[test]
fn a_scope_no_route_knows_is_refused_naming_the_key_in_either_shape() {
    let yaml = format!(
        "keys:\n  - id: k_typo\n    hash: {}\n    environment: live\n    scopes: [\"invoices:raed\"]\n",
        h('a')
    );
    let msg = parse(&yaml, "t").unwrap_err().to_string();
    assert!(msg.contains(r#"keys[0] (id "k_typo"): unknown scope "invoices:raed""#), "{msg}");
    let line = format!(r#"{{"id":"k_typo","hash":"{}","environment":"live","scopes":["invoices:raed"]}}"#, h('a'));
    let msg = parse(&jsonl(&[line]), "t").unwrap_err().to_string();
    assert!(msg.contains(r#"line 1 (id "k_typo"): unknown scope "invoices:raed""#), "{msg}");
    // The same table is fine where the routes require that scope.
    let cat = Catalogue::new(["invoices:raed".to_string()]);
    assert_eq!(super::parse(&yaml, "t", &cat).unwrap().len(), 1);
}

#[test]
fn every_key_holding_an_unknown_scope_is_named_though_they_share_a_profile() {
    let yaml = format!(
        "keys:\n  - id: k1\n    hash: {}\n    environment: live\n    scopes: [\"x:read\"]\n  - id: k2\n    hash: {}\n    environment: live\n    scopes: [\"x:read\"]\n",
        h('a'),
        h('b')
    );
    let e = parse(&yaml, "t").unwrap_err();
    assert_eq!(e.problems.len(), 2, "{e}");
}

#[test]
fn empty_file_is_refused() {
    assert!(parse("  \n", "t").is_err());
    assert_eq!(parse("keys: []\n", "t").unwrap().len(), 0);
}

#[test]
fn truncated_file_is_refused() {
    let full = format!("keys:\n  - id: k1\n    hash: {}\n    environment: live\n", h('a'));
    assert!(parse(&full[..full.len() - 10], "t").is_err());
}

fn jsonl(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn json_lines_tables_load_and_report_lines() {
    let good = jsonl(&[
        "# comment".into(),
        format!(r#"{{"id":"k1","hash":"{}","environment":"live","clinics":["c1"]}}"#, h('a')),
        format!(r#"{{"id":"k2","hash":"{}","environment":"test","type":"full"}}"#, h('b')),
    ]);
    assert_eq!(shape_of(&good), Shape::JsonLines);
    let t = parse(&good, "t").unwrap();
    assert_eq!(t.len(), 2);
    assert!(t.lookup(&KeyHash::from_hex(&h('b')).unwrap()).unwrap().scopes().grants("x:write"));

    let bad = jsonl(&[
        format!(r#"{{"id":"k1","hash":"{}","environment":"live"}}"#, h('a')),
        format!(r#"{{"id":"k1","hash":"{}","environment":"live","scope":[]}}"#, h('c')),
        format!(r#"{{"id":"k1","hash":"{}","environment":"live"}}"#, h('a')),
    ]);
    let msg = parse(&bad, "t").unwrap_err().to_string();
    assert!(msg.contains("line 2: unknown field `scope`"), "{msg}");
    assert!(msg.contains("line 3: duplicate id"), "{msg}");
    assert!(msg.contains("line 3: duplicate hash"), "{msg}");
}

#[test]
fn a_json_lines_table_cut_mid_line_is_refused() {
    let full = format!("{{\"id\":\"k1\",\"hash\":\"{}\",\"environment\":\"live\"}}\n", h('a'));
    assert!(parse(&full[..full.len() - 1], "t").is_err());
    assert!(parse(&full[..full.len() - 5], "t").is_err());
}

#[test]
fn keys_with_the_same_access_share_one_profile() {
    let t = parse(
        &format!(
            "keys:\n  - id: k1\n    hash: {}\n    environment: live\n    clinics: [c1]\n  - id: k2\n    hash: {}\n    environment: live\n    clinics: [c1]\n",
            h('a'),
            h('b')
        ),
        "t",
    )
    .unwrap();
    let a = t.lookup(&KeyHash::from_hex(&h('a')).unwrap()).unwrap();
    let b = t.lookup(&KeyHash::from_hex(&h('b')).unwrap()).unwrap();
    assert!(Arc::ptr_eq(&a.profile, &b.profile));
}

#[test]
fn rendering_round_trips_in_both_shapes() {
    let raw = parse_raw(&format!("keys:\n  - id: k1\n    hash: {}\n    environment: live\n", h('a'))).unwrap();
    for shape in [Shape::Yaml, Shape::JsonLines] {
        let text = render(&raw, shape).unwrap();
        assert_eq!(shape_of(&text), shape);
        assert_eq!(parse(&text, "t").unwrap().len(), 1);
        assert_eq!(parse_raw(&text).unwrap().keys[0].id, "k1");
    }
}
