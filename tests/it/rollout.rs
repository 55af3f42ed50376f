//! Rollouts without a dropped request: the upstream's readiness folded into `/readyz`, the
//! app's probes passed through the admin listener, the shutdown delay (serving while not
//! ready, clients told to go elsewhere), and a rolling update under steady load through the
//! real binary.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::lifecycle::send_signal;
use crate::support::*;

fn readiness(lines: &str) -> String {
    format!("  readiness:\n{lines}")
}

async fn ready(kg: &Proxy) -> (u16, serde_json::Value) {
    let r = kg.admin_get("/readyz").await;
    (r.status.as_u16(), r.json())
}

#[tokio::test]
async fn readyz_is_not_ready_while_the_upstream_fails_its_http_check() {
    let up =
        Upstream::spawn_with(Behaviour { status: Some(http::StatusCode::SERVICE_UNAVAILABLE), ..Default::default() })
            .await;
    let upstream_lines = readiness("    path: /healthz\n    interval: 50ms\n");
    let cfg =
        ProxyCfg { upstream_url: format!("http://{}", up.addr), upstream_lines: &upstream_lines, ..Default::default() };
    let kg = spawn_proxy_with(cfg, &[]).await;

    eventually(Duration::from_secs(5), async || up.count() > 0).await;
    let seen = up.last();
    assert_eq!((seen.method.as_str(), seen.uri.as_str()), ("GET", "/healthz"));
    assert_eq!(seen.one("user-agent"), "keygate-probe");
    eventually(Duration::from_secs(5), async || {
        ready(&kg).await
            == (503, serde_json::json!({"ready": false, "reasons": ["upstream not ready: GET /healthz answered 503"]}))
    })
    .await;
    assert_eq!(kg.metric("keygate_upstream_ready").await, 0.0);
    assert!(logs().contains("upstream not ready"));
}

#[tokio::test]
async fn readyz_follows_the_upstream_down_and_back_up_with_a_connect_check() {
    let gone = dead_addr().await;
    let upstream_lines = readiness("    tcp: true\n    interval: 50ms\n    timeout: 500ms\n");
    let cfg =
        ProxyCfg { upstream_url: format!("http://{gone}"), upstream_lines: &upstream_lines, ..Default::default() };
    let kg = spawn_proxy_with(cfg, &[]).await;

    eventually(Duration::from_secs(5), async || {
        let (status, body) = ready(&kg).await;
        status == 503 && body["reasons"][0].as_str().unwrap().starts_with("upstream not ready: connect failed")
    })
    .await;

    // The app comes up on its port: ready from the next check on.
    let _app = tokio::net::TcpListener::bind(gone).await.unwrap();
    eventually(Duration::from_secs(5), async || ready(&kg).await == (200, serde_json::json!({"ready": true}))).await;
    assert_eq!(kg.metric("keygate_upstream_ready").await, 1.0);
}

#[tokio::test]
async fn without_a_readiness_check_the_upstream_is_not_asked() {
    let up = Upstream::spawn().await;
    let kg = spawn_proxy(up.addr, &[], "").await;
    assert_eq!(ready(&kg).await, (200, serde_json::json!({"ready": true})));
    assert_eq!(up.count(), 0);
    assert!(!kg.admin_get("/metrics").await.text().contains("keygate_upstream_ready"));
}

