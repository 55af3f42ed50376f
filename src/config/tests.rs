use super::*;
use http::Method;

/// The error `text` gets, and its message, which must name every one of `fields`.
fn problems_naming(text: &str, fields: &[&str]) -> (ConfigError, String) {
    let e = parse(text, "c.yaml").unwrap_err();
    let msg = e.to_string();
    for field in fields {
        assert!(msg.contains(field), "missing {field} in {msg}");
    }
    (e, msg)
}

const MINIMAL: &str = "environment: live\nupstream:\n  url: http://127.0.0.1:3000\nkeys:\n  file: keys.yaml\n";

#[test]
fn minimal_config_gets_safe_defaults() {
    let c = parse(MINIMAL, "c.yaml").unwrap();
    assert_eq!(c.environment, Environment::Live);
    assert_eq!(c.admin_listen, "127.0.0.1:9090".parse().unwrap(), "admin binds loopback by default");
    assert!(!c.forward_authorization);
    assert!(c.trusted_proxies.is_empty());
    assert_eq!(c.routes.routes().len(), defaults::clinic_api_routes().len());
    assert!(c.routes.public_routes().is_empty(), "nothing is public unless configured");
}

#[test]
fn unknown_key_names_file_and_line() {
    let e = parse(&format!("{MINIMAL}listne: 1.2.3.4:80\n"), "c.yaml").unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("c.yaml: invalid configuration"), "{msg}");
    assert!(msg.contains("line 6") && msg.contains("unknown field `listne`"), "{msg}");
}

#[test]
fn every_problem_is_reported_at_once_naming_its_field() {
    let text = "environment: prod\nlisten: nope\nupstream:\n  url: ftp://x/y\n  connect_timeout: 5 parsecs\nkeys:\n  file: k\ntrusted_proxies: [banana]\n";
    let (e, msg) = problems_naming(
        text,
        &["environment:", "listen:", "upstream.url:", "upstream.connect_timeout:", "trusted_proxies[0]:"],
    );
    assert_eq!(e.problems.len(), 5, "{msg}");
}

#[test]
fn routes_are_validated() {
    let text = format!(
        "{MINIMAL}routes:\n  - path: /a/{{id}}\n    resource: a\n    clinic: {{path_param: clinic}}\n  - path: /b\n  - path: c\n    resource: c\n"
    );
    problems_naming(
        &text,
        &[
            "clinic path parameter {clinic} is not in the pattern",
            "give exactly one of `resource`",
            "must start with '/'",
        ],
    );
}

#[test]
fn custom_prefixes_and_public_routes() {
    let text = format!("{MINIMAL}public_routes:\n  - path: /health\n");
    let text =
        text.replace("  file: keys.yaml\n", "  file: keys.yaml\n  prefixes: {live: acme_live_, test: acme_test_}\n");
    let c = parse(&text, "c.yaml").unwrap();
    let key = crate::keys::generate::generate("acme_test_");
    assert_eq!(c.keys.format.check(&key), Ok(Environment::Test));
    assert!(c.routes.public_route(&Method::GET, "/health").is_some());
    assert!(c.routes.public_route(&Method::POST, "/health").is_none());
}

