//! What a config reload applies and what waits for a restart, in one list. The reloader keeps
//! the running value of every restart-only setting and names each one a new file changed; the
//! README's table says the same (a test keeps the two in step).

use std::path::PathBuf;
use std::sync::Arc;

use serde_yaml::Value;

use super::Config;

/// The file a config was loaded from and its text as read, so a reload can tell what changed.
/// Its Debug shows neither the text nor anything in it (the file may hold inline secrets).
#[derive(Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: Arc<str>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("path", &self.path)
            .field("text", &format_args!("<{} bytes>", self.text.len()))
            .finish()
    }
}

/// A setting read once at start: by the listeners, the key store, the upstream client, the
/// logger, the JWT issuer, the check listeners.
pub struct RestartOnly {
    /// Its path in the YAML, as the warning and the README name it.
    pub path: &'static str,
    /// Puts the running value back into a freshly loaded config.
    keep: fn(&mut Config, &Config),
}

/// Every setting a reload does not apply. A setting not here is in `RELOADABLE`.
pub const RESTART_ONLY: &[RestartOnly] = &[
    RestartOnly { path: "environment", keep: |new, run| new.environment = run.environment },
    RestartOnly { path: "listen", keep: |new, run| new.listen = run.listen },
    RestartOnly { path: "admin_listen", keep: |new, run| new.admin_listen = run.admin_listen },
    RestartOnly { path: "admin_token_file", keep: |new, run| new.admin_token = run.admin_token.clone() },
    RestartOnly { path: "tls", keep: |new, run| new.tls = run.tls.clone() },
    RestartOnly { path: "upstream", keep: |new, run| new.upstream = run.upstream.clone() },
    // `keys.file` names the file store, so `keys` keeps the store too.
    RestartOnly {
        path: "keys",
        keep: |new, run| {
            new.keys = run.keys.clone();
            new.key_store = run.key_store.clone();
        },
    },
    RestartOnly { path: "key_store", keep: |new, run| new.key_store = run.key_store.clone() },
    // The parser's head limits are set per listener at start (at twice these, so that the
    // refusal carries the standard body); a raised limit could not be honoured until then.
    RestartOnly {
        path: "limits.max_header_bytes",
        keep: |new, run| new.limits.max_header_bytes = run.limits.max_header_bytes,
    },
    RestartOnly { path: "limits.max_headers", keep: |new, run| new.limits.max_headers = run.limits.max_headers },
    RestartOnly {
        path: "limits.header_read_timeout",
        keep: |new, run| new.limits.header_read_timeout = run.limits.header_read_timeout,
    },
    RestartOnly { path: "limits.idle_timeout", keep: |new, run| new.limits.idle_timeout = run.limits.idle_timeout },
    RestartOnly {
        path: "limits.max_concurrent_streams",
        keep: |new, run| new.limits.max_concurrent_streams = run.limits.max_concurrent_streams,
    },
    RestartOnly {
        path: "limits.max_connections",
        keep: |new, run| new.limits.max_connections = run.limits.max_connections,
    },
    // The listeners' socket options and the per-address cap are set when they are bound.
    RestartOnly {
        path: "limits.listen_backlog",
        keep: |new, run| new.limits.listen_backlog = run.limits.listen_backlog,
    },
    RestartOnly {
        path: "limits.max_connections_per_ip",
        keep: |new, run| new.limits.per_address = run.limits.per_address.clone(),
    },
    RestartOnly { path: "drain_timeout", keep: |new, run| new.drain_timeout = run.drain_timeout },
    RestartOnly { path: "shutdown_delay", keep: |new, run| new.shutdown_delay = run.shutdown_delay },
    // The admin listener's routes are built at start.
    RestartOnly { path: "admin_probes", keep: |new, run| new.admin_probes = run.admin_probes.clone() },
    RestartOnly { path: "log", keep: |new, run| new.log = run.log.clone() },
    RestartOnly {
        path: "rate_limits.backend",
        keep: |new, run| new.rate_limits.backend = run.rate_limits.backend.clone(),
    },
    RestartOnly {
        path: "rate_limits.redis",
        keep: |new, run| new.rate_limits.backend = run.rate_limits.backend.clone(),
    },
    RestartOnly {
        path: "rate_limits.metrics_key_labels",
        keep: |new, run| new.rate_limits.metrics_key_labels = run.rate_limits.metrics_key_labels,
    },
    RestartOnly { path: "jwt", keep: |new, run| new.jwt = run.jwt.clone() },
    // Signing may use the JWT keys, which are restart-only: the two move together.
    RestartOnly { path: "upstream_context", keep: |new, run| new.upstream_context = run.upstream_context.clone() },
    // The check listeners and their trust rules are built at start; only `authz.enforce` (read
    // per request, and kept outside `Authz`) applies on reload.
    RestartOnly { path: "authz.listen", keep: |new, run| new.authz = run.authz.clone() },
    RestartOnly { path: "authz.grpc_listen", keep: |new, run| new.authz = run.authz.clone() },
    RestartOnly { path: "authz.shared_secret_file", keep: |new, run| new.authz = run.authz.clone() },
    RestartOnly { path: "authz.shared_secret_header", keep: |new, run| new.authz = run.authz.clone() },
    RestartOnly { path: "authz.tls", keep: |new, run| new.authz = run.authz.clone() },
    RestartOnly { path: "authz.client_ip", keep: |new, run| new.authz = run.authz.clone() },
];

