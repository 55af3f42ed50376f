//! Report-only (shadow) mode through the real proxy: with `enforce: false` (everywhere, or on
//! one route) a request keygate would refuse reaches the upstream anyway, identified only when
//! its key authenticated, counted in `keygate_would_refuse_total` by code and route and written
//! in the audit line; clinic routes always tell the upstream; hygiene is still enforced; a
//! reload flips enforcement both ways.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue, Method};
use keygate::proxy::check::{CheckOutcome, CheckRequest, Shape};

use crate::support::*;

const INTERACTIONS: &str = "/api/v1/clinics/clinic_001/interactions";
const INTERACTIONS_ROUTE: &str = "/api/v1/clinics/{clinic_id}/interactions";
const SHADOW: &str = "enforce: false\n";
const WOULD_REFUSE: &str = "x-keygate-would-refuse";

fn reader(id: &str) -> TestKey {
    TestKey::live(id).with("    scopes: [\"interactions:read\", \"clinics:read\"]\n    clinics: [clinic_001]\n")
}

fn would_refuse(code: &str, route: &str) -> String {
    format!("keygate_would_refuse_total{{code=\"{code}\",route=\"{route}\"}}")
}

/// The audit line of the request that got `r`, parsed.
fn audit_of(r: &Resp) -> serde_json::Value {
    let rid = r.headers["x-request-id"].to_str().unwrap();
    serde_json::from_str(&audit_line(rid)).unwrap()
}

fn assert_anonymous(seen: &Seen) {
    for h in ["x-allowed-clinics", "x-scopes", "x-api-key-id", "x-api-key-environment"] {
        assert!(seen.all(h).is_empty(), "{h} sent for a request that did not authenticate: {:?}", seen.headers);
    }
}

#[tokio::test]
async fn global_shadow_forwards_what_it_would_refuse_and_counts_it_by_code_and_route() {
    let (up, key, kg) = proxy_for(reader("k_sh_global"), SHADOW).await;
    let ghost = TestKey::live("k_sh_ghost");

    let r = kg.get(INTERACTIONS, &[]).await;
    r.ok();
    assert_anonymous(&up.last());
    assert_eq!(up.last().one(WOULD_REFUSE), "UNAUTHORIZED", "a clinic route always tells the upstream");

    let r = kg.get_as(&ghost, INTERACTIONS).await;
    r.ok();
    assert_anonymous(&up.last());
    let audit = audit_of(&r);
    assert_eq!((audit["would_refuse"].as_str(), audit["code"].as_str()), (Some("INVALID_API_KEY"), Some("OK")));
    assert_eq!(audit["status"], 200, "the client got the upstream's answer");

    let r = kg.get_as(&key, "/api/v1/clinics/clinic_001/metrics").await;
    r.ok();
    let seen = up.last();
    assert_eq!(seen.one("x-api-key-id"), "k_sh_global", "a key that authenticated is identified");
    assert_eq!(seen.one("x-allowed-clinics"), "clinic_001");
    assert_eq!(seen.one(WOULD_REFUSE), "INSUFFICIENT_SCOPE");
    assert_eq!(audit_of(&r)["would_refuse"], "INSUFFICIENT_SCOPE");

    let r = kg.get_as(&key, INTERACTIONS).await;
    r.ok();
    assert!(up.last().all(WOULD_REFUSE).is_empty(), "an allowed request carries nothing");
    assert!(audit_of(&r).get("would_refuse").is_none());

    assert_eq!(up.count(), 4, "every request reached the upstream");
    assert_eq!(kg.metric(&would_refuse("UNAUTHORIZED", INTERACTIONS_ROUTE)).await, 1.0);
    assert_eq!(kg.metric(&would_refuse("INVALID_API_KEY", INTERACTIONS_ROUTE)).await, 1.0);
    assert_eq!(kg.metric(&would_refuse("INSUFFICIENT_SCOPE", "/api/v1/clinics/{clinic_id}/metrics")).await, 1.0);
    assert_eq!(kg.metric("keygate_would_refuse_total").await, 3.0);
    assert_eq!(kg.metric("keygate_requests_total{code=\"OK\"}").await, 4.0, "counted as what the client got");
}

