//! Consents per tenant: each configured tenant has its own store
//! (`<state>/tenants/<t>/consents.db`), consent settings, CIBA client (pinged at
//! `/api/v1/ciba/notify/<t>`) and webhooks; the instance's serve agents without a tenant.
//! Consent ids are 64 random bits (`cns_<16 hex>`), so they stay unique across stores.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::approvals::Consents;
use super::ciba::Ciba;
use super::config::{Backend, ConsentConfig, Delivery};
use super::error::ConsentError;
use super::record::Consent;
use crate::audit::Audit;
use crate::state::StateDir;
use crate::tenants::TenantConfig;
use crate::webhooks::Webhooks;

/// The instance's ping endpoint path; a tenant's is this plus `/<tenant>`.
pub const NOTIFY_PATH: &str = "/api/v1/ciba/notify";

/// One consent scope: its store, its CIBA client, its webhooks.
struct Scope {
    consents: Arc<Consents>,
    ciba: Option<Arc<Ciba>>,
    webhooks: Arc<Webhooks>,
}

/// The instance's consents and every configured tenant's.
pub struct TenantConsents {
    instance: Scope,
    tenants: BTreeMap<String, Scope>,
}

/// What [`TenantConsents::open`] needs besides the configs.
pub struct Setup<'a> {
    pub state: &'a StateDir,
    pub audit: Arc<Audit>,
    /// Counts consents' outcomes.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The instance's `[[webhooks]]`; each tenant's events go there too.
    pub webhooks: Arc<Webhooks>,
    /// Trust for AgentGate's own HTTPS calls (CIBA, webhooks).
    pub tls: rustls::ClientConfig,
    /// `http(s)://<admin addr>`: default CIBA ping URLs are under it.
    pub admin_base: &'a str,
}

impl TenantConsents {
    /// Opens the instance's store (`consent`, the instance's `[consent]`) and one per
    /// `[tenants.<t>]`, with their CIBA clients and webhooks.
    pub fn open(
        consent: &ConsentConfig,
        tenants: &BTreeMap<String, TenantConfig>,
        setup: Setup<'_>,
    ) -> Result<Arc<TenantConsents>, ConsentError> {
        let url = format!("{}{NOTIFY_PATH}", setup.admin_base);
        let ciba = start_ciba(consent, &setup.tls, url, None)?;
        let instance = Scope {
            consents: Consents::open(
                consent,
                setup.state,
                setup.audit.clone(),
                setup.metrics.clone(),
                setup.webhooks.clone(),
                ciba.clone(),
            )?,
            ciba,
            webhooks: setup.webhooks.clone(),
        };
        let instance_consent = consent;
        let mut scopes = BTreeMap::new();
        for (name, t) in tenants {
            let consent = t.consent.as_ref().unwrap_or(instance_consent);
            let url = format!("{}{NOTIFY_PATH}/{name}", setup.admin_base);
            let ciba = start_ciba(consent, &setup.tls, url, Some(name))?;
            let webhooks = Arc::new(
                Webhooks::start_tenant(&t.webhooks, setup.tls.clone(), setup.webhooks.clone())
                    .map_err(|e| ConsentError::Tenant(format!("tenants.{name}.webhooks: {e}")))?,
            );
            let home = crate::tenants::state_dir(setup.state, name)
                .map_err(|e| ConsentError::Tenant(format!("tenant {name}: {e}")))?;
            let consents = Consents::open(
                consent,
                &home,
                setup.audit.clone(),
                setup.metrics.clone(),
                webhooks.clone(),
                ciba.clone(),
            )?;
            scopes.insert(
                name.clone(),
                Scope {
                    consents,
                    ciba,
                    webhooks,
                },
            );
        }
        Ok(Arc::new(TenantConsents {
            instance,
            tenants: scopes,
        }))
    }

    /// The consents of agents of `tenant`: the tenant's own when it is configured,
    /// otherwise the instance's (an agent of an unconfigured tenant never gets here while
    /// tenants are configured: the policy gate refuses it).
    pub fn for_tenant(&self, tenant: Option<&str>) -> &Arc<Consents> {
        &self.scope(tenant).consents
    }

