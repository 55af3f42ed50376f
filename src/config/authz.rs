//! The `authz` section: keygate as the external authorizer of a front proxy (Envoy/Istio
//! ext_authz, nginx `auth_request`, Traefik/Caddy forward auth). Where each shape's client
//! address comes from is explicit here, and a check listener off loopback needs a shared secret
//! or mTLS: the check endpoints answer "may this pass?", so they must never be the open
//! internet's.

use std::net::SocketAddr;
use std::path::PathBuf;

use http::HeaderName;
use serde::Deserialize;

use super::{Check, TlsFiles};

/// The YAML as written (the serde mirror of this section).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthz {
    pub listen: Option<String>,
    pub grpc_listen: Option<String>,
    pub shared_secret_file: Option<String>,
    pub shared_secret_header: Option<String>,
    pub tls: Option<RawAuthzTls>,
    #[serde(default)]
    pub client_ip: RawClientIps,
    /// The check listeners' own `enforce` (report-only when false); default: the top-level one.
    pub enforce: Option<bool>,
}

/// mTLS from the front proxy: all three files, since TLS without a client certificate would
/// not say who is asking.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthzTls {
    pub cert_file: String,
    pub key_file: String,
    pub client_ca_file: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientIps {
    pub envoy_grpc: Option<RawClientIp>,
    pub envoy_http: Option<RawClientIp>,
    pub nginx: Option<RawClientIp>,
    pub forward_auth: Option<RawClientIp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientIp {
    pub from: String,
    pub trusted_hops: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct Authz {
    /// The HTTP check endpoints (Envoy HTTP, nginx, forward auth).
    pub listen: SocketAddr,
    /// The Envoy ext_authz gRPC service, when wanted.
    pub grpc_listen: Option<SocketAddr>,
    pub secret: Option<CheckSecret>,
    /// Both check listeners speak TLS and require the front proxy's client certificate.
    pub tls: Option<AuthzTls>,
    pub client_ip: ClientIpRules,
}

#[derive(Debug, Clone)]
pub struct AuthzTls {
    /// keygate's own certificate and key on the check listeners.
    pub files: TlsFiles,
    /// The CA (PEM) the front proxy's client certificate must chain to.
    pub client_ca_file: PathBuf,
}

/// Where one shape's client address is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIpSource {
    /// Envoy's `attributes.source.address`: the downstream address Envoy itself resolved.
    SourceAddress,
    /// A comma-separated header the front proxy writes; `trusted_hops` entries counted from the
    /// right are the front proxies' own and skipped (0: the right-most entry, which the last
    /// proxy appended from its TCP peer).
    Header { name: HeaderName, trusted_hops: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIpRules {
    pub envoy_grpc: ClientIpSource,
    pub envoy_http: ClientIpSource,
    pub nginx: ClientIpSource,
    pub forward_auth: ClientIpSource,
}

/// The secret a front proxy presents in a header (gRPC: metadata) on every check. Its Debug
/// never shows it.
#[derive(Clone)]
pub struct CheckSecret {
    pub header: HeaderName,
    value: String,
}

impl CheckSecret {
    pub fn new(header: HeaderName, value: String) -> CheckSecret {
        CheckSecret { header, value }
    }

    pub fn matches(&self, presented: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        !presented.is_empty() && bool::from(self.value.as_bytes().ct_eq(presented))
    }
}

impl std::fmt::Debug for CheckSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CheckSecret {{ header: {:?}, value: <redacted> }}", self.header.as_str())
    }
}

const DEFAULT_LISTEN: &str = "127.0.0.1:9191";
const DEFAULT_SECRET_HEADER: &str = "x-keygate-authz-secret";
/// More hops than any real chain of proxies; a larger number is a typo.
const MAX_TRUSTED_HOPS: usize = 16;

fn xff() -> ClientIpSource {
    ClientIpSource::Header { name: HeaderName::from_static("x-forwarded-for"), trusted_hops: 0 }
}

pub(super) fn authz(c: &mut Check, raw: Option<&RawAuthz>, taken: &[(&str, SocketAddr)]) -> Option<Authz> {
    let raw = raw?;
    let listen = c.addr("authz.listen", &raw.listen, DEFAULT_LISTEN);
    let grpc_listen = raw.grpc_listen.as_ref().map(|_| c.addr("authz.grpc_listen", &raw.grpc_listen, DEFAULT_LISTEN));
    let mut mine = vec![("authz.listen", listen)];
    mine.extend(grpc_listen.map(|a| ("authz.grpc_listen", a)));
    for (i, (field, addr)) in mine.iter().enumerate() {
        let others = taken.iter().chain(&mine[..i]);
        for (other, at) in others {
            if at == addr && addr.port() != 0 {
                c.0.push(format!("{field}: {addr} is already {other}'s address"));
            }
        }
    }
    let secret = secret(c, raw);
    let tls = raw.tls.as_ref().map(|t| AuthzTls {
        files: TlsFiles { cert_file: (&t.cert_file).into(), key_file: (&t.key_file).into() },
        client_ca_file: (&t.client_ca_file).into(),
    });
    if secret.is_none() && tls.is_none() {
        for (field, addr) in &mine {
            if !addr.ip().is_loopback() {
                c.0.push(format!(
                    "{field}: {addr} is reachable off this host; set authz.shared_secret_file or authz.tls (mTLS) so only the front proxy may ask"
                ));
            }
        }
    }
    let r = &raw.client_ip;
    let client_ip = ClientIpRules {
        envoy_grpc: client_ip(c, "envoy_grpc", r.envoy_grpc.as_ref(), ClientIpSource::SourceAddress),
        envoy_http: client_ip(c, "envoy_http", r.envoy_http.as_ref(), xff()),
        nginx: client_ip(c, "nginx", r.nginx.as_ref(), xff()),
        forward_auth: client_ip(c, "forward_auth", r.forward_auth.as_ref(), xff()),
    };
    Some(Authz { listen, grpc_listen, secret, tls, client_ip })
}

fn secret(c: &mut Check, raw: &RawAuthz) -> Option<CheckSecret> {
    let header_text = raw.shared_secret_header.as_deref().unwrap_or(DEFAULT_SECRET_HEADER);
    let header = c.val(
        "authz.shared_secret_header",
        HeaderName::from_bytes(header_text.as_bytes()).map_err(|_| format!("{header_text:?} is not a header name")),
    );
    let path = raw.shared_secret_file.as_deref();
    let value = super::secrets::inline_or_file(c, "authz.shared_secret", None, path)?.trim().to_string();
    if value.len() < 16 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        c.0.push("authz.shared_secret_file: the secret must be at least 16 visible ASCII characters".into());
        return None;
    }
    Some(CheckSecret::new(header?, value))
}

