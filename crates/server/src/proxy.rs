//! Who the client is, behind load balancers we trust and no one else.
use hyper::header::HeaderMap;
use std::net::{IpAddr, SocketAddr};

/// Addresses (or CIDR ranges) of proxies whose `X-Forwarded-For` and `X-Forwarded-Proto` are
/// believed. Anyone else's forwarding headers are ignored: a client could write anything there.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<(IpAddr, u8)>,
}

impl TrustedProxies {
    /// Parses `10.0.0.0/8`, `192.168.1.10`, `::1`, `fd00::/8`...
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<TrustedProxies, String> {
        let mut nets = Vec::new();
        for e in entries {
            let e = e.as_ref().trim();
            let (ip, len) = match e.split_once('/') {
                Some((ip, len)) => (ip, Some(len)),
                None => (e, None),
            };
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("{e:?} is not an IP address or CIDR range"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = match len {
                Some(l) => l
                    .parse::<u8>()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(|| format!("{e:?} has a bad prefix length"))?,
                None => max,
            };
            nets.push((ip, len));
        }
        Ok(TrustedProxies { nets })
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets
            .iter()
            .any(|&(net, len)| match (canonical(net), ip) {
                (IpAddr::V4(n), IpAddr::V4(a)) => {
                    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                    u32::from(n) & mask == u32::from(a) & mask
                }
                (IpAddr::V6(n), IpAddr::V6(a)) => {
                    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                    u128::from(n) & mask == u128::from(a) & mask
                }
                _ => false,
            })
    }

    /// The client's address: the peer, or — when the peer is a trusted proxy — the nearest
    /// address in `X-Forwarded-For` that is not itself a trusted proxy (read right to left, as
    /// each proxy appends the address it saw).
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer.ip());
        // Most nodes trust no proxy; this runs for every click.
        if self.nets.is_empty() || !self.contains(client) {
            return client;
        }
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = canonical(ip);
                    if !self.contains(client) {
                        break;
                    }
                }
                // A malformed entry ends what can be believed.
                Err(_) => break,
            }
        }
        client
    }

    /// `https` or `http`: `X-Forwarded-Proto` from a trusted proxy, else `http` (this listener
    /// speaks plain HTTP).
    pub fn proto(&self, peer: SocketAddr, headers: &HeaderMap) -> &'static str {
        let forwarded = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(',')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("https")
            });
        match forwarded {
            Some(true) if self.contains(peer.ip()) => "https",
            _ => "http",
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) compare as the IPv4 address they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(xff: &[&str], proto: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_str(v).expect("value"));
        }
        if let Some(p) = proto {
            h.insert(
                "x-forwarded-proto",
                HeaderValue::from_str(p).expect("value"),
            );
        }
        h
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().expect("ip"), 40000)
    }

    #[test]
    fn only_trusted_peers_are_believed() {
        let t = TrustedProxies::parse(&["10.0.0.0/8", "192.168.1.10", "::1"]).expect("parse");
        let h = headers(&["203.0.113.7, 10.1.2.3"], Some("https"));
        assert_eq!(t.client(peer("10.9.9.9"), &h).to_string(), "203.0.113.7");
        assert_eq!(t.proto(peer("10.9.9.9"), &h), "https");
        // An untrusted peer's headers are ignored.
        assert_eq!(
            t.client(peer("198.51.100.1"), &h).to_string(),
            "198.51.100.1"
        );
        assert_eq!(t.proto(peer("198.51.100.1"), &h), "http");
        // A spoofed left-most entry is not believed past the first untrusted hop.
        let h = headers(&["1.1.1.1", "203.0.113.7"], None);
        assert_eq!(
            t.client(peer("192.168.1.10"), &h).to_string(),
            "203.0.113.7"
        );
        assert_eq!(
            t.client(peer("::ffff:10.0.0.1"), &h).to_string(),
            "203.0.113.7"
        );
        assert_eq!(
            t.client(peer("::1"), &headers(&["garbage"], None))
                .to_string(),
            "::1"
        );
    }

    #[test]
    fn parsing() {
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::parse(&["proxy.local"]).is_err());
        let all = TrustedProxies::parse(&["0.0.0.0/0"]).expect("parse");
        assert!(all.contains("8.8.8.8".parse().expect("ip")));
        assert!(!TrustedProxies::default().contains("127.0.0.1".parse().expect("ip")));
    }
}
