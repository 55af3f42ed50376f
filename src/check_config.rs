//! `keygate check-config`: everything `serve` does short of binding sockets and talking to the
//! key store, Redis or the webhook (like `nginx -t`): the config parsed and validated, then the
//! files it names loaded by the same functions `serve` uses (TLS pair, upstream and webhook CAs,
//! (JWT keys and secret files are read by validation itself),
//! the key table with its scopes held to the routes), the limiter built (which parses
//! the Redis URL). Every problem is listed at once, with its line where the text shows it.

use std::path::Path;
use std::sync::Arc;

use crate::config::{self, messages, Config, ConfigError, KeyStore};

/// The one-line summary of a valid config, or every problem with it.
pub fn run(path: &Path) -> Result<String, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError { file: file.clone(), problems: vec![format!("cannot read: {e}")] })?;
    let (cfg, mut problems) = config::parse_all(&text);
    let Some(cfg) = cfg else { return Err(ConfigError { file, problems }) };
    let (more, keys) = load_files(&cfg);
    problems.extend(more.into_iter().map(|p| messages::with_line(&text, p)));
    messages::sort_by_line(&mut problems);
    if !problems.is_empty() {
        return Err(ConfigError { file, problems });
    }
    Ok(format!(
        "{file}: ok ({} routes, {} public routes, {keys})",
        cfg.routes.routes().len(),
        cfg.routes.public_routes().len(),
    ))
}

/// Loads what `serve` would load at start; returns the problems (each `field: message`) and a
/// description of the keys.
fn load_files(cfg: &Config) -> (Vec<String>, String) {
    let mut problems = Vec::new();
    // The loaders name their setting themselves (`tls: …`, `upstream.ca_file PATH: …`): said once.
    let mut fail = |field: &str, e: String| {
        let e = e.strip_prefix(field).map_or(e.as_str(), |rest| rest.trim_start_matches(':').trim_start());
        problems.push(format!("{field}: {e}"));
    };
    if let Some(files) = &cfg.tls {
        if let Err(e) = crate::tls::TlsState::load(files) {
            fail("tls", format!("{e:#}"));
        }
    }
    if let Err(e) = crate::forward::Forwarder::new(&cfg.upstream, crate::clock::Clock::system()) {
        fail(if cfg.upstream.ca_file.is_some() { "upstream.ca_file" } else { "upstream" }, format!("{e:#}"));
    }
    if let Some(w) = &cfg.webhook {
        if let Err(e) = crate::forward::connector(w.ca_file.as_deref(), w.timeout, "alerts.webhook.ca_file") {
            fail("alerts.webhook.ca_file", format!("{e:#}"));
        }
    }
    // Outside a runtime the limiter does not connect: this parses the Redis URL, no more.
    let metrics = Arc::new(crate::metrics::Metrics::with_key_label_cap(cfg.rate_limits.metrics_key_labels));
    if let Err(e) = crate::proxy::limit::Limiter::new(&cfg.rate_limits, metrics, &crate::clock::Clock::system()) {
        fail("rate_limits.redis.url", e);
    }
    let keys = match &cfg.key_store {
        KeyStore::File(path) => match crate::store::table_file::load(path, &cfg.scope_catalogue()) {
            Ok(t) => format!("key table {} with {} keys", path.display(), t.len()),
            Err(e) => {
                // Lines here are the table's, not the config's: no config line is added.
                problems.extend(e.problems.iter().map(|p| format!("key table {}: {p}", path.display())));
                format!("key table {}", path.display())
            }
        },
        KeyStore::Postgres(_) => format!("key store {} (not contacted)", cfg.keys_source()),
    };
    (problems, keys)
}
