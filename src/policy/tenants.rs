//! One policy per tenant beside the instance's: each with its own directory, reload watch,
//! hash and status. The gate picks by the caller's tenant with one map lookup.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::config::{Mode, PolicyConfig};
use super::embedded::seed;
use super::engine::Policy;
use super::error::PolicyError;
use super::shadow::ShadowStats;
use crate::state::StateDir;

/// The instance's policy and every configured tenant's.
#[derive(Debug)]
pub struct Policies {
    instance: Arc<Policy>,
    tenants: BTreeMap<String, Arc<Policy>>,
    /// How the shadows compared with the policies they shadow (every tenant's together).
    shadow_stats: Arc<ShadowStats>,
}

impl Policies {
    /// Loads the instance policy (`policy.dir`, or `<state>/policies`) and one per
    /// `[tenants.<t>]` (`policy_dir`, or `<state>/tenants/<t>/policies`); default
    /// directories are seeded with the embedded policy on first start.
    /// `tenants`: each configured tenant's name, `policy_dir` and `shadow_policy_dir`.
    /// A shadow directory must exist and hold a policy that compiles.
    pub fn load<'t>(
        config: &PolicyConfig,
        tenants: impl IntoIterator<Item = (&'t str, Option<&'t Path>, Option<&'t Path>)>,
        state: &StateDir,
    ) -> Result<Policies, PolicyError> {
        let dir = super::engine::resolve_dir(config, state.root())?;
        let shadow = (!config.shadow.as_os_str().is_empty()).then_some(config.shadow.as_path());
        let instance = Arc::new(with_shadow(
            Policy::load(&dir, config)?,
            shadow,
            "policy.shadow",
            config,
        )?);
        let mut tenants_map = BTreeMap::new();
        for (name, policy_dir, shadow) in tenants {
            let dir = resolve_tenant_dir(name, policy_dir, state)?;
            let policy = Policy::load(&dir, config)?.with_tenant(name);
            let key = format!("tenants.{name}.shadow_policy_dir");
            let policy = with_shadow(policy, shadow, &key, config)?;
            tenants_map.insert(name.to_owned(), Arc::new(policy));
        }
        Ok(Policies {
            instance,
            tenants: tenants_map,
            shadow_stats: Arc::default(),
        })
    }

    /// The instance's policy: for agents without a tenant (and the AuthZEN PDP routes).
    pub fn instance(&self) -> &Arc<Policy> {
        &self.instance
    }

    /// Each configured tenant's policy, by tenant name.
    pub fn tenants(&self) -> impl Iterator<Item = (&str, &Arc<Policy>)> {
        self.tenants.iter().map(|(t, p)| (t.as_str(), p))
    }

    /// The policy that decides for an agent of `tenant`: the instance's when it has none
    /// (or when no tenants are configured, where a tenant is only a label); `None` for a
    /// tenant not configured while others are (the agent is refused).
    pub fn for_tenant(&self, tenant: Option<&str>) -> Option<&Arc<Policy>> {
        match tenant {
            Some(t) if !self.tenants.is_empty() => self.tenants.get(t),
            _ => Some(&self.instance),
        }
    }

    /// `enforce` or `observe` (one setting for every tenant: `policy.mode`).
    pub fn mode(&self) -> Mode {
        self.instance.mode
    }

    /// Every policy: the instance's first, then the tenants' in name order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Policy>> {
        std::iter::once(&self.instance).chain(self.tenants.values())
    }

    /// The shadow comparisons' counters (for `/metrics`).
    pub fn shadow_stats(&self) -> &Arc<ShadowStats> {
        &self.shadow_stats
    }

    /// Whether any policy has a shadow.
    pub fn shadowed(&self) -> bool {
        self.all().any(|p| p.shadow().is_some())
    }

    /// Starts one reload watch per policy (each audited with its tenant, and counted).
    pub fn watch(
        &self,
        audit: &Arc<crate::audit::Audit>,
        metrics: &Arc<crate::metrics::Metrics>,
        every: Duration,
        shutdown: &tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        self.all()
            .flat_map(|p| std::iter::once(p).chain(p.shadow()))
            .map(|p| {
                let (audit, metrics) = (audit.clone(), metrics.clone());
                tokio::spawn(p.clone().watch(audit, metrics, every, shutdown.clone()))
            })
            .collect()
    }
}

