//! The admin key API's handlers: each reads the config snapshot it started with, runs the
//! key CLI's own lifecycle operation through the same store writer (file: locked atomic
//! replace; PostgreSQL: one transaction), logged as the admin token's id, on a blocking thread
//! so no proxy worker waits on a disk or a database. The running proxy sees a change through
//! its normal reload path, as it sees the CLI's.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use serde_json::json;
use time::OffsetDateTime;

use super::access::Caller;
use super::request::{self, invalid};
use super::route::Op;
use crate::config::{Config, KeyStore};
use crate::error::ApiError;
use crate::keys::file::RawTable;
use crate::keys::lifecycle::{self, LifecycleError, Revoked, Updated};
use crate::keys::public::{public_json, state_of, ts};
use crate::keys::Environment;
use crate::store::file::FileStore;
use crate::store::writer::TableStore;

/// An answer: its status and JSON body.
pub type Answer = (StatusCode, serde_json::Value);

/// The writer for the store the config names, holding keys to the scopes its routes know.
pub fn writer(config: &Config) -> TableStore {
    let scopes = config.scope_catalogue();
    match &config.key_store {
        KeyStore::File(path) => TableStore::File(FileStore::new(path, scopes)),
        KeyStore::Postgres(pg) => TableStore::Postgres(pg.clone(), scopes),
    }
}

/// Runs one operation (all but `Show`, which answers from the proxy's own view).
pub async fn answer(
    config: Arc<Config>,
    op: Op,
    caller: Caller,
    body: Bytes,
    query: Option<String>,
) -> Result<Answer, ApiError> {
    // Whole seconds, as the CLI writes them: the table is read by people too.
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 is a valid nanosecond");
    let work = move || -> Result<Answer, ApiError> {
        let store = writer(&config);
        let cx = Cx { config: &config, store: &store, actor: &caller.id, now };
        match op {
            Op::List => cx.list(request::list(query.as_deref())?),
            Op::Create => cx.create(&body),
            Op::Update(id) => cx.update(&id, &body),
            Op::Rotate(id) => cx.rotate(&id, request::rotate(&body)?),
            Op::Revoke(id) => cx.revoke(&id, request::revoke(&body)?),
            Op::Events(id) => cx.events(&id),
            // Answered from the proxy's own view before this is called (`Admin::key`).
            Op::Show(_) => Err(ApiError::NotFound("admin path")),
        }
    };
    crate::background::run(work).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "admin key API task failed");
        Err(ApiError::KeyStoreUnavailable)
    })
}

struct Cx<'a> {
    config: &'a Config,
    store: &'a TableStore,
    actor: &'a str,
    now: OffsetDateTime,
}

/// A store that could not be read or written is logged here, once, and answered 503.
fn store_failed(e: anyhow::Error) -> ApiError {
    tracing::error!(error = %format!("{e:#}"), "admin key API: key store write failed");
    ApiError::KeyStoreUnavailable
}

