//! Credits and calendar quotas end to end: a key's balance spent at its route's cost, refused
//! with 429 and the remaining/reset headers before the upstream sees the request; day quotas and
//! refills turning over at their UTC instant on a manual clock; and the fleet's shared counter
//! in the real Redis, which two replicas under concurrent load never over-spend.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::pg_store;
use crate::redis_limit::live_redis;
use crate::support::*;

const INTERACTIONS: &str = "/api/v1/clinics/clinic_001/interactions";
const REPORTS: &str = "/api/v1/clinics/clinic_001/reports";

/// The interactions route at cost 1, and a "reports" route at cost 5.
const COSTED_ROUTES: &str = "routes:
  - path: /api/v1/clinics/{clinic_id}/interactions
    resource: interactions
    clinic: {path_param: clinic_id}
  - path: /api/v1/clinics/{clinic_id}/reports
    resource: interactions
    clinic: {path_param: clinic_id}
    cost: 5
";

fn header(r: &Resp, name: &str) -> Option<String> {
    r.headers.get(name).map(|v| v.to_str().unwrap().to_string())
}

/// The next `HH:MM:SS` UTC after the clock's wall time.
fn next_at(clock: &Clock, hh: u8, mm: u8) -> OffsetDateTime {
    let now = clock.wall();
    let at = now.replace_time(time::Time::from_hms(hh, mm, 0).unwrap());
    if at > now {
        at
    } else {
        at + time::Duration::days(1)
    }
}

fn redis_cfg(url: &str, prefix: &str, on_error: &str, limits_on: bool) -> String {
    format!(
        "rate_limits:\n  enabled: {limits_on}\n  backend: redis\n  tiers:\n    default: {{rate: 100000/s, burst: 100000}}\n  redis:\n    url: {url}\n    key_prefix: \"{prefix}\"\n    timeout: 500ms\n    retry_after_failure: 300ms\n    on_error: {on_error}\n"
    )
}

/// Writes `table` as every replica's key table and waits until each has loaded it.
async fn reload_with(replicas: &[&Proxy], table: &str) {
    let loaded = "keygate_key_table_reloads_total{result=\"ok\"}";
    for kg in replicas {
        let before = kg.metric(loaded).await;
        kg.write_keys(table);
        eventually(Duration::from_secs(5), async || kg.metric(loaded).await > before).await;
    }
}

fn prefix(test: &str) -> String {
    format!("keygate-it:{}:credits:{test}:", uuid::Uuid::now_v7())
}

#[tokio::test]
async fn spent_credits_are_refused_with_429_and_the_upstream_never_sees_the_request() {
    let key = TestKey::live("k_credits_local").with("    credits: {balance: 3}\n");
    let (up, key, kg) = proxy_for(key, "").await;
    for left in [2, 1, 0] {
        let r = kg.get_as(&key, INTERACTIONS).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(header(&r, "x-credits-remaining"), Some(left.to_string()));
        assert_eq!(header(&r, "x-credits-reset"), None, "no refill configured");
    }
    let r = kg.get_as(&key, INTERACTIONS).await;
    r.assert_error(429, "CREDITS_EXHAUSTED");
    assert_eq!(header(&r, "x-credits-remaining").as_deref(), Some("0"));
    assert_eq!(header(&r, "retry-after"), None, "nothing refills this key");
    assert_eq!(up.count(), 3, "the refused request did not reach the upstream");
    let m = |o: &str| format!("keygate_quota_decisions_total{{outcome=\"{o}\",store=\"local\"}}");
    assert_eq!(kg.metric(&m("allowed")).await, 3.0);
    assert_eq!(kg.metric(&m("credits_exhausted")).await, 1.0);

    let plain = TestKey::live("k_no_credits");
    let (_up, plain, kg) = proxy_for(plain, "").await;
    let r = kg.get_as(&plain, INTERACTIONS).await;
    assert_eq!(header(&r, "x-credits-remaining"), None, "keys without credits are not charged");
    assert_eq!(kg.metric("keygate_quota_decisions_total").await, 0.0);
}

