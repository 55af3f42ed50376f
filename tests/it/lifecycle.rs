//! Lifecycle: the happy path end to end, HTTP/2, TLS, key table reload, upstream failures,
//! graceful shutdown, admin endpoints.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn a_valid_key_reaches_the_upstream_with_identity_headers() {
    let (up, key, kg) = proxy_for(TestKey::live("k_reader").with("    clinics: [clinic_001, clinic_002]\n"), "").await;

    let r =
        kg.get("/api/v1/clinics/clinic_001/interactions?from=2026-01-01", &[("authorization", &key.bearer())]).await;

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), UPSTREAM_BODY);
    assert_eq!(r.headers["x-upstream"], "yes");
    let seen = up.last();
    assert_eq!(seen.uri, "/api/v1/clinics/clinic_001/interactions?from=2026-01-01");
    assert_eq!(seen.one("x-allowed-clinics"), "clinic_001,clinic_002");
    assert_eq!(seen.one("x-scopes"), "interactions:read metrics:read campaigns:read clinics:read");
    assert_eq!(seen.one("x-api-key-id"), "k_reader");
    assert_eq!(seen.one("x-api-key-environment"), "live");
    assert_eq!(seen.one("x-forwarded-for"), "127.0.0.1");
    assert_eq!(seen.one("x-forwarded-proto"), "http");
    assert!(seen.all("authorization").is_empty(), "the key is not forwarded by default");
    assert_eq!(seen.one("x-request-id"), r.headers["x-request-id"].to_str().unwrap());
}

#[tokio::test]
async fn http2_prior_knowledge_is_served_and_forwarded_as_http1() {
    let (up, key, kg) = proxy_for(TestKey::live("k_h2"), "").await;

    let r = kg.get_h2("/api/v1/clinics", &[("authorization", &key.bearer())]).await;

    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert_eq!(seen.version, http::Version::HTTP_11);
    assert_eq!(seen.one("x-api-key-id"), "k_h2");
    assert!(!seen.one("host").is_empty(), "HTTP/2 :authority becomes Host for the HTTP/1.1 upstream");
    let missing = kg.get_h2("/api/v1/clinics", &[]).await;
    missing.assert_error(401, "UNAUTHORIZED");
    let _ = Duration::ZERO;
}

#[tokio::test]
async fn upstream_down_is_502_and_counted() {
    let key = TestKey::live("k_down");
    let kg = spawn_proxy(dead_addr().await, &[&key], "").await;

    let r = kg.get("/api/v1/clinics", &[("authorization", &key.bearer()), ("x-request-id", "rid-refused")]).await;

    r.assert_error(502, "UPSTREAM_UNAVAILABLE");
    assert_eq!(kg.metric("keygate_upstream_errors_total{kind=\"connect\"}").await, 1.0);
    let line = upstream_failure_line("rid-refused");
    assert_eq!(
        (line["cause"].as_str(), line["stage"].as_str()),
        (Some("connection refused"), Some("connect")),
        "{line}"
    );
    assert!(!line.to_string().contains(&key.secret), "the key never reaches the line");
}

/// The one log line a 502 leaves, found by its request id.
pub fn upstream_failure_line(request_id: &str) -> serde_json::Value {
    let found: Vec<serde_json::Value> = logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "upstream unavailable" && v["request_id"] == request_id)
        .collect();
    assert_eq!(found.len(), 1, "one line for {request_id}: {found:?}");
    found.into_iter().next().unwrap()
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let up = Upstream::spawn_with(Behaviour { delay: Duration::from_secs(3), ..Default::default() }).await;
    let key = TestKey::live("k_slow");
    let cfg = ProxyCfg {
        upstream_url: format!("http://{}", up.addr),
        upstream_lines: "  response_timeout: 300ms\n",
        ..ProxyCfg::default()
    };
    let kg = spawn_proxy_with(cfg, &[&key]).await;

    let started = std::time::Instant::now();
    let r = kg.get("/api/v1/clinics", &[("authorization", &key.bearer())]).await;

    r.assert_error(504, "UPSTREAM_TIMEOUT");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert_eq!(kg.metric("keygate_upstream_errors_total{kind=\"timeout\"}").await, 1.0);
}

