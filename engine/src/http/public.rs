//! Only public addresses: a connector's hosts are names in its spec, and what a name resolves to
//! is checked on every connection, so that a declared host that resolves to the operator's own
//! network (DNS rebinding, a cloud's metadata service at `169.254.169.254`) is refused. The
//! sandbox and `--via` send requests to an address the operator chose, and skip this.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Resolves host names with the system's resolver and refuses a name any of whose addresses is
/// not public (an attacker who controls a name's DNS may mix a private address among public
/// ones).
#[derive(Debug, Default, Clone, Copy)]
pub struct PublicResolver;

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(private) = addresses.iter().find(|address| !is_public(address.ip())) {
                return Err(Box::new(NotPublic {
                    host,
                    address: private.ip(),
                })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

/// A name refused because it resolves to an address that is not public.
#[derive(Debug, thiserror::Error)]
#[error(
    "{host} resolves to {address}, which is not a public address; connectors may only reach public hosts"
)]
pub struct NotPublic {
    host: String,
    address: IpAddr,
}

/// Whether `ip` is an address on the public internet: not loopback, private, link-local,
/// shared (carrier-grade NAT), documentation, benchmarking, reserved, multicast or unspecified,
/// and for IPv6 not unique-local or an IPv4 address of those in disguise.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(ip) => is_public_v4(ip),
            None => is_public_v6(ip),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // 100.64.0.0/10: shared address space (carrier-grade NAT, some clouds' internals).
        || (a == 100 && (64..128).contains(&b))
        // 198.18.0.0/15: benchmarking.
        || (a == 198 && (18..20).contains(&b))
        // 192.0.0.0/24: protocol assignments.
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        // 240.0.0.0/4: reserved.
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // fc00::/7: unique local.
        || (first & 0xfe00) == 0xfc00
        // fe80::/10: link-local.
        || (first & 0xffc0) == 0xfe80
        // 2001:db8::/32: documentation.
        || (first == 0x2001 && ip.segments()[1] == 0x0db8)
        // 64:ff9b:1::/48: local-use NAT64.
        || (first == 0x64 && ip.segments()[1] == 0xff9b && ip.segments()[2] == 1)
        // ::ffff:0:0/96 is handled by the caller; ::/96 (IPv4-compatible) is deprecated.
        || (ip.segments()[..6].iter().all(|segment| *segment == 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for public in [
            "8.8.8.8",
            "142.250.74.78",
            "2a00:1450:4001:82a::200e",
            "1.1.1.1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused() {
        // `localhost` resolves from /etc/hosts, without the network.
        let error = match PublicResolver.resolve("localhost".parse().unwrap()).await {
            Ok(addresses) => panic!("resolved: {:?}", addresses.collect::<Vec<_>>()),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("not a public address"), "{error}");
    }
}
