//! Test support: a real upstream that records what reached it, keygate itself started through
//! `app::start` on ephemeral loopback ports, keys written to a temp key table, and a small
//! client. Nothing here is a mock of keygate.

#![allow(dead_code)]

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keygate::app::Running;
pub use keygate::clock::Clock;
use keygate::keys::generate::generate;
use keygate::keys::KeyHash;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------- tools a fresh machine may lack ----------

/// Installs what the tests run beside keygate and a fresh machine may lack (nginx and Caddy:
/// `.ci/front-proxies.sh`; `ss`: iproute2), once per test binary, so `cargo test` alone sets a
/// machine up as `.ci/run` does. A failed install is reported by the caller's own check.
pub fn provision_tools() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let root = env!("CARGO_MANIFEST_DIR");
        let run = |cmd: &str| {
            eprintln!("test setup: {cmd}");
            let ok = std::process::Command::new("bash").arg("-c").arg(cmd).current_dir(root).status();
            if !matches!(ok, Ok(s) if s.success()) {
                eprintln!("test setup failed: {cmd}");
            }
        };
        run("bash .ci/front-proxies.sh >&2");
        run("command -v ss >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
             apt-get install -y -q --no-install-recommends iproute2; } >&2");
    });
}

// ---------- TLS ----------

/// A client TLS config that trusts only the certificates in `ca_pem`.
pub fn client_tls_trusting(ca_pem: &str) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

// ---------- logs ----------

#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_buf() -> &'static LogBuf {
    static BUF: OnceLock<LogBuf> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = LogBuf::default();
        let w = buf.clone();
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter("debug,hyper=info,h2=info,hyper_util=info,rustls=info")
            .with_writer(move || w.clone())
            .init();
        // The decision lines take keygate's direct path, as in the binary.
        let direct = buf.clone();
        keygate::auditlog::set_sink(move |line| direct.0.lock().unwrap().extend_from_slice(line));
        buf
    })
}

/// Everything every keygate in this test binary has logged so far (JSON lines).
pub fn logs() -> String {
    String::from_utf8_lossy(&log_buf().0.lock().unwrap()).into_owned()
}

/// The decision line keygate wrote for the request with this id (anomaly events share its
/// target and request id).
pub fn audit_line(request_id: &str) -> String {
    logs()
        .lines()
        .find(|l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| {
                v["target"] == "keygate::audit" && v["request_id"] == request_id && v["message"] == "decision"
            })
        })
        .unwrap_or_else(|| panic!("no audit line for request {request_id}"))
        .to_string()
}

// ---------- upstream ----------

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: String,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Which accepted connection carried it (0, 1, ... in accept order): reuse is visible.
    pub conn: usize,
}

impl Seen {
    /// All values of a header, in order (to check "exactly one copy").
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers.get_all(name).iter().map(|v| v.to_str().unwrap().to_string()).collect()
    }
    pub fn one(&self, name: &str) -> String {
        let v = self.all(name);
        assert_eq!(v.len(), 1, "expected exactly one {name}, upstream saw {v:?}");
        v[0].clone()
    }
}

#[derive(Clone, Default)]
pub struct Behaviour {
    /// Delay before answering, for timeouts and drain tests.
    pub delay: Duration,
    /// Extra response headers (e.g. hop-by-hop ones keygate must strip).
    pub headers: Vec<(&'static str, &'static str)>,
    /// Status to answer with instead of 200 (a failing webhook, say).
    pub status: Option<StatusCode>,
    /// Close every connection after its first response (no keep-alive).
    pub close: bool,
}

pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

pub const UPSTREAM_BODY: &str = r#"{"success":true,"data":[{"id":"from-upstream"}]}"#;

impl Upstream {
    pub async fn spawn() -> Upstream {
        Upstream::spawn_with(Behaviour::default()).await
    }

