//! Gate 5's store of credentials: connections per (tenant, service), the secrets behind them
//! (sealed at rest, see [`store`]), how a short-lived access token is obtained from each kind
//! ([`fetch`]), the credential cache with single-flight refresh, per-decision grants, the
//! ledger of what each agent received (for PANIC), and `agw_` references ([`references`]).

pub mod credentials;
pub mod fetch;
pub mod references;
pub mod revoke;
pub mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use credentials::{Credential, Grant, Vault};
// What differs per vendor (default origins, origins one connection serves) is the vendor's.
pub use crate::vendors::{Form, default_origin, form_at, served_by};

/// `[vault]`: where secrets live and how tokens are fetched and cached.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaultConfig {
    /// The sealing key; empty means `vault.key` in the state dir.
    pub key_file: PathBuf,
    /// Longest one token-endpoint call may take; beyond it the request gets 503.
    #[serde(with = "humantime_serde")]
    pub fetch_timeout: Duration,
    /// A cached credential is renewed this long before it expires.
    #[serde(with = "humantime_serde")]
    pub refresh_skew: Duration,
    /// Most credentials cached.
    pub cache_size: u64,
    /// After a token-endpoint failure, the same failure is answered for this long without
    /// calling again (no retry storm against a provider that is down).
    #[serde(with = "humantime_serde")]
    pub failure_backoff: Duration,
    /// How long one decision's grant (its credential, for retries of the same tuple) lives.
    #[serde(with = "humantime_serde")]
    pub grant_ttl: Duration,
    /// Lifetime of `agw_` references.
    #[serde(with = "humantime_serde")]
    pub reference_ttl: Duration,
    /// OAuth clients used to refresh `oauth` connections, by provider name.
    pub providers: BTreeMap<String, ClientConfig>,
    /// Auth0 Token Vault, for `auth0` connections.
    pub auth0: Option<ClientConfig>,
}

impl Default for VaultConfig {
    fn default() -> Self {
        Self {
            key_file: PathBuf::new(),
            fetch_timeout: Duration::from_secs(5),
            refresh_skew: Duration::from_secs(60),
            cache_size: 1024,
            failure_backoff: Duration::from_secs(2),
            grant_ttl: Duration::from_secs(60),
            reference_ttl: Duration::from_secs(60),
            providers: BTreeMap::new(),
            auth0: None,
        }
    }
}

impl VaultConfig {
    /// Checks bounds that types cannot express; `Err` is (key, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: &str| Err((format!("vault.{k}"), m.to_owned()));
        if self.fetch_timeout.is_zero() || self.failure_backoff.is_zero() {
            return bad(
                "fetch_timeout",
                "fetch_timeout and failure_backoff must be greater than zero",
            );
        }
        if self.cache_size == 0 {
            return bad("cache_size", "must be at least 1");
        }
        if self.grant_ttl.is_zero() || self.grant_ttl > Duration::from_secs(60) {
            return bad("grant_ttl", "must be between 1s and 60s");
        }
        if self.reference_ttl.is_zero() || self.reference_ttl > Duration::from_secs(3600) {
            return bad("reference_ttl", "must be between 1s and 1h");
        }
        let clients = self
            .providers
            .iter()
            .map(|(n, c)| (format!("providers.{n}"), c))
            .chain(self.auth0.iter().map(|c| ("auth0".to_owned(), c)));
        for (key, c) in clients {
            if let Err(m) = c.check(key == "auth0") {
                return Err((format!("vault.{key}"), m));
            }
        }
        Ok(())
    }
}

/// An OAuth client at a token endpoint (a provider's, or Auth0's).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// Auth0 only: `https://<tenant>.auth0.com`; the endpoints default to paths under it.
    pub domain: String,
    pub token_url: String,
    /// RFC 7009 revocation endpoint (PANIC); empty when the provider has none.
    pub revoke_url: String,
    pub client_id: String,
    /// Environment variable holding the client secret.
    pub client_secret_env: String,
    /// File holding the client secret (0600).
    pub client_secret_file: PathBuf,
    pub client_auth: ClientAuth,
}

impl ClientConfig {
    /// The token endpoint: `token_url`, or `{domain}/oauth/token` for Auth0.
    pub fn token_endpoint(&self) -> String {
        endpoint(&self.token_url, &self.domain, "/oauth/token")
    }

    /// The revocation endpoint, if any.
    pub fn revoke_endpoint(&self) -> Option<String> {
        Some(endpoint(&self.revoke_url, &self.domain, "/oauth/revoke")).filter(|u| !u.is_empty())
    }

    fn check(&self, auth0: bool) -> Result<(), String> {
        if self.client_id.is_empty() {
            return Err("client_id is required".into());
        }
        if self.client_secret_env.is_empty() == self.client_secret_file.as_os_str().is_empty() {
            return Err("set exactly one of client_secret_env and client_secret_file".into());
        }
        let from_domain = auth0 && !self.domain.is_empty();
        if self.token_url.is_empty() && !from_domain {
            return Err(if auth0 {
                "set domain (https://<tenant>.auth0.com) or token_url".into()
            } else {
                "token_url is required".into()
            });
        }
        for url in std::iter::once(self.token_endpoint()).chain(self.revoke_endpoint()) {
            fetch::check_endpoint(&url)?;
        }
        Ok(())
    }
}

