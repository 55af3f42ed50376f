//! The follower: keeps a proxy current with the PostgreSQL table. It LISTENs for change versions
//! and fetches only the rows above its own, with a periodic poll as the catch-up for a lost
//! notification and the probe for a dead link. With `sync: replica` it holds the whole table:
//! loaded at start, every change built off the request path and swapped in whole. With
//! `sync: cache` it drops the cache entries of the rows that changed. A failure leaves the last
//! view serving (within `max_staleness`) while it reconnects with backoff (never waiting longer
//! than the poll interval, so a database that is back is noticed within one poll) and resyncs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_postgres::{Client, IsolationLevel};

use super::cache::{self, KeyCache};
use super::{bounded, connect, migrate, retry_wait, rows, Note, BACKOFF_MAX, BACKOFF_MIN};
use crate::config::PgStore;
use crate::keys::file::{self, TableBuilder};
use crate::metrics::Metrics;
use crate::store::freshness::Freshness;
use crate::store::reload::{retire, ReloadEvent, SharedTable};

/// Rows per round trip on a load: bounded memory, and each step bounded by the timeout.
const BATCH: i32 = 5_000;

pub struct Follower {
    pub settings: PgStore,
    pub target: Target,
    pub freshness: Arc<Freshness>,
    pub metrics: Arc<Metrics>,
    /// SIGHUP: catch up now.
    pub trigger: Arc<Notify>,
    /// The scopes a key may hold; a replica refuses rows with others, as a table file would.
    pub scopes: crate::store::reload::SharedScopes,
}

/// What the follower keeps current.
pub enum Target {
    /// `sync: replica`: the whole table.
    Table(SharedTable),
    /// `sync: cache`: the lookup cache's entries.
    Cache(Arc<KeyCache>),
}

/// How far the follower has got.
#[derive(Debug, Default)]
struct Position {
    version: i64,
    loaded: bool,
}

