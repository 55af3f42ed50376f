//! The shared (fleet-wide) budget: every replica keeps its subjects' TATs in one Redis, so a key's
//! limit holds across the fleet. One Lua script per decision reads Redis's own clock, decides and
//! stores atomically. Redis sits on the request path, so it is never waited on for long: each call
//! is bounded by a timeout, and after a failure a circuit breaker answers at once (the caller falls
//! back to its local limits) until a single probe finds Redis again.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, Script, Value};

use crate::ratelimit::{Quota, Verdict};

/// GCRA over microseconds on Redis's clock: the same decision as `gcra::decide`.
/// KEYS[1] holds the subject's TAT. ARGV[1] = T (emission interval), ARGV[2] = tau (T * burst).
/// Returns {allowed (0|1), remaining, reset, retry_after}, the last two in microseconds.
/// Numbers stay below 2^53 (exact in Lua's doubles). The TAT is stored formatted with %.0f, so it
/// is a plain integer whatever number format the server's Lua bridge (or `tostring`) would use.
const GCRA_LUA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0) or 0
local base = math.max(tat, now)
local new_tat = base + t
local allow_at = new_tat - tau
if allow_at > now then
  return {0, 0, base - now, allow_at - now}
end
local debt = new_tat - now
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', string.format('%.0f', math.ceil(debt / 1000)))
local room = tau - debt
local remaining = math.floor(room / t)
if remaining * t > room then remaining = remaining - 1 end
return {1, remaining, debt, 0}
";

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
    /// Unreachable, or recently so (the circuit is open and no I/O was attempted).
    #[error("redis is unreachable")]
    Connection,
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
    key_prefix: String,
    timeout: Duration,
    breaker: Breaker,
    started: Instant,
    /// For logs.
    redacted_url: String,
}

impl RedisLimiter {
    /// Never waits for Redis: inside a Tokio runtime it starts connecting in the background,
    /// otherwise the first call connects. Fails only for a URL that does not parse.
    pub fn new(settings: RedisSettings) -> Result<RedisLimiter, String> {
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
            key_prefix: settings.key_prefix,
            timeout: settings.timeout,
            breaker: Breaker::new(settings.retry_after_failure, settings.timeout),
            started: Instant::now(),
            redacted_url,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let warm = Arc::clone(&inner);
            runtime.spawn(async move { warm.warm_up().await });
        }
        Ok(RedisLimiter { inner })
    }

    /// Decide one request for `subject` against the fleet-wide budget. Takes at most the
    /// configured timeout; while the circuit is open, returns `Connection` without any I/O.
    pub async fn check(&self, subject: &str, quota: &Quota) -> Result<Verdict, RedisLimitError> {
        let inner = &*self.inner;
        let admit = inner.breaker.admit(inner.now());
        if admit == Admit::Reject {
            return Err(RedisLimitError::Connection);
        }
        let deadline = tokio::time::Instant::now() + inner.timeout;
        let conn = match tokio::time::timeout_at(deadline, inner.connection(admit)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(settled)) => return Err(settled),
            Err(_) => return Err(inner.settle(None, RedisLimitError::Timeout)),
        };
        let (t_us, tau_us) = script_quota(quota);
        let key = [inner.key_prefix.as_str(), subject].concat();
        let mut multiplexed = (*conn).clone();
        let mut invocation = inner.script.key(key);
        invocation.arg(t_us).arg(tau_us);
        let reply = match tokio::time::timeout_at(deadline, invocation.invoke_async::<Value>(&mut multiplexed)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err(inner.settle(Some(&conn), classify(&e))),
            Err(_) => return Err(inner.settle(Some(&conn), RedisLimitError::Timeout)),
        };
        inner.reachable();
        verdict_from_reply(&reply, quota).ok_or(RedisLimitError::Response)
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

