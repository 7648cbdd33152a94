//! Egress guard: may this destination be dialed at all?
//!
//! Takes a `(host, port)`; returns the checked socket addresses to dial, or a [`Denial`].
//! Only allowed ports pass. A name is resolved once (answers cached for `egress.dns_ttl`),
//! every answer is classified, and special-purpose addresses (loopback, private, link-local
//! and cloud metadata, CGNAT, multicast, IPv4-embedded IPv6, ...) are refused unless
//! `egress.allow_private` covers them or `upstream.resolve` pins the name. The caller dials
//! exactly the returned addresses, so a DNS answer cannot change between check and dial.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use http::StatusCode;
use ipnet::IpNet;
use moka::future::Cache;

use crate::authority::split_host_port;
use crate::config::sections::EgressConfig;
use crate::error::{Denial, Gate};

/// Checked addresses for one destination, in the order to try them.
pub type Addrs = Arc<[SocketAddr]>;

/// The egress guard, shared by CONNECT handling and the upstream connector.
#[derive(Debug)]
pub struct Guard {
    allow_ports: Vec<u16>,
    allow_private: Vec<IpNet>,
    pinned: HashMap<(String, u16), Addrs>,
    dns: Cache<(String, u16), Addrs>,
}

impl Guard {
    /// Builds the guard from `egress.*` and `upstream.resolve` (pinned addresses).
    pub fn new(egress: &EgressConfig, resolve: &BTreeMap<String, SocketAddr>) -> Guard {
        let pinned = resolve
            .iter()
            .filter_map(|(k, addr)| {
                let (host, port) = split_host_port(k)?;
                Some(((host.to_ascii_lowercase(), port), Arc::from([*addr])))
            })
            .collect();
        Guard {
            allow_ports: egress.allow_ports.clone(),
            allow_private: egress.allow_private.clone(),
            pinned,
            dns: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(egress.dns_ttl)
                .build(),
        }
    }

    /// Checks a destination and returns the addresses that may be dialed for it.
    /// `host` must already be lowercase (see [`crate::authority::normalize_host`]).
    pub async fn check(&self, host: &str, port: u16) -> Result<Addrs, Denial> {
        if !self.allow_ports.contains(&port) {
            return Err(Denial::new(
                Gate::Guard,
                StatusCode::FORBIDDEN,
                "port_not_allowed",
                format!(
                    "port {port} is not an allowed destination port (egress.allow_ports = {:?})",
                    self.allow_ports
                ),
            ));
        }
        // Operator-pinned names are trusted as configured, like curl --resolve.
        if let Some(addrs) = self.pinned.get(&(host.to_owned(), port)) {
            return Ok(addrs.clone());
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            self.check_ip(host, ip)?;
            return Ok(Arc::from([SocketAddr::new(ip, port)]));
        }
        let key = (host.to_owned(), port);
        let answers = self
            .dns
            .try_get_with(key, resolve(host, port))
            .await
            .map_err(|e: Arc<std::io::Error>| {
                Denial::new(
                    Gate::Guard,
                    StatusCode::BAD_GATEWAY,
                    "dns_failed",
                    format!("cannot resolve {host}: {e}"),
                )
            })?;
        let mut first_refusal = None;
        let allowed: Vec<SocketAddr> = answers
            .iter()
            .filter(|a| match self.check_ip(host, a.ip()) {
                Ok(()) => true,
                Err(d) => {
                    first_refusal.get_or_insert(d);
                    false
                }
            })
            .copied()
            .collect();
        match (allowed.is_empty(), first_refusal) {
            (false, _) => Ok(allowed.into()),
            (true, Some(denial)) => Err(denial),
            (true, None) => Err(Denial::new(
                Gate::Guard,
                StatusCode::BAD_GATEWAY,
                "dns_failed",
                format!("{host} has no addresses"),
            )),
        }
    }

    fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), Denial> {
        let Some(class) = special_purpose(ip) else {
            return Ok(());
        };
        if self.allow_private.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        Err(Denial::new(
            Gate::Guard,
            StatusCode::FORBIDDEN,
            "destination_not_allowed",
            format!(
                "{host} resolves to {ip}, a {class} address; add a CIDR to egress.allow_private to allow it"
            ),
        ))
    }
}