/// `policy` with the shadow policy in `dir` (named by the setting `key` in errors).
fn with_shadow(
    policy: Policy,
    dir: Option<&Path>,
    key: &str,
    config: &PolicyConfig,
) -> Result<Policy, PolicyError> {
    let Some(dir) = dir else { return Ok(policy) };
    if !dir.is_dir() {
        return Err(PolicyError::Io {
            path: dir.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{key} is not a directory; point it at the candidate policy's directory or leave it out"
                ),
            ),
        });
    }
    let shadow = Policy::load(dir, config)?;
    tracing::info!(dir = %dir.display(), hash = %shadow.hash(), tenant = policy.tenant(), "shadow policy loaded: evaluated beside the active one, never enforced");
    Ok(policy.with_shadow(shadow))
}

/// A tenant's policy directory: `configured`, or `<state>/tenants/<t>/policies` seeded with
/// the embedded policy when it does not exist yet (never overwritten).
pub fn resolve_tenant_dir(
    tenant: &str,
    configured: Option<&Path>,
    state: &StateDir,
) -> Result<PathBuf, PolicyError> {
    if let Some(dir) = configured {
        if !dir.is_dir() {
            return Err(PolicyError::Io {
                path: dir.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "tenants.{tenant}.policy_dir is not a directory; create it or leave policy_dir out to use the default policy"
                    ),
                ),
            });
        }
        return Ok(dir.to_owned());
    }
    let home = crate::tenants::state_dir(state, tenant).map_err(|e| PolicyError::Io {
        path: state.path(crate::tenants::DIR).join(tenant),
        source: std::io::Error::other(e.to_string()),
    })?;
    let dir = home.path("policies");
    if seed(&dir).map_err(|source| PolicyError::Io {
        path: dir.clone(),
        source,
    })? {
        tracing::info!(tenant, dir = %dir.display(), "wrote the default policy for the tenant; edit it there (reloaded on change)");
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn load(config: &Config, state: &StateDir) -> Result<Policies, PolicyError> {
        Policies::load(&config.policy, config.tenant_policy_dirs(), state)
    }

    #[test]
    fn picks_by_tenant_and_refuses_unknown_ones() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open_or_create(dir.path().join("home")).unwrap();
        let mut config = Config::default();
        let none = load(&config, &state).unwrap();
        // No [tenants]: a tenant is a label, the instance policy decides.
        assert!(Arc::ptr_eq(
            none.for_tenant(Some("acme")).unwrap(),
            none.instance()
        ));

        let own = dir.path().join("acme-policy");
        std::fs::create_dir(&own).unwrap();
        std::fs::write(
            own.join("p.rego"),
            "package agentgate\ndecision := {\"effect\": \"allow\"}\n",
        )
        .unwrap();
        config.tenants.insert(
            "acme".into(),
            crate::tenants::TenantConfig {
                policy_dir: Some(own.clone()),
                ..Default::default()
            },
        );
        config.tenants.insert("globex".into(), Default::default());
        let p = load(&config, &state).unwrap();
        let acme = p.for_tenant(Some("acme")).unwrap();
        assert_eq!(acme.dir(), own);
        assert_eq!(acme.tenant(), Some("acme"));
        let globex = p.for_tenant(Some("globex")).unwrap();
        assert_eq!(globex.dir(), state.path("tenants/globex/policies"));
        // Seeded with the shipped policy, like the instance's.
        assert_eq!(globex.hash(), p.instance().hash());
        assert_ne!(acme.hash(), globex.hash());
        assert!(p.for_tenant(Some("initech")).is_none());
        assert!(Arc::ptr_eq(p.for_tenant(None).unwrap(), p.instance()));
        assert_eq!(p.all().count(), 3);

        // A second start keeps what is there.
        let edited = state.path("tenants/globex/policies/extra.rego");
        std::fs::write(&edited, "package extra\nx := 1\n").unwrap();
        load(&config, &state).unwrap();
        assert!(edited.exists());
    }

    #[test]
    fn a_missing_tenant_dir_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open_or_create(dir.path().join("home")).unwrap();
        let err = resolve_tenant_dir("acme", Some(&dir.path().join("nope")), &state)
            .unwrap_err()
            .to_string();
        assert!(err.contains("tenants.acme.policy_dir"), "{err}");
    }
}
