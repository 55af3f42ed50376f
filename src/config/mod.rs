//! Configuration in two stages: `raw` mirrors the YAML and rejects unknown keys; `validate`
//! turns it into typed values and reports every problem at once, each naming its field.
//! `keygate check-config` runs exactly this.

mod admin_tokens;
pub mod alert;
mod authz;
mod check;
mod defaults;
mod key_store;
mod lenient;
pub mod locate;
pub mod messages;
pub mod operations;
mod protection;
pub mod raw;
pub mod reloadable;
mod routes;
mod secrets;
mod tokens;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;

use crate::keys::{Environment, KeyFormat};
use crate::policy::{Required, RouteTable};
use crate::sanitize::HeaderPolicy;
use check::Check;
use raw::RawConfig;

pub use admin_tokens::{token_hash, AdminCredential, AdminScopes, AdminToken};
pub use authz::{Authz, CheckSecret, ClientIpRules, ClientIpSource};
pub use key_store::{valid_schema, CacheSettings, DbUrl, KeyStore, OnStale, PgStore, SyncMode};
pub use operations::{AdminProbes, PerAddressCap, Readiness, ReadinessCheck};
pub use protection::{LimitBackend, LimitHeaders, OnRedisError, RateLimits, RedisBackend};
pub use reloadable::Source;
pub use tokens::ContextSigning;

#[derive(Debug, Clone)]
pub struct Config {
    pub environment: Environment,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub admin_token: Option<AdminToken>,
    /// Scoped admin API tokens (`admin_tokens:`), reloadable.
    pub admin_tokens: Vec<AdminCredential>,
    pub tls: Option<TlsFiles>,
    pub upstream: Upstream,
    pub keys: Keys,
    pub key_store: KeyStore,
    pub limits: Limits,
    pub drain_timeout: Duration,
    /// After SIGTERM, how long to keep serving while `/readyz` says not ready, before the drain.
    pub shutdown_delay: Duration,
    pub admin_probes: AdminProbes,
    pub trusted_proxies: Vec<IpNet>,
    pub forward_authorization: bool,
    pub headers: HeaderPolicy,
    pub routes: RouteTable,
    pub log: Log,
    pub rate_limits: RateLimits,
    pub anomaly: crate::anomaly::Settings,
    pub webhook: Option<alert::AlertSettings>,
    pub jwt: Option<crate::jwt::Settings>,
    pub upstream_context: Option<ContextSigning>,
    /// keygate as a front proxy's external authorizer (`authz:`), when configured.
    pub authz: Option<Authz>,
    /// Policy refusals enforced or only reported, wherever a route does not say (`enforce:`).
    pub enforce: crate::policy::Enforcement,
    /// Tell the upstream of every forwarded would-be refusal, not only on clinic routes.
    pub would_refuse_header: bool,
    /// The check listeners' own `authz.enforce`, when set (reloadable, unlike the rest of `authz`).
    pub authz_enforce: Option<crate::policy::Enforcement>,
    /// The file and text this config was loaded from (`load`), for reloads; `None` from `parse`.
    pub source: Option<Source>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    /// Scheme and authority only; the request's own path is appended.
    pub uri: Uri,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
    pub ca_file: Option<PathBuf>,
    pub readiness: Option<Readiness>,
}

#[derive(Debug, Clone)]
pub struct Keys {
    pub reload_interval: Duration,
    pub format: KeyFormat,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_concurrent_streams: u32,
    pub max_connections: usize,
    pub per_address: PerAddressCap,
    pub listen_backlog: u32,
    pub max_body_bytes: u64,
    pub request_id_max_length: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone)]
pub struct Log {
    pub format: LogFormat,
    pub level: String,
}

/// Why a config was refused: the file and every problem in it.
#[derive(Debug)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<String>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: invalid configuration", self.file)?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// The scopes a key may hold: the product's, and every scope a configured route requires.
    pub fn scope_catalogue(&self) -> crate::keys::Catalogue {
        let route_scopes = self.routes.routes().iter().flat_map(|r| match &r.spec.required {
            Required::Resource { read, write } => vec![read.clone(), write.clone()],
            Required::Scopes(list) => list.clone(),
        });
        crate::keys::Catalogue::new(route_scopes)
    }

    /// Where the keys come from, for logs and `check-config` (never a URL: it may hold a password).
    pub fn keys_source(&self) -> String {
        match &self.key_store {
            KeyStore::File(p) => p.display().to_string(),
            KeyStore::Postgres(pg) => match pg.sync {
                SyncMode::Replica => format!("postgres schema {} (sync: replica)", pg.schema),
                SyncMode::Cache(c) => format!("postgres schema {} (sync: cache, {} entries)", pg.schema, c.max_entries),
            },
        }
    }
}

pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError { file: path.display().to_string(), problems: vec![format!("cannot read: {e}")] })?;
    let mut cfg = parse(&text, &path.display().to_string())?;
    cfg.source = Some(Source { path: path.to_path_buf(), text: text.into() });
    Ok(cfg)
}

/// Parses and validates, reporting every problem it can find in one go: serde stops at the
/// first, so a field it refuses is cut out of the text and the rest parsed again (bounded);
/// what survives is validated too. Each problem carries its line where the text shows it.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    match parse_all(text) {
        (Some(cfg), problems) if problems.is_empty() => Ok(cfg),
        (_, problems) => Err(ConfigError { file: file.to_string(), problems }),
    }
}

/// The config as far as it could be built (problem fields at their defaults) and every
/// problem found, each with its line where the text shows it. For `check-config`, which goes on
/// to load the files a broken config names too.
pub fn parse_all(text: &str) -> (Option<Config>, Vec<String>) {
    let (raw, mut problems) = lenient::parse_lenient(text);
    let cfg = raw.map(|raw| {
        let (cfg, more) = build(raw);
        problems.extend(more.into_iter().map(|p| messages::with_line(text, p)));
        cfg
    });
    messages::sort_by_line(&mut problems);
    (cfg, problems)
}

/// Every field validated; a field with a problem holds its default, so the rest can still be
/// checked.
fn build(raw: RawConfig) -> (Config, Vec<String>) {
    let mut c = Check(Vec::new());
    let environment = c.val("environment", raw.environment.parse::<Environment>()).unwrap_or(Environment::Live);
    let listen = c.addr("listen", &raw.listen, "0.0.0.0:8080");
    let admin_listen = c.addr("admin_listen", &raw.admin_listen, "127.0.0.1:9090");
    if listen == admin_listen && listen.port() != 0 {
        c.0.push("admin_listen: must differ from listen".into());
    }
    let admin_token = admin_tokens::admin_token_file(&mut c, raw.admin_token_file.as_deref());
    let admin_tokens = admin_tokens::admin_tokens(&mut c, &raw.admin_tokens);
    let tls = raw.tls.map(|t| TlsFiles { cert_file: t.cert_file.into(), key_file: t.key_file.into() });

    let upstream = upstream(&mut c, &raw.upstream);
    let keys = keys(&mut c, &raw.keys);
    let key_store = key_store::key_store(&mut c, raw.key_store.as_ref(), raw.keys.file.as_ref());

    let drain_timeout = c.duration("drain_timeout", &raw.drain_timeout, Duration::from_secs(20));
    let shutdown_delay = operations::shutdown_delay(&mut c, &raw.shutdown_delay, drain_timeout);
    let admin_probes = operations::admin_probes(&mut c, raw.admin_probes.as_ref());

    let trusted_proxies = trusted_proxies(&mut c, &raw.trusted_proxies);
    let limits = limits(&mut c, &raw.limits, &trusted_proxies);

    for (i, h) in raw.strip_headers.iter().enumerate() {
        if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            c.0.push(format!("strip_headers[{i}]: {h:?} is not a header name"));
        }
    }
    let headers = HeaderPolicy::new(&raw.strip_headers, raw.allow_method_override);

    let routes = routes::table(&mut c, &raw.routes, &raw.public_routes);

    let log = operations::log(&mut c, &raw.log);

    let rate_limits = protection::rate_limits(&mut c, &raw.rate_limits);
    let anomaly = protection::anomaly(&mut c, &raw.anomaly);
    let webhook = protection::webhook(&mut c, &raw.alerts);
    let jwt = tokens::jwt(&mut c, &raw.jwt);
    let upstream_context = tokens::upstream_context(&mut c, &raw.upstream_context, jwt.as_ref());
    let authz = authz::authz(&mut c, raw.authz.as_ref(), &[("listen", listen), ("admin_listen", admin_listen)]);

    let cfg = Config {
        environment,
        listen,
        admin_listen,
        admin_token,
        admin_tokens,
        tls,
        upstream,
        keys,
        key_store,
        limits,
        drain_timeout,
        shutdown_delay,
        admin_probes,
        trusted_proxies,
        forward_authorization: raw.forward_authorization,
        headers,
        routes,
        log,
        rate_limits,
        anomaly,
        webhook,
        jwt,
        upstream_context,
        authz,
        enforce: crate::policy::Enforcement::from_flag(raw.enforce.unwrap_or(true)),
        would_refuse_header: raw.would_refuse_header,
        authz_enforce: raw.authz.as_ref().and_then(|a| a.enforce).map(crate::policy::Enforcement::from_flag),
        source: None,
    };
    (cfg, c.0)
}

