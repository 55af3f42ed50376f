//! Anomaly alerts to a webhook (Slack-compatible JSON), kept off the request path: `notify` only
//! queues; one background task de-duplicates by (kind, subject) with a cool-down and POSTs one
//! alert at a time. A slow or dead webhook costs dropped alerts, counted, never request latency.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::config::alert::redacted;
pub use crate::config::alert::{AlertSettings, DEFAULT_COOLDOWN, DEFAULT_QUEUE, DEFAULT_TIMEOUT};
use crate::metrics::Metrics;

mod webhook;

use webhook::Webhook;

/// (kind, subject) pairs remembered at most: a flood of distinct subjects cannot grow memory.
const MAX_PAIRS: usize = 10_000;

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
    clock: Clock,
}

impl Alerter {
    /// Starts the delivery task on the current tokio runtime; the cool-down is measured on `clock`.
    pub fn spawn(settings: AlertSettings, metrics: Arc<Metrics>, clock: Clock) -> Result<Alerter, String> {
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
        runtime.spawn(run(rx, dedup, webhook, settings.instance, Arc::clone(&metrics), clock.clone()));
        Ok(Alerter { tx, metrics, clock })
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
    clock: Clock,
) {
    while let Some(event) = rx.recv().await {
        let suppressed = match dedup.check(event.kind, &event.subject, clock.now()) {
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

/// The detectors' reports, as alerts.
impl crate::proxy::anomalies::Notify for Alerter {
    fn notify(&self, a: &crate::anomaly::Anomaly) {
        Alerter::notify(
            self,
            AlertEvent {
                kind: a.kind.as_str(),
                subject: a.subject.to_string(),
                detail: a.detail.clone(),
                at: self.clock.wall(),
            },
        );
    }
}

#[cfg(test)]
mod tests;
