//! `/api/v1/agents`: list (with last activity), register, revoke. The CLI's `agents
//! register|revoke` come here when an instance runs, so the change, its audit record and
//! the reload happen in one place.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Request, State};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Scope;
use super::reply::{
    ErrorBody, Reply, bad_request, blocking, error, forbidden, instance_only, internal, json_value,
};
use super::request::{optional_json, parse_json};
use super::state::Admin;
use crate::clock::now;
use crate::identity::issuer::{self, IssuerError, Registration};
use crate::identity::registry::{Agent, Registry, RegistryError};

/// Decision records read at start to seed last activity.
const SEED_RECORDS: usize = 20_000;

/// Seeds each agent's last activity from the newest decision records of the log; the audit
/// writer notes every decision it commits from then on.
pub async fn seed_last_seen(admin: Arc<Admin>) {
    let db = admin.audit.db_path().to_owned();
    let seed = tokio::task::spawn_blocking(move || -> rusqlite::Result<Vec<(String, i64)>> {
        // The newest records, across a segment boundary if a seal just happened.
        let view = crate::audit::view::View::open(&db, None)?;
        view.page_before(u64::MAX, SEED_RECORDS, |part, left| {
            let mut stmt = part.conn.prepare(
                "SELECT json_extract(record, '$.agent') AS a, json_extract(record, '$.ts')
                 FROM (SELECT record FROM records WHERE seq > ?1 ORDER BY seq DESC LIMIT ?2)
                 WHERE json_extract(record, '$.kind') = 'decision' AND a IS NOT NULL",
            )?;
            let rows = stmt.query_map([part.lower as i64, left as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            rows.collect()
        })
    })
    .await;
    match seed {
        Ok(Ok(rows)) => {
            for (agent, ts) in rows {
                admin
                    .audit
                    .last_seen()
                    .note([agent.as_str()], ts / 1_000_000);
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read last agent activity from the audit log")
        }
        Err(_) => {}
    }
}

/// An agent as the API shows it: the registry's view plus its last activity.
#[derive(Serialize, ToSchema)]
pub struct AgentView {
    #[serde(flatten)]
    pub agent: Agent,
    /// Unix seconds of its last decision record.
    pub last_seen: Option<i64>,
}

impl AgentView {
    fn new(agent: Agent, admin: &Admin) -> Self {
        let last_seen = admin.audit.last_seen().get(&agent.spiffe_id);
        Self { agent, last_seen }
    }
}

/// `{"agents": […]}`.
#[derive(Serialize, ToSchema)]
pub struct AgentList {
    pub agents: Vec<AgentView>,
}

/// List the registered agents the caller may see, with their last activity.
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents",
    responses((status = 200, body = AgentList), (status = 401, body = ErrorBody)))]
pub async fn list(State(admin): State<Arc<Admin>>, Extension(scope): Extension<Scope>) -> Reply {
    let state = admin.state.clone();
    let found = blocking("registry_failed", move || {
        Registry::open(&state).and_then(|r| r.agents(None, now()))
    })
    .await;
    let agents = match found {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return internal("registry_failed", &e.to_string()),
        Err(resp) => return resp,
    };
    let agents = agents
        .into_iter()
        .filter(|a| scope.sees(a.tenant.as_deref()))
        .map(|a| AgentView::new(a, &admin))
        .collect();
    json_value(StatusCode::OK, &AgentList { agents })
}

/// `POST /api/v1/agents`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// Letters, digits, '.', '_' or '-'.
    pub name: String,
    /// The human responsible for the agent.
    pub owner: Option<String>,
    /// A configured tenant (a tenant token may only name its own, and is the default).
    pub tenant: Option<String>,
    /// Token lifetime, e.g. "24h" (default identity.token_ttl).
    pub ttl: Option<String>,
    #[serde(default)]
    pub reference_tokens: bool,
}

