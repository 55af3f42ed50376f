//! Asks a running proxy's admin API about one key, for `keygate keys show`. A tiny blocking
//! HTTP/1.1 GET with a timeout: the key CLI stays free of the async network stack.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
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
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("the proxy's admin API at {addr} is not reachable"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let auth = token.map(|t| format!("Authorization: Bearer {}\r\n", t.as_str())).unwrap_or_default();
    write!(s, "GET /admin/keys/{id} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n")?;
    let mut resp = Vec::new();
    s.take(1 << 20).read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text.split_once("\r\n\r\n").context("malformed admin response")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        bail!("admin API answered {status}: {}", body.trim());
    }
    let v: serde_json::Value = serde_json::from_str(body).context("admin API body is not JSON")?;
    Ok(v["usage"].clone())
}
