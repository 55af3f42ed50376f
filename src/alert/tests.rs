use http::{StatusCode, Uri};

use super::webhook::Failure;
use super::*;

const COOL: Duration = Duration::from_secs(600);

fn event(kind: &'static str, subject: &str, detail: &str) -> AlertEvent {
    AlertEvent {
        kind,
        subject: subject.into(),
        detail: detail.into(),
        at: time::macros::datetime!(2024-05-01 12:00:00 +02:00),
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn the_first_event_for_a_pair_is_sent() {
    let mut d = Dedup::new(COOL, 10);
    assert_eq!(d.check("rate_spike", "k1", Instant::now()), Verdict::Send { suppressed_since_last: 0 });
}

#[test]
fn repeats_within_the_cooldown_are_suppressed() {
    let (mut d, t0) = (Dedup::new(COOL, 10), Instant::now());
    d.check("rate_spike", "k1", t0);
    assert_eq!(d.check("rate_spike", "k1", t0 + secs(1)), Verdict::Suppress);
    assert_eq!(d.check("rate_spike", "k1", t0 + COOL - secs(1)), Verdict::Suppress);
}

#[test]
fn another_subject_or_kind_is_its_own_pair() {
    let (mut d, t0) = (Dedup::new(COOL, 10), Instant::now());
    d.check("rate_spike", "k1", t0);
    assert_eq!(d.check("rate_spike", "k2", t0), Verdict::Send { suppressed_since_last: 0 });
    assert_eq!(d.check("new_network", "k1", t0), Verdict::Send { suppressed_since_last: 0 });
}

#[test]
fn after_the_cooldown_the_count_goes_out_and_starts_again() {
    let (mut d, t0) = (Dedup::new(COOL, 10), Instant::now());
    d.check("rate_spike", "k1", t0);
    d.check("rate_spike", "k1", t0 + secs(1));
    d.check("rate_spike", "k1", t0 + secs(2));
    let t1 = t0 + COOL;
    assert_eq!(d.check("rate_spike", "k1", t1), Verdict::Send { suppressed_since_last: 2 });
    // The cool-down restarts from the alert just sent.
    assert_eq!(d.check("rate_spike", "k1", t1 + secs(1)), Verdict::Suppress);
    assert_eq!(d.check("rate_spike", "k1", t1 + COOL), Verdict::Send { suppressed_since_last: 1 });
}

#[test]
fn expired_pairs_are_forgotten_unless_they_hold_a_count() {
    let (mut d, t0) = (Dedup::new(COOL, 10), Instant::now());
    d.check("rate_spike", "quiet", t0);
    d.check("rate_spike", "noisy", t0);
    d.check("rate_spike", "noisy", t0 + secs(1));
    d.check("rate_spike", "other", t0 + COOL * 3); // runs the sweep
    assert_eq!(d.pairs.len(), 2);
    assert_eq!(d.check("rate_spike", "noisy", t0 + COOL * 3), Verdict::Send { suppressed_since_last: 1 });
}

#[test]
fn the_map_never_grows_past_its_cap() {
    let (mut d, t0) = (Dedup::new(COOL, 3), Instant::now());
    for i in 0..100u64 {
        let s = format!("203.0.113.{i}");
        assert_eq!(
            d.check("invalid_key_burst", &s, t0 + Duration::from_millis(i)),
            Verdict::Send { suppressed_since_last: 0 }
        );
        assert!(d.pairs.len() <= 3);
    }
    // The newest pairs are the ones kept.
    assert_eq!(d.check("invalid_key_burst", "203.0.113.99", t0 + secs(1)), Verdict::Suppress);
}

#[test]
fn a_zero_cooldown_sends_everything() {
    let (mut d, t0) = (Dedup::new(Duration::ZERO, 10), Instant::now());
    for _ in 0..3 {
        assert_eq!(d.check("rate_spike", "k1", t0), Verdict::Send { suppressed_since_last: 0 });
    }
}

#[test]
fn the_text_is_one_line_naming_instance_kind_subject_and_detail() {
    let e = event("invalid_key_burst", "203.0.113.7", "25 invalid keys in 60 s");
    assert_eq!(
        text(&e, "pod-7", 0),
        ":rotating_light: keygate (pod-7) anomaly invalid_key_burst — subject 203.0.113.7: 25 invalid keys in 60 s"
    );
}

#[test]
fn the_text_says_how_many_repeats_were_suppressed() {
    let e = event("rate_spike", "k1", "x");
    assert!(text(&e, "i", 1).ends_with("x (1 repeat suppressed since the last alert)"));
    assert!(text(&e, "i", 7).ends_with("x (7 repeats suppressed since the last alert)"));
}

#[test]
fn slack_markup_and_line_breaks_in_fields_are_neutralised() {
    let e = event("rate_spike", "<!channel>", "a & b\nc");
    let t = text(&e, "i", 0);
    assert!(t.ends_with("subject &lt;!channel&gt;: a &amp; b c"), "{t}");
    assert!(!t.contains('\n'));
}

#[test]
fn the_payload_carries_every_field_raw_and_a_utc_timestamp() {
    let e = event("rate_spike", "<k1>", "d");
    let v: serde_json::Value = serde_json::from_slice(&payload(&e, "pod-7", 3)).unwrap();
    assert_eq!(v["kind"], "rate_spike");
    assert_eq!(v["subject"], "<k1>");
    assert_eq!(v["detail"], "d");
    assert_eq!(v["instance"], "pod-7");
    assert_eq!(v["timestamp"], "2024-05-01T10:00:00Z");
    assert_eq!(v["suppressed_since_last"], 3);
    assert_eq!(v["text"], text(&e, "pod-7", 3));
    assert_eq!(v.as_object().unwrap().len(), 7);
}

#[test]
fn logs_and_debug_see_only_scheme_and_host() {
    let url: Uri = "https://user:pw@hooks.slack.com/services/T0/B0/s3cret?token=s3cret".parse().unwrap();
    assert_eq!(redacted(&url), "https://hooks.slack.com");
    let dbg = format!("{:?}", AlertSettings::new(url, "pod"));
    assert!(!dbg.contains("s3cret") && !dbg.contains("pw"), "{dbg}");
    let with_port: Uri = "http://127.0.0.1:9000/x".parse().unwrap();
    assert_eq!(redacted(&with_port), "http://127.0.0.1:9000");
}

#[test]
fn only_connect_errors_and_5xx_are_retried() {
    assert!(Failure::Connect("refused".into()).retryable());
    assert!(Failure::Status(StatusCode::BAD_GATEWAY).retryable());
    assert!(!Failure::Status(StatusCode::NOT_FOUND).retryable());
    assert!(!Failure::Status(StatusCode::FOUND).retryable());
    assert!(!Failure::Timeout(secs(5)).retryable());
    assert!(!Failure::Protocol("reset".into()).retryable());
}
