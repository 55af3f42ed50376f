//! `keygate demo`: the whole product on one machine in one command. A built-in sample upstream
//! echoes what it received (so the injected identity headers are visible), a key table of
//! freshly generated demo keys is written to a temp dir, and ready-to-paste curl commands are
//! printed. The demo keys live only in that temp dir and this terminal. With `--shape nginx` or
//! `--shape caddy`, a real nginx or Caddy with the shipped deploy/authz config stands in front
//! and asks keygate (`demo_front`), and the curl commands go through it.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::demo_front::{self, DemoShape};
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

pub async fn run(listen: SocketAddr, admin_listen: SocketAddr, shape: DemoShape) -> anyhow::Result<ExitCode> {
    // Said before anything starts: the one thing a shape needs that keygate cannot bring.
    let front_bin = match shape {
        DemoShape::Inline => None,
        _ => Some(demo_front::find(shape)?),
    };
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
    let secret = authz_secret()?;
    let authz = match shape {
        DemoShape::Inline => String::new(),
        _ => {
            let secret_file = dir.join("authz-secret");
            std::fs::write(&secret_file, &secret)?;
            format!("authz:\n  listen: 127.0.0.1:0\n  shared_secret_file: {}\n", secret_file.display())
        }
    };
    let config_text = format!(
        "environment: live\nlisten: \"{listen}\"\nadmin_listen: \"{admin_listen}\"\nupstream:\n  url: http://{upstream_addr}\nkeys:\n  file: {}\npublic_routes:\n  - path: /health\nrate_limits:\n  tiers:\n    default: {{rate: 100/s, burst: 200}}\n    demo_tiny: {{rate: 1/m, burst: 3}}\n  per_ip: {{rate: 10/s, burst: 50}}\njwt:\n  issuer: keygate-demo\n  audience: clinic-api\n  keys:\n    - {{kid: demo-1, algorithm: EdDSA, private_key_file: {}}}\n  issue: {{max_ttl: 15m}}\n{authz}log:\n  format: text\n",
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
    let front = match (front_bin, running.authz_addr) {
        (Some(bin), Some(check)) => Some(start_front(shape, &bin, &dir, check, upstream_addr, &secret).await?),
        _ => None,
    };
    let keys = DemoSecrets { all: &all.secret, one: &one.secret, test: &test.secret, tiny: &tiny.secret };
    // Before the banner says "Ctrl-C stops it": a signal from then on drains and cleans up.
    let mut signals = crate::signals::Signals::install()?;
    let paths = (config_path.as_path(), keys_path.as_path());
    print_banner(&running, upstream_addr, paths, &keys, front.as_ref().map(|f| (shape, f.addr)));
    signals.run_until_terminated(&running).await;
    drop(front);
    running.stopped().await;
    drop(guard);
    Ok(ExitCode::SUCCESS)
}

/// The secret the demo's front proxy presents to keygate's check listener.
fn authz_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::getrandom(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for the demo's secret: {e}"))?;
    Ok(hex::encode(bytes))
}

/// nginx or Caddy with the shipped config, on a free port, asking keygate at `check`.
async fn start_front(
    shape: DemoShape,
    bin: &std::path::Path,
    dir: &std::path::Path,
    check: SocketAddr,
    upstream: SocketAddr,
    secret: &str,
) -> anyhow::Result<demo_front::Running> {
    let front_dir = dir.join("front");
    std::fs::create_dir_all(&front_dir)?;
    let listen = SocketAddr::from(([127, 0, 0, 1], demo_front::free_port()?));
    let addrs = demo_front::Addrs { listen, check, upstream };
    let cmd = match shape {
        DemoShape::Caddy => demo_front::caddy(bin, &front_dir, &addrs, secret)?,
        _ => demo_front::nginx(bin, &front_dir, &addrs, secret)?,
    };
    demo_front::Running::start(cmd, listen, &front_dir.join("stderr.log")).await
}

/// The demo keys' secrets, for the banner (this terminal is the only place they are shown).
struct DemoSecrets<'a> {
    all: &'a str,
    one: &'a str,
    test: &'a str,
    tiny: &'a str,
}

/// Where everything is, the demo keys, and curl commands to paste: to keygate, or through the
/// front proxy when there is one (`front`: its shape and address).
fn print_banner(
    running: &crate::app::Running,
    upstream_addr: SocketAddr,
    (config_path, keys_path): (&std::path::Path, &std::path::Path),
    k: &DemoSecrets<'_>,
    front: Option<(DemoShape, SocketAddr)>,
) {
    let kg = format!("http://{}", running.proxy_addr);
    let admin = format!("http://{}", running.admin_addr);
    let (base, where_) = match (front, running.authz_addr) {
        (Some((shape, addr)), Some(check)) => {
            let (name, path) = match shape {
                DemoShape::Caddy => ("Caddy forward_auth", "/check/forward-auth"),
                _ => ("nginx auth_request", "/check/nginx"),
            };
            let front = format!("http://{addr}");
            let line = format!(
                "  front     {front}  ({name}, the shipped deploy/authz config)  ->  sample upstream\n  \
                 check     http://{check}{path}  (keygate, asked by the front proxy for every request)\n  \
                 keygate   {kg}  (inline too: tokens and JWKS below are keygate's own)"
            );
            (front, line)
        }
        _ => (
            kg.clone(),
            format!("  proxy     {kg}  ->  sample upstream http://{upstream_addr} (echoes what it receives)"),
        ),
    };
    // forward_auth forwards on any 2xx, so behind Caddy the empty result cannot be a 200.
    let empty = match front {
        Some((DemoShape::Caddy, _)) => "403 with the empty result body and X-Keygate-Status: 200",
        _ => "200 with empty results",
    };
    println!(
        r#"
keygate demo is running
{where_}
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
  # {empty}: clinic_002 is outside this key's clinics; the upstream is never asked
  curl -s -w '\nHTTP %{{http_code}}\n' -H "Authorization: Bearer {one}" {base}/api/v1/clinics/clinic_002/interactions
  # 401 API_KEY_ENVIRONMENT_MISMATCH: a test key on a live proxy
  curl -s -w '\nHTTP %{{http_code}}\n' -H "Authorization: Bearer {test}" {base}/api/v1/clinics
  # 200, 200, 200, then 429 RATE_LIMIT_EXCEEDED with Retry-After (RateLimit headers on each)
  for i in 1 2 3 4; do curl -s -i -H "Authorization: Bearer {tiny}" {base}/api/v1/clinics | grep -iE '^(HTTP|ratelimit|retry-after)'; done
  # A 5-minute token for clinic_001 only, traded for the key; then use it like the key
  TOKEN=$(curl -s -X POST -H "Authorization: Bearer {all}" -d '{{"clinics":["clinic_001"],"ttl_seconds":300}}' {kg}/auth/token | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
  curl -s -w '\nHTTP %{{http_code}}\n' -H "Authorization: Bearer $TOKEN" {base}/api/v1/clinics/clinic_001/interactions
  # The token's public keys
  curl -s -w '\nHTTP %{{http_code}}\n' {kg}/.well-known/jwks.json
  # Prometheus metrics: decisions (by shape: inline or the front proxy's), rate limits, anomalies
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