impl Inner {
    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The current connection, or a new one. `Admit::Probe` may connect while the circuit is open.
    /// Errors are already booked on the breaker.
    async fn connection(&self, admit: Admit) -> Result<Arc<MultiplexedConnection>, RedisLimitError> {
        if let Some(conn) = self.conn.load_full() {
            return Ok(conn);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(conn) = self.conn.load_full() {
            return Ok(conn);
        }
        if admit != Admit::Probe && self.breaker.is_open() {
            // The attempt we waited for failed; that failure is booked already.
            return Err(RedisLimitError::Connection);
        }
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
    /// connection may have answers queued behind a stuck one) and the circuit opens.
    fn settle(&self, used: Option<&Arc<MultiplexedConnection>>, error: RedisLimitError) -> RedisLimitError {
        match error {
            RedisLimitError::Response => self.reachable(),
            RedisLimitError::Timeout | RedisLimitError::Connection => {
                if let Some(used) = used {
                    // Only the one that failed: a probe may already have put a fresh one there.
                    self.conn.compare_and_swap(&Some(Arc::clone(used)), None);
                }
                if self.breaker.failure(self.now()) {
                    tracing::warn!(
                        redis = %self.redacted_url,
                        error = error.kind(),
                        retry_in_ms = self.breaker.retry_after.as_millis() as u64,
                        "redis rate-limit store unavailable; failing fast until a probe gets through"
                    );
                }
            }
        }
        error
    }

    fn reachable(&self) {
        if self.breaker.success() {
            tracing::info!(redis = %self.redacted_url, "shared rate-limit store reachable again");
        }
    }

    /// Connects and loads the script before the first request needs them.
    async fn warm_up(&self) {
        let attempt = async {
            let Ok(conn) = self.connection(Admit::Closed).await else { return };
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

/// Open means "until" (nanoseconds since the limiter started); 0 means closed. While open, calls
/// fail at once; the first call after the deadline pushes it on and probes, so a down Redis sees
/// one attempt per `retry_after` from each replica, not one per request.
struct Breaker {
    open_until: AtomicU64,
    retry_after: Duration,
    /// How long a probe keeps others out: it may take up to the call timeout.
    probe_hold: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    Closed,
    Probe,
    Reject,
}

impl Breaker {
    fn new(retry_after: Duration, timeout: Duration) -> Breaker {
        Breaker { open_until: AtomicU64::new(0), retry_after, probe_hold: retry_after.max(timeout) }
    }

    fn admit(&self, now: u64) -> Admit {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Admit::Closed;
        }
        if now < until {
            return Admit::Reject;
        }
        let hold = deadline(now, self.probe_hold);
        match self.open_until.compare_exchange(until, hold, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Admit::Probe,
            Err(_) => Admit::Reject,
        }
    }

    /// True when this failure opened the circuit (for a single log line per outage).
    fn failure(&self, now: u64) -> bool {
        self.open_until.swap(deadline(now, self.retry_after), Ordering::AcqRel) == 0
    }

    /// True when this success closed the circuit. No write while already closed: this runs on
    /// every call, from every thread.
    fn success(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0 && self.open_until.swap(0, Ordering::AcqRel) != 0
    }

    fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }
}

/// Never 0, which means "closed".
fn deadline(now: u64, after: Duration) -> u64 {
    now.saturating_add(u64::try_from(after.as_nanos()).unwrap_or(u64::MAX)).max(1)
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

/// Sums of these with Redis's clock (≈2^50.7 µs today) stay below 2^53 until the 22nd century.
const MAX_SCRIPT_MICROS: u64 = 1 << 51;

/// `(T, tau)` in whole microseconds, Redis's clock unit. T rounds up, so the shared budget is never
/// more generous than the configured rate; absurd windows (over 70 years) are capped.
fn script_quota(q: &Quota) -> (u64, u64) {
    let t = q.emission_nanos.div_ceil(1_000).clamp(1, MAX_SCRIPT_MICROS);
    let tau = t.saturating_mul(u64::from(q.burst)).min(MAX_SCRIPT_MICROS);
    (t, tau)
}

/// The script's reply, checked: anything else (a foreign script under the same SHA, a proxy
/// that mangles replies) is `None`, never a panic and never an "allowed".
fn verdict_from_reply(reply: &Value, quota: &Quota) -> Option<Verdict> {
    let Value::Array(items) = reply else { return None };
    let [allowed, remaining, reset, retry_after] = items.as_slice() else { return None };
    let int = |v: &Value| match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    };
    let (allowed, remaining, reset, retry_after) = (int(allowed)?, int(remaining)?, int(reset)?, int(retry_after)?);
    let allowed = match (allowed, retry_after, remaining) {
        (1, 0, _) => true,
        (0, 1.., 0) => false,
        _ => return None,
    };
    Some(Verdict {
        allowed,
        limit: quota.burst,
        remaining: u32::try_from(remaining).unwrap_or(u32::MAX).min(quota.burst),
        reset: Duration::from_micros(reset),
        retry_after: Duration::from_micros(retry_after),
    })
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
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn quota(burst: u32, emission: Duration) -> Quota {
        Quota { burst, emission_nanos: u64::try_from(emission.as_nanos()).unwrap() }
    }

    fn reply(fields: &[i64]) -> Value {
        Value::Array(fields.iter().map(|n| Value::Int(*n)).collect())
    }

    #[test]
    fn reply_becomes_the_verdict_gcra_would_give() {
        let q = quota(5, Duration::from_millis(100));
        let v = verdict_from_reply(&reply(&[1, 3, 200_000, 0]), &q).unwrap();
        assert_eq!(
            v,
            Verdict {
                allowed: true,
                limit: 5,
                remaining: 3,
                reset: Duration::from_millis(200),
                retry_after: Duration::ZERO
            }
        );
        let v = verdict_from_reply(&reply(&[0, 0, 500_000, 1_500]), &q).unwrap();
        assert!(!v.allowed);
        assert_eq!(v.retry_after, Duration::from_micros(1_500));
        assert_eq!(v.reset, Duration::from_millis(500));
    }

    #[test]
    fn remaining_never_exceeds_the_burst() {
        let q = quota(5, Duration::from_millis(100));
        assert_eq!(verdict_from_reply(&reply(&[1, 1 << 40, 1, 0]), &q).unwrap().remaining, 5);
    }

    #[test]
    fn malformed_replies_are_refused_not_trusted() {
        let q = quota(5, Duration::from_millis(100));
        let bad = [
            Value::Nil,
            Value::Okay,
            Value::Int(1),
            reply(&[1, 3, 200]),
            reply(&[1, 3, 200, 0, 9]),
            reply(&[2, 3, 200, 0]),
            reply(&[1, -3, 200, 0]),
            reply(&[1, 3, 200, 7]),
            reply(&[0, 0, 200, 0]),
            reply(&[0, 2, 200, 10]),
            Value::Array(vec![Value::Int(1), Value::BulkString(b"3".to_vec()), Value::Int(0), Value::Int(0)]),
        ];
        for value in bad {
            assert_eq!(verdict_from_reply(&value, &q), None, "{value:?}");
        }
    }

    #[test]
    fn script_quota_is_in_whole_microseconds_rounded_against_the_client() {
        assert_eq!(script_quota(&quota(10, Duration::from_millis(100))), (100_000, 1_000_000));
        assert_eq!(script_quota(&Quota { burst: 3, emission_nanos: 333_333_333 }), (333_334, 1_000_002));
        assert_eq!(script_quota(&Quota { burst: 2, emission_nanos: 1 }), (1, 2), "never a zero interval");
        let (t, tau) = script_quota(&Quota { burst: u32::MAX, emission_nanos: u64::MAX });
        assert_eq!((t, tau), (MAX_SCRIPT_MICROS, MAX_SCRIPT_MICROS), "capped below 2^53 with the clock added");
    }

    #[test]
    fn breaker_fails_fast_then_lets_one_probe_through() {
        let b = Breaker::new(Duration::from_millis(1_000), Duration::from_millis(50));
        assert_eq!(b.admit(5), Admit::Closed);
        assert!(b.failure(10 * MS), "the first failure opens the circuit");
        assert!(!b.failure(20 * MS), "later ones extend it without a second log line");
        assert_eq!(b.admit(500 * MS), Admit::Reject);
        assert_eq!(b.admit(1_020 * MS), Admit::Probe);
        assert_eq!(b.admit(1_021 * MS), Admit::Reject, "one probe at a time");
        assert_eq!(b.admit(2_019 * MS), Admit::Reject);
        assert_eq!(b.admit(2_020 * MS), Admit::Probe, "an abandoned probe does not keep it shut");
        assert!(b.success());
        assert!(!b.success());
        assert_eq!(b.admit(2_021 * MS), Admit::Closed);
    }

    #[test]
    fn a_probe_holds_for_at_least_the_call_timeout() {
        let b = Breaker::new(Duration::ZERO, Duration::from_millis(50));
        b.failure(0);
        assert!(b.is_open(), "open even with no wait configured");
        assert_eq!(b.admit(1), Admit::Probe);
        assert_eq!(b.admit(49 * MS), Admit::Reject);
    }

    #[test]
    fn transport_failures_are_connection_errors_and_refusals_are_responses() {
        use std::io::{Error, ErrorKind as Io};
        assert_eq!(classify(&Error::new(Io::ConnectionReset, "x").into()), RedisLimitError::Connection);
        assert_eq!(classify(&Error::new(Io::UnexpectedEof, "x").into()), RedisLimitError::Connection);
        assert_eq!(classify(&Error::new(Io::TimedOut, "x").into()), RedisLimitError::Timeout);
        let refused: RedisError = (redis::ErrorKind::UnexpectedReturnType, "x").into();
        assert_eq!(classify(&refused), RedisLimitError::Response);
        let auth: RedisError = (redis::ErrorKind::AuthenticationFailed, "x").into();
        assert_eq!(connect_error(&auth), RedisLimitError::Connection);
    }

    #[test]
    fn urls_lose_their_secrets() {
        assert_eq!(redact_url("redis://:hunter2@cache:6379/2"), "redis://***@cache:6379/2");
        assert_eq!(redact_url("rediss://kg:p@ss@cache"), "rediss://***@cache");
        assert_eq!(redact_url("redis+unix:///run/redis.sock?pass=hunter2"), "redis+unix:///run/redis.sock");
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
        assert_eq!(redact_url("hunter2@cache"), "<not a url>");
    }

    #[test]
    fn settings_debug_hides_the_password() {
        let s = RedisSettings {
            url: "redis://kg:hunter2@cache:6379".into(),
            key_prefix: "kg:".into(),
            timeout: Duration::from_millis(50),
            retry_after_failure: Duration::from_secs(1),
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("cache:6379"), "{shown}");
    }

    #[test]
    fn a_malformed_url_is_refused_without_echoing_the_password() {
        for url in ["redis://kg:hunter2@cache:notaport", "rediss://kg:hunter2@cache", "http://kg:hunter2@cache"] {
            let settings = RedisSettings {
                url: url.into(),
                key_prefix: String::new(),
                timeout: Duration::from_millis(50),
                retry_after_failure: Duration::from_secs(1),
            };
            let err = RedisLimiter::new(settings).map(|_| ()).unwrap_err();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.contains("invalid redis url"), "{err}");
        }
    }
}
