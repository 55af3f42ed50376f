use std::collections::BTreeSet;
use std::sync::Arc;

use time::OffsetDateTime;

use super::*;
use crate::keys::KeyTable;

/// Every series keygate exports. A series added or renamed must be added here too, which keeps
/// the alerting rules and dashboards in step with the code.
const EXPECTED: [&str; 34] = [
    "keygate_alerts_total",
    "keygate_anomalies_total",
    "keygate_blocked_client_ips",
    "keygate_build_info",
    "keygate_config_last_reload_success_timestamp_seconds",
    "keygate_config_last_reload_successful",
    "keygate_config_reloads_total",
    "keygate_config_restart_pending",
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
    "keygate_rate_limit_decisions_total",
    "keygate_rate_limit_redis_errors_total",
    "keygate_rate_limit_redis_fallback_total",
    "keygate_request_duration_seconds",
    "keygate_requests_in_flight",
    "keygate_requests_total",
    "keygate_upstream_duration_seconds",
    "keygate_upstream_errors_total",
];

/// Calls every named method once, so families without pre-registered labels have a child.
fn exercise(m: &Metrics) {
    m.request("OK", "/v1/things", 0.01);
    m.upstream_answered("/v1/things", 0.005);
    m.upstream_error("timeout");
    m.connection_opened();
    drop(m.in_flight());
    m.rate_limit(&Arc::from("key-1"), "standard", LimitOutcome::NearLimit);
    m.ip_rate_limit(true);
    m.redis_error("timeout");
    m.redis_fallback("fail_open");
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
    m.config_reload_failed();
}

#[test]
fn every_series_registers_and_renders() {
    let m = Metrics::new();
    exercise(&m);
    let gathered: BTreeSet<String> = m.registry.gather().iter().map(|f| f.name().to_owned()).collect();
    let expected: BTreeSet<String> = EXPECTED.iter().map(|s| s.to_string()).collect();
    assert_eq!(gathered, expected, "the registry holds exactly the expected families");
    let text = m.render();
    for name in &expected {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} is rendered");
    }
}

#[test]
fn pre_registered_series_show_zero_before_any_event() {
    let text = Metrics::new().render();
    for line in [
        "keygate_alerts_total{result=\"dropped\"} 0",
        "keygate_upstream_errors_total{kind=\"protocol\"} 0",
        "keygate_key_table_reloads_total{result=\"failed\"} 0",
        "keygate_config_reloads_total{result=\"failed\"} 0",
        "keygate_key_store_queries_total{query=\"by_id\",result=\"error\"} 0",
        "keygate_key_store_cache_lookups_total{result=\"negative_hit\"} 0",
        "keygate_key_store_cache_entries{cache=\"negative\"} 0",
        "keygate_rate_limit_redis_fallback_total{policy=\"fail_closed\"} 0",
        "keygate_anomalies_total{kind=\"invalid_key_burst\"} 0",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains(&format!("keygate_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))));
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
