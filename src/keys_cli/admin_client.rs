//! Talks to a running proxy's admin API: one key's usage for `keygate keys show`, and every
//! call of the remote mode (`keygate keys --admin-url …`). Blocking `ureq` with a deadline, so
//! the key CLI stays free of the async network stack and of a hand-written HTTP parser.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::config::AdminToken;

/// An admin listener bound to 0.0.0.0 / :: is reached through loopback from the same host.
pub fn loopback_for(a: SocketAddr) -> SocketAddr {
    if a.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], a.port()))
    } else {
        a
    }
}

/// `http://host:port` from `host:port` or a URL, without a trailing slash.
pub fn base_url(admin: &str) -> String {
    let a = admin.trim_end_matches('/');
    if a.starts_with("http://") || a.starts_with("https://") {
        a.to_string()
    } else {
        format!("http://{a}")
    }
}

/// One call: its status and JSON answer (an error answer is an answer, not an `Err`).
pub fn call(
    base: &str,
    method: http::Method,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{}{path}", base_url(base));
    let auth = token.map(|t| format!("Bearer {t}"));
    let sent = match (method, body) {
        (http::Method::GET, _) => with_auth(agent.get(&url), auth.as_deref()).call(),
        (m, b) => {
            let req = match m {
                http::Method::PATCH => agent.patch(&url),
                _ => agent.post(&url),
            };
            let text = b.map(|b| b.to_string()).unwrap_or_default();
            with_auth(req, auth.as_deref()).content_type("application/json").send(text.as_str())
        }
    };
    let mut resp = sent.with_context(|| format!("the admin API at {} is not reachable", base_url(base)))?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().with_config().limit(16 << 20).read_to_string().context("reading the admin answer")?;
    let v = serde_json::from_str(&text).with_context(|| format!("admin API answered {status} without JSON"))?;
    Ok((status, v))
}

fn with_auth<B>(r: ureq::RequestBuilder<B>, auth: Option<&str>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => r.header("Authorization", a),
        None => r,
    }
}

/// The answer's body when 2xx, else an error carrying the standard body's code and message.
pub fn expect_ok((status, v): (u16, serde_json::Value)) -> anyhow::Result<serde_json::Value> {
    if (200..300).contains(&status) {
        return Ok(v);
    }
    let (code, message) = (v["error"]["code"].as_str().unwrap_or("?"), v["error"]["message"].as_str().unwrap_or(""));
    bail!("admin API answered {status} {code}: {message}")
}

pub fn key_usage(admin: &str, id: &str, token: Option<&AdminToken>) -> anyhow::Result<serde_json::Value> {
    let addr: SocketAddr = admin
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("admin address {admin:?} (expected host:port)"))?;
    let answer =
        call(&addr.to_string(), http::Method::GET, &format!("/admin/keys/{id}"), token.map(|t| t.as_str()), None)?;
    Ok(expect_ok(answer)?["usage"].clone())
}
