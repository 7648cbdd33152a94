//! PANIC: revoke an agent (or every agent) and everything it obtained, at once.
//!
//! The local cut-off comes first and takes milliseconds: identity and tokens revoked in the
//! registry (and reloaded), `agw_` references voided, open tunnels closed (in-flight requests
//! die with them), cached credentials and grants dropped, and what the agents received
//! deny-listed until it expires. Only then is anything revoked upstream, concurrently and
//! bounded. Every step is an audit record; the report says what was revoked and what could
//! not be, and why. Running it twice is harmless.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::audit::{Audit, record};
use crate::identity::Identity;
use crate::identity::registry::{ALL_AGENTS, Registry, RegistryError};
use crate::sessions::Sessions;
use crate::state::StateDir;
use crate::vault::Vault;
use crate::vault::revoke::Upstream;

/// Whom PANIC is for.
#[derive(Debug, Clone)]
pub enum Target {
    /// A registered agent's name, or any SPIFFE ID.
    Agent(String),
    All,
    /// Every agent of one tenant (a tenant admin's "all").
    Tenant(String),
}

/// What PANIC did.
#[derive(Debug, Serialize)]
pub struct Report {
    pub panic_id: String,
    pub scope: &'static str,
    /// The SPIFFE IDs cut off (for `all`: every one known here).
    pub agents: Vec<String>,
    pub reason: String,
    /// Time to the end of the local cut-off.
    pub local_ms: u64,
    pub steps: Vec<Step>,
    pub upstream: Vec<Upstream>,
    pub ok: bool,
}

/// One local step.
#[derive(Debug, Serialize)]
pub struct Step {
    pub step: &'static str,
    pub count: u64,
    pub detail: String,
}

/// Why PANIC could not run.
#[derive(Debug, thiserror::Error)]
pub enum PanicError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("reloading identity after the revocation failed: {0}")]
    Reload(String),
}

/// What PANIC reaches.
pub struct Panic {
    pub identity: Arc<Identity>,
    pub vault: Arc<Vault>,
    pub sessions: Arc<Sessions>,
    /// The instance's consents and each tenant's (all of them are searched).
    pub consents: Arc<crate::consent::TenantConsents>,
    /// The instance's webhooks (every PANIC); tenants' own come from `consents`.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    pub audit: Arc<Audit>,
    /// Counts each PANIC.
    pub metrics: Arc<crate::metrics::Metrics>,
    pub state: StateDir,
}

impl Panic {
    /// Runs PANIC for `target`.
    pub async fn run(&self, target: Target, reason: &str) -> Result<Report, PanicError> {
        let started = Instant::now();
        // 1. Identity: the registry first, so no new request of the agent passes gate 1.
        let (agents, revoked_tokens) = self.revoke_identity(&target, reason).await?;
        let identity = Step {
            step: "identity",
            count: revoked_tokens as u64,
            detail: match &target {
                Target::All => "every registered agent and token revoked; every other SPIFFE ID refused until `agentgate panic --lift`".into(),
                Target::Agent(_) => format!("{} revoked with its tokens", join(&agents)),
                Target::Tenant(t) => format!(
                    "every agent of tenant {t} revoked with its tokens: {}",
                    join(&agents)
                ),
            },
        };
        let report = self
            .cut_off(&target, agents, reason, identity, started)
            .await;
        self.announce(&report);
        Ok(report)
    }

    /// The local cut-off for agents another instance of the fleet revoked (their
    /// revocation already reached this registry): what they hold here goes as after a
    /// PANIC run here, and what this instance handed them is revoked upstream by it. No
    /// webhook: the instance that ran PANIC announced it.
    pub async fn follow_fleet(&self, revoked: Vec<String>, reason: &str) -> Report {
        let started = Instant::now();
        let all = revoked.iter().any(|id| id == ALL_AGENTS);
        let (target, agents) = if all {
            (Target::All, self.sessions.agents().into_iter().collect())
        } else {
            let agents: HashSet<String> = revoked.into_iter().collect();
            (Target::Agent(join(&agents)), agents)
        };
        let identity = Step {
            step: "identity",
            count: 0,
            detail: format!("revoked elsewhere in the fleet: {}", join(&agents)),
        };
        self.cut_off(&target, agents, reason, identity, started)
            .await
    }

