//! `sync: cache`: for tables too large to hold whole on every pod, a bounded cache of the keys a
//! proxy has seen. A hit is served from memory; a miss waits for one bounded query (concurrent
//! misses for the same key share it), and an unknown hash is remembered briefly so a flood of
//! one guessed key costs one query. The follower (`sync.rs`) hears every change version, fetches
//! the hashes and ids of the rows that changed and drops those entries; the TTL is the backstop.
//!
//! A load races the follower: it may read a row just before a change commits and insert it just
//! after the follower dropped that hash. So the follower bumps `epoch` before each batch of
//! invalidations, every load remembers the epoch it started in, and a value inserted by a load
//! that saw the epoch move is dropped again at once (insert first, check second: whichever
//! order the two run in, the stale value does not stay).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use tokio_postgres::{Client, IsolationLevel};

use super::pool::Pool;
use super::{bounded, rows};
use crate::config::CacheSettings;
use crate::keys::file::{self, RawTable};
use crate::keys::{Access, Catalogue, KeyHash, KeyRecord, Profile};
use crate::metrics::{CacheLookup, Metrics};

/// A key as the cache holds it: the record, and what the table would say of its rotation.
#[derive(Debug)]
pub struct Cached {
    pub record: KeyRecord,
    /// The key has a successor (its expiry is the end of its grace period).
    pub rotated_out: bool,
    /// The invalidation epoch its load started in.
    loaded_at: u64,
}

/// The database could not answer a lookup; the reason is for the log (it names no key).
#[derive(Debug, Clone)]
pub struct StoreDown(pub String);

/// Why a load produced no value to cache.
#[derive(Debug)]
enum Miss {
    Unknown { loaded_at: u64 },
    Down(String),
}

/// More changed rows than this in one catch-up and the whole cache is dropped instead: a long
/// outage or a bulk import must not turn into an unbounded fetch.
pub const INVALIDATE_LIMIT: i64 = 10_000;

/// Distinct access profiles shared at most (real tables have a handful).
const MAX_PROFILES: usize = 10_000;

