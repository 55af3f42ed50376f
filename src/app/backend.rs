//! The key store chosen once: `key_store` (a file, or PostgreSQL as a replica or a lookup cache)
//! turned into what the rest of keygate reads — the `KeySource`, the table, how fresh it is —
//! and the background work that keeps it current. `app::start` asks here instead of matching on
//! the store itself.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use time::OffsetDateTime;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

use crate::admin::Health;
use crate::clock::Clock;
use crate::config::{Config, KeyStore, OnStale, PgStore, SyncMode};
use crate::keys::KeyTable;
use crate::metrics::Metrics;
use crate::store::freshness::Freshness;
use crate::store::pgstore;
use crate::store::reload::{fingerprint, Fingerprint, ReloadEvent, Reloader, SharedScopes, SharedTable};
use crate::store::source::KeySource;
use crate::usage::UsageBook;

/// With `sync: cache`, usage entries idle this long (and written back) are dropped, so the book
/// holds the recently active keys rather than every key the instance ever saw.
const USAGE_FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

/// The parts every store shares, handed to the tasks that keep the table current.
#[derive(Clone)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub usage: Arc<UsageBook>,
    pub health: Arc<Health>,
    pub clock: Clock,
    /// The scopes a key may hold, widened by config reloads.
    pub scopes: SharedScopes,
}

/// The store's initial state: the table (filled for the file store) and, for PostgreSQL, its
/// freshness. Nothing runs in the background yet.
pub struct KeyBackend {
    config: Arc<Config>,
    clock: Clock,
    pub table: SharedTable,
    pub freshness: Option<Arc<Freshness>>,
    /// The table was loaded before listening (the file store): ready at once.
    pub loaded: bool,
    /// The file as it was just before that load: the reloader compares against this, so a
    /// change made between the load and its first look is not missed.
    file_seen: Option<Fingerprint>,
}

/// The store at work: where keys are read, and the tasks to stop at shutdown.
pub struct Started {
    pub source: KeySource,
    pub tasks: BackendTasks,
}

/// The background work of the store, stopped together after the drain.
pub struct BackendTasks {
    reload: JoinHandle<()>,
    cache_keeper: Option<JoinHandle<()>>,
    census: Option<JoinHandle<()>>,
    /// Stop signal, the writer, and how long its last flush may take.
    usage_writer: Option<(oneshot::Sender<()>, JoinHandle<()>, Duration)>,
}

impl KeyBackend {
    /// The file store refuses to start without a good table. PostgreSQL may be down at start:
    /// keygate then listens, not ready, and the replica loads the table when it can.
    pub async fn load(
        config: Arc<Config>,
        metrics: &Metrics,
        usage: &UsageBook,
        clock: Clock,
    ) -> anyhow::Result<KeyBackend> {
        let mut file_seen = None;
        let (initial, freshness) = match &config.key_store {
            KeyStore::File(path) => {
                file_seen = fingerprint(path);
                let path = path.clone();
                let started = std::time::Instant::now();
                let scopes = config.scope_catalogue();
                let t: KeyTable =
                    tokio::task::spawn_blocking(move || crate::store::table_file::load(&path, &scopes)).await??;
                let took_ms = started.elapsed().as_millis() as u64;
                tracing::info!(keys = t.len(), took_ms, file = %config.keys_source(), "key table loaded");
                after_load(metrics, &t, usage, clock.wall());
                (Some(t), None)
            }
            KeyStore::Postgres(pg) => {
                let serve_stale = pg.on_stale == OnStale::Serve;
                (None, Some(Arc::new(Freshness::new(pg.max_staleness, serve_stale, clock.clone()))))
            }
        };
        let loaded = initial.is_some();
        let table = Arc::new(ArcSwap::from_pointee(initial.unwrap_or_default()));
        Ok(KeyBackend { config, clock, table, freshness, loaded, file_seen })
    }

