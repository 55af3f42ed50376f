//! `keygate demo`: the whole product on one machine in one command. A built-in sample upstream
//! echoes what it received (so the injected identity headers are visible), a key table of
//! freshly generated demo keys is written to a temp dir, and ready-to-paste curl commands are
//! printed. The demo keys live only in that temp dir and this terminal.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::keys::generate::generate;
use crate::keys::KeyHash;
use crate::proxy::ConnFacts;
use crate::server::{self, Handler, ServeOptions};

/// The sample upstream: answers every request with a JSON echo of what reached it.
pub struct EchoUpstream;

impl Handler for EchoUpstream {
    type Body = Full<Bytes>;

    async fn call(&self, req: Request<Incoming>, _conn: std::sync::Arc<ConnFacts>) -> Response<Full<Bytes>> {
        let headers: serde_json::Map<String, serde_json::Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(v.to_str().unwrap_or("<binary>"))))
            .collect();
        let body = serde_json::json!({
            "success": true,
            "upstream": "keygate demo echo",
            "received": { "method": req.method().as_str(), "path": req.uri().path(), "headers": headers },
            "data": []
        });
        let mut r = Response::new(Full::new(Bytes::from(serde_json::to_vec_pretty(&body).unwrap_or_default())));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    }
}

struct DemoKey {
    secret: String,
    yaml: String,
}

fn demo_key(id: &str, prefix: &str, env: &str, extra: &str) -> DemoKey {
    let secret = generate(prefix);
    let yaml = format!(
        "  - id: {id}\n    hash: {}\n    label: \"DEMO KEY - not for production\"\n    environment: {env}\n{extra}",
        KeyHash::of(&secret).to_hex()
    );
    DemoKey { secret, yaml }
}

/// The demo's temp dir (it holds a private signing key): owner-only, and removed however the
/// demo ends, a busy port included.
struct DemoDir(std::path::PathBuf);

impl DemoDir {
    fn create() -> anyhow::Result<DemoDir> {
        let dir = std::env::temp_dir().join(format!("keygate-demo-{}", std::process::id()));
        let mut b = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.recursive(true).create(&dir)?;
        Ok(DemoDir(dir))
    }
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port already in use is the demo's most likely failure: say how to pick another.
fn explain_bind_error(e: anyhow::Error, listen: SocketAddr, admin_listen: SocketAddr) -> anyhow::Error {
    let in_use = e
        .chain()
        .any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse));
    if !in_use {
        return e;
    }
    e.context(format!(
        "a port the demo needs is in use ({listen} or {admin_listen}); pick others, e.g. \
         keygate demo --listen 127.0.0.1:18080 --admin-listen 127.0.0.1:19090"
    ))
}

pub async fn run(listen: SocketAddr, admin_listen: SocketAddr) -> anyhow::Result<ExitCode> {
    let guard = DemoDir::create()?;
    let dir = guard.0.clone();

    let upstream_listener = TcpListener::bind("127.0.0.1:0").await?;
    let upstream_addr = upstream_listener.local_addr()?;

    let all = demo_key("demo_all_clinics", "dpl_live_", "live", "");
    let one = demo_key(
        "demo_clinic_001",
        "dpl_live_",
        "live",
        "    scopes: [interactions:read]\n    clinics: [clinic_001]\n",
    );
    let test = demo_key("demo_test_env", "dpl_test_", "test", "");
    let tiny = demo_key("demo_rate_limited", "dpl_live_", "live", "    rate_limit: demo_tiny\n");
    let jwt_key = dir.join("jwt-ed25519.pem");
    std::fs::write(&jwt_key, crate::jwt::keys::generate_ed25519_pem())?;
    let keys_path = dir.join("keys.yaml");
    std::fs::write(
        &keys_path,
        format!(
            "# DEMO key table written by `keygate demo`: hashes only.\nkeys:\n{}{}{}{}",
            all.yaml, one.yaml, test.yaml, tiny.yaml
        ),
    )?;
    let config_text = format!(
        "environment: live\nlisten: \"{listen}\"\nadmin_listen: \"{admin_listen}\"\nupstream:\n  url: http://{upstream_addr}\nkeys:\n  file: {}\npublic_routes:\n  - path: /health\nrate_limits:\n  tiers:\n    default: {{rate: 100/s, burst: 200}}\n    demo_tiny: {{rate: 1/m, burst: 3}}\n  per_ip: {{rate: 10/s, burst: 50}}\njwt:\n  issuer: keygate-demo\n  audience: clinic-api\n  keys:\n    - {{kid: demo-1, algorithm: EdDSA, private_key_file: {}}}\n  issue: {{max_ttl: 15m}}\nlog:\n  format: text\n",
        keys_path.display(),
        jwt_key.display()
    );
    let config_path = dir.join("config.yaml");
    std::fs::write(&config_path, &config_text)?;
    let config = crate::config::parse(&config_text, &config_path.display().to_string())?;

    let upstream_opts = ServeOptions {
        limits: config.limits.clone(),
        drain_timeout: std::time::Duration::from_secs(1),
        tls: None,
        metrics: None,
        name: "demo-upstream",
    };
    tokio::spawn(server::serve(upstream_listener, Arc::new(EchoUpstream), upstream_opts, std::future::pending::<()>()));
    let running = crate::app::start(config).await.map_err(|e| explain_bind_error(e, listen, admin_listen))?;
    let keys = DemoSecrets { all: &all.secret, one: &one.secret, test: &test.secret, tiny: &tiny.secret };
    // Before the banner says "Ctrl-C stops it": a signal from then on drains and cleans up.
    let signals = crate::signals::Signals::install()?;
    print_banner(&running, upstream_addr, &config_path, &keys_path, &keys);
    signals.run(running).await;
    drop(guard);
    Ok(ExitCode::SUCCESS)
}

