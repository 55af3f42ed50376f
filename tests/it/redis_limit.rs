//! The shared budget against a real Redis (`KEYGATE_TEST_REDIS_URL`, default redis://127.0.0.1:6379).
//! Without one these tests fail, saying so: a limiter nobody checked is worse than none. Each test
//! keeps its keys under its own prefix, so tests can run in parallel and against a shared Redis.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate::clock::Clock;
use keygate::ratelimit::Quota;
use keygate::store::redis_limits::{RedisLimitError, RedisLimiter, RedisSettings};

use crate::relay::Relay;
use crate::support::eventually;

const SLACK: Duration = Duration::from_millis(50);

fn redis_url() -> String {
    std::env::var("KEYGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

/// The Redis under test; fails the test loudly when there is none.
pub async fn live_redis() -> String {
    let url = redis_url();
    let shown = settings(&url, "probe").redacted_url();
    let ping = async {
        let client = redis::Client::open(url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(Duration::from_secs(3), ping).await {
        Ok(Ok(_)) => url,
        Ok(Err(e)) => {
            panic!("these tests need a live Redis, and {shown} is not reachable: {e} (set KEYGATE_TEST_REDIS_URL)")
        }
        Err(_) => panic!(
            "these tests need a live Redis, and {shown} did not answer PING within 3 s (set KEYGATE_TEST_REDIS_URL)"
        ),
    }
}

/// A fresh key prefix per call: no test ever sees another's buckets.
pub fn settings(url: &str, test: &str) -> RedisSettings {
    RedisSettings {
        url: url.to_string(),
        key_prefix: format!("keygate-test:{}:{test}:", uuid::Uuid::now_v7()),
        timeout: Duration::from_secs(1),
        retry_after_failure: Duration::from_millis(400),
    }
}

fn quota(burst: u32, emission: Duration) -> Quota {
    Quota { burst, emission_nanos: u64::try_from(emission.as_nanos()).unwrap() }
}

/// Redis's TCP address, for a relay to forward to.
pub async fn redis_addr(url: &str) -> SocketAddr {
    let info = redis::Client::open(url).unwrap().get_connection_info().clone();
    let redis::ConnectionAddr::Tcp(host, port) = info.addr().clone() else {
        panic!("the relay tests need Redis over plain TCP");
    };
    let mut addrs = tokio::net::lookup_host((host.as_str(), port)).await.unwrap();
    addrs.next().expect("redis host resolves")
}

/// `url` with its host and port replaced by `addr` (credentials and database kept).
pub fn via(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let userinfo = authority.rfind('@').map_or("", |at| &authority[..=at]);
    format!("{scheme}://{userinfo}{addr}{tail}")
}

async fn raw_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// A limiter on the live Redis (keys under a prefix with `name` in it), the Redis key its subject
/// "key" is stored at, and a raw connection to look at or move what is stored there.
async fn watched_limiter(name: &str) -> (RedisLimiter, String, redis::aio::MultiplexedConnection) {
    let url = live_redis().await;
    let s = settings(&url, name);
    let key = format!("{}key", s.key_prefix);
    (RedisLimiter::new(s, Clock::system(), None).unwrap(), key, raw_connection(&url).await)
}

/// Two limiters (two replicas) sharing one key prefix on the live Redis.
async fn two_replicas(name: &str) -> [RedisLimiter; 2] {
    let url = live_redis().await;
    let first = settings(&url, name);
    let second = RedisSettings { key_prefix: first.key_prefix.clone(), ..settings(&url, name) };
    [first, second].map(|s| RedisLimiter::new(s, Clock::system(), None).unwrap())
}

/// A subject's stored TAT, in microseconds on Redis's clock.
async fn stored_tat(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("GET").arg(key).query_async::<String>(conn).await.unwrap().parse().unwrap()
}

/// As if `by` had passed on Redis's clock, which the limiter reads on purpose (one clock for the
/// fleet) and no test can move: the subject's TAT moves back instead.
async fn rewind(conn: &mut redis::aio::MultiplexedConnection, key: &str, by: Duration) {
    let micros = i64::try_from(by.as_micros()).unwrap();
    let _: i64 = redis::cmd("DECRBY").arg(key).arg(micros).query_async(conn).await.unwrap();
}

#[tokio::test]
async fn a_full_bucket_lets_exactly_the_burst_through() {
    let url = live_redis().await;
    let limiter = RedisLimiter::new(settings(&url, "exact"), Clock::system(), None).unwrap();
    let q = quota(5, Duration::from_secs(10));
    for expected in (0..5).rev() {
        let v = limiter.check("key-a", &q).await.unwrap();
        assert!(v.allowed);
        assert_eq!((v.limit, v.remaining), (5, expected));
        assert_eq!(v.retry_after, Duration::ZERO);
    }
    let v = limiter.check("key-a", &q).await.unwrap();
    assert!(!v.allowed, "request burst+1 is refused");
    assert_eq!(v.remaining, 0);
    assert!(v.retry_after > Duration::from_secs(9) && v.retry_after <= Duration::from_secs(10), "{v:?}");
    assert!(v.reset > Duration::from_secs(49) && v.reset <= Duration::from_secs(50), "{v:?}");
    assert!(limiter.check("key-b", &q).await.unwrap().allowed, "another subject has its own budget");
}

#[tokio::test]
async fn two_replicas_share_one_budget() {
    let [a, b] = two_replicas("shared").await;
    let q = quota(10, Duration::from_secs(60));
    for _ in 0..5 {
        assert!(a.check("key", &q).await.unwrap().allowed);
        assert!(b.check("key", &q).await.unwrap().allowed);
    }
    assert!(!a.check("key", &q).await.unwrap().allowed);
    assert!(!b.check("key", &q).await.unwrap().allowed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_decisions_never_exceed_the_burst() {
    let limiters = two_replicas("concurrent").await.map(Arc::new);
    let q = quota(25, Duration::from_secs(60));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..80 {
        let limiter = Arc::clone(&limiters[i % 2]);
        tasks.spawn(async move { limiter.check("key", &q).await.unwrap().allowed });
    }
    let allowed = tasks.join_all().await.into_iter().filter(|a| *a).count();
    assert_eq!(allowed, 25);
}

#[tokio::test]
async fn the_bucket_refills_one_request_per_interval() {
    let (limiter, key, mut conn) = watched_limiter("refill").await;
    // A long interval: the real time between two calls is nothing beside it.
    let q = quota(2, Duration::from_secs(60));
    assert!(limiter.check("key", &q).await.unwrap().allowed);
    assert!(limiter.check("key", &q).await.unwrap().allowed);
    let refused = limiter.check("key", &q).await.unwrap();
    assert!(!refused.allowed);
    assert!(refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_secs(60), "{refused:?}");
    rewind(&mut conn, &key, refused.retry_after - Duration::from_secs(1)).await;
    let early = limiter.check("key", &q).await.unwrap();
    assert!(!early.allowed, "not before the interval is over");
    assert!(early.retry_after <= Duration::from_secs(1), "{early:?}");
    rewind(&mut conn, &key, early.retry_after).await;
    let v = limiter.check("key", &q).await.unwrap();
    assert!(v.allowed, "one more after one interval");
    assert_eq!(v.remaining, 0);
    assert!(!limiter.check("key", &q).await.unwrap().allowed, "and only one");
}

#[tokio::test]
async fn refused_requests_do_not_push_recovery_further() {
    let (limiter, key, mut conn) = watched_limiter("hammer").await;
    let q = quota(1, Duration::from_secs(60));
    assert!(limiter.check("key", &q).await.unwrap().allowed);
    let tat = stored_tat(&mut conn, &key).await;
    let mut last = Duration::MAX;
    for round in 0..2 {
        for _ in 0..10 {
            let v = limiter.check("key", &q).await.unwrap();
            assert!(!v.allowed);
            assert!(v.retry_after <= last, "retry_after grew from {last:?} to {:?}", v.retry_after);
            last = v.retry_after;
        }
        if round == 0 {
            // 59 s go by while the client hammers.
            rewind(&mut conn, &key, Duration::from_secs(59)).await;
        }
    }
    assert_eq!(stored_tat(&mut conn, &key).await, tat - 59_000_000, "twenty refusals left the TAT alone");
    assert!(last <= Duration::from_secs(1), "60 s after the first request, not after the last: {last:?}");
    rewind(&mut conn, &key, last).await;
    assert!(limiter.check("key", &q).await.unwrap().allowed);
}

#[tokio::test]
async fn the_stored_tat_is_exact_and_expires_when_the_bucket_is_full() {
    use redis::AsyncCommands;
    let (limiter, key, mut conn) = watched_limiter("expiry").await;
    assert!(limiter.check("key", &quota(3, Duration::from_millis(100))).await.unwrap().allowed);

    let tat: String = conn.get(&key).await.unwrap();
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    let now = secs * 1_000_000 + micros;
    let tat: u64 = tat.parse().unwrap_or_else(|_| panic!("TAT stored as an integer, not {tat:?}"));
    assert!(tat > now && tat <= now + 100_000, "one interval of debt: tat {tat}, now {now}");
    let ttl: i64 = conn.pttl(&key).await.unwrap();
    assert!(ttl > 0 && ttl <= 100, "expiry {ttl} ms: when the bucket is full again");
    // Redis's own clock expires it: waited for, not slept past.
    eventually(Duration::from_secs(1), async || !conn.exists::<_, bool>(&key).await.unwrap()).await;
}

#[tokio::test]
async fn a_flushed_script_cache_is_reloaded_transparently() {
    let url = live_redis().await;
    let limiter = RedisLimiter::new(settings(&url, "noscript"), Clock::system(), None).unwrap();
    let q = quota(3, Duration::from_secs(60));
    assert_eq!(limiter.check("key", &q).await.unwrap().remaining, 2);
    let mut conn = raw_connection(&url).await;
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
    assert_eq!(limiter.check("key", &q).await.unwrap().remaining, 1);
}

#[tokio::test]
async fn concurrent_first_calls_share_one_connection() {
    let url = live_redis().await;
    let relay = Relay::start(redis_addr(&url).await).await;
    let limiter =
        Arc::new(RedisLimiter::new(settings(&via(&url, relay.addr()), "one-connect"), Clock::system(), None).unwrap());
    let q = quota(100, Duration::from_secs(60));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let limiter = Arc::clone(&limiter);
        tasks.spawn(async move { limiter.check("key", &q).await.unwrap().allowed });
    }
    assert!(tasks.join_all().await.into_iter().all(|a| a));
    assert_eq!(relay.accepted(), 1, "twenty callers, one connect");
}

/// A limiter on a manual clock whose Redis is reached through a relay, with a budget of ten a
/// minute to spend (`q`).
struct Relayed {
    relay: Relay,
    limiter: RedisLimiter,
    clock: Clock,
    timeout: Duration,
    pause: Duration,
    q: Quota,
}

/// Its keys under the prefix `name`; Redis calls time out after `timeout_ms` and a failure
/// pauses them for `pause_ms`.
async fn relayed(name: &str, timeout_ms: u64, pause_ms: u64) -> Relayed {
    let url = live_redis().await;
    let relay = Relay::start(redis_addr(&url).await).await;
    let (timeout, pause) = (Duration::from_millis(timeout_ms), Duration::from_millis(pause_ms));
    let s = RedisSettings { timeout, retry_after_failure: pause, ..settings(&via(&url, relay.addr()), name) };
    let clock = Clock::manual();
    let limiter = RedisLimiter::new(s, clock.clone(), None).unwrap();
    Relayed { relay, limiter, clock, timeout, pause, q: quota(10, Duration::from_secs(60)) }
}

#[tokio::test]
async fn a_cut_connection_fails_fast_and_recovers_after_the_pause() {
    let Relayed { relay, limiter, clock, timeout, pause, q } = relayed("cut", 200, 400).await;
    assert_eq!(limiter.check("key", &q).await.unwrap().remaining, 9);
    assert!(limiter.is_up());

    relay.cut().await;
    let started = Instant::now();
    let err = limiter.check("key", &q).await.unwrap_err();
    let took = started.elapsed();
    // `KnownDown` when the warm-up's script load, still on the same connection, reported it first.
    let first = [RedisLimitError::Connection, RedisLimitError::Timeout, RedisLimitError::KnownDown];
    assert!(first.contains(&err), "{err:?}");
    assert!(took < timeout + SLACK, "the first failure took {took:?}");
    assert!(!limiter.is_up());

    let accepted = relay.accepted();
    for _ in 0..100 {
        let started = Instant::now();
        assert_eq!(limiter.check("key", &q).await, Err(RedisLimitError::KnownDown));
        let took = started.elapsed();
        assert!(took < Duration::from_millis(5), "an open circuit answered in {took:?}");
    }
    assert_eq!(relay.accepted(), accepted, "an open circuit does no I/O");

    relay.restore();
    clock.advance(pause - Duration::from_nanos(1));
    assert_eq!(limiter.check("key", &q).await, Err(RedisLimitError::KnownDown), "not a nanosecond early");
    assert_eq!(relay.accepted(), accepted);
    clock.advance(Duration::from_nanos(1));
    let v = limiter.check("key", &q).await.expect("the probe after the pause reconnects");
    assert_eq!(v.remaining, 8, "the budget lived on in Redis");
    assert!(limiter.is_up());
    assert_eq!(limiter.check("key", &q).await.unwrap().remaining, 7);
}

#[tokio::test]
async fn a_silent_redis_times_out_within_the_timeout_and_recovers() {
    let Relayed { relay, limiter, clock, timeout, pause, q } = relayed("blackhole", 150, 300).await;
    assert!(limiter.check("key", &q).await.unwrap().allowed);

    relay.blackhole().await;
    let started = Instant::now();
    // `KnownDown` when the warm-up's script load, still on the same connection, timed out first.
    let err = limiter.check("key", &q).await.unwrap_err();
    assert!(matches!(err, RedisLimitError::Timeout | RedisLimitError::KnownDown), "{err:?}");
    let took = started.elapsed();
    assert!(took >= timeout && took < timeout + SLACK, "timed out after {took:?}");
    assert!(!limiter.is_up());
    let started = Instant::now();
    assert_eq!(limiter.check("key", &q).await, Err(RedisLimitError::KnownDown));
    assert!(started.elapsed() < Duration::from_millis(5));

    // A probe into the same silence costs one timeout and shuts the circuit again.
    clock.advance(pause - Duration::from_nanos(1));
    assert_eq!(limiter.check("key", &q).await, Err(RedisLimitError::KnownDown), "not a nanosecond early");
    clock.advance(Duration::from_nanos(1));
    assert_eq!(limiter.check("key", &q).await, Err(RedisLimitError::Timeout));
    assert_eq!(limiter.check("key", &q).await, Err(RedisLimitError::KnownDown));

    relay.restore();
    clock.advance(pause - Duration::from_nanos(1));
    assert_eq!(limiter.check("key", &q).await, Err(RedisLimitError::KnownDown), "not a nanosecond early");
    clock.advance(Duration::from_nanos(1));
    assert_eq!(limiter.check("key", &q).await.expect("back after the pause").remaining, 8);
    assert!(limiter.is_up());
}

#[tokio::test]
async fn an_unreachable_redis_at_start_is_no_startup_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let s = RedisSettings { timeout: Duration::from_millis(200), ..settings(&format!("redis://{closed}"), "down") };
    let timeout = s.timeout;
    let limiter = RedisLimiter::new(s, Clock::system(), None).expect("a limiter exists without its Redis");
    let started = Instant::now();
    let err = limiter.check("key", &quota(5, Duration::from_secs(1))).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, RedisLimitError::Connection | RedisLimitError::Timeout | RedisLimitError::KnownDown),
        "{err:?}"
    );
    assert!(took < timeout + SLACK, "took {took:?}");
    assert!(!limiter.is_up());
}

#[test]
fn a_limiter_built_outside_a_runtime_connects_on_first_use() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let url = runtime.block_on(live_redis());
    let limiter = RedisLimiter::new(settings(&url, "lazy"), Clock::system(), None).unwrap();
    let v = runtime.block_on(limiter.check("key", &quota(2, Duration::from_secs(1)))).unwrap();
    assert!(v.allowed);
    assert_eq!(v.remaining, 1);
}

#[test]
fn a_malformed_url_is_refused_without_its_password() {
    for url in
        ["redis://keygate:sup3rsecret@cache:port/", "redis://keygate:sup3rsecret@/0", "ftp://keygate:sup3rsecret@cache"]
    {
        let err = RedisLimiter::new(settings(url, "bad-url"), Clock::system(), None).map(|_| ()).unwrap_err();
        assert!(!err.contains("sup3rsecret"), "{err}");
        assert!(err.contains("redis url"), "{err}");
    }
}
