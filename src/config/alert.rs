//! The alert webhook's settings: a config type, so config depends on nothing that does I/O
//! (the alerter that posts them lives in `alert`). The defaults have their one home here.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;

pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(600);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_QUEUE: usize = 1024;

/// Equal settings keep the running alerter (and what it has de-duplicated) across a reload.
#[derive(Clone, PartialEq)]
pub struct AlertSettings {
    /// `http` or `https`. Webhook URLs often carry a token (in the path or query): it is never
    /// logged, and `Debug` shows only scheme and host.
    pub url: Uri,
    pub cooldown: Duration,
    /// Per POST attempt, connect included.
    pub timeout: Duration,
    pub queue: usize,
    pub ca_file: Option<PathBuf>,
    /// Which keygate raised the alert (hostname, pod name), shown in the message.
    pub instance: String,
    /// `Authorization` sent with every POST (`Bearer <token>`), for webhooks that take their
    /// token in a header rather than the URL. Marked sensitive; never logged.
    pub authorization: Option<http::HeaderValue>,
}

impl AlertSettings {
    pub fn new(url: Uri, instance: impl Into<String>) -> AlertSettings {
        AlertSettings {
            url,
            cooldown: DEFAULT_COOLDOWN,
            timeout: DEFAULT_TIMEOUT,
            queue: DEFAULT_QUEUE,
            ca_file: None,
            instance: instance.into(),
            authorization: None,
        }
    }
}

impl fmt::Debug for AlertSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertSettings")
            .field("url", &redacted(&self.url))
            .field("cooldown", &self.cooldown)
            .field("timeout", &self.timeout)
            .field("queue", &self.queue)
            .field("ca_file", &self.ca_file)
            .field("instance", &self.instance)
            .field("authorization", &self.authorization.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Scheme and host (and port) only: no userinfo, path or query, where webhook tokens live.
pub fn redacted(url: &Uri) -> String {
    let scheme = url.scheme_str().unwrap_or("?");
    let host = url.host().unwrap_or("?");
    match url.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    }
}
