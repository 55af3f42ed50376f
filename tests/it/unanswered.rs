//! Requests that end without an answer still leave their trace: a client that hangs up while
//! the upstream works, and a request the drain deadline cuts, each get one audit line, one
//! count and a usage entry, with a code saying how they ended. A request that completes is
//! recorded once, as before.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::*;

/// The audit lines for one request id.
fn audit_lines(rid: &str) -> Vec<serde_json::Value> {
    logs()
        .lines()
        .filter(|l| l.contains(rid))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["request_id"] == rid && v.get("code").is_some())
        .collect()
}

/// Sends a GET with this key and request id on a raw connection and returns it unread.
async fn send_and_hold(kg: &Proxy, key: &TestKey, rid: &str, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(kg.addr).await.unwrap();
    let req = keyed_request(&format!("GET {path} HTTP/1.1"), key, &[&format!("X-Request-Id: {rid}")]);
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

#[tokio::test]
async fn a_client_that_hangs_up_while_the_upstream_works_is_recorded_as_client_closed() {
    let up = Upstream::spawn_with(Behaviour { delay: Duration::from_secs(30), ..Default::default() }).await;
    let key = TestKey::live("k_hangup");
    let kg = spawn_proxy(up.addr, &[&key], "").await;
    let rid = "rid-client-closed-0001";

    let s = send_and_hold(&kg, &key, rid, "/api/v1/clinics").await;
    eventually(Duration::from_secs(5), async || up.count() == 1).await;
    drop(s);

    eventually(Duration::from_secs(5), async || !audit_lines(rid).is_empty()).await;
    let lines = audit_lines(rid);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!((line["code"].as_str(), line["status"].as_u64()), (Some("CLIENT_CLOSED"), Some(499)), "{line}");
    assert_eq!(line["key_id"], "k_hangup");
    assert_eq!(line["route"], "/api/v1/clinics");
    assert!(line["upstream_ms"].is_null(), "the upstream never answered: {line}");
    let series = "keygate_requests_total{code=\"CLIENT_CLOSED\",route=\"/api/v1/clinics\",status_class=\"4xx\"}";
    assert_eq!(kg.metric(series).await, 1.0);
    assert_eq!(kg.metric("keygate_requests_in_flight").await, 0.0);
    let usage = kg.admin_get("/admin/keys/k_hangup").await.json();
    assert_eq!(usage["usage"]["requests"]["4xx"], 1, "{usage}");
}

#[tokio::test]
async fn a_request_cut_by_the_drain_deadline_is_recorded_as_drain_cut() {
    let up = Upstream::spawn_with(Behaviour { delay: Duration::from_secs(30), ..Default::default() }).await;
    let key = TestKey::live("k_cut_record");
    let mut kg = spawn_proxy(up.addr, &[&key], "drain_timeout: 200ms\n").await;
    let rid = "rid-drain-cut-0001";

    let _held = send_and_hold(&kg, &key, rid, "/api/v1/clinics").await;
    eventually(Duration::from_secs(5), async || up.count() == 1).await;
    let running = kg.running.take().unwrap();
    let metrics = std::sync::Arc::clone(&running.metrics);
    running.shutdown();
    assert_eq!(running.stopped().await, 1, "one connection was cut");

    // Recorded by the time the listener has stopped.
    let lines = audit_lines(rid);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!((lines[0]["code"].as_str(), lines[0]["status"].as_u64()), (Some("DRAIN_CUT"), Some(503)));
    let text = metrics.render();
    assert!(
        text.contains("keygate_requests_total{code=\"DRAIN_CUT\",route=\"/api/v1/clinics\",shape=\"inline\",status_class=\"5xx\"} 1"),
        "{text}"
    );
    assert!(text.contains("keygate_requests_in_flight 0"), "{text}");
}

#[tokio::test]
async fn a_completed_request_and_an_answered_refusal_are_recorded_once_each() {
    let (_up, key, kg) = proxy_for(TestKey::live("k_once"), "").await;
    let rid = "rid-completed-0001";
    kg.get("/api/v1/clinics", &[("authorization", &key.bearer()), ("x-request-id", rid)]).await.ok();
    let lines = audit_lines(rid);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["code"], "OK");

    // A refusal that was answered: one line, its own code.
    let refused = "rid-refused-0001";
    kg.get("/api/v1/clinics", &[("x-request-id", refused)]).await.assert_error(401, "UNAUTHORIZED");
    assert_eq!(audit_lines(refused).len(), 1);
    assert_eq!(
        kg.metric("keygate_requests_total{code=\"CLIENT_CLOSED\",route=\"/api/v1/clinics\",status_class=\"4xx\"}")
            .await,
        0.0
    );
}