#[test]
fn the_shipped_example_config_is_valid() {
    let c = parse(include_str!("../../config.example.yaml"), "config.example.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.limits.max_body_bytes, 10 * 1024 * 1024);
}

/// The commented-out `key_store:` block of the example, uncommented: as a replica, and (its
/// doubly commented cache settings uncommented too) as a cache.
#[test]
fn the_example_key_store_block_is_valid_in_both_modes() {
    let example = include_str!("../../config.example.yaml");
    let block: Vec<&str> = example
        .lines()
        .skip_while(|l| *l != "# key_store:")
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .collect();
    assert!(block.len() > 20, "the example documents the block");
    let base = "environment: live\nupstream:\n  url: http://127.0.0.1:3000\nkeys: {}\n";
    let replica = parse(&format!("{base}{}\n", block.join("\n")), "example").unwrap_or_else(|e| panic!("{e}"));
    let KeyStore::Postgres(pg) = replica.key_store else { panic!("postgres expected") };
    assert_eq!(pg.sync, SyncMode::Replica);
    let cache: Vec<String> = block
        .iter()
        .map(|l| match l.strip_prefix("  # ") {
            Some(rest) if rest.starts_with("cache:") || rest.starts_with("  ") => format!("  {rest}"),
            _ => l.replace("sync: replica", "sync: cache"),
        })
        .collect();
    let cache = parse(&format!("{base}{}\n", cache.join("\n")), "example").unwrap_or_else(|e| panic!("{e}"));
    let KeyStore::Postgres(pg) = cache.key_store else { panic!("postgres expected") };
    assert_eq!(pg.sync, SyncMode::Cache(CacheSettings::DEFAULT), "the example shows the defaults");
    assert_eq!(pg.usage_flush, Some(Duration::from_secs(10)));
}

#[test]
fn the_postgres_configmap_config_is_valid() {
    let manifest = include_str!("../../deploy/postgres/configmap.yaml");
    let doc: serde_yaml::Value = serde_yaml::from_str(manifest).unwrap();
    let c = parse(doc["data"]["config.yaml"].as_str().unwrap(), "configmap").unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(c.key_store, KeyStore::Postgres(_)));
}

