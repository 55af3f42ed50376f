//! Hostile input, round 2: paths an upstream could resolve differently from keygate, body
//! framing that could be read two ways, clients' faults that must not page the upstream's
//! on-call, IPv4 clients seen through IPv6 sockets, and refusals the HTTP parser used to send
//! without the standard body. Each test goes through a real socket to a recording upstream.

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

async fn full_key_proxy(id: &str) -> (Upstream, TestKey, Proxy) {
    let (up, key, kg) = proxy_for(TestKey::live(id).with("    type: full\n"), "").await;
    (up, key, kg)
}

fn post(target: &str, key: &TestKey, head_lines: &[&str], body: &str) -> String {
    let mut lines =
        vec![format!("POST {target} HTTP/1.1"), "Host: x".into(), format!("Authorization: {}", key.bearer())];
    lines.extend(head_lines.iter().map(|l| l.to_string()));
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    format!("{}{body}", request(&lines))
}

const INTERACTIONS: &str = "/api/v1/clinics/clinic_001/interactions";

// Paths an upstream could resolve differently: tests/it/hygiene/paths.rs (one table).

// ---------- framing ----------

#[tokio::test]
async fn a_content_length_with_leading_zeros_is_forwarded_in_keygates_rendering() {
    let (up, key, kg) = full_key_proxy("k_cl_zeros").await;

    let resp = kg.raw(&post(INTERACTIONS, &key, &["Content-Length: 0005", "Connection: close"], "hello")).await;

    assert_eq!(raw_status(&resp), 200, "{resp}");
    let seen = up.last();
    assert_eq!(seen.all("content-length"), ["5"]);
    assert_eq!(seen.body, Bytes::from_static(b"hello"));
}

