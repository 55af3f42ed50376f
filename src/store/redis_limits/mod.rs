//! The shared (fleet-wide) budget: every replica keeps its subjects' TATs in one Redis, so a key's
//! limit holds across the fleet. One Lua script per decision reads Redis's own clock, decides and
//! stores atomically. Redis sits on the request path, so it is never waited on for long: each call
//! is bounded by a timeout, and after a failure a circuit breaker answers at once (the caller falls
//! back to its local limits) until a single probe finds Redis again.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, Script, Value};

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::ratelimit::credits::{Args, Counter, Verdict as CreditVerdict};
use crate::ratelimit::{Quota, Verdict};

mod breaker;
mod credits;
mod script;

use breaker::{Admit, Breaker};
use script::{script_quota, verdict_from_reply, GCRA_LUA};

/// Where the shared budget lives and how long the request path may wait for it.
#[derive(Clone)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`; the password never reaches logs or errors.
    pub url: String,
    /// Prepended to every subject, so several deployments can share one Redis.
    pub key_prefix: String,
    /// The most one decision may take, connecting included.
    pub timeout: Duration,
    /// After a failure, how long calls fail at once before one probes Redis again.
    pub retry_after_failure: Duration,
}

impl RedisSettings {
    /// The URL without user name, password or query string: fit for logs and error messages.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &self.redacted_url())
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("retry_after_failure", &self.retry_after_failure)
            .finish()
    }
}

/// Why the shared budget could not decide; the caller falls back to its local limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedisLimitError {
    #[error("redis did not answer in time")]
    Timeout,
    /// Unreachable: a connection broke or could not be made.
    #[error("redis is unreachable")]
    Connection,
    /// Known to be down, and no new failure: the circuit is open (no I/O was attempted), or this
    /// call rode a connection, or waited on a connect, whose failure another call reported.
    #[error("redis is unreachable (known)")]
    KnownDown,
    /// Redis answered, but not with a verdict (script error, permissions, a foreign value).
    #[error("redis gave an unexpected answer")]
    Response,
}

impl RedisLimitError {
    /// A fixed label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            RedisLimitError::Timeout => "timeout",
            RedisLimitError::Connection => "connection",
            RedisLimitError::Response => "response",
            RedisLimitError::KnownDown => "known_down",
        }
    }
}

/// Cheap to share behind an `Arc`; all methods take `&self`.
pub struct RedisLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    conn_config: AsyncConnectionConfig,
    /// The live connection, replaced only after it failed. Multiplexed: every request shares it.
    conn: ArcSwapOption<MultiplexedConnection>,
    /// Held while connecting, so concurrent calls wait for one attempt instead of each opening a
    /// socket to a Redis that may be struggling.
    connecting: tokio::sync::Mutex<()>,
    script: Script,
    credits_script: Script,
    key_prefix: String,
    timeout: Duration,
    breaker: Breaker,
    /// The breaker's pauses are measured on this clock, from `started`.
    clock: Clock,
    started: Instant,
    /// For logs.
    redacted_url: String,
    /// Where each failure is counted once, by the call that saw it first (warm-up included).
    metrics: Option<Arc<Metrics>>,
}

