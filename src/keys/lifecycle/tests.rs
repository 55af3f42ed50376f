use super::*;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

fn spec(label: &str) -> KeySpec {
    KeySpec { label: label.into(), ..KeySpec::default() }
}

fn new_key(t: &mut RawTable, s: KeySpec) -> Result<Created, LifecycleError> {
    create(t, s, Environment::Live, "dpl_live_", &Catalogue::default(), NOW)
}

#[test]
fn create_stores_only_the_hash_and_derives_the_id() {
    let mut t = RawTable::default();
    let c = new_key(&mut t, spec("reporting")).unwrap();
    let text = serde_yaml::to_string(&t).unwrap();
    assert!(!text.contains(&c.secret), "the secret is never stored");
    assert!(text.contains(&KeyHash::of(&c.secret).to_hex()));
    assert_eq!(c.id, key_id(&c.secret));
    assert!(!KeyHash::of(&c.secret).to_hex().contains(&c.id[4..]), "the id is not a slice of the stored hash");
    assert_eq!(t.keys[0].created_at, Some(NOW));
}

#[test]
fn unknown_scope_past_expiry_and_missing_label_change_nothing() {
    let mut t = RawTable::default();
    let bad = [
        KeySpec { scopes: Some(vec!["interactions:delete".into()]), ..spec("x") },
        KeySpec { expires_at: Some(NOW), ..spec("x") },
        spec(" "),
        KeySpec { clinics: Some(vec!["bad clinic".into()]), ..spec("x") },
        KeySpec { key_type: Some(KeyType::Full), scopes: Some(vec!["*".into()]), ..spec("x") },
    ];
    for s in bad {
        assert!(new_key(&mut t, s.clone()).is_err(), "{s:?}");
    }
    assert!(t.keys.is_empty());
}

#[test]
fn custom_route_scopes_are_known_when_the_catalogue_has_them() {
    let mut t = RawTable::default();
    let cat = Catalogue::new(["reports:read".to_string()]);
    let s = KeySpec { scopes: Some(vec!["reports:read".into(), "reports:*".into()]), ..spec("x") };
    assert!(create(&mut t, s, Environment::Live, "dpl_live_", &cat, NOW).is_ok());
}

#[test]
fn revoke_sets_time_and_reason_once() {
    let mut t = RawTable::default();
    let c = new_key(&mut t, spec("x")).unwrap();
    revoke(&mut t, &c.id, Some("leaked".into()), NOW).unwrap();
    assert_eq!(t.keys[0].revoked_at, Some(NOW));
    assert_eq!(t.keys[0].revoke_reason.as_deref(), Some("leaked"));
    let later = NOW + time::Duration::hours(1);
    let again = revoke(&mut t, &c.id, Some("twice".into()), later);
    assert_eq!(again, Ok(Revoked::Already { at: NOW, reason: Some("leaked".into()) }));
    assert_eq!((t.keys[0].revoked_at, t.keys[0].updated_at), (Some(NOW), Some(NOW)), "the first one stands");
    assert_eq!(revoke(&mut t, "nope", None, NOW), Err(LifecycleError::UnknownId("nope".into())));
}

#[test]
fn rotate_links_both_copies_access_and_sets_the_grace_expiry() {
    let mut t = RawTable::default();
    let s = KeySpec {
        scopes: Some(vec!["metrics:read".into()]),
        clinics: Some(vec!["c1".into()]),
        allowed_ips: vec!["10.0.0.0/8".parse().unwrap()],
        expires_at: Some(NOW + time::Duration::days(90)),
        ..spec("billing")
    };
    let old = new_key(&mut t, s).unwrap();
    let later = NOW + time::Duration::days(10);
    let new = rotate(&mut t, &old.id, Duration::from_secs(86400), "dpl_live_", later).unwrap();
    let (o, n) = (&t.keys[0], &t.keys[1]);
    assert_eq!(o.expires_at, Some(later + time::Duration::days(1)));
    assert_eq!(o.rotated_to.as_deref(), Some(new.id.as_str()));
    assert_eq!(n.rotated_from.as_deref(), Some(old.id.as_str()));
    assert_eq!(
        (n.label.as_str(), &n.scopes, &n.clinics, &n.allowed_ips),
        (o.label.as_str(), &o.scopes, &o.clinics, &o.allowed_ips)
    );
    assert_eq!(n.expires_at, Some(later + time::Duration::days(90)), "the 90-day lifetime carries over");
    assert!(matches!(
        rotate(&mut t, &old.id, Duration::ZERO, "dpl_live_", later),
        Err(LifecycleError::AlreadyRotated(..))
    ));
}

#[test]
fn a_rotated_metered_key_keeps_spending_the_first_keys_counter() {
    let mut t = RawTable::default();
    let first = new_key(&mut t, spec("metered")).unwrap();
    t.keys[0].credits = Some(crate::keys::credits::RawCredits { balance: 5, revision: 0, topped_up: 0, refill: None });
    let second = rotate(&mut t, &first.id, Duration::ZERO, "dpl_live_", NOW).unwrap();
    let third = rotate(&mut t, &second.id, Duration::ZERO, "dpl_live_", NOW).unwrap();
    assert_eq!(t.keys[1].usage_counter.as_deref(), Some(first.id.as_str()));
    assert_eq!(t.keys[2].id, third.id);
    assert_eq!(t.keys[2].usage_counter.as_deref(), Some(first.id.as_str()), "the chain's first key, not the last");
    let plain = new_key(&mut t, spec("plain")).unwrap();
    rotate(&mut t, &plain.id, Duration::ZERO, "dpl_live_", NOW).unwrap();
    assert_eq!(t.keys[4].usage_counter, None, "no credits or quota: nothing to keep");
}

#[test]
fn update_validates_before_changing_anything() {
    let mut t = RawTable::default();
    let c = new_key(&mut t, spec("x")).unwrap();
    let cat = Catalogue::default();
    let bad = Update { label: Some("y".into()), scopes: Some(vec!["nope:read".into()]), ..Update::default() };
    assert!(update(&mut t, &c.id, bad, &cat, NOW).is_err());
    assert_eq!(t.keys[0].label, "x", "nothing changed");
    let good = Update {
        clinics: Some(Some(vec!["c9".into()])),
        expires_at: Some(Some(NOW + time::Duration::hours(1))),
        ..Update::default()
    };
    assert_eq!(update(&mut t, &c.id, good, &cat, NOW), Ok(Updated::Changed));
    assert_eq!(t.keys[0].clinics, Some(vec!["c9".to_string()]));
    assert_eq!(t.keys[0].updated_at, Some(NOW));
}

#[test]
fn an_update_that_changes_nothing_keeps_updated_at() {
    let mut t = RawTable::default();
    let c = new_key(&mut t, KeySpec { clinics: Some(vec!["c1".into()]), ..spec("x") }).unwrap();
    let same = Update { label: Some("x".into()), clinics: Some(Some(vec!["c1".into()])), ..Update::default() };
    let later = NOW + time::Duration::hours(1);
    assert_eq!(update(&mut t, &c.id, same, &Catalogue::default(), later), Ok(Updated::Unchanged));
    assert_eq!(t.keys[0].updated_at, None, "no change, no new updated_at");
}