impl Follower {
    /// Runs until the task is dropped; `on_event` hears of every applied change or failure.
    pub async fn run(self, on_event: impl Fn(ReloadEvent) + Send + Sync + 'static) {
        let (m, f) = (Arc::clone(&self.metrics), Arc::clone(&self.freshness));
        let cache = match &self.target {
            Target::Cache(c) => Some(Arc::clone(c)),
            Target::Table(_) => None,
        };
        let gauge = tokio::spawn(async move {
            let started = f.now();
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let now = f.now();
                m.key_store_staleness(f.age(now).unwrap_or_else(|| now - started));
                if let Some(c) = &cache {
                    c.report().await;
                }
            }
        });
        let _stop_gauge = AbortOnDrop(gauge);
        let mut at = Position::default();
        let mut delay = Duration::ZERO;
        loop {
            let before = at.version;
            let synced_before = self.freshness.age(self.freshness.now());
            let err = self.session(&mut at, &on_event).await.unwrap_err();
            self.metrics.key_store_connected(false);
            // A session that got anywhere starts the backoff again from the bottom.
            let progressed = at.version != before || self.freshness.age(self.freshness.now()) < synced_before;
            delay = if progressed { BACKOFF_MIN } else { (delay * 2).clamp(BACKOFF_MIN, BACKOFF_MAX) };
            let delay = retry_wait(delay, self.settings.poll_interval);
            if at.loaded {
                tracing::warn!(error = %format!("{err:#}"), retry_in_ms = delay.as_millis() as u64, version = at.version,
                    "key store unreachable; serving the last view while reconnecting");
            } else {
                tracing::error!(error = %format!("{err:#}"), retry_in_ms = delay.as_millis() as u64,
                    "key store unreachable; not ready until the key table is loaded");
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// One connection's life: returns only with the reason it ended.
    async fn session(&self, at: &mut Position, on_event: &impl Fn(ReloadEvent)) -> anyhow::Result<()> {
        let s = &self.settings;
        let schema = s.schema.as_str();
        let mut session = connect(s).await.map_err(|e| e.context("connect"))?;
        if s.auto_migrate {
            let applied = bounded(s.timeout, "migrate", migrate::migrate(&mut session.client, schema)).await?;
            if !applied.is_empty() {
                tracing::info!(schema, ?applied, "key store schema migrated");
            }
        }
        bounded(s.timeout, "schema check", migrate::check(&session.client, schema)).await?;
        // LISTEN before the catch-up: a change committed in between is then both fetched and
        // notified, never neither.
        bounded(s.timeout, "listen", session.client.batch_execute(&format!("LISTEN {}", super::channel(schema))))
            .await?;
        self.metrics.key_store_connected(true);
        tracing::info!(schema, version = at.version, "key store connected");
        self.catch_up(&mut session.client, at, on_event).await?;
        let mut poll = tokio::time::interval(s.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let probe = format!("SELECT coalesce(max(version), 0) FROM {schema}.keys");
        loop {
            tokio::select! {
                note = session.notes.recv() => {
                    let mut newest = match note {
                        Some(Note::Changed { version, committed_ms }) => {
                            self.lag(committed_ms);
                            version
                        }
                        Some(Note::Closed(reason)) => anyhow::bail!("connection closed: {reason}"),
                        None => anyhow::bail!("connection closed"),
                    };
                    // A burst of writes becomes one fetch.
                    while let Ok(Note::Changed { version, committed_ms }) = session.notes.try_recv() {
                        self.lag(committed_ms);
                        newest = newest.max(version);
                    }
                    if newest > at.version {
                        self.catch_up(&mut session.client, at, on_event).await?;
                    }
                }
                _ = poll.tick() => {
                    let asked = self.freshness.now();
                    let max: i64 = bounded(s.timeout, "poll", session.client.query_one(&probe, &[])).await?.get(0);
                    if max < at.version {
                        // The table went back in time (restored from a backup, recreated): the
                        // versions no longer line up with ours, so start over.
                        tracing::warn!(ours = at.version, theirs = max, "key store version went backwards; reloading it whole");
                        *at = Position::default();
                    }
                    if max != at.version || !at.loaded {
                        self.catch_up(&mut session.client, at, on_event).await?;
                    } else {
                        self.freshness.mark_current(asked);
                        self.metrics.key_store_synced(at.version);
                    }
                }
                _ = self.trigger.notified() => self.catch_up(&mut session.client, at, on_event).await?,
            }
        }
    }

    fn lag(&self, committed_ms: Option<i64>) {
        if let Some(ms) = committed_ms {
            let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
            self.metrics.key_store_notification_lag((now_ms as f64 - ms as f64).max(0.0) / 1000.0);
        }
    }

    async fn catch_up(
        &self,
        client: &mut Client,
        at: &mut Position,
        on_event: &impl Fn(ReloadEvent),
    ) -> anyhow::Result<()> {
        match &self.target {
            Target::Table(table) => self.load_rows(table, client, at, on_event).await,
            Target::Cache(cache) => self.invalidate(cache, client, at, on_event).await,
        }
    }

    /// Drops the cache entries of every row above our version (all of them when there are too
    /// many to list, or on the first sync, when nothing cached can be vouched for).
    async fn invalidate(
        &self,
        cache: &KeyCache,
        client: &mut Client,
        at: &mut Position,
        on_event: &impl Fn(ReloadEvent),
    ) -> anyhow::Result<()> {
        let asked = self.freshness.now();
        let since = if at.loaded { at.version } else { 0 };
        let changes = cache::changes_since(client, &self.settings.schema, self.settings.timeout, since).await?;
        let invalidated = match (&changes.rows, at.loaded) {
            (Some(rows), true) => {
                cache.invalidate(rows).await;
                Some(rows.len())
            }
            (None, _) | (_, false) => {
                cache.invalidate_all();
                None
            }
        };
        let first = !at.loaded;
        at.version = changes.newest;
        at.loaded = true;
        self.freshness.mark_current(asked);
        self.metrics.key_store_synced(changes.newest);
        if first || invalidated != Some(0) {
            tracing::debug!(version = changes.newest, ?invalidated, "key store changes applied to the cache");
            on_event(ReloadEvent::CacheSynced { version: changes.newest, invalidated });
        }
        Ok(())
    }

    /// Fetches every row above our version in one consistent snapshot and swaps in the result.
    async fn load_rows(
        &self,
        table: &SharedTable,
        client: &mut Client,
        at: &mut Position,
        on_event: &impl Fn(ReloadEvent),
    ) -> anyhow::Result<()> {
        let (timeout, schema) = (self.settings.timeout, self.settings.schema.as_str());
        let asked = self.freshness.now();
        let full = !at.loaded;
        let since = if full { 0 } else { at.version };
        let tx = bounded(
            timeout,
            "begin",
            client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start(),
        )
        .await?;
        let stmt = bounded(timeout, "prepare", tx.prepare(&rows::select_since(schema))).await?;
        let portal = bounded(timeout, "fetch", tx.bind(&stmt, &[&since])).await?;
        let mut newest = since;
        let scopes = self.scopes.load_full();
        let mut builder = TableBuilder::with_capacity(0, &scopes);
        let mut delta = Vec::new();
        let mut problems = Vec::new();
        loop {
            let batch = bounded(timeout, "fetch", tx.query_portal(&portal, BATCH)).await?;
            if batch.is_empty() {
                break;
            }
            for row in &batch {
                newest = newest.max(row.get::<_, i64>(0));
                match rows::parse(row.get(1)) {
                    Ok(k) if full => builder.add(k),
                    Ok(k) => delta.push(k),
                    Err(e) => problems.push(e),
                }
            }
        }
        bounded(timeout, "commit", tx.commit()).await?;
        if newest == since && !full {
            self.freshness.mark_current(asked);
            self.metrics.key_store_synced(at.version);
            return Ok(());
        }
        let started = Instant::now();
        let shared = Arc::clone(table);
        let built = crate::background::run(move || -> Result<usize, Vec<String>> {
            if !problems.is_empty() {
                return Err(problems);
            }
            let next = if full {
                builder.finish()?
            } else {
                let changed = file::build(file::RawTable { keys: delta }, &scopes)?;
                shared.load().with_changes(changed)
            };
            let keys = next.len();
            retire(shared.swap(Arc::new(next)));
            Ok(keys)
        })
        .await;
        let keys = match built {
            Ok(Ok(keys)) => keys,
            Ok(Err(problems)) => {
                self.metrics.key_store_sync_failed();
                anyhow::bail!(
                    "the key store holds rows a proxy cannot use (keeping the last view):\n  - {}",
                    problems.join("\n  - ")
                )
            }
            Err(e) => anyhow::bail!("table build task failed: {e}"),
        };
        at.version = newest;
        at.loaded = true;
        self.freshness.mark_current(asked);
        self.metrics.key_store_synced(newest);
        tracing::debug!(version = newest, keys, full, "key store change applied");
        on_event(ReloadEvent::Loaded { keys, took: started.elapsed() });
        Ok(())
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