async fn resolve(host: &str, port: u16) -> Result<Addrs, std::io::Error> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    Ok(addrs.into())
}

/// Why an address is not a normal public unicast destination, if it is not.
pub fn special_purpose(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    Some(match o {
        [0, ..] => "unspecified (0.0.0.0/8)",
        [127, ..] => "loopback",
        [10, ..] => "private (10.0.0.0/8)",
        [172, b, ..] if (16..32).contains(&b) => "private (172.16.0.0/12)",
        [192, 168, ..] => "private (192.168.0.0/16)",
        [169, 254, ..] => "link-local (incl. cloud metadata 169.254.169.254)",
        [100, b, ..] if (64..128).contains(&b) => "carrier-grade NAT (100.64.0.0/10)",
        [192, 0, 0, _] => "IETF protocol assignment (192.0.0.0/24)",
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => "documentation",
        [198, b, ..] if b == 18 || b == 19 => "benchmarking (198.18.0.0/15)",
        [a, ..] if (224..240).contains(&a) => "multicast",
        [255, 255, 255, 255] => "broadcast",
        [a, ..] if a >= 240 => "reserved (240.0.0.0/4)",
        _ => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    Some(match s {
        // IPv4-mapped, IPv4-compatible, NAT64, 6to4 and Teredo all carry an IPv4 address
        // that could point anywhere, so they are refused whatever it is.
        [0, 0, 0, 0, 0, 0xffff, ..] => "IPv4-mapped IPv6",
        [0, 0, 0, 0, 0, 0, ..] => "IPv4-compatible IPv6",
        [0x64, 0xff9b, ..] => "IPv4-embedded IPv6 (NAT64)",
        [0x2002, ..] => "IPv4-embedded IPv6 (6to4)",
        [0x2001, 0, ..] => "IPv4-embedded IPv6 (Teredo)",
        [0x2001, 0xdb8, ..] => "documentation",
        [a, ..] if a & 0xfe00 == 0xfc00 => "unique local (fc00::/7)",
        [a, ..] if a & 0xffc0 == 0xfe80 => "link-local (fe80::/10)",
        [a, ..] if a & 0xffc0 == 0xfec0 => "site-local (fec0::/10)",
        [a, ..] if a & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(edit: impl FnOnce(&mut crate::config::Config)) -> Guard {
        let mut c = crate::config::Config::default();
        edit(&mut c);
        Guard::new(&c.egress, &c.upstream.resolve)
    }

    #[test]
    fn classifies_special_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:8.8.8.8",
            "::ffff:127.0.0.1",
            "64:ff9b::808:808",
            "2002:7f00:1::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
        ] {
            assert!(
                special_purpose(ip.parse().unwrap()).is_some(),
                "{ip} should be special"
            );
        }
        for ip in ["8.8.8.8", "140.82.112.6", "172.32.0.1", "2606:4700::1111"] {
            assert!(special_purpose(ip.parse().unwrap()).is_none(), "{ip}");
        }
    }

    #[tokio::test]
    async fn refuses_ports_and_private_ips() {
        let g = guard(|_| {});
        let d = g.check("8.8.8.8", 22).await.unwrap_err();
        assert_eq!((d.status.as_u16(), d.error), (403, "port_not_allowed"));
        let d = g.check("169.254.169.254", 443).await.unwrap_err();
        assert_eq!(d.error, "destination_not_allowed");
        assert!(d.reason.contains("metadata"), "{}", d.reason);
        let d = g.check("localhost", 443).await.unwrap_err();
        assert_eq!(d.error, "destination_not_allowed");
        assert_eq!(
            &*g.check("8.8.8.8", 443).await.unwrap(),
            &["8.8.8.8:443".parse().unwrap()]
        );
    }

    #[tokio::test]
    async fn allow_private_and_pins() {
        let g = guard(|c| {
            c.egress.allow_private = vec!["10.0.0.0/8".parse().unwrap()];
            c.upstream.resolve.insert(
                "api.github.com:443".into(),
                "127.0.0.1:9999".parse().unwrap(),
            );
        });
        assert!(g.check("10.2.3.4", 443).await.is_ok());
        assert!(g.check("192.168.0.1", 443).await.is_err());
        let a = g.check("api.github.com", 443).await.unwrap();
        assert_eq!(a[0], "127.0.0.1:9999".parse().unwrap());
    }
}
