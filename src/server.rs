//! Listeners: accept loop with a connection cap, optional TLS, HTTP/1.1 and HTTP/2 (h2c prior
//! knowledge or ALPN) on one port, header size/count and read-time bounds, an idle timeout,
//! and a graceful drain with a deadline when the shutdown future it is given completes.

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::config::Limits;
use crate::head_check::HeadReader;
use crate::metrics::Metrics;
use crate::proxy::ConnFacts;
use crate::tls::TlsState;
use control::{Control, IdleLimits, Stop, CUT, DRAIN, HEAD_TIMEOUT, IDLE, WIND_DOWN};
use observed::{Observed, Observer};
use per_address::PerAddress;
use service::{service, PerConnection};

mod control;
mod observed;
mod per_address;
mod service;

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

/// Binds a listener with the given backlog (`listen(2)`'s; the kernel caps it at
/// `net.core.somaxconn`): connections past `max_connections` wait there, not refused.
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As std's and tokio's own bind do: a restart may rebind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Serves until `shutdown` completes, then drains. Returns how many connections were still
/// open when the drain deadline cut them off (0 is a clean drain).
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> usize {
    serve_winding_down(listener, handler, opts, None, shutdown).await
}

/// `serve`, told when a shutdown begins (`wind_down` set) ahead of the drain: from then on,
/// HTTP/1.1 answers carry `Connection: close` and HTTP/2 connections get GOAWAY, so clients
/// reconnect (to another instance, once the load balancer has noticed) while this one still
/// answers whatever reaches it.
pub async fn serve_winding_down<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    opts: ServeOptions,
    wind_down: Option<watch::Receiver<bool>>,
    shutdown: impl Future<Output = ()>,
) -> usize {
    let max = opts.limits.max_connections;
    let permits = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    let wind_down = wind_down.unwrap_or_else(|| watch::channel(false).1);
    let builder = Arc::new(builder(&opts.limits));
    let opts = Arc::new(opts);
    let per_address = Arc::new(PerAddress::default());
    // At the drain deadline: the flag says why requests ended, the channel ends them.
    let (cut, (cut_tx, cut_rx)) = (Arc::new(AtomicBool::new(false)), watch::channel(false));
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
        let Some(slot) = per_address.admit(peer.ip().to_canonical(), &opts.limits.per_address) else {
            // Closed at once: the client's other connections keep working.
            if let Some(m) = &opts.metrics {
                m.connection_refused("per_ip");
            }
            tracing::debug!(listener = opts.name, %peer, "connection refused: per-address cap reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (handler, builder, opts) = (Arc::clone(&handler), Arc::clone(&builder), Arc::clone(&opts));
        let stop = Stop {
            drain: stop_rx.clone(),
            wind_down: wind_down.clone(),
            cut_now: cut_rx.clone(),
            cut: Arc::clone(&cut),
        };
        tokio::spawn(async move {
            let (_permit, _slot) = (permit, slot);
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
    if tokio::time::timeout(deadline, permits.acquire_many(all)).await.is_ok() {
        return 0;
    }
    let open = max - permits.available_permits();
    tracing::warn!(listener = opts.name, open, ?deadline, "drain deadline reached; closing remaining connections");
    cut.store(true, Ordering::Release);
    let _ = cut_tx.send(true);
    // The cut connections go at their next poll; wait for them (their requests' records) briefly.
    let _ = tokio::time::timeout(Duration::from_secs(1), permits.acquire_many(all)).await;
    open
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
        // The header deadline is the connection watcher's (`control`), which sees each head
        // begin and end through `head_check`: hyper's own is a timer armed and dropped for
        // every request (README, Performance).
        .header_read_timeout(None)
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
    stop: Stop,
) {
    let activity = Arc::new(Activity::new());
    let ctl = Arc::new(Control::default());
    let cut = Arc::clone(&stop.cut);
    let limits = IdleLimits { idle: opts.limits.idle_timeout, header: opts.limits.header_read_timeout };
    let winding = stop.wind_down.clone();
    let _watching = AbortOnDrop(tokio::spawn(control::watch(Arc::clone(&ctl), stop, Arc::clone(&activity), limits)));
    let shared = ConnShared { activity, ctl: &ctl, winding };
    let io = Observed { inner: stream, observer: Arc::clone(&shared.activity) };
    match &opts.tls {
        None => {
            let facts = ConnFacts::new(peer, false).cut_by(cut);
            serve_io(io, facts, handler, &builder, opts, shared).await
        }
        Some(tls) => {
            let handshake = tls.acceptor().accept(io);
            let handshake = tokio::time::timeout(opts.limits.header_read_timeout, handshake);
            let tls_io = tokio::select! {
                r = handshake => r,
                _ = ctl.cut() => return,
            };
            match tls_io {
                Ok(Ok(tls_io)) => {
                    let facts = ConnFacts::new(peer, true).cut_by(cut);
                    serve_io(tls_io, facts, handler, &builder, opts, shared).await
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
            }
        }
    }
}

/// The connection's watcher ends with it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Everything a connection's requests share, from `connection` to `serve_io`.
struct ConnShared<'a> {
    activity: Arc<Activity>,
    ctl: &'a Control,
    /// Set once the shutdown has begun (answers then say `Connection: close`).
    winding: watch::Receiver<bool>,
}

async fn serve_io<H, IO>(
    io: IO,
    facts: ConnFacts,
    handler: Arc<H>,
    builder: &auto::Builder<TokioExecutor>,
    opts: &ServeOptions,
    shared: ConnShared<'_>,
) where
    H: Handler,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ConnShared { activity, ctl, winding } = shared;
    let peer = facts.peer;
    let reader = Mutex::new(HeadReader::new(opts.limits.max_header_bytes.saturating_mul(2).max(8192)));
    let heads = Arc::new(Heads { reader, activity: Arc::clone(&activity) });
    let io = Observed { inner: io, observer: Arc::clone(&heads) };
    let is_h2 = Arc::new(AtomicBool::new(false));
    let per_connection = PerConnection { activity, facts: Arc::new(facts), heads, winding, is_h2: Arc::clone(&is_h2) };
    let svc = service(handler, per_connection);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    let mut conn = pin!(conn);
    let (mut seen, mut draining) = (0, false);
    loop {
        let next = poll_fn(|cx| match conn.as_mut().poll(cx) {
            Poll::Ready(r) => Poll::Ready(Err(r)),
            Poll::Pending => ctl.poll_raised(seen, cx).map(Ok),
        });
        let raised = match next.await {
            Ok(raised) => raised,
            Err(r) => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
        };
        let new = raised & !seen;
        seen = raised;
        // Cut at the drain deadline: dropping the connection drops its requests, which record
        // themselves as DRAIN_CUT.
        if new & CUT != 0 {
            return;
        }
        // A head begun and not finished within `header_read_timeout` (slowloris): closed
        // without an answer, as hyper's own header timer did.
        if new & HEAD_TIMEOUT != 0 {
            tracing::debug!(%peer, "request head not complete within the header deadline; closing");
            return;
        }
        // HTTP/2 winding down: GOAWAY now (streams the client sent before it saw it are still
        // served). HTTP/1.1 stays open: closing an idle connection could race a request the
        // client is sending; its next answer says `Connection: close` instead.
        let h2_winding = new & WIND_DOWN != 0 && is_h2.load(Ordering::Relaxed);
        if !draining && (new & (DRAIN | IDLE) != 0 || h2_winding) {
            draining = true;
            conn.as_mut().graceful_shutdown();
        }
    }
}

/// Last read/write time and requests in progress on one connection, for the idle timeout.
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
    /// When the head being read began (`last_ms` of its first read), or `NO_HEAD`.
    head_since_ms: AtomicU64,
    busy: AtomicUsize,
    read_any: AtomicBool,
}

const NO_HEAD: u64 = u64::MAX;

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
            head_since_ms: AtomicU64::new(NO_HEAD),
            busy: AtomicUsize::new(0),
            read_any: AtomicBool::new(false),
        }
    }

    /// Told after each read whether a head is begun and not finished.
    fn head_in_progress(&self, yes: bool) {
        match yes {
            true if self.head_since_ms.load(Ordering::Relaxed) == NO_HEAD => {
                self.head_since_ms.store(self.last_ms.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            true => {}
            false => self.head_since_ms.store(NO_HEAD, Ordering::Relaxed),
        }
    }

    /// Whether a head has been in progress for `limit` or longer.
    fn head_overdue(&self, limit: Duration) -> bool {
        let since = self.head_since_ms.load(Ordering::Relaxed);
        since != NO_HEAD && self.idle_for_since(since) >= limit
    }

    /// Time since `ms` on this connection's clock.
    fn idle_for_since(&self, ms: u64) -> Duration {
        self.base.elapsed().saturating_sub(Duration::from_millis(ms))
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
        self.idle_for_since(self.last_ms.load(Ordering::Relaxed))
    }

    fn is_idle(&self, limit: Duration) -> bool {
        self.busy.load(Ordering::Relaxed) == 0 && self.idle_for() >= limit
    }

    /// How long to sleep before the connection could next be idle for `limit`.
    fn until_idle(&self, limit: Duration) -> Duration {
        limit.saturating_sub(self.idle_for()).max(Duration::from_millis(10))
    }
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

/// The connection's bytes (above TLS) as hyper reads them, read a second time by `head_check`,
/// which also tells when a head is begun and not finished (for the header deadline).
pub(super) struct Heads {
    pub(super) reader: Mutex<HeadReader>,
    activity: Arc<Activity>,
}

impl Observer for Arc<Heads> {
    fn read(&self, bytes: &[u8]) {
        let mut reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        reader.feed(bytes);
        self.activity.head_in_progress(reader.in_head());
    }
}