#[tokio::test]
async fn a_rotated_key_spends_its_predecessors_credits_not_a_fresh_balance() {
    let up = Upstream::spawn().await;
    let old = TestKey::live("k_credits_old").with("    credits: {balance: 3}\n");
    let new = TestKey::live("k_credits_new").with("    credits: {balance: 3}\n    usage_counter: k_credits_old\n");
    let kg = spawn_proxy(up.addr, &[&old, &new], "").await;
    assert_eq!(kg.get_as(&old, INTERACTIONS).await.status, 200);
    assert_eq!(kg.get_as(&old, INTERACTIONS).await.status, 200);
    let r = kg.get_as(&new, INTERACTIONS).await;
    assert_eq!((r.status.as_u16(), header(&r, "x-credits-remaining").as_deref()), (200, Some("0")));
    kg.get_as(&new, INTERACTIONS).await.assert_error(429, "CREDITS_EXHAUSTED");
    kg.get_as(&old, INTERACTIONS).await.assert_error(429, "CREDITS_EXHAUSTED");
}

#[tokio::test]
async fn a_route_spends_its_cost_and_a_refused_one_spends_nothing() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_credits_cost").with("    credits: {balance: 7}\n");
    let kg = spawn_proxy(up.addr, &[&key], COSTED_ROUTES).await;
    let r = kg.get_as(&key, REPORTS).await;
    assert_eq!((r.status.as_u16(), header(&r, "x-credits-remaining").as_deref()), (200, Some("2")));
    kg.get_as(&key, REPORTS).await.assert_error(429, "CREDITS_EXHAUSTED");
    let denied = kg.get("/api/v1/clinics/clinic_001/nowhere", &[("authorization", &key.bearer())]).await;
    assert_eq!(denied.status, 404, "a refused request is not charged");
    let r = kg.get_as(&key, INTERACTIONS).await;
    assert_eq!((r.status.as_u16(), header(&r, "x-credits-remaining").as_deref()), (200, Some("1")));
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn a_day_quota_rolls_over_at_midnight_utc_for_a_key_and_for_its_tier() {
    let clock = Clock::manual();
    advance_to(&clock, next_at(&clock, 23, 0));
    let up = Upstream::spawn().await;
    let own = TestKey::live("k_quota_day").with("    quota: {day: 2}\n");
    let tiered = TestKey::live("k_quota_tier").with("    rate_limit: metered\n");
    let cfg = "rate_limits:\n  tiers:\n    default: {rate: 100/s}\n    metered: {rate: 100/s, quota: {day: 1, month: 1000}}\n";
    let kg = spawn_proxy_at(&clock, up.addr, &[&own, &tiered], cfg).await;
    for left in ["1", "0"] {
        let r = kg.get_as(&own, INTERACTIONS).await;
        assert_eq!((r.status.as_u16(), header(&r, "x-quota-remaining").as_deref()), (200, Some(left)));
    }
    assert_eq!(kg.get_as(&tiered, INTERACTIONS).await.status, 200);
    let midnight = next_at(&clock, 0, 0);
    advance_to(&clock, midnight - time::Duration::nanoseconds(1));
    for key in [&own, &tiered] {
        let r = kg.get_as(key, INTERACTIONS).await;
        r.assert_error(429, "QUOTA_EXCEEDED");
        assert_eq!(header(&r, "retry-after").as_deref(), Some("1"), "the day ends in under a second");
        assert_eq!(header(&r, "x-quota-remaining").as_deref(), Some("0"));
    }
    clock.advance(Duration::from_nanos(1));
    let r = kg.get_as(&own, INTERACTIONS).await;
    assert_eq!((r.status.as_u16(), header(&r, "x-quota-remaining").as_deref()), (200, Some("1")));
    assert_eq!(header(&r, "x-quota-reset").as_deref(), Some("86400"));
    assert_eq!(kg.get_as(&tiered, INTERACTIONS).await.status, 200, "the tier's day quota rolled over too");
    assert_eq!(up.count(), 5);
}

