use super::script::MAX_SCRIPT_MICROS;
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
        let err = RedisLimiter::new(settings, crate::clock::Clock::system(), None).map(|_| ()).unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("invalid redis url"), "{err}");
    }
}
