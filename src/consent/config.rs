//! `[consent]` and `[consent.ciba]`: who answers consents, how long they stay open, how
//! many may be pending, and how the CIBA provider is reached.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::outbound::{ClientAuth, check_endpoint};

/// `[consent]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsentConfig {
    /// Who answers: the local approver (CLI, admin API, dashboard) or a CIBA provider.
    pub backend: Backend,
    /// `hold` the request until answered, or answer at once and let the agent retry.
    pub mode: Mode,
    /// How long a consent stays open (and a held request waits).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Most consents pending at once; beyond it 429.
    pub max_pending: usize,
    /// Most consents pending per agent; beyond it 429.
    pub max_pending_per_agent: usize,
    /// `Retry-After` on an async pending answer.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// Longest approval window (`approve --for`).
    #[serde(with = "humantime_serde")]
    pub max_window: Duration,
    pub ciba: Option<CibaConfig>,
}

impl Default for ConsentConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Local,
            mode: Mode::Hold,
            timeout: Duration::from_secs(300),
            max_pending: 1000,
            max_pending_per_agent: 20,
            retry_after: Duration::from_secs(5),
            max_window: Duration::from_secs(24 * 3600),
            ciba: None,
        }
    }
}

impl ConsentConfig {
    /// Checks what types cannot; `Err` is (key, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: &str| Err((format!("consent.{k}"), m.to_owned()));
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(7 * 24 * 3600) {
            return bad("timeout", "must be between 1s and 7d");
        }
        if self.max_pending == 0 || self.max_pending_per_agent == 0 {
            return bad(
                "max_pending",
                "max_pending and max_pending_per_agent must be at least 1",
            );
        }
        if self.max_window.is_zero() {
            return bad("max_window", "must be greater than zero");
        }
        match (&self.backend, &self.ciba) {
            (Backend::Ciba, None) => bad(
                "backend",
                "\"ciba\" needs a [consent.ciba] section (issuer, client_id, client secret)",
            ),
            (_, Some(c)) => c.check().map_err(|m| ("consent.ciba".to_owned(), m)),
            _ => Ok(()),
        }
    }
}

/// Who answers consents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Local,
    Ciba,
}

/// What the agent sees while a consent is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The request waits for the answer (up to `consent.timeout`).
    Hold,
    /// `403` with the consent id at once; the identical retry passes once approved.
    Async,
}

/// `[consent.ciba]`: an OpenID CIBA provider (Auth0, or any with a discovery document).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CibaConfig {
    /// Issuer URL; its `/.well-known/openid-configuration` names the endpoints.
    pub issuer: String,
    pub client_id: String,
    pub client_secret_env: String,
    pub client_secret_file: PathBuf,
    pub client_auth: ClientAuth,
    pub delivery: Delivery,
    /// Ping: where the provider notifies; empty means the admin listener's
    /// `/api/v1/ciba/notify`.
    pub notification_url: String,
    pub login_hint_format: HintFormat,
    /// `iss` of an `iss_sub` hint; empty means the issuer with a trailing `/` (Auth0's form).
    pub login_hint_iss: String,
    /// Agent owner → the provider's user id; an owner not listed is sent as is.
    pub users: BTreeMap<String, String>,
    pub scope: String,
    /// Sent when not empty (Auth0: the API whose consent is asked).
    pub audience: String,
    #[serde(with = "humantime_serde")]
    pub requested_expiry: Duration,
    /// When not empty, the AuthZEN tuple is sent as `authorization_details` of this type
    /// (RFC 9396), so the approver sees exactly what will happen.
    pub authorization_details_type: String,
}

impl Default for CibaConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            client_id: String::new(),
            client_secret_env: String::new(),
            client_secret_file: PathBuf::new(),
            client_auth: ClientAuth::ClientSecretBasic,
            delivery: Delivery::Poll,
            notification_url: String::new(),
            login_hint_format: HintFormat::IssSub,
            login_hint_iss: String::new(),
            users: BTreeMap::new(),
            scope: "openid".into(),
            audience: String::new(),
            requested_expiry: Duration::from_secs(300),
            authorization_details_type: String::new(),
        }
    }
}

impl CibaConfig {
    fn check(&self) -> Result<(), String> {
        if self.issuer.is_empty() || self.client_id.is_empty() {
            return Err("issuer and client_id are required".into());
        }
        if self.client_secret_env.is_empty() == self.client_secret_file.as_os_str().is_empty() {
            return Err("set exactly one of client_secret_env and client_secret_file".into());
        }
        if !self.scope.split_whitespace().any(|s| s == "openid") {
            return Err("scope must include openid (CIBA requires it)".into());
        }
        let expiry = self.requested_expiry.as_secs();
        if !(1..=259_200).contains(&expiry) {
            return Err("requested_expiry must be between 1s and 72h".into());
        }
        check_endpoint(&self.issuer)?;
        if !self.notification_url.is_empty() {
            check_endpoint(&self.notification_url)?;
        }
        Ok(())
    }
}

/// How the CIBA provider delivers the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    Poll,
    Ping,
}

/// How the user is named in `login_hint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HintFormat {
    /// Auth0's `{"format":"iss_sub","iss":…,"sub":…}`.
    IssSub,
    /// The user id as is.
    Plain,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_ciba_settings() {
        let mut c = ConsentConfig {
            backend: Backend::Ciba,
            ..ConsentConfig::default()
        };
        assert!(c.validate().unwrap_err().1.contains("[consent.ciba]"));
        c.ciba = Some(CibaConfig {
            issuer: "https://t.auth0.com/".into(),
            client_id: "id".into(),
            client_secret_env: "S".into(),
            ..CibaConfig::default()
        });
        c.validate().unwrap();
        c.ciba.as_mut().unwrap().scope = "profile".into();
        assert!(c.validate().unwrap_err().1.contains("openid"));
    }
}
