//! A connection (one service's credential source for a tenant or owner), its kinds, and
//! the origin key it is stored under. Which origins a vendor's connection also serves, and
//! the form the credential takes there, are the vendor's (`crate::vendors`).

use serde::{Deserialize, Serialize};

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

impl Connection {
    /// Whether `other` is this connection apart from its secret (a rotated refresh token
    /// changes only the fingerprint and the update time).
    pub fn same_but_secret(&self, other: &Connection) -> bool {
        // Destructured, so a field added later is compared or knowingly left out.
        let Connection {
            id,
            tenant,
            service,
            user,
            kind,
            origin,
            settings,
            fingerprint: _,
            expires,
            created,
            updated: _,
            revoked,
        } = self;
        let o = other;
        (id, tenant, service, user, kind, origin, settings)
            == (
                &o.id,
                &o.tenant,
                &o.service,
                &o.user,
                &o.kind,
                &o.origin,
                &o.settings,
            )
            && (expires, created, revoked) == (&o.expires, &o.created, &o.revoked)
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

#[cfg(test)]
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
}
