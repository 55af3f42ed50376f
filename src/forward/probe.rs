//! Asking the upstream whether it is up, off the request path: the readiness check and the
//! app's own probes passed through the admin listener. Each on a fresh connection (a pooled
//! one could hide that the upstream stopped accepting), bounded in time and in body size.

use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use tower_service::Service as _;

use super::Forwarder;

/// Most of a probe answer passed back: a health page, not a payload.
const MAX_PROBE_BODY: usize = 64 * 1024;

/// The upstream's answer to a probe.
#[derive(Debug)]
pub struct ProbeAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Forwarder {
    /// Opens a connection to the upstream (TCP, and TLS for https), then closes it.
    pub async fn probe_connect(&self, timeout: Duration) -> Result<(), String> {
        let connect = self.connector.clone().call(self.target.clone());
        match tokio::time::timeout(timeout, connect).await {
            Err(_) => Err(format!("no connection within {}", humantime::format_duration(timeout))),
            Ok(Err(e)) => Err(format!("connect failed: {}", chain(&*e))),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// `GET path` on a fresh connection, the answer read whole (up to 64 KiB) within `timeout`.
    pub async fn probe_get(&self, path: &PathAndQuery, timeout: Duration) -> Result<ProbeAnswer, String> {
        match tokio::time::timeout(timeout, self.get_once(path)).await {
            Err(_) => Err(format!("GET {path}: no answer within {}", humantime::format_duration(timeout))),
            Ok(r) => r.map_err(|e| format!("GET {path}: {e}")),
        }
    }

    async fn get_once(&self, path: &PathAndQuery) -> Result<ProbeAnswer, String> {
        let io = self
            .connector
            .clone()
            .call(self.target.clone())
            .await
            .map_err(|e| format!("connect failed: {}", chain(&*e)))?;
        let (mut tx, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io)
            .await
            .map_err(|e| format!("handshake failed: {e}"))?;
        let conn = tokio::spawn(conn);
        let req = Request::get(path.as_str())
            .header(header::HOST, self.host.clone())
            .header(header::USER_AGENT, HeaderValue::from_static("keygate-probe"))
            .header(header::CONNECTION, HeaderValue::from_static("close"))
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let resp = tx.send_request(req).await.map_err(|e| format!("no answer: {e}"))?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_PROBE_BODY).collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        conn.abort();
        Ok(ProbeAnswer { status: parts.status, headers: parts.headers, body })
    }
}

/// An error and its causes on one line ("tcp connect error: Connection refused (os error 111)").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = inner.source();
    }
    s
}