#[tokio::test]
async fn key_table_reload_picks_up_new_and_revoked_keys_within_two_seconds() {
    let up = Upstream::spawn().await;
    let old = TestKey::live("k_old");
    let new = TestKey::live("k_new");
    let kg = spawn_proxy(up.addr, &[&old], "").await;
    assert_eq!(kg.get("/api/v1/clinics", &[("authorization", &new.bearer())]).await.status, 401);

    let revoked =
        TestKey { secret: old.secret.clone(), ..TestKey::live("k_old") }.with("    revoked_at: 2020-01-01T00:00:00Z\n");
    kg.write_keys(&table_yaml(&[&revoked, &new]));

    let took = eventually(Duration::from_secs(2), async || {
        kg.get("/api/v1/clinics", &[("authorization", &new.bearer())]).await.status == 200
    })
    .await;
    kg.get("/api/v1/clinics", &[("authorization", &old.bearer())]).await.assert_error(401, "API_KEY_REVOKED");
    assert!(took < Duration::from_secs(2));
    // The reload is counted, and the census run, just after the swap (the census off the request
    // threads): wait for both, then the counts are exact.
    let reloads = "keygate_key_table_reloads_total{result=\"ok\"}";
    eventually(Duration::from_secs(2), async || kg.metric(reloads).await >= 2.0).await;
    let revoked = "keygate_key_table_keys{environment=\"live\",state=\"revoked\"}";
    eventually(Duration::from_secs(2), async || kg.metric(revoked).await != 0.0).await;
    assert_eq!(kg.metric(revoked).await, 1.0);
}

#[tokio::test]
async fn a_corrupt_key_table_is_refused_and_the_last_good_one_keeps_serving() {
    let (_up, key, kg) = proxy_for(TestKey::live("k_keep"), "").await;

    // Truncated mid-entry, then garbage, then an empty file: each refused.
    let good = table_yaml(&[&key]);
    for bad in [&good[..good.len() - 25], "keys: [ {id: 1", ""] {
        let failed_before = kg.metric("keygate_key_table_reloads_total{result=\"failed\"}").await;
        kg.write_keys(bad);
        eventually(Duration::from_secs(2), async || {
            kg.metric("keygate_key_table_reloads_total{result=\"failed\"}").await > failed_before
        })
        .await;
        let r = kg.get("/api/v1/clinics", &[("authorization", &key.bearer())]).await;
        assert_eq!(r.status, 200, "the last good table still serves after {bad:?}");
    }
    assert!(logs().contains("key table reload failed; still serving the last good table"));
    assert_eq!(kg.admin_get("/readyz").await.status, 200);
}

#[tokio::test]
async fn explicit_reload_as_on_sighup_swaps_the_table() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_hup");
    // A poll interval far longer than the test, so only the explicit reload explains the change.
    let cfg = ProxyCfg {
        upstream_url: format!("http://{}", up.addr),
        keys_lines: "  reload_interval: 1h\n",
        ..ProxyCfg::default()
    };
    let kg = spawn_proxy_with(cfg, &[]).await;
    kg.write_keys(&table_yaml(&[&key]));
    assert_eq!(kg.get("/api/v1/clinics", &[("authorization", &key.bearer())]).await.status, 401);
    kg.running().reload();
    eventually(Duration::from_secs(2), async || {
        kg.get("/api/v1/clinics", &[("authorization", &key.bearer())]).await.status == 200
    })
    .await;
}