#[tokio::test]
async fn two_replicas_never_spend_more_than_the_credits_under_concurrent_load() {
    let url = live_redis().await;
    let up = Upstream::spawn().await;
    let credits = 200;
    let key = TestKey::live("k_credits_fleet").with(&format!("    credits: {{balance: {credits}}}\n"));
    let cfg = redis_cfg(&url, &prefix("fleet"), "fail_closed", true);
    let replicas =
        [Arc::new(spawn_proxy(up.addr, &[&key], &cfg).await), Arc::new(spawn_proxy(up.addr, &[&key], &cfg).await)];
    let (clients, each) = (32, 20);
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (kg, bearer) = (Arc::clone(&replicas[c % 2]), key.bearer());
        tasks.spawn(async move {
            let mut allowed = 0;
            for _ in 0..each {
                let r = kg.get(INTERACTIONS, &[("authorization", &bearer)]).await;
                match r.status.as_u16() {
                    200 => allowed += 1,
                    429 => assert_eq!(r.json()["error"]["code"], "CREDITS_EXHAUSTED"),
                    other => panic!("unexpected {other}: {}", r.text()),
                }
            }
            allowed
        });
    }
    let allowed: usize = tasks.join_all().await.into_iter().sum();
    let took = started.elapsed();
    eprintln!(
        "credits accuracy: {} requests from {clients} clients over 2 replicas, {allowed} allowed of {credits} credits ({:?})",
        clients * each,
        took
    );
    assert_eq!(allowed, credits, "exactly the credits: never more (Unkey's test accepts 1.2x), never fewer");
    assert_eq!(up.count(), credits);
    let allowed_by = "keygate_quota_decisions_total{outcome=\"allowed\",store=\"redis\"}";
    let sum = replicas[0].metric(allowed_by).await + replicas[1].metric(allowed_by).await;
    assert_eq!(sum, credits as f64);
}

#[tokio::test]
async fn a_refill_comes_at_its_utc_time_for_the_whole_fleet() {
    let url = live_redis().await;
    let clock = Clock::manual();
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_credits_refill")
        .with("    credits: {balance: 2, refill: {amount: 5, interval: daily, at: \"06:00\"}}\n");
    let cfg = redis_cfg(&url, &prefix("refill"), "fail_closed", false);
    let kg1 = spawn_proxy_at(&clock, up.addr, &[&key], &cfg).await;
    let kg2 = spawn_proxy_at(&clock, up.addr, &[&key], &cfg).await;
    let six = next_at(&clock, 6, 0);
    assert_eq!(kg1.get_as(&key, INTERACTIONS).await.status, 200);
    assert_eq!(kg2.get_as(&key, INTERACTIONS).await.status, 200);
    advance_to(&clock, six - time::Duration::nanoseconds(1));
    let r = kg1.get_as(&key, INTERACTIONS).await;
    r.assert_error(429, "CREDITS_EXHAUSTED");
    assert_eq!(header(&r, "retry-after").as_deref(), Some("1"));
    assert_eq!(header(&r, "x-credits-reset").as_deref(), Some("1"));
    clock.advance(Duration::from_nanos(1));
    let r = kg2.get_as(&key, INTERACTIONS).await;
    assert_eq!((r.status.as_u16(), header(&r, "x-credits-remaining").as_deref()), (200, Some("4")));
    assert_eq!(header(&r, "x-credits-reset").as_deref(), Some("86400"));
    let r = kg1.get_as(&key, INTERACTIONS).await;
    assert_eq!(header(&r, "x-credits-remaining").as_deref(), Some("3"), "refilled once, for both replicas");
}

