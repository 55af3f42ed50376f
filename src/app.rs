//! Wiring: builds every part from a validated config, binds the listeners, starts the key
//! reloader, and runs until told to stop. `main`, `demo` and the integration tests all start
//! keygate through here, so what the tests run is what ships.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::admin::{Admin, AdminApi, Health};
use crate::config::{Config, KeyStore, PgStore, SyncMode};
use crate::forward::Forwarder;
use crate::keys::KeyTable;
use crate::metrics::Metrics;
use crate::proxy::anomalies::Anomalies;
use crate::proxy::limit::Limiter;
use crate::proxy::{ConnFacts, Proxy};
use crate::server::{self, Handler, ServeOptions};
use crate::store::freshness::Freshness;
use crate::store::reload::{ReloadEvent, Reloader, SharedTable};
use crate::store::source::KeySource;
use crate::tls::TlsState;
use crate::usage::UsageBook;

impl Handler for Proxy {
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
    /// The request path, for the external-authorization listeners (`Proxy::check`).
    pub proxy: Arc<Proxy>,
    reload: Arc<Notify>,
    tls: Option<Arc<TlsState>>,
    tokens: Option<Arc<crate::proxy::tokens::Tokens>>,
    stop: watch::Sender<bool>,
    done: JoinHandle<usize>,
}

impl Running {
    /// SIGHUP: re-read the key table, the TLS pair and the JWT signing keys now.
    pub fn reload(&self) {
        self.reload.notify_one();
        if let Some(tokens) = &self.tokens {
            match tokens.reload() {
                Ok(n) => tracing::info!(keys = n, "jwt signing keys reloaded"),
                Err(e) => tracing::error!(error = %e, "jwt key reload failed; keeping the previous keys"),
            }
        }
        if let Some(tls) = &self.tls {
            match tls.reload() {
                Ok(()) => tracing::info!("tls certificate reloaded"),
                Err(e) => tracing::error!(error = %e, "tls reload failed; keeping the previous certificate"),
            }
        }
    }

    /// Turns `/readyz` to 503 and starts draining.
    pub fn shutdown(&self) {
        self.health.shutting_down.store(true, Ordering::Release);
        let _ = self.stop.send(true);
    }

    /// Waits for the drain; returns the number of connections it had to cut.
    pub async fn stopped(self) -> usize {
        self.done.await.unwrap_or(0)
    }
}

/// With `sync: cache`, usage entries idle this long (and written back) are dropped, so the book
/// holds the recently active keys rather than every key the instance ever saw.
const USAGE_FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

async fn until_stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// After every successful load, at start and on reload: count the table, forget usage of keys
/// that left it, and hand the parse buffers back to the OS. Walks the whole table.
fn after_load(metrics: &Metrics, table: &KeyTable, usage: &UsageBook) {
    metrics.table_loaded(table, OffsetDateTime::now_utc());
    if !usage.is_empty() {
        let ids: std::collections::HashSet<&str> = table.records().map(|r| &*r.id).collect();
        usage.retain(|id| ids.contains(id));
    }
    crate::alloc::return_free_memory();
}