    /// Starts what keeps the keys current: the file reloader or the PostgreSQL follower (woken
    /// early by `trigger`), the lookup cache's pool keeper, the usage write-back and the census.
    pub fn start(self, shared: Shared, trigger: Arc<Notify>) -> Started {
        let metrics = &shared.metrics;
        let on_event = on_reload_event(shared.clone(), Arc::clone(&self.table));
        // With `sync: cache` the table stays empty: keys are looked up in the cache.
        let (source, cache_keeper) = match &self.config.key_store {
            KeyStore::Postgres(pg @ PgStore { sync: SyncMode::Cache(cs), .. }) => {
                let pool = Arc::new(pgstore::pool::Pool::new(cs.pool_size));
                let keeper = tokio::spawn(Arc::clone(&pool).keep(pg.clone(), Arc::clone(metrics)));
                let cache = pgstore::cache::KeyCache::new(cs, pool, pg.timeout, Arc::clone(metrics));
                (KeySource::Cache(Arc::new(cache)), Some(keeper))
            }
            KeyStore::Postgres(_) | KeyStore::File(_) => (KeySource::Table(Arc::clone(&self.table)), None),
        };
        let (reload, usage_writer) = match &self.config.key_store {
            KeyStore::File(path) => {
                let reloader = Reloader {
                    path: path.clone(),
                    table: Arc::clone(&self.table),
                    interval: self.config.keys.reload_interval,
                    trigger,
                    scopes: Arc::clone(&shared.scopes),
                    seen: self.file_seen,
                    idle_patience: crate::store::reload::IDLE_PATIENCE,
                };
                (tokio::spawn(reloader.run(on_event)), None)
            }
            KeyStore::Postgres(pg) => {
                let follower = pgstore::sync::Follower {
                    settings: pg.clone(),
                    target: match &source {
                        KeySource::Table(t) => pgstore::sync::Target::Table(Arc::clone(t)),
                        KeySource::Cache(c) => pgstore::sync::Target::Cache(Arc::clone(c)),
                    },
                    freshness: Arc::clone(self.freshness.as_ref().expect("set for postgres")),
                    metrics: Arc::clone(metrics),
                    trigger,
                    scopes: Arc::clone(&shared.scopes),
                };
                (tokio::spawn(follower.run(on_event)), usage_write_back(pg, &shared))
            }
        };
        let census = census(&source, metrics, &self.clock);
        Started { source, tasks: BackendTasks { reload, cache_keeper, census, usage_writer } }
    }
}

impl BackendTasks {
    /// After the drain: stop following the store, then give the usage write-back its last flush.
    pub async fn stop(self) {
        self.reload.abort();
        if let Some(census) = self.census {
            census.abort();
        }
        if let Some(keeper) = self.cache_keeper {
            keeper.abort();
        }
        if let Some((stop, writer, limit)) = self.usage_writer {
            let _ = stop.send(());
            if tokio::time::timeout(limit, writer).await.is_err() {
                tracing::warn!("usage write-back did not finish its last flush in time; those counts are lost");
            }
        }
    }
}

/// After every successful load, at start and on reload: count the table, forget usage of keys
/// that left it, and hand the parse buffers back to the OS. Walks the whole table.
fn after_load(metrics: &Metrics, table: &KeyTable, usage: &UsageBook, now: OffsetDateTime) {
    metrics.table_loaded(table, now);
    if !usage.is_empty() {
        let ids: std::collections::HashSet<&str> = table.records().map(|r| &*r.id).collect();
        usage.retain(|id| ids.contains(id));
    }
    crate::alloc::return_free_memory();
}

/// What the reloader or follower reports: logged, counted, and readiness turned on.
fn on_reload_event(shared: Shared, table: SharedTable) -> impl Fn(ReloadEvent) + Send + Sync + 'static {
    let Shared { metrics: m, usage: u, health: h, clock, .. } = shared;
    move |ev| match ev {
        ReloadEvent::Loaded { keys, took } => {
            tracing::info!(keys, took_ms = took.as_millis() as u64, "key table reloaded");
            h.table_loaded.store(true, Ordering::Release);
            // Housekeeping walks the whole table: off the request threads, which on one CPU
            // would otherwise stall for milliseconds at a million keys.
            let (m, t, u, now) = (Arc::clone(&m), Arc::clone(&table), Arc::clone(&u), clock.wall());
            tokio::spawn(crate::background::run(move || after_load(&m, &t.load_full(), &u, now)));
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
    }
}

/// Fleet-wide usage: this instance's counts added to the store's, off the request path.
fn usage_write_back(pg: &PgStore, shared: &Shared) -> Option<(oneshot::Sender<()>, JoinHandle<()>, Duration)> {
    pg.usage_flush.map(|interval| {
        let (stop, stopped) = oneshot::channel();
        let writer = pgstore::usage::UsageWriter {
            settings: pg.clone(),
            book: Arc::clone(&shared.usage),
            metrics: Arc::clone(&shared.metrics),
            interval,
            forget_after: matches!(pg.sync, SyncMode::Cache(_)).then_some(USAGE_FORGET_AFTER),
            clock: shared.clock.clone(),
        };
        // The last flush after the drain gets two statement timeouts, then is cut.
        (stop, tokio::spawn(writer.run(stopped)), pg.timeout * 2)
    })
}

/// No census without a table: with `sync: cache` the key gauges are not exported at all,
/// rather than reading 0 active keys (which KeygateNoActiveKeys would page about).
fn census(source: &KeySource, metrics: &Arc<Metrics>, clock: &Clock) -> Option<JoinHandle<()>> {
    let KeySource::Table(t) = source else { return None };
    let (m, t, clock) = (Arc::clone(metrics), Arc::clone(t), clock.clone());
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(15));
        loop {
            tick.tick().await;
            let (m, t, now) = (Arc::clone(&m), Arc::clone(&t), clock.wall());
            let _ = crate::background::run(move || m.key_census(&t.load_full(), now)).await;
        }
    }))
}
