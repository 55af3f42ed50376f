//! The audit line's own JSON formatter. One line per request is the hottest log there is: the
//! generic JSON layer (a serde map per event, a write per token) was a fifth of keygate's
//! user-space work under callgrind (README, Performance). This layer writes the same
//! JSON object (timestamp, level, target, every field, message) into one reused buffer and
//! hands it to the writer in one call. Every other event still goes through the generic layer.
//!
//! The per-request decision line goes further (`decision`): with a sink installed (the binary
//! does, for JSON logs) it is written straight from its fields, the same object in the same
//! order, without tracing's dispatch and field visitor, with a faster escape check. The filter still applies: the binary asks it once (`passes`)
//! and installs the sink only if `keygate::audit` at INFO is enabled.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};

use crate::textfmt;

/// The target as a literal, so the decision line's fixed text can be put together at compile
/// time (`concat!` takes literals only).
macro_rules! target {
    () => {
        "keygate::audit"
    };
}
pub const TARGET: &str = target!();

pub struct AuditLayer<W> {
    writer: W,
}

impl<W> AuditLayer<W> {
    pub fn new(writer: W) -> Self {
        AuditLayer { writer }
    }
}

thread_local! {
    static BUF: RefCell<String> = RefCell::new(String::with_capacity(512));
}

type LineSink = Box<dyn Fn(&[u8]) + Send + Sync>;

static SINK: OnceLock<LineSink> = OnceLock::new();

/// Whether `filter` lets the decision line (INFO, `keygate::audit`) through: asked once, at
/// start-up, by sending a probe event through a throwaway subscriber with that filter, so the
/// direct path obeys `log.level` and `RUST_LOG` as the tracing path does.
pub fn passes<F>(filter: F) -> bool
where
    F: Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt as _;
    struct Heard(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl<S: Subscriber> Layer<S> for Heard {
        fn on_event(&self, _: &Event<'_>, _: Context<'_, S>) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let heard = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = tracing_subscriber::registry().with(filter).with(Heard(std::sync::Arc::clone(&heard)));
    tracing::subscriber::with_default(probe, || tracing::info!(target: TARGET, "probe"));
    heard.load(std::sync::atomic::Ordering::Relaxed)
}

/// Where `decision` writes its lines from now on (once per process; `false` if one was set).
/// Install it only if `passes` said the line is wanted.
pub fn set_sink(sink: impl Fn(&[u8]) + Send + Sync + 'static) -> bool {
    SINK.set(Box::new(sink)).is_ok()
}

/// The facts of one decision line. Never the key, the query string or a body: clinic data is
/// health data, and the query can carry it.
pub struct Decision<'a> {
    pub request_id: &'a str,
    pub key_id: &'a str,
    pub client_ip: &'a str,
    pub method: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub code: &'a str,
    pub auth: &'a str,
    /// Which deployment shape answered: `inline`, or the front proxy's check protocol.
    pub shape: &'a str,
    pub duration_ms: f64,
    pub upstream_ms: Option<f64>,
    /// In report-only mode, the refusal an enforcing keygate would have answered.
    pub would_refuse: Option<&'a str>,
}

/// Logs one decision: through the sink if there is one, else as a tracing event (text logs,
/// a filter that turns the audit line off, and library users with a subscriber of their own).
pub fn decision(d: &Decision<'_>) {
    // No `tracing::enabled!` here: with per-layer filters, an `enabled` check that no event
    // follows leaves the filter state set, and the next log line on the thread is dropped.
    // Whether the line is wanted was settled once, before the sink was installed.
    let Some(sink) = SINK.get() else {
        return via_tracing(d);
    };
    // The same object `AuditLayer` writes for the tracing event (a test compares them), with
    // each run of fixed text written in one piece: per field, one copy instead of four.
    BUF.with(|b| {
        let Ok(mut buf) = b.try_borrow_mut() else { return };
        let buf = &mut *buf;
        open(buf);
        push_escaped(
            buf,
            &[
                (
                    concat!(
                        "\",\"level\":\"INFO\",\"target\":\"",
                        target!(),
                        "\",\"message\":\"decision\",\"request_id\":\""
                    ),
                    d.request_id,
                ),
                ("\",\"key_id\":\"", d.key_id),
                ("\",\"client_ip\":\"", d.client_ip),
                ("\",\"method\":\"", d.method),
                ("\",\"route\":\"", d.route),
            ],
        );
        buf.push_str("\",\"status\":");
        textfmt::push_u64(buf, u64::from(d.status));
        push_escaped(buf, &[(",\"code\":\"", d.code), ("\",\"auth\":\"", d.auth), ("\",\"shape\":\"", d.shape)]);
        buf.push('"');
        let mut f = Fields(buf);
        f.float("duration_ms", d.duration_ms);
        if let Some(ms) = d.upstream_ms {
            f.float("upstream_ms", ms);
        }
        if let Some(code) = d.would_refuse {
            buf.push_str(",\"would_refuse\":\"");
            escape_into(buf, code);
            buf.push('"');
        }
        buf.push_str("}\n");
        sink(buf.as_bytes());
    });
}

