//! `keygate webhook serve`: the mutating admission webhook over HTTPS. `POST /inject` answers
//! an AdmissionReview (see `review`), `/healthz` and `/metrics` are the proxy's admin pair. The
//! listener, limits and drain are `server::serve`'s; the certificate is `tls::TlsState`,
//! reloaded when its files change (cert-manager renewals, Secret updates) without a restart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use prometheus::{Encoder, IntCounterVec, Opts, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::review::{review, Decision, Policy};
use super::SidecarArgs;
use crate::config::{Limits, TlsFiles};
use crate::proxy::ConnFacts;
use crate::server::{self, Handler, ServeOptions};
use crate::tls::TlsState;

/// The API server caps objects near 3 MiB; a review wraps one object (two for updates).
const MAX_REVIEW_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Where the API server reaches the webhook (HTTPS).
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Serving certificate (PEM), e.g. tls.crt of the Secret `keygate webhook certs` fills.
    #[arg(long)]
    pub cert_file: PathBuf,
    /// Its private key (PEM), e.g. tls.key of the same Secret; both are re-read on change.
    #[arg(long)]
    pub key_file: PathBuf,
    /// The webhook's own namespace, never injected into (the Deployment sets it from the
    /// downward API).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// How often the certificate files are checked for a change.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub reload_interval: Duration,
    #[command(flatten)]
    pub sidecar: SidecarArgs,
}

/// Reviews answered, by decision; a registry of its own, as the proxy's `Metrics` has.
pub struct WebhookMetrics {
    registry: Registry,
    reviews: IntCounterVec,
}

impl WebhookMetrics {
    pub fn new() -> WebhookMetrics {
        let registry = Registry::new();
        let reviews = IntCounterVec::new(
            Opts::new("keygate_webhook_reviews_total", "Admission reviews answered, by decision"),
            &["decision"],
        )
        .expect("static metric definition");
        registry.register(Box::new(reviews.clone())).expect("registered once");
        for d in [Decision::Injected, Decision::Skipped, Decision::Denied, Decision::Invalid] {
            reviews.with_label_values(&[d.as_str()]);
        }
        WebhookMetrics { registry, reviews }
    }

    pub fn reviewed(&self, d: Decision) {
        self.reviews.with_label_values(&[d.as_str()]).inc();
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        WebhookMetrics::new()
    }
}

pub struct Webhook {
    pub policy: Policy,
    pub metrics: WebhookMetrics,
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

impl Handler for Webhook {
    type Body = Full<Bytes>;

    async fn call(&self, req: Request<Incoming>, _conn: Arc<ConnFacts>) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            (&Method::POST, "/inject") => self.inject(req).await,
            (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n"),
            (&Method::GET, "/metrics") => {
                reply(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", self.metrics.render())
            }
            _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        }
    }
}

impl Webhook {
    async fn inject(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let body = match Limited::new(req.into_body(), MAX_REVIEW_BYTES).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                self.metrics.reviewed(Decision::Invalid);
                return reply(StatusCode::PAYLOAD_TOO_LARGE, "text/plain", format!("cannot read the review: {e}\n"));
            }
        };
        let (out, decision) = review(&body, &self.policy);
        self.metrics.reviewed(decision);
        let text = |pointer: &str| out.pointer(pointer).and_then(serde_json::Value::as_str).unwrap_or("");
        tracing::info!(
            uid = text("/response/uid"),
            decision = decision.as_str(),
            message = text("/response/status/message"),
            "admission review"
        );
        // A review that could not be read is still answered 200 with allowed: false: the API
        // server then shows the reason instead of a bare transport error.
        reply(StatusCode::OK, "application/json", serde_json::to_vec(&out).unwrap_or_default())
    }
}

/// A started webhook: its address; `stop` begins the drain, `stopped` waits for it.
pub struct Running {
    pub addr: SocketAddr,
    pub webhook: Arc<Webhook>,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<usize>,
    reloader: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    pub async fn stopped(self) -> usize {
        self.stop();
        self.reloader.abort();
        self.done.await.unwrap_or(0)
    }
}

fn limits() -> Limits {
    Limits {
        max_header_bytes: 16 * 1024,
        max_headers: 100,
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(90),
        max_concurrent_streams: 100,
        max_connections: 1024,
        // The API server is the only client, from a handful of addresses.
        per_address: crate::config::PerAddressCap { max: 0, exempt: Vec::new() },
        listen_backlog: 1024,
        max_body_bytes: MAX_REVIEW_BYTES as u64,
        request_id_max_length: 128,
    }
}

pub async fn start(args: &ServeArgs) -> anyhow::Result<Running> {
    let files = TlsFiles { cert_file: args.cert_file.clone(), key_file: args.key_file.clone() };
    let tls = Arc::new(TlsState::load(&files)?);
    let listener = TcpListener::bind(args.listen).await.map_err(|e| anyhow::anyhow!("{}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    let policy = Policy { options: args.sidecar.options(), own_namespace: args.namespace.clone() };
    let webhook = Arc::new(Webhook { policy, metrics: WebhookMetrics::new() });
    let (stop, mut stop_rx) = watch::channel(false);
    let opts = ServeOptions {
        limits: limits(),
        drain_timeout: Duration::from_secs(10),
        tls: Some(Arc::clone(&tls)),
        metrics: None,
        name: "webhook",
    };
    let shutdown = async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    };
    let done = tokio::spawn(server::serve(listener, Arc::clone(&webhook), opts, shutdown));
    let reloader = tokio::spawn(reload_on_change(tls, files, args.reload_interval));
    tracing::info!(%addr, namespace = args.namespace.as_deref().unwrap_or(""), "keygate webhook listening");
    Ok(Running { addr, webhook, stop, done, reloader })
}

/// Polls the files' contents: Secret volumes swap a symlink, so neither the path's mtime nor
/// an inotify watch on it is reliable; the bytes are.
async fn reload_on_change(tls: Arc<TlsState>, files: TlsFiles, every: Duration) {
    let read = |f: &TlsFiles| (std::fs::read(&f.cert_file).ok(), std::fs::read(&f.key_file).ok());
    let mut seen = read(&files);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = read(&files);
        if now == seen {
            continue;
        }
        match tls.reload() {
            Ok(()) => tracing::info!("webhook certificate reloaded"),
            Err(e) => tracing::error!(error = %e, "webhook certificate reload failed; keeping the previous one"),
        }
        // A half-written pair is retried once it changes again, not every tick.
        seen = now;
    }
}

/// `keygate webhook serve` until SIGTERM or Ctrl-C.
pub async fn run(args: &ServeArgs) -> anyhow::Result<std::process::ExitCode> {
    let running = start(args).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping: draining open connections");
    let cut = running.stopped().await;
    Ok(if cut == 0 { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(2) })
}
