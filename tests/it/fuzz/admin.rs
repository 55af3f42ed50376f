//! The admin key API's body and query parsers: whatever the bytes, each answers a value or a
//! 400 `INVALID_REQUEST` naming a field, and never panics.

use keygate::admin::request;
use time::macros::datetime;

use super::{mutate, Edit, ITERATIONS, TIME};

const SEEDS: &[&str] = &[
    r#"{"label":"portal","environment":"live","scopes":["interactions:read"],"clinics":["c1"],"allowed_ips":["10.0.0.0/8"],"expires_at":"2027-01-01T00:00:00Z","rate_limit":"gold"}"#,
    r#"{"label":"x","type":"full","clinics":null,"expires_at":null,"rate_limit":null,"allowed_ips":[]}"#,
    r#"{"grace":"1h","reason":"leaked"}"#,
    "label=a%20b&environment=test&state=active&limit=10&cursor=key_1",
];

fn check(input: &str) {
    let now = datetime!(2026-06-01 12:00 UTC);
    let b = input.as_bytes();
    let refusals = [
        request::create(b, now).err(),
        request::update(b, now).err(),
        request::rotate(b).err(),
        request::revoke(b).err(),
        request::list(Some(input)).err(),
    ];
    for e in refusals.into_iter().flatten() {
        assert_eq!(e.code(), "INVALID_REQUEST", "{input:?}: {e:?}");
        assert!(e.message().contains("field `"), "{input:?}: {}", e.message());
    }
}

#[test]
fn admin_bytes() {
    bolero::check!(name = "admin_bytes").with_iterations(ITERATIONS).with_test_time(TIME).for_each(|bytes: &[u8]| {
        check(&String::from_utf8_lossy(bytes));
    });
}

#[test]
fn admin_props() {
    bolero::check!(name = "admin_props")
        .with_iterations(ITERATIONS)
        .with_test_time(TIME)
        .with_type::<(u8, Vec<Edit>)>()
        .for_each(|(seed, edits)| {
            check(&mutate(SEEDS[usize::from(*seed) % SEEDS.len()], &edits[..edits.len().min(8)]));
        });
}
