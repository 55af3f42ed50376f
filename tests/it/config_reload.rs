//! Config reload through the real app: SIGHUP (`Running::reload`, what the signal handler
//! calls) and a changed file re-run start's load and validation. Routes, tiers and alert
//! settings apply; a bad file keeps the running config and is logged and counted; restart-only
//! settings keep their running values and are named; requests in flight never fail or see a
//! mix of two configs. Each test waits for the reload counter or the state a reload sets,
//! never for time to pass.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

const WAIT: Duration = Duration::from_secs(10);
const OK: &str = RELOADED_OK;
const FAILED: &str = "keygate_config_reloads_total{result=\"failed\"}";
/// Every scope: only the route table decides what a request reaches.
const ALL: &str = "    scopes: [\"*\"]\n";

fn routes(paths: &[&str]) -> String {
    let mut s = String::from("routes:\n");
    for p in paths {
        s.push_str(&format!("  - path: {p}\n    resource: things\n"));
    }
    s
}

#[tokio::test]
async fn a_changed_route_table_applies_on_sighup_both_ways() {
    let start = routes(&["/v1/things"]);
    let (up, key, kg) = proxy_for(TestKey::live("k_cr_routes").with(ALL), &start).await;
    kg.get_as(&key, "/v1/things").await.ok();
    kg.get_as(&key, "/v1/reports").await.assert_error(404, "ROUTE_NOT_FOUND");
    assert_eq!(up.count(), 1);

    apply(&kg, &swap_in(&kg, &start, &routes(&["/v1/reports"])), OK).await;

    kg.get_as(&key, "/v1/reports").await.ok();
    assert_eq!(up.last().uri, "/v1/reports", "refused before, forwarded now");
    kg.get_as(&key, "/v1/things").await.assert_error(404, "ROUTE_NOT_FOUND");
    assert_eq!(up.count(), 2, "the removed route no longer reaches the upstream");
    assert!(logs().contains("config reloaded"));
}

#[tokio::test]
async fn a_changed_file_is_picked_up_without_a_signal_through_a_configmap_style_symlink_swap() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_cr_watch");
    let (dir, keys_path) = temp_file("keys.yaml", table_yaml(&[&key]));
    let base = format!(
        "environment: live\nlisten: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nupstream:\n  url: http://{}\nkeys:\n  file: {}\n",
        up.addr,
        keys_path.display()
    );
    // The kubelet's layout: config.yaml -> ..data/config.yaml, ..data -> ..<version>; an
    // update writes a new version directory and renames a new ..data link over the old one.
    let mount = dir.path().join("mount");
    let version = |n: u32, text: &str| {
        let dir = mount.join(format!("..v{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.yaml"), text).unwrap();
        let link = mount.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..v{n}"), &link).unwrap();
        std::fs::rename(&link, mount.join("..data")).unwrap();
    };
    version(1, &base);
    let config_path = mount.join("config.yaml");
    std::os::unix::fs::symlink("..data/config.yaml", &config_path).unwrap();
    let cfg = keygate::config::load(&config_path).unwrap_or_else(|e| panic!("{e}"));
    let running = keygate::app::start(cfg).await.unwrap();
    let (addr, admin) = (running.proxy_addr, running.admin_addr);
    let kg = Proxy { addr, admin, keys_path, config_path, dir, running: Some(running) };

    kg.get_as(&key, "/v1/status").await.assert_error(404, "ROUTE_NOT_FOUND");
    version(2, &format!("{base}public_routes:\n  - path: /v1/status\n"));
    eventually(WAIT, async || kg.metric(OK).await == 1.0).await;
    let r = kg.get("/v1/status", &[]).await;
    r.ok();
    assert_eq!(up.last().uri, "/v1/status", "a public route, forwarded without a key");
}

