//! The connections `sync: cache` looks keys up on: `pool_size` clients handed out round robin.
//! A tokio-postgres client pipelines concurrent queries, so a slot is shared rather than checked
//! out. A keeper task connects the slots and replaces broken ones with backoff; the request path
//! never connects: it takes a live client, or learns at once that there is none.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::Notify;
use tokio_postgres::{Client, Statement};

use super::{bounded, connect, retry_wait, rows, Session, BACKOFF_MAX, BACKOFF_MIN};
use crate::config::PgStore;
use crate::metrics::Metrics;

/// One connection with the two lookups prepared on it.
pub struct Conn {
    session: Session,
    slot: usize,
    pub by_hash: Statement,
    pub by_id: Statement,
}

impl Conn {
    pub fn client(&self) -> &Client {
        &self.session.client
    }
}

pub struct Pool {
    slots: Vec<ArcSwapOption<Conn>>,
    next: AtomicUsize,
    /// Pokes the keeper when a request finds a slot broken.
    wake: Notify,
}

impl Pool {
    pub fn new(size: usize) -> Pool {
        Pool {
            slots: (0..size.max(1)).map(|_| ArcSwapOption::empty()).collect(),
            next: AtomicUsize::new(0),
            wake: Notify::new(),
        }
    }

    /// The next live connection round robin, or `None` when every slot is down.
    pub fn get(&self) -> Option<Arc<Conn>> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let slot = &self.slots[(start + i) % n];
            match slot.load_full() {
                Some(c) if !c.client().is_closed() => return Some(c),
                Some(c) => self.broken(&c),
                None => {}
            }
        }
        None
    }

    /// A query on `conn` failed or timed out: take it out of its slot (unless already replaced)
    /// and have the keeper connect a new one. A silent link is found this way, long before TCP
    /// would give up on it.
    pub fn broken(&self, conn: &Arc<Conn>) {
        let slot = &self.slots[conn.slot];
        let current = slot.load();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            slot.compare_and_swap(&*current, None);
        }
        self.wake.notify_one();
    }

    pub fn live(&self) -> usize {
        self.slots.iter().filter(|s| s.load().as_ref().is_some_and(|c| !c.client().is_closed())).count()
    }

    /// Keeps every slot connected; runs until the task is dropped.
    pub async fn keep(self: Arc<Pool>, settings: PgStore, metrics: Arc<Metrics>) {
        let mut delay = BACKOFF_MIN;
        loop {
            let mut failure = None;
            for (i, slot) in self.slots.iter().enumerate() {
                if slot.load().as_ref().is_some_and(|c| !c.client().is_closed()) {
                    continue;
                }
                match open(&settings, i).await {
                    Ok(c) => slot.store(Some(Arc::new(c))),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            metrics.key_store_pool(self.live());
            match failure {
                Some(e) => {
                    let wait = retry_wait(delay, settings.poll_interval);
                    tracing::warn!(error = %format!("{e:#}"), retry_in_ms = wait.as_millis() as u64, live = self.live(),
                        "key store lookup pool: cannot connect");
                    tokio::time::sleep(wait).await;
                    delay = (delay * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                }
                None => {
                    delay = BACKOFF_MIN;
                    // A closed connection is also noticed here, without a request to find it.
                    let _ = tokio::time::timeout(Duration::from_secs(1), self.wake.notified()).await;
                }
            }
        }
    }
}

async fn open(s: &PgStore, slot: usize) -> anyhow::Result<Conn> {
    let session = connect(s).await.map_err(|e| e.context("connect"))?;
    let schema = s.schema.as_str();
    let by_hash = bounded(s.timeout, "prepare", session.client.prepare(&rows::select_by(schema, "hash"))).await?;
    let by_id = bounded(s.timeout, "prepare", session.client.prepare(&rows::select_by(schema, "id"))).await?;
    Ok(Conn { session, slot, by_hash, by_id })
}