fn trusted_proxies(c: &mut Check, raw: &[String]) -> Vec<IpNet> {
    let parse = |s: &String| s.parse::<IpNet>().or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from));
    let problem = |s: &String| format!("{s:?} is not an IP or CIDR");
    raw.iter()
        .enumerate()
        .filter_map(|(i, s)| c.val(&format!("trusted_proxies[{i}]"), parse(s).map_err(|_| problem(s))))
        .collect()
}

fn limits(c: &mut Check, l: &raw::RawLimits, trusted: &[IpNet]) -> Limits {
    let max_connections = l.max_connections.unwrap_or(4096);
    let limits = Limits {
        max_header_bytes: l.max_header_bytes.unwrap_or(16 * 1024),
        max_headers: l.max_headers.unwrap_or(100),
        header_read_timeout: c.duration("limits.header_read_timeout", &l.header_read_timeout, Duration::from_secs(10)),
        idle_timeout: c.duration("limits.idle_timeout", &l.idle_timeout, Duration::from_secs(60)),
        max_concurrent_streams: l.max_concurrent_streams.unwrap_or(100),
        max_connections,
        per_address: operations::per_address(c, l.max_connections_per_ip, max_connections, trusted),
        listen_backlog: operations::listen_backlog(c, l.listen_backlog),
        max_body_bytes: l.max_body_bytes.unwrap_or(10 * 1024 * 1024),
        request_id_max_length: l.request_id_max_length.unwrap_or(128),
    };
    if limits.max_header_bytes < 8192 {
        c.0.push("limits.max_header_bytes: must be at least 8192".into());
    }
    if limits.max_headers == 0 || limits.max_concurrent_streams == 0 || limits.max_connections == 0 {
        c.0.push("limits: max_headers, max_concurrent_streams and max_connections must be at least 1".into());
    }
    // The parser is allowed twice this (so the 431 carries the standard body), and the second
    // reading of each head (head_check) holds that many on the stack.
    if limits.max_headers > crate::head_check::MAX_HEADERS / 2 {
        c.0.push(format!("limits.max_headers: must be at most {}", crate::head_check::MAX_HEADERS / 2));
    }
    if !(16..=1024).contains(&limits.request_id_max_length) {
        c.0.push("limits.request_id_max_length: must be between 16 and 1024".into());
    }
    limits
}

fn upstream(c: &mut Check, u: &raw::RawUpstream) -> Upstream {
    let uri = c
        .val("upstream.url", u.url.parse::<Uri>().map_err(|e| format!("{:?}: {e}", u.url)))
        .unwrap_or_else(|| Uri::from_static("http://127.0.0.1"));
    match (uri.scheme_str(), uri.authority(), uri.path()) {
        (Some("http" | "https"), Some(_), "" | "/") if uri.query().is_none() => {}
        _ => c.0.push(format!(
            "upstream.url: {:?} must be http:// or https:// with a host and no path (e.g. http://127.0.0.1:3000)",
            u.url
        )),
    }
    Upstream {
        uri,
        connect_timeout: c.duration("upstream.connect_timeout", &u.connect_timeout, Duration::from_secs(2)),
        response_timeout: c.duration("upstream.response_timeout", &u.response_timeout, Duration::from_secs(30)),
        pool_idle_timeout: c.duration("upstream.pool_idle_timeout", &u.pool_idle_timeout, Duration::from_secs(90)),
        pool_max_idle: u.pool_max_idle.unwrap_or(64),
        ca_file: u.ca_file.as_ref().map(PathBuf::from),
        readiness: operations::readiness(c, u.readiness.as_ref()),
    }
}

fn keys(c: &mut Check, k: &raw::RawKeys) -> Keys {
    let mut prefixes = Vec::new();
    match &k.prefixes {
        None => prefixes = KeyFormat::default().prefixes,
        Some(map) => {
            for (env, prefix) in map {
                let Some(env) = c.val(&format!("keys.prefixes.{env}"), env.parse::<Environment>()) else { continue };
                if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    c.0.push(format!("keys.prefixes.{env}: {prefix:?} must be non-empty [A-Za-z0-9_]"));
                }
                prefixes.push((prefix.clone(), env));
            }
        }
    }
    let min = k.min_body_length.unwrap_or(32);
    let max = k.max_body_length.unwrap_or(64);
    if min < 16 || max < min {
        c.0.push(format!("keys: min_body_length ({min}) must be at least 16 and at most max_body_length ({max})"));
    }
    Keys {
        reload_interval: c.duration("keys.reload_interval", &k.reload_interval, Duration::from_millis(250)),
        format: KeyFormat::new(prefixes, min, max, k.checksum.unwrap_or(true)),
    }
}

#[cfg(test)]
mod tests;