#[tokio::test]
async fn a_changed_tier_applies_and_an_unchanged_tier_keeps_its_budget() {
    let tiers = |small_burst: u32| {
        format!(
            "rate_limits:\n  default_tier: steady\n  tiers:\n    steady: {{rate: 1/m, burst: 1}}\n    small: {{rate: 1/m, burst: {small_burst}}}\n"
        )
    };
    let up = Upstream::spawn().await;
    let (small, steady) = (TestKey::live("k_cr_small").with("    rate_limit: small\n"), TestKey::live("k_cr_steady"));
    let kg = spawn_proxy(up.addr, &[&small, &steady], &tiers(2)).await;
    let path = "/api/v1/clinics";
    kg.get_as(&small, path).await.ok();
    kg.get_as(&small, path).await.ok();
    kg.get_as(&small, path).await.assert_error(429, "RATE_LIMIT_EXCEEDED");
    kg.get_as(&steady, path).await.ok();
    kg.get_as(&steady, path).await.assert_error(429, "RATE_LIMIT_EXCEEDED");

    apply(&kg, &swap_in(&kg, &tiers(2), &tiers(5)), OK).await;

    for i in 0..5 {
        let r = kg.get_as(&small, path).await;
        assert_eq!(r.status, 200, "request {i} under the new burst: {}", r.text());
        assert_eq!(r.headers["ratelimit-policy"], "\"small\";q=5;w=300");
    }
    kg.get_as(&small, path).await.assert_error(429, "RATE_LIMIT_EXCEEDED");
    let r = kg.get_as(&steady, path).await;
    r.assert_error(429, "RATE_LIMIT_EXCEEDED");
    assert_eq!(r.headers["ratelimit-policy"], "\"steady\";q=1;w=60", "its tier did not change: neither did its budget");
}

#[tokio::test]
async fn a_bad_config_keeps_the_running_one_and_is_logged_with_its_line_and_counted() {
    let start = routes(&["/v1/things"]);
    let (up, key, kg) = proxy_for(TestKey::live("k_cr_bad").with(ALL), &start).await;
    assert_eq!(kg.metric("keygate_config_last_reload_successful").await, 1.0);

    let fixed = swap_in(&kg, &start, &routes(&["/v1/things", "/v1/fixed"]));
    // A route with neither `resource` nor `scopes`, beside a new route that would apply.
    let broken = swap_in(&kg, &start, "routes:\n  - path: /v1/things\n    resource: things\n  - path: /v1/broken\n");
    let line = broken.lines().position(|l| l.contains("/v1/broken")).unwrap() + 1;
    apply(&kg, &broken, FAILED).await;

    kg.get_as(&key, "/v1/things").await.ok();
    kg.get_as(&key, "/v1/broken").await.assert_error(404, "ROUTE_NOT_FOUND");
    assert_eq!(up.count(), 1);
    assert_eq!(kg.metric(OK).await, 0.0);
    assert_eq!(kg.metric("keygate_config_last_reload_successful").await, 0.0);
    let logged = logs();
    let failure = logged
        .lines()
        .find(|l| l.contains("config reload failed") && l.contains(&kg.config_path.display().to_string()))
        .expect("the failure names the file");
    assert!(failure.contains(&format!("line {line}: routes[1] (/v1/broken)")), "{failure}");

    // Fixed: applies, and the gauge says so again.
    apply(&kg, &fixed, OK).await;
    kg.get_as(&key, "/v1/fixed").await.ok();
    assert_eq!(kg.metric("keygate_config_last_reload_successful").await, 1.0);
    assert!(kg.metric(FAILED).await >= 1.0);
}