/// Every setting a reload applies: each request reads them from the snapshot it started with.
pub const RELOADABLE: &[&str] = &[
    "admin_tokens",
    "trusted_proxies",
    "forward_authorization",
    "strip_headers",
    "allow_method_override",
    "public_routes",
    "routes",
    "limits.max_body_bytes",
    "limits.request_id_max_length",
    "rate_limits.enabled",
    "rate_limits.headers",
    "rate_limits.default_tier",
    "rate_limits.tiers",
    "rate_limits.per_ip",
    "anomaly",
    "alerts",
    "enforce",
    "would_refuse_header",
    "authz.enforce",
];

/// `new` with every restart-only setting set back to its running value: what a reload swaps in.
pub fn keep_running(mut new: Config, running: &Config) -> Config {
    for s in RESTART_ONLY {
        (s.keep)(&mut new, running);
    }
    new
}

/// The restart-only settings whose text differs between the two files, each named once.
pub fn needs_restart(running: &str, new: &str) -> Vec<&'static str> {
    let mut out = changed(RESTART_ONLY.iter().map(|s| s.path), running, new);
    out.dedup();
    out
}

/// The reloadable settings whose text differs between the two files (for the reload's log line).
pub fn applied(running: &str, new: &str) -> Vec<&'static str> {
    changed(RELOADABLE.iter().copied(), running, new)
}

/// The paths at which the two YAML texts hold different values (a setting left out and one
/// written out differ even when the written value is the default: the file was touched there).
fn changed<'p>(paths: impl Iterator<Item = &'p str>, a: &str, b: &str) -> Vec<&'p str> {
    let (a, b) = (tree(a), tree(b));
    paths.filter(|p| at(&a, p) != at(&b, p)).collect()
}

fn tree(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap_or(Value::Null)
}