#[tokio::test]
async fn a_top_up_is_applied_once_however_many_replicas_load_it() {
    let url = live_redis().await;
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_credits_topup").with("    credits: {balance: 1}\n");
    let cfg = redis_cfg(&url, &prefix("topup"), "fail_closed", false);
    let kg1 = spawn_proxy(up.addr, &[&key], &cfg).await;
    let kg2 = spawn_proxy(up.addr, &[&key], &cfg).await;
    assert_eq!(kg1.get_as(&key, INTERACTIONS).await.status, 200);
    kg2.get_as(&key, INTERACTIONS).await.assert_error(429, "CREDITS_EXHAUSTED");

    // What `keygate keys credits topup k_credits_topup 5` writes: the top-up total, raised.
    let topped = TestKey { extra: "    credits: {balance: 1, topped_up: 5}\n".into(), ..key };
    reload_with(&[&kg1, &kg2], &table_yaml(&[&topped])).await;
    let mut allowed = 0;
    for i in 0..12 {
        let kg = if i % 2 == 0 { &kg1 } else { &kg2 };
        allowed += usize::from(kg.get_as(&topped, INTERACTIONS).await.status == 200);
    }
    assert_eq!(allowed, 5, "the top-up of 5 was added once, not once per replica");
}

#[tokio::test]
async fn redis_down_fails_closed_with_503_or_open_to_this_replicas_counters() {
    let dead = format!("redis://{}", dead_addr().await);
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_credits_down").with("    credits: {balance: 2}\n");
    let closed = spawn_proxy(up.addr, &[&key], &redis_cfg(&dead, "p:", "fail_closed", false)).await;
    closed.get_as(&key, INTERACTIONS).await.assert_error(503, "SERVICE_UNAVAILABLE");
    assert_eq!(closed.metric("keygate_quota_decisions_total{outcome=\"unavailable\"}").await, 1.0);
    assert_eq!(closed.metric("keygate_rate_limit_redis_fallback_total{policy=\"fail_closed\"}").await, 1.0);
    assert_eq!(up.count(), 0);

    let open = spawn_proxy(up.addr, &[&key], &redis_cfg(&dead, "p:", "fail_open", false)).await;
    for _ in 0..2 {
        assert_eq!(open.get_as(&key, INTERACTIONS).await.status, 200);
    }
    open.get_as(&key, INTERACTIONS).await.assert_error(429, "CREDITS_EXHAUSTED");
    assert_eq!(open.metric("keygate_quota_decisions_total{store=\"fallback\"}").await, 3.0);
    assert_eq!(open.metric("keygate_rate_limit_redis_fallback_total{policy=\"fail_open\"}").await, 3.0);
}

/// Runs a `keygate keys --config …` command and waits until every replica has synced the change
/// (every change of the test goes through here, so "past the version before" means "has it").
async fn synced(replicas: &[&Proxy], args: &[&str]) -> String {
    let version = "keygate_key_store_version";
    // Every replica at the same version first, so "past it" below means "has this change".
    let mut before = 0.0;
    eventually(Duration::from_secs(5), async || {
        before = replicas[0].metric(version).await;
        for kg in &replicas[1..] {
            if kg.metric(version).await != before {
                return false;
            }
        }
        true
    })
    .await;
    let out = pg_store::keys(&replicas[0].config_path, args).await;
    assert!(out.ok, "{args:?}: {}", out.stderr);
    for kg in replicas {
        eventually(Duration::from_secs(5), async || kg.metric(version).await > before).await;
    }
    out.stdout
}

