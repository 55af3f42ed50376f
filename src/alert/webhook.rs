//! Delivery: one POST per alert, bounded by a timeout, with a short retry for failures that a
//! retry can fix. Nothing here knows about de-duplication or the queue.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

/// Extra attempts after a connect error or a 5xx. A 4xx will not change on retry, and after a
/// timeout the webhook may already have posted the message.
const RETRIES: u32 = 2;
const BACKOFF: Duration = Duration::from_millis(200);

pub(super) struct Webhook {
    pub(super) client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    pub(super) url: Uri,
    /// What logs may say about the URL.
    pub(super) target: String,
    pub(super) timeout: Duration,
    /// `Authorization` for a webhook that takes its token in a header (marked sensitive).
    pub(super) authorization: Option<HeaderValue>,
}

#[derive(Debug)]
pub(super) enum Failure {
    Status(StatusCode),
    Timeout(Duration),
    Connect(String),
    Protocol(String),
}

impl Failure {
    pub(super) fn retryable(&self) -> bool {
        match self {
            Failure::Connect(_) => true,
            Failure::Status(s) => s.is_server_error(),
            Failure::Timeout(_) | Failure::Protocol(_) => false,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status(s) => write!(f, "answered {s}"),
            Failure::Timeout(t) => write!(f, "no answer within {t:?}"),
            Failure::Connect(e) => write!(f, "connect: {e}"),
            Failure::Protocol(e) => write!(f, "exchange failed: {e}"),
        }
    }
}

impl Webhook {
    /// Posts `body`, retrying connect errors and 5xx with a short backoff. On failure, returns
    /// the last one and the number of attempts made.
    pub(super) async fn deliver(&self, body: Bytes) -> Result<(), (Failure, u32)> {
        let mut attempt = 1;
        loop {
            match self.post(body.clone()).await {
                Ok(()) => return Ok(()),
                Err(f) if f.retryable() && attempt <= RETRIES => {
                    tokio::time::sleep(BACKOFF * attempt).await;
                    attempt += 1;
                }
                Err(f) => return Err((f, attempt)),
            }
        }
    }

    async fn post(&self, body: Bytes) -> Result<(), Failure> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.url.clone();
        req.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        req.headers_mut().insert(USER_AGENT, HeaderValue::from_static(concat!("keygate/", env!("CARGO_PKG_VERSION"))));
        if let Some(auth) = &self.authorization {
            req.headers_mut().insert(http::header::AUTHORIZATION, auth.clone());
        }
        // The response body is not read: dropping it closes the connection, which is fine at
        // alert rates, and a webhook that stalls mid-body cannot hold the queue.
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => Err(Failure::Timeout(self.timeout)),
            Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
            Ok(Ok(resp)) => Err(Failure::Status(resp.status())),
            Ok(Err(e)) if e.is_connect() => Err(Failure::Connect(chain(&e))),
            Ok(Err(e)) => Err(Failure::Protocol(chain(&e))),
        }
    }
}

/// An error and its sources on one line. hyper's errors name no URL, so nothing secret.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        s.push_str(": ");
        s.push_str(&err.to_string());
        cur = err.source();
    }
    s
}
