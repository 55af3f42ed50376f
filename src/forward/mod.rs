//! The upstream side: keep-alive HTTP/1.1 connections to the one upstream (plain or rustls),
//! bodies streamed both ways, request trailers dropped, and failures sorted into "could not
//! reach" and "too slow".

mod cause;
mod pool;
mod probe;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, Uri};
use http_body_util::combinators::MapFrame;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service as _;

use pool::Pool;
pub use pool::PooledBody;
pub use probe::ProbeAnswer;

use crate::clock::Clock;
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
    /// Could not connect, or the connection broke before a response: 502. `kind` is the metric's
    /// label (`connect`, `protocol`); `cause` says why, for the log line (see `cause`).
    Unavailable { kind: &'static str, cause: &'static str },
    /// No response headers within the configured time: 504.
    Timeout,
    /// The client's streamed body passed `max_body_bytes` (no Content-Length to refuse it
    /// up front): 413.
    BodyTooLarge,
    /// The client's body broke (malformed chunk, connection closed mid-body): the client's
    /// fault, answered 400 and not counted against the upstream.
    ClientBody,
}

/// The upstream's response body (its connection goes back to the pool once it is read).
pub type UpstreamResponseBody = PooledBody<UpstreamBody>;

#[derive(Clone)]
pub struct Forwarder {
    connector: hyper_rustls::HttpsConnector<HttpConnector>,
    /// Scheme and authority of the upstream: every connection goes there.
    target: Uri,
    /// For a request that arrived without one (HTTP/1.0, or HTTP/2 without `:authority`).
    host: HeaderValue,
    pool: Arc<Pool<UpstreamBody>>,
    response_timeout: Duration,
}

impl Forwarder {
    /// `clock` tells how long a pooled connection has been idle.
    pub fn new(cfg: &Upstream, clock: Clock) -> anyhow::Result<Forwarder> {
        let connector = connector(cfg.ca_file.as_deref(), cfg.connect_timeout, "upstream.ca_file")?;
        let authority = cfg.uri.authority().ok_or_else(|| anyhow::anyhow!("upstream.url has no host"))?;
        Ok(Forwarder {
            connector,
            target: cfg.uri.clone(),
            host: HeaderValue::from_str(authority.as_str())?,
            pool: Pool::new(cfg.pool_max_idle, cfg.pool_idle_timeout, clock),
            response_timeout: cfg.response_timeout,
        })
    }

    /// Sends `req` (origin-form URI) upstream; `Timeout` when no response head arrives within
    /// `response_timeout`, connecting included.
    pub async fn send(&self, req: Request<UpstreamBody>) -> Result<Response<UpstreamResponseBody>, ForwardError> {
        match tokio::time::timeout(self.response_timeout, self.exchange(req)).await {
            Err(_) => Err(ForwardError::Timeout),
            Ok(r) => r,
        }
    }

    async fn exchange(&self, mut req: Request<UpstreamBody>) -> Result<Response<UpstreamResponseBody>, ForwardError> {
        if !req.headers().contains_key(header::HOST) {
            req.headers_mut().insert(header::HOST, self.host.clone());
        }
        loop {
            let (mut tx, reused) = match self.pool.checkout() {
                Some(tx) => (tx, true),
                // Boxed: the connect and handshake futures are large and rarely run; inline,
                // they would be copied with this future's state on every request.
                None => (Box::pin(self.connect()).await?, false),
            };
            match tx.try_send_request(req).await {
                Ok(mut resp) => {
                    let h = resp.headers_mut();
                    if h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH) {
                        // Framing the upstream could mean two ways (RFC 9112 §6.3): the length
                        // is dropped, and the connection is not trusted with another request.
                        h.remove(header::CONTENT_LENGTH);
                        return Ok(resp.map(PooledBody::unpooled));
                    }
                    let pool = Arc::clone(&self.pool);
                    return Ok(resp.map(move |body| PooledBody::new(body, tx, pool)));
                }
                Err(mut e) => match e.take_message() {
                    // The upstream closed an idle connection as we picked it: nothing was
                    // written, so the request may go on another (the pool is finite, and a
                    // fresh connection is never retried).
                    Some(back) if reused => req = back,
                    _ => return Err(classify(&e.into_error())),
                },
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<UpstreamBody>, ForwardError> {
        let down = |cause| ForwardError::Unavailable { kind: "connect", cause };
        let io = self.connector.clone().call(self.target.clone()).await.map_err(|e| down(cause::of_connect(&*e)))?;
        let (tx, conn) =
            hyper::client::conn::http1::Builder::new().handshake(io).await.map_err(|e| down(cause::of_exchange(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(tx)
    }

    /// Closes upstream connections idle past `pool_idle_timeout`.
    pub fn sweep(&self) {
        self.pool.sweep();
    }
}

fn classify(e: &hyper::Error) -> ForwardError {
    if body_limit_hit(e) {
        ForwardError::BodyTooLarge
    } else if client_body_broke(e) {
        ForwardError::ClientBody
    } else {
        ForwardError::Unavailable { kind: "protocol", cause: cause::of_exchange(e) }
    }
}

/// Sending failed because reading the client's body did: the server side's own hyper error
/// (a parse error, an incomplete message) sits below the client side's in the source chain.
fn client_body_broke(e: &hyper::Error) -> bool {
    let mut cur = std::error::Error::source(e);
    while let Some(err) = cur {
        if err.is::<hyper::Error>() {
            return true;
        }
        cur = err.source();
    }
    false
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