pub struct KeyCache {
    by_hash: Cache<KeyHash, Arc<Cached>>,
    /// For a token's parent, named by id in the signed claims (so never a guess worth
    /// remembering as unknown).
    by_id: Cache<Arc<str>, Arc<Cached>>,
    /// Hashes the store does not have. A separate bound, so a flood of unknown keys cannot
    /// evict the known ones.
    unknown: Cache<KeyHash, ()>,
    /// Access profiles shared by the cached keys, as a table shares them (a profile is several
    /// times the size of the rest of a record). Bounded; past the bound a key keeps its own.
    profiles: dashmap::DashMap<Access, Arc<Profile>>,
    pool: Arc<Pool>,
    epoch: AtomicU64,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl KeyCache {
    pub fn new(s: &CacheSettings, pool: Arc<Pool>, timeout: Duration, metrics: Arc<Metrics>) -> KeyCache {
        KeyCache {
            by_hash: Cache::builder().max_capacity(s.max_entries).time_to_live(s.ttl).build(),
            by_id: Cache::builder().max_capacity(s.max_entries).time_to_live(s.ttl).build(),
            unknown: Cache::builder().max_capacity(s.max_entries).time_to_live(s.negative_ttl).build(),
            profiles: dashmap::DashMap::new(),
            pool,
            epoch: AtomicU64::new(0),
            timeout,
            metrics,
        }
    }

    /// The key with this hash: `Ok(None)` when the store has none.
    pub async fn by_hash(&self, hash: &KeyHash) -> Result<Option<Arc<Cached>>, StoreDown> {
        if self.unknown.contains_key(hash) {
            self.metrics.key_cache_lookup(CacheLookup::NegativeHit);
            return Ok(None);
        }
        if let Some(c) = self.by_hash.get(hash).await {
            self.metrics.key_cache_lookup(CacheLookup::Hit);
            return Ok(Some(c));
        }
        self.metrics.key_cache_lookup(CacheLookup::Miss);
        let loaded_at = self.epoch.load(Ordering::Acquire);
        match self.by_hash.try_get_with(*hash, self.load(Lookup::Hash(hash), loaded_at)).await {
            Ok(c) => {
                if self.moved_since(c.loaded_at) {
                    self.by_hash.invalidate(hash).await;
                }
                Ok(Some(c))
            }
            Err(e) => match &*e {
                Miss::Unknown { loaded_at } => {
                    self.unknown.insert(*hash, ()).await;
                    if self.moved_since(*loaded_at) {
                        self.unknown.invalidate(hash).await;
                    }
                    Ok(None)
                }
                Miss::Down(why) => Err(StoreDown(why.clone())),
            },
        }
    }

    /// The key with this id (a token's parent): `Ok(None)` when the store has none.
    pub async fn by_id(&self, id: &str) -> Result<Option<Arc<Cached>>, StoreDown> {
        if let Some(c) = self.by_id.get(id).await {
            self.metrics.key_cache_lookup(CacheLookup::Hit);
            return Ok(Some(c));
        }
        self.metrics.key_cache_lookup(CacheLookup::Miss);
        let loaded_at = self.epoch.load(Ordering::Acquire);
        let key: Arc<str> = Arc::from(id);
        match self.by_id.try_get_with(Arc::clone(&key), self.load(Lookup::Id(id), loaded_at)).await {
            Ok(c) => {
                if self.moved_since(c.loaded_at) {
                    self.by_id.invalidate(&key).await;
                }
                Ok(Some(c))
            }
            Err(e) => match &*e {
                Miss::Unknown { .. } => Ok(None),
                Miss::Down(why) => Err(StoreDown(why.clone())),
            },
        }
    }

    fn shared(&self, p: Arc<Profile>) -> Arc<Profile> {
        if let Some(known) = self.profiles.get(&p.access) {
            return Arc::clone(&known);
        }
        if self.profiles.len() < MAX_PROFILES {
            let access = Access {
                environment: p.access.environment,
                scopes: p.access.scopes.clone(),
                allowed_ips: p.access.allowed_ips.clone(),
                rate_limit_tier: p.access.rate_limit_tier.clone(),
                limits: p.access.limits.clone(),
            };
            return Arc::clone(&self.profiles.entry(access).or_insert(p));
        }
        p
    }

    fn moved_since(&self, loaded_at: u64) -> bool {
        self.epoch.load(Ordering::Acquire) != loaded_at
    }

    /// One query on the pool, bounded by the store timeout.
    async fn load(&self, what: Lookup<'_>, loaded_at: u64) -> Result<Arc<Cached>, Miss> {
        let label = what.label();
        let Some(conn) = self.pool.get() else {
            self.metrics.key_store_query(label, "error");
            return Err(Miss::Down("no connection to the key store".into()));
        };
        let hex;
        let param: &(dyn tokio_postgres::types::ToSql + Sync) = match &what {
            Lookup::Hash(h) => {
                hex = h.to_hex();
                &hex
            }
            Lookup::Id(id) => id,
        };
        let stmt = match what {
            Lookup::Hash(_) => &conn.by_hash,
            Lookup::Id(_) => &conn.by_id,
        };
        let row = match bounded(self.timeout, "key lookup", conn.client().query_opt(stmt, &[param])).await {
            Ok(row) => row,
            Err(e) => {
                self.metrics.key_store_query(label, "error");
                self.pool.broken(&conn);
                return Err(Miss::Down(format!("{e:#}")));
            }
        };
        let Some(row) = row else {
            self.metrics.key_store_query(label, "not_found");
            return Err(Miss::Unknown { loaded_at });
        };
        match cached(row.get(1), &what, loaded_at) {
            Ok(mut c) => {
                self.metrics.key_store_query(label, "found");
                c.record.profile = self.shared(c.record.profile);
                Ok(Arc::new(c))
            }
            Err(why) => {
                self.metrics.key_store_query(label, "error");
                tracing::error!(problem = %why, "key store row cannot be used; refusing the key as unavailable");
                Err(Miss::Down(why))
            }
        }
    }

    /// The follower learnt that these rows (hash, id) changed: forget them.
    pub async fn invalidate(&self, changed: &[(String, String)]) {
        if changed.is_empty() {
            return;
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for (hash, id) in changed {
            if let Ok(h) = KeyHash::from_hex(hash) {
                self.by_hash.invalidate(&h).await;
                self.unknown.invalidate(&h).await;
            }
            self.by_id.invalidate(id.as_str()).await;
        }
        self.metrics.key_cache_invalidated(changed.len());
    }

    /// Too much changed to list (or the store's versions went back in time): forget everything.
    pub fn invalidate_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.by_hash.invalidate_all();
        self.by_id.invalidate_all();
        self.unknown.invalidate_all();
    }

    /// Brings the entry gauges up to date (moka counts lazily: evictions are applied here).
    pub async fn report(&self) {
        self.by_hash.run_pending_tasks().await;
        self.by_id.run_pending_tasks().await;
        self.unknown.run_pending_tasks().await;
        self.metrics.key_cache_entries(
            self.by_hash.entry_count(),
            self.by_id.entry_count(),
            self.unknown.entry_count(),
        );
        self.metrics.key_store_pool(self.pool.live());
    }
}

enum Lookup<'a> {
    Hash(&'a KeyHash),
    Id(&'a str),
}

impl Lookup<'_> {
    fn label(&self) -> &'static str {
        match self {
            Lookup::Hash(_) => "by_hash",
            Lookup::Id(_) => "by_id",
        }
    }
}