/// The registration and its token (shown once).
#[derive(Serialize, ToSchema)]
pub struct RegisterAnswer {
    pub agent: AgentView,
    /// The agent's JWT-SVID; AgentGate keeps only its hash.
    pub token: String,
    pub jti: String,
    /// Unix seconds.
    pub expires: i64,
}

/// Register (or re-register) an agent and issue it a JWT-SVID.
#[utoipa::path(post, path = "/api/v1/agents", tag = "agents", request_body = RegisterBody,
    responses((status = 201, body = RegisterAnswer), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn register(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    req: Request,
) -> Reply {
    let ask: RegisterBody = match parse_json(
        req,
        r#"{"name", "owner"?, "tenant"?, "ttl"?, "reference_tokens"?}"#,
    )
    .await
    {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let tenant = match (&scope, ask.tenant) {
        (Scope::Tenant(t), None) => Some(t.to_string()),
        (Scope::Tenant(t), Some(asked)) if *asked == **t => Some(asked),
        (Scope::Tenant(_), Some(_)) => {
            return forbidden("a tenant token registers agents in its own tenant only");
        }
        (Scope::Instance, t) => t,
    };
    if let Some(t) = &tenant
        && !admin.tenants.is_empty()
        && !admin.tenants.contains(t)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "unknown_tenant",
            &format!(
                "tenant {t} is not configured; configured tenants: {}",
                admin.tenants.join(", ")
            ),
        );
    }
    let ttl = match ask.ttl.as_deref().map(humantime::parse_duration) {
        None => admin.config.identity.token_ttl,
        Some(Ok(d)) => d,
        Some(Err(e)) => return bad_request(&format!("ttl: {e} (e.g. \"24h\")")),
    };
    let (state, config) = (admin.state.clone(), admin.config.clone());
    let name = ask.name.clone();
    let owner = ask.owner.clone();
    let refs = ask.reference_tokens;
    let scoped = scope.tenant().map(str::to_owned);
    let agent_tenant = tenant.clone();
    let done = blocking("registry_failed", move || -> Result<_, RegisterError> {
        let mut registry = Registry::open(&state)?;
        // Names are unique across the instance: a tenant may re-register its own agent,
        // never take over another tenant's (or a tenant-less one).
        if let Some(own) = &scoped
            && let Ok(existing) = registry.agent(&name)
            && existing.tenant.as_deref() != Some(own.as_str())
        {
            return Err(RegisterError::Taken(name));
        }
        let req = Registration {
            name: &name,
            owner: owner.as_deref(),
            tenant: tenant.as_deref(),
            ttl,
        };
        let reg = issuer::register(&state, &mut registry, &config.identity, &req, now())?;
        registry.set_reference_tokens(&name, refs)?;
        let agent = registry.agent(&name)?;
        Ok((reg, agent))
    })
    .await;
    let (reg, agent) = match done {
        Ok(Ok(r)) => r,
        Ok(Err(RegisterError::Issuer(e))) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_registration",
                &e.to_string(),
            );
        }
        Ok(Err(RegisterError::Registry(e))) => {
            return internal("registry_failed", &e.to_string());
        }
        Ok(Err(e @ RegisterError::Taken(_))) => {
            return error(StatusCode::CONFLICT, "name_taken", &e.to_string());
        }
        Err(resp) => return resp,
    };
    if let Err(resp) = apply(
        &admin,
        agent_tenant.as_deref(),
        "agent_registered",
        &reg.spiffe_id,
    )
    .await
    {
        return resp;
    }
    let answer = RegisterAnswer {
        agent: AgentView::new(agent, &admin),
        token: reg.token,
        jti: reg.jti,
        expires: reg.expires,
    };
    json_value(StatusCode::CREATED, &answer)
}

#[derive(Debug, thiserror::Error)]
enum RegisterError {
    #[error(transparent)]
    Issuer(#[from] IssuerError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("the agent name {0} is in use (names are unique across the instance); choose another")]
    Taken(String),
}

/// `POST /api/v1/agents/{name}/revoke`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    /// Kept in the registry and the audit record.
    pub reason: Option<String>,
    /// Revoke only this token of the agent.
    pub jti: Option<String>,
}

