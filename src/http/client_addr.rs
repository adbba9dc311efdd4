//! Which address a request comes from. The TCP peer's, unless the peer is one of
//! `TRUSTED_PROXIES`: then `X-Forwarded-For` is read from the right, past every trusted
//! proxy, to the first address no trusted proxy vouches for. Any client can write the
//! header, so from an untrusted peer it is ignored (every limiter keys on this address).

use std::net::IpAddr;

use axum::http::HeaderMap;

use crate::config::TrustedProxy;

pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[TrustedProxy]) -> IpAddr {
    let is_trusted = |addr: &IpAddr| trusted.iter().any(|proxy| proxy.0.contains(addr));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    // From the right: each trusted hop vouches for the one before it. The walk stops at
    // the first untrusted address (the client), or at a hop that does not parse, past
    // which nothing is vouched for: then the last trusted hop is the best we know.
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(addr) = hop.parse::<IpAddr>() else {
            break;
        };
        client = addr;
        if !is_trusted(&addr) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(forwarded: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", forwarded.parse().unwrap());
        headers
    }

    fn proxies(list: &[&str]) -> Vec<TrustedProxy> {
        list.iter().map(|p| p.parse().unwrap()).collect()
    }

    #[test]
    fn the_header_counts_only_from_a_trusted_proxy() {
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let forwarded = headers("203.0.113.9");
        assert_eq!(client_addr(peer, &forwarded, &[]), peer);
        assert_eq!(
            client_addr(peer, &forwarded, &proxies(&["192.168.0.0/16"])),
            peer
        );
        assert_eq!(
            client_addr(peer, &forwarded, &proxies(&["10.0.0.0/8"])),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let trusted = proxies(&["10.0.0.0/8", "172.16.0.1"]);
        // A client that writes its own header cannot choose its address.
        let spoofed = headers("1.2.3.4, 198.51.100.7, 172.16.0.1");
        assert_eq!(
            client_addr(peer, &spoofed, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_addr(peer, &headers("not an address"), &trusted),
            peer
        );
        assert_eq!(client_addr(peer, &HeaderMap::new(), &trusted), peer);
    }
}