    /// The instance's consents (agents without a tenant).
    pub fn instance(&self) -> &Arc<Consents> {
        &self.instance.consents
    }

    /// The CIBA client answering `tenant`'s consents (`None`: the instance's), if its
    /// backend is CIBA. Pings for it arrive at `/api/v1/ciba/notify/<tenant>`
    /// (`/api/v1/ciba/notify` for the instance).
    pub fn ciba_for(&self, tenant: Option<&str>) -> Option<&Arc<Ciba>> {
        match tenant {
            None => self.instance.ciba.as_ref(),
            Some(t) => self.tenants.get(t)?.ciba.as_ref(),
        }
    }

    /// The webhooks for `tenant`'s events: its own endpoints, then the instance's.
    pub fn webhooks_for(&self, tenant: Option<&str>) -> &Arc<Webhooks> {
        &self.scope(tenant).webhooks
    }

    /// Every store: `(None, instance)` first, then `(Some(tenant), …)` in name order.
    pub fn all(&self) -> impl Iterator<Item = (Option<&str>, &Arc<Consents>)> {
        std::iter::once((None, &self.instance.consents)).chain(
            self.tenants
                .iter()
                .map(|(t, s)| (Some(t.as_str()), &s.consents)),
        )
    }

    /// The configured tenants, in name order.
    pub fn tenants(&self) -> impl Iterator<Item = &str> {
        self.tenants.keys().map(String::as_str)
    }

    /// Consent `id` wherever it is stored, with its store's tenant and the store (to
    /// answer it).
    #[allow(clippy::type_complexity)]
    pub fn find(
        &self,
        id: &str,
    ) -> Result<Option<(Option<&str>, &Arc<Consents>, Consent)>, ConsentError> {
        for (tenant, consents) in self.all() {
            if let Some(c) = consents.get(id)? {
                return Ok(Some((tenant, consents, c)));
            }
        }
        Ok(None)
    }

    /// PANIC: [`Consents::deny_agents`] on every store; returns the total touched.
    pub fn deny_agents(&self, agents: Option<&HashSet<String>>, reason: &str) -> usize {
        self.all().map(|(_, c)| c.deny_agents(agents, reason)).sum()
    }

    /// One expiry sweep task per store.
    pub fn sweep(
        &self,
        shutdown: &tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        self.all()
            .map(|(_, c)| tokio::spawn(c.clone().sweep(shutdown.clone())))
            .collect()
    }

    fn scope(&self, tenant: Option<&str>) -> &Scope {
        tenant
            .and_then(|t| self.tenants.get(t))
            .unwrap_or(&self.instance)
    }
}

/// The CIBA client for a consent section whose backend is CIBA.
fn start_ciba(
    config: &ConsentConfig,
    tls: &rustls::ClientConfig,
    default_url: String,
    tenant: Option<&str>,
) -> Result<Option<Arc<Ciba>>, ConsentError> {
    let (Backend::Ciba, Some(c)) = (&config.backend, &config.ciba) else {
        return Ok(None);
    };
    let ciba = Arc::new(Ciba::new(c, tls.clone(), default_url)?);
    if ciba.delivery() == Delivery::Ping {
        tracing::info!(
            url = ciba.notification_url(),
            tenant,
            "CIBA ping delivery: register this URL as the client's backchannel_client_notification_endpoint"
        );
        let local = |u: &str| {
            ["://127.", "://localhost", "://[::1]"]
                .iter()
                .any(|l| u.contains(l))
        };
        if local(ciba.notification_url()) && !local(&c.issuer) {
            tracing::warn!(
                url = ciba.notification_url(),
                issuer = %c.issuer,
                tenant,
                "the CIBA provider cannot reach a loopback notification URL; set consent.ciba.notification_url to an address it can reach, or use delivery = \"poll\""
            );
        }
    }
    Ok(Some(ciba))
}