#[tokio::test]
async fn the_cli_sets_tops_up_and_shows_credits_on_postgresql_with_the_live_remaining() {
    let (url, db) = (live_redis().await, pg_store::Db::new().await);
    let (up, dir) = (Upstream::spawn().await, tempfile::tempdir().unwrap());
    let store = db.store_yaml(&db.url, pg_store::FAST) + &redis_cfg(&url, &prefix("cli"), "fail_closed", false);
    pg_store::migrate(&pg_store::config_file(dir.path(), "kg1.yaml", up.addr, &store)).await;
    let kg1 = pg_store::spawn_pg_proxy(dir.path(), "kg1.yaml", up.addr, &store).await;
    let kg2 = pg_store::spawn_pg_proxy(dir.path(), "kg2.yaml", up.addr, &store).await;
    let created: serde_json::Value =
        serde_json::from_str(&synced(&[&kg1, &kg2], &["create", "--json", "--label", "metered"]).await).unwrap();
    let (id, secret) = (created["id"].as_str().unwrap().to_string(), created["key"].as_str().unwrap());
    let bearer = format!("Bearer {secret}");
    let get = async |kg: &Proxy| kg.get(INTERACTIONS, &[("authorization", &bearer)]).await;
    synced(&[&kg1, &kg2], &["credits", "set", &id, "2", "--refill", "10", "--refill-every", "monthly"]).await;
    assert_eq!((get(&kg1).await.status.as_u16(), get(&kg2).await.status.as_u16()), (200, 200));
    get(&kg1).await.assert_error(429, "CREDITS_EXHAUSTED");

    let out = synced(&[&kg1, &kg2], &["credits", "topup", &id, "3", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["credits"]["topped_up"], 3);
    let mut allowed = 0;
    for i in 0..8 {
        allowed += usize::from(get(if i % 2 == 0 { &kg1 } else { &kg2 }).await.status == 200);
    }
    assert_eq!(allowed, 3, "the CLI's top-up, applied once across both replicas");

    synced(&[&kg1, &kg2], &["credits", "quota", &id, "--day", "100"]).await;
    let out = pg_store::keys(&kg1.config_path, &["credits", "show", &id, "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stderr));
    assert_eq!(v["credits"]["balance"], 2);
    assert_eq!(v["credits"]["refill"]["interval"], "monthly");
    assert_eq!(v["quota"]["effective"]["day"], 100);
    assert_eq!(v["live"]["remaining"], 0, "{v}");
    assert_eq!(v["live"]["source"], "redis");
    assert_eq!(v["live"]["day_used"], 5, "today's use counts towards a quota set later in the day");
}

/// The Lua script is `credits::decide` in Lua: the same 3000 steps (charges of several costs,
/// top-ups, sets, stale replicas, days and refills passing) give the same verdicts and counters.
#[tokio::test]
async fn the_redis_script_decides_exactly_as_the_local_counter() {
    use keygate::ratelimit::credits::{decide, Calendar, Charge, Counter, CreditPlan, Interval, Refill};
    let url = live_redis().await;
    let redis = keygate::store::redis_limits::RedisLimiter::new(
        crate::redis_limit::settings(&url, "credits-script"),
        Clock::system(),
        None,
    )
    .unwrap();
    let refill = Some(Refill { amount: 9, interval: Interval::Daily, at_secs: 6 * 3600 });
    let mut plan = CreditPlan { balance: 20, revision: 1, topped_up: 0, refill };
    let (mut stale, mut local, mut now) = (plan, Counter::default(), 1_780_000_000_i64);
    let calendar = Calendar { day: Some(30), month: Some(200) };
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for step in 0..3000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // The choice from the low bits, the amounts from independent high bits.
        let n = seed >> 32;
        match seed % 10 {
            0 => (stale, plan.topped_up) = (plan, plan.topped_up + n % 5),
            1 if n.is_multiple_of(7) => {
                (stale, plan) =
                    (plan, CreditPlan { balance: n % 30, revision: plan.revision + 1, topped_up: 0, ..plan })
            }
            2 => now += i64::try_from(n % 600).unwrap() * 60,
            _ => {
                let asked = if (n >> 8).is_multiple_of(3) { &stale } else { &plan };
                let args = Charge { plan: Some(asked), calendar, cost: n % 4, now }.args();
                let verdict = decide(&mut local, &args);
                let shared = redis.charge_credits("k", &args).await.unwrap();
                assert_eq!(shared, (verdict, local), "step {step}: {args:?}");
            }
        }
    }
    assert_eq!(redis.read_credits("k").await.unwrap(), Some(local));
}