#[tokio::test]
async fn admin_endpoints_and_metrics() {
    let (_up, key, kg) = proxy_for(TestKey::live("k_admin"), "").await;

    assert_eq!(kg.admin_get("/healthz").await.status, 200);
    assert_eq!(kg.admin_get("/readyz").await.status, 200);
    kg.get("/api/v1/clinics", &[("authorization", &key.bearer())]).await;
    kg.get("/api/v1/clinics", &[]).await;

    let text = kg.admin_get("/metrics").await.text();
    assert!(
        text.contains(
            "keygate_requests_total{code=\"OK\",route=\"/api/v1/clinics\",shape=\"inline\",status_class=\"2xx\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("keygate_requests_total{code=\"UNAUTHORIZED\",route=\"/api/v1/clinics\",shape=\"inline\",status_class=\"4xx\"} 1"),
        "{text}"
    );
    assert!(text.contains("keygate_request_duration_seconds_bucket{method=\"GET\",route=\"/api/v1/clinics\""));
    assert!(text.contains("keygate_upstream_duration_seconds_count{method=\"GET\",route=\"/api/v1/clinics\"} 1"));
    assert!(text.contains("keygate_key_table_keys{environment=\"live\",state=\"active\"} 1"));
    assert!(text.contains("keygate_build_info{version="));
    assert!(!text.contains(&key.secret));
    assert_eq!(kg.admin_get("/nope").await.status, 404);
}

#[tokio::test]
async fn graceful_shutdown_finishes_the_request_in_flight_and_turns_readiness_off() {
    let up = Upstream::spawn_with(Behaviour { delay: Duration::from_millis(700), ..Default::default() }).await;
    let key = TestKey::live("k_drain");
    let kg = spawn_proxy(up.addr, &[&key], "drain_timeout: 5s\n").await;
    let url = kg.url("/api/v1/clinics");
    let bearer = key.bearer();
    let in_flight = tokio::spawn(async move {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        send(client, &url, http::Method::GET, &[("authorization", &bearer)], bytes::Bytes::new()).await
    });
    eventually(Duration::from_secs(2), async || up.count() == 1).await;

    kg.running().shutdown();
    assert_eq!(kg.admin_get("/readyz").await.status, 503, "readiness turns off at once");

    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200, "the request in flight completes");
    let mut kg = kg;
    let cut = kg.running.take().unwrap().stopped().await;
    assert_eq!(cut, 0, "drained cleanly");
    assert!(tokio::net::TcpStream::connect(kg.addr).await.is_err(), "the listener is closed");
}

#[tokio::test]
async fn drain_deadline_cuts_requests_that_outlive_it() {
    let up = Upstream::spawn_with(Behaviour { delay: Duration::from_secs(5), ..Default::default() }).await;
    let key = TestKey::live("k_cut");
    let mut kg = spawn_proxy(up.addr, &[&key], "drain_timeout: 200ms\n").await;
    let url = kg.url("/api/v1/clinics");
    let bearer = key.bearer();
    tokio::spawn(async move {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let _ = client
            .request(
                http::Request::get(url)
                    .header("authorization", bearer)
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap(),
            )
            .await;
    });
    eventually(Duration::from_secs(2), async || up.count() == 1).await;
    let running = kg.running.take().unwrap();
    running.shutdown();
    let started = std::time::Instant::now();
    assert_eq!(running.stopped().await, 1, "one connection was cut at the deadline");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(logs().contains("drain deadline reached"));
}

