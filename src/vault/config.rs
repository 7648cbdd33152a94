//! `[vault]` and its OAuth clients: plain configuration, validated at start.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::outbound::ClientAuth;

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
            crate::outbound::check_endpoint(&url)?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
