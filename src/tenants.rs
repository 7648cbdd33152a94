//! Multi-tenancy: `[tenants.<t>]` in the config. A tenant's agents carry
//! `spiffe://<td>/tenant/<t>/agent/<name>`; each tenant has its own policy directory,
//! consent settings (and store, `tenants/<t>/consents.db`), webhooks and admin token. With
//! no `[tenants]` at all a tenant in a SPIFFE ID is only a label (instance policy and
//! consents); once tenants are configured, an agent of any other tenant is refused.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::consent::config::ConsentConfig;
use crate::state::{StateDir, StateError};
use crate::webhooks::WebhookConfig;

/// Directory under the state dir holding one directory per tenant.
pub const DIR: &str = "tenants";

/// One `[tenants.<t>]` entry.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    /// Policy directory; absent means `<state>/tenants/<t>/policies`, seeded with the
    /// default policy on first start (never overwritten).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_dir: Option<PathBuf>,
    /// A candidate policy evaluated beside the tenant's own, never affecting it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow_policy_dir: Option<PathBuf>,
    /// The tenant's own `[consent]` section; absent means the instance's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent: Option<ConsentConfig>,
    /// The tenant's own webhook endpoints (its consent and PANIC events only; the
    /// instance's `[[webhooks]]` get every tenant's events too).
    pub webhooks: Vec<WebhookConfig>,
    /// Admin token file for this tenant's scope; absent means
    /// `<state>/tenants/<t>/admin.token` (created 0600 on start when missing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
}

/// The tenant's own state directory, `<state>/tenants/<t>` (created 0700).
pub fn state_dir(state: &StateDir, tenant: &str) -> Result<StateDir, StateError> {
    let parent = state.path(DIR);
    if !parent.exists() {
        std::fs::create_dir_all(&parent).map_err(|source| StateError::Io {
            action: "create directory",
            path: parent.clone(),
            source,
        })?;
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| StateError::Io {
                action: "set permissions on",
                path: parent.clone(),
                source,
            },
        )?;
    }
    StateDir::open_or_create(parent.join(tenant))
}

/// Where the tenant's admin token lives.
pub fn token_path(state: &StateDir, tenant: &str, config: &TenantConfig) -> PathBuf {
    config.admin_token_file.clone().unwrap_or_else(|| {
        state
            .path(DIR)
            .join(tenant)
            .join(crate::instance::TOKEN_FILE)
    })
}

/// Every configured tenant's admin token, `(tenant, token)`, each created (0600) when its
/// file is missing.
pub fn admin_tokens(
    state: &StateDir,
    tenants: &std::collections::BTreeMap<String, TenantConfig>,
) -> Result<Vec<(String, String)>, StateError> {
    let mut out = Vec::with_capacity(tenants.len());
    for (name, t) in tenants {
        // The default location needs the tenant's directory first.
        if t.admin_token_file.is_none() {
            state_dir(state, name)?;
        }
        let token = crate::instance::admin_token_at(&token_path(state, name, t))?;
        out.push((name.clone(), token));
    }
    Ok(out)
}

/// The tenant in a SPIFFE ID of the form `spiffe://<td>/tenant/<t>/agent/<name>`.
pub fn of_spiffe_id(id: &str) -> Option<&str> {
    let path = id.strip_prefix("spiffe://")?;
    let mut parts = path.split('/').skip(1);
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("tenant"), Some(t), Some("agent"), Some(_), None) => Some(t),
        _ => None,
    }
}