impl Cx<'_> {
    /// `f` on the table under the store's lock; its refusal changes nothing.
    fn modify<T>(&self, f: impl FnOnce(&mut RawTable) -> Result<T, LifecycleError>) -> Result<T, ApiError> {
        self.store.modify_as(self.actor, |t| Ok(f(t))).map_err(store_failed)?.map_err(request::refused)
    }

    fn read(&self) -> Result<RawTable, ApiError> {
        self.store.read().map_err(store_failed)
    }

    fn key_json(&self, t: &RawTable, id: &str) -> serde_json::Value {
        t.keys.iter().find(|k| k.id == id).map(|k| public_json(k, self.now)).unwrap_or_default()
    }

    fn check_tier(&self, tier: Option<&str>) -> Result<(), ApiError> {
        match tier.and_then(|name| Some((name, self.config.rate_limits.tiers.unknown(name)?))) {
            Some((name, known)) => Err(invalid("rate_limit", format!("{name:?} is not a configured tier ({known})"))),
            None => Ok(()),
        }
    }

    fn prefix(&self, env: Environment) -> Result<String, ApiError> {
        let found = crate::keys::format::prefix_for(&self.config.keys.format.prefixes, env).map(str::to_string);
        found.ok_or_else(|| invalid("environment", format!("no key prefix is configured for {env}")))
    }

    fn create(&self, body: &[u8]) -> Result<Answer, ApiError> {
        let (spec, env) = request::create(body, self.now)?;
        self.check_tier(spec.rate_limit.as_deref())?;
        let env = env.unwrap_or(self.config.environment);
        let prefix = self.prefix(env)?;
        let cat = self.config.scope_catalogue();
        let (created, key) = self.modify(|t| {
            let c = lifecycle::create(t, spec, env, &prefix, &cat, self.now)?;
            let key = self.key_json(t, &c.id);
            Ok((c, key))
        })?;
        Ok((StatusCode::CREATED, json!({"id": created.id, "secret": created.secret, "key": key})))
    }

    fn update(&self, id: &str, body: &[u8]) -> Result<Answer, ApiError> {
        let u = request::update(body, self.now)?;
        self.check_tier(u.rate_limit.as_ref().and_then(|t| t.as_deref()))?;
        let cat = self.config.scope_catalogue();
        let (outcome, key) =
            self.modify(|t| Ok((lifecycle::update(t, id, u, &cat, self.now)?, self.key_json(t, id))))?;
        Ok((StatusCode::OK, json!({"changed": outcome == Updated::Changed, "key": key})))
    }

    fn rotate(&self, id: &str, grace: std::time::Duration) -> Result<Answer, ApiError> {
        let (created, old, new) = self.modify(|t| {
            let env = t.keys.iter().find(|k| k.id == id).map(|k| k.environment);
            let env = env.ok_or_else(|| LifecycleError::UnknownId(id.to_string()))?;
            let prefix = self.prefix(env).map_err(|e| LifecycleError::Invalid(e.message()))?;
            let c = lifecycle::rotate(t, id, grace, &prefix, self.now)?;
            let (old, new) = (self.key_json(t, id), self.key_json(t, &c.id));
            Ok((c, old, new))
        })?;
        let body = json!({"id": created.id, "secret": created.secret, "rotated_from": id, "key": new, "old_key": old});
        Ok((StatusCode::OK, body))
    }

    fn revoke(&self, id: &str, reason: Option<String>) -> Result<Answer, ApiError> {
        let (outcome, key) =
            self.modify(|t| Ok((lifecycle::revoke(t, id, reason, self.now)?, self.key_json(t, id))))?;
        let (at, already) = match outcome {
            Revoked::Now => (self.now, false),
            Revoked::Already { at, .. } => (at, true),
        };
        Ok((StatusCode::OK, json!({"id": id, "revoked_at": ts(Some(at)), "already_revoked": already, "key": key})))
    }

    /// One page in id order, after the cursor; `next_cursor` is set while more may follow.
    fn list(&self, q: request::ListQuery) -> Result<Answer, ApiError> {
        let mut t = self.read()?;
        t.keys.sort_by(|a, b| a.id.cmp(&b.id));
        let page: Vec<_> = t
            .keys
            .iter()
            .filter(|k| q.cursor.as_deref().is_none_or(|c| k.id.as_str() > c))
            .filter(|k| q.environment.is_none_or(|e| k.environment == e))
            .filter(|k| q.label.as_deref().is_none_or(|l| k.label.contains(l)))
            .filter(|k| q.state.as_deref().is_none_or(|s| state_of(k, self.now) == s))
            .take(q.limit + 1)
            .collect();
        let more = page.len() > q.limit;
        let keys: Vec<_> = page.iter().take(q.limit).map(|k| public_json(k, self.now)).collect();
        let next = more.then(|| page[q.limit - 1].id.clone());
        Ok((StatusCode::OK, json!({"keys": keys, "next_cursor": next})))
    }

    fn events(&self, id: &str) -> Result<Answer, ApiError> {
        if !self.read()?.keys.iter().any(|k| k.id == id) {
            return Err(ApiError::NotFound("key id"));
        }
        let events = self.store.events(id).map_err(store_failed)?;
        Ok((StatusCode::OK, json!({"id": id, "events": events})))
    }
}
