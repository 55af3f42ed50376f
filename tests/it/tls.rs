//! TLS termination: HTTP/1.1 and HTTP/2 over ALPN, X-Forwarded-Proto, certificate reload.

use std::sync::Arc;

use bytes::Bytes;
use http::Method;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::lifecycle::upstream_failure_line;
use crate::support::*;

struct Cert {
    cert_pem: String,
    key_pem: String,
}

fn self_signed() -> Cert {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    Cert { cert_pem: ck.cert.pem(), key_pem: ck.key_pair.serialize_pem() }
}

/// A self-signed certificate for localhost valid until `not_after`.
fn expiring(not_after: time::OffsetDateTime) -> Cert {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_after = not_after;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Cert { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
}

fn client_trusting(
    cert: &Cert,
    h2: bool,
) -> Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, http_body_util::Full<Bytes>>
{
    let cfg = client_tls_trusting(&cert.cert_pem);
    let b = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(cfg).https_only();
    let conn = if h2 { b.enable_http2().build() } else { b.enable_http1().build() };
    Client::builder(TokioExecutor::new()).http2_only(h2).build(conn)
}

/// keygate with TLS; the returned dir holds `cert.pem` and `key.pem` and must outlive it.
async fn tls_proxy(up: &Upstream, key: &TestKey, cert: &Cert) -> (Proxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&c, &cert.cert_pem).unwrap();
    std::fs::write(&k, &cert.key_pem).unwrap();
    let extra = format!("tls:\n  cert_file: {}\n  key_file: {}\n", c.display(), k.display());
    (spawn_proxy(up.addr, &[key], &extra).await, dir)
}

#[tokio::test]
async fn tls_serves_http1_and_http2_by_alpn() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_tls");
    let cert = self_signed();
    let (kg, _certs) = tls_proxy(&up, &key, &cert).await;
    let url = format!("https://localhost:{}/api/v1/clinics", kg.addr.port());

    for h2 in [false, true] {
        let r = send(client_trusting(&cert, h2), &url, Method::GET, &[("authorization", &key.bearer())], Bytes::new())
            .await;
        assert_eq!(r.status, 200, "h2={h2}: {}", r.text());
        assert_eq!(up.last().one("x-forwarded-proto"), "https");
        assert_eq!(up.last().one("x-api-key-id"), "k_tls");
    }
    let r = send(client_trusting(&cert, true), &url, Method::GET, &[], Bytes::new()).await;
    r.assert_error(401, "UNAUTHORIZED");
}

#[tokio::test]
async fn tls_certificate_is_reloaded_without_a_restart() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_tls_reload");
    let (old, new) = (self_signed(), self_signed());
    let (kg, certs) = tls_proxy(&up, &key, &old).await;
    let url = format!("https://localhost:{}/api/v1/clinics", kg.addr.port());
    let get = |cert: &Cert| {
        let client = client_trusting(cert, false);
        let req = http::Request::get(url.clone())
            .header("authorization", key.bearer())
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        async move { client.request(req).await.map(|r| r.status()) }
    };
    assert!(get(&new).await.is_err(), "the new cert is not served yet");

    std::fs::write(certs.path().join("cert.pem"), &new.cert_pem).unwrap();
    std::fs::write(certs.path().join("key.pem"), &new.key_pem).unwrap();
    kg.running().reload();

    assert_eq!(get(&new).await.unwrap(), 200);
    assert!(get(&old).await.is_err(), "the old cert is gone");

    // A broken pair on reload is refused; the current certificate keeps serving.
    std::fs::write(certs.path().join("key.pem"), "not a key").unwrap();
    kg.running().reload();
    assert_eq!(get(&new).await.unwrap(), 200);
}

#[tokio::test]
async fn the_served_certificates_expiry_is_a_gauge_kept_current_by_reloads() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_tls_expiry");
    let (first, second) =
        (time::macros::datetime!(2031-01-02 3:04:05 UTC), time::macros::datetime!(2032-06-01 0:00 UTC));
    let (kg, certs) = tls_proxy(&up, &key, &expiring(first)).await;
    let gauge = "keygate_tls_certificate_expiry_timestamp_seconds";
    assert_eq!(kg.metric(gauge).await, first.unix_timestamp() as f64);

    let next = expiring(second);
    std::fs::write(certs.path().join("cert.pem"), &next.cert_pem).unwrap();
    std::fs::write(certs.path().join("key.pem"), &next.key_pem).unwrap();
    kg.running().reload();
    assert_eq!(kg.metric(gauge).await, second.unix_timestamp() as f64);

    // A refused reload keeps the served certificate, and its expiry.
    std::fs::write(certs.path().join("key.pem"), "not a key").unwrap();
    kg.running().reload();
    assert_eq!(kg.metric(gauge).await, second.unix_timestamp() as f64);
}

/// An HTTPS upstream with its own (private) CA: keygate verifies it with `upstream.ca_file`.
#[tokio::test]
async fn https_upstream_with_a_private_ca() {
    let up = Upstream::spawn().await;
    let cert = self_signed();
    // A TLS front for the recording upstream: terminate, then pipe bytes through.
    let tls_cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            rustls_pemfile::certs(&mut cert.cert_pem.as_bytes()).map(|c| c.unwrap()).collect(),
            rustls_pemfile::private_key(&mut cert.key_pem.as_bytes()).unwrap().unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_cfg));
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_port = front.local_addr().unwrap().port();
    let plain = up.addr;
    tokio::spawn(async move {
        while let Ok((s, _)) = front.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else { return };
                let mut inner = tokio::net::TcpStream::connect(plain).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut inner).await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &cert.cert_pem).unwrap();
    let key = TestKey::live("k_up_tls");
    let lines = format!("  ca_file: {}\n", ca.display());
    let cfg = ProxyCfg {
        upstream_url: format!("https://localhost:{front_port}"),
        upstream_lines: &lines,
        ..ProxyCfg::default()
    };
    let kg = spawn_proxy_with(cfg, &[&key]).await;

    let r = kg.get_as(&key, "/api/v1/clinics").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().one("x-api-key-id"), "k_up_tls");

    // Without the CA the upstream's certificate is not trusted: 502, never plaintext.
    let cfg = ProxyCfg { upstream_url: format!("https://localhost:{front_port}"), ..ProxyCfg::default() };
    let kg = spawn_proxy_with(cfg, &[&key]).await;
    let r = kg.get("/api/v1/clinics", &[("authorization", &key.bearer()), ("x-request-id", "rid-untrusted")]).await;
    r.assert_error(502, "UPSTREAM_UNAVAILABLE");
    assert_eq!(up.count(), 1);
    assert_eq!(upstream_failure_line("rid-untrusted")["cause"], "tls certificate rejected");
}

#[tokio::test]
async fn an_upstream_that_does_not_speak_tls_is_a_502_that_says_so() {
    let up = Upstream::spawn().await;
    let key = TestKey::live("k_up_plain");
    let cfg = ProxyCfg { upstream_url: format!("https://{}", up.addr), ..ProxyCfg::default() };
    let kg = spawn_proxy_with(cfg, &[&key]).await;
    let r = kg.get("/api/v1/clinics", &[("authorization", &key.bearer()), ("x-request-id", "rid-plain")]).await;
    r.assert_error(502, "UPSTREAM_UNAVAILABLE");
    assert_eq!(upstream_failure_line("rid-plain")["cause"], "tls handshake failed");
    assert_eq!(up.count(), 0, "nothing was sent in the clear");
}
