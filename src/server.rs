//! Listeners: accept loop with a connection cap, optional TLS, HTTP/1.1 and HTTP/2 (h2c prior
//! knowledge or ALPN) on one port, header size/count and read-time bounds, an idle timeout,
//! and a graceful drain with a deadline when the shutdown future it is given completes.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::config::Limits;
use crate::head_check::HeadReader;
use crate::metrics::Metrics;
use crate::proxy::ConnFacts;
use crate::tls::TlsState;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a listener serves: the proxy pipeline or the admin endpoints.
pub trait Handler: Send + Sync + 'static {
    type Body: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static;
    fn call(&self, req: Request<Incoming>, conn: Arc<ConnFacts>) -> impl Future<Output = Response<Self::Body>> + Send;
}

pub struct ServeOptions {
    pub limits: Limits,
    pub drain_timeout: Duration,
    pub tls: Option<Arc<TlsState>>,
    pub metrics: Option<Arc<Metrics>>,
    pub name: &'static str,
}

/// Serves until `shutdown` completes, then drains. Returns how many connections were still
/// open when the drain deadline cut them off (0 is a clean drain).
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> usize {
    let max = opts.limits.max_connections;
    let permits = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    let builder = Arc::new(builder(&opts.limits));
    let opts = Arc::new(opts);
    let mut shutdown = pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => p.expect("semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; the listener stays up.
                    tracing::warn!(listener = opts.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (handler, builder, opts, stop) =
            (Arc::clone(&handler), Arc::clone(&builder), Arc::clone(&opts), stop_rx.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(m) = &opts.metrics {
                m.connection_opened();
            }
            connection(stream, peer, handler, builder, &opts, stop).await;
            if let Some(m) = &opts.metrics {
                m.connection_closed();
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let deadline = opts.drain_timeout;
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(deadline, permits.acquire_many(all)).await.is_ok();
    match drained {
        true => 0,
        false => {
            let open = max - permits.available_permits();
            tracing::warn!(
                listener = opts.name,
                open,
                ?deadline,
                "drain deadline reached; closing remaining connections"
            );
            open
        }
    }
}

/// Streams a client may reset before their handler ran, and errors keygate's side may reset,
/// before the connection is closed (h2's defaults, stated so a dependency bump cannot change
/// them: rapid reset, CVE-2023-44487, and MadeYouReset, CVE-2025-8671).
const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;

fn builder(l: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // The parser's own limits are twice keygate's: a head between the two reaches the
    // pipeline, which refuses it with the standard JSON body (431); past twice the limit the
    // parser answers a bare 431 (HTTP/1.1) or resets the stream (HTTP/2).
    let parser_head_bytes = l.max_header_bytes.saturating_mul(2);
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(l.header_read_timeout)
        .max_buf_size(parser_head_bytes.max(8192))
        .max_headers(l.max_headers.saturating_mul(2))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(l.max_concurrent_streams)
        .max_header_list_size(u32::try_from(parser_head_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS)
        .keep_alive_interval(None);
    b
}

async fn connection<H: Handler>(
    stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<H>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    opts: &ServeOptions,
    stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = Observed { inner: stream, observer: Arc::clone(&activity) };
    match &opts.tls {
        None => serve_io(io, ConnFacts::new(peer, false), handler, &builder, activity, opts, stop).await,
        Some(tls) => {
            let handshake = tls.acceptor().accept(io);
            match tokio::time::timeout(opts.limits.header_read_timeout, handshake).await {
                Ok(Ok(tls_io)) => {
                    serve_io(tls_io, ConnFacts::new(peer, true), handler, &builder, activity, opts, stop).await
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
            }
        }
    }
}

async fn serve_io<H, IO>(
    io: IO,
    facts: ConnFacts,
    handler: Arc<H>,
    builder: &auto::Builder<TokioExecutor>,
    activity: Arc<Activity>,
    opts: &ServeOptions,
    mut stop: watch::Receiver<bool>,
) where
    H: Handler,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let act = Arc::clone(&activity);
    // Shared by the connection's requests: what is known of the peer is worked out once.
    let facts = Arc::new(facts);
    let peer = facts.peer;
    let heads = Arc::new(Mutex::new(HeadReader::new(opts.limits.max_header_bytes.saturating_mul(2).max(8192))));
    let io = Observed { inner: io, observer: Arc::clone(&heads) };
    let svc = service_fn(move |mut req: Request<Incoming>| {
        let handler = Arc::clone(&handler);
        let act = Arc::clone(&act);
        let facts = Arc::clone(&facts);
        if req.version() <= http::Version::HTTP_11 {
            let head = heads.lock().unwrap_or_else(|e| e.into_inner()).next_facts();
            // Only a refusal travels with the request: the common case adds nothing to it.
            if head.refusal().is_some() {
                req.extensions_mut().insert(head);
            }
        }
        async move {
            let _busy = act.begin();
            Ok::<_, Infallible>(handler.call(req, facts).await)
        }
    });
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    let mut conn = pin!(conn);
    let mut draining = false;
    // Until the first byte arrives the header deadline applies too (hyper starts its own timer
    // only at the first byte), so a silent socket cannot hold a connection slot for long.
    let limits = &opts.limits;
    let idle_limit = || {
        if activity.has_read() {
            limits.idle_timeout
        } else {
            limits.idle_timeout.min(limits.header_read_timeout)
        }
    };
    loop {
        let wait = activity.until_idle(idle_limit());
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(wait), if !draining => {
                if activity.is_idle(idle_limit()) {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Last read/write time and requests in progress on one connection, for the idle timeout.
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
    busy: AtomicUsize,
    read_any: AtomicBool,
}

struct Busy<'a>(&'a Activity);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    fn new() -> Activity {
        Activity {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            read_any: AtomicBool::new(false),
        }
    }

    fn has_read(&self) -> bool {
        self.read_any.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn begin(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self)
    }

    fn idle_for(&self) -> Duration {
        let now = self.base.elapsed();
        now.saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }

    fn is_idle(&self, limit: Duration) -> bool {
        self.busy.load(Ordering::Relaxed) == 0 && self.idle_for() >= limit
    }

    /// How long to sleep before the connection could next be idle for `limit`.
    fn until_idle(&self, limit: Duration) -> Duration {
        limit.saturating_sub(self.idle_for()).max(Duration::from_millis(10))
    }
}

/// What a connection's wrapper is told of its traffic.
trait Observer {
    /// Bytes just read.
    fn read(&self, bytes: &[u8]);
    /// Some bytes were just written.
    fn wrote(&self) {}
}

/// The socket's last read/write time, for the idle timeout.
impl Observer for Arc<Activity> {
    fn read(&self, _: &[u8]) {
        self.touch();
        self.read_any.store(true, Ordering::Relaxed);
    }

    fn wrote(&self) {
        self.touch();
    }
}

/// The connection's bytes (above TLS) as hyper reads them, read a second time by `head_check`.
impl Observer for Arc<Mutex<HeadReader>> {
    fn read(&self, bytes: &[u8]) {
        self.lock().unwrap_or_else(|e| e.into_inner()).feed(bytes);
    }
}

/// A stream that tells its observer of every read and write, and is otherwise the stream.
struct Observed<T, O> {
    inner: T,
    observer: O,
}

impl<T: AsyncRead + Unpin, O: Observer + Unpin> AsyncRead for Observed<T, O> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.observer.read(&buf.filled()[before..]);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin, O: Observer + Unpin> AsyncWrite for Observed<T, O> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.observer.wrote();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.observer.wrote();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