    pub async fn spawn_with(b: Behaviour) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let s = Arc::clone(&seen);
        tokio::spawn(async move {
            for conn in 0.. {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (s, b) = (Arc::clone(&s), b.clone());
                tokio::spawn(async move {
                    let keep_alive = !b.close;
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (s, b) = (Arc::clone(&s), b.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                            s.lock().unwrap().push(Seen {
                                method: parts.method,
                                uri: parts.uri.to_string(),
                                version: parts.version,
                                headers: parts.headers,
                                body,
                                conn,
                            });
                            tokio::time::sleep(b.delay).await;
                            let mut r = Response::new(Full::new(Bytes::from_static(UPSTREAM_BODY.as_bytes())));
                            r.headers_mut().insert("content-type", "application/json".parse().unwrap());
                            r.headers_mut().insert("x-upstream", "yes".parse().unwrap());
                            if let Some(status) = b.status {
                                *r.status_mut() = status;
                            }
                            for (k, v) in &b.headers {
                                r.headers_mut().append(*k, v.parse().unwrap());
                            }
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(keep_alive)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream { addr, seen }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Seen {
        self.requests().pop().expect("the upstream saw no request")
    }
}

/// An address nothing listens on: free now, and below the ephemeral range, so no other test's
/// listener (they bind port 0) can take it before this one is refused there.
pub async fn dead_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], keygate::demo_front::free_port().unwrap()))
}

// ---------- keys ----------

pub struct TestKey {
    pub id: String,
    pub secret: String,
    /// YAML lines after `environment`, e.g. "    clinics: [c1]\n".
    pub extra: String,
    pub environment: &'static str,
}

impl TestKey {
    pub fn live(id: &str) -> TestKey {
        TestKey { id: id.into(), secret: generate("dpl_live_"), extra: String::new(), environment: "live" }
    }
    pub fn test(id: &str) -> TestKey {
        TestKey { id: id.into(), secret: generate("dpl_test_"), extra: String::new(), environment: "test" }
    }
    pub fn with(mut self, yaml_lines: &str) -> TestKey {
        self.extra.push_str(yaml_lines);
        self
    }
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.secret)
    }
    fn yaml(&self) -> String {
        format!(
            "  - id: {}\n    hash: {}\n    label: test key\n    environment: {}\n{}",
            self.id,
            KeyHash::of(&self.secret).to_hex(),
            self.environment,
            self.extra
        )
    }
}

pub fn table_yaml(keys: &[&TestKey]) -> String {
    let mut s = String::from("keys:\n");
    for k in keys {
        s.push_str(&k.yaml());
    }
    s
}

// ---------- config reload ----------

/// `keygate_config_reloads_total{result="ok"}`: a reload that applied.
pub const RELOADED_OK: &str = "keygate_config_reloads_total{result=\"ok\"}";

/// The config keygate started with, `extra` replaced by `next`.
pub fn swap_in(kg: &Proxy, extra: &str, next: &str) -> String {
    let text = kg.config_text();
    assert!(text.ends_with(extra), "the extra settings close the config");
    format!("{}{next}", &text[..text.len() - extra.len()])
}

/// Writes `text` as the config, sends SIGHUP, and waits until `series` counts the reload. (The
/// file poll may get there first and SIGHUP then reload the same text again: a count can run
/// one ahead, so what must hold after a reload is checked on the state itself.)
pub async fn apply(kg: &Proxy, text: &str, series: &str) {
    let before = kg.metric(series).await;
    kg.write_config(text);
    kg.running().reload();
    eventually(Duration::from_secs(10), async || kg.metric(series).await > before).await;
}

// ---------- keygate ----------

pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub keys_path: PathBuf,
    /// The config keygate loaded (and reloads from).
    pub config_path: PathBuf,
    pub dir: tempfile::TempDir,
    pub running: Option<Running>,
}

/// Starts keygate in front of `upstream` with `keys`; `extra` is appended to the config YAML.
pub async fn spawn_proxy(upstream: SocketAddr, keys: &[&TestKey], extra: &str) -> Proxy {
    spawn_proxy_with(ProxyCfg { upstream_url: format!("http://{upstream}"), extra, ..ProxyCfg::default() }, keys).await
}

/// `spawn_proxy` deciding by `clock` (a `Clock::manual()` the test moves).
pub async fn spawn_proxy_at(clock: &Clock, upstream: SocketAddr, keys: &[&TestKey], extra: &str) -> Proxy {
    let c = ProxyCfg { upstream_url: format!("http://{upstream}"), extra, clock: clock.clone(), ..ProxyCfg::default() };
    spawn_proxy_with(c, keys).await
}

/// The usual start of a test: a recording upstream, one key, keygate in front with `extra`.
pub async fn proxy_for(key: TestKey, extra: &str) -> (Upstream, TestKey, Proxy) {
    let up = Upstream::spawn().await;
    let kg = spawn_proxy(up.addr, &[&key], extra).await;
    (up, key, kg)
}

