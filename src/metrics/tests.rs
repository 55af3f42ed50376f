use std::collections::BTreeSet;
use std::sync::Arc;

use time::OffsetDateTime;

use super::*;
use crate::keys::KeyTable;

/// Every series keygate exports. A series added or renamed must be added here too, which keeps
/// the alerting rules and dashboards in step with the code.
const EXPECTED: [&str; 42] = [
    "keygate_admin_key_api_requests_total",
    "keygate_alerts_total",
    "keygate_anomalies_total",
    "keygate_blocked_client_ips",
    "keygate_build_info",
    "keygate_config_last_reload_success_timestamp_seconds",
    "keygate_config_last_reload_successful",
    "keygate_config_reloads_total",
    "keygate_config_restart_pending",
    "keygate_connections_refused_total",
    "keygate_ip_rate_limit_decisions_total",
    "keygate_key_store_cache_entries",
    "keygate_key_store_cache_invalidations_total",
    "keygate_key_store_cache_lookups_total",
    "keygate_key_store_connected",
    "keygate_key_store_last_sync_timestamp_seconds",
    "keygate_key_store_notification_lag_seconds",
    "keygate_key_store_pool_connections",
    "keygate_key_store_queries_total",
    "keygate_key_store_staleness_seconds",
    "keygate_key_store_sync_failures_total",
    "keygate_key_store_usage_flushes_total",
    "keygate_key_store_usage_pending_keys",
    "keygate_key_store_version",
    "keygate_key_table_keys",
    "keygate_key_table_last_reload_success_timestamp_seconds",
    "keygate_key_table_reloads_total",
    "keygate_open_connections",
    "keygate_quota_decisions_total",
    "keygate_rate_limit_decisions_total",
    "keygate_rate_limit_redis_circuit_open",
    "keygate_rate_limit_redis_errors_total",
    "keygate_rate_limit_redis_fallback_total",
    "keygate_request_duration_seconds",
    "keygate_requests_in_flight",
    "keygate_requests_total",
    "keygate_tls_certificate_expiry_timestamp_seconds",
    "keygate_upstream_duration_seconds",
    "keygate_upstream_errors_total",
    "keygate_upstream_ready",
    "keygate_upstream_responses_total",
    "keygate_would_refuse_total",
];

/// Calls every named method once, so families without pre-registered labels have a child.
fn exercise(m: &Metrics) {
    m.request(&RequestDone {
        code: "OK",
        route: "/v1/things",
        shape: "inline",
        status: 200,
        method: &http::Method::GET,
        seconds: 0.01,
    });
    m.upstream_answered("/v1/things", &http::Method::GET, 200, 0.005);
    m.tls_certificate_expires(1_900_000_000);
    m.upstream_error("timeout");
    m.connection_opened();
    m.connection_refused("per_ip");
    m.upstream_ready(true);
    drop(m.in_flight());
    m.rate_limit(&Arc::from("key-1"), "standard", LimitOutcome::NearLimit);
    m.ip_rate_limit(true);
    m.redis_error("timeout");
    m.redis_fallback("fail_open");
    m.quota_decision(QuotaOutcome::Allowed, QuotaStore::Local);
    m.anomaly("invalid_key_burst");
    m.blocked_ips(2);
    m.alert("sent");
    m.table_loaded(&KeyTable::default(), OffsetDateTime::UNIX_EPOCH);
    m.table_reload_failed();
    m.key_store_staleness(std::time::Duration::from_secs(1));
    m.key_store_synced(7);
    m.key_store_sync_failed();
    m.key_store_notification_lag(0.5);
    m.key_store_connected(true);
    m.key_cache_lookup(CacheLookup::Miss);
    m.key_store_query("by_hash", "found");
    m.key_cache_entries(1, 1, 0);
    m.key_cache_invalidated(1);
    m.key_store_pool(2);
    m.usage_flushed(true);
    m.usage_pending(3);
    m.config_reloaded(OffsetDateTime::UNIX_EPOCH, 1);
    m.admin_call("create", "OK");
    m.config_reload_failed();
    m.would_refuse("INSUFFICIENT_SCOPE", "/v1/things");
}

#[test]
fn every_series_registers_and_renders() {
    let m = Metrics::for_store(1000, KeySeries::PostgresCache);
    exercise(&m);
    let all: BTreeSet<String> = m.registry.gather().iter().map(|f| f.name().to_owned()).collect();
    let (process, gathered): (BTreeSet<String>, BTreeSet<String>) =
        all.into_iter().partition(|n| n.starts_with("process_"));
    for p in
        ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"]
    {
        assert!(process.contains(p), "{p} in {process:?}");
    }
    let expected: BTreeSet<String> = EXPECTED.iter().map(|s| s.to_string()).collect();
    assert_eq!(gathered, expected, "the registry holds exactly the expected families");
    let text = m.render();
    for name in &expected {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} is rendered");
    }
}