fn endpoint(explicit: &str, domain: &str, path: &str) -> String {
    if !explicit.is_empty() || domain.is_empty() {
        return explicit.to_owned();
    }
    format!("{}{path}", domain.trim_end_matches('/'))
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
}

/// What a connection holds and how a usable token comes from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A token used as is (a GitHub fine-grained PAT, a Slack bot token).
    Static,
    /// A refresh token, exchanged at the provider's token endpoint.
    Oauth,
    /// A GitHub App's private key, minting installation tokens.
    GithubApp,
    /// A user's Auth0 refresh token, exchanged at Auth0 Token Vault.
    Auth0,
}

impl Kind {
    /// The name used in the CLI, the database and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Static => "static",
            Kind::Oauth => "oauth",
            Kind::GithubApp => "github-app",
            Kind::Auth0 => "auth0",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "static" => Kind::Static,
            "oauth" => Kind::Oauth,
            "github-app" => Kind::GithubApp,
            "auth0" => Kind::Auth0,
            _ => return None,
        })
    }
}

/// The non-secret settings of a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Authorization scheme: `Bearer` or `token`.
    pub scheme: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Scopes requested when policy names none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installation_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// Auth0 connection name (`github`, `google-oauth2`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
}

/// A connection: one credential source for one service, as listed (never its secret).
#[derive(Debug, Clone, Serialize)]
pub struct Connection {
    pub id: String,
    pub tenant: String,
    pub service: String,
    /// The agent owner it serves; empty for any owner.
    pub user: String,
    pub kind: Kind,
    /// `host` (port 443) or `host:port`: the only origin the credential is sent to.
    pub origin: String,
    pub settings: Settings,
    pub fingerprint: String,
    pub expires: Option<i64>,
    pub created: i64,
    pub updated: i64,
    pub revoked: Option<i64>,
}

/// A secret value: never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    /// The value, for sealing, sending to a token endpoint, or injecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Normalizes `https://host[:port]` to the origin key (`host`, or `host:port` off 443).
/// Credentials go over TLS only, so other schemes are refused.
pub fn origin_key(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("https://").ok_or_else(|| {
        format!("origin `{url}` must start with https:// (credentials never travel in cleartext)")
    })?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "origin `{url}` must be https://host[:port], with no path"
        ));
    }
    let (host, port) = crate::authority::split_authority(rest)
        .ok_or_else(|| format!("origin `{url}` has an invalid port"))?;
    let host = crate::authority::normalize_host(host)
        .ok_or_else(|| format!("origin `{url}` has an invalid host"))?;
    let bracketed = host.contains(':');
    Ok(match (bracketed, port.filter(|p| *p != 443)) {
        (false, None) => host,
        (false, Some(p)) => format!("{host}:{p}"),
        (true, None) => format!("[{host}]"),
        (true, Some(p)) => format!("[{host}]:{p}"),
    })
}

/// A vault problem, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("vault database {path}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(
        "the vault key {key} is missing, but {db} holds {secrets} sealed secret(s) it protects; restore the key file (or set vault.key_file), or move {db} away to start an empty vault"
    )]
    MissingKey {
        key: PathBuf,
        db: PathBuf,
        secrets: i64,
    },
    #[error(
        "the vault key {key} does not match {db} (it was sealed with another key); restore the right key file, or move {db} away to start an empty vault"
    )]
    WrongKey { key: PathBuf, db: PathBuf },
    #[error("the vault key {path} is unusable: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error(
        "vault connection {id} is damaged: {reason}; remove it with `agentgate vault rm {id}` and set it again"
    )]
    Corrupt { id: String, reason: String },
    #[error("vault connection {0} no longer exists; see `agentgate vault list`")]
    Gone(String),
    #[error("the system random generator or cipher failed")]
    Crypto,
    #[error("vault.{key}: {reason}")]
    Config { key: String, reason: String },
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_origins() {
        assert_eq!(
            origin_key("https://API.github.com/").unwrap(),
            "api.github.com"
        );
        assert_eq!(
            origin_key("https://api.github.com:443").unwrap(),
            "api.github.com"
        );
        assert_eq!(
            origin_key("https://h.example:8443").unwrap(),
            "h.example:8443"
        );
        assert!(origin_key("http://api.github.com").is_err());
        assert!(origin_key("https://api.github.com/v3").is_err());
        assert!(origin_key("https://user@api.github.com").is_err());
    }

    #[test]
    fn validates_clients() {
        let mut c = VaultConfig::default();
        c.providers.insert(
            "google".into(),
            ClientConfig {
                token_url: "http://oauth.example/token".into(),
                client_id: "id".into(),
                client_secret_env: "X".into(),
                ..ClientConfig::default()
            },
        );
        let err = c.validate().unwrap_err();
        assert!(err.1.contains("https"), "{err:?}");
        c.providers.get_mut("google").unwrap().token_url = "http://127.0.0.1:9/token".into();
        c.validate().unwrap();
        c.auth0 = Some(ClientConfig {
            domain: "https://t.auth0.com".into(),
            client_id: "id".into(),
            client_secret_file: "/s".into(),
            ..ClientConfig::default()
        });
        c.validate().unwrap();
        assert_eq!(
            c.auth0.as_ref().unwrap().revoke_endpoint().unwrap(),
            "https://t.auth0.com/oauth/revoke"
        );
    }
}
