//! Configuration: TOML file, embedded defaults, `AGENTGATE_<SECTION>_<KEY>` environment overrides.
//!
//! Precedence is defaults < file < environment < command-line flags. Unknown keys are
//! rejected with the key and the file (or variable) named, so a typo never silently
//! falls back to a default in a security product.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod fleet;
pub mod otel;
pub mod pod;
pub mod sections;
pub use fleet::FleetConfig;
pub use otel::{OtelConfig, OtlpProtocol};
pub use pod::{HealthConfig, PodConfig, TransparentConfig};
pub use sections::{
    AdminConfig, AdminTls, CaConfig, EgressConfig, IdentityConfig, LimitsConfig, LogConfig,
    LogFormat, ProxyConfig, UpstreamConfig,
};

/// Most async worker threads `proxy.workers` may ask for.
const MAX_WORKERS: usize = 1024;

/// Environment variables with the `AGENTGATE_` prefix that are not config overrides.
const RESERVED_ENV: &[&str] = &[
    "AGENTGATE_HOME",
    "AGENTGATE_CONFIG",
    "AGENTGATE_LOG",
    crate::seed::ADMIN_TOKEN_ENV,
    crate::seed::VAULT_KEY_ENV,
];

/// A configuration problem, with where it came from and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config in {origin}: {message}")]
    Invalid { origin: String, message: String },
}

impl ConfigError {
    fn invalid(origin: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            origin: origin.into(),
            message: message.into(),
        }
    }
}

/// The whole configuration of one AgentGate instance.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub proxy: ProxyConfig,
    pub admin: AdminConfig,
    pub transparent: TransparentConfig,
    pub health: HealthConfig,
    pub pod: PodConfig,
    pub fleet: FleetConfig,
    pub otel: OtelConfig,
    pub ca: CaConfig,
    pub upstream: UpstreamConfig,
    pub egress: EgressConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    pub identity: IdentityConfig,
    pub intent: IntentConfig,
    /// Remote MCP servers whose traffic is judged by its messages.
    pub mcp: McpConfig,
    pub policy: crate::policy::PolicyConfig,
    pub audit: crate::audit::AuditConfig,
    pub vault: crate::vault::VaultConfig,
    pub consent: crate::consent::config::ConsentConfig,
    pub webhooks: Vec<crate::webhooks::WebhookConfig>,
    /// `[tenants.<t>]`: each tenant's policy, consent, webhooks and admin token.
    pub tenants: BTreeMap<String, crate::tenants::TenantConfig>,
}

/// Gate 2: how requests are turned into AuthZEN tuples.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntentConfig {
    /// Bytes of a body read to find its meaning (GraphQL document, mail recipients, Slack
    /// channel); beyond it the body streams uninspected and `context.body_truncated` is set.
    pub max_body: usize,
    /// Where protocol upgrades (WebSocket) are allowed; anywhere else an `Upgrade` is
    /// refused, since after `101` the bytes are no longer requests the gates can judge.
    pub upgrades: Vec<crate::intent::UpgradeRoute>,
}

/// `[mcp]`: the remote MCP servers agents reach (`[[mcp.servers]]`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    pub servers: Vec<crate::intent::mcp::McpServer>,
}

impl Default for IntentConfig {
    fn default() -> Self {
        Self {
            max_body: 1 << 20,
            upgrades: Vec::new(),
        }
    }
}

impl Config {
    /// Each configured tenant's name, policy directory and shadow policy directory (for
    /// [`crate::policy::Policies`]).
    pub fn tenant_policy_dirs(&self) -> impl Iterator<Item = (&str, Option<&Path>, Option<&Path>)> {
        self.tenants.iter().map(|(name, t)| {
            let (dir, shadow) = (t.policy_dir.as_deref(), t.shadow_policy_dir.as_deref());
            (name.as_str(), dir, shadow)
        })
    }

