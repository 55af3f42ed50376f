//! Where the request path finds keys: a snapshot of the in-memory table (the file store and
//! `sync: replica`), or the PostgreSQL lookup cache (`sync: cache`), where a miss waits for one
//! bounded query. One small enum, so the pipeline and the admin API read the same either way.

use std::sync::Arc;

use crate::keys::{KeyHash, KeyRecord, KeyTable};
use crate::store::pgstore::cache::{Cached, KeyCache, StoreDown};
use crate::store::reload::SharedTable;

#[derive(Clone)]
pub enum KeySource {
    Table(SharedTable),
    Cache(Arc<KeyCache>),
}

/// One request's view of the keys: the table snapshot it holds from start to end (a swap
/// during it affects the next request), or the cache.
pub enum KeyView<'s> {
    Table(Arc<KeyTable>),
    Cache(&'s KeyCache),
}

/// A key the view found: borrowed from the snapshot, or shared with the cache.
pub enum Found<'v> {
    Table { table: &'v KeyTable, record: &'v KeyRecord },
    Cached(Arc<Cached>),
}

impl Found<'_> {
    pub fn record(&self) -> &KeyRecord {
        match self {
            Found::Table { record, .. } => record,
            Found::Cached(c) => &c.record,
        }
    }

    /// The key has a successor: its expiry is the end of its rotation grace.
    pub fn rotated_out(&self) -> bool {
        match self {
            Found::Table { table, record } => table.is_rotated_out(&record.id),
            Found::Cached(c) => c.rotated_out,
        }
    }
}

impl KeySource {
    pub fn view(&self) -> KeyView<'_> {
        match self {
            KeySource::Table(t) => KeyView::Table(t.load_full()),
            KeySource::Cache(c) => KeyView::Cache(c),
        }
    }
}

impl KeyView<'_> {
    /// The key with this hash; `Err` only when the store could not be asked.
    pub async fn by_hash(&self, hash: &KeyHash) -> Result<Option<Found<'_>>, StoreDown> {
        match self {
            KeyView::Table(t) => Ok(t.lookup(hash).map(|record| Found::Table { table: t, record })),
            // Boxed: the cache's future is large, and inline it would grow every request's
            // future in table mode too.
            KeyView::Cache(c) => Ok(Box::pin(c.by_hash(hash)).await?.map(Found::Cached)),
        }
    }

    /// The key with this id (a token's parent).
    pub async fn by_id(&self, id: &str) -> Result<Option<Found<'_>>, StoreDown> {
        match self {
            KeyView::Table(t) => Ok(t.by_id(id).map(|record| Found::Table { table: t, record })),
            KeyView::Cache(c) => Ok(Box::pin(c.by_id(id)).await?.map(Found::Cached)),
        }
    }
}