#[tokio::test]
async fn the_apps_own_probes_pass_through_the_admin_listener_and_nothing_else_does() {
    let up = Upstream::spawn().await;
    let probes =
        "admin_probes:\n  timeout: 1s\n  forward:\n    /app/healthz: /healthz\n    /app/ready: /ready?deep=1\n";
    let kg = spawn_proxy(up.addr, &[], probes).await;

    let r = kg.admin_get("/app/healthz").await;
    r.ok();
    assert_eq!(r.headers["content-type"], "application/json", "the app's own type");
    assert_eq!(up.last().uri, "/healthz");
    kg.admin_get("/app/ready").await.ok();
    assert_eq!(up.last().uri, "/ready?deep=1");
    assert_eq!(kg.admin_get("/app/other").await.status, 404, "only the listed paths");
    assert_eq!(kg.admin_get("/healthz").await.text(), "ok\n", "keygate's own stay keygate's");
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn a_passed_through_probe_fails_when_the_app_is_down() {
    let gone = dead_addr().await;
    let probes = "admin_probes:\n  forward:\n    /app/healthz: /healthz\n";
    let kg = spawn_proxy(gone, &[], probes).await;
    let r = kg.admin_get("/app/healthz").await;
    assert_eq!(r.status, 503);
    assert!(r.text().starts_with("upstream probe failed: GET /healthz: connect failed"), "{}", r.text());
}

#[tokio::test]
async fn during_the_shutdown_delay_keygate_serves_not_ready_and_asks_clients_to_close() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_delay");
    let mut kg = spawn_proxy(up.addr, &[&key], "shutdown_delay: 60s\ndrain_timeout: 5s\n").await;

    kg.running().shutdown();
    assert_eq!(ready(&kg).await, (503, serde_json::json!({"ready": false, "reasons": ["shutting down"]})));
    let r = kg.get("/api/v1/clinics", &[("authorization", &key.bearer())]).await;
    r.ok();
    assert_eq!(r.headers["connection"], "close", "HTTP/1.1 clients are asked to reconnect (elsewhere)");
    assert!(tokio::net::TcpStream::connect(kg.addr).await.is_ok(), "still accepting during the delay");

    // A second signal skips the rest of the delay.
    let running = kg.running.take().unwrap();
    running.stop_handle().drain_now();
    let started = Instant::now();
    assert_eq!(running.stopped().await, 0);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(tokio::net::TcpStream::connect(kg.addr).await.is_err(), "the listener is closed");
}

#[tokio::test]
async fn the_shutdown_delay_passes_then_the_listener_closes() {
    let up = Upstream::spawn().await;
    let mut kg = spawn_proxy(up.addr, &[], "shutdown_delay: 300ms\n").await;
    let running = kg.running.take().unwrap();
    let started = Instant::now();
    running.shutdown();
    assert_eq!(running.stopped().await, 0);
    assert!(started.elapsed() >= Duration::from_millis(300), "served through the delay: {:?}", started.elapsed());
    assert!(tokio::net::TcpStream::connect(kg.addr).await.is_err());
}