fn at<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(v, |v, key| v.get(key)).filter(|v| !v.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str =
        "environment: live\nlisten: 127.0.0.1:8080\nupstream:\n  url: http://127.0.0.1:3000\nkeys:\n  file: /k.yaml\n";

    fn cfg(text: &str) -> Config {
        crate::config::parse(text, "t.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_changed_listener_is_named_and_kept_while_routes_apply() {
        let new = format!("{}public_routes:\n  - path: /health\n", BASE.replace("127.0.0.1:8080", "127.0.0.1:8081"));
        assert_eq!(needs_restart(BASE, &new), ["listen"]);
        assert_eq!(applied(BASE, &new), ["public_routes"]);
        let kept = keep_running(cfg(&new), &cfg(BASE));
        assert_eq!(kept.listen.port(), 8080, "the running listener stays");
        assert!(kept.routes.public_route(&http::Method::GET, "/health").is_some(), "the new route applies");
    }

    #[test]
    fn a_nested_restart_only_setting_is_named_by_its_path() {
        let new = format!("{BASE}limits:\n  max_connections: 10\n  max_body_bytes: 1024\n");
        assert_eq!(needs_restart(BASE, &new), ["limits.max_connections"]);
        assert_eq!(applied(BASE, &new), ["limits.max_body_bytes"]);
        let kept = keep_running(cfg(&new), &cfg(BASE));
        assert_eq!((kept.limits.max_connections, kept.limits.max_body_bytes), (4096, 1024));
    }

    #[test]
    fn the_same_settings_reordered_or_reformatted_change_nothing() {
        let reordered = "keys: {file: /k.yaml}\nupstream: {url: \"http://127.0.0.1:3000\"}\nlisten: 127.0.0.1:8080\nenvironment: live\n";
        assert!(needs_restart(BASE, reordered).is_empty());
        assert!(applied(BASE, reordered).is_empty());
    }

    #[test]
    fn the_redis_url_and_backend_are_one_setting_each() {
        let redis = format!("{BASE}rate_limits:\n  backend: redis\n  redis:\n    url: redis://127.0.0.1:6379\n");
        assert_eq!(needs_restart(BASE, &redis), ["rate_limits.backend", "rate_limits.redis"]);
        let kept = keep_running(cfg(&redis), &cfg(BASE));
        assert!(matches!(kept.rate_limits.backend, crate::config::LimitBackend::Local));
    }

    #[test]
    fn a_source_never_shows_its_text() {
        let s = Source { path: "c.yaml".into(), text: "redis: {url: redis://:hunter2@r}".into() };
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2") && shown.contains("c.yaml"), "{shown}");
    }

    /// The names serde allows in a struct, read from its unknown-field error.
    fn fields<T: serde::de::DeserializeOwned>() -> Vec<String> {
        let e = serde_yaml::from_str::<T>("zz_not_a_field: 1").err().expect("an unknown field is refused").to_string();
        let list = e.split_once("expected ").expect("the error lists the allowed names").1;
        list.split('`').skip(1).step_by(2).map(str::to_string).collect()
    }

    /// Every setting of the file is in exactly one list, so one added later must be classified.
    #[test]
    fn every_setting_is_either_reloadable_or_restart_only() {
        use crate::config::raw::{RawConfig, RawLimits, RawRateLimits};
        let split = [
            ("limits", fields::<RawLimits>()),
            ("rate_limits", fields::<RawRateLimits>()),
            ("authz", fields::<crate::config::authz::RawAuthz>()),
        ];
        let mut paths = Vec::new();
        for top in fields::<RawConfig>() {
            match split.iter().find(|(name, _)| *name == top) {
                Some((name, subs)) => paths.extend(subs.iter().map(|s| format!("{name}.{s}"))),
                None => paths.push(top),
            }
        }
        let restart: Vec<&str> = RESTART_ONLY.iter().map(|s| s.path).collect();
        for p in &paths {
            let n = restart.iter().chain(RELOADABLE).filter(|l| **l == p).count();
            assert_eq!(n, 1, "{p} is in {n} of the lists (restart-only, reloadable)");
        }
        assert_eq!(restart.len() + RELOADABLE.len(), paths.len(), "a listed path is not a setting: {paths:?}");
    }

    #[test]
    fn the_readme_table_names_every_setting() {
        let readme = include_str!("../../README.md");
        let section = readme.split("### Reloading configuration").nth(1).expect("README has the section");
        let table: Vec<&str> =
            section.lines().skip_while(|l| !l.starts_with('|')).take_while(|l| l.starts_with('|')).collect();
        for (path, on_reload) in
            RESTART_ONLY.iter().map(|s| (s.path, "needs a restart")).chain(RELOADABLE.iter().map(|p| (*p, "applied")))
        {
            let row =
                table.iter().find(|r| r.contains(&format!("`{path}`"))).unwrap_or_else(|| panic!("no row for {path}"));
            assert!(row.contains(on_reload), "{path}: the README's row does not say {on_reload:?}: {row}");
        }
    }
}