#[tokio::test]
async fn a_restart_only_change_is_named_and_not_applied_while_the_rest_applies() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_cr_restart");
    let kg = spawn_proxy(up.addr, &[&key], "").await;
    let moved = dead_addr().await;
    let next = kg.config_text().replace(&up.addr.to_string(), &moved.to_string());
    assert_ne!(next, kg.config_text());
    apply(&kg, &format!("{next}drain_timeout: 3s\npublic_routes:\n  - path: /v1/open\n"), OK).await;

    kg.get("/v1/open", &[]).await.ok();
    assert_eq!(up.last().uri, "/v1/open", "the public route applied; the upstream is still the running one");
    kg.get_as(&key, "/api/v1/clinics").await.ok();
    assert_eq!(kg.metric("keygate_config_restart_pending").await, 2.0);
    let file = kg.config_path.display().to_string();
    let warning = logs()
        .lines()
        .find(|l| l.contains("needs a restart:") && l.contains(&file))
        .map(str::to_string)
        .expect("a warning naming the settings");
    assert!(warning.contains("needs a restart: upstream, drain_timeout"), "{warning}");

    // Put back as started: nothing is pending any more.
    let back = kg.config_text().replace(&moved.to_string(), &up.addr.to_string()).replace("drain_timeout: 3s\n", "");
    apply(&kg, &back, OK).await;
    eventually(WAIT, async || kg.metric("keygate_config_restart_pending").await == 0.0).await;
}

#[tokio::test]
async fn routes_naming_a_new_scope_let_the_key_table_grant_it() {
    let start = routes(&["/v1/things"]);
    let (up, key, kg) = proxy_for(TestKey::live("k_cr_scopes"), &start).await;
    let reporter = TestKey::live("k_cr_reporter").with("    scopes: [\"reports:read\"]\n");
    let loaded = "keygate_key_table_reloads_total{result=\"ok\"}";
    let tables = kg.metric(loaded).await;

    // The key table first, as an operator might: refused, "reports:read" is no route's scope.
    kg.write_keys(&table_yaml(&[&key, &reporter]));
    let failed = "keygate_key_table_reloads_total{result=\"failed\"}";
    eventually(WAIT, async || kg.metric(failed).await >= 1.0).await;
    kg.get_as(&reporter, "/v1/things").await.assert_error(401, "INVALID_API_KEY");

    let next = "routes:\n  - path: /v1/things\n    resource: things\n  - path: /v1/reports\n    resource: reports\n";
    apply(&kg, &swap_in(&kg, &start, next), OK).await;
    eventually(WAIT, async || kg.metric(loaded).await > tables).await;
    kg.get_as(&reporter, "/v1/reports").await.ok();
    assert_eq!(up.last().uri, "/v1/reports");
    kg.get_as(&reporter, "/v1/things").await.assert_error(403, "INSUFFICIENT_SCOPE");
}

#[tokio::test]
async fn an_alert_webhook_added_by_a_reload_receives_the_next_anomaly() {
    let (up, hook) = (Upstream::spawn().await, Upstream::spawn().await);
    let revoked = TestKey::live("k_cr_revoked").with("    revoked_at: 2026-01-01T00:00:00Z\n");
    let kg = spawn_proxy(up.addr, &[&revoked], "").await;
    let webhook = format!("alerts:\n  webhook:\n    url: http://{}/hooks/keygate\n", hook.addr);
    apply(&kg, &format!("{}{webhook}", kg.config_text()), OK).await;

    kg.get_as(&revoked, "/api/v1/clinics").await.assert_error(401, "API_KEY_REVOKED");
    eventually(WAIT, async || hook.count() == 1).await;
    assert_eq!(hook.last().uri, "/hooks/keygate");
    assert!(String::from_utf8_lossy(&hook.last().body).contains("k_cr_revoked"));
}