impl RedisLimiter {
    /// Never waits for Redis: inside a Tokio runtime it starts connecting in the background,
    /// otherwise the first call connects. Fails only for a URL that does not parse. The budget is
    /// kept on Redis's clock (one for the fleet); `clock` times the circuit breaker's pauses.
    /// `metrics` hears of each failure once and of the circuit opening and closing.
    pub fn new(settings: RedisSettings, clock: Clock, metrics: Option<Arc<Metrics>>) -> Result<RedisLimiter, String> {
        let redacted_url = settings.redacted_url();
        let client =
            Client::open(settings.url.as_str()).map_err(|e| format!("invalid redis url {redacted_url}: {e}"))?;
        let conn_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout));
        let inner = Arc::new(Inner {
            client,
            conn_config,
            conn: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            script: Script::new(GCRA_LUA),
            credits_script: Script::new(credits::CREDITS_LUA),
            key_prefix: settings.key_prefix,
            timeout: settings.timeout,
            breaker: Breaker::new(settings.retry_after_failure, settings.timeout),
            started: clock.now(),
            clock,
            redacted_url,
            metrics,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let warm = Arc::clone(&inner);
            runtime.spawn(async move { warm.warm_up().await });
        }
        Ok(RedisLimiter { inner })
    }

    /// Decide one request for `subject` against the fleet-wide budget. Takes at most the
    /// configured timeout; while the circuit is open, returns `KnownDown` without any I/O.
    pub async fn check(&self, subject: &str, quota: &Quota) -> Result<Verdict, RedisLimitError> {
        let inner = &*self.inner;
        let (conn, deadline) = inner.admitted().await?;
        let (t_us, tau_us) = script_quota(quota);
        let key = [inner.key_prefix.as_str(), subject].concat();
        let reply = inner.invoke(&inner.script, key, &[t_us, tau_us], (conn, deadline)).await?;
        verdict_from_reply(&reply, quota).ok_or_else(|| inner.settle(None, RedisLimitError::Response))
    }

    /// Charges one request to a key's credits and calendar quotas, fleet-wide: one script call
    /// that moves the key's counter and decides atomically (`credits::decide` in Lua). Bounded
    /// and broken like `check`.
    pub async fn charge_credits(
        &self,
        subject: &str,
        args: &Args,
    ) -> Result<(CreditVerdict, Counter), RedisLimitError> {
        let inner = &*self.inner;
        let (conn, deadline) = inner.admitted().await?;
        let key = [inner.key_prefix.as_str(), "credits:", subject].concat();
        let reply = inner.invoke(&inner.credits_script, key, &credits::script_args(args), (conn, deadline)).await?;
        credits::from_reply(&reply).ok_or_else(|| inner.settle(None, RedisLimitError::Response))
    }

    /// A key's live counter, without charging it (for `keys credits show`).
    pub async fn read_credits(&self, subject: &str) -> Result<Option<Counter>, RedisLimitError> {
        let inner = &*self.inner;
        let (conn, deadline) = inner.admitted().await?;
        let key = [inner.key_prefix.as_str(), "credits:", subject].concat();
        let reply = inner.invoke(&inner.credits_script, key, &credits::read_args(), (conn, deadline)).await?;
        Ok(credits::from_reply(&reply).map(|(_, c)| c).filter(|c| c.revision.is_some() || c.day > 0))
    }

    /// False from a failure until a probe succeeds. True before the first connection is made.
    pub fn is_up(&self) -> bool {
        !self.inner.breaker.is_open()
    }
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter").field("url", &self.inner.redacted_url).field("up", &self.is_up()).finish()
    }
}

type Deadline = tokio::time::Instant;

