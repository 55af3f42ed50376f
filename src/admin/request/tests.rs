use super::*;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

fn message(e: ApiError) -> String {
    assert_eq!(e.code(), "INVALID_REQUEST", "{e:?}");
    e.message()
}

#[test]
fn a_create_body_becomes_the_clis_key_spec() {
    let body = br#"{"label":"portal","environment":"test","scopes":["a:read"],"allowed_ips":["10.0.0.1"],
        "expires_at":"2027-01-01T00:00:00Z","clinics":["c1"],"rate_limit":"gold"}"#;
    let (spec, env) = create(body, NOW).unwrap();
    assert_eq!(env, Some(Environment::Test));
    assert_eq!(spec.label, "portal");
    assert_eq!(spec.scopes, Some(vec!["a:read".to_string()]));
    assert_eq!(spec.allowed_ips, vec!["10.0.0.1/32".parse::<IpNet>().unwrap()]);
    assert_eq!(spec.expires_at, Some(datetime!(2027-01-01 0:00 UTC)));
    assert_eq!(spec.clinics, Some(vec!["c1".to_string()]));
}

#[test]
fn every_bad_input_names_its_field() {
    let cases: &[(&[u8], &str)] = &[
        (b"{", "field `body`"),
        (b"[]", "field `body`"),
        (br#"{"label":"x","colour":"red"}"#, "field `colour`"),
        (br#"{}"#, "field `label`"),
        (br#"{"label":"  "}"#, "field `label`"),
        (br#"{"label":"x","scopes":"a:read"}"#, "field `scopes`"),
        (br#"{"label":"x","scopes":[]}"#, "field `scopes`"),
        (br#"{"label":"x","type":"admin"}"#, "field `type`"),
        (br#"{"label":"x","type":"full","scopes":["a:read"]}"#, "field `type`"),
        (br#"{"label":"x","environment":"prod"}"#, "field `environment`"),
        (br#"{"label":"x","allowed_ips":["nope"]}"#, "field `allowed_ips`"),
        (br#"{"label":"x","expires_at":"tomorrow"}"#, "field `expires_at`"),
        (br#"{"label":"x","expires_at":"2020-01-01T00:00:00Z"}"#, "field `expires_at`"),
        (br#"{"label":"x","clinics":null}"#, "field `clinics`"),
    ];
    for (body, field) in cases {
        let m = message(create(body, NOW).unwrap_err());
        assert!(m.contains(field), "{} -> {m}", String::from_utf8_lossy(body));
    }
}

#[test]
fn an_update_tells_absent_from_null() {
    let u = update(br#"{"clinics":null,"expires_at":null}"#, NOW).unwrap();
    assert_eq!(u.clinics, Some(None));
    assert_eq!(u.expires_at, Some(None));
    assert_eq!(u.rate_limit, None);
    assert_eq!(u.label, None);
    let u = update(br#"{"rate_limit":"gold","allowed_ips":[]}"#, NOW).unwrap();
    assert_eq!(u.rate_limit, Some(Some("gold".into())));
    assert_eq!(u.allowed_ips, Some(vec![]));
    assert!(message(update(br#"{"environment":"test"}"#, NOW).unwrap_err()).contains("field `environment`"));
}

#[test]
fn rotate_and_revoke_take_an_empty_body() {
    assert_eq!(rotate(b"").unwrap(), Duration::from_secs(86_400));
    assert_eq!(rotate(br#"{"grace":"1h"}"#).unwrap(), Duration::from_secs(3600));
    assert!(message(rotate(br#"{"grace":"soon"}"#).unwrap_err()).contains("field `grace`"));
    assert_eq!(revoke(b"  ").unwrap(), None);
    assert_eq!(revoke(br#"{"reason":"leaked"}"#).unwrap(), Some("leaked".into()));
}

#[test]
fn a_list_query_is_checked_and_defaulted() {
    let q = list(Some("label=port%20al&environment=live&state=active&limit=5&cursor=key_1")).unwrap();
    assert_eq!(q.label.as_deref(), Some("port al"));
    assert_eq!((q.environment, q.limit, q.cursor.as_deref()), (Some(Environment::Live), 5, Some("key_1")));
    assert_eq!(list(None).unwrap().limit, 100);
    for (q, field) in [("limit=0", "limit"), ("limit=x", "limit"), ("state=gone", "state"), ("sort=id", "sort")] {
        assert!(message(list(Some(q)).unwrap_err()).contains(&format!("field `{field}`")), "{q}");
    }
}

#[test]
fn lifecycle_refusals_keep_their_meaning() {
    assert_eq!(refused(LifecycleError::UnknownId("k".into())), ApiError::NotFound("key id"));
    assert_eq!(refused(LifecycleError::Revoked("k".into())).code(), "CONFLICT");
    assert_eq!(refused(LifecycleError::Expired("k".into())).code(), "CONFLICT");
    assert!(refused(LifecycleError::UnknownScope("nope".into())).message().contains("field `scopes`"));
}