/// The decision as a tracing event (formatted by `AuditLayer` or the text formatter).
fn via_tracing(d: &Decision<'_>) {
    tracing::info!(
        target: TARGET,
        request_id = d.request_id,
        key_id = d.key_id,
        client_ip = d.client_ip,
        method = d.method,
        route = d.route,
        status = d.status,
        code = d.code,
        auth = d.auth,
        shape = d.shape,
        duration_ms = d.duration_ms,
        upstream_ms = d.upstream_ms,
        would_refuse = d.would_refuse,
        "decision"
    );
}

/// Starts a new line in `buf`: the object opened and its timestamp (now) written, quote still open.
fn open(buf: &mut String) {
    buf.clear();
    buf.push_str("{\"timestamp\":\"");
    textfmt::push_rfc3339_micros(buf, time::OffsetDateTime::now_utc());
}

/// Each run of fixed text as it is, then its value JSON-escaped.
fn push_escaped(buf: &mut String, parts: &[(&str, &str)]) {
    for (text, value) in parts {
        buf.push_str(text);
        escape_into(buf, value);
    }
}

/// The start of every audit line: timestamp, level and target.
fn begin(buf: &mut String, level: tracing::Level) {
    open(buf);
    buf.push_str("\",\"level\":\"");
    buf.push_str(level.as_str());
    buf.push_str("\",\"target\":\"");
    buf.push_str(TARGET);
    buf.push('"');
}

/// Whether `s` has a byte JSON must escape (a control character, `"` or `\`), eight bytes at
/// a time: the audit line's strings are ~110 bytes a request, and a byte-at-a-time scan was
/// the larger part of writing it.
fn needs_escape(s: &str) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // High bit set in each byte of `x` that is zero (exact when combined as below).
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut chunks = s.as_bytes().chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        // Bytes < 0x20: v - 0x20 borrows into the high bit only where the byte is below (bytes
        // >= 0x80 are masked out by !v).
        let control = v.wrapping_sub(ONES * 0x20) & !v & HIGH;
        if control | zero(v ^ (ONES * u64::from(b'"'))) | zero(v ^ (ONES * u64::from(b'\\'))) != 0 {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// JSON string contents: the common case (nothing to escape) is one copy.
fn escape_into(out: &mut String, s: &str) {
    if !needs_escape(s) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

struct Fields<'a>(&'a mut String);

impl Fields<'_> {
    fn key(&mut self, f: &Field) {
        self.key_named(f.name());
    }

    fn key_named(&mut self, name: &str) {
        self.0.push_str(",\"");
        self.0.push_str(name);
        self.0.push_str("\":");
    }

    fn string(&mut self, name: &str, v: &str) {
        self.key_named(name);
        self.0.push('"');
        escape_into(self.0, v);
        self.0.push('"');
    }

    fn float(&mut self, name: &str, v: f64) {
        self.key_named(name);
        if v.is_finite() {
            // The audit line's floats are durations in ms: to the microsecond is enough.
            textfmt::push_f64_3(self.0, v);
        } else {
            self.0.push_str("null");
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, f: &Field, v: &str) {
        self.string(f.name(), v);
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.key(f);
        textfmt::push_u64(self.0, v);
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.key(f);
        textfmt::push_i64(self.0, v);
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        self.key(f);
        self.0.push_str(if v { "true" } else { "false" });
    }
    fn record_f64(&mut self, f: &Field, v: f64) {
        self.float(f.name(), v);
    }
    /// The message (and any `%`/`?` field) is formatted straight into the line, escaped as it
    /// goes: no `String` per event.
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        self.key(f);
        self.0.push('"');
        let _ = write!(Escaped(self.0), "{v:?}");
        self.0.push('"');
    }
}

/// A `fmt::Write` that JSON-escapes what is written through it.
struct Escaped<'a>(&'a mut String);

impl std::fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        escape_into(self.0, s);
        Ok(())
    }
}

impl<S, W> Layer<S> for AuditLayer<W>
where
    S: Subscriber,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if meta.target() != TARGET {
            return;
        }
        BUF.with(|b| {
            let Ok(mut buf) = b.try_borrow_mut() else { return };
            begin(&mut buf, *meta.level());
            event.record(&mut Fields(&mut buf));
            buf.push_str("}\n");
            let _ = self.writer.make_writer().write_all(buf.as_bytes());
        });
    }
}

/// Everything but the audit line, for the generic layer.
pub fn not_audit(meta: &tracing::Metadata<'_>) -> bool {
    meta.target() != TARGET
}

#[cfg(test)]
mod tests;