#[test]
fn the_kubernetes_config_is_valid() {
    // The file deploy/kubernetes's configMapGenerator turns into the ConfigMap.
    parse(include_str!("../../deploy/kubernetes/config.yaml"), "config.yaml").unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn rate_limits_default_to_one_generous_local_tier() {
    let c = parse(MINIMAL, "c.yaml").unwrap();
    let rl = &c.rate_limits;
    assert!(rl.enabled);
    assert!(matches!(rl.backend, LimitBackend::Local));
    assert_eq!(rl.headers, LimitHeaders::Ietf);
    let t = rl.tiers.resolve(None);
    assert_eq!((t.name.as_str(), t.quota.burst), ("default", 200));
    assert!(rl.per_ip.is_none(), "the per-address budget is opt-in");
    assert!(c.anomaly.enabled && c.anomaly.invalid_key_burst.block_for.is_none(), "detect, never block, by default");
    assert!(c.webhook.is_none());
}

#[test]
fn tiers_read_rates_and_default_burst_to_one_second() {
    let text = format!(
        "{MINIMAL}rate_limits:\n  default_tier: std\n  tiers:\n    std: {{rate: 50/s}}\n    slow: {{rate: 60/m, burst: 10}}\n  per_ip: {{rate: 5/10s, burst: 3}}\n  headers: x-ratelimit\n"
    );
    let c = parse(&text, "c.yaml").unwrap();
    let rl = &c.rate_limits;
    assert_eq!(rl.tiers.resolve(None).quota.burst, 50);
    assert_eq!(
        rl.tiers.resolve(Some("slow")).quota,
        crate::ratelimit::Quota::new(1, Duration::from_secs(1), 10).unwrap()
    );
    assert_eq!(rl.per_ip.unwrap().emission_nanos, 2_000_000_000);
    assert_eq!(rl.headers, LimitHeaders::XRateLimit);
}

#[test]
fn limit_anomaly_and_alert_mistakes_are_each_named() {
    let text = format!(
        "{MINIMAL}rate_limits:\n  backend: redis\n  default_tier: gold\n  tiers:\n    Bad Name: {{rate: 10/fortnight}}\n  headers: loud\nanomaly:\n  invalid_key_burst: {{block_status: 500}}\n  rate_spike: {{factor: 0.5}}\nalerts:\n  webhook: {{url: 'ftp://hooks/secret-token'}}\n"
    );
    let (_, msg) = problems_naming(
        &text,
        &[
            "rate_limits.tiers.Bad Name: tier names",
            "rate_limits.tiers.Bad Name.rate:",
            "rate_limits.default_tier:",
            "rate_limits.headers:",
            "rate_limits.redis: required",
            "anomaly.invalid_key_burst.block_status:",
            "anomaly.rate_spike:",
            "alerts.webhook.url:",
        ],
    );
    assert!(!msg.contains("secret-token"), "webhook URLs are never echoed: {msg}");
}

#[test]
fn a_redis_backend_gets_safe_timeouts_and_fails_open_by_default() {
    let text = format!("{MINIMAL}rate_limits:\n  backend: redis\n  redis:\n    url: redis://127.0.0.1:6379\n");
    let c = parse(&text, "c.yaml").unwrap();
    let LimitBackend::Redis(r) = &c.rate_limits.backend else { panic!("redis backend") };
    assert_eq!(r.timeout, Duration::from_millis(50));
    assert_eq!(r.on_error, OnRedisError::FailOpen);
    assert_eq!(r.key_prefix, "keygate:rl:");
}

const PG_BASE: &str = "environment: live\nupstream:\n  url: http://127.0.0.1:3000\nkeys: {}\n";

#[test]
fn the_file_store_is_the_default_and_needs_its_file() {
    assert!(matches!(parse(MINIMAL, "c.yaml").unwrap().key_store, KeyStore::File(ref p) if p.ends_with("keys.yaml")));
    problems_naming(PG_BASE, &["keys.file: required"]);
    problems_naming(
        &format!("{MINIMAL}key_store:\n  schema: x\n"),
        &["key_store.schema: only used with kind postgres"],
    );
}

#[test]
fn a_postgres_store_gets_safe_defaults() {
    let c = parse(&format!("{PG_BASE}key_store:\n  kind: postgres\n  url: postgres://kg@db/keys\n"), "c.yaml").unwrap();
    let KeyStore::Postgres(pg) = c.key_store else { panic!("postgres expected") };
    assert_eq!(pg.schema, "keygate");
    assert!(!pg.auto_migrate, "the schema changes only when asked");
    assert_eq!(pg.on_stale, OnStale::Refuse, "fail closed: a revocation could be missing");
    assert_eq!(pg.max_staleness, Duration::from_secs(300));
    assert_eq!((pg.poll_interval, pg.timeout), (Duration::from_secs(2), Duration::from_secs(5)));
    assert_eq!(pg.sync, SyncMode::Replica, "the whole table in memory unless asked otherwise");
    assert_eq!(pg.usage_flush, Some(Duration::from_secs(10)), "usage is written back by default");
}

const PG_CACHE: &str = "key_store:\n  kind: postgres\n  url: postgres://kg@db/keys\n  sync: cache\n";

#[test]
fn a_cache_store_gets_safe_defaults() {
    let c = parse(&format!("{PG_BASE}{PG_CACHE}"), "c.yaml").unwrap();
    let KeyStore::Postgres(pg) = c.key_store else { panic!("postgres expected") };
    let SyncMode::Cache(cache) = pg.sync else { panic!("cache expected") };
    assert_eq!(cache, CacheSettings::DEFAULT);
    assert_eq!(
        (cache.max_entries, cache.ttl, cache.negative_ttl, cache.pool_size),
        (100_000, Duration::from_secs(30), Duration::from_secs(5), 4)
    );
}

#[test]
fn cache_settings_are_read() {
    let text = format!(
        "{PG_BASE}{PG_CACHE}  cache:\n    max_entries: 500\n    ttl: 2m\n    negative_ttl: 1s\n    pool_size: 2\n  usage:\n    flush_interval: 500ms\n"
    );
    let KeyStore::Postgres(pg) = parse(&text, "c.yaml").unwrap().key_store else { panic!("postgres expected") };
    let want = CacheSettings {
        max_entries: 500,
        ttl: Duration::from_secs(120),
        negative_ttl: Duration::from_secs(1),
        pool_size: 2,
    };
    assert_eq!(pg.sync, SyncMode::Cache(want));
    assert_eq!(pg.usage_flush, Some(Duration::from_millis(500)));
}

#[test]
fn cache_mistakes_are_all_named() {
    let text = format!(
        "{PG_BASE}{PG_CACHE}  cache:\n    max_entries: 0\n    ttl: 10s\n    negative_ttl: 20s\n    pool_size: 65\n  usage:\n    flush_interval: 50ms\n"
    );
    let (e, msg) = problems_naming(
        &text,
        &[
            "key_store.cache.max_entries:",
            "key_store.cache.negative_ttl: must be more than zero and at most ttl (10s)",
            "key_store.cache.pool_size:",
            "key_store.usage.flush_interval:",
        ],
    );
    assert_eq!(e.problems.len(), 4, "{msg}");
    let zero = format!("{PG_BASE}{PG_CACHE}  cache:\n    ttl: 0s\n    negative_ttl: 0s\n");
    problems_naming(
        &zero,
        &["key_store.cache.ttl: must be more than zero", "key_store.cache.negative_ttl: must be more than zero"],
    );
}

#[test]
fn cache_settings_without_sync_cache_are_refused() {
    let text = format!("{PG_BASE}key_store:\n  kind: postgres\n  cache:\n    ttl: 1m\n");
    problems_naming(&text, &["key_store.cache: only used with sync: cache"]);
    let text = format!("{MINIMAL}key_store:\n  cache:\n    ttl: 1m\n  usage:\n    write_back: false\n");
    problems_naming(
        &text,
        &["key_store.cache: only used with kind postgres", "key_store.usage: only used with kind postgres"],
    );
}

#[test]
fn usage_write_back_can_be_turned_off() {
    let text = format!("{PG_BASE}{PG_CACHE}  usage:\n    write_back: false\n");
    let KeyStore::Postgres(pg) = parse(&text, "c.yaml").unwrap().key_store else { panic!("postgres expected") };
    assert_eq!(pg.usage_flush, None);
    let text = format!("{PG_BASE}{PG_CACHE}  usage:\n    write_back: false\n    flush_interval: 5s\n");
    problems_naming(&text, &["key_store.usage.flush_interval: not used with write_back: false"]);
}

#[test]
fn unknown_cache_keys_are_refused() {
    let text = format!("{PG_BASE}{PG_CACHE}  cache:\n    max_entry: 5\n");
    problems_naming(&text, &["unknown field `max_entry`"]);
}

#[test]
fn postgres_store_mistakes_are_all_named_and_the_url_is_never_echoed() {
    let text = format!(
        "{MINIMAL}key_store:\n  kind: postgres\n  url: \"mysql://root:hunter2@db\"\n  schema: Bad-Name\n  sync: mirror\n  on_stale: maybe\n  poll_interval: 5s\n  max_staleness: 6s\n"
    );
    let (e, msg) = problems_naming(
        &text,
        &[
            "keys.file: not used",
            "key_store.url:",
            "key_store.schema:",
            "key_store.sync:",
            "key_store.on_stale:",
            "key_store.max_staleness:",
        ],
    );
    assert!(!msg.contains("hunter2"), "{msg}");
    assert_eq!(e.problems.len(), 6, "{msg}");
}

#[test]
fn enforcement_defaults_to_on_and_a_route_or_the_check_listeners_can_override_it() {
    use crate::policy::Enforcement;
    let c = parse(MINIMAL, "c.yaml").unwrap();
    assert_eq!((c.enforce, c.would_refuse_header, c.authz_enforce), (Enforcement::Enforce, false, None));
    let text = format!(
        "{MINIMAL}enforce: false\nwould_refuse_header: true\nauthz: {{enforce: true}}\nroutes:\n  - path: /a\n    resource: a\n    enforce: true\n  - path: /b\n    resource: b\n"
    );
    let c = parse(&text, "c.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((c.enforce, c.would_refuse_header), (Enforcement::Report, true));
    assert_eq!(c.authz_enforce, Some(Enforcement::Enforce));
    let enforce: Vec<_> = c.routes.routes().iter().map(|r| r.spec.enforce).collect();
    assert_eq!(enforce, [Some(Enforcement::Enforce), None]);
    let e = parse(&format!("{MINIMAL}enforce: sometimes\n"), "c.yaml").unwrap_err().to_string();
    assert!(e.contains("line 6") && e.contains("enforce"), "{e}");
}
