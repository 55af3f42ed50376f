//! Usage written back to PostgreSQL, so `keygate keys show` can report a key's use across the
//! fleet. Off the request path: a task snapshots the usage book every `flush_interval`, works
//! out what is new since the last write the store accepted, and adds it in one transaction
//! (an UPSERT that adds; rows in id order, so two proxies flushing together cannot deadlock).
//! A failed flush is counted and logged and changes nothing here: its counts are in the next.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_postgres::GenericClient;

use super::{bounded, connect, Session};
use crate::clock::Clock;
use crate::config::PgStore;
use crate::metrics::Metrics;
use crate::usage::{Counts, RequestsByClass, UsageBook, UsageView};

/// Rows per statement: each statement is bounded by the store timeout.
const CHUNK: usize = 5_000;

pub struct UsageWriter {
    pub settings: PgStore,
    pub book: Arc<UsageBook>,
    pub metrics: Arc<Metrics>,
    pub interval: Duration,
    /// Drop entries idle this long once written (`sync: cache`, where the book would otherwise
    /// grow towards the whole table); `None` keeps them (a replica's table bounds the book).
    pub forget_after: Option<Duration>,
    /// What "idle this long" is measured against: the clock usage is recorded by.
    pub clock: Clock,
}

/// What the writer remembers between flushes.
#[derive(Default)]
struct State {
    session: Option<Session>,
    /// Each key's counts as of the last flush the store accepted.
    written: HashMap<Arc<str>, Counts>,
}

impl UsageWriter {
    /// Flushes every interval until `stop` fires, then once more (the drain's last counts).
    pub async fn run(self, mut stop: oneshot::Receiver<()>) {
        let mut state = State::default();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => self.flush(&mut state).await,
                _ = &mut stop => {
                    self.flush(&mut state).await;
                    return;
                }
            }
        }
    }

    async fn flush(&self, state: &mut State) {
        let now = self.book.snapshot();
        let mut deltas: Vec<(&Arc<str>, Counts)> = now
            .iter()
            .filter_map(|(id, c)| c.since(state.written.get(id).unwrap_or(&Counts::default())).map(|d| (id, d)))
            .collect();
        if deltas.is_empty() {
            return;
        }
        deltas.sort_unstable_by(|a, b| a.0.cmp(b.0));
        match self.write(state, &deltas).await {
            Ok(()) => {
                self.metrics.usage_flushed(true);
                self.metrics.usage_pending(0);
                tracing::debug!(keys = deltas.len(), "usage written to the key store");
                state.written = now.into_iter().collect();
                if let Some(after) = self.forget_after {
                    let cutoff = unix_ms(self.clock.wall()) - i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
                    let written = &state.written;
                    let gone = self.book.forget(|id, c| written.get(id) == Some(c) && c.last_used_ms < cutoff);
                    for id in gone {
                        state.written.remove(&id);
                    }
                }
            }
            Err(e) => {
                state.session = None;
                self.metrics.usage_flushed(false);
                self.metrics.usage_pending(deltas.len());
                tracing::warn!(error = %format!("{e:#}"), keys = deltas.len(),
                    "usage write-back to the key store failed; keeping the counts for the next flush");
            }
        }
    }

    async fn write(&self, state: &mut State, deltas: &[(&Arc<str>, Counts)]) -> anyhow::Result<()> {
        let s = &self.settings;
        if state.session.as_ref().is_none_or(|c| c.client.is_closed()) {
            state.session = Some(connect(s).await.map_err(|e| e.context("connect"))?);
        }
        let client = &mut state.session.as_mut().expect("connected above").client;
        let tx = bounded(s.timeout, "begin", client.transaction()).await?;
        for chunk in deltas.chunks(CHUNK) {
            bounded(s.timeout, "usage upsert", add(&tx, &s.schema, chunk)).await?;
        }
        bounded(s.timeout, "commit", tx.commit()).await
    }
}

/// Adds `deltas` to the stored usage in one statement.
async fn add(
    c: &impl GenericClient,
    schema: &str,
    deltas: &[(&Arc<str>, Counts)],
) -> Result<u64, tokio_postgres::Error> {
    let ids: Vec<&str> = deltas.iter().map(|(id, _)| &***id).collect();
    let last: Vec<i64> = deltas.iter().map(|(_, d)| d.last_used_ms).collect();
    let class = |i: usize| -> Vec<i64> {
        deltas.iter().map(|(_, d)| i64::try_from(d.by_class[i]).unwrap_or(i64::MAX)).collect()
    };
    let (c1, c2, c3, c4, c5) = (class(0), class(1), class(2), class(3), class(4));
    let limited: Vec<i64> = deltas.iter().map(|(_, d)| i64::try_from(d.rate_limited).unwrap_or(i64::MAX)).collect();
    let sql = format!(
        "INSERT INTO {schema}.key_usage AS u
             (key_id, last_used_at, requests_1xx, requests_2xx, requests_3xx, requests_4xx, requests_5xx, rate_limited)
         SELECT k, CASE WHEN ms > 0 THEN to_timestamp(ms / 1000.0) END, c1, c2, c3, c4, c5, rl
         FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[],
                     $8::bigint[]) AS d(k, ms, c1, c2, c3, c4, c5, rl)
         ON CONFLICT (key_id) DO UPDATE SET
             last_used_at = greatest(u.last_used_at, EXCLUDED.last_used_at),
             requests_1xx = u.requests_1xx + EXCLUDED.requests_1xx,
             requests_2xx = u.requests_2xx + EXCLUDED.requests_2xx,
             requests_3xx = u.requests_3xx + EXCLUDED.requests_3xx,
             requests_4xx = u.requests_4xx + EXCLUDED.requests_4xx,
             requests_5xx = u.requests_5xx + EXCLUDED.requests_5xx,
             rate_limited = u.rate_limited + EXCLUDED.rate_limited,
             updated_at = now()"
    );
    c.execute(&sql, &[&ids, &last, &c1, &c2, &c3, &c4, &c5, &limited]).await
}

/// A key's usage summed over every proxy that has flushed (`keygate keys show`).
pub async fn read(c: &impl GenericClient, schema: &str, id: &str) -> anyhow::Result<UsageView> {
    let row = c
        .query_opt(
            &format!(
                "SELECT (extract(epoch FROM last_used_at) * 1000)::bigint, requests_1xx, requests_2xx, requests_3xx,
                        requests_4xx, requests_5xx, rate_limited
                 FROM {schema}.key_usage WHERE key_id = $1"
            ),
            &[&id],
        )
        .await?;
    let Some(r) = row else {
        return Ok(UsageView { last_used_at: None, requests: RequestsByClass::default(), rate_limited: 0 });
    };
    let n = |i: usize| u64::try_from(r.get::<_, i64>(i)).unwrap_or(0);
    let last = r
        .get::<_, Option<i64>>(0)
        .and_then(|ms| time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok())
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
    Ok(UsageView {
        last_used_at: last,
        requests: RequestsByClass { c1: n(1), c2: n(2), c3: n(3), c4: n(4), c5: n(5) },
        rate_limited: n(6),
    })
}

fn unix_ms(now: time::OffsetDateTime) -> i64 {
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}