    /// Loads defaults, then `file` (if any), then `AGENTGATE_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::parse(&text, &path.display().to_string())?
            }
            None => Config::default(),
        };
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::invalid(origin, e.to_string().trim_end()))
    }

    /// Applies `AGENTGATE_<SECTION>_<KEY>=<value>` overrides; the value is read as TOML,
    /// falling back to a plain string (so `127.0.0.1:0` needs no quotes).
    fn apply_env(
        &mut self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("AGENTGATE_") && !RESERVED_ENV.contains(&k.as_str()))
            .collect();
        if overrides.is_empty() {
            return Ok(());
        }
        overrides.sort();
        let mut table = toml::Table::try_from(&*self)
            .map_err(|e| ConfigError::invalid("defaults", e.to_string()))?;
        for (var, raw) in &overrides {
            let rest = var["AGENTGATE_".len()..].to_ascii_lowercase();
            let Some((section, key)) = rest.split_once('_') else {
                return Err(ConfigError::invalid(
                    var.as_str(),
                    "expected AGENTGATE_<SECTION>_<KEY>, e.g. AGENTGATE_PROXY_LISTEN",
                ));
            };
            let Some(toml::Value::Table(section_table)) = table.get_mut(section) else {
                return Err(ConfigError::invalid(
                    var.as_str(),
                    format!(
                        "unknown config section `{section}` (see config/agentgate.example.toml)"
                    ),
                ));
            };
            section_table.insert(key.to_owned(), parse_env_value(raw));
            // Deserialize after each override so the error names the variable at fault.
            Config::deserialize(toml::Value::Table(table.clone()))
                .map_err(|e| ConfigError::invalid(var.as_str(), e.to_string().trim_end()))?;
        }
        *self = Config::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError::invalid("environment", e.to_string()))?;
        Ok(())
    }

    /// Checks relations that types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, msg: &str| Err(ConfigError::invalid(key, msg));
        if self.egress.allow_ports.is_empty() {
            return bad(
                "egress.allow_ports",
                "must list at least one port, e.g. [443]",
            );
        }
        if self.egress.allow_ports.contains(&0) {
            return bad("egress.allow_ports", "port 0 is not a destination port");
        }
        if self.proxy.max_connections == 0 {
            return bad("proxy.max_connections", "must be at least 1");
        }
        if let Some(n) = self.proxy.workers
            && !(1..=MAX_WORKERS).contains(&n)
        {
            return bad(
                "proxy.workers",
                &format!("must be 1 to {MAX_WORKERS}, or left out for one per CPU"),
            );
        }
        if self.limits.max_header_bytes < 1024 {
            return bad("limits.max_header_bytes", "must be at least 1024");
        }
        if self.limits.max_headers == 0 {
            return bad("limits.max_headers", "must be at least 1");
        }
        if self.ca.leaf_validity < Duration::from_secs(3600) {
            return bad("ca.leaf_validity", "must be at least 1h");
        }
        if self.ca.leaf_cache_size == 0 {
            return bad("ca.leaf_cache_size", "must be at least 1");
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.mcp.servers {
            if let Err(why) = s.validate() {
                return bad("mcp.servers", &why);
            }
            if !names.insert(s.name.as_str()) {
                return bad(
                    "mcp.servers",
                    &format!("two servers are named {:?}; names must differ", s.name),
                );
            }
        }
        for u in &self.intent.upgrades {
            if !u.path.starts_with('/') || u.path.contains('?') {
                return bad(
                    "intent.upgrades",
                    "each path must be an exact path starting with / and without a query, e.g. \"/ws\"",
                );
            }
            if u.host.is_empty() || u.protocols.is_empty() {
                return bad(
                    "intent.upgrades",
                    "each entry needs a host and at least one protocol, e.g. protocols = [\"websocket\"]",
                );
            }
        }
        for (name, d) in [
            ("upstream.connect_timeout", self.upstream.connect_timeout),
            ("upstream.response_timeout", self.upstream.response_timeout),
            (
                "limits.header_read_timeout",
                self.limits.header_read_timeout,
            ),
            (
                "limits.tls_handshake_timeout",
                self.limits.tls_handshake_timeout,
            ),
            ("limits.idle_timeout", self.limits.idle_timeout),
            ("limits.body_read_timeout", self.limits.body_read_timeout),
        ] {
            if d.is_zero() {
                return bad(name, "must be greater than zero, e.g. \"10s\"");
            }
        }
        if self.audit.queue == 0 || self.audit.batch_max == 0 || self.audit.checkpoint_every == 0 {
            return bad(
                "audit",
                "queue, batch_max and checkpoint_every must be at least 1",
            );
        }
        if self.audit.commit_timeout.is_zero() || self.audit.checkpoint_interval.is_zero() {
            return bad(
                "audit",
                "commit_timeout and checkpoint_interval must be greater than zero",
            );
        }
        if self.audit.segment_max_bytes.as_u64() < 4096 || self.audit.segment_max_age.is_zero() {
            return bad(
                "audit",
                "segment_max_bytes must be at least 4KiB and segment_max_age greater than zero",
            );
        }
        if self.audit.group_commit_wait > crate::audit::config::GROUP_COMMIT_WAIT_MAX {
            return bad(
                "audit.group_commit_wait",
                "at most 10ms: a longer wait only adds latency (0s, the default, never waits)",
            );
        }
        if self.audit.retention.enabled() && self.audit.archive().is_none() {
            return bad(
                "audit.retention",
                "sealed segments are removed only once archived: set audit.archive_dir too",
            );
        }
        if self.intent.max_body == 0 || self.intent.max_body > 64 << 20 {
            return bad("intent.max_body", "must be between 1 byte and 64 MiB");
        }
        if self.policy.eval_timeout.is_zero() || self.policy.reload_interval.is_zero() {
            return bad(
                "policy",
                "eval_timeout and reload_interval must be greater than zero",
            );
        }
        if self.identity.audience.is_empty() {
            return bad("identity.audience", "must not be empty");
        }
        if spiffe::TrustDomain::new(&self.identity.trust_domain).is_err() {
            return bad(
                "identity.trust_domain",
                "must be a SPIFFE trust domain: lowercase letters, digits, '.', '-', '_'",
            );
        }
        for td in self.identity.bundles.keys() {
            if spiffe::TrustDomain::new(td).is_err() {
                return Err(ConfigError::invalid(
                    "identity.bundles",
                    format!("`{td}` is not a SPIFFE trust domain name"),
                ));
            }
        }
        if self.identity.leeway > Duration::from_secs(300) {
            return bad("identity.leeway", "must be at most 5m");
        }
        if self.identity.max_token_bytes < 512 {
            return bad("identity.max_token_bytes", "must be at least 512");
        }
        if self.identity.cache_size == 0 {
            return bad("identity.cache_size", "must be at least 1");
        }
        if let Err((key, message)) = self.fleet.validate() {
            return Err(ConfigError::invalid(key, message));
        }
        if let Err((key, message)) = self.otel.validate() {
            return Err(ConfigError::invalid(key, message));
        }
        if let Err((key, message)) = self.vault.validate() {
            return Err(ConfigError::invalid(key, message));
        }
        if self.fleet.enabled() && self.vault.fetch_timeout > fleet::MAX_FETCH_TIMEOUT {
            // A refresh holds the fleet's lease for at most this long, plus bus round trips.
            return Err(ConfigError::invalid(
                "vault.fetch_timeout",
                format!(
                    "must be at most {:?} with [fleet] (a refresh must end inside its {:?} lease)",
                    fleet::MAX_FETCH_TIMEOUT,
                    fleet::REFRESH_LEASE
                ),
            ));
        }
        if let Err((key, message)) = self.consent.validate() {
            return Err(ConfigError::invalid(key, message));
        }
        for hook in &self.webhooks {
            hook.check()
                .map_err(|m| ConfigError::invalid("webhooks", m))?;
        }
        if let Err((key, message)) = crate::tenants::validate(&self.tenants, &self.consent) {
            return Err(ConfigError::invalid(key, message));
        }
        for key in self.upstream.resolve.keys() {
            if crate::authority::split_host_port(key).is_none() {
                return Err(ConfigError::invalid(
                    "upstream.resolve",
                    format!("key `{key}` must be \"host:port\", e.g. \"api.github.com:443\""),
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// Whether an agent may be registered (or a vault connection stored) for `tenant`:
    /// any tenant while `[tenants]` is empty, otherwise a configured one.
    pub fn check_tenant(&self, tenant: Option<&str>) -> Result<(), ConfigError> {
        crate::tenants::check(&self.tenants, tenant).map_err(|m| ConfigError::invalid("tenants", m))
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.proxy.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:8081");
        assert_eq!(c.egress.allow_ports, vec![443]);
        assert!(c.egress.allow_private.is_empty());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[proxy]\nlisten_addr = \"x\"\n", "my.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("my.toml"), "{msg}");
        assert!(msg.contains("listen_addr"), "{msg}");
    }

    #[test]
    fn unknown_section_is_named() {
        let msg = Config::parse("[proxxy]\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("proxxy"), "{msg}");
    }

    #[test]
    fn env_overrides_file() {
        let c = Config::load(
            None,
            env(&[
                ("AGENTGATE_PROXY_LISTEN", "127.0.0.1:0"),
                ("AGENTGATE_EGRESS_ALLOW_PORTS", "[443, 8443]"),
                ("AGENTGATE_LIMITS_IDLE_TIMEOUT", "5s"),
                ("AGENTGATE_HOME", "/tmp/x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.proxy.listen.port(), 0);
        assert_eq!(c.egress.allow_ports, vec![443, 8443]);
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(5));
    }

    #[test]
    fn bad_env_is_named() {
        let msg = Config::load(None, env(&[("AGENTGATE_PROXY_LISTN", "x")]))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("AGENTGATE_PROXY_LISTN"), "{msg}");
        let msg = Config::load(None, env(&[("AGENTGATE_NOPE_X", "1")]))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("nope"), "{msg}");
    }

    #[test]
    fn group_commit_wait_is_off_by_default_and_bounded() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.audit.group_commit_wait, Duration::ZERO);
        let wait =
            |v: &str| Config::parse(&format!("[audit]\ngroup_commit_wait = \"{v}\"\n"), "f.toml");
        let c = wait("400us").unwrap();
        assert_eq!(c.audit.group_commit_wait, Duration::from_micros(400));
        assert!(c.validate().is_ok());
        let msg = wait("11ms").unwrap().validate().unwrap_err().to_string();
        assert!(
            msg.contains("audit.group_commit_wait") && msg.contains("10ms"),
            "{msg}"
        );
    }

    #[test]
    fn a_fleet_refuses_a_fetch_timeout_longer_than_its_refresh_lease_allows() {
        let fleet = "[fleet]\nurl = \"nats://127.0.0.1:4222\"\n";
        let c = Config::parse(
            &format!("{fleet}[vault]\nfetch_timeout = \"31s\"\n"),
            "f.toml",
        )
        .unwrap();
        let msg = c.validate().unwrap_err().to_string();
        assert!(
            msg.contains("vault.fetch_timeout") && msg.contains("30s"),
            "{msg}"
        );
        let alone = Config::parse("[vault]\nfetch_timeout = \"31s\"\n", "f.toml").unwrap();
        assert!(alone.validate().is_ok());
    }

    #[test]
    fn workers_are_unset_by_default_and_zero_is_refused() {
        assert_eq!(Config::default().proxy.workers, None);
        let c = Config::parse("[proxy]\nworkers = 1\n", "f.toml").unwrap();
        assert_eq!(c.proxy.workers, Some(1));
        assert!(c.validate().is_ok());
        for n in [0, MAX_WORKERS + 1] {
            let mut c = Config::default();
            c.proxy.workers = Some(n);
            let msg = c.validate().unwrap_err().to_string();
            assert!(msg.contains("proxy.workers"), "{msg}");
        }
    }

    #[test]
    fn validation_names_key() {
        let mut c = Config::default();
        c.egress.allow_ports.clear();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("egress.allow_ports")
        );
        let mut c = Config::default();
        c.upstream
            .resolve
            .insert("nohost".into(), "127.0.0.1:1".parse().unwrap());
        assert!(c.validate().unwrap_err().to_string().contains("nohost"));
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../config/agentgate.example.toml");
        let c = Config::parse(text, "agentgate.example.toml").unwrap();
        c.validate().unwrap();
    }
}
