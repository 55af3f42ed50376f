//! Keep-alive connections to the one upstream. keygate talks to a single origin, so the pool is
//! a stack of idle HTTP/1.1 senders: the most recently used first (its socket is warm), a
//! connection handed back when its response body has been read to the end, dropped (and so
//! closed) when it was not, when it idled past the timeout, or when the stack is full.
//! hyper-util's general-purpose client did the same through a keyed, locked pool and a task
//! spawned per request to wait for the connection to become idle, about a seventh of keygate's
//! user-space work under callgrind (README, Performance).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

use crate::clock::Clock;

struct Idle<B> {
    tx: SendRequest<B>,
    since: Instant,
}

pub struct Pool<B> {
    idle: Mutex<Vec<Idle<B>>>,
    max_idle: usize,
    idle_timeout: Duration,
    clock: Clock,
}

impl<B> Pool<B> {
    pub fn new(max_idle: usize, idle_timeout: Duration, clock: Clock) -> Arc<Pool<B>> {
        Arc::new(Pool { idle: Mutex::new(Vec::new()), max_idle, idle_timeout, clock })
    }

    /// An idle connection that can take a request now, if there is one. The lock is held for a
    /// pop, never across an await.
    pub fn checkout(&self) -> Option<SendRequest<B>> {
        let now = self.clock.now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Still finishing its last message (rare: the connection task usually gets there
        // before the body's reader does): kept for the next request, not closed.
        let mut busy = Vec::new();
        let mut found = None;
        while let Some(c) = idle.pop() {
            if now.saturating_duration_since(c.since) >= self.idle_timeout {
                // Everything below is older still.
                idle.clear();
                break;
            }
            if c.tx.is_closed() {
                continue;
            }
            if c.tx.is_ready() {
                found = Some(c.tx);
                break;
            }
            busy.push(c);
        }
        idle.extend(busy.into_iter().rev());
        found
    }

    fn put(&self, tx: SendRequest<B>) {
        if tx.is_closed() || self.max_idle == 0 {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= self.max_idle {
            // Keep the warm ones: the oldest goes.
            idle.remove(0);
        }
        idle.push(Idle { tx, since: self.clock.now() });
    }

    /// Closes connections idle past the timeout (the request path only looks at the top).
    pub fn sweep(&self) {
        let now = self.clock.now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|c| !c.tx.is_closed() && now.saturating_duration_since(c.since) < self.idle_timeout);
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.lock().unwrap().len()
    }
}

/// The upstream's response body; hands its connection back to the pool once read to the end.
pub struct PooledBody<B> {
    inner: Incoming,
    conn: Option<(SendRequest<B>, Arc<Pool<B>>)>,
    /// Read to the end (a chunked body never says so through `is_end_stream`).
    done: bool,
}

impl<B> PooledBody<B> {
    pub fn new(inner: Incoming, tx: SendRequest<B>, pool: Arc<Pool<B>>) -> PooledBody<B> {
        PooledBody { inner, conn: Some((tx, pool)), done: false }
    }

    /// A body whose connection closes when it ends instead of going back to the pool.
    pub fn unpooled(inner: Incoming) -> PooledBody<B> {
        PooledBody { inner, conn: None, done: false }
    }
}

impl<B> Drop for PooledBody<B> {
    fn drop(&mut self) {
        // A body dropped half-read leaves its connection mid-message: not reusable.
        if let Some((tx, pool)) = self.conn.take() {
            if self.done || self.inner.is_end_stream() {
                pool.put(tx);
            }
        }
    }
}

impl<B: Unpin> Body for PooledBody<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            // A broken body: the connection goes with it.
            Poll::Ready(Some(Err(_))) => self.conn = None,
            Poll::Ready(None) => self.done = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Empty;

    /// A sender whose connection task is gone (as after the upstream closed it).
    async fn closed_sender() -> SendRequest<Empty<Bytes>> {
        let (a, b) = tokio::io::duplex(64);
        drop(b);
        let (tx, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(a)).await.expect("handshake");
        drop(conn);
        tx
    }

    #[tokio::test]
    async fn closed_connections_are_never_pooled_or_handed_out() {
        let pool = Pool::new(4, Duration::from_secs(60), Clock::system());
        pool.put(closed_sender().await);
        assert_eq!(pool.idle_count(), 0, "a closed sender is not kept");
        // One slipped in before its connection closed is skipped at checkout.
        let tx = closed_sender().await;
        pool.idle.lock().unwrap().push(Idle { tx, since: Instant::now() });
        assert!(pool.checkout().is_none());
        assert_eq!(pool.idle_count(), 0);
    }

    /// A sender on a live (in-memory) connection; the returned half keeps it open.
    async fn open_sender() -> (SendRequest<Empty<Bytes>>, tokio::io::DuplexStream) {
        let (a, b) = tokio::io::duplex(64);
        let (tx, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(a)).await.expect("handshake");
        tokio::spawn(conn);
        // The connection task says it wants a request once it has run.
        tokio::task::yield_now().await;
        (tx, b)
    }

    #[tokio::test]
    async fn idle_past_the_timeout_is_dropped() {
        let pool: Arc<Pool<Empty<Bytes>>> = Pool::new(4, Duration::from_secs(10), Clock::system());
        let (old, _keep_old) = open_sender().await;
        let (fresh, _keep_fresh) = open_sender().await;
        pool.idle.lock().unwrap().push(Idle { tx: old, since: Instant::now() - Duration::from_secs(11) });
        pool.idle.lock().unwrap().push(Idle { tx: fresh, since: Instant::now() });
        pool.sweep();
        assert_eq!(pool.idle_count(), 1, "only the connection idle past 10 s is closed");
        assert!(pool.checkout().is_some(), "the fresh one is handed out");
    }

    #[tokio::test]
    async fn a_full_pool_drops_its_oldest() {
        let pool: Arc<Pool<Empty<Bytes>>> = Pool::new(2, Duration::from_secs(10), Clock::system());
        let mut keep = Vec::new();
        for _ in 0..3 {
            let (tx, b) = open_sender().await;
            keep.push(b);
            pool.put(tx);
        }
        assert_eq!(pool.idle_count(), 2);
    }
}
