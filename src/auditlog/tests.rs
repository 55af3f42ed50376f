use super::*;
use std::sync::{Arc, Mutex};
use tracing_subscriber::layer::SubscriberExt;

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = Sink;
    fn make_writer(&'a self) -> Sink {
        self.clone()
    }
}

#[test]
fn the_line_is_one_json_object_with_every_field() {
    let sink = Sink::default();
    let subscriber = tracing_subscriber::registry().with(AuditLayer::new(sink.clone()));
    tracing::subscriber::with_default(subscriber, || {
        let missing: Option<f64> = None;
        tracing::info!(
            target: "keygate::audit",
            request_id = "r-1",
            key_id = "k\"1\\\n\u{1}é",
            status = 200u16,
            duration_ms = 1.25,
            upstream_ms = missing,
            delta = -3i64,
            ok = true,
            client_ip = %"10.0.0.1",
            reason = %"say \"no\"\n",
            "decision"
        );
        tracing::info!(target: "keygate::other", "not an audit line");
    });
    let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(v["target"], "keygate::audit");
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["message"], "decision");
    assert_eq!(v["request_id"], "r-1");
    assert_eq!(v["key_id"], "k\"1\\\n\u{1}é", "escaped and read back exactly");
    assert_eq!(v["status"], 200);
    assert_eq!(v["duration_ms"], 1.25);
    assert_eq!(v["delta"], -3);
    assert_eq!(v["ok"], true);
    assert_eq!(v["client_ip"], "10.0.0.1");
    assert_eq!(v["reason"], "say \"no\"\n", "a formatted field is escaped as it is written");
    assert!(v.get("upstream_ms").is_none(), "a None field is left out");
    let ts = v["timestamp"].as_str().unwrap();
    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).unwrap();
}

/// The word-at-a-time check agrees with the byte rule for every byte at every position.
#[test]
fn needs_escape_matches_the_byte_rule() {
    let rule = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    for b in 0..=127u8 {
        for len in 1..=17 {
            for at in 0..len {
                let mut v = vec![b'a'; len];
                v[at] = b;
                let s = std::str::from_utf8(&v).unwrap();
                assert_eq!(needs_escape(s), rule(b), "byte {b:#x} at {at} of {len}");
            }
        }
    }
    // Multi-byte UTF-8 (bytes >= 0x80) never needs escaping, beside anything.
    assert!(!needs_escape("é clinic ü 東京 ok"));
    assert!(needs_escape("東京\""));
    assert!(!needs_escape(""));
}

fn lines_with(buf: &Sink, rid: &str) -> Vec<String> {
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    text.lines().filter(|l| l.contains(rid)).map(str::to_owned).collect()
}

/// What the binary's filter says about the decision line, asked once.
#[test]
fn passes_follows_the_log_filter() {
    use tracing_subscriber::EnvFilter;
    assert!(passes(EnvFilter::new("info")));
    assert!(passes(EnvFilter::new("debug,hyper=info")));
    assert!(!passes(EnvFilter::new("warn")));
    assert!(!passes(EnvFilter::new("info,keygate::audit=off")));
    assert!(passes(EnvFilter::new("warn,keygate::audit=info")));
}

/// The direct path and the tracing path write the same object, key for key and in order.
#[test]
fn the_direct_decision_line_is_the_tracing_line() {
    let direct = Sink::default();
    let d2 = direct.clone();
    assert!(set_sink(move |line| d2.0.lock().unwrap().extend_from_slice(line)), "the only sink in this binary");
    let layered = Sink::default();
    let d = |rid: &'static str, upstream_ms, would_refuse| Decision {
        request_id: rid,
        key_id: "key_\"x\"",
        client_ip: "10.0.0.1",
        method: "GET",
        route: "/api/v1/interactions",
        status: 200,
        code: "OK",
        auth: "key",
        shape: "envoy_grpc",
        duration_ms: 1.5,
        upstream_ms,
        would_refuse,
    };
    let subscriber = tracing_subscriber::registry().with(AuditLayer::new(layered.clone()));
    tracing::subscriber::with_default(subscriber, || {
        decision(&d("rid-direct-1", Some(0.25), Some("INSUFFICIENT_SCOPE")));
        decision(&d("rid-direct-2", None, None));
        via_tracing(&d("rid-layer-1", Some(0.25), Some("INSUFFICIENT_SCOPE")));
    });
    let strip = |l: &str, rid: &str| {
        let rest = &l[l.find("\"level\"").unwrap()..];
        rest.replace(rid, "RID")
    };
    let one = lines_with(&direct, "rid-direct-1");
    let layer = lines_with(&layered, "rid-layer-1");
    assert_eq!(one.len(), 1);
    assert_eq!(layer.len(), 1);
    assert_eq!(strip(&one[0], "rid-direct-1"), strip(&layer[0], "rid-layer-1"));
    assert!(lines_with(&layered, "rid-direct").is_empty(), "the direct path bypasses tracing");
    let two: serde_json::Value = serde_json::from_str(&lines_with(&direct, "rid-direct-2")[0]).unwrap();
    assert_eq!(two["key_id"], "key_\"x\"");
    assert_eq!(two["shape"], "envoy_grpc");
    assert!(two.get("upstream_ms").is_none(), "no upstream, no field");
    assert!(two.get("would_refuse").is_none(), "enforced or passed: no field");
    let one: serde_json::Value = serde_json::from_str(&one[0]).unwrap();
    assert_eq!(one["would_refuse"], "INSUFFICIENT_SCOPE");
}