#[tokio::test]
async fn an_http2_connection_gets_goaway_when_the_shutdown_begins() {
    let (_up, key, kg) = proxy_for(TestKey::live("k_goaway"), "shutdown_delay: 60s\n").await;
    let stream = tokio::net::TcpStream::connect(kg.addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = || {
        http::Request::get(kg.url("/api/v1/clinics"))
            .header("authorization", key.bearer())
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let r = tx.send_request(req()).await.unwrap();
    assert_eq!(r.status(), 200);
    r.into_body().collect().await.unwrap();

    kg.running().shutdown();
    // The server says GOAWAY and closes once no stream is open: the connection ends.
    tokio::time::timeout(Duration::from_secs(5), conn).await.expect("connection closed by GOAWAY").unwrap().unwrap();
    // New connections are still served during the delay.
    kg.get_h2("/api/v1/clinics", &[("authorization", &key.bearer())]).await.ok();
}

// ---------- a rolling update under steady load, through the real binary ----------

/// `keygate serve` as a process, as the kubelet runs it.
struct Instance {
    child: std::process::Child,
    proxy: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

async fn start_instance(upstream: std::net::SocketAddr, key: &TestKey, extra: &str) -> Instance {
    let (dir, keys) = temp_file("keys.yaml", table_yaml(&[key]));
    let (proxy, admin) = (dead_addr().await, dead_addr().await);
    let unlimited = "rate_limits:\n  tiers:\n    default: {rate: 100000/s, burst: 100000}\n";
    let cfg = format!(
        "environment: live\nlisten: {proxy}\nadmin_listen: {admin}\nupstream:\n  url: http://{upstream}\nkeys:\n  file: {}\n{unlimited}{extra}",
        keys.display()
    );
    std::fs::write(dir.path().join("config.yaml"), cfg).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["serve", "--config"])
        .arg(dir.path().join("config.yaml"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let url = format!("http://{admin}/readyz");
    eventually(
        Duration::from_secs(10),
        async || matches!(client.get(url.parse().unwrap()).await, Ok(r) if r.status() == 200),
    )
    .await;
    Instance { child, proxy, admin, _dir: dir }
}

/// What the clients saw.
#[derive(Debug, Default)]
struct Tally {
    sent: AtomicUsize,
    ok: AtomicUsize,
    failed: AtomicUsize,
    to_old: AtomicUsize,
}

/// Steady load through a load balancer that sends to `old` while its `/readyz` says ready
/// (polled every 100 ms, as an endpoints controller would) and to `new` from then on; SIGTERM to
/// `old` once traffic flows. Returns the tally and how long `old` took to exit.
async fn rolling_update(shutdown_delay: &str, load: Duration) -> (Tally, Duration, std::process::ExitStatus) {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_roll");
    let extra = format!("shutdown_delay: {shutdown_delay}\ndrain_timeout: 10s\n");
    let mut old = start_instance(up.addr, &key, &extra).await;
    let new = start_instance(up.addr, &key, &extra).await;

    let old_ready = Arc::new(AtomicBool::new(true));
    let tally = Arc::new(Tally::default());
    let done = Arc::new(AtomicBool::new(false));
    let balancer = {
        let (flag, done, admin) = (Arc::clone(&old_ready), Arc::clone(&done), old.admin);
        tokio::spawn(async move {
            let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
            let url: http::Uri = format!("http://{admin}/readyz").parse().unwrap();
            while !done.load(Ordering::Relaxed) && flag.load(Ordering::Relaxed) {
                let ready = matches!(client.get(url.clone()).await, Ok(r) if r.status() == 200);
                if !ready {
                    flag.store(false, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (client, tally, done, flag, bearer) =
                (client.clone(), Arc::clone(&tally), Arc::clone(&done), Arc::clone(&old_ready), key.bearer());
            let (a, b) = (old.proxy, new.proxy);
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    let to_old = flag.load(Ordering::Relaxed);
                    let target = if to_old { a } else { b };
                    let req = http::Request::get(format!("http://{target}/api/v1/clinics"))
                        .header("authorization", &bearer)
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    tally.sent.fetch_add(1, Ordering::Relaxed);
                    let ok = match client.request(req).await {
                        Ok(r) => r.status() == 200 && r.into_body().collect().await.is_ok(),
                        Err(_) => false,
                    };
                    let counter = if ok { &tally.ok } else { &tally.failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                    if to_old && !flag.load(Ordering::Relaxed) {
                        tally.to_old.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    eventually(Duration::from_secs(10), async || tally.ok.load(Ordering::Relaxed) >= 200).await;
    let terminated = Instant::now();
    assert_eq!(send_signal(old.child.id(), 15), 0);
    let exit = tokio::task::spawn_blocking(move || old.child.wait().unwrap()).await.unwrap();
    let took = terminated.elapsed();
    // The new instance carries the load on its own for as long again.
    let at_exit = tally.ok.load(Ordering::Relaxed);
    eventually(load + Duration::from_secs(10), async || {
        terminated.elapsed() >= load && tally.ok.load(Ordering::Relaxed) > at_exit + 200
    })
    .await;
    done.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    balancer.abort();
    let mut new = new;
    let _ = new.child.kill();
    let _ = new.child.wait();
    let tally = Arc::try_unwrap(tally).unwrap();
    (tally, took, exit)
}

/// SIGTERM to one instance while 8 clients keep sending through a readiness-following load
/// balancer: with a shutdown delay longer than the balancer's reaction, not one request fails.
/// `bench/rolling.sh` runs it longer and beside a run without the delay.
#[tokio::test]
async fn a_rolling_update_under_steady_load_loses_no_request() {
    let secs: u64 = std::env::var("KEYGATE_ROLLING_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let delay = std::env::var("KEYGATE_ROLLING_DELAY").unwrap_or_else(|_| "1s".into());
    let (t, took, exit) = rolling_update(&delay, Duration::from_secs(secs)).await;
    let (sent, ok, failed) = (t.sent.into_inner(), t.ok.into_inner(), t.failed.into_inner());
    println!(
        "rolling update (shutdown_delay {delay}): {sent} requests, {ok} ok, {failed} failed; {} in flight to the old \
         instance when its readiness flipped; old instance exited {exit} {took:?} after SIGTERM",
        t.to_old.into_inner()
    );
    if std::env::var("KEYGATE_ROLLING_EXPECT_LOSS").is_ok() {
        return;
    }
    assert_eq!(failed, 0, "no request lost");
    assert!(exit.success(), "clean exit: {exit}");
}