#[tokio::test]
async fn a_request_with_both_content_length_and_chunked_is_refused_and_the_connection_closed() {
    let (up, key, kg) = full_key_proxy("k_te_cl").await;

    // A second request follows on the same connection: it must never be read.
    let smuggled = "GET /api/v1/clinics HTTP/1.1\r\nHost: x\r\n\r\n";
    let first =
        post(INTERACTIONS, &key, &["Content-Length: 3", "Transfer-Encoding: chunked"], "5\r\nhello\r\n0\r\n\r\n");
    let resp = kg.raw(&format!("{first}{smuggled}")).await;

    assert_raw_error(&resp, 400, "INVALID_REQUEST");
    assert_eq!(raw_header(&resp, "connection"), Some("close"), "{resp}");
    assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "a second response was sent: {resp}");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn transfer_encoding_other_than_one_chunked_is_refused() {
    let (up, key, kg) = full_key_proxy("k_te_odd").await;

    for te in [
        &["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"][..],
        &["Transfer-Encoding: chunked, chunked"],
        &["Transfer-Encoding: gzip, chunked"],
    ] {
        let mut head = te.to_vec();
        head.push("Connection: close");
        let resp = kg.raw(&post(INTERACTIONS, &key, &head, "5\r\nhello\r\n0\r\n\r\n")).await;

        assert_raw_error(&resp, 400, "INVALID_REQUEST");
        assert_eq!(raw_header(&resp, "connection"), Some("close"), "{te:?}: {resp}");
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_malformed_chunked_body_is_the_clients_fault_not_the_upstreams() {
    let (_up, key, kg) = full_key_proxy("k_bad_chunk").await;
    let upstream_errors = kg.metric("keygate_upstream_errors_total{kind=\"protocol\"}").await;

    for body in ["zz\r\nhello\r\n0\r\n\r\n", "fffffffffffffffffff\r\nx\r\n0\r\n\r\n", "5\r\nhelloXX0\r\n\r\n"] {
        let resp = kg.raw(&post(INTERACTIONS, &key, &["Transfer-Encoding: chunked", "Connection: close"], body)).await;

        assert_raw_error(&resp, 400, "INVALID_REQUEST");
    }
    assert_eq!(kg.metric("keygate_upstream_errors_total{kind=\"protocol\"}").await, upstream_errors);
    let refused = "keygate_requests_total{code=\"INVALID_REQUEST\",route=\"/api/v1/clinics/{clinic_id}/interactions\",shape=\"inline\",status_class=\"4xx\"}";
    assert_eq!(kg.metric(refused).await, 3.0);
    assert_eq!(
        kg.metric(
            "keygate_requests_total{code=\"UPSTREAM_UNAVAILABLE\",route=\"/api/v1/clinics/{clinic_id}/interactions\",shape=\"inline\",status_class=\"5xx\"}"
        )
        .await,
        0.0
    );
}

/// An upstream that answers every request with both `Content-Length` and chunked framing,
/// counting the connections it was given.
async fn spawn_ambiguous_upstream() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let conns = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = std::sync::Arc::clone(&conns);
    let addr = serve_tcp(move |mut s| {
        c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            let mut buf = vec![0u8; 8192];
            let mut head = Vec::new();
            loop {
                let Ok(n) = s.read(&mut buf).await else { return };
                if n == 0 {
                    return;
                }
                head.extend_from_slice(&buf[..n]);
                while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    head.drain(..end + 4);
                    let answer = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\
                                  Content-Type: application/json\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await;
    (addr, conns)
}

#[tokio::test]
async fn an_upstream_answer_with_both_lengths_loses_its_length_and_its_connection() {
    let (upstream, conns) = spawn_ambiguous_upstream().await;
    let key = TestKey::live("k_up_both");
    let kg = spawn_proxy(upstream, &[&key], "").await;

    for _ in 0..2 {
        let resp = kg.get_as(&key, "/api/v1/clinics").await;

        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), "{}");
        assert!(resp.headers.get("content-length").is_none(), "the ambiguous length reached the client");
    }
    assert_eq!(
        conns.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the connection was reused after an ambiguous answer"
    );
}

// ---------- addresses ----------

#[tokio::test]
async fn an_ipv4_client_of_a_dual_stack_listener_is_judged_by_its_ipv4_address() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_mapped").with("    allowed_ips: [127.0.0.0/8]\n");
    let cfg = ProxyCfg { listen: "[::]:0", upstream_url: format!("http://{}", up.addr), ..ProxyCfg::default() };
    let kg = spawn_proxy_with(cfg, &[&key]).await;
    let v4 = SocketAddr::from(([127, 0, 0, 1], kg.addr.port()));

    let mut s = TcpStream::connect(v4).await.unwrap();
    s.write_all(raw_get("/api/v1/clinics", &key).as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let resp = String::from_utf8_lossy(&out);

    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert_eq!(up.last().one("x-forwarded-for"), "127.0.0.1");
    let rid = raw_header(&resp, "x-request-id").unwrap();
    let line = logs().lines().find(|l| l.contains(rid) && l.contains("\"client_ip\"")).map(str::to_owned);
    assert!(line.as_deref().is_some_and(|l| l.contains("\"client_ip\":\"127.0.0.1\"")), "audit line: {line:?}");
}

#[tokio::test]
async fn an_ipv4_mapped_forwarded_for_from_a_trusted_proxy_is_read_as_ipv4() {
    let (_up, key, kg) = proxy_for(
        TestKey::live("k_mapped_xff").with("    allowed_ips: [203.0.113.0/24]\n"),
        "trusted_proxies: [127.0.0.1/32]\n",
    )
    .await;

    let resp =
        kg.get("/api/v1/clinics", &[("authorization", &key.bearer()), ("x-forwarded-for", "::ffff:203.0.113.9")]).await;

    resp.ok();
}

// ---------- refusals the parser used to answer without a body ----------

#[tokio::test]
async fn a_head_over_the_size_limit_gets_the_standard_body() {
    let (up, key, kg) = full_key_proxy("k_431").await;
    let big = format!("X-Big: {}", "a".repeat(20 * 1024));
    let auth = format!("Authorization: {}", key.bearer());

    let resp = kg.raw(&request(&["GET /api/v1/clinics HTTP/1.1", "Host: x", &auth, &big, "Connection: close"])).await;

    assert_raw_error(&resp, 431, "REQUEST_HEADERS_TOO_LARGE");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn too_many_header_fields_get_the_standard_body() {
    let (up, key, kg) = full_key_proxy("k_431_many").await;
    let auth = format!("Authorization: {}", key.bearer());
    let extra: Vec<String> = (0..101).map(|i| format!("X-H-{i}: v")).collect();
    let mut lines = vec!["GET /api/v1/clinics HTTP/1.1", "Host: x", auth.as_str()];
    lines.extend(extra.iter().map(String::as_str));
    lines.push("Connection: close");

    let resp = kg.raw(&request(&lines)).await;

    assert_raw_error(&resp, 431, "REQUEST_HEADERS_TOO_LARGE");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_fragment_in_the_request_target_is_refused() {
    let (up, key, kg) = full_key_proxy("k_fragment").await;

    for target in ["/api/v1/clinics#x", "/api/v1/clinics?a=1#x", "/api/v1/clinics/clinic_001/interactions#/../../admin"]
    {
        let resp = kg.raw(&raw_get(target, &key)).await;

        assert_raw_error(&resp, 400, "INVALID_REQUEST");
        assert!(raw_json(&resp)["error"]["message"].as_str().unwrap().contains("fragment"), "{target}: {resp}");
    }
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn keep_alive_requests_after_bodies_are_still_served() {
    let (up, key, kg) = full_key_proxy("k_keepalive_bodies").await;
    let a = post(INTERACTIONS, &key, &["Content-Length: 5"], "hello");
    let b = post(INTERACTIONS, &key, &["Transfer-Encoding: chunked"], "5\r\nworld\r\n0\r\n\r\n");
    let c = raw_get("/api/v1/clinics", &key);

    let resp = kg.raw(&format!("{a}{b}{c}")).await;

    assert_eq!(resp.matches("HTTP/1.1 200 OK").count(), 3, "{resp}");
    assert_eq!(up.count(), 3);
}

// ---------- an HTTP/1.0 upstream ----------

/// A legacy upstream that answers every request in HTTP/1.0 and closes (no keep-alive).
async fn http10_upstream() -> SocketAddr {
    serve_tcp(|mut s| async move {
        let mut buf = vec![0u8; 8192];
        let mut got = 0;
        while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf[got..]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
        let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nlegacy").await;
    })
    .await
}

#[tokio::test]
async fn an_http10_upstream_does_not_downgrade_or_close_the_client_connection() {
    let key = TestKey::live("k_http10").with("    type: full\n");
    let kg = spawn_proxy(http10_upstream().await, &[&key], "").await;
    let mut s = TcpStream::connect(kg.addr).await.unwrap();

    for round in 0..2 {
        s.write_all(raw_get("/api/v1/clinics", &key).replace("Connection: close\r\n", "").as_bytes()).await.unwrap();
        let resp = read_response(&mut s).await;

        assert!(resp.starts_with("HTTP/1.1 200"), "round {round}: {resp}");
        assert_ne!(raw_header(&resp, "connection"), Some("close"), "round {round}: {resp}");
        assert!(resp.ends_with("legacy"), "round {round}: {resp}");
    }
}

/// One chunked or length-delimited response from a kept-alive connection.
async fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("a response within 5 s")
            .unwrap();
        assert!(n > 0, "keygate closed the connection: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let chunked_done =
                head.to_ascii_lowercase().contains("transfer-encoding: chunked") && body.ends_with("0\r\n\r\n");
            let length_done = raw_header(&text, "content-length").is_some_and(|l| body.len() >= l.parse().unwrap());
            if chunked_done || length_done {
                let body = if chunked_done { dechunk(body) } else { body.to_string() };
                return format!("{head}\r\n\r\n{body}");
            }
        }
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}
