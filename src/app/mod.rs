//! Wiring: builds every part from a validated config, binds the listeners, starts the key and
//! config reloaders, and runs until told to stop. `main`, `demo` and the integration tests all start
//! keygate through here, so what the tests run is what ships.

mod backend;
pub mod reload;
mod shutdown;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use self::backend::{BackendTasks, KeyBackend, Shared};
use self::shutdown::{Stages, StopHandle};
use crate::admin::{Admin, AdminApi, Health};
use crate::clock::Clock;
use crate::config::Config;
use crate::forward::Forwarder;
use crate::metrics::Metrics;
use crate::proxy::anomalies::Anomalies;
use crate::proxy::limit::Limiter;
use crate::proxy::tokens::Tokens;
use crate::proxy::{ConnFacts, Live, Proxy};
use crate::readiness::ProbePassThrough;
use crate::server::{self, Handler, ServeOptions};
use crate::store::freshness::Freshness;
use crate::store::reload::{SharedScopes, SharedTable};
use crate::store::source::KeySource;
use crate::tls::TlsState;
use crate::usage::UsageBook;

impl Handler for Live {
    type Body = crate::proxy::Body;

    fn call(
        &self,
        req: http::Request<hyper::body::Incoming>,
        conn: Arc<ConnFacts>,
    ) -> impl std::future::Future<Output = http::Response<Self::Body>> + Send {
        self.handle(req, conn)
    }
}

pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub table: SharedTable,
    /// The request path as configured now, for the external-authorization listeners (`check`).
    pub proxy: Live,
    /// The external-authorization check listeners (`authz:`), when configured.
    pub authz_addr: Option<SocketAddr>,
    pub authz_grpc_addr: Option<SocketAddr>,
    reload: Arc<Notify>,
    /// Wakes the config reloader, when the config came from a file.
    reload_config: Option<Arc<Notify>>,
    tls: Option<Arc<TlsState>>,
    authz_tls: Option<Arc<TlsState>>,
    tokens: Option<Arc<Tokens>>,
    stop: StopHandle,
    done: JoinHandle<usize>,
}

impl Running {
    /// SIGHUP: re-read the config file, the key table, the TLS pair and the JWT signing keys now.
    pub fn reload(&self) {
        if let Some(config) = &self.reload_config {
            config.notify_one();
        }
        self.reload.notify_one();
        if let Some(tokens) = &self.tokens {
            match tokens.reload() {
                Ok(n) => tracing::info!(keys = n, "jwt signing keys reloaded"),
                Err(e) => tracing::error!(error = %e, "jwt key reload failed; keeping the previous keys"),
            }
        }
        for (tls, setting) in [(&self.tls, "tls"), (&self.authz_tls, "authz.tls")] {
            match tls.as_ref().map(|t| t.reload().map(|()| t.not_after())) {
                None => {}
                Some(Ok(not_after)) => {
                    if setting == "tls" {
                        self.metrics.tls_certificate_expires(not_after);
                    }
                    tracing::info!(setting, "tls certificate reloaded")
                }
                Some(Err(e)) => {
                    tracing::error!(setting, error = %e, "tls reload failed; keeping the previous certificate")
                }
            }
        }
    }

    /// Turns `/readyz` to 503 and starts the shutdown: serving on for `shutdown_delay`, then
    /// the drain.
    pub fn shutdown(&self) {
        self.stop.shutdown();
    }

    /// What starts the stages of the shutdown, for whoever waits on `stopped`.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Waits for the drain; returns the number of connections it had to cut.
    pub async fn stopped(self) -> usize {
        self.done.await.unwrap_or(0)
    }
}

/// Loads the key table (refusing to start without one), binds both listeners and serves, on the
/// system's clock.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    start_with_clock(config, Clock::system()).await
}

