//! The settings a rollout and a crowded listener depend on: the upstream's readiness check
//! (folded into `/readyz`), the app's own probes passed through the admin listener, the
//! shutdown delay before the drain, the listen backlog and the per-address connection cap.

use std::collections::BTreeMap;
use std::time::Duration;

use http::uri::PathAndQuery;
use ipnet::IpNet;
use serde::Deserialize;

use super::Check;

/// `upstream.readiness` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReadiness {
    pub path: Option<String>,
    pub tcp: Option<bool>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
}

/// `admin_probes` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdminProbes {
    pub timeout: Option<String>,
    #[serde(default)]
    pub forward: BTreeMap<String, String>,
}

/// How keygate decides that the upstream can take requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadinessCheck {
    /// `GET path` on a fresh connection answers 2xx or 3xx.
    Http { path: PathAndQuery },
    /// A connection (TCP, and TLS for an https upstream) opens.
    Connect,
}

#[derive(Debug, Clone)]
pub struct Readiness {
    pub check: ReadinessCheck,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Admin-listener paths answered by the upstream's own paths (the kubelet cannot reach an app
/// that listens on loopback only). Empty: none.
#[derive(Debug, Clone, Default)]
pub struct AdminProbes {
    pub timeout: Duration,
    pub forward: Vec<(String, PathAndQuery)>,
}

impl AdminProbes {
    /// The upstream path that answers `path`, if it is one of the forwarded ones.
    pub fn target(&self, path: &str) -> Option<&PathAndQuery> {
        self.forward.iter().find(|(from, _)| from == path).map(|(_, to)| to)
    }
}

/// How many connections one client address may hold open at once.
#[derive(Debug, Clone)]
pub struct PerAddressCap {
    /// 0: no cap.
    pub max: usize,
    /// Peers not held to it: `trusted_proxies` (a front proxy carries many clients).
    pub exempt: Vec<IpNet>,
}

impl PerAddressCap {
    /// The cap for `ip`, or `None` when it has none.
    pub fn for_peer(&self, ip: std::net::IpAddr) -> Option<usize> {
        (self.max > 0 && !self.exempt.iter().any(|n| n.contains(&ip))).then_some(self.max)
    }
}

/// Paths the admin listener answers itself: a probe may not shadow them.
const ADMIN_OWN: [&str; 3] = ["/metrics", "/healthz", "/readyz"];

pub(super) fn readiness(c: &mut Check, r: Option<&RawReadiness>) -> Option<Readiness> {
    let r = r?;
    let check = match (&r.path, r.tcp) {
        (Some(p), None | Some(false)) => {
            let field = "upstream.readiness.path";
            let parsed = p.parse::<PathAndQuery>().map_err(|e| format!("{p:?}: {e}"));
            match c.val(field, parsed) {
                Some(path) if path.as_str().starts_with('/') => ReadinessCheck::Http { path },
                Some(_) => {
                    c.0.push(format!("{field}: {p:?} must start with /"));
                    ReadinessCheck::Connect
                }
                None => ReadinessCheck::Connect,
            }
        }
        (None, Some(true)) => ReadinessCheck::Connect,
        (Some(_), Some(true)) => {
            c.0.push("upstream.readiness: set path (an HTTP check) or tcp: true (a connect check), not both".into());
            ReadinessCheck::Connect
        }
        (None, _) => {
            c.0.push(
                "upstream.readiness: set path (e.g. /healthz, an HTTP check) or tcp: true (a connect check)".into(),
            );
            ReadinessCheck::Connect
        }
    };
    let interval = c.duration("upstream.readiness.interval", &r.interval, Duration::from_secs(2));
    let timeout = c.duration("upstream.readiness.timeout", &r.timeout, Duration::from_secs(1));
    for (field, d) in [("interval", interval), ("timeout", timeout)] {
        if d.is_zero() {
            c.0.push(format!("upstream.readiness.{field}: must be more than 0"));
        }
    }
    Some(Readiness { check, interval, timeout })
}

pub(super) fn admin_probes(c: &mut Check, raw: Option<&RawAdminProbes>) -> AdminProbes {
    let Some(raw) = raw else { return AdminProbes { timeout: Duration::from_secs(2), forward: Vec::new() } };
    let timeout = c.duration("admin_probes.timeout", &raw.timeout, Duration::from_secs(2));
    let mut forward = Vec::new();
    for (from, to) in &raw.forward {
        let field = format!("admin_probes.forward.{from}");
        if !from.starts_with('/') || from.contains('?') {
            c.0.push(format!("{field}: {from:?} must be a path starting with / (no query)"));
            continue;
        }
        if ADMIN_OWN.contains(&from.as_str()) || from.starts_with("/admin/") {
            c.0.push(format!("{field}: {from} is keygate's own admin path; pick another (e.g. /app{from})"));
            continue;
        }
        match to.parse::<PathAndQuery>() {
            Ok(target) if to.starts_with('/') => forward.push((from.clone(), target)),
            _ => c.0.push(format!("{field}: {to:?} must be the upstream's path, starting with /")),
        }
    }
    AdminProbes { timeout, forward }
}

pub(super) fn shutdown_delay(c: &mut Check, raw: &Option<String>, drain_timeout: Duration) -> Duration {
    let delay = c.duration("shutdown_delay", raw, Duration::ZERO);
    if delay > Duration::from_secs(300) {
        c.0.push("shutdown_delay: at most 5m (the orchestrator kills a pod that takes longer)".into());
    }
    if delay > Duration::ZERO && drain_timeout.is_zero() {
        c.0.push("drain_timeout: must be more than 0 with a shutdown_delay".into());
    }
    delay
}

/// The listen backlog: the kernel caps it at `net.core.somaxconn` (4096 on current Linux).
pub(super) fn listen_backlog(c: &mut Check, raw: Option<u32>) -> u32 {
    let backlog = raw.unwrap_or(1024);
    if !(1..=65535).contains(&backlog) {
        c.0.push("limits.listen_backlog: must be between 1 and 65535".into());
        return 1024;
    }
    backlog
}

pub(super) fn per_address(
    c: &mut Check,
    raw: Option<usize>,
    max_connections: usize,
    exempt: &[IpNet],
) -> PerAddressCap {
    let max = raw.unwrap_or(512.min(max_connections));
    if max > max_connections {
        c.0.push(format!(
            "limits.max_connections_per_ip: {max} is more than max_connections ({max_connections}); 0 turns the cap off"
        ));
    }
    PerAddressCap { max, exempt: exempt.to_vec() }
}

/// `log:`: the format and the filter, checked as the logger will read it.
pub(super) fn log(c: &mut Check, l: &super::raw::RawLog) -> super::Log {
    let log = super::Log {
        format: match l.format {
            None | Some(super::raw::LogFormat::Json) => super::LogFormat::Json,
            Some(super::raw::LogFormat::Text) => super::LogFormat::Text,
        },
        level: l.level.clone().unwrap_or_else(|| "info".into()),
    };
    if tracing_subscriber::EnvFilter::try_new(&log.level).is_err() {
        c.0.push(format!("log.level: {:?} is not a valid filter (e.g. info, debug, keygate=debug)", log.level));
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check() -> Check {
        Check(Vec::new())
    }

    fn raw(path: Option<&str>, tcp: Option<bool>) -> RawReadiness {
        RawReadiness { path: path.map(str::to_owned), tcp, interval: None, timeout: None }
    }

    #[test]
    fn a_readiness_check_is_a_path_or_a_connect_never_both() {
        let mut c = check();
        let r = readiness(&mut c, Some(&raw(Some("/healthz"), None))).unwrap();
        assert_eq!(r.check, ReadinessCheck::Http { path: PathAndQuery::from_static("/healthz") });
        assert_eq!((r.interval, r.timeout), (Duration::from_secs(2), Duration::from_secs(1)));
        assert_eq!(readiness(&mut c, Some(&raw(None, Some(true)))).unwrap().check, ReadinessCheck::Connect);
        assert!(c.0.is_empty(), "{:?}", c.0);
        readiness(&mut c, Some(&raw(Some("/h"), Some(true))));
        readiness(&mut c, Some(&raw(None, None)));
        readiness(&mut c, Some(&raw(Some("healthz"), None)));
        assert_eq!(c.0.len(), 3, "{:?}", c.0);
        assert!(c.0[2].starts_with("upstream.readiness.path:"), "{:?}", c.0);
    }

    #[test]
    fn a_probe_may_not_shadow_keygates_own_admin_paths() {
        let mut c = check();
        let forward = [("/app/healthz", "/healthz"), ("/readyz", "/ready"), ("/admin/x", "/x"), ("/ok", "nope")]
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
        let p = admin_probes(&mut c, Some(&RawAdminProbes { timeout: None, forward }));
        assert_eq!(p.forward.len(), 1);
        assert_eq!(p.target("/app/healthz").map(|t| t.as_str()), Some("/healthz"));
        assert_eq!(p.target("/healthz"), None);
        assert_eq!(c.0.len(), 3, "{:?}", c.0);
    }

    #[test]
    fn trusted_proxies_are_exempt_from_the_per_address_cap() {
        let mut c = check();
        let cap = per_address(&mut c, None, 4096, &["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(cap.for_peer("192.0.2.1".parse().unwrap()), Some(512));
        assert_eq!(cap.for_peer("10.1.2.3".parse().unwrap()), None);
        assert_eq!(per_address(&mut c, Some(0), 10, &[]).for_peer("192.0.2.1".parse().unwrap()), None);
        assert_eq!(per_address(&mut c, None, 10, &[]).max, 10, "never above max_connections by default");
        per_address(&mut c, Some(20), 10, &[]);
        assert_eq!(c.0.len(), 1, "{:?}", c.0);
    }
}