/// A row as the proxy holds it, validated exactly as a table entry is. Pure.
fn cached(json: &str, asked: &Lookup<'_>, loaded_at: u64) -> Result<Cached, String> {
    let raw = rows::parse(json)?;
    let rotated_out = raw.rotated_to.is_some();
    // Scopes are not held to the routes here: with no last good table to fall back on, a key
    // would be refused outright. The key CLI checks them before a row is written.
    let table = file::build(RawTable { keys: vec![raw] }, &Catalogue::unchecked()).map_err(|p| p.join("; "))?;
    let record = table.records().next().cloned().ok_or("the row built no key")?;
    let matches = match asked {
        Lookup::Hash(h) => record.hash.ct_eq(h),
        Lookup::Id(id) => &*record.id == *id,
    };
    if !matches {
        return Err("the row is not the key asked for".into());
    }
    Ok(Cached { record, rotated_out, loaded_at })
}

/// What changed in the store above `since`, in one consistent snapshot.
#[derive(Debug)]
pub struct Changes {
    /// The newest change version.
    pub newest: i64,
    /// (hash, id) of each changed row; `None` when there were more than `INVALIDATE_LIMIT`.
    pub rows: Option<Vec<(String, String)>>,
}

/// The follower's catch-up in cache mode: the hashes and ids of the rows changed since `since`.
pub async fn changes_since(
    client: &mut Client,
    schema: &str,
    timeout: Duration,
    since: i64,
) -> anyhow::Result<Changes> {
    let tx = bounded(
        timeout,
        "begin",
        client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start(),
    )
    .await?;
    let newest: i64 =
        bounded(timeout, "changes", tx.query_one(&format!("SELECT coalesce(max(version), 0) FROM {schema}.keys"), &[]))
            .await?
            .get(0);
    let rows = if newest <= since {
        Some(Vec::new())
    } else {
        let found = bounded(
            timeout,
            "changes",
            tx.query(
                &format!("SELECT hash, id FROM {schema}.keys WHERE version > $1 AND version <= $2 LIMIT $3"),
                &[&since, &newest, &(INVALIDATE_LIMIT + 1)],
            ),
        )
        .await?;
        (found.len() as i64 <= INVALIDATE_LIMIT).then(|| found.iter().map(|r| (r.get(0), r.get(1))).collect())
    };
    bounded(timeout, "commit", tx.commit()).await?;
    Ok(Changes { newest, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, hash: &KeyHash, extra: &str) -> String {
        format!(r#"{{"id":"{id}","hash":"{}","environment":"live"{extra}}}"#, hash.to_hex())
    }

    #[test]
    fn a_row_becomes_the_record_a_table_would_hold() {
        let h = KeyHash::of("dpl_live_example");
        let c = cached(&row("k1", &h, r#","clinics":["c1","c2"],"rotated_to":"k2""#), &Lookup::Hash(&h), 7).unwrap();
        assert_eq!((&*c.record.id, c.record.clinics.as_deref()), ("k1", Some("c1,c2")));
        assert!(c.rotated_out, "a successor means rotated out");
        assert_eq!(c.loaded_at, 7);
        let c = cached(&row("k1", &h, ""), &Lookup::Id("k1"), 0).unwrap();
        assert!(!c.rotated_out);
    }

    #[test]
    fn cached_keys_with_the_same_access_share_one_profile() {
        let settings = CacheSettings::DEFAULT;
        let cache = KeyCache::new(&settings, Arc::new(Pool::new(1)), Duration::from_secs(1), Arc::new(Metrics::new()));
        let (a, b) = (KeyHash::of("a"), KeyHash::of("b"));
        let ca = cached(&row("ka", &a, r#","clinics":["c1"]"#), &Lookup::Hash(&a), 0).unwrap();
        let cb = cached(&row("kb", &b, r#","clinics":["c2"]"#), &Lookup::Hash(&b), 0).unwrap();
        assert!(!Arc::ptr_eq(&ca.record.profile, &cb.record.profile), "built apart");
        let (pa, pb) = (cache.shared(ca.record.profile), cache.shared(cb.record.profile));
        assert!(Arc::ptr_eq(&pa, &pb), "one profile for one access");
        let other = cached(&row("kc", &b, r#","type":"full""#), &Lookup::Hash(&b), 0).unwrap();
        assert!(!Arc::ptr_eq(&cache.shared(other.record.profile), &pa), "another access, another profile");
    }

    #[test]
    fn a_row_that_is_not_the_key_asked_for_or_not_valid_is_refused() {
        let (h, other) = (KeyHash::of("a"), KeyHash::of("b"));
        assert!(cached(&row("k1", &h, ""), &Lookup::Hash(&other), 0).is_err());
        assert!(cached(&row("k1", &h, ""), &Lookup::Id("k2"), 0).is_err());
        let bad = cached(&row("k1", &h, r#","scopes":[]"#), &Lookup::Hash(&h), 0).unwrap_err();
        assert!(bad.contains("scopes is empty"), "{bad}");
    }
}