#[test]
fn pre_registered_series_show_zero_before_any_event() {
    let text = Metrics::for_store(1000, KeySeries::PostgresCache).render();
    for line in [
        "keygate_config_reloads_total{result=\"failed\"} 0",
        "keygate_key_store_queries_total{query=\"by_id\",result=\"error\"} 0",
        "keygate_key_store_cache_lookups_total{result=\"negative_hit\"} 0",
        "keygate_key_store_cache_entries{cache=\"negative\"} 0",
        "keygate_alerts_total{result=\"dropped\"} 0",
        "keygate_upstream_errors_total{kind=\"protocol\"} 0",
        "keygate_key_table_reloads_total{result=\"failed\"} 0",
        "keygate_rate_limit_redis_fallback_total{policy=\"fail_closed\"} 0",
        "keygate_quota_decisions_total{outcome=\"credits_exhausted\",store=\"redis\"} 0",
        "keygate_anomalies_total{kind=\"invalid_key_burst\"} 0",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains(&format!("keygate_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn every_route_shows_each_would_refuse_code_at_zero() {
    let m = Metrics::new();
    m.would_refuse_known(["/v1/things"]);
    let text = m.render();
    for code in crate::error::REPORTABLE_CODES {
        let line = format!("keygate_would_refuse_total{{code=\"{code}\",route=\"/v1/things\"}} 0");
        assert!(text.contains(&line), "missing {line:?}");
    }
}

#[test]
fn the_file_store_exports_no_key_store_series_and_the_cache_series_need_sync_cache() {
    let file = Metrics::with_key_label_cap(10);
    exercise(&file);
    assert!(!file.render().contains("keygate_key_store_"), "{}", file.render());
    let replica = Metrics::for_store(10, KeySeries::Postgres);
    exercise(&replica);
    let text = replica.render();
    assert!(text.contains("keygate_key_store_staleness_seconds 1"));
    assert!(text.contains("keygate_key_store_usage_flushes_total{result=\"ok\"} 1"));
    assert!(!text.contains("keygate_key_store_cache_"), "{text}");
}

#[test]
fn requests_count_the_decision_the_status_class_and_the_method_within_bounded_sets() {
    let m = Metrics::new();
    m.routes_known([("/v1/things", "OK"), ("/health", "PUBLIC")]);
    let text = m.render();
    for class in ["2xx", "3xx", "4xx", "5xx"] {
        assert!(
            text.contains(&format!(
                "keygate_requests_total{{code=\"OK\",route=\"/v1/things\",shape=\"inline\",status_class=\"{class}\"}} 0"
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            "keygate_requests_total{{code=\"PUBLIC\",route=\"/health\",shape=\"inline\",status_class=\"{class}\"}} 0"
        )));
    }
    let propfind = http::Method::from_bytes(b"PROPFIND").unwrap();
    m.request(&RequestDone {
        code: "OK",
        route: "/v1/things",
        shape: "inline",
        status: 502,
        method: &propfind,
        seconds: 0.2,
    });
    m.upstream_answered("/v1/things", &propfind, 503, 0.1);
    let text = m.render();
    assert!(
        text.contains(
            "keygate_requests_total{code=\"OK\",route=\"/v1/things\",shape=\"inline\",status_class=\"5xx\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("keygate_request_duration_seconds_count{method=\"other\",route=\"/v1/things\"} 1"), "{text}");
    assert!(
        text.contains("keygate_upstream_duration_seconds_count{method=\"other\",route=\"/v1/things\"} 1"),
        "{text}"
    );
    assert!(text.contains("keygate_upstream_responses_total{status_class=\"5xx\"} 1"), "{text}");
    assert!(text.contains("keygate_upstream_responses_total{status_class=\"2xx\"} 0"), "{text}");
    assert!(!text.contains("PROPFIND"));
}

#[test]
fn keys_past_the_label_cap_share_the_other_series() {
    let m = Metrics::with_key_label_cap(1);
    m.rate_limit(&Arc::from("a"), "t", LimitOutcome::Allowed);
    m.rate_limit(&Arc::from("b"), "t", LimitOutcome::Limited);
    let text = m.render();
    assert!(text.contains("keygate_rate_limit_decisions_total{key_id=\"a\",outcome=\"allowed\",tier=\"t\"} 1"));
    assert!(text.contains("keygate_rate_limit_decisions_total{key_id=\"_other\",outcome=\"limited\",tier=\"t\"} 1"));
    assert!(!text.contains("key_id=\"b\""));
}
