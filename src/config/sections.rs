//! The plain sections of the configuration that subsystems below the config take on their
//! own (each subsystem is handed its section, never the whole [`crate::config::Config`]).
//! A leaf: it imports nothing from the crate.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The agent-facing proxy listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Address the forward proxy listens on.
    pub listen: SocketAddr,
    /// Concurrent client connections; beyond it new connections get a 503 and are closed.
    pub max_connections: usize,
    /// Async worker threads; unset: one fewer than the CPUs the process may use, at least one.
    pub workers: Option<usize>,
}

impl ProxyConfig {
    /// The async worker threads to start: `workers`, else one per CPU this process may use
    /// but one, left to the audit writer thread every request waits for (at least one).
    pub fn worker_threads(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            default_workers(std::thread::available_parallelism().map_or(1, |n| n.get()))
        })
    }
}

/// Workers for `cpus` CPUs when `proxy.workers` is unset.
fn default_workers(cpus: usize) -> usize {
    cpus.saturating_sub(1).max(1)
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_connections: 4096,
            workers: None,
        }
    }
}

/// The admin listener (health, later the API and dashboard).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Listening beyond loopback needs this and `tls`: the API approves and revokes.
    pub allow_remote: bool,
    /// Serve the admin listener over TLS.
    pub tls: Option<AdminTls>,
    /// The URL people reach the dashboard at (for `agentgate dashboard` links) when it is
    /// not the listen address, e.g. behind a load balancer.
    pub public_url: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            allow_remote: false,
            tls: None,
            public_url: None,
        }
    }
}

/// TLS for the admin listener (required to listen beyond loopback).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key (keep it 0600).
    pub key: PathBuf,
}

/// The interception CA and the leaf certificates it mints.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaConfig {
    /// Lifetime of a minted leaf certificate.
    #[serde(with = "humantime_serde")]
    pub leaf_validity: Duration,
    /// Leaf certificates kept in memory (one per host).
    pub leaf_cache_size: u64,
    /// Where to write the CA bundle agents trust (system roots + this CA) at start, e.g. a
    /// volume shared with the agent's container; unset: only `agentgate env` writes one.
    pub export_bundle: Option<PathBuf>,
}

impl Default for CaConfig {
    fn default() -> Self {
        Self {
            leaf_validity: Duration::from_secs(24 * 3600),
            leaf_cache_size: 10_000,
            export_bundle: None,
        }
    }
}

/// How AgentGate reaches upstream servers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Extra PEM CA files trusted for upstream TLS, added to the system roots.
    pub extra_roots: Vec<PathBuf>,
    /// `"host:port" = "ip:port"` overrides of DNS, like curl's `--resolve`.
    pub resolve: BTreeMap<String, SocketAddr>,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time allowed for the upstream's response headers.
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// How long an idle pooled upstream connection is kept.
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per upstream host.
    pub pool_max_idle_per_host: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            extra_roots: Vec::new(),
            resolve: BTreeMap::new(),
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 64,
        }
    }
}

/// Egress guard: which destinations may be dialed at all.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressConfig {
    /// Destination ports allowed for CONNECT and plain HTTP.
    pub allow_ports: Vec<u16>,
    /// Private, loopback or otherwise special ranges that may be dialed anyway.
    pub allow_private: Vec<IpNet>,
    /// How long a checked DNS answer is reused.
    #[serde(with = "humantime_serde")]
    pub dns_ttl: Duration,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            allow_ports: vec![443],
            allow_private: Vec::new(),
            dns_ttl: Duration::from_secs(30),
        }
    }
}

/// Bounds on what a client may send and how long it may take.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request head (request line + headers) in bytes; beyond it 431.
    pub max_header_bytes: usize,
    /// Most request headers; beyond it 431.
    pub max_headers: usize,
    /// Time a client has to send a complete request head.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time a client has to finish the TLS handshake after CONNECT.
    #[serde(with = "humantime_serde")]
    pub tls_handshake_timeout: Duration,
    /// Longest wait for the next piece of a request body (a stalled upload); beyond it 408.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// A client connection with no request in flight for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Largest request body in bytes (absent: unlimited, streamed); beyond it 413.
    pub max_request_body: Option<u64>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_request_body: None,
        }
    }
}

/// Gate 1: who may use the proxy (JWT-SVIDs) and where their keys come from.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// The audience every JWT-SVID must carry in `aud`.
    pub audience: String,
    /// Trust domain of the built-in issuer (`spiffe://<trust_domain>/agent/<name>`).
    pub trust_domain: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Default lifetime of tokens from `agentgate agents register`.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Longest token accepted, in bytes.
    pub max_token_bytes: usize,
    /// Verified tokens remembered (by SHA-256) so each is verified once.
    pub cache_size: u64,
    /// Trust JWT bundles streamed from the SPIFFE Workload API (also on when
    /// `SPIFFE_ENDPOINT_SOCKET` is set).
    pub workload_api: bool,
    /// Workload API address (`unix:///path`); empty means `SPIFFE_ENDPOINT_SOCKET`.
    pub workload_api_socket: String,
    /// Federated trust domains: `"example.org" = "path/bundle.jwks"` (reloaded on change).
    pub bundles: BTreeMap<String, PathBuf>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            audience: "agentgate".into(),
            trust_domain: "agentgate.local".into(),
            leeway: Duration::from_secs(30),
            token_ttl: Duration::from_secs(24 * 3600),
            max_token_bytes: 8192,
            cache_size: 10_000,
            workload_api: false,
            workload_api_socket: String::new(),
            bundles: BTreeMap::new(),
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `agentgate=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_workers_leave_one_cpu_to_the_audit_writer() {
        assert_eq!(
            [1, 2, 4, 16].map(default_workers),
            [1, 1, 3, 15],
            "one CPU gets one worker; more leave one free"
        );
        let set = ProxyConfig {
            workers: Some(2),
            ..ProxyConfig::default()
        };
        assert_eq!(set.worker_threads(), 2);
        assert!(ProxyConfig::default().worker_threads() >= 1);
    }
}