    /// Steps 2 to 6 of a PANIC whose identity step is done, each one recorded.
    async fn cut_off(
        &self,
        target: &Target,
        agents: HashSet<String>,
        reason: &str,
        identity: Step,
        started: Instant,
    ) -> Report {
        let panic_id = format!(
            "panic_{}",
            crate::vault::store::hex(&rand::random::<[u8; 6]>())
        );
        let mut steps = vec![identity];
        let scope: Option<&HashSet<String>> = match target {
            Target::All => None,
            Target::Agent(_) | Target::Tenant(_) => Some(&agents),
        };
        // 2. References.
        let refs = self.vault.references.revoke(scope);
        steps.push(Step {
            step: "references",
            count: refs as u64,
            detail: "agw_ references voided".into(),
        });
        // 3. Pending consents denied first, so requests held on them are answered 403
        //    (and the consent says why) before their tunnels close.
        let denied = self
            .consents
            .deny_agents(scope, &format!("PANIC: {reason}"));
        steps.push(Step {
            step: "consents",
            count: denied as u64,
            detail: "pending consents denied; requests held on them refused".into(),
        });
        // 4. Open tunnels, with whatever they had in flight.
        let closed = self.sessions.kill(scope);
        steps.push(Step {
            step: "connections",
            count: closed as u64,
            detail: "open tunnels closed; their in-flight requests fail".into(),
        });
        // 5. Credentials: cache and grants dropped, received credentials deny-listed.
        let cut = self.vault.cut_off(scope);
        steps.push(Step {
            step: "credentials",
            count: cut.fresh.len() as u64,
            detail: format!(
                "{} credential(s) the agents received deny-listed until they expire; {} cached credential(s) and {} grant(s) dropped",
                cut.fresh.len(),
                cut.cached_dropped,
                cut.grants_dropped
            ),
        });
        let local_ms = started.elapsed().as_millis() as u64;
        let tenant = match target {
            Target::Tenant(t) => Some(t.as_str()),
            _ => None,
        };
        for s in &steps {
            self.record(
                (&panic_id, reason, tenant),
                &agents,
                "panic",
                serde_json::to_value(s),
            )
            .await;
        }

        // 6. Upstream, where the provider allows it.
        let upstream = self.vault.revoke_upstream(&cut, reason).await;
        for u in &upstream {
            self.record(
                (&panic_id, reason, tenant),
                &agents,
                "credential_revoked",
                serde_json::to_value(u),
            )
            .await;
        }
        let mut agents: Vec<String> = agents.into_iter().collect();
        agents.sort();
        let report = Report {
            panic_id,
            scope: match target {
                Target::All => "all",
                Target::Agent(_) => "agent",
                Target::Tenant(_) => "tenant",
            },
            agents,
            reason: reason.to_owned(),
            local_ms,
            steps,
            upstream,
            ok: true,
        };
        self.metrics.panic();
        tracing::warn!(panic_id = %report.panic_id, scope = report.scope, agents = %join(&report.agents), local_ms, "PANIC");
        report
    }

    /// `agent.panic` to the instance's webhooks (every agent) and to each tenant's own
    /// endpoints (only that tenant's agents).
    fn announce(&self, report: &Report) {
        let event = |agents: &[&String], tenant: Option<&str>| {
            serde_json::json!({
                "panic_id": report.panic_id,
                "scope": report.scope,
                "agents": agents,
                "tenant": tenant,
                "reason": report.reason,
            })
        };
        let mut by_tenant: std::collections::BTreeMap<&str, Vec<&String>> = Default::default();
        for a in &report.agents {
            if let Some(t) = crate::tenants::of_spiffe_id(a) {
                by_tenant.entry(t).or_default().push(a);
            }
        }
        let all: Vec<&String> = report.agents.iter().collect();
        let single = (by_tenant.len() == 1 && by_tenant.values().all(|v| v.len() == all.len()))
            .then(|| by_tenant.keys().next().copied())
            .flatten();
        self.webhooks.emit("agent.panic", event(&all, single));
        for (tenant, agents) in &by_tenant {
            // An unconfigured tenant's agents have no endpoints of their own.
            if !self.consents.tenants().any(|t| t == *tenant) {
                continue;
            }
            self.consents
                .webhooks_for(Some(tenant))
                .emit_own("agent.panic", event(agents, Some(tenant)));
        }
    }

