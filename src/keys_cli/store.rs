//! The store the key commands work on: the table file (locked, atomic replace) or PostgreSQL
//! (one locked transaction per change, with audit events). Both run the same closure over the
//! whole raw table, so every command behaves the same whichever store the config names.

use anyhow::Context;

use crate::config::PgStore;
use crate::keys::file::RawTable;
use crate::keys::Catalogue;
use crate::store::file::FileStore;
use crate::store::pgstore;

pub enum TableStore {
    File(FileStore),
    /// With the scopes a key may hold: a change is checked whole, as a proxy would load it.
    Postgres(PgStore, Catalogue),
}

impl TableStore {
    pub fn describe(&self) -> String {
        match self {
            TableStore::File(f) => f.path().display().to_string(),
            TableStore::Postgres(pg, _) => format!("PostgreSQL schema {}", pg.schema),
        }
    }

    /// How soon a running proxy sees a change, for the command's message.
    pub fn propagation(&self) -> String {
        match self {
            TableStore::File(_) => "once it reloads the file (within reload_interval + 50 ms of the file changing; \
                                    a mounted Secret changes only when the kubelet syncs it, often about a minute)"
                .into(),
            TableStore::Postgres(pg, _) => format!(
                "when the change notification reaches it (about 30 ms at replicas connected to the database; a \
                 replica cut off from it refuses every key once its view is older than max_staleness, {})",
                humantime::format_duration(pg.max_staleness)
            ),
        }
    }

    pub fn read(&self) -> anyhow::Result<RawTable> {
        match self {
            TableStore::File(f) => Ok(f.read()?),
            TableStore::Postgres(pg, _) => block_on(async {
                let session = pgstore::connect(pg).await?;
                pgstore::migrate::check(&session.client, &pg.schema).await?;
                pgstore::write::read_all(&session.client, &pg.schema).await
            }),
        }
    }

    /// A key's usage as the store knows it: summed over every proxy that wrote its usage back
    /// (PostgreSQL); `None` for the file store, where only a running proxy knows.
    pub fn usage(&self, id: &str) -> Option<anyhow::Result<crate::usage::UsageView>> {
        match self {
            TableStore::File(_) => None,
            TableStore::Postgres(pg, _) => Some(block_on(async {
                let session = pgstore::connect(pg).await?;
                pgstore::migrate::check(&session.client, &pg.schema).await?;
                pgstore::bounded(pg.timeout, "usage", pgstore::usage::read(&session.client, &pg.schema, id)).await
            })),
        }
    }

    /// Runs `f` on the current table with every other writer held off, and stores what it
    /// changed; nothing is stored when `f` fails.
    pub fn modify<T>(&self, f: impl FnOnce(&mut RawTable) -> anyhow::Result<T>) -> anyhow::Result<T> {
        match self {
            TableStore::File(store) => {
                let lock = store.lock()?;
                let mut t = lock.read()?;
                let out = f(&mut t)?;
                lock.write(&t)?;
                Ok(out)
            }
            TableStore::Postgres(pg, scopes) => block_on(async {
                let mut session = pgstore::connect(pg).await?;
                pgstore::migrate::check(&session.client, &pg.schema).await?;
                let (out, _written) =
                    pgstore::write::modify(&mut session.client, &pg.schema, &pgstore::write::actor(), scopes, f)
                        .await?;
                Ok(out)
            }),
        }
    }
}

/// The CLI is synchronous; a PostgreSQL command runs on a runtime of its own.
fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the database client")?
        .block_on(f)
        .context("key store (PostgreSQL)")
}
