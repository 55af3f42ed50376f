//! Anomaly alerts against a real webhook on loopback: what it receives, what the cool-down
//! holds back, how failures are counted, and that a stuck webhook never slows `notify`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use keygate::alert::{AlertEvent, AlertSettings, Alerter};
use keygate::clock::Clock;
use keygate::metrics::Metrics;
use serde_json::json;
use time::macros::datetime;

use crate::support::{dead_addr, eventually, logs, serve_tcp, temp_file, Behaviour, Upstream};

const WAIT: Duration = Duration::from_secs(5);

fn settings(url: String) -> AlertSettings {
    let mut s = AlertSettings::new(url.parse().unwrap(), "pod-7");
    s.cooldown = Duration::from_secs(60);
    s.timeout = Duration::from_secs(2);
    s
}

fn event(kind: &'static str, subject: &str) -> AlertEvent {
    AlertEvent {
        kind,
        subject: subject.into(),
        detail: "25 invalid keys in 60 s".into(),
        at: datetime!(2024-05-01 10:00:00 UTC),
    }
}

/// `keygate_alerts_total{result="…"}` as rendered for a scrape.
fn alerts(m: &Metrics, result: &str) -> u64 {
    let series = format!("keygate_alerts_total{{result=\"{result}\"}} ");
    let text = m.render();
    let line = text.lines().find_map(|l| l.strip_prefix(&series)).unwrap_or_else(|| panic!("no {series}"));
    line.trim().parse().unwrap()
}

fn body(seen: &crate::support::Seen) -> serde_json::Value {
    serde_json::from_slice(&seen.body).unwrap()
}

#[tokio::test]
async fn an_alert_reaches_the_webhook_as_slack_compatible_json() {
    let hook = Upstream::spawn().await;
    let m = Arc::new(Metrics::new());
    let alerter =
        Alerter::spawn(settings(format!("http://{}/services/T000/B000/XXXX", hook.addr)), m.clone(), Clock::system())
            .unwrap();

    alerter.notify(event("invalid_key_burst", "203.0.113.7"));
    eventually(WAIT, async || alerts(&m, "sent") == 1).await;

    let seen = hook.last();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.uri, "/services/T000/B000/XXXX");
    assert_eq!(seen.one("content-type"), "application/json");
    assert_eq!(
        body(&seen),
        json!({
            "text": ":rotating_light: keygate (pod-7) anomaly invalid_key_burst — subject 203.0.113.7: 25 invalid keys in 60 s",
            "kind": "invalid_key_burst",
            "subject": "203.0.113.7",
            "detail": "25 invalid keys in 60 s",
            "instance": "pod-7",
            "timestamp": "2024-05-01T10:00:00Z",
            "suppressed_since_last": 0,
        })
    );
    assert_eq!(alerts(&m, "failed"), 0);
}

#[tokio::test]
async fn repeats_within_the_cooldown_are_suppressed_and_other_subjects_are_not() {
    let hook = Upstream::spawn().await;
    let m = Arc::new(Metrics::new());
    let alerter = Alerter::spawn(settings(format!("http://{}/hook", hook.addr)), m.clone(), Clock::system()).unwrap();

    for _ in 0..3 {
        alerter.notify(event("invalid_key_burst", "203.0.113.7"));
    }
    alerter.notify(event("invalid_key_burst", "198.51.100.9"));
    eventually(WAIT, async || alerts(&m, "sent") == 2 && alerts(&m, "suppressed") == 2).await;

    let subjects: Vec<_> = hook.requests().iter().map(|s| body(s)["subject"].as_str().unwrap().to_string()).collect();
    assert_eq!(subjects, ["203.0.113.7", "198.51.100.9"]);
}