/// What was revoked.
#[derive(Serialize, ToSchema)]
pub struct Revoked {
    pub revoked: String,
    pub spiffe_id: String,
    /// Live tokens revoked with it.
    pub tokens: usize,
}

/// Revoke an agent (or one token with `jti`); `name` may be a SPIFFE ID that is not
/// registered here (instance admin only).
#[utoipa::path(post, path = "/api/v1/agents/{name}/revoke", tag = "agents",
    params(("name" = String, Path, description = "agent name, or a SPIFFE ID")),
    request_body(content = RevokeBody, description = "optional"),
    responses((status = 200, body = Revoked), (status = 404, body = ErrorBody)))]
pub async fn revoke(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
    req: Request,
) -> Reply {
    let ask: RevokeBody = match optional_json(req, r#"{"reason"?, "jti"?}"#).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let reason = ask.reason.unwrap_or_else(|| "revoked by operator".into());
    if name.starts_with("spiffe://") {
        if let Err(resp) = instance_only(&scope) {
            return resp;
        }
        if ask.jti.is_some() {
            return bad_request("jti takes an agent name, not a SPIFFE ID");
        }
        if spiffe::SpiffeId::new(&name).is_err() {
            return bad_request("not a valid SPIFFE ID");
        }
    }
    let state = admin.state.clone();
    let (n, scope2) = (name.clone(), scope.clone());
    let done = blocking("registry_failed", move || -> Result<_, RegistryError> {
        let mut registry = Registry::open(&state)?;
        if n.starts_with("spiffe://") {
            registry.revoke_id(&n, &reason, now())?;
            return Ok(Some(("agent_revoked", n.clone(), n, 0)));
        }
        let agent = registry.agent(&n)?;
        if !scope2.sees(agent.tenant.as_deref()) {
            return Ok(None);
        }
        Ok(Some(match ask.jti {
            Some(jti) => {
                registry.revoke_token(&n, &jti, now())?;
                ("token_revoked", format!("{n}:{jti}"), agent.spiffe_id, 1)
            }
            None => {
                let tokens = registry.revoke_agent(&n, &reason, now())?;
                (
                    "agent_revoked",
                    agent.spiffe_id.clone(),
                    agent.spiffe_id,
                    tokens,
                )
            }
        }))
    })
    .await;
    let (event, subject, spiffe_id, tokens) = match done {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) | Ok(Err(RegistryError::UnknownAgent(_))) => {
            return error(
                StatusCode::NOT_FOUND,
                "unknown_agent",
                &format!("no agent named {name}"),
            );
        }
        Ok(Err(RegistryError::UnknownToken(_))) => {
            return error(
                StatusCode::NOT_FOUND,
                "unknown_token",
                &format!("agent {name} has no such token"),
            );
        }
        Ok(Err(e)) => return internal("registry_failed", &e.to_string()),
        Err(resp) => return resp,
    };
    let tenant = crate::tenants::of_spiffe_id(&spiffe_id);
    if let Err(resp) = apply(&admin, tenant, event, &subject).await {
        return resp;
    }
    json_value(
        StatusCode::OK,
        &Revoked {
            revoked: name,
            spiffe_id,
            tokens,
        },
    )
}

/// Puts a registry change in force now and records it.
async fn apply(
    admin: &Admin,
    tenant: Option<&str>,
    event: &str,
    subject: &str,
) -> Result<(), Reply> {
    let identity = admin.identity.clone();
    match blocking("reload_failed", move || identity.refresh(true)).await? {
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "identity reload failed");
            return Err(internal("reload_failed", &e.to_string()));
        }
    }
    let detail = serde_json::json!({ "subject": subject });
    admin
        .audit
        .tenant_event(tenant, event, detail)
        .await
        .map(drop)
        .map_err(|e| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                &e.to_string(),
            )
        })
}