#[tokio::test]
async fn the_header_is_optional_off_clinic_routes_and_a_clients_copy_never_passes() {
    let ghost = TestKey::live("k_sh_hdr_ghost");
    let (up, key, kg) = proxy_for(reader("k_sh_hdr"), SHADOW).await;
    kg.get_as(&ghost, "/api/v1/clinics").await.ok();
    assert!(up.last().all(WOULD_REFUSE).is_empty(), "no clinic rule, header not asked for");
    kg.get(INTERACTIONS, &[("authorization", &key.bearer()), (WOULD_REFUSE, "NONE")]).await.ok();
    assert!(up.last().all(WOULD_REFUSE).is_empty(), "the client's copy is removed");

    let (up, _, kg) = proxy_for(reader("k_sh_hdr_on"), "enforce: false\nwould_refuse_header: true\n").await;
    kg.get_as(&ghost, "/api/v1/clinics").await.ok();
    assert_eq!(up.last().one(WOULD_REFUSE), "INVALID_API_KEY");
}

#[tokio::test]
async fn a_rate_limited_request_is_forwarded_and_still_charged() {
    let key = reader("k_sh_rl").with("    rate_limit: tiny\n");
    let up = Upstream::spawn().await;
    let limits = "rate_limits:\n  default_tier: tiny\n  tiers:\n    tiny: {rate: 1/m, burst: 2}\n";
    let kg = spawn_proxy_at(&Clock::manual(), up.addr, &[&key], &format!("{SHADOW}{limits}")).await;
    for _ in 0..3 {
        kg.get_as(&key, INTERACTIONS).await.ok();
    }
    assert_eq!(up.count(), 3);
    assert_eq!(up.last().one("x-api-key-id"), "k_sh_rl");
    assert_eq!(kg.metric(&would_refuse("RATE_LIMIT_EXCEEDED", INTERACTIONS_ROUTE)).await, 1.0);
    let limited = "keygate_rate_limit_decisions_total{key_id=\"k_sh_rl\",outcome=\"limited\"}";
    assert_eq!(kg.metric(limited).await, 1.0, "the budget is spent as when enforcing");
}

