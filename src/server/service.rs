//! One connection's service: each request into the handler, the idle timer told while it is in
//! progress, `head_check`'s refusal attached, and `Connection: close` once the shutdown began.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::sync::watch;

use super::{Activity, Handler, Heads};
use crate::proxy::ConnFacts;

/// What a connection's requests share: worked out once per connection.
pub(super) struct PerConnection {
    pub(super) activity: Arc<Activity>,
    pub(super) facts: Arc<ConnFacts>,
    pub(super) heads: Arc<Heads>,
    /// Set once the shutdown has begun.
    pub(super) winding: watch::Receiver<bool>,
    /// Whether the connection turned out to be HTTP/2 (known from its first request).
    pub(super) is_h2: Arc<AtomicBool>,
}

/// The connection's requests into the handler: the idle timer told while one is in progress,
/// `head_check`'s refusal attached, and `Connection: close` once the shutdown has begun.
pub(super) fn service<H: Handler>(
    handler: Arc<H>,
    c: PerConnection,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<H::Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<H::Body>, Infallible>> + Send,
> {
    service_fn(move |mut req: Request<Incoming>| {
        let (handler, act, facts, winding) =
            (Arc::clone(&handler), Arc::clone(&c.activity), Arc::clone(&c.facts), c.winding.clone());
        let h1 = req.version() <= http::Version::HTTP_11;
        if h1 {
            let head = c.heads.reader.lock().unwrap_or_else(|e| e.into_inner()).next_facts();
            // Only a refusal travels with the request: the common case adds nothing to it.
            if head.refusal().is_some() {
                req.extensions_mut().insert(head);
            }
        } else {
            c.is_h2.store(true, Ordering::Relaxed);
        }
        async move {
            let _busy = act.begin();
            let mut resp = handler.call(req, facts).await;
            if h1 && *winding.borrow() {
                // hyper closes the connection after an answer that says so.
                resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(resp)
        }
    })
}
