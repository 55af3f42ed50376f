//! The upstream side: a pooled hyper-util client (plain or rustls), bodies streamed both ways,
//! request trailers dropped, and failures sorted into "could not reach" and "too slow".

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::MapFrame;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::Upstream;

/// Client bodies as sent upstream: capped in size, trailers turned into nothing.
pub type UpstreamBody = MapFrame<Limited<Incoming>, fn(Frame<Bytes>) -> Frame<Bytes>>;

fn drop_trailers(f: Frame<Bytes>) -> Frame<Bytes> {
    if f.is_trailers() {
        Frame::data(Bytes::new())
    } else {
        f
    }
}

pub fn upstream_body(body: Incoming, max_bytes: u64) -> UpstreamBody {
    let limit = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    Limited::new(body, limit).map_frame(drop_trailers as fn(Frame<Bytes>) -> Frame<Bytes>)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardError {
    /// Could not connect, or the connection broke before a response: 502.
    Unavailable { kind: &'static str },
    /// No response headers within the configured time: 504.
    Timeout,
    /// The client's streamed body passed `max_body_bytes` (no Content-Length to refuse it
    /// up front): 413.
    BodyTooLarge,
}

#[derive(Clone)]
pub struct Forwarder {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, UpstreamBody>,
    response_timeout: Duration,
}

impl Forwarder {
    pub fn new(cfg: &Upstream) -> anyhow::Result<Forwarder> {
        let connector = connector(cfg.ca_file.as_deref(), cfg.connect_timeout, "upstream.ca_file")?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle)
            .build(connector);
        Ok(Forwarder { client, response_timeout: cfg.response_timeout })
    }

    pub async fn send(&self, req: Request<UpstreamBody>) -> Result<Response<Incoming>, ForwardError> {
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Err(_) => Err(ForwardError::Timeout),
            Ok(Ok(resp)) => Ok(resp),
            // A connect timeout is "down", not "slow": nothing was ever sent.
            Ok(Err(e)) if e.is_connect() => Err(ForwardError::Unavailable { kind: "connect" }),
            Ok(Err(e)) if body_limit_hit(&e) => Err(ForwardError::BodyTooLarge),
            Ok(Err(_)) => Err(ForwardError::Unavailable { kind: "protocol" }),
        }
    }
}

/// A connector for `http://` and `https://` URLs that trusts `ca_file` (else the webpki roots).
/// The alert webhook uses it too, so both verify servers alike; `setting` names the CA option
/// in errors.
pub fn connector(
    ca_file: Option<&std::path::Path>,
    connect_timeout: Duration,
    setting: &str,
) -> anyhow::Result<hyper_rustls::HttpsConnector<HttpConnector>> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    let tls = client_tls(ca_file, setting)?;
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

/// The body cap surfaces as hyper's body-write error wrapping `LengthLimitError`.
fn body_limit_hit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

pub(crate) fn client_tls(ca_file: Option<&std::path::Path>, setting: &str) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("{setting} {}: {e}", path.display()))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                roots.add(cert?)?;
            }
            if roots.is_empty() {
                anyhow::bail!("{setting} {}: no certificates found", path.display());
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
