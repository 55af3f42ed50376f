//! Connection limits: the listen backlog as configured (what waits past `max_connections`),
//! and the per-address cap that keeps one client from holding every slot.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// The backlog of the listening socket on `port`, as the kernel reports it (`ss`, Send-Q).
fn backlog_of(port: u16) -> u32 {
    provision_tools();
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2) is needed and could not be installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().next().unwrap_or_else(|| panic!("no listener on {port}: {text:?}"));
    // State Recv-Q Send-Q Local Peer: for a listener, Send-Q is the backlog.
    line.split_whitespace().nth(2).and_then(|q| q.parse().ok()).unwrap_or_else(|| panic!("{line:?}"))
}

#[tokio::test]
async fn both_listeners_use_the_configured_backlog_and_1024_by_default() {
    let up = Upstream::spawn().await;
    let kg = spawn_proxy(up.addr, &[], "limits:\n  listen_backlog: 333\n").await;
    assert_eq!(backlog_of(kg.addr.port()), 333);
    assert_eq!(backlog_of(kg.admin.port()), 333);

    let default = spawn_proxy(up.addr, &[], "").await;
    assert_eq!(backlog_of(default.addr.port()), 1024);
}

/// Past `max_connections`, clients wait in the backlog and are served in turn: none refused.
#[tokio::test]
async fn connections_past_max_connections_wait_and_are_served() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_queue");
    let unlimited = "rate_limits:\n  tiers:\n    default: {rate: 100000/s, burst: 100000}\n";
    let cfg = format!("limits:\n  max_connections: 2\n  max_connections_per_ip: 0\n{unlimited}");
    let kg = spawn_proxy(up.addr, &[&key], &cfg).await;
    let clients: Vec<_> = (0..300)
        .map(|_| {
            let req = raw_get("/api/v1/clinics", &key);
            let addr = kg.addr;
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(req.as_bytes()).await.unwrap();
                let mut out = Vec::new();
                s.read_to_end(&mut out).await.unwrap();
                raw_status(&String::from_utf8_lossy(&out))
            })
        })
        .collect();
    for c in clients {
        assert_eq!(c.await.unwrap(), 200);
    }
}

/// A connection that holds its slot: connected and one request answered (so the server has
/// surely accepted it), then kept open.
async fn held_connection(kg: &Proxy, key: &TestKey) -> TcpStream {
    let mut s = TcpStream::connect(kg.addr).await.unwrap();
    let req = format!("GET /api/v1/clinics HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n", key.bearer());
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    s
}

/// Whether the server closed `s` without answering a request on it.
async fn closed_without_answer(mut s: TcpStream, key: &TestKey) -> bool {
    let _ = s.write_all(raw_get("/api/v1/clinics", key).as_bytes()).await;
    let mut out = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await {
        Ok(Ok(_)) => out.is_empty(),
        Ok(Err(_)) => true, // reset
        Err(_) => panic!("the connection was neither answered nor closed"),
    }
}

#[tokio::test]
async fn one_address_gets_at_most_its_cap_of_connections_and_the_refusals_are_counted() {
    let (_up, key, kg) = proxy_for(TestKey::live("k_cap"), "limits:\n  max_connections_per_ip: 2\n").await;
    let first = held_connection(&kg, &key).await;
    let _second = held_connection(&kg, &key).await;

    let third = TcpStream::connect(kg.addr).await.unwrap();
    assert!(closed_without_answer(third, &key).await, "the third connection from 127.0.0.1 is closed");
    assert_eq!(kg.metric("keygate_connections_refused_total{reason=\"per_ip\"}").await, 1.0);

    // One closes: its slot is free again.
    drop(first);
    eventually(Duration::from_secs(5), async || kg.metric("keygate_open_connections").await == 1.0).await;
    held_connection(&kg, &key).await;
}

#[tokio::test]
async fn trusted_proxies_are_not_held_to_the_per_address_cap() {
    let cfg = "limits:\n  max_connections_per_ip: 1\ntrusted_proxies: [127.0.0.1]\n";
    let (_up, key, kg) = proxy_for(TestKey::live("k_trusted_cap"), cfg).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(held_connection(&kg, &key).await);
    }
    assert_eq!(kg.metric("keygate_connections_refused_total{reason=\"per_ip\"}").await, 0.0);
}