/// Loads the key table (refusing to start without one), binds both listeners and serves.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::with_key_label_cap(config.rate_limits.metrics_key_labels));
    let freshness = match &config.key_store {
        KeyStore::File(_) => None,
        KeyStore::Postgres(pg) => {
            Some(Arc::new(Freshness::new(pg.max_staleness, pg.on_stale == crate::config::OnStale::Serve)))
        }
    };
    let health = Arc::new(Health { freshness: freshness.clone(), ..Health::default() });
    let usage = Arc::new(UsageBook::default());

    // The file store refuses to start without a good table. PostgreSQL may be down at start:
    // keygate then listens, not ready, and the replica loads the table when it can.
    let initial = match &config.key_store {
        KeyStore::File(path) => {
            let path = path.clone();
            let started = std::time::Instant::now();
            let scopes = config.scope_catalogue();
            let t: KeyTable =
                tokio::task::spawn_blocking(move || crate::store::table_file::load(&path, &scopes)).await??;
            let took_ms = started.elapsed().as_millis() as u64;
            tracing::info!(keys = t.len(), took_ms, file = %config.keys_source(), "key table loaded");
            after_load(&metrics, &t, &usage);
            health.table_loaded.store(true, Ordering::Release);
            t
        }
        KeyStore::Postgres(_) => KeyTable::default(),
    };
    let table: SharedTable = Arc::new(ArcSwap::from_pointee(initial));

    let tls = match &config.tls {
        Some(files) => Some(Arc::new(TlsState::load(files)?)),
        None => None,
    };
    let forwarder = Forwarder::new(&config.upstream)?;
    let proxy_listener = TcpListener::bind(config.listen).await.with_context(|| format!("listen {}", config.listen))?;
    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("admin_listen {}", config.admin_listen))?;
    let proxy_addr = proxy_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let reload = Arc::new(Notify::new());
    let (m, t, u, h) = (Arc::clone(&metrics), Arc::clone(&table), Arc::clone(&usage), Arc::clone(&health));
    let on_event = move |ev| match ev {
        ReloadEvent::Loaded { keys, took } => {
            tracing::info!(keys, took_ms = took.as_millis() as u64, "key table reloaded");
            h.table_loaded.store(true, Ordering::Release);
            // Housekeeping walks the whole table: off the request threads, which on one CPU
            // would otherwise stall for milliseconds at a million keys.
            let (m, t, u) = (Arc::clone(&m), Arc::clone(&t), Arc::clone(&u));
            tokio::spawn(crate::background::run(move || after_load(&m, &t.load_full(), &u)));
        }
        ReloadEvent::Failed { error } => {
            tracing::error!(%error, "key table reload failed; still serving the last good table");
            m.table_reload_failed();
        }
        ReloadEvent::CacheSynced { version, invalidated } => {
            if !h.table_loaded.swap(true, Ordering::AcqRel) {
                tracing::info!(version, "key store followed; serving from the lookup cache");
            }
            tracing::debug!(version, ?invalidated, "key cache current");
        }
    };
    // With `sync: cache` the table stays empty: keys are looked up in the cache.
    let (source, cache_tasks) = match &config.key_store {
        KeyStore::Postgres(pg @ PgStore { sync: SyncMode::Cache(cs), .. }) => {
            let pool = Arc::new(crate::store::pgstore::pool::Pool::new(cs.pool_size));
            let keeper = tokio::spawn(Arc::clone(&pool).keep(pg.clone(), Arc::clone(&metrics)));
            let cache = crate::store::pgstore::cache::KeyCache::new(cs, pool, pg.timeout, Arc::clone(&metrics));
            (KeySource::Cache(Arc::new(cache)), Some(keeper))
        }
        KeyStore::Postgres(_) | KeyStore::File(_) => (KeySource::Table(Arc::clone(&table)), None),
    };
    let reload_task = match &config.key_store {
        KeyStore::File(path) => {
            let reloader = Reloader {
                path: path.clone(),
                table: Arc::clone(&table),
                interval: config.keys.reload_interval,
                trigger: Arc::clone(&reload),
                scopes: config.scope_catalogue(),
            };
            tokio::spawn(reloader.run(on_event))
        }
        KeyStore::Postgres(pg) => {
            let follower = crate::store::pgstore::sync::Follower {
                settings: pg.clone(),
                target: match &source {
                    KeySource::Table(t) => crate::store::pgstore::sync::Target::Table(Arc::clone(t)),
                    KeySource::Cache(c) => crate::store::pgstore::sync::Target::Cache(Arc::clone(c)),
                },
                freshness: Arc::clone(freshness.as_ref().expect("set for postgres")),
                metrics: Arc::clone(&metrics),
                trigger: Arc::clone(&reload),
                scopes: config.scope_catalogue(),
            };
            tokio::spawn(follower.run(on_event))
        }
    };
    // Fleet-wide usage: this instance's counts added to the store's, off the request path.
    let usage_writer = match &config.key_store {
        KeyStore::Postgres(pg) => pg.usage_flush.map(|interval| {
            let (stop, stopped) = tokio::sync::oneshot::channel();
            let writer = crate::store::pgstore::usage::UsageWriter {
                settings: pg.clone(),
                book: Arc::clone(&usage),
                metrics: Arc::clone(&metrics),
                interval,
                forget_after: matches!(pg.sync, SyncMode::Cache(_)).then_some(USAGE_FORGET_AFTER),
            };
            // The last flush after the drain gets two statement timeouts, then is cut.
            (stop, tokio::spawn(writer.run(stopped)), pg.timeout * 2)
        }),
        KeyStore::File(_) => None,
    };
    // No census without a table: with `sync: cache` the key gauges are not exported at all,
    // rather than reading 0 active keys (which KeygateNoActiveKeys would page about).
    let census_task = match &source {
        KeySource::Table(t) => {
            let (m, t) = (Arc::clone(&metrics), Arc::clone(t));
            Some(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(15));
                loop {
                    tick.tick().await;
                    let (m, t) = (Arc::clone(&m), Arc::clone(&t));
                    let _ =
                        crate::background::run(move || m.key_census(&t.load_full(), OffsetDateTime::now_utc())).await;
                }
            }))
        }
        KeySource::Cache(_) => None,
    };

    let tokens = match &config.jwt {
        Some(settings) => {
            Some(Arc::new(crate::proxy::tokens::Tokens::new(settings.clone()).map_err(anyhow::Error::msg)?))
        }
        None => None,
    };
    let alerter: Option<Box<dyn crate::proxy::anomalies::Notify>> = match &config.webhook {
        Some(settings) => Some(Box::new(
            crate::alert::Alerter::spawn(settings.clone(), Arc::clone(&metrics)).map_err(anyhow::Error::msg)?,
        )),
        None => None,
    };
    let proxy_path = Arc::new(Proxy {
        config: Arc::clone(&config),
        keys: source.clone(),
        forwarder,
        metrics: Arc::clone(&metrics),
        usage: Arc::clone(&usage),
        limiter: Limiter::new(&config.rate_limits, Arc::clone(&metrics)).map_err(anyhow::Error::msg)?,
        anomalies: Anomalies::new(config.anomaly.clone(), Arc::clone(&metrics), alerter),
        epoch: std::time::Instant::now(),
        tokens: tokens.clone(),
        freshness,
    });
    // Budgets that refilled, blocks that ended, keys gone quiet: forgotten every few seconds,
    // off the request threads.
    let p = Arc::clone(&proxy_path);
    let sweep_task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let p = Arc::clone(&p);
            let _ = crate::background::run(move || p.sweep()).await;
        }
    });
    let admin = Arc::new(Admin {
        metrics: Arc::clone(&metrics),
        health: Arc::clone(&health),
        keys: source,
        usage: Arc::clone(&usage),
        api: AdminApi::new(config.admin_listen, config.admin_token.clone()),
    });
    let (stop, stop_rx) = watch::channel(false);
    let (admin_stop, admin_stop_rx) = watch::channel(false);

    let proxy_opts = ServeOptions {
        limits: config.limits.clone(),
        drain_timeout: config.drain_timeout,
        tls: tls.clone(),
        metrics: Some(Arc::clone(&metrics)),
        name: "proxy",
    };
    let admin_opts = ServeOptions {
        limits: config.limits.clone(),
        drain_timeout: Duration::from_secs(1),
        tls: None,
        metrics: None,
        name: "admin",
    };
    tracing::info!(%proxy_addr, %admin_addr, environment = %config.environment, upstream = %config.upstream.uri, tls = tls.is_some(), "keygate listening");
    let admin_task = tokio::spawn(server::serve(admin_listener, admin, admin_opts, until_stopped(admin_stop_rx)));
    let proxy = Arc::clone(&proxy_path);
    let done = tokio::spawn(async move {
        let cut = server::serve(proxy_listener, proxy_path, proxy_opts, until_stopped(stop_rx)).await;
        reload_task.abort();
        if let Some(census) = census_task {
            census.abort();
        }
        sweep_task.abort();
        if let Some(keeper) = cache_tasks {
            keeper.abort();
        }
        if let Some((stop, writer, limit)) = usage_writer {
            let _ = stop.send(());
            if tokio::time::timeout(limit, writer).await.is_err() {
                tracing::warn!("usage write-back did not finish its last flush in time; those counts are lost");
            }
        }
        let _ = admin_stop.send(true);
        let _ = admin_task.await;
        tracing::info!(cut_connections = cut, "keygate stopped");
        cut
    });
    Ok(Running { proxy_addr, admin_addr, metrics, health, table, proxy, reload, tls, tokens, stop, done })
}