fn client_ip(c: &mut Check, shape: &str, raw: Option<&RawClientIp>, default: ClientIpSource) -> ClientIpSource {
    let Some(raw) = raw else { return default };
    let field = format!("authz.client_ip.{shape}");
    if raw.from == "source_address" {
        if shape != "envoy_grpc" {
            c.0.push(format!("{field}.from: source_address is only reported by Envoy's gRPC check; name a header"));
        }
        if raw.trusted_hops.is_some() {
            c.0.push(format!("{field}.trusted_hops: only applies when `from` is a header"));
        }
        return default;
    }
    let Some(name) = c.val(
        &format!("{field}.from"),
        HeaderName::from_bytes(raw.from.as_bytes())
            .map_err(|_| format!("{:?} is neither source_address nor a header name", raw.from)),
    ) else {
        return default;
    };
    let trusted_hops = raw.trusted_hops.unwrap_or(0);
    if trusted_hops > MAX_TRUSTED_HOPS {
        c.0.push(format!("{field}.trusted_hops: {trusted_hops} is more than {MAX_TRUSTED_HOPS}"));
    }
    ClientIpSource::Header { name, trusted_hops }
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, ClientIpSource};

    const MINIMAL: &str = "environment: live\nupstream:\n  url: http://127.0.0.1:3000\nkeys:\n  file: keys.yaml\n";

    /// `extra` after a minimal config is refused, with a message naming each of `wanted`.
    fn assert_refused(extra: &str, wanted: &[&str]) {
        let msg = parse(&format!("{MINIMAL}{extra}"), "c.yaml").unwrap_err().to_string();
        for want in wanted {
            assert!(msg.contains(want), "missing {want:?} in {msg}");
        }
    }

    /// A secret file holding `text`, in a directory of its own.
    fn secret_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, text).unwrap();
        (dir, f)
    }

    #[test]
    fn absent_section_means_no_check_listener() {
        assert!(parse(MINIMAL, "c.yaml").unwrap().authz.is_none());
    }

    #[test]
    fn defaults_bind_loopback_and_read_the_usual_headers() {
        let a = parse(&format!("{MINIMAL}authz: {{}}\n"), "c.yaml").unwrap().authz.unwrap();
        assert_eq!(a.listen, "127.0.0.1:9191".parse().unwrap());
        assert!(a.grpc_listen.is_none() && a.secret.is_none());
        assert_eq!(a.client_ip.envoy_grpc, ClientIpSource::SourceAddress);
        let xff = ClientIpSource::Header { name: http::HeaderName::from_static("x-forwarded-for"), trusted_hops: 0 };
        assert_eq!(a.client_ip.nginx, xff);
        assert_eq!(a.client_ip.forward_auth, xff);
        assert_eq!(a.client_ip.envoy_http, xff);
    }

    #[test]
    fn an_open_listener_without_a_secret_is_refused() {
        assert_refused(
            "authz:\n  listen: 0.0.0.0:9191\n  grpc_listen: 0.0.0.0:9192\n",
            &["authz.listen: 0.0.0.0:9191 is reachable off this host", "authz.grpc_listen: 0.0.0.0:9192 is reachable"],
        );
    }

    #[test]
    fn secret_is_read_from_its_file_and_never_shown() {
        let (_dir, f) = secret_file("0123456789abcdef-secret\n");
        let text = format!("{MINIMAL}authz:\n  listen: 0.0.0.0:9191\n  shared_secret_file: {}\n", f.display());
        let a = parse(&text, "c.yaml").unwrap().authz.unwrap();
        let s = a.secret.unwrap();
        assert_eq!(s.header.as_str(), "x-keygate-authz-secret");
        assert!(s.matches(b"0123456789abcdef-secret"));
        assert!(!s.matches(b"0123456789abcdef-secreT") && !s.matches(b""));
        assert!(!format!("{s:?}").contains("0123456789"), "{s:?}");
    }

    #[test]
    fn mtls_alone_may_guard_an_open_listener_and_needs_all_three_files() {
        let tls = "  tls: {cert_file: c.pem, key_file: k.pem, client_ca_file: ca.pem}\n";
        let a = parse(&format!("{MINIMAL}authz:\n  listen: 0.0.0.0:9191\n{tls}"), "c.yaml").unwrap().authz.unwrap();
        let t = a.tls.unwrap();
        assert!(a.secret.is_none());
        assert_eq!(t.files.cert_file, std::path::Path::new("c.pem"));
        assert_eq!(t.client_ca_file, std::path::Path::new("ca.pem"));
        assert_refused("authz:\n  tls: {cert_file: c.pem, key_file: k.pem}\n", &["missing field `client_ca_file`"]);
    }

    #[test]
    fn short_secret_and_bad_names_are_each_reported() {
        let (_dir, f) = secret_file("short");
        let text = format!(
            "authz:\n  shared_secret_file: {}\n  shared_secret_header: \"bad header\"\n  client_ip:\n    nginx: {{from: source_address}}\n    forward_auth: {{from: \"x forwarded\", trusted_hops: 99}}\n",
            f.display()
        );
        let wanted = [
            "authz.shared_secret_file: the secret must be at least 16",
            "authz.shared_secret_header: \"bad header\" is not a header name",
            "authz.client_ip.nginx.from: source_address is only reported by Envoy's gRPC check",
            "authz.client_ip.forward_auth.from: \"x forwarded\" is neither",
        ];
        assert_refused(&text, &wanted);
    }

    #[test]
    fn check_listener_may_not_share_the_proxy_or_admin_address() {
        let wanted = [
            "authz.listen: 127.0.0.1:8080 is already listen's address",
            "authz.grpc_listen: 127.0.0.1:9090 is already admin_listen's address",
        ];
        assert_refused(
            "listen: 127.0.0.1:8080\nauthz:\n  listen: 127.0.0.1:8080\n  grpc_listen: 127.0.0.1:9090\n",
            &wanted,
        );
    }

    #[test]
    fn unknown_keys_in_the_section_are_refused() {
        assert_refused("authz:\n  listne: 127.0.0.1:1\n", &["unknown field `listne`"]);
        assert_refused("authz:\n  client_ip:\n    traefik: {from: x-real-ip}\n", &["unknown field `traefik`"]);
    }

    #[test]
    fn header_source_with_hops() {
        let text =
            format!("{MINIMAL}authz:\n  client_ip:\n    envoy_grpc: {{from: X-Forwarded-For, trusted_hops: 1}}\n");
        let a = parse(&text, "c.yaml").unwrap().authz.unwrap();
        let want = ClientIpSource::Header { name: http::HeaderName::from_static("x-forwarded-for"), trusted_hops: 1 };
        assert_eq!(a.client_ip.envoy_grpc, want);
    }
}