/// Two configs that differ in what two different steps read: the tier's burst (limit) and the
/// header style (finish). A request that saw a mix would carry one's headers with the other's
/// numbers.
#[tokio::test]
async fn reloads_under_load_fail_no_request_and_each_request_sees_one_config() {
    let config = |headers: &str, burst: u32| {
        format!(
            "rate_limits:\n  headers: {headers}\n  default_tier: standard\n  tiers:\n    standard: {{rate: 100000/s, burst: {burst}}}\n"
        )
    };
    let (a, b) = (config("ietf", 100_000), config("x-ratelimit", 99_999));
    let (_up, key, kg) = proxy_for(TestKey::live("k_cr_load"), &a).await;
    let kg = Arc::new(kg);
    let key = Arc::new(key);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (kg, key, stop) = (Arc::clone(&kg), Arc::clone(&key), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut seen = (0, 0);
                while !stop.load(Ordering::Relaxed) {
                    let r = kg.get_as(&key, "/api/v1/clinics").await;
                    assert_eq!(r.status, 200, "{}", r.text());
                    match (r.headers.get("ratelimit-policy"), r.headers.get("x-ratelimit-limit")) {
                        (Some(p), None) => {
                            assert_eq!(p, "\"standard\";q=100000;w=1");
                            seen.0 += 1;
                        }
                        (None, Some(l)) => {
                            assert_eq!(l, "99999");
                            seen.1 += 1;
                        }
                        other => panic!("one config's headers, not {other:?}"),
                    }
                }
                seen
            })
        })
        .collect();
    let served = "keygate_requests_total{code=\"OK\",route=\"/api/v1/clinics\"}";
    for n in 0..10 {
        let (from, to, header) = if n % 2 == 0 { (&a, &b, "x-ratelimit-limit") } else { (&b, &a, "ratelimit-policy") };
        apply(&kg, &swap_in(&kg, from, to), OK).await;
        eventually(WAIT, async || kg.get_as(&key, "/api/v1/clinics").await.headers.contains_key(header)).await;
        // Some traffic on each config before the next swap.
        let before = kg.metric(served).await;
        eventually(WAIT, async || kg.metric(served).await > before + 20.0).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut totals = (0, 0);
    for c in clients {
        let (x, y) = c.await.expect("no client saw a failed or mixed request");
        totals = (totals.0 + x, totals.1 + y);
    }
    assert!(totals.0 > 0 && totals.1 > 0, "both configs served: {totals:?}");
    assert!(kg.metric(OK).await >= 10.0);
    assert_eq!(kg.metric(FAILED).await, 0.0);
}

/// The process as shipped: `keygate serve`, a route added to its file, SIGHUP, and the route
/// answers; the log says the signal reloaded the config.
#[tokio::test]
async fn the_binary_applies_a_changed_route_table_on_sighup() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_cr_bin").with(ALL);
    let (dir, keys) = temp_file("keys.yaml", table_yaml(&[&key]));
    let (port, admin) = (dead_addr().await.port(), dead_addr().await.port());
    let base = format!(
        "environment: live\nlisten: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin}\nupstream:\n  url: http://{}\nkeys:\n  file: {}\n",
        up.addr,
        keys.display()
    );
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, format!("{base}{}", routes(&["/v1/things"]))).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let client = || hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let get = async |path: &str| {
        let url = format!("http://127.0.0.1:{port}{path}");
        send(client(), &url, http::Method::GET, &[("authorization", &key.bearer())], bytes::Bytes::new()).await.status
    };
    let listening = async || client().get(format!("http://127.0.0.1:{admin}/healthz").parse().unwrap()).await.is_ok();
    eventually(WAIT, listening).await;
    assert_eq!(get("/v1/things").await, 200);
    assert_eq!(get("/v1/reports").await, 404);

    replace_file(&config, &format!("{base}{}", routes(&["/v1/things", "/v1/reports"])));
    assert_eq!(crate::lifecycle::send_signal(child.id(), 1), 0);
    let metrics = format!("http://127.0.0.1:{admin}/metrics");
    eventually(WAIT, async || {
        let text = send(client(), &metrics, http::Method::GET, &[], bytes::Bytes::new()).await.text();
        text.lines().any(|l| l.starts_with(OK) && !l.ends_with(" 0"))
    })
    .await;
    assert_eq!(get("/v1/reports").await, 200);
    assert_eq!(up.last().uri, "/v1/reports");

    assert_eq!(crate::lifecycle::send_signal(child.id(), 15), 0);
    let exited = tokio::time::timeout(WAIT, tokio::task::spawn_blocking(move || child.wait_with_output())).await;
    let out = exited.expect("keygate exits on SIGTERM").unwrap().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("SIGHUP: reloading config") && log.contains("config reloaded"), "{log}");
}