impl Inner {
    /// A connection for one call and the call's deadline, unless the circuit is open.
    async fn admitted(&self) -> Result<(Arc<MultiplexedConnection>, Deadline), RedisLimitError> {
        let admit = self.breaker.admit(self.now());
        if admit == Admit::Reject {
            return Err(RedisLimitError::KnownDown);
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut connecting = false;
        match tokio::time::timeout_at(deadline, self.connection(admit, &mut connecting)).await {
            Ok(Ok(conn)) => Ok((conn, deadline)),
            Ok(Err(settled)) => Err(settled),
            // Only the caller that was connecting books the timeout; those queued behind it did no I/O.
            Err(_) if connecting => Err(self.settle(None, RedisLimitError::Timeout)),
            Err(_) => Err(RedisLimitError::KnownDown),
        }
    }

    /// One script call on `conn` by the deadline; a failure is booked on the breaker.
    async fn invoke(
        &self,
        script: &Script,
        key: String,
        args: &[u64],
        (conn, deadline): (Arc<MultiplexedConnection>, Deadline),
    ) -> Result<Value, RedisLimitError> {
        let mut multiplexed = (*conn).clone();
        let mut invocation = script.key(key);
        for a in args {
            invocation.arg(*a);
        }
        let reply = match tokio::time::timeout_at(deadline, invocation.invoke_async::<Value>(&mut multiplexed)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err(self.settle(Some(&conn), classify(&e))),
            Err(_) => return Err(self.settle(Some(&conn), RedisLimitError::Timeout)),
        };
        self.reachable();
        Ok(reply)
    }

    fn now(&self) -> u64 {
        u64::try_from(self.clock.now().saturating_duration_since(self.started).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The current connection, or a new one. `Admit::Probe` may connect while the circuit is open.
    /// Errors are already booked on the breaker. `connecting` turns true when this call starts
    /// the connect itself, so a caller whose deadline cut it knows whether it did any I/O.
    async fn connection(
        &self,
        admit: Admit,
        connecting: &mut bool,
    ) -> Result<Arc<MultiplexedConnection>, RedisLimitError> {
        if let Some(conn) = self.conn.load_full() {
            return Ok(conn);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(conn) = self.conn.load_full() {
            return Ok(conn);
        }
        if admit != Admit::Probe && self.breaker.is_open() {
            // The attempt we waited for failed; that failure is booked already.
            return Err(RedisLimitError::KnownDown);
        }
        *connecting = true;
        match self.client.get_multiplexed_async_connection_with_config(&self.conn_config).await {
            Ok(conn) => {
                let conn = Arc::new(conn);
                self.conn.store(Some(Arc::clone(&conn)));
                Ok(conn)
            }
            // Open the circuit before the waiters behind us get the lock.
            Err(e) => Err(self.settle(None, connect_error(&e))),
        }
    }

    /// Books a failed call: a broken or silent connection is dropped (a timed-out multiplexed
    /// connection may have answers queued behind a stuck one) and the circuit opens. The first
    /// call to report a connection's failure gets its kind; the others riding it get `KnownDown`.
    fn settle(&self, used: Option<&Arc<MultiplexedConnection>>, error: RedisLimitError) -> RedisLimitError {
        match error {
            RedisLimitError::Response => self.reachable(),
            RedisLimitError::KnownDown => return error,
            RedisLimitError::Timeout | RedisLimitError::Connection => {
                if let Some(used) = used {
                    // Only the one that failed: a probe may already have put a fresh one there.
                    let was = self.conn.compare_and_swap(&Some(Arc::clone(used)), None);
                    if !was.as_ref().is_some_and(|c| Arc::ptr_eq(c, used)) {
                        return RedisLimitError::KnownDown;
                    }
                }
                if self.breaker.failure(self.now()) {
                    if let Some(m) = &self.metrics {
                        m.redis_circuit_open(true);
                    }
                    tracing::warn!(
                        redis = %self.redacted_url,
                        error = error.kind(),
                        retry_in_ms = self.breaker.retry_after.as_millis() as u64,
                        "redis rate-limit store unavailable; failing fast until a probe gets through"
                    );
                }
            }
        }
        if let Some(m) = &self.metrics {
            m.redis_error(error.kind());
        }
        error
    }

    fn reachable(&self) {
        if self.breaker.success() {
            if let Some(m) = &self.metrics {
                m.redis_circuit_open(false);
            }
            tracing::info!(redis = %self.redacted_url, "shared rate-limit store reachable again");
        }
    }

    /// Connects and loads the script before the first request needs them.
    async fn warm_up(&self) {
        let attempt = async {
            let Ok(conn) = self.connection(Admit::Closed, &mut false).await else { return };
            let mut multiplexed = (*conn).clone();
            if let Err(e) = self.script.load_async(&mut multiplexed).await {
                self.settle(Some(&conn), classify(&e));
            }
        };
        if tokio::time::timeout(self.timeout, attempt).await.is_err() {
            self.settle(self.conn.load_full().as_ref(), RedisLimitError::Timeout);
        }
    }
}

/// Anything at the transport is `Connection` (or `Timeout`); Redis's own refusals are `Response`.
fn classify(e: &RedisError) -> RedisLimitError {
    if e.is_timeout() {
        RedisLimitError::Timeout
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
        RedisLimitError::Connection
    } else {
        RedisLimitError::Response
    }
}

/// A connection that could not be set up (refused, TLS, AUTH) is no connection.
fn connect_error(e: &RedisError) -> RedisLimitError {
    if e.is_timeout() {
        RedisLimitError::Timeout
    } else {
        RedisLimitError::Connection
    }
}

/// Keeps scheme, host, port and path; drops user info and the query (which can carry `pass=`).
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a url>".to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = match authority.rfind('@') {
        Some(at) => format!("***@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    let path = tail.split(['?', '#']).next().unwrap_or("");
    format!("{scheme}://{host}{path}")
}

#[cfg(test)]
mod tests;
