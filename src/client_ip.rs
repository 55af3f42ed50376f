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

    fn h(xff: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert("x-forwarded-for", HeaderValue::from_str(xff).unwrap());
        m
    }

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_the_header_says() {
        let ip = resolve(&h("9.9.9.9"), "10.0.0.5".parse().unwrap(), &nets(&["192.168.0.0/16"]));
        assert_eq!(ip, "10.0.0.5".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn trusted_peer_yields_rightmost_untrusted_hop() {
        let ip = resolve(&h("6.6.6.6, 203.0.113.7, 10.0.0.2"), "10.0.0.1".parse().unwrap(), &nets(&["10.0.0.0/8"]));
        assert_eq!(ip, "203.0.113.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn garbage_hop_stops_the_walk() {
        let ip = resolve(&h("6.6.6.6, nonsense"), "10.0.0.1".parse().unwrap(), &nets(&["10.0.0.0/8"]));
        assert_eq!(ip, "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn ipv4_mapped_hops_are_read_as_ipv4() {
        let ip =
            resolve(&h("::ffff:203.0.113.7, ::ffff:10.0.0.2"), "10.0.0.1".parse().unwrap(), &nets(&["10.0.0.0/8"]));
        assert_eq!(ip, "203.0.113.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn trusted_peer_without_header_is_the_client() {
        let ip = resolve(&HeaderMap::new(), "10.0.0.1".parse().unwrap(), &nets(&["10.0.0.0/8"]));
        assert_eq!(ip, "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
