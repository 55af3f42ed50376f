//! The YAML file as written: a serde mirror that rejects unknown keys, so a typo is an error
//! at start rather than a setting silently ignored. Only `config::validate` reads these.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub environment: String,
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub admin_token_file: Option<String>,
    #[serde(default)]
    pub admin_tokens: Vec<super::admin_tokens::RawAdminToken>,
    pub tls: Option<RawTls>,
    pub upstream: RawUpstream,
    pub keys: RawKeys,
    pub key_store: Option<RawKeyStore>,
    #[serde(default)]
    pub limits: RawLimits,
    pub drain_timeout: Option<String>,
    pub shutdown_delay: Option<String>,
    pub admin_probes: Option<super::operations::RawAdminProbes>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub forward_authorization: bool,
    #[serde(default)]
    pub strip_headers: Vec<String>,
    #[serde(default)]
    pub allow_method_override: bool,
    #[serde(default)]
    pub public_routes: Vec<RawPublicRoute>,
    pub routes: Option<Vec<RawRoute>>,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub rate_limits: RawRateLimits,
    #[serde(default)]
    pub anomaly: RawAnomaly,
    #[serde(default)]
    pub alerts: RawAlerts,
    pub jwt: Option<RawJwt>,
    pub upstream_context: Option<RawUpstreamContext>,
    pub authz: Option<super::authz::RawAuthz>,
    /// `false`: report-only (shadow) mode for every route without its own `enforce`.
    pub enforce: Option<bool>,
    /// Every forwarded would-be refusal carries `X-Keygate-Would-Refuse` (clinic routes always do).
    #[serde(default)]
    pub would_refuse_header: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: Option<String>,
    pub keys: Vec<RawJwtKey>,
    pub issue: Option<RawJwtIssue>,
    pub jwks_path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwtKey {
    pub kid: String,
    pub algorithm: String,
    pub private_key_file: Option<String>,
    pub public_key_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwtIssue {
    pub enabled: Option<bool>,
    pub path: Option<String>,
    pub max_ttl: Option<String>,
    pub max_body_bytes: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamContext {
    pub sign: String,
    pub key_id: Option<String>,
    pub secret_file: Option<String>,
    pub ttl: Option<String>,
    pub audience: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimits {
    pub enabled: Option<bool>,
    pub backend: Option<Backend>,
    pub headers: Option<Headers>,
    pub default_tier: Option<String>,
    pub tiers: Option<BTreeMap<String, RawTier>>,
    pub per_ip: Option<RawTier>,
    pub redis: Option<RawRedis>,
    pub metrics_key_labels: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTier {
    /// `100/s`, `6000/m`, `5/10s`.
    pub rate: String,
    pub burst: Option<u32>,
    /// Calendar quotas per UTC day and month for every key on the tier.
    pub quota: Option<crate::keys::credits::RawQuota>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    pub url: Option<String>,
    /// A file holding the URL (a mounted Secret: the URL may carry a password).
    pub url_file: Option<String>,
    pub key_prefix: Option<String>,
    pub timeout: Option<String>,
    pub on_error: Option<OnRedisError>,
    pub retry_after_failure: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnomaly {
    pub enabled: Option<bool>,
    /// At most one event per kind and subject in this long (log and webhook stay readable).
    pub event_cooldown: Option<String>,
    pub invalid_key_burst: Option<RawInvalidKeyBurst>,
    pub new_network: Option<RawNewNetwork>,
    pub rate_spike: Option<RawRateSpike>,
    pub probing: Option<RawProbing>,
    pub rotated_key_warn_before: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInvalidKeyBurst {
    pub threshold: Option<u32>,
    pub window: Option<String>,
    pub block_for: Option<String>,
    pub block_status: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNewNetwork {
    pub enabled: Option<bool>,
    pub remember: Option<String>,
    pub ipv4_prefix: Option<u8>,
    pub ipv6_prefix: Option<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateSpike {
    pub enabled: Option<bool>,
    pub factor: Option<f64>,
    pub min_rate: Option<f64>,
    pub interval: Option<String>,
    pub min_history: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbing {
    pub threshold: Option<u32>,
    pub window: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    pub webhook: Option<RawWebhook>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub url: Option<String>,
    /// A file holding the URL (a mounted Secret: webhook URLs carry their token).
    pub url_file: Option<String>,
    /// Sent as `Authorization: Bearer <token>`; or from `token_file` (a mounted Secret).
    pub token: Option<String>,
    pub token_file: Option<String>,
    pub cooldown: Option<String>,
    pub timeout: Option<String>,
    pub queue: Option<usize>,
    pub ca_file: Option<String>,
    pub instance: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: String,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub pool_idle_timeout: Option<String>,
    pub pool_max_idle: Option<usize>,
    pub ca_file: Option<String>,
    pub readiness: Option<super::operations::RawReadiness>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    /// Required for the file store; not used with `key_store.kind: postgres`.
    pub file: Option<String>,
    pub reload_interval: Option<String>,
    pub prefixes: Option<BTreeMap<String, String>>,
    pub min_body_length: Option<usize>,
    pub max_body_length: Option<usize>,
    pub checksum: Option<bool>,
}

/// Where the key table lives: the file (default) or PostgreSQL.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeyStore {
    pub kind: Option<StoreKind>,
    pub url: Option<String>,
    /// A file holding the URL (a mounted Secret: the URL may carry a password).
    pub url_file: Option<String>,
    pub schema: Option<String>,
    pub ca_file: Option<String>,
    pub auto_migrate: Option<bool>,
    pub sync: Option<Sync>,
    pub poll_interval: Option<String>,
    pub timeout: Option<String>,
    pub max_staleness: Option<String>,
    pub on_stale: Option<OnStale>,
    pub cache: Option<RawKeyCache>,
    pub usage: Option<RawUsageWriteBack>,
}

/// `key_store.cache`, for `sync: cache`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeyCache {
    pub max_entries: Option<u64>,
    pub ttl: Option<String>,
    pub negative_ttl: Option<String>,
    pub pool_size: Option<usize>,
}

/// `key_store.usage`: per-key usage written back to PostgreSQL.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUsageWriteBack {
    pub write_back: Option<bool>,
    pub flush_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub header_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_concurrent_streams: Option<u32>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub listen_backlog: Option<u32>,
    pub max_body_bytes: Option<u64>,
    pub request_id_max_length: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPublicRoute {
    pub path: String,
    pub methods: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub path: String,
    pub methods: Option<Vec<String>>,
    pub resource: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub clinic: Option<RawClinic>,
    pub on_foreign_clinic: Option<OnForeignClinic>,
    pub empty_body: Option<String>,
    /// `false`: this route's refusals are reported, not enforced (overrides the top-level one).
    pub enforce: Option<bool>,
    /// Credits (and quota units) a forwarded request spends; 1 when absent.
    pub cost: Option<u64>,
}

/// Where a route finds the clinic id: exactly one of the two.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClinic {
    pub path_param: Option<String>,
    pub query_param: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<LogFormat>,
    pub level: Option<String>,
}

// The settings that take one of a few words, as serde enums: a typo is refused while parsing,
// with the nearest allowed word, like an unknown key.

/// `log.format`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Text,
}

/// `rate_limits.backend`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Local,
    Redis,
}

/// `rate_limits.headers`.
#[derive(Debug, Clone, Copy, Deserialize)]
pub enum Headers {
    #[serde(rename = "ietf")]
    Ietf,
    #[serde(rename = "x-ratelimit")]
    XRateLimit,
    #[serde(rename = "none")]
    None,
}

/// `rate_limits.redis.on_error`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    FailOpen,
    FailClosed,
}

/// `key_store.kind`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    File,
    Postgres,
}

/// `key_store.sync`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sync {
    Replica,
    Cache,
}

/// `key_store.on_stale`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStale {
    Refuse,
    Serve,
}

/// `routes[].on_foreign_clinic`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnForeignClinic {
    Empty,
    Deny,
}