#[tokio::test]
async fn requests_during_repeated_table_swaps_see_one_whole_table_or_the_other() {
    let up = Upstream::spawn().await;
    let a = TestKey::live("k_a").with("    clinics: [clinic_a]\n");
    let b = TestKey::live("k_b").with("    clinics: [clinic_b]\n");
    // Load, not limits, is under test here.
    let unlimited = "rate_limits:\n  tiers:\n    default: {rate: 100000/s, burst: 100000}\n";
    let kg = spawn_proxy(up.addr, &[&a], unlimited).await;
    let (v1, v2) = (table_yaml(&[&a]), table_yaml(&[&b]));
    let status = async |k: &TestKey| kg.get("/api/v1/clinics", &[("authorization", &k.bearer())]).await.status;

    let swapping = std::cell::Cell::new(true);
    let writer = async {
        for i in 0..20 {
            let (now_in, now_out) = if i % 2 == 0 { (&b, &a) } else { (&a, &b) };
            kg.write_keys(if i % 2 == 0 { &v2 } else { &v1 });
            // SIGHUP, so no poll interval is waited out; the next table is written only once this
            // one is serving.
            kg.running().reload();
            eventually(Duration::from_secs(2), async || status(now_in).await == 200 && status(now_out).await == 401)
                .await;
        }
        swapping.set(false);
    };
    let requests = async {
        let mut statuses = std::collections::BTreeMap::new();
        while swapping.get() {
            for k in [&a, &b] {
                *statuses.entry(status(k).await.as_u16()).or_insert(0) += 1;
            }
        }
        statuses
    };
    let ((), statuses) = tokio::join!(writer, requests);
    assert!(statuses.keys().all(|s| *s == 200 || *s == 401), "{statuses:?}");
    // Every forwarded request carried the clinics of the key that authenticated it.
    for seen in up.requests() {
        let pair = (seen.one("x-api-key-id"), seen.one("x-allowed-clinics"));
        assert!(pair == ("k_a".into(), "clinic_a".into()) || pair == ("k_b".into(), "clinic_b".into()), "{pair:?}");
    }
    assert_eq!(kg.metric("keygate_key_table_reloads_total{result=\"failed\"}").await, 0.0);
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_up, key, kg) = proxy_for(TestKey::live("k_idle"), "limits:\n  idle_timeout: 300ms\n").await;

    let mut s = tokio::net::TcpStream::connect(kg.addr).await.unwrap();
    let req = format!("GET /api/v1/clinics HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n", key.bearer());
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    let started = std::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await.expect("closed in time").unwrap_or(0);
    assert_eq!(n, 0, "keygate closed the idle keep-alive connection");
    assert!(started.elapsed() >= Duration::from_millis(250), "not before the timeout: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_silent_socket_is_closed_at_the_header_deadline_not_the_idle_timeout() {
    use tokio::io::AsyncReadExt;
    let up = Upstream::spawn().await;
    let kg = spawn_proxy(up.addr, &[], "limits:\n  idle_timeout: 60s\n  header_read_timeout: 300ms\n").await;

    let mut s = tokio::net::TcpStream::connect(kg.addr).await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;

    assert!(closed.is_ok(), "a connection that never sends a byte holds a slot only until the header deadline");
}

/// The process as shipped: `keygate serve`, then SIGTERM → a clean exit (status 0) with the
/// log flushed, well within the drain timeout.
#[tokio::test]
async fn the_binary_exits_cleanly_on_sigterm() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_bin");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keys.yaml"), table_yaml(&[&key])).unwrap();
    let port = dead_addr().await.port();
    let admin = dead_addr().await.port();
    let cfg = format!(
        "environment: live\nlisten: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin}\nupstream:\n  url: http://{}\nkeys:\n  file: {}\n",
        up.addr,
        dir.path().join("keys.yaml").display()
    );
    std::fs::write(dir.path().join("config.yaml"), cfg).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["serve", "--config"])
        .arg(dir.path().join("config.yaml"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/api/v1/clinics");
    eventually(Duration::from_secs(10), async || {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let req = http::Request::get(&url)
            .header("authorization", key.bearer())
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        matches!(client.request(req).await, Ok(r) if r.status() == 200)
    })
    .await;

    let started = std::time::Instant::now();
    assert_eq!(send_signal(child.id(), 15), 0);
    let status = tokio::task::spawn_blocking(move || {
        // Bounded: a keygate that never exits fails the test instead of hanging CI.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("keygate did not exit within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        (status, err)
    })
    .await
    .unwrap();
    assert!(status.0.success(), "exit status {:?}; stderr: {}", status.0, status.1);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(status.1.contains("\"code\":\"OK\""), "the audit line was flushed at exit: {}", status.1);
    assert!(status.1.contains("keygate stopped"), "{}", status.1);
    assert!(!status.1.contains(&key.secret));
}

/// `kill(pid, sig)` without a libc dependency: the `kill` command.
pub(crate) fn send_signal(pid: u32, sig: i32) -> i32 {
    std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .code()
        .unwrap_or(-1)
}