#[tokio::test]
async fn after_the_cooldown_the_next_alert_reports_how_many_were_suppressed() {
    let hook = Upstream::spawn().await;
    let m = Arc::new(Metrics::new());
    let mut s = settings(format!("http://{}/hook", hook.addr));
    s.cooldown = Duration::from_secs(1);
    let clock = Clock::manual();
    let alerter = Alerter::spawn(s, m.clone(), clock.clone()).unwrap();

    // Each step waits for the alert task to have judged the last event before the clock moves.
    alerter.notify(event("rate_spike", "k_live_1"));
    eventually(WAIT, async || alerts(&m, "sent") == 1).await;
    clock.advance(Duration::from_secs(1) - Duration::from_nanos(1));
    for _ in 0..2 {
        alerter.notify(event("rate_spike", "k_live_1"));
    }
    eventually(WAIT, async || alerts(&m, "sent") == 1 && alerts(&m, "suppressed") == 2).await;
    clock.advance(Duration::from_nanos(1));
    alerter.notify(event("rate_spike", "k_live_1"));
    eventually(WAIT, async || alerts(&m, "sent") == 2).await;

    let seen = hook.requests();
    assert_eq!(body(&seen[0])["suppressed_since_last"], 0);
    let last = body(&seen[1]);
    assert_eq!(last["suppressed_since_last"], 2);
    assert!(last["text"].as_str().unwrap().ends_with("(2 repeats suppressed since the last alert)"), "{last}");
}

/// A webhook answering 5xx is retried twice, one answering 4xx not at all; either way the alert
/// is counted failed once the delivery is over, retries included.
#[tokio::test]
async fn a_failing_webhook_is_retried_only_on_5xx_then_counted_failed() {
    for (status, tries) in [(StatusCode::BAD_GATEWAY, 3), (StatusCode::FORBIDDEN, 1)] {
        let hook = Upstream::spawn_with(Behaviour { status: Some(status), ..Default::default() }).await;
        let m = Arc::new(Metrics::new());
        let alerter =
            Alerter::spawn(settings(format!("http://{}/hook", hook.addr)), m.clone(), Clock::system()).unwrap();

        alerter.notify(event("rate_spike", "k_live_1"));
        eventually(WAIT, async || alerts(&m, "failed") == 1).await;
        assert_eq!(hook.count(), tries, "{status}");
        assert_eq!(alerts(&m, "sent"), 0, "{status}");
    }
}

#[tokio::test]
async fn a_webhook_that_never_answers_cannot_slow_notify() {
    // Accepts connections and holds them open without reading a byte.
    let addr = serve_tcp(|held| async move {
        std::future::pending::<()>().await;
        drop(held);
    })
    .await;
    let m = Arc::new(Metrics::new());
    let mut s = settings(format!("http://{addr}/hook"));
    s.queue = 16;
    s.timeout = Duration::from_secs(30);
    let alerter = Alerter::spawn(s, m.clone(), Clock::system()).unwrap();

    // Distinct subjects: none is suppressed, so the task is stuck on the first delivery.
    let events: Vec<_> = (0..1000).map(|i| event("invalid_key_burst", &format!("203.0.113.{i}"))).collect();
    let started = Instant::now();
    for e in events {
        alerter.notify(e);
    }
    let took = started.elapsed();
    assert!(took < Duration::from_millis(50), "1000 notify calls took {took:?}");

    // 16 wait in the queue and at most one is being delivered; the rest were dropped.
    let dropped = alerts(&m, "dropped");
    assert!((983..=984).contains(&dropped), "dropped {dropped}");
    assert_eq!(alerts(&m, "sent") + alerts(&m, "failed"), 0);
}

#[tokio::test]
async fn the_webhook_token_never_reaches_the_logs() {
    logs(); // installs the capturing subscriber
    let dead = dead_addr().await;
    let failing = Upstream::spawn_with(Behaviour { status: Some(StatusCode::NOT_FOUND), ..Default::default() }).await;
    let m = Arc::new(Metrics::new());
    for host in [dead, failing.addr] {
        let url = format!("http://hookuser:s3cr3t-pass@{host}/services/T0/B0/s3cr3t-path?token=s3cr3t-query");
        let alerter = Alerter::spawn(settings(url), m.clone(), Clock::system()).unwrap();
        alerter.notify(event("revoked_key_use", "k_live_1"));
    }
    eventually(WAIT, async || alerts(&m, "failed") == 2).await;

    let logs = logs();
    let line_for = |host: std::net::SocketAddr| {
        logs.lines()
            .find(|l| {
                l.contains("anomaly alert not delivered") && l.contains(&format!("\"webhook\":\"http://{host}\""))
            })
            .unwrap_or_else(|| panic!("no warning naming http://{host} in:\n{logs}"))
            .to_string()
    };
    assert!(line_for(dead).contains("\"attempts\":3"), "{}", line_for(dead));
    assert!(line_for(failing.addr).contains("404"), "{}", line_for(failing.addr));
    assert_eq!(failing.count(), 1);
    assert!(!logs.contains("s3cr3t"), "a webhook secret was logged");
    assert!(!logs.contains("hookuser"), "webhook userinfo was logged");
}

