//! `key_store:`: where the key table lives. The file (the default, `keys.file`) or PostgreSQL,
//! which a fleet shares: every replica holds the whole table in memory and follows changes
//! (`sync: replica`), or keeps a bounded cache of the keys it has seen (`sync: cache`).

use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawKeyCache, RawKeyStore, RawUsageWriteBack};
use super::Check;

#[derive(Debug, Clone)]
pub enum KeyStore {
    File(PathBuf),
    Postgres(PgStore),
}

#[derive(Debug, Clone)]
pub struct PgStore {
    /// `None`: the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE).
    pub url: Option<DbUrl>,
    /// Every table keygate owns lives in this schema; also the NOTIFY channel's suffix.
    pub schema: String,
    /// CA bundle for TLS to the database (default: the public web roots).
    pub ca_file: Option<PathBuf>,
    /// Run the migrations at start (otherwise `keygate migrate` does, and start waits for it).
    pub auto_migrate: bool,
    /// Catch-up poll, in case a notification was lost; also how the proxy notices a dead link.
    pub poll_interval: Duration,
    /// Bound on connecting and on every query.
    pub timeout: Duration,
    /// How old the in-memory view may get (no successful sync) before `on_stale` applies.
    pub max_staleness: Duration,
    pub on_stale: OnStale,
    pub sync: SyncMode,
    /// How often this instance adds its usage counts to the store; `None`: kept local only.
    pub usage_flush: Option<Duration>,
}

/// How a proxy follows the PostgreSQL table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncMode {
    /// The whole table in memory; the request path never waits on the database.
    Replica,
    /// A bounded cache of lookups; a miss waits for one query.
    Cache(CacheSettings),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// Keys found, held at most this many (and as many unknown hashes, apart).
    pub max_entries: u64,
    /// How long a found key is kept without a change notification about it.
    pub ttl: Duration,
    /// How long an unknown hash is remembered as unknown.
    pub negative_ttl: Duration,
    /// Connections the cache's lookups use (round robin).
    pub pool_size: usize,
}

impl CacheSettings {
    pub const DEFAULT: CacheSettings = CacheSettings {
        max_entries: 100_000,
        ttl: Duration::from_secs(30),
        negative_ttl: Duration::from_secs(5),
        pool_size: 4,
    };
}

/// What to do once the view is older than `max_staleness`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStale {
    /// 503 KEY_STORE_UNAVAILABLE and not ready: a revocation may be missing from the view.
    Refuse,
    /// Keep answering from the last view (availability over revocation freshness).
    Serve,
}

/// A connection URL; it may carry a password, so its Debug never shows it.
#[derive(Clone)]
pub struct DbUrl(String);

impl DbUrl {
    pub fn new(url: String) -> DbUrl {
        DbUrl(url)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DbUrl(<redacted>)")
    }
}

/// A schema name keygate can put into SQL unquoted: lower-case identifier characters only.
pub fn valid_schema(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_lowercase() || c == b'_')
        && s.len() <= 48
        && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

pub(super) fn key_store(c: &mut Check, raw: Option<&RawKeyStore>, file: Option<&String>) -> KeyStore {
    let kind = raw.and_then(|r| r.kind.as_deref()).unwrap_or("file");
    match (kind, raw) {
        ("postgres", Some(r)) => {
            if file.is_some() {
                c.0.push("keys.file: not used with key_store.kind postgres; remove it (use `keygate keys import FILE` to move a table)".into());
            }
            KeyStore::Postgres(postgres(c, r))
        }
        ("file", _) => {
            if let Some(r) = raw {
                let set = [
                    ("url", r.url.is_some()),
                    ("url_file", r.url_file.is_some()),
                    ("schema", r.schema.is_some()),
                    ("ca_file", r.ca_file.is_some()),
                    ("auto_migrate", r.auto_migrate.is_some()),
                    ("sync", r.sync.is_some()),
                    ("poll_interval", r.poll_interval.is_some()),
                    ("timeout", r.timeout.is_some()),
                    ("max_staleness", r.max_staleness.is_some()),
                    ("on_stale", r.on_stale.is_some()),
                    ("cache", r.cache.is_some()),
                    ("usage", r.usage.is_some()),
                ];
                for (name, _) in set.iter().filter(|(_, on)| *on) {
                    c.0.push(format!("key_store.{name}: only used with kind postgres"));
                }
            }
            match file {
                Some(f) => KeyStore::File(PathBuf::from(f)),
                None => {
                    c.0.push("keys.file: required (the key table file) unless key_store.kind is postgres".into());
                    KeyStore::File(PathBuf::new())
                }
            }
        }
        (other, _) => {
            c.0.push(format!("key_store.kind: {other:?} is not file or postgres"));
            KeyStore::File(PathBuf::new())
        }
    }
}

