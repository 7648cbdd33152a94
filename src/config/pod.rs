//! The sections for running beside an agent in a pod: the transparent listener the kernel
//! redirects the pod's traffic to, the probe listener, and who "the pod" is as a caller.
//! A leaf: it imports nothing from the crate.

use std::net::SocketAddr;

use serde::{Deserialize, Deserializer, Serialize};

/// `[transparent]`: connections redirected by iptables (`agentgate k8s iptables`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransparentConfig {
    /// Addresses to accept redirected connections on (one or a list); empty: off.
    #[serde(deserialize_with = "one_or_many")]
    pub listen: Vec<SocketAddr>,
}

/// `[health]`: plain-HTTP `/healthz` and `/readyz` for kubelet probes, nothing else.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Address of the probe listener; unset: off (the admin listener serves both anyway).
    pub listen: Option<SocketAddr>,
}

/// `[pod]`: the caller for traffic that carries no credential of its own — connections the
/// transparent listener takes, and (with `loopback_is_pod`) explicit-proxy requests from
/// loopback without `Proxy-Authorization`. In a pod only its own containers reach loopback.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PodConfig {
    /// The registered agent the pod is (registered at start if missing). Empty: the pod's
    /// own JWT-SVID from the SPIFFE Workload API (`identity.workload_api`).
    pub agent: String,
    /// Owner recorded when `agent` is registered at start.
    pub owner: String,
    /// Treat explicit-proxy requests from loopback without `Proxy-Authorization` as the pod.
    pub loopback_is_pod: bool,
}

impl PodConfig {
    /// Whether some traffic is attributed to the pod itself.
    pub fn in_use(&self, transparent: &TransparentConfig) -> bool {
        self.loopback_is_pod || !transparent.listen.is_empty()
    }
}

/// `listen = "127.0.0.1:15001"` or `listen = ["127.0.0.1:15001", "[::1]:15001"]`.
pub(super) fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        One(T),
        Many(Vec<T>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(a) => vec![a],
        OneOrMany::Many(v) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_one_address_or_a_list() {
        let one: TransparentConfig = toml::from_str(r#"listen = "127.0.0.1:15001""#).unwrap();
        assert_eq!(one.listen, vec!["127.0.0.1:15001".parse().unwrap()]);
        let many: TransparentConfig =
            toml::from_str(r#"listen = ["127.0.0.1:15001", "[::1]:15001"]"#).unwrap();
        assert_eq!(many.listen.len(), 2);
        assert!(toml::from_str::<TransparentConfig>(r#"listen = "nope""#).is_err());
    }
}