#[tokio::test]
async fn dropping_every_alerter_ends_its_task() {
    let hook = Upstream::spawn().await;
    let m = Arc::new(Metrics::new());
    let a = Alerter::spawn(settings(format!("http://{}/hook", hook.addr)), m.clone(), Clock::system()).unwrap();
    let b = a.clone();
    drop(a);
    b.notify(event("rate_spike", "k_live_1"));
    eventually(WAIT, async || alerts(&m, "sent") == 1).await;
    drop(b);
    // The task held the last other reference to the metrics.
    eventually(WAIT, async || Arc::strong_count(&m) == 1).await;
}

#[tokio::test]
async fn spawn_refuses_what_it_cannot_use() {
    let m = Arc::new(Metrics::new());
    let err = |s: AlertSettings| Alerter::spawn(s, m.clone(), Clock::system()).err().expect("spawn should fail");

    let e = err(settings("ftp://hooks.example/s3cr3t".into()));
    assert!(e.contains("http or https") && !e.contains("s3cr3t"), "{e}");

    let (dir, ca) = temp_file("ca.pem", "not a certificate");
    let mut s = settings("https://hooks.example/x".into());
    s.ca_file = Some(ca);
    let e = err(s);
    assert!(e.contains("alerts.webhook.ca_file") && e.contains("no certificates"), "{e}");

    let mut s = settings("https://hooks.example/x".into());
    s.ca_file = Some(dir.path().join("missing.pem"));
    assert!(err(s).contains("missing.pem"));

    let mut s = settings("https://hooks.example/x".into());
    s.queue = 0;
    err(s);
}

#[tokio::test]
async fn a_webhook_token_from_a_secret_file_is_sent_as_authorization_and_never_logged() {
    logs(); // installs the capturing subscriber, so the failure below is logged where we look
    let hook = Upstream::spawn_with(Behaviour { status: Some(StatusCode::UNAUTHORIZED), ..Default::default() }).await;
    let dir = tempfile::tempdir().unwrap();
    let (url_file, token_file) = (dir.path().join("url"), dir.path().join("token"));
    std::fs::write(&url_file, format!("http://{}/hooks/keygate\n", hook.addr)).unwrap();
    std::fs::write(&token_file, "tok-from-secret-file\n").unwrap();
    let text = format!(
        "environment: live\nupstream:\n  url: http://127.0.0.1:1\nkeys:\n  file: k.yaml\nalerts:\n  webhook:\n    url_file: {}\n    token_file: {}\n",
        url_file.display(),
        token_file.display()
    );
    let cfg = keygate::config::parse(&text, "t").unwrap_or_else(|e| panic!("{e}"));
    let webhook = cfg.webhook.unwrap();
    assert!(!format!("{webhook:?}").contains("tok-from-secret-file"), "Debug shows the token");
    let m = Arc::new(Metrics::new());
    let alerter = Alerter::spawn(webhook, m.clone(), Clock::system()).unwrap();
    alerter.notify(event("invalid_key_burst", "198.51.100.9"));
    eventually(WAIT, async || alerts(&m, "failed") == 1).await;

    let seen = hook.last();
    assert_eq!(seen.uri, "/hooks/keygate");
    assert_eq!(seen.one("authorization"), "Bearer tok-from-secret-file");
    assert!(!logs().contains("tok-from-secret-file"), "the webhook token was logged");
}