    /// Revokes in the registry and reloads identity; returns the SPIFFE IDs cut off and
    /// how many tokens were revoked.
    async fn revoke_identity(
        &self,
        target: &Target,
        reason: &str,
    ) -> Result<(HashSet<String>, usize), PanicError> {
        let state = self.state.clone();
        let target = target.clone();
        let reason = format!("PANIC: {reason}");
        let identity = self.identity.clone();
        let seen = self.sessions.agents();
        tokio::task::spawn_blocking(move || {
            let mut registry = Registry::open(&state)?;
            let now = crate::clock::now();
            let mut agents = HashSet::new();
            let mut tokens = 0;
            match target {
                Target::Agent(name) if name.starts_with("spiffe://") => {
                    let registered = registry
                        .agents(None, now)?
                        .into_iter()
                        .find(|a| a.spiffe_id == name);
                    match registered {
                        Some(a) => tokens += registry.revoke_agent(&a.name, &reason, now)?,
                        None => registry.revoke_id(&name, &reason, now)?,
                    }
                    agents.insert(name);
                }
                Target::Agent(name) => {
                    let a = registry.agent(&name)?;
                    tokens += registry.revoke_agent(&name, &reason, now)?;
                    agents.insert(a.spiffe_id);
                }
                Target::All => {
                    for a in registry.agents(None, now)? {
                        tokens += registry.revoke_agent(&a.name, &reason, now)?;
                        agents.insert(a.spiffe_id);
                    }
                    registry.revoke_id(ALL_AGENTS, &reason, now)?;
                    agents.extend(seen);
                }
                Target::Tenant(t) => {
                    let of_tenant = registry
                        .agents(None, now)?
                        .into_iter()
                        .filter(|a| a.tenant.as_deref() == Some(t.as_str()));
                    for a in of_tenant {
                        tokens += registry.revoke_agent(&a.name, &reason, now)?;
                        agents.insert(a.spiffe_id);
                    }
                    // Unregistered callers of the tenant (trusted bundles) with open tunnels.
                    let of_t = |id: &String| crate::tenants::of_spiffe_id(id) == Some(t.as_str());
                    for id in seen.into_iter().filter(of_t) {
                        registry.revoke_id(&id, &reason, now)?;
                        agents.insert(id);
                    }
                }
            }
            identity
                .refresh(true)
                .map_err(|e| PanicError::Reload(e.to_string()))?;
            Ok::<_, PanicError>((agents, tokens))
        })
        .await
        .map_err(|e| PanicError::Reload(e.to_string()))?
    }

    /// Commits one audit record of this PANIC (durably: it is evidence).
    async fn record(
        &self,
        (panic_id, reason, tenant): (&str, &str, Option<&str>),
        agents: &HashSet<String>,
        event: &'static str,
        detail: Result<serde_json::Value, serde_json::Error>,
    ) {
        // A PANIC confined to one tenant's agents is that tenant's record (its admin sees
        // it in the audit pages and the event stream).
        let mut tenants = agents.iter().map(|a| crate::tenants::of_spiffe_id(a));
        let common = match tenants.next() {
            Some(Some(t)) if tenants.all(|o| o == Some(t)) => Some(t),
            _ => None,
        };
        let tenant = tenant.or(common).map(str::to_owned);
        let mut agents: Vec<String> = agents.iter().cloned().collect();
        agents.sort();
        let r = record::Admin {
            event: event.into(),
            tenant,
            detail: record::Detail::Panic(record::PanicStep {
                agents,
                panic_id: panic_id.to_owned(),
                reason: reason.to_owned(),
                step: detail.unwrap_or_default(),
            }),
        };
        if let Err(e) = self.audit.commit(r.into()).await {
            tracing::error!(error = %e, event, "a PANIC step could not be recorded in the audit log");
        }
    }
}

fn join<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    items
        .into_iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
