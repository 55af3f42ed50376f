//! Bodies, trailers and the size and time limits that stop a client from holding keygate or the
//! upstream hostage.

use super::*;

// ---------- bodies ----------

#[tokio::test]
async fn request_trailers_are_dropped() {
    let (up, key, kg) = proxy_for(TestKey::live("k_trailer").with("    type: write\n"), "").await;

    let resp = kg
        .raw(&format!(
            "POST /api/v1/clinics/clinic_001/interactions HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: evil\r\n\r\n",
            key.bearer()
        ))
        .await;

    assert_eq!(raw_status(&resp), 200, "{resp}");
    let seen = up.last();
    assert_eq!(seen.body, Bytes::from_static(b"hello"));
    assert!(seen.all("x-trailer").is_empty(), "{:?}", seen.headers);
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_before_reaching_the_upstream() {
    let (up, key, kg) =
        proxy_for(TestKey::live("k_big_body").with("    type: write\n"), "limits:\n  max_body_bytes: 10\n").await;

    let r = kg
        .send(
            Method::POST,
            "/api/v1/clinics/clinic_001/interactions",
            &[("authorization", &key.bearer()), ("content-type", "application/json")],
            Bytes::from_static(b"12345678901"),
        )
        .await;

    r.assert_error(413, "PAYLOAD_TOO_LARGE");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_refused_as_too_large() {
    let (up, key, kg) =
        proxy_for(TestKey::live("k_big_chunked").with("    type: write\n"), "limits:\n  max_body_bytes: 10\n").await;

    let resp = kg
        .raw(&format!(
            "POST /api/v1/clinics/clinic_001/interactions HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n",
            key.bearer()
        ))
        .await;

    assert_raw_error(&resp, 413, "PAYLOAD_TOO_LARGE");
    let bodies: Vec<Bytes> = up.requests().into_iter().map(|s| s.body).collect();
    assert!(bodies.iter().all(|b| b.len() <= 10), "the upstream got more than the limit: {bodies:?}");
}

// ---------- header limits and slow clients ----------

#[tokio::test]
async fn an_oversized_header_is_refused_before_reaching_the_upstream() {
    let (up, key, kg) = proxy_for(TestKey::live("k_big_header"), "").await;
    let big = format!("X-Big: {}", "a".repeat(20 * 1024));

    let resp = kg.raw(&keyed_request("GET /api/v1/clinics HTTP/1.1", &key, &[&big, "Connection: close"])).await;

    assert!(resp.is_empty() || raw_status(&resp) == 431, "expected 431 or a closed connection: {resp}");
    assert_eq!(up.count(), 0);
}

// Too many header fields: hostile.rs, `too_many_header_fields_get_the_standard_body` (431 with
// the standard body, nothing forwarded).

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let (up, _key, kg) = proxy_for(TestKey::live("k_slowloris"), "limits:\n  header_read_timeout: 300ms\n").await;

    let mut s = TcpStream::connect(kg.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;

    assert!(closed.is_ok(), "keygate kept a half-sent request open for 2 s");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_client_dripping_its_headers_is_disconnected_at_the_header_deadline() {
    let (up, _key, kg) = proxy_for(TestKey::live("k_drip"), "limits:\n  header_read_timeout: 300ms\n").await;

    let (mut rd, mut wr) = TcpStream::connect(kg.addr).await.unwrap().into_split();
    let drip = tokio::spawn(async move {
        // One byte every 50 ms: never idle, never done.
        for b in b"GET /api/v1/clinics HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter().chain(std::iter::repeat(&b'a')) {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), rd.read_to_end(&mut out)).await;
    drip.abort();

    assert!(closed.is_ok(), "keygate kept a dripping request open for 2 s");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_by_the_idle_timeout() {
    let (up, _key, kg) = proxy_for(TestKey::live("k_silent"), "limits:\n  idle_timeout: 500ms\n").await;

    let mut s = TcpStream::connect(kg.addr).await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;

    assert!(closed.is_ok(), "keygate kept a silent connection open for 2 s");
    assert_eq!(up.count(), 0);
}
