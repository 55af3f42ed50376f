//! Who the client is: the TCP peer, or, when the peer is a configured trusted proxy, the
//! right-most `X-Forwarded-For` hop that is not itself trusted (the left part of that header
//! is whatever the client wrote, so it is never believed).

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|n| n.contains(&ip))
}

pub fn resolve(headers: &HeaderMap, peer: IpAddr, trusted: &[IpNet]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                // A proxy on a dual-stack socket may write ::ffff:a.b.c.d for an IPv4 client.
                let ip = ip.to_canonical();
                client = ip;
                if !is_trusted(ip, trusted) {
                    break;
                }
            }
            // A hop we cannot read ends the chain: the last address we could is the answer.
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// The client `resolve` names for a request from `peer` with `xff` as X-Forwarded-For (none
    /// when `None`), `trusted` the trusted proxies.
    fn client(xff: Option<&str>, peer: &str, trusted: &[&str]) -> IpAddr {
        let mut m = HeaderMap::new();
        if let Some(xff) = xff {
            m.insert("x-forwarded-for", HeaderValue::from_str(xff).unwrap());
        }
        let nets: Vec<IpNet> = trusted.iter().map(|n| n.parse().unwrap()).collect();
        resolve(&m, peer.parse().unwrap(), &nets)
    }

    #[test]
    fn the_client_is_the_peer_or_the_rightmost_hop_a_trusted_proxy_vouches_for() {
        // (X-Forwarded-For, peer, trusted proxies, the client)
        let cases = [
            // An untrusted peer is the client, whatever the header says.
            (Some("9.9.9.9"), "10.0.0.5", "192.168.0.0/16", "10.0.0.5"),
            // A trusted peer yields the right-most untrusted hop.
            (Some("6.6.6.6, 203.0.113.7, 10.0.0.2"), "10.0.0.1", "10.0.0.0/8", "203.0.113.7"),
            // A garbage hop stops the walk.
            (Some("6.6.6.6, nonsense"), "10.0.0.1", "10.0.0.0/8", "10.0.0.1"),
            // IPv4-mapped hops are read as IPv4.
            (Some("::ffff:203.0.113.7, ::ffff:10.0.0.2"), "10.0.0.1", "10.0.0.0/8", "203.0.113.7"),
            // A trusted peer without the header is the client.
            (None, "10.0.0.1", "10.0.0.0/8", "10.0.0.1"),
        ];
        for (xff, peer, trusted, want) in cases {
            assert_eq!(client(xff, peer, &[trusted]), want.parse::<IpAddr>().unwrap(), "{xff:?} from {peer}");
        }
    }
}
