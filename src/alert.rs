//! Anomaly alerts to a webhook (Slack-compatible JSON), kept off the request path: `notify` only
//! queues; one background task de-duplicates by (kind, subject) with a cool-down and POSTs one
//! alert at a time. A slow or dead webhook costs dropped alerts, counted, never request latency.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::alert::redacted;
pub use crate::config::alert::{AlertSettings, DEFAULT_COOLDOWN, DEFAULT_QUEUE, DEFAULT_TIMEOUT};
use crate::metrics::Metrics;

/// (kind, subject) pairs remembered at most: a flood of distinct subjects cannot grow memory.
const MAX_PAIRS: usize = 10_000;
/// Extra attempts after a connect error or a 5xx. A 4xx will not change on retry, and after a
/// timeout the webhook may already have posted the message.
const RETRIES: u32 = 2;
const BACKOFF: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct AlertEvent {
    pub kind: &'static str,
    /// A key id or client IP, never a secret.
    pub subject: String,
    pub detail: String,
    pub at: OffsetDateTime,
}

/// The request path's handle: cheap to clone; the task ends when the last clone is dropped.
#[derive(Clone)]
pub struct Alerter {
    tx: mpsc::Sender<AlertEvent>,
    metrics: Arc<Metrics>,
}

impl Alerter {
    /// Starts the delivery task on the current tokio runtime.
    pub fn spawn(settings: AlertSettings, metrics: Arc<Metrics>) -> Result<Alerter, String> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| "alerts need a tokio runtime".to_string())?;
        match settings.url.scheme_str() {
            Some("http" | "https") if settings.url.host().is_some() => {}
            _ => return Err(format!("alert url {}: must be an http or https URL", redacted(&settings.url))),
        }
        if settings.queue == 0 {
            return Err("alert queue must hold at least one event".into());
        }
        if settings.timeout.is_zero() {
            return Err("alert timeout must be more than zero".into());
        }
        let connector =
            crate::forward::connector(settings.ca_file.as_deref(), settings.timeout, "alerts.webhook.ca_file")
                .map_err(|e| e.to_string())?;
        let webhook = Webhook {
            client: Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1).build(connector),
            target: redacted(&settings.url),
            url: settings.url,
            timeout: settings.timeout,
            authorization: settings.authorization,
        };
        let (tx, rx) = mpsc::channel(settings.queue);
        let dedup = Dedup::new(settings.cooldown, MAX_PAIRS);
        runtime.spawn(run(rx, dedup, webhook, settings.instance, Arc::clone(&metrics)));
        Ok(Alerter { tx, metrics })
    }

    /// Queues `event` for the webhook, or counts it dropped if the queue is full. Never waits.
    pub fn notify(&self, event: AlertEvent) {
        if self.tx.try_send(event).is_err() {
            self.metrics.alert("dropped");
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<AlertEvent>,
    mut dedup: Dedup,
    webhook: Webhook,
    instance: String,
    metrics: Arc<Metrics>,
) {
    while let Some(event) = rx.recv().await {
        let suppressed = match dedup.check(event.kind, &event.subject, Instant::now()) {
            Verdict::Suppress => {
                metrics.alert("suppressed");
                continue;
            }
            Verdict::Send { suppressed_since_last } => suppressed_since_last,
        };
        match webhook.deliver(payload(&event, &instance, suppressed)).await {
            Ok(()) => metrics.alert("sent"),
            Err((failure, attempts)) => {
                metrics.alert("failed");
                tracing::warn!(
                    webhook = %webhook.target,
                    kind = event.kind,
                    subject = %event.subject,
                    attempts,
                    error = %failure,
                    "anomaly alert not delivered"
                );
            }
        }
    }
    tracing::debug!("alert task stopped: every Alerter was dropped");
}

// ---------- de-duplication ----------

/// Which alerts go out: the first for a (kind, subject) pair, then none for that pair until the
/// cool-down since the last one sent has passed. Repeats in between are counted, and the count
/// rides on the next alert sent for the pair.
struct Dedup {
    cooldown: Duration,
    cap: usize,
    pairs: HashMap<(&'static str, String), Pair>,
    next_sweep: Option<Instant>,
}

struct Pair {
    sent_at: Instant,
    suppressed: u64,
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Send { suppressed_since_last: u64 },
    Suppress,
}

impl Dedup {
    fn new(cooldown: Duration, cap: usize) -> Dedup {
        Dedup { cooldown, cap: cap.max(1), pairs: HashMap::new(), next_sweep: None }
    }

    fn check(&mut self, kind: &'static str, subject: &str, now: Instant) -> Verdict {
        if self.next_sweep.is_none_or(|t| now >= t) {
            self.sweep(now);
            self.next_sweep = Some(now + self.cooldown);
        }
        let key = (kind, subject.to_owned());
        if let Some(p) = self.pairs.get_mut(&key) {
            if now.duration_since(p.sent_at) < self.cooldown {
                p.suppressed += 1;
                return Verdict::Suppress;
            }
            p.sent_at = now;
            return Verdict::Send { suppressed_since_last: std::mem::take(&mut p.suppressed) };
        }
        if self.pairs.len() >= self.cap {
            self.sweep(now);
        }
        if self.pairs.len() >= self.cap {
            // Forgets the oldest pair (and any count it held): its cool-down is the likeliest over.
            let oldest = self.pairs.iter().min_by_key(|(_, p)| p.sent_at).map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.pairs.remove(&k);
            }
        }
        self.pairs.insert(key, Pair { sent_at: now, suppressed: 0 });
        Verdict::Send { suppressed_since_last: 0 }
    }

    /// Forgets pairs whose cool-down is over, except those holding a count the next alert for
    /// the pair must report (the cap bounds those).
    fn sweep(&mut self, now: Instant) {
        let cooldown = self.cooldown;
        self.pairs.retain(|_, p| p.suppressed > 0 || now.duration_since(p.sent_at) < cooldown);
    }
}

// ---------- the message ----------

/// The webhook body: Slack reads `text`; other receivers get the fields as well.
fn payload(event: &AlertEvent, instance: &str, suppressed_since_last: u64) -> Bytes {
    let timestamp = event.at.to_offset(UtcOffset::UTC).format(&Rfc3339).ok();
    let body = serde_json::json!({
        "text": text(event, instance, suppressed_since_last),
        "kind": event.kind,
        "subject": event.subject,
        "detail": event.detail,
        "instance": instance,
        "timestamp": timestamp,
        "suppressed_since_last": suppressed_since_last,
    });
    Bytes::from(body.to_string())
}

/// One human line, e.g. `:rotating_light: keygate (pod-7) anomaly invalid_key_burst — subject
/// 203.0.113.7: 25 invalid keys in 60 s`.
fn text(event: &AlertEvent, instance: &str, suppressed_since_last: u64) -> String {
    let mut s = format!(
        ":rotating_light: keygate ({}) anomaly {} — subject {}: {}",
        slack_escape(instance),
        slack_escape(event.kind),
        slack_escape(&event.subject),
        slack_escape(&event.detail)
    );
    match suppressed_since_last {
        0 => {}
        1 => s.push_str(" (1 repeat suppressed since the last alert)"),
        n => s.push_str(&format!(" ({n} repeats suppressed since the last alert)")),
    }
    s
}

/// Slack treats `<…>` as links and mentions (`<!channel>`), so `&`, `<`, `>` are escaped as
/// its docs ask; line breaks become spaces to keep the message one line.
fn slack_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

// ---------- delivery ----------

struct Webhook {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Uri,
    /// What logs may say about the URL.
    target: String,
    timeout: Duration,
    authorization: Option<HeaderValue>,
}

#[derive(Debug)]
enum Failure {
    Status(StatusCode),
    Timeout(Duration),
    Connect(String),
    Protocol(String),
}

impl Failure {
    fn retryable(&self) -> bool {
        match self {
            Failure::Connect(_) => true,
            Failure::Status(s) => s.is_server_error(),
            Failure::Timeout(_) | Failure::Protocol(_) => false,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status(s) => write!(f, "answered {s}"),
            Failure::Timeout(t) => write!(f, "no answer within {t:?}"),
            Failure::Connect(e) => write!(f, "connect: {e}"),
            Failure::Protocol(e) => write!(f, "exchange failed: {e}"),
        }
    }
}

impl Webhook {
    /// Posts `body`, retrying connect errors and 5xx with a short backoff. On failure, returns
    /// the last one and the number of attempts made.
    async fn deliver(&self, body: Bytes) -> Result<(), (Failure, u32)> {
        let mut attempt = 1;
        loop {
            match self.post(body.clone()).await {
                Ok(()) => return Ok(()),
                Err(f) if f.retryable() && attempt <= RETRIES => {
                    tokio::time::sleep(BACKOFF * attempt).await;
                    attempt += 1;
                }
                Err(f) => return Err((f, attempt)),
            }
        }
    }

    async fn post(&self, body: Bytes) -> Result<(), Failure> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.url.clone();
        req.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        req.headers_mut().insert(USER_AGENT, HeaderValue::from_static(concat!("keygate/", env!("CARGO_PKG_VERSION"))));
        if let Some(auth) = &self.authorization {
            req.headers_mut().insert(http::header::AUTHORIZATION, auth.clone());
        }
        // The response body is not read: dropping it closes the connection, which is fine at
        // alert rates, and a webhook that stalls mid-body cannot hold the queue.
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => Err(Failure::Timeout(self.timeout)),
            Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
            Ok(Ok(resp)) => Err(Failure::Status(resp.status())),
            Ok(Err(e)) if e.is_connect() => Err(Failure::Connect(chain(&e))),
            Ok(Err(e)) => Err(Failure::Protocol(chain(&e))),
        }
    }
}

/// An error and its sources on one line. hyper's errors name no URL, so nothing secret.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        s.push_str(": ");
        s.push_str(&err.to_string());
        cur = err.source();
    }
    s
}

/// The detectors' reports, as alerts.
impl crate::proxy::anomalies::Notify for Alerter {
    fn notify(&self, a: &crate::anomaly::Anomaly) {
        Alerter::notify(
            self,
            AlertEvent {
                kind: a.kind.as_str(),
                subject: a.subject.to_string(),
                detail: a.detail.clone(),
                at: time::OffsetDateTime::now_utc(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
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
}