/// `start`, deciding by `clock`: a test's manual clock makes cool-downs, blocks, expiry and
/// staleness exact.
pub async fn start_with_clock(config: Config, clock: Clock) -> anyhow::Result<Running> {
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::for_store(config.rate_limits.metrics_key_labels, key_series(&config)));
    metrics.routes_known(known_routes(&config));
    metrics.would_refuse_known(config.routes.routes().iter().map(|r| r.spec.pattern.as_str()));
    let usage = Arc::new(UsageBook::default());
    let backend = KeyBackend::load(Arc::clone(&config), &metrics, &usage, clock.clone()).await?;
    let upstream_ready = config.upstream.readiness.as_ref().map(|_| Arc::default());
    let health = Arc::new(Health {
        freshness: backend.freshness.clone(),
        upstream: upstream_ready.clone(),
        ..Health::default()
    });
    if backend.loaded {
        health.table_loaded.store(true, Ordering::Release);
    }
    let (table, freshness) = (Arc::clone(&backend.table), backend.freshness.clone());

    let tls = match &config.tls {
        Some(files) => Some(Arc::new(TlsState::load(files)?)),
        None => None,
    };
    if let Some(tls) = &tls {
        metrics.tls_certificate_expires(tls.not_after());
    }
    let forwarder = Forwarder::new(&config.upstream, clock.clone())?;
    let listeners = Listeners::bind(&config)?;

    let reload = Arc::new(Notify::new());
    let scopes: SharedScopes = Arc::new(arc_swap::ArcSwap::from_pointee(config.scope_catalogue()));
    let shared = Shared {
        metrics: Arc::clone(&metrics),
        usage: Arc::clone(&usage),
        health: Arc::clone(&health),
        clock: clock.clone(),
        scopes: Arc::clone(&scopes),
    };
    let store = backend.start(shared, Arc::clone(&reload));
    let tokens = match &config.jwt {
        Some(settings) => Some(Arc::new(Tokens::new(settings.clone()).map_err(anyhow::Error::msg)?)),
        None => None,
    };
    let parts = Parts { config: &config, metrics: &metrics, usage: &usage, keys: &store.source, clock };
    let (upstream_check, probes) = upstream_watch(&config, &forwarder, upstream_ready, &metrics);
    let proxy = Live::new(request_path(parts, forwarder, tokens.clone(), freshness)?);
    metrics.config_loaded(time::OffsetDateTime::now_utc());
    let (reload_config, config_reloader) = reload::spawn(&config, &proxy, &metrics, scopes, &reload).unzip();
    let sweep = spawn_sweep(proxy.clone());
    let admin = Arc::new(Admin {
        metrics: Arc::clone(&metrics),
        health: Arc::clone(&health),
        keys: store.source,
        usage: Arc::clone(&usage),
        api: AdminApi::new(config.admin_listen, proxy.clone()),
        probes,
    });
    let (stop, stages) = StopHandle::new(Arc::clone(&health));
    let authz = match &config.authz {
        Some(settings) => {
            // The check listeners serve through the shutdown delay and drain with the proxy.
            let rx = stages.drain.clone();
            let stopped = move || shutdown::until_set(rx.clone());
            let drain = config.drain_timeout;
            Some(crate::authz::start(settings, proxy.clone(), &config.limits, drain, stopped).await?)
        }
        None => None,
    };
    let (authz_addr, authz_grpc_addr) = (authz.as_ref().map(|a| a.http_addr), authz.as_ref().and_then(|a| a.grpc_addr));
    let authz_tls = authz.as_ref().and_then(|a| a.tls.clone());
    let (proxy_addr, admin_addr) = (listeners.proxy_addr, listeners.admin_addr);
    tracing::info!(%proxy_addr, %admin_addr, environment = %config.environment, upstream = %config.upstream.uri, tls = tls.is_some(), "keygate listening");
    let serving = Serving { proxy: Arc::new(proxy.clone()), admin, tls: tls.clone(), metrics: Arc::clone(&metrics) };
    let background =
        Background { store: store.tasks, sweep, upstream_check, config_reloader, authz: authz.map(|a| a.done) };
    let done = serve_until_stopped(&config, listeners, serving, (stop.clone(), stages), background);
    Ok(Running {
        proxy_addr,
        admin_addr,
        metrics,
        health,
        table,
        proxy,
        authz_addr,
        authz_grpc_addr,
        reload,
        reload_config,
        tls,
        authz_tls,
        tokens,
        stop,
        done,
    })
}

/// The key-store series to export: those of the store in use.
fn key_series(config: &Config) -> crate::metrics::KeySeries {
    use crate::config::{KeyStore, SyncMode};
    use crate::metrics::KeySeries;
    match &config.key_store {
        KeyStore::File(_) => KeySeries::File,
        KeyStore::Postgres(pg) if matches!(pg.sync, SyncMode::Cache(_)) => KeySeries::PostgresCache,
        KeyStore::Postgres(_) => KeySeries::Postgres,
    }
}

/// The routes `keygate_requests_total` shows at 0 from the start, with the code a request that
/// passes gets on each.
fn known_routes(config: &Config) -> Vec<(&str, &'static str)> {
    let routes = config.routes.routes().iter().map(|r| (r.spec.pattern.as_str(), "OK"));
    routes.chain(config.routes.public_routes().iter().map(|r| (r.pattern.as_str(), "PUBLIC"))).collect()
}

/// The upstream readiness check (its task) and the probe pass-through, as configured.
fn upstream_watch(
    config: &Config,
    forwarder: &Forwarder,
    state: Option<Arc<crate::readiness::UpstreamReadiness>>,
    metrics: &Arc<Metrics>,
) -> (Option<JoinHandle<()>>, Option<ProbePassThrough>) {
    let check = config.upstream.readiness.clone().zip(state).map(|(settings, state)| {
        crate::readiness::spawn_check(forwarder.clone(), settings, state, Arc::clone(metrics))
    });
    let probes = (!config.admin_probes.forward.is_empty())
        .then(|| ProbePassThrough { forwarder: forwarder.clone(), probes: config.admin_probes.clone() });
    (check, probes)
}

