//! Asks a running proxy's admin API about one key, for `keygate keys show`: one blocking GET
//! through `ureq` with a deadline, so the key CLI stays free of the async network stack and of
//! a hand-written HTTP parser.

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

pub fn key_usage(admin: &str, id: &str, token: Option<&AdminToken>) -> anyhow::Result<serde_json::Value> {
    let addr: SocketAddr = admin
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("admin address {admin:?} (expected host:port)"))?;
    // Non-2xx answers are read as answers (their body says why), not turned into errors.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(format!("http://{addr}/admin/keys/{id}"));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {}", t.as_str()));
    }
    let mut resp = req.call().with_context(|| format!("the proxy's admin API at {addr} is not reachable"))?;
    let status = resp.status();
    let body = resp.body_mut().with_config().limit(1 << 20).read_to_string().context("reading the admin response")?;
    if status != 200 {
        bail!("admin API answered {}: {}", status.as_u16(), body.trim());
    }
    let v: serde_json::Value = serde_json::from_str(&body).context("admin API body is not JSON")?;
    Ok(v["usage"].clone())
}
