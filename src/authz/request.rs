//! What each front proxy reports, read into the engine's `CheckRequest` fields: the original
//! method and target, the client's headers without the front proxy's protocol headers, and the
//! client address by the shape's configured rule. Pure: no sockets, no clock.

use std::net::IpAddr;

use envoy_types::pb::envoy::service::auth::v3 as pb;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri};

use crate::config::ClientIpSource;

/// Why a check request could not be read; answered with the standard 400 body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable(pub String);

impl From<Unreadable> for crate::error::ApiError {
    fn from(u: Unreadable) -> Self {
        crate::error::ApiError::InvalidRequest(u.0)
    }
}

static X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The one value of a header the front proxy must send exactly once.
fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<&'h HeaderValue, Unreadable> {
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => Ok(v),
        (None, _) => Err(Unreadable(format!("the front proxy did not send {name}"))),
        (Some(_), Some(_)) => Err(Unreadable(format!("the front proxy sent {name} more than once"))),
    }
}

pub fn method(text: &[u8]) -> Result<Method, Unreadable> {
    Method::from_bytes(text).map_err(|_| Unreadable("the reported method is not an HTTP method".into()))
}

/// The reported request target: origin form only (`/path?query`), as a client's would be.
pub fn origin_uri(text: &[u8]) -> Result<Uri, Unreadable> {
    if text.first() != Some(&b'/') {
        return Err(Unreadable("the reported request target is not a path".into()));
    }
    // The URI parser drops a fragment silently; inline, keygate refuses '#' targets.
    if text.contains(&b'#') {
        return Err(Unreadable("the reported request target has a fragment".into()));
    }
    let uri = Uri::try_from(text).map_err(|_| Unreadable("the reported request target cannot be parsed".into()))?;
    if uri.authority().is_some() || uri.scheme().is_some() {
        return Err(Unreadable("the reported request target is not a path".into()));
    }
    Ok(uri)
}

/// nginx `auth_request`: the subrequest carries the client's headers, the original method and
/// `$request_uri` in `X-Original-Method` / `X-Original-URI` (set by the deploy config).
pub fn nginx(headers: &mut HeaderMap) -> Result<(Method, Uri), Unreadable> {
    let m = method(single(headers, &X_ORIGINAL_METHOD)?.as_bytes())?;
    let uri = origin_uri(single(headers, &X_ORIGINAL_URI)?.as_bytes())?;
    headers.remove(&X_ORIGINAL_METHOD);
    headers.remove(&X_ORIGINAL_URI);
    Ok((m, uri))
}

/// Traefik ForwardAuth, Caddy `forward_auth`, ingress-nginx `auth-url`: `X-Forwarded-Method`,
/// `-Uri` and `-Host`; the host becomes the request's Host again.
pub fn forward_auth(headers: &mut HeaderMap) -> Result<(Method, Uri), Unreadable> {
    let m = method(single(headers, &X_FORWARDED_METHOD)?.as_bytes())?;
    let uri = origin_uri(single(headers, &X_FORWARDED_URI)?.as_bytes())?;
    let host = headers.get(&X_FORWARDED_HOST).cloned();
    headers.remove(&X_FORWARDED_METHOD);
    headers.remove(&X_FORWARDED_URI);
    headers.remove(&X_FORWARDED_HOST);
    if let Some(h) = host {
        headers.insert(header::HOST, h);
    }
    Ok((m, uri))
}

/// Envoy's HTTP ext_authz keeps the method and sends `path_prefix` + the original target.
pub fn envoy_http(uri: &Uri, prefix: &str) -> Result<Uri, Unreadable> {
    let pq = uri.path_and_query().map_or("", |pq| pq.as_str());
    match pq.strip_prefix(prefix) {
        Some(rest) if rest.starts_with('/') => origin_uri(rest.as_bytes()),
        _ => Err(Unreadable(format!("the check target must be {prefix} followed by the original path"))),
    }
}

/// Envoy's gRPC `CheckRequest`: method, target (`:path` with its query), the client's headers
/// (lower-cased, pseudo-headers skipped; `header_map` when Envoy encodes raw headers) and the
/// source address Envoy resolved.
pub fn envoy_grpc(req: &pb::CheckRequest) -> Result<(Method, Uri, HeaderMap, Option<IpAddr>), Unreadable> {
    let attrs = req.attributes.as_ref();
    let http = attrs
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .ok_or_else(|| Unreadable("the check carries no HTTP request attributes".into()))?;
    let m = method(http.method.as_bytes())?;
    let uri = origin_uri(http.path.as_bytes())?;
    let mut headers = HeaderMap::with_capacity(http.headers.len() + 1);
    let raw = http.header_map.as_ref().map(|m| m.headers.iter().map(|h| (h.key.as_str(), h.raw_value.as_slice())));
    let pairs: Box<dyn Iterator<Item = (&str, &[u8])>> = match raw {
        Some(raw) if http.headers.is_empty() => Box::new(raw),
        _ => Box::new(http.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes()))),
    };
    for (k, v) in pairs {
        if k.starts_with(':') {
            continue;
        }
        let name =
            HeaderName::from_bytes(k.as_bytes()).map_err(|_| Unreadable(format!("{k:?} is not a header name")))?;
        let value = HeaderValue::from_bytes(v).map_err(|_| Unreadable(format!("the value of {name} is not valid")))?;
        headers.append(name, value);
    }
    if !http.host.is_empty() && !headers.contains_key(header::HOST) {
        let host =
            HeaderValue::from_str(&http.host).map_err(|_| Unreadable("the reported host is not valid".into()))?;
        headers.insert(header::HOST, host);
    }
    let source = attrs.and_then(|a| a.source.as_ref()).and_then(|p| p.address.as_ref()).and_then(socket_ip);
    Ok((m, uri, headers, source))
}

fn socket_ip(a: &envoy_types::pb::envoy::config::core::v3::Address) -> Option<IpAddr> {
    use envoy_types::pb::envoy::config::core::v3::address::Address;
    match &a.address {
        Some(Address::SocketAddress(s)) => s.address.parse::<IpAddr>().ok().map(|ip| ip.to_canonical()),
        _ => None,
    }
}

/// The client address by the shape's rule. A rule that finds nothing refuses the check rather
/// than fall back to the front proxy's own address, which every client would then share.
pub fn client_ip(rule: &ClientIpSource, headers: &HeaderMap, source: Option<IpAddr>) -> Result<IpAddr, Unreadable> {
    match rule {
        ClientIpSource::SourceAddress => {
            source.ok_or_else(|| Unreadable("the front proxy did not report the client's source address".into()))
        }
        ClientIpSource::Header { name, trusted_hops } => {
            let mut hops = Vec::new();
            for v in headers.get_all(name) {
                let v = v.to_str().map_err(|_| Unreadable(format!("{name} is not readable")))?;
                hops.extend(v.split(',').map(str::trim));
            }
            let at = hops.len().checked_sub(trusted_hops + 1).ok_or_else(|| {
                Unreadable(format!(
                    "the front proxy did not report the client address in {name} ({trusted_hops} trusted hops)"
                ))
            })?;
            hops[at]
                .parse::<IpAddr>()
                .map(|ip| ip.to_canonical())
                .map_err(|_| Unreadable(format!("the client address in {name} is not an IP address")))
        }
    }
}

/// The shared secret is the front proxy's word to keygate, not part of the client's request:
/// it must reach neither the decisions nor the audit line.
pub fn strip_secret(headers: &mut HeaderMap, secret_header: Option<&HeaderName>) {
    if let Some(h) = secret_header {
        headers.remove(h);
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