#[tokio::test]
async fn an_exhausted_key_is_forwarded_and_reported_and_enforcing_again_refuses_it() {
    let key = reader("k_sh_credits").with("    credits: {balance: 1}\n");
    let (up, key, kg) = proxy_for(key, SHADOW).await;
    for _ in 0..2 {
        kg.get_as(&key, INTERACTIONS).await.ok();
    }
    assert_eq!(up.count(), 2, "the request past the balance reached the upstream too");
    assert_eq!(up.last().one("x-api-key-id"), "k_sh_credits", "identified: the key authenticated");
    assert_eq!(kg.metric(&would_refuse("CREDITS_EXHAUSTED", INTERACTIONS_ROUTE)).await, 1.0);
    let exhausted = "keygate_quota_decisions_total{outcome=\"credits_exhausted\"}";
    assert_eq!(kg.metric(exhausted).await, 1.0, "decided as when enforcing");

    apply(&kg, &swap_in(&kg, SHADOW, "enforce: true\n"), RELOADED_OK).await;
    kg.get_as(&key, INTERACTIONS).await.assert_error(429, "CREDITS_EXHAUSTED");
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn a_clinic_rule_forwards_with_the_keys_real_clinics_and_always_says_so() {
    let routes = "routes:\n  - path: /v1/clinics/{clinic_id}/notes\n    resource: interactions\n    clinic: {path_param: clinic_id}\n    on_foreign_clinic: deny\n";
    let (up, key, kg) = proxy_for(reader("k_sh_clinic"), SHADOW).await;
    kg.get_as(&key, "/api/v1/clinics/clinic_002/interactions").await.ok();
    let seen = up.last();
    assert_eq!(seen.one(WOULD_REFUSE), "EMPTY_RESULT", "the empty answer it would have given, announced");
    assert_eq!(seen.one("x-allowed-clinics"), "clinic_001", "the key's clinics, not the one asked for");
    assert_eq!(kg.metric(&would_refuse("EMPTY_RESULT", INTERACTIONS_ROUTE)).await, 1.0);

    let (up, key, kg) = proxy_for(reader("k_sh_deny"), &format!("{SHADOW}{routes}")).await;
    kg.get_as(&key, "/v1/clinics/clinic_002/notes").await.ok();
    assert_eq!(up.last().one(WOULD_REFUSE), "CLINIC_NOT_ALLOWED");
    assert_eq!(up.last().one("x-allowed-clinics"), "clinic_001");
}

#[tokio::test]
async fn hygiene_is_enforced_in_shadow_mode() {
    let (up, key, kg) = proxy_for(reader("k_sh_hygiene"), SHADOW).await;
    kg.get_as(&key, "/api/v1/clinics/a%2Fb/interactions").await.assert_error(400, "INVALID_REQUEST");
    kg.get(INTERACTIONS, &[("authorization", &key.bearer()), ("x-http-method-override", "DELETE")])
        .await
        .assert_error(400, "INVALID_REQUEST");
    assert_eq!(up.count(), 0, "nothing malformed reaches the upstream");
    assert_eq!(kg.metric("keygate_would_refuse_total").await, 0.0);
}

#[tokio::test]
async fn a_route_in_shadow_does_not_loosen_the_others() {
    let routes = "routes:\n  - path: /v1/new\n    resource: interactions\n    enforce: false\n  - path: /v1/old\n    resource: interactions\n";
    let (up, _, kg) = proxy_for(reader("k_sh_route"), routes).await;
    let ghost = TestKey::live("k_sh_route_ghost");
    kg.get_as(&ghost, "/v1/new").await.ok();
    kg.get_as(&ghost, "/v1/old").await.assert_error(401, "INVALID_API_KEY");
    kg.get_as(&ghost, "/v1/unknown").await.assert_error(401, "INVALID_API_KEY");
    assert_eq!(up.count(), 1);
    assert_eq!(kg.metric(&would_refuse("INVALID_API_KEY", "/v1/new")).await, 1.0);
    assert_eq!(kg.metric(&would_refuse("INVALID_API_KEY", "/v1/old")).await, 0.0, "shown at 0 from the start");

    // And the other way round: everything in shadow but one route kept enforced.
    let routes = routes.replace("    enforce: false\n", "    enforce: true\n");
    let (up, _, kg) = proxy_for(reader("k_sh_route2"), &format!("{SHADOW}{routes}")).await;
    kg.get_as(&ghost, "/v1/new").await.assert_error(401, "INVALID_API_KEY");
    kg.get_as(&ghost, "/v1/old").await.ok();
    kg.get_as(&ghost, "/v1/unknown").await.ok();
    assert_eq!(kg.metric(&would_refuse("INVALID_API_KEY", "none")).await, 1.0, "no route: the listener's setting");
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn a_reload_flips_enforcement_both_ways() {
    let (up, _, kg) = proxy_for(reader("k_sh_reload"), SHADOW).await;
    let ghost = TestKey::live("k_sh_reload_ghost");
    kg.get_as(&ghost, INTERACTIONS).await.ok();

    apply(&kg, &swap_in(&kg, SHADOW, "enforce: true\n"), RELOADED_OK).await;
    kg.get_as(&ghost, INTERACTIONS).await.assert_error(401, "INVALID_API_KEY");
    assert_eq!(up.count(), 1, "enforced: refused before the upstream");

    apply(&kg, &swap_in(&kg, "enforce: true\n", SHADOW), RELOADED_OK).await;
    kg.get_as(&ghost, INTERACTIONS).await.ok();
    assert_eq!(up.count(), 2);
    assert_eq!(kg.metric(&would_refuse("INVALID_API_KEY", INTERACTIONS_ROUTE)).await, 2.0);
}

fn ask(path: &str, key: &TestKey) -> CheckRequest {
    let mut headers = HeaderMap::new();
    headers.insert("authorization", HeaderValue::from_str(&key.bearer()).unwrap());
    CheckRequest {
        method: Method::GET,
        uri: path.parse().unwrap(),
        headers,
        client_ip: IpAddr::from([203, 0, 113, 9]),
        shape: Shape::ForwardAuth,
    }
}

#[tokio::test]
async fn a_front_proxys_check_is_allowed_and_reported_the_same_way() {
    let (_up, key, kg) = proxy_for(reader("k_sh_check"), SHADOW).await;
    let ghost = TestKey::live("k_sh_check_ghost");
    let CheckOutcome::Allow { set, .. } = kg.running().proxy.check(ask(INTERACTIONS, &ghost)).await else {
        panic!("shadow mode allows")
    };
    assert_eq!(set[WOULD_REFUSE], "INVALID_API_KEY");
    assert!(set.get("x-api-key-id").is_none(), "no identity for a key that failed");

    let asked = ask("/api/v1/clinics/clinic_001/metrics", &key);
    let CheckOutcome::Allow { set, .. } = kg.running().proxy.check(asked).await else { panic!("shadow mode allows") };
    assert_eq!(set[WOULD_REFUSE], "INSUFFICIENT_SCOPE");
    assert_eq!(set["x-api-key-id"], "k_sh_check", "a key that authenticated is identified");
    let shape = "keygate_requests_total{code=\"OK\",shape=\"forward_auth\"}";
    assert_eq!(kg.metric(shape).await, 2.0);
    assert_eq!(kg.metric("keygate_would_refuse_total").await, 2.0);
}

#[tokio::test]
async fn the_check_listeners_have_their_own_switch_applied_on_reload() {
    let authz = |enforce: bool| format!("authz:\n  listen: 127.0.0.1:0\n  enforce: {enforce}\n");
    let (up, _, kg) = proxy_for(reader("k_sh_listener"), &authz(false)).await;
    let ghost = TestKey::live("k_sh_listener_ghost");
    kg.get_as(&ghost, INTERACTIONS).await.assert_error(401, "INVALID_API_KEY");
    assert_eq!(up.count(), 0, "the inline listener enforces");
    let outcome = kg.running().proxy.check(ask(INTERACTIONS, &ghost)).await;
    assert!(matches!(outcome, CheckOutcome::Allow { .. }), "the check listeners report only");

    apply(&kg, &swap_in(&kg, &authz(false), &authz(true)), RELOADED_OK).await;
    let outcome = kg.running().proxy.check(ask(INTERACTIONS, &ghost)).await;
    assert!(matches!(outcome, CheckOutcome::Deny(_)), "authz.enforce applies on reload");
    assert_eq!(kg.metric("keygate_config_restart_pending").await, 0.0, "and needs no restart");
}

#[tokio::test]
async fn a_key_store_too_stale_to_trust_is_reported_and_the_request_forwarded_without_a_key() {
    use crate::pg_store::{relayed, status, Relayed};
    let Relayed { relay, key, clock, kg, held } =
        relayed("  poll_interval: 100ms\n  timeout: 300ms\n  max_staleness: 1s\n").await;
    apply(&kg, &format!("{}{SHADOW}", kg.config_text()), RELOADED_OK).await;

    relay.blackhole().await;
    clock.advance(std::time::Duration::from_secs(1) + std::time::Duration::from_nanos(1));
    assert_eq!(status(&kg, &key).await, 200, "forwarded although no key can be judged");
    let stale = "keygate_would_refuse_total{code=\"KEY_STORE_UNAVAILABLE\",route=\"/api/v1/clinics\"}";
    assert_eq!(kg.metric(stale).await, 1.0);
    assert_anonymous(&held.1.last());
}

/// The shipped nginx and Caddy configs carry the would-be refusal to the upstream, and never a
/// client's copy of it.
#[tokio::test]
async fn real_front_proxies_pass_the_would_be_refusal_on_and_strip_a_clients_copy() {
    use crate::authz_front::{keygate, Front};
    let key = reader("k_sh_front");
    let ghost = TestKey::live("k_sh_front_ghost");
    let up = Upstream::spawn().await;
    let kg = keygate(&up, &[&key], SHADOW).await;
    let check = kg.running().authz_addr.unwrap();
    for front in [Front::nginx(check, up.addr).await, Front::caddy(check, up.addr).await] {
        front.get(INTERACTIONS, &[("authorization", &ghost.bearer())]).await.ok();
        let seen = up.last();
        assert_eq!(seen.one(WOULD_REFUSE), "INVALID_API_KEY", "{}", front.log());
        assert_anonymous(&seen);
        front.get(INTERACTIONS, &[("authorization", &key.bearer()), (WOULD_REFUSE, "NONE")]).await.ok();
        let seen = up.last();
        assert!(seen.all(WOULD_REFUSE).is_empty(), "a client's copy reached the upstream: {seen:?}");
        assert_eq!(seen.one("x-api-key-id"), "k_sh_front");
    }
}
