//! The request path as configured now. A config reload builds the next `Proxy` from the running
//! one (sharing its key store, upstream pool and the limiter's and detectors' state) and swaps it
//! in; each request loads one snapshot and runs every step on it, so no request sees a mix of
//! old and new settings, and the requests in flight finish on the one they started with.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;

use super::check::{CheckOutcome, CheckRequest};
use super::{Body, ConnFacts, Proxy};

#[derive(Clone)]
pub struct Live(Arc<ArcSwap<Proxy>>);

impl Live {
    pub fn new(proxy: Proxy) -> Live {
        Live(Arc::new(ArcSwap::from_pointee(proxy)))
    }

    /// The snapshot the next request runs on.
    pub fn load(&self) -> Arc<Proxy> {
        self.0.load_full()
    }

    /// Puts `next` in place for the requests that start from now; returns the one it replaced.
    pub fn swap(&self, next: Proxy) -> Arc<Proxy> {
        self.0.swap(Arc::new(next))
    }

    pub async fn handle(&self, req: Request<Incoming>, conn: Arc<ConnFacts>) -> Response<Body> {
        self.load().handle(req, conn).await
    }

    pub async fn check(&self, req: CheckRequest) -> CheckOutcome {
        self.load().check(req).await
    }
}