/// The parts of the config a test may want to change.
pub struct ProxyCfg<'a> {
    /// The proxy listener (an ephemeral loopback port unless a test needs another family).
    pub listen: &'a str,
    pub upstream_url: String,
    /// Lines inside `upstream:` after `url:`, each indented two spaces.
    pub upstream_lines: &'a str,
    /// Lines inside `keys:` after `file:`, each indented two spaces.
    pub keys_lines: &'a str,
    /// Top-level YAML appended at the end.
    pub extra: &'a str,
    /// What keygate decides by: the system's clock, or a test's `Clock::manual()`.
    pub clock: Clock,
}

impl Default for ProxyCfg<'_> {
    fn default() -> Self {
        ProxyCfg {
            listen: "127.0.0.1:0",
            upstream_url: String::new(),
            upstream_lines: "",
            keys_lines: "  reload_interval: 100ms\n",
            extra: "",
            clock: Clock::system(),
        }
    }
}

/// A fresh temporary folder holding one file, `name` with `text`: the folder (removed when
/// dropped) and the file's path.
pub fn temp_file(name: &str, text: impl AsRef<[u8]>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

pub async fn spawn_proxy_with(c: ProxyCfg<'_>, keys: &[&TestKey]) -> Proxy {
    log_buf();
    let (dir, keys_path) = temp_file("keys.yaml", table_yaml(keys));
    let config = format!(
        "environment: live\nlisten: \"{}\"\nadmin_listen: 127.0.0.1:0\nupstream:\n  url: {}\n{}keys:\n  file: {}\n{}{}",
        c.listen,
        c.upstream_url,
        c.upstream_lines,
        keys_path.display(),
        c.keys_lines,
        c.extra
    );
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, config).unwrap();
    let cfg = keygate::config::load(&config_path).unwrap_or_else(|e| panic!("{e}"));
    let running = keygate::app::start_with_clock(cfg, c.clock).await.unwrap();
    Proxy { addr: running.proxy_addr, admin: running.admin_addr, keys_path, config_path, dir, running: Some(running) }
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// Asserts a 200 with the upstream's body.
    pub fn ok(&self) {
        assert_eq!(self.status.as_u16(), 200, "body: {}", self.text());
        assert_eq!(self.text(), UPSTREAM_BODY);
    }
    /// Asserts the standard error body and returns its message.
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        assert_eq!(self.headers["content-type"], "application/json");
        let v = self.json();
        assert_eq!(v["success"], false);
        assert_eq!(v["error"]["code"], code, "body: {v}");
        let rid = v["request_id"].as_str().expect("request_id");
        assert_eq!(self.headers["x-request-id"].to_str().unwrap(), rid);
        let ts = v["timestamp"].as_str().expect("timestamp");
        time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).expect("RFC 3339 timestamp");
        assert!(ts.ends_with('Z'), "UTC timestamp: {ts}");
        v["error"]["message"].as_str().unwrap().to_string()
    }
}

impl Proxy {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.send(Method::GET, path, headers, Bytes::new()).await
    }

    pub async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Bytes) -> Resp {
        send(Client::builder(TokioExecutor::new()).build_http(), &self.url(path), method, headers, body).await
    }

    pub async fn get_h2(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        let client = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
        send(client, &self.url(path), Method::GET, headers, Bytes::new()).await
    }

    /// GET with `key` as the bearer credential.
    pub async fn get_as(&self, key: &TestKey, path: &str) -> Resp {
        self.get(path, &[("authorization", &key.bearer())]).await
    }

    pub async fn admin_get(&self, path: &str) -> Resp {
        self.admin_get_with(path, &[]).await
    }

    pub async fn admin_get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        let client = Client::builder(TokioExecutor::new()).build_http();
        send(client, &format!("http://{}{}", self.admin, path), Method::GET, headers, Bytes::new()).await
    }

    /// One admin API call: `token` as the bearer (if any), `body` as JSON.
    pub async fn admin_call(&self, method: Method, path: &str, token: Option<&str>, body: &str) -> Resp {
        admin_call(self.admin, method, path, token, body).await
    }

    /// Sends raw bytes (for requests a well-behaved client library would not produce) and
    /// returns the raw response text.
    pub async fn raw(&self, request: &str) -> String {
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    pub fn write_keys(&self, yaml: &str) {
        replace_file(&self.keys_path, yaml);
    }

    /// The config file as keygate last saw it written.
    pub fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config_path).unwrap()
    }

    pub fn write_config(&self, yaml: &str) {
        replace_file(&self.config_path, yaml);
    }

    /// Value of a metric line (exact series text before the value), or 0.
    /// The sum of every sample of `series` (`name` or `name{label="value",...}`) whose labels
    /// include the ones given: a label the test does not name is summed over, so a new label on
    /// a family does not turn an assertion into a comparison with a series that is never there.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.admin_get("/metrics").await.text();
        let (name, wanted) = split_series(series);
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter(|(s, _)| {
                let (n, labels) = split_series(s);
                n == name && wanted.iter().all(|w| labels.contains(w))
            })
            .map(|(_, v)| v.trim().parse::<f64>().unwrap())
            .sum()
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }
}