fn postgres(c: &mut Check, r: &RawKeyStore) -> PgStore {
    // Neither given: the standard PG* environment variables.
    let url = super::secrets::inline_or_file(c, "key_store.url", r.url.as_deref(), r.url_file.as_deref());
    if let Some(url) = &url {
        // Never echo the URL: it may hold a password.
        if url.parse::<tokio_postgres::Config>().is_err() {
            c.0.push("key_store.url: not a PostgreSQL connection URL (postgres://user@host:5432/db)".into());
        }
    }
    let schema = r.schema.clone().unwrap_or_else(|| "keygate".into());
    if !valid_schema(&schema) {
        c.0.push(format!(
            "key_store.schema: {schema:?} must be 1-48 characters of [a-z0-9_], not starting with a digit"
        ));
    }
    let sync = match r.sync.as_deref() {
        None | Some("replica") => {
            if r.cache.is_some() {
                c.0.push("key_store.cache: only used with sync: cache".into());
            }
            SyncMode::Replica
        }
        Some("cache") => SyncMode::Cache(cache(c, r.cache.as_ref())),
        Some(other) => {
            c.0.push(format!("key_store.sync: {other:?} is not replica or cache"));
            SyncMode::Replica
        }
    };
    let usage_flush = usage(c, r.usage.as_ref());
    let on_stale = match r.on_stale.as_deref() {
        None | Some("refuse") => OnStale::Refuse,
        Some("serve") => OnStale::Serve,
        Some(other) => {
            c.0.push(format!("key_store.on_stale: {other:?} is not refuse or serve"));
            OnStale::Refuse
        }
    };
    let poll_interval = c.duration("key_store.poll_interval", &r.poll_interval, Duration::from_secs(2));
    let timeout = c.duration("key_store.timeout", &r.timeout, Duration::from_secs(5));
    let max_staleness = c.duration("key_store.max_staleness", &r.max_staleness, Duration::from_secs(300));
    if poll_interval.is_zero() || timeout.is_zero() {
        c.0.push("key_store: poll_interval and timeout must be more than zero".into());
    }
    if max_staleness <= poll_interval + timeout {
        c.0.push(format!(
            "key_store.max_staleness: must exceed poll_interval + timeout ({}), or a healthy store would look stale",
            humantime::format_duration(poll_interval + timeout)
        ));
    }
    PgStore {
        url: url.map(DbUrl),
        schema,
        ca_file: r.ca_file.as_ref().map(PathBuf::from),
        auto_migrate: r.auto_migrate.unwrap_or(false),
        poll_interval,
        timeout,
        max_staleness,
        on_stale,
        sync,
        usage_flush,
    }
}

const MAX_ENTRIES: u64 = 100_000_000;
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
const MAX_POOL: usize = 64;

fn cache(c: &mut Check, r: Option<&RawKeyCache>) -> CacheSettings {
    let d = CacheSettings::DEFAULT;
    let Some(r) = r else { return d };
    let max_entries = r.max_entries.unwrap_or(d.max_entries);
    if !(1..=MAX_ENTRIES).contains(&max_entries) {
        c.0.push(format!("key_store.cache.max_entries: {max_entries} must be 1 to {MAX_ENTRIES}"));
    }
    let ttl = c.duration("key_store.cache.ttl", &r.ttl, d.ttl);
    if ttl.is_zero() || ttl > MAX_TTL {
        c.0.push("key_store.cache.ttl: must be more than zero and at most 24h".into());
    }
    let negative_ttl = c.duration("key_store.cache.negative_ttl", &r.negative_ttl, d.negative_ttl.min(ttl));
    if negative_ttl.is_zero() || negative_ttl > ttl {
        c.0.push(format!(
            "key_store.cache.negative_ttl: must be more than zero and at most ttl ({}): a key created \
             while its hash is remembered as unknown waits that long if its notification is lost",
            humantime::format_duration(ttl)
        ));
    }
    let pool_size = r.pool_size.unwrap_or(d.pool_size);
    if !(1..=MAX_POOL).contains(&pool_size) {
        c.0.push(format!("key_store.cache.pool_size: {pool_size} must be 1 to {MAX_POOL}"));
    }
    CacheSettings {
        max_entries: max_entries.clamp(1, MAX_ENTRIES),
        ttl,
        negative_ttl,
        pool_size: pool_size.clamp(1, MAX_POOL),
    }
}

const DEFAULT_FLUSH: Duration = Duration::from_secs(10);

fn usage(c: &mut Check, r: Option<&RawUsageWriteBack>) -> Option<Duration> {
    let write_back = r.and_then(|r| r.write_back).unwrap_or(true);
    let interval =
        c.duration("key_store.usage.flush_interval", &r.and_then(|r| r.flush_interval.clone()), DEFAULT_FLUSH);
    if !(Duration::from_millis(100)..=Duration::from_secs(600)).contains(&interval) {
        c.0.push("key_store.usage.flush_interval: must be between 100ms and 10m".into());
    }
    if !write_back && r.is_some_and(|r| r.flush_interval.is_some()) {
        c.0.push("key_store.usage.flush_interval: not used with write_back: false".into());
    }
    write_back.then_some(interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for ok in ["keygate", "kg_test_1", "_x"] {
            assert!(valid_schema(ok), "{ok}");
        }
        for bad in ["", "1x", "Keygate", "a-b", "a;drop", "x y", &"a".repeat(49)] {
            assert!(!valid_schema(bad), "{bad}");
        }
    }

    #[test]
    fn a_url_never_shows_in_debug() {
        let u = DbUrl::new("postgres://kg:hunter2@db/keys".into());
        assert!(!format!("{u:?}").contains("hunter2"));
    }
}