/// The demo keys' secrets, for the banner (this terminal is the only place they are shown).
struct DemoSecrets<'a> {
    all: &'a str,
    one: &'a str,
    test: &'a str,
    tiny: &'a str,
}

/// Where everything is, the demo keys, and curl commands to paste.
fn print_banner(
    running: &crate::app::Running,
    upstream_addr: SocketAddr,
    config_path: &std::path::Path,
    keys_path: &std::path::Path,
    k: &DemoSecrets<'_>,
) {
    let base = format!("http://{}", running.proxy_addr);
    let admin = format!("http://{}", running.admin_addr);
    println!(
        r#"
keygate demo is running
  proxy     {base}  ->  sample upstream http://{upstream_addr} (echoes what it receives)
  admin     {admin}/metrics  /healthz  /readyz
  config    {config}
  key table {keys} (SHA-256 hashes only)

DEMO keys (generated just now, valid only for this demo):
  all clinics, all read scopes   {all}
  clinic_001, interactions:read  {one}
  test environment               {test}
  3 requests a minute            {tiny}

Try (each prints the status code last):
  # 200: the upstream sees X-Allowed-Clinics, X-Scopes, X-Api-Key-Id (never the key)
  curl -s -w '\nHTTP %{{http_code}}\n' -H "Authorization: Bearer {all}" {base}/api/v1/clinics/clinic_001/interactions
  # 401 UNAUTHORIZED: missing Authorization header
  curl -s -w '\nHTTP %{{http_code}}\n' {base}/api/v1/clinics/clinic_001/interactions
  # 403 INSUFFICIENT_SCOPE: this key has interactions:read only
  curl -s -w '\nHTTP %{{http_code}}\n' -H "Authorization: Bearer {one}" {base}/api/v1/clinics/clinic_001/metrics
  # 200 with empty results: clinic_002 is outside this key's clinics; the upstream is never asked
  curl -s -w '\nHTTP %{{http_code}}\n' -H "Authorization: Bearer {one}" {base}/api/v1/clinics/clinic_002/interactions
  # 401 API_KEY_ENVIRONMENT_MISMATCH: a test key on a live proxy
  curl -s -w '\nHTTP %{{http_code}}\n' -H "Authorization: Bearer {test}" {base}/api/v1/clinics
  # 200, 200, 200, then 429 RATE_LIMIT_EXCEEDED with Retry-After (RateLimit headers on each)
  for i in 1 2 3 4; do curl -s -i -H "Authorization: Bearer {tiny}" {base}/api/v1/clinics | grep -iE '^(HTTP|ratelimit|retry-after)'; done
  # A 5-minute token for clinic_001 only, traded for the key; then use it like the key
  TOKEN=$(curl -s -X POST -H "Authorization: Bearer {all}" -d '{{"clinics":["clinic_001"],"ttl_seconds":300}}' {base}/auth/token | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
  curl -s -w '\nHTTP %{{http_code}}\n' -H "Authorization: Bearer $TOKEN" {base}/api/v1/clinics/clinic_001/interactions
  # The token's public keys
  curl -s -w '\nHTTP %{{http_code}}\n' {base}/.well-known/jwks.json
  # Prometheus metrics: decisions, rate limits, anomalies (the test key above was one)
  curl -s {admin}/metrics | grep -E 'keygate_(requests|rate_limit_decisions|anomalies)_total'

Ctrl-C stops it.
"#,
        config = config_path.display(),
        keys = keys_path.display(),
        all = k.all,
        one = k.one,
        test = k.test,
        tiny = k.tiny,
    );
}
