//! Where key changes are written, for the key CLI and the admin API alike: the table file
//! (locked, atomic replace, events appended to its log) or PostgreSQL (one locked transaction
//! per change, with its events). Both run the same closure over the whole raw table, so every
//! change behaves the same whichever store the config names and whoever asks for it.

use anyhow::Context;

use crate::config::PgStore;
use crate::keys::events::Event;
use crate::keys::file::RawTable;
use crate::keys::Catalogue;
use crate::store::file::FileStore;
use crate::store::pgstore;

/// One entry of the key event log, as both stores answer it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct LoggedEvent {
    pub key_id: String,
    pub event: String,
    pub reason: Option<String>,
    pub actor: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: time::OffsetDateTime,
}

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
    /// changed; nothing is stored when `f` fails. The change is logged as the OS user's.
    pub fn modify<T>(&self, f: impl FnOnce(&mut RawTable) -> anyhow::Result<T>) -> anyhow::Result<T> {
        self.modify_as(&pgstore::write::actor(), f)
    }

    /// `modify`, with each event logged as `actor`'s (an admin token's id, an OS user).
    pub fn modify_as<T>(&self, actor: &str, f: impl FnOnce(&mut RawTable) -> anyhow::Result<T>) -> anyhow::Result<T> {
        match self {
            TableStore::File(store) => {
                let lock = store.lock()?;
                let before = lock.read()?;
                let mut t = RawTable { keys: before.keys.clone() };
                let out = f(&mut t)?;
                let events = crate::keys::events::changes(&before, &t);
                // Nothing changed, nothing written: a refused or idempotent call leaves the
                // file (and every proxy's reload) alone.
                if !events.is_empty() {
                    lock.write(&t)?;
                    let now = time::OffsetDateTime::now_utc();
                    lock.append_events(&events.iter().map(|e| logged(e, actor, now)).collect::<Vec<_>>())?;
                }
                Ok(out)
            }
            TableStore::Postgres(pg, scopes) => block_on(async {
                let mut session = pgstore::connect(pg).await?;
                pgstore::migrate::check(&session.client, &pg.schema).await?;
                let (out, _written) = pgstore::write::modify(&mut session.client, &pg.schema, actor, scopes, f).await?;
                Ok(out)
            }),
        }
    }

    /// The event log of one key, oldest first.
    pub fn events(&self, id: &str) -> anyhow::Result<Vec<LoggedEvent>> {
        match self {
            TableStore::File(store) => Ok(store.events()?.into_iter().filter(|e| e.key_id == id).collect()),
            TableStore::Postgres(pg, _) => block_on(async {
                let session = pgstore::connect(pg).await?;
                pgstore::migrate::check(&session.client, &pg.schema).await?;
                pgstore::bounded(pg.timeout, "key events", pgstore::write::events(&session.client, &pg.schema, id))
                    .await
            }),
        }
    }
}

fn logged(e: &Event, actor: &str, at: time::OffsetDateTime) -> LoggedEvent {
    LoggedEvent { key_id: e.key_id.clone(), event: e.kind.into(), reason: e.reason.clone(), actor: actor.into(), at }
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
