//! The upstream side's keep-alive pool: connections are reused, a connection the upstream
//! closes is never used again, and one idle past `pool_idle_timeout` is replaced.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn sequential_requests_share_one_upstream_connection() {
    let (up, key, kg) = proxy_for(TestKey::live("k1"), "").await;
    for _ in 0..10 {
        kg.get("/api/v1/interactions", &[("authorization", &key.bearer())]).await.ok();
    }
    let conns: Vec<usize> = up.requests().iter().map(|s| s.conn).collect();
    assert_eq!(conns, vec![0; 10], "every request went over the first connection");
}

#[tokio::test]
async fn an_upstream_that_closes_every_connection_still_gets_every_request() {
    let up = Upstream::spawn_with(Behaviour { close: true, ..Behaviour::default() }).await;
    let key = TestKey::live("k1");
    let kg = spawn_proxy(up.addr, &[&key], "").await;
    for i in 0..10 {
        let r = kg.get("/api/v1/interactions", &[("authorization", &key.bearer())]).await;
        assert_eq!(r.status.as_u16(), 200, "request {i}: {}", r.text());
    }
    let mut conns: Vec<usize> = up.requests().iter().map(|s| s.conn).collect();
    conns.dedup();
    assert_eq!(conns.len(), 10, "a closed connection is never reused: {conns:?}");
}

#[tokio::test]
async fn a_connection_idle_past_the_timeout_is_replaced() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k1");
    let clock = Clock::manual();
    let kg = spawn_proxy_with(
        ProxyCfg {
            upstream_url: format!("http://{}", up.addr),
            upstream_lines: "  pool_idle_timeout: 200ms\n",
            clock: clock.clone(),
            ..ProxyCfg::default()
        },
        &[&key],
    )
    .await;
    let auth = [("authorization", key.bearer())];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    kg.get("/api/v1/interactions", &auth).await.ok();
    kg.get("/api/v1/interactions", &auth).await.ok();
    clock.advance(Duration::from_millis(200) - Duration::from_nanos(1));
    kg.get("/api/v1/interactions", &auth).await.ok();
    clock.advance(Duration::from_millis(200));
    kg.get("/api/v1/interactions", &auth).await.ok();
    let conns: Vec<usize> = up.requests().iter().map(|s| s.conn).collect();
    assert_eq!(
        conns,
        vec![0, 0, 0, 1],
        "reused while fresh (even a nanosecond short of the timeout), a new connection after the idle timeout"
    );
}