/// `name{a="x",b="y"}` -> ("name", [`a="x"`, `b="y"`]); values may hold `,` `{` `}` and `\"`.
fn split_series(series: &str) -> (&str, Vec<&str>) {
    let Some((name, rest)) = series.split_once('{') else { return (series, Vec::new()) };
    let body = rest.strip_suffix('}').unwrap_or(rest);
    let (mut labels, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                labels.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < body.len() {
        labels.push(&body[start..]);
    }
    (name, labels)
}

pub async fn send<C>(
    client: Client<C, Full<Bytes>>,
    url: &str,
    method: Method,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Resp
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client.request(req.body(Full::new(body)).unwrap()).await.expect("request to keygate failed");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Resp { status: parts.status, headers: parts.headers, body }
}

/// One admin API call to the admin listener at `admin` (for tasks that cannot borrow a `Proxy`).
pub async fn admin_call(admin: SocketAddr, method: Method, path: &str, token: Option<&str>, body: &str) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let client = Client::builder(TokioExecutor::new()).build_http();
    send(client, &format!("http://{admin}{path}"), method, &headers, Bytes::from(body.to_string())).await
}

/// Moves a manual clock on until its wall time reads `at` (which must not be behind it).
pub fn advance_to(clock: &Clock, at: time::OffsetDateTime) {
    let by = at - clock.wall();
    clock.advance(by.try_into().unwrap_or_else(|_| panic!("{at} is {by} behind the clock")));
}

/// An RFC 3339 time as `keygate keys` prints it.
pub fn rfc3339(v: &serde_json::Value) -> time::OffsetDateTime {
    let text = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
}

/// Atomic replace, as an operator's tooling should do it.
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Polls `check` until it is true or `limit` passes; returns how long it took.
pub async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not met within {limit:?}");
}

// ---------- raw HTTP/1.1, for requests a client library would tidy up ----------

/// One request exactly as written: the lines, CRLF-separated, then the blank line.
pub fn request(lines: &[&str]) -> String {
    let mut s = lines.join("\r\n");
    s.push_str("\r\n\r\n");
    s
}

/// `GET target` with the key, from a client that normalises nothing.
pub fn raw_get(target: &str, key: &TestKey) -> String {
    keyed_request(&format!("GET {target} HTTP/1.1"), key, &["Connection: close"])
}

pub fn raw_status(raw: &str) -> u16 {
    raw.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status line in {raw:?}"))
}

pub fn raw_header<'a>(raw: &'a str, name: &str) -> Option<&'a str> {
    let head = raw.split_once("\r\n\r\n").map_or(raw, |(h, _)| h);
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

pub fn raw_json(raw: &str) -> serde_json::Value {
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {raw:?}"))
}

/// A raw response is keygate's standard JSON refusal with this status and code.
pub fn assert_raw_error(raw: &str, status_code: u16, code: &str) {
    assert_eq!(raw_status(raw), status_code, "{raw}");
    let v = raw_json(raw);
    assert_eq!(v["success"], false, "{raw}");
    assert_eq!(v["error"]["code"], code, "{raw}");
    assert_eq!(raw_header(raw, "x-request-id"), v["request_id"].as_str(), "{raw}");
}

pub fn header_names(seen: &Seen) -> Vec<String> {
    seen.headers.keys().map(|k| k.as_str().to_string()).collect()
}

// ---------- the keygate binary ----------

pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the real binary, `keygate ARGS…`, off the async threads (a proxy may run on them).
pub async fn run_keygate(args: &[&str]) -> Out {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"));
    cmd.args(args).env("KEYGATE_ACTOR", "it-tests");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Where `keygate keys` finds the keys: a table file, or a config naming a key store.
#[derive(Clone, Copy)]
pub enum KeysAt<'a> {
    Table(&'a Path),
    Config(&'a Path),
}

impl KeysAt<'_> {
    /// `keys --table PATH` or `keys --config PATH`, owned (for a task of its own).
    fn words(self) -> Vec<String> {
        let (flag, path) = match self {
            KeysAt::Table(p) => ("--table", p),
            KeysAt::Config(p) => ("--config", p),
        };
        vec!["keys".into(), flag.into(), path.to_str().unwrap().into()]
    }
}

/// `keygate keys --table PATH ARGS…` or `keygate keys --config PATH ARGS…`.
pub async fn keys_cli(at: KeysAt<'_>, args: &[&str]) -> Out {
    let words = at.words();
    let mut all: Vec<&str> = words.iter().map(String::as_str).collect();
    all.extend_from_slice(args);
    run_keygate(&all).await
}

/// `keys … create --json ARGS…` → (id, secret).
pub async fn create_key(at: KeysAt<'_>, args: &[&str]) -> (String, String) {
    let mut all = vec!["create", "--json"];
    all.extend_from_slice(args);
    let out = keys_cli(at, &all).await;
    assert!(out.ok, "create failed: {}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    (v["id"].as_str().unwrap().to_string(), v["key"].as_str().unwrap().to_string())
}

/// `seeds` keys created, then for each a revoke racing a create, every command a process of its
/// own: asserts that every change landed (no write lost to another).
pub async fn racing_clis_lose_no_change(at: KeysAt<'_>, seeds: usize) {
    let mut ids = Vec::new();
    for i in 0..seeds {
        ids.push(create_key(at, &["--label", &format!("seed{i}")]).await.0);
    }
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let revoke = [at.words(), vec!["revoke".into(), id.clone()]].concat();
        let create = [at.words(), vec!["create".into(), "--label".into(), format!("new{i}")]].concat();
        for words in [revoke, create] {
            let run = async move { run_keygate(&words.iter().map(String::as_str).collect::<Vec<_>>()).await };
            tasks.push(tokio::spawn(run));
        }
    }
    for t in tasks {
        let out = t.await.unwrap();
        assert!(out.ok, "{}", out.stderr);
    }
    let list: serde_json::Value = serde_json::from_str(&keys_cli(at, &["list", "--json"]).await.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2 * seeds, "every create landed");
    for id in &ids {
        let k = list.iter().find(|k| k["id"] == id.as_str()).unwrap();
        assert_eq!(k["state"], "revoked", "every revoke landed: {k}");
    }
}

/// The status of `GET /api/v1/clinics` with `secret` as the bearer credential.
pub async fn clinics_status(kg: &Proxy, secret: &str) -> u16 {
    kg.get("/api/v1/clinics", &[("authorization", &format!("Bearer {secret}"))]).await.status.as_u16()
}

/// `proxy_for` deciding by `clock` (a `Clock::manual()` the test moves).
pub async fn proxy_for_at(clock: &Clock, key: TestKey, extra: &str) -> (Upstream, TestKey, Proxy) {
    let up = Upstream::spawn().await;
    let kg = spawn_proxy_at(clock, up.addr, &[&key], extra).await;
    (up, key, kg)
}

/// A rotated-away key (`old`) works at each of `kgs` to the last nanosecond of its grace period
/// (ending at `grace_end`, by `clock`), then is refused there as expired; `new` keeps working.
pub async fn grace_ends_to_the_nanosecond(
    clock: &Clock,
    grace_end: time::OffsetDateTime,
    kgs: &[&Proxy],
    old: &str,
    new: &str,
) {
    advance_to(clock, grace_end - Duration::from_nanos(1));
    for kg in kgs {
        assert_eq!(clinics_status(kg, old).await, 200, "the old key works until the grace period ends");
    }
    clock.advance(Duration::from_nanos(1));
    for kg in kgs {
        kg.get("/api/v1/clinics", &[("authorization", &format!("Bearer {old}"))])
            .await
            .assert_error(401, "API_KEY_EXPIRED");
        assert_eq!(clinics_status(kg, new).await, 200);
    }
}

/// A raw TCP server on an ephemeral loopback port (for peers that are not well-behaved HTTP
/// servers): every accepted connection goes to `handle`, on a task of its own.
pub async fn serve_tcp<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(handle(conn));
        }
    });
    addr
}

/// `request_line` (`GET /x HTTP/1.1`), `Host: x` and the key's credential, then `lines`, exactly
/// as written.
pub fn keyed_request(request_line: &str, key: &TestKey, lines: &[&str]) -> String {
    let auth = format!("Authorization: {}", key.bearer());
    request(&[&[request_line, "Host: x", auth.as_str()], lines].concat())
}
