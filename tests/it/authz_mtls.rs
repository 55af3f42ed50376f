//! mTLS from the front proxy, the alternative to the shared secret: with `authz.tls` both check
//! listeners speak TLS and require a client certificate from the configured CA. A front proxy
//! with one is answered; a client without one, or with one from another CA, is refused at the
//! handshake, before any check is read or counted.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{address, Address, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use crate::support::*;

const INTERACTIONS: &str = "/api/v1/clinics/clinic_001/interactions";

/// A CA and what it signs, as PEM.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

struct Pem {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        Ca { cert: p.self_signed(&key).unwrap(), key }
    }

    fn issue(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> Pem {
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        Pem { cert: cert.pem(), key: key.serialize_pem() }
    }
}

/// The front proxy's side of the handshake: trusts keygate's CA, presents `client` if any.
fn client_tls(ca: &Ca, client: Option<&Pem>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    match client {
        None => b.with_no_client_auth(),
        Some(p) => {
            let chain: Vec<CertificateDer<'static>> =
                rustls_pemfile::certs(&mut p.cert.as_bytes()).map(|c| c.unwrap()).collect();
            let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut p.key.as_bytes()).unwrap().unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        }
    }
}

/// keygate with both check listeners behind mTLS (no shared secret) in front of a recording
/// upstream; the dir holds the files.
async fn keygate_mtls(key: &TestKey, ca: &Ca) -> (Upstream, Proxy, tempfile::TempDir) {
    let up = Upstream::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let server = ca.issue("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let (cert, key_file, client_ca) =
        (file("cert.pem", &server.cert), file("key.pem", &server.key), file("ca.pem", &ca.cert.pem()));
    let cfg = format!(
        "authz:\n  listen: 127.0.0.1:0\n  grpc_listen: 127.0.0.1:0\n  tls: {{cert_file: {cert}, key_file: {key_file}, client_ca_file: {client_ca}}}\n"
    );
    let kg = spawn_proxy(up.addr, &[key], &cfg).await;
    (up, kg, dir)
}

/// An nginx-shaped check over HTTPS; the error, if the connection was refused.
async fn https_check(kg: &Proxy, tls: rustls::ClientConfig, key: &TestKey) -> Result<Resp, String> {
    let conn = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http1().build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(conn);
    let url = format!("https://localhost:{}/check/nginx", kg.running().authz_addr.unwrap().port());
    let req = http::Request::get(url)
        .header("authorization", key.bearer())
        .header("x-original-method", "GET")
        .header("x-original-uri", INTERACTIONS)
        .header("x-forwarded-for", "203.0.113.8")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
    let (parts, body) = resp.into_parts();
    Ok(Resp { status: parts.status, headers: parts.headers, body: body.collect().await.unwrap().to_bytes() })
}

/// tonic has no TLS stack here: its channel dials through this connector instead.
#[derive(Clone)]
struct TlsDial(Arc<rustls::ClientConfig>);

impl tower_service::Service<http::Uri> for TlsDial {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let cfg = Arc::clone(&self.0);
        Box::pin(async move {
            let tcp = TcpStream::connect(("127.0.0.1", uri.port_u16().unwrap())).await?;
            let tls =
                tokio_rustls::TlsConnector::from(cfg).connect(ServerName::try_from("localhost").unwrap(), tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// One gRPC check over TLS; the gRPC error if it did not get an answer.
async fn grpc_check(kg: &Proxy, mut tls: rustls::ClientConfig, key: &TestKey) -> Result<i32, tonic::Status> {
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let port = kg.running().authz_grpc_addr.unwrap().port();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://localhost:{port}")).unwrap();
    let channel = match endpoint.connect_with_connector(TlsDial(Arc::new(tls))).await {
        Ok(c) => c,
        Err(e) => return Err(tonic::Status::unavailable(format!("{:#}", anyhow::Error::from(e)))),
    };
    let headers = [("authorization".to_string(), key.bearer())].into_iter().collect();
    let http = HttpRequest { method: "GET".into(), path: INTERACTIONS.into(), headers, ..Default::default() };
    let source = SocketAddress { address: "203.0.113.8".into(), ..Default::default() };
    let attrs = AttributeContext {
        source: Some(Peer {
            address: Some(Address { address: Some(address::Address::SocketAddress(source)) }),
            ..Default::default()
        }),
        request: Some(Request { http: Some(http), ..Default::default() }),
        ..Default::default()
    };
    let mut client = AuthorizationClient::new(channel);
    let r = client.check(CheckRequest { attributes: Some(attrs) }).await?;
    Ok(r.into_inner().status.unwrap().code)
}

fn checks_counted(text: &str) -> usize {
    text.lines().filter(|l| l.starts_with("keygate_requests_total{") && !l.ends_with(" 0")).count()
}

#[tokio::test]
async fn a_front_proxy_with_a_certificate_from_the_ca_is_answered_over_http_and_grpc() {
    let key = TestKey::live("k_mtls");
    let ca = Ca::new("keygate test CA");
    let (_up, kg, _files) = keygate_mtls(&key, &ca).await;
    let proxy_cert = ca.issue("front-proxy", ExtendedKeyUsagePurpose::ClientAuth);

    let r = https_check(&kg, client_tls(&ca, Some(&proxy_cert)), &key).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["x-api-key-id"], "k_mtls");
    let code = grpc_check(&kg, client_tls(&ca, Some(&proxy_cert)), &key).await.unwrap();
    assert_eq!(code, 0, "gRPC OK: allowed");
}

#[tokio::test]
async fn a_client_without_a_certificate_or_with_a_strangers_is_refused_at_the_handshake() {
    let key = TestKey::live("k_mtls");
    let ca = Ca::new("keygate test CA");
    let (_up, kg, _files) = keygate_mtls(&key, &ca).await;
    let stranger = Ca::new("another CA").issue("front-proxy", ExtendedKeyUsagePurpose::ClientAuth);

    let refusals = [
        ("no certificate", client_tls(&ca, None), "CertificateRequired"),
        ("another CA", client_tls(&ca, Some(&stranger)), "UnknownCA"),
    ];
    for (who, tls, alert) in refusals {
        let e = https_check(&kg, tls.clone(), &key).await.expect_err(who);
        assert!(e.contains(&format!("received fatal alert: {alert}")), "{who}: {e}");
        let e = grpc_check(&kg, tls, &key).await.expect_err(who);
        assert!(format!("{e:?}").contains(&format!("received fatal alert: {alert}")), "{who}: {e:?}");
    }
    let text = kg.admin_get("/metrics").await.text();
    assert_eq!(checks_counted(&text), 0, "no check was read, so none was counted: {text}");
}

#[test]
fn check_config_loads_the_certificate_key_and_client_ca() {
    let ca = Ca::new("keygate test CA");
    let server = ca.issue("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("keys.yaml"), table_yaml(&[])).unwrap();
    std::fs::write(d.join("cert.pem"), &server.cert).unwrap();
    std::fs::write(d.join("key.pem"), &server.key).unwrap();
    std::fs::write(d.join("ca.pem"), ca.cert.pem()).unwrap();
    // A key where the CA should be: the mistake the loader must catch before serve does.
    std::fs::write(d.join("not-a-ca.pem"), &server.key).unwrap();
    let run = |ca_file: &str| {
        let cfg = format!(
            "environment: live\nupstream:\n  url: http://127.0.0.1:3000\nkeys:\n  file: keys.yaml\nauthz:\n  listen: 0.0.0.0:9191\n  tls:\n    cert_file: cert.pem\n    key_file: key.pem\n    client_ca_file: {ca_file}\n"
        );
        std::fs::write(d.join("config.yaml"), cfg).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
            .args(["check-config", "config.yaml"])
            .current_dir(d)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, said) = run("ca.pem");
    assert!(ok, "mTLS alone guards a listener off loopback: {said}");
    let (ok, said) = run("not-a-ca.pem");
    assert!(!ok);
    assert!(said.contains("line 8: authz.tls: not-a-ca.pem: no certificates in PEM"), "{said}");
}

/// The README's nginx lines for mTLS, on the shipped config: nginx presents its certificate
/// to keygate instead of the shared secret, and requests flow as with the secret.
#[tokio::test]
async fn nginx_with_its_client_certificate_reaches_keygate_over_mtls() {
    use keygate::demo_front as front;
    let key = TestKey::live("k_mtls_nginx");
    let ca = Ca::new("keygate test CA");
    let (up, kg, files) = keygate_mtls(&key, &ca).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let nginx_cert = ca.issue("front-proxy", ExtendedKeyUsagePurpose::ClientAuth);
    std::fs::write(d.join("client.crt"), &nginx_cert.cert).unwrap();
    std::fs::write(d.join("client.key"), &nginx_cert.key).unwrap();
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], front::free_port().unwrap()));
    let addrs = front::Addrs { listen, check: kg.running().authz_addr.unwrap(), upstream: up.addr };
    let cmd = front::nginx(&crate::authz_front::nginx_bin(), d, &addrs, "unused").unwrap();
    // The check location's include holds the secret line; here it holds the TLS lines instead.
    let site = std::fs::read_to_string(d.join("keygate-authz.conf")).unwrap();
    let site = site.replacen("proxy_pass http://keygate_check/", "proxy_pass https://keygate_check/", 1);
    std::fs::write(d.join("keygate-authz.conf"), site).unwrap();
    let tls_lines = format!(
        "proxy_ssl_certificate {d}/client.crt;\nproxy_ssl_certificate_key {d}/client.key;\n\
         proxy_ssl_trusted_certificate {ca};\nproxy_ssl_verify on;\nproxy_ssl_name localhost;\n",
        d = d.display(),
        ca = files.path().join("ca.pem").display(),
    );
    std::fs::write(d.join("keygate-authz-secret.conf"), tls_lines).unwrap();
    let _nginx = front::Running::start(cmd, listen, &d.join("stderr.log")).await.unwrap();

    let client = Client::builder(TokioExecutor::new()).build_http();
    let url = format!("http://{listen}{INTERACTIONS}");
    let r = send(client.clone(), &url, http::Method::GET, &[("authorization", &key.bearer())], Bytes::new()).await;
    r.ok();
    assert_eq!(up.last().one("x-api-key-id"), "k_mtls_nginx");
    let r = send(client, &url, http::Method::GET, &[], Bytes::new()).await;
    r.assert_error(401, "UNAUTHORIZED");
    let series = r#"keygate_requests_total{code="OK",route="/api/v1/clinics/{clinic_id}/interactions",shape="nginx_auth_request"}"#;
    assert_eq!(kg.metric(series).await, 1.0);
}
