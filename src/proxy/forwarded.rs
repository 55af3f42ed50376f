//! The forwarding headers the upstream sees. `X-Forwarded-For` gains the peer (appended when
//! the peer is a trusted proxy whose header was kept, else it is the whole value); `-Proto` and
//! `-Host` describe the client's request unless a trusted proxy already said so; a `Forwarded`
//! list kept from a trusted proxy gains our hop too (RFC 7239), so both tell the same story.
//! What depends only on the connection is prepared once per connection (`Hop`): the common
//! request, from an untrusted peer, then costs three inserts and no formatting.

use std::net::IpAddr;

use http::header::{self, Entry, HeaderName, HeaderValue, OccupiedEntry};
use http::HeaderMap;

use crate::textfmt::IpText;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// This hop, as the forwarding headers name it.
#[derive(Debug, Clone)]
pub struct Hop {
    /// The peer's address: `X-Forwarded-For` when nothing came before us, else its last entry.
    peer: HeaderValue,
    proto: HeaderValue,
    /// Our element of a `Forwarded` list: `for=...;proto=...`.
    forwarded: String,
}

impl Hop {
    pub fn new(peer: IpAddr, peer_text: IpText, tls: bool) -> Hop {
        let proto = if tls { "https" } else { "http" };
        let node = match peer {
            IpAddr::V4(_) => peer_text.as_str().to_owned(),
            IpAddr::V6(_) => format!("\"[{}]\"", peer_text.as_str()),
        };
        Hop {
            peer: HeaderValue::from_str(peer_text.as_str()).expect("an address is a header value"),
            proto: HeaderValue::from_static(proto),
            forwarded: format!("for={node};proto={proto}"),
        }
    }
}

/// Sets the forwarding headers on a request about to go upstream (after sanitising, which
/// removed them unless the peer is a trusted proxy).
pub fn apply(h: &mut HeaderMap, hop: &Hop) {
    match h.entry(&X_FORWARDED_FOR) {
        Entry::Vacant(e) => {
            e.insert(hop.peer.clone());
        }
        // A trusted proxy may send the list over several lines: all of them, in order, then us.
        Entry::Occupied(mut e) => {
            let ours = hop.peer.to_str().expect("an address is visible ASCII");
            let prev = e.iter().filter_map(|v| v.to_str().ok()).filter(|v| !v.is_empty());
            if let Some(v) = extended(prev, ours) {
                e.insert(v);
            }
        }
    }
    // One value each: a trusted proxy's first, else ours (never two that disagree).
    match h.entry(&X_FORWARDED_PROTO) {
        Entry::Vacant(e) => {
            e.insert(hop.proto.clone());
        }
        Entry::Occupied(mut e) => keep_first(&mut e),
    }
    let host = h.get(header::HOST).cloned();
    match h.entry(&X_FORWARDED_HOST) {
        Entry::Vacant(e) => {
            if let Some(host) = host {
                e.insert(host);
            }
        }
        Entry::Occupied(mut e) => keep_first(&mut e),
    }
    if let Entry::Occupied(mut e) = h.entry(header::FORWARDED) {
        if let Some(v) = extended(e.iter().filter_map(|v| v.to_str().ok()), &hop.forwarded) {
            e.insert(v);
        }
    }
}

/// One header value: the earlier list elements, then ours, joined by ", ".
fn extended<'a>(prev: impl Iterator<Item = &'a str>, ours: &str) -> Option<HeaderValue> {
    let mut value = String::new();
    for p in prev {
        value.push_str(p);
        value.push_str(", ");
    }
    value.push_str(ours);
    HeaderValue::from_str(&value).ok()
}

fn keep_first(e: &mut OccupiedEntry<'_, HeaderValue>) {
    if e.iter().nth(1).is_some() {
        let first = e.get().clone();
        e.insert(first);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(ip: &str, tls: bool) -> Hop {
        let ip: IpAddr = ip.parse().unwrap();
        Hop::new(ip, IpText::new(ip), tls)
    }

    fn all(h: &HeaderMap, name: &str) -> Vec<String> {
        h.get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn nothing_before_us_gives_our_hop_alone() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("api.example"));
        apply(&mut h, &hop("10.0.0.7", false));
        assert_eq!(all(&h, "x-forwarded-for"), ["10.0.0.7"]);
        assert_eq!(all(&h, "x-forwarded-proto"), ["http"]);
        assert_eq!(all(&h, "x-forwarded-host"), ["api.example"]);
        assert!(h.get(header::FORWARDED).is_none(), "Forwarded is extended, never started");
    }

    #[test]
    fn a_trusted_proxys_headers_are_kept_and_extended() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("inner"));
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.append("x-forwarded-for", HeaderValue::from_static(""));
        h.append("x-forwarded-for", HeaderValue::from_static("2.2.2.2, 3.3.3.3"));
        h.append("x-forwarded-proto", HeaderValue::from_static("https"));
        h.append("x-forwarded-proto", HeaderValue::from_static("http"));
        h.append("x-forwarded-host", HeaderValue::from_static("outer"));
        h.append(header::FORWARDED, HeaderValue::from_static("for=1.1.1.1"));
        h.append(header::FORWARDED, HeaderValue::from_static("for=2.2.2.2"));
        apply(&mut h, &hop("::1", true));
        assert_eq!(all(&h, "x-forwarded-for"), ["1.1.1.1, 2.2.2.2, 3.3.3.3, ::1"]);
        assert_eq!(all(&h, "x-forwarded-proto"), ["https"], "the first proxy's word, once");
        assert_eq!(all(&h, "x-forwarded-host"), ["outer"]);
        assert_eq!(all(&h, "forwarded"), ["for=1.1.1.1, for=2.2.2.2, for=\"[::1]\";proto=https"]);
    }

    #[test]
    fn no_host_no_forwarded_host() {
        let mut h = HeaderMap::new();
        apply(&mut h, &hop("10.0.0.7", true));
        assert!(h.get("x-forwarded-host").is_none());
        assert_eq!(all(&h, "x-forwarded-proto"), ["https"]);
    }
}