/// Both listeners, bound before anything serves so a taken port fails the start.
struct Listeners {
    proxy: TcpListener,
    admin: TcpListener,
    proxy_addr: SocketAddr,
    admin_addr: SocketAddr,
}

impl Listeners {
    fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let backlog = config.limits.listen_backlog;
        let proxy = server::bind(config.listen, backlog).with_context(|| format!("listen {}", config.listen))?;
        let admin = server::bind(config.admin_listen, backlog)
            .with_context(|| format!("admin_listen {}", config.admin_listen))?;
        let (proxy_addr, admin_addr) = (proxy.local_addr()?, admin.local_addr()?);
        Ok(Listeners { proxy, admin, proxy_addr, admin_addr })
    }
}

/// What the request path shares with the rest of keygate.
struct Parts<'a> {
    config: &'a Arc<Config>,
    metrics: &'a Arc<Metrics>,
    usage: &'a Arc<UsageBook>,
    keys: &'a KeySource,
    clock: Clock,
}

/// The request path: keys, limits, anomaly alerts, tokens and the upstream.
fn request_path(
    parts: Parts<'_>,
    forwarder: Forwarder,
    tokens: Option<Arc<Tokens>>,
    freshness: Option<Arc<Freshness>>,
) -> anyhow::Result<Proxy> {
    let Parts { config, metrics, usage, keys, clock } = parts;
    let alerter = reload::alerter(config, metrics, &clock)?;
    Ok(Proxy {
        config: Arc::clone(config),
        keys: keys.clone(),
        forwarder,
        metrics: Arc::clone(metrics),
        usage: Arc::clone(usage),
        limiter: Limiter::new(&config.rate_limits, Arc::clone(metrics), &clock).map_err(anyhow::Error::msg)?,
        anomalies: Anomalies::new(config.anomaly.clone(), Arc::clone(metrics), alerter),
        epoch: clock.now(),
        clock,
        tokens,
        freshness,
    })
}

/// Budgets that refilled, blocks that ended, keys gone quiet: forgotten every few seconds,
/// off the request threads.
fn spawn_sweep(proxy: Live) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let p = proxy.load();
            let _ = crate::background::run(move || p.sweep()).await;
        }
    })
}

/// What the two listeners serve.
struct Serving {
    proxy: Arc<Live>,
    admin: Arc<Admin>,
    tls: Option<Arc<TlsState>>,
    metrics: Arc<Metrics>,
}

/// Work that runs beside the listeners and stops after the drain.
struct Background {
    store: BackendTasks,
    sweep: JoinHandle<()>,
    /// The upstream readiness check (`upstream.readiness`).
    upstream_check: Option<JoinHandle<()>>,
    /// The config file's reloader (a config read from a file).
    config_reloader: Option<JoinHandle<()>>,
    /// The check listeners, which drain alongside the proxy's.
    authz: Option<JoinHandle<()>>,
}

/// Serves both listeners; once the shutdown begins, serves on through `shutdown_delay`, then
/// drains the proxy, stops the background work, then the admin listener (so `/readyz` answers
/// 503 throughout). Yields the connections cut.
fn serve_until_stopped(
    config: &Config,
    listeners: Listeners,
    serving: Serving,
    (stop, stages): (StopHandle, Stages),
    background: Background,
) -> JoinHandle<usize> {
    let proxy_opts = ServeOptions {
        limits: config.limits.clone(),
        drain_timeout: config.drain_timeout,
        tls: serving.tls,
        metrics: Some(serving.metrics),
        name: "proxy",
    };
    let admin_opts = ServeOptions {
        limits: config.limits.clone(),
        drain_timeout: Duration::from_secs(1),
        tls: None,
        metrics: None,
        name: "admin",
    };
    let (admin_stop, admin_stop_rx) = tokio::sync::watch::channel(false);
    let admin_task =
        tokio::spawn(server::serve(listeners.admin, serving.admin, admin_opts, shutdown::until_set(admin_stop_rx)));
    let delay = config.shutdown_delay;
    tokio::spawn(async move {
        let wind_down = Some(stages.wind_down.clone());
        let proxy_stop = async {
            shutdown::after_delay(&stages, delay).await;
            stop.drain_now();
        };
        let cut = server::serve_winding_down(listeners.proxy, serving.proxy, proxy_opts, wind_down, proxy_stop).await;
        if let Some(authz) = background.authz {
            let _ = authz.await;
        }
        background.sweep.abort();
        if let Some(check) = background.upstream_check {
            check.abort();
        }
        if let Some(r) = background.config_reloader {
            r.abort();
        }
        background.store.stop().await;
        let _ = admin_stop.send(true);
        let _ = admin_task.await;
        tracing::info!(cut_connections = cut, "keygate stopped");
        cut
    })
}