/// Whether `tenant` may be used: always when no tenants are configured (a label only),
/// otherwise only a configured one. `Err` says which are configured and where.
pub fn check(
    tenants: &std::collections::BTreeMap<String, TenantConfig>,
    tenant: Option<&str>,
) -> Result<(), String> {
    match tenant {
        Some(t) if !tenants.is_empty() && !tenants.contains_key(t) => Err(format!(
            "tenant {t:?} is not configured; configured tenants: {} (add [tenants.{t}] to the config file to create it)",
            tenants
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        _ => Ok(()),
    }
}

/// Checks the `[tenants]` section; `Err` is (key, message).
pub fn validate(
    tenants: &std::collections::BTreeMap<String, TenantConfig>,
    instance_consent: &ConsentConfig,
) -> Result<(), (String, String)> {
    let mut urls: Vec<(&str, String)> = Vec::new();
    if let Some(c) = instance_consent.ciba.as_ref() {
        if !c.notification_url.is_empty() {
            urls.push((&c.notification_url, "consent.ciba.notification_url".into()));
        }
    }
    for (name, t) in tenants {
        let key = |k: &str| format!("tenants.{name}.{k}");
        if crate::identity::issuer::check_name("tenant", name).is_err() {
            return Err((
                format!("tenants.{name}"),
                "a tenant name is 1-64 letters, digits, '.', '_' or '-' (not '.' or '..'), as in spiffe://<td>/tenant/<name>/agent/…".into(),
            ));
        }
        if let Some(dir) = &t.policy_dir {
            if dir.as_os_str().is_empty() {
                return Err((
                    key("policy_dir"),
                    "must not be empty; leave it out for <state>/tenants/<t>/policies".into(),
                ));
            }
        }
        if let Some(f) = &t.admin_token_file {
            if f.as_os_str().is_empty() {
                return Err((
                    key("admin_token_file"),
                    "must not be empty; leave it out for <state>/tenants/<t>/admin.token".into(),
                ));
            }
        }
        if let Some(c) = &t.consent {
            c.validate()
                .map_err(|(k, m)| (format!("tenants.{name}.{k}"), m))?;
            if let Some(url) = c.ciba.as_ref().map(|c| &c.notification_url) {
                if !url.is_empty() {
                    urls.push((url, key("consent.ciba.notification_url")));
                }
            }
        }
        for hook in &t.webhooks {
            hook.check().map_err(|m| (key("webhooks"), m))?;
        }
    }
    // Pings are routed by URL: two CIBA clients cannot share one.
    for (i, (url, key)) in urls.iter().enumerate() {
        if let Some((_, other)) = urls[..i].iter().find(|(u, _)| u == url) {
            return Err((
                key.clone(),
                format!(
                    "{url} is also {other}; each CIBA client needs its own ping URL (leave it empty for the default /api/v1/ciba/notify/<tenant>)"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commented `[tenants.acme]` example, uncommented, is a valid config.
    #[test]
    fn example_tenant_parses() {
        let text = include_str!("../config/agentgate.example.toml");
        let start = text.find("# [tenants.acme]").unwrap();
        let toml: String = text[start..]
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                (l.starts_with('[') && l.ends_with(']'))
                    || l.split_once(" = ").is_some_and(|(k, _)| {
                        k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    })
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let c = crate::config::Config::parse(&toml, "example").unwrap();
        c.validate().unwrap();
        let acme = &c.tenants["acme"];
        assert!(acme.policy_dir.is_some() && acme.admin_token_file.is_some());
        assert_eq!(
            acme.consent.as_ref().unwrap().backend,
            crate::consent::Backend::Ciba
        );
        assert_eq!(acme.webhooks.len(), 1);
    }

    #[test]
    fn bad_tenants_name_the_key() {
        let bad = |toml: &str| {
            crate::config::Config::parse(toml, "t.toml")
                .and_then(|c| c.validate().map(|_| c))
                .unwrap_err()
                .to_string()
        };
        let e = bad("[tenants.\"a/b\"]\n");
        assert!(e.contains("tenants.a/b"), "{e}");
        let e = bad("[tenants.acme]\npolicy_dirr = \"x\"\n");
        assert!(e.contains("policy_dirr"), "{e}");
        let e = bad("[tenants.acme.consent]\ntimeout = \"0s\"\n");
        assert!(e.contains("tenants.acme.consent.timeout"), "{e}");
        let e = bad(
            "[[tenants.acme.webhooks]]\nurl = \"http://hooks.example/x\"\nsecret_env = \"S\"\n",
        );
        assert!(e.contains("tenants.acme.webhooks"), "{e}");
        let ciba = "backend = \"ciba\"\n[tenants.T.consent.ciba]\nissuer = \"https://i.example/\"\nclient_id = \"c\"\nclient_secret_env = \"S\"\ndelivery = \"ping\"\nnotification_url = \"https://gw.example/notify\"\n";
        let e = bad(&format!(
            "[tenants.a.consent]\n{}[tenants.b.consent]\n{}",
            ciba.replace("T", "a"),
            ciba.replace("T", "b")
        ));
        assert!(e.contains("own ping URL"), "{e}");
    }

    #[test]
    fn env_overrides_keep_the_tenants() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[tenants.acme]\n[tenants.globex.consent]\nmode = \"async\"\n",
        )
        .unwrap();
        let c = crate::config::Config::load(
            Some(&file),
            vec![("AGENTGATE_PROXY_LISTEN".into(), "127.0.0.1:0".into())],
        )
        .unwrap();
        assert_eq!(c.tenants.len(), 2);
        let globex = c.tenants["globex"].consent.as_ref().unwrap();
        assert_eq!(globex.mode, crate::consent::Mode::Async);
        assert!(c.tenants["acme"].consent.is_none());
    }

    #[test]
    fn tenant_of_spiffe_id() {
        assert_eq!(
            of_spiffe_id("spiffe://td.local/tenant/acme/agent/bot"),
            Some("acme")
        );
        assert_eq!(of_spiffe_id("spiffe://td.local/agent/bot"), None);
        assert_eq!(
            of_spiffe_id("spiffe://td.local/tenant/acme/agent/bot/x"),
            None
        );
        assert_eq!(of_spiffe_id("https://td.local/tenant/acme/agent/bot"), None);
    }

    #[test]
    fn unknown_tenants_are_refused_only_when_tenants_are_configured() {
        let mut tenants = std::collections::BTreeMap::new();
        check(&tenants, Some("anything")).unwrap();
        tenants.insert("acme".to_owned(), TenantConfig::default());
        check(&tenants, Some("acme")).unwrap();
        check(&tenants, None).unwrap();
        let err = check(&tenants, Some("globex")).unwrap_err();
        assert!(
            err.contains("acme") && err.contains("[tenants.globex]"),
            "{err}"
        );
    }

    #[test]
    fn tokens_are_created_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open_or_create(dir.path().join("home")).unwrap();
        let mut tenants = std::collections::BTreeMap::new();
        tenants.insert("acme".to_owned(), TenantConfig::default());
        let custom = dir.path().join("globex.token");
        tenants.insert(
            "globex".to_owned(),
            TenantConfig {
                admin_token_file: Some(custom.clone()),
                ..TenantConfig::default()
            },
        );
        let first = admin_tokens(&state, &tenants).unwrap();
        assert_eq!(first.len(), 2);
        assert_ne!(first[0].1, first[1].1);
        let path = state.path("tenants/acme/admin.token");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(custom.exists());
        assert_eq!(admin_tokens(&state, &tenants).unwrap(), first);
    }
}
