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
    pub tls: Option<RawTls>,
    pub upstream: RawUpstream,
    pub keys: RawKeys,
    #[serde(default)]
    pub limits: RawLimits,
    pub drain_timeout: Option<String>,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    pub file: String,
    pub reload_interval: Option<String>,
    pub prefixes: Option<BTreeMap<String, String>>,
    pub min_body_length: Option<usize>,
    pub max_body_length: Option<usize>,
    pub checksum: Option<bool>,
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
    pub on_foreign_clinic: Option<String>,
    pub empty_body: Option<String>,
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
    pub format: Option<String>,
    pub level: Option<String>,
}
