//! Admin routes of gate 5: vault connections (metadata only), `agw_` references, PANIC.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Request, State};
use http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::Scope;
use super::reply::{
    ErrorBody, Reply, bad_request, blocking, error, instance_only, json_bytes, unauthorized,
};
use super::request::{bearer, query_param, read_json_body};
use super::state::Admin;
use crate::identity::registry::{Registry, RegistryError};
use crate::panic::{PanicError, Target};

/// Vault connections the caller may see: metadata and a keyed fingerprint, never a secret.
#[utoipa::path(get, path = "/api/v1/vault", tag = "vault",
    responses((status = 200, description = "`{\"connections\": [...]}`", body = Object),
        (status = 401, body = ErrorBody)))]
pub async fn list(State(admin): State<Arc<Admin>>, Extension(scope): Extension<Scope>) -> Reply {
    let visible: Vec<_> = admin
        .vault
        .connections()
        .into_iter()
        .filter(|c| scope.sees(Some(c.tenant.as_str()).filter(|t| !t.is_empty())))
        .collect();
    let body = serde_json::json!({ "connections": visible });
    json_bytes(StatusCode::OK, body.to_string().into())
}

/// Re-read `vault.db` after a CLI change (`vault set|rm`) and record it (instance admin).
#[utoipa::path(post, path = "/api/v1/vault/reload", tag = "vault",
    params(("subject" = Option<String>, Query, description = "the change, for the audit record")),
    responses((status = 200, body = Object), (status = 403, body = ErrorBody)))]
pub async fn reload(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    req: Request,
) -> Reply {
    if let Err(resp) = instance_only(&scope) {
        return resp;
    }
    let vault = admin.vault.clone();
    match tokio::task::spawn_blocking(move || vault.reload()).await {
        Ok(Ok(n)) => {
            let subject = query_param(req.uri().query(), "subject").unwrap_or_default();
            let detail = serde_json::json!({ "subject": subject, "connections": n });
            if let Err(e) = admin.audit.admin_event("vault_changed", detail).await {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "audit_unavailable",
                    &e.to_string(),
                );
            }
            json_bytes(StatusCode::OK, format!(r#"{{"connections":{n}}}"#).into())
        }
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reload_failed",
            &e.to_string(),
        ),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reload_failed",
            "reload task failed",
        ),
    }
}

/// Ask for an `agw_` reference.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferenceRequest {
    /// The agent (with an admin token); left out when the agent asks with its own JWT-SVID.
    pub agent: Option<String>,
    /// The vault service, e.g. github.
    pub service: String,
}

/// `POST /api/v1/references`: an `agw_` reference for an agent registered with
/// `--reference-tokens`. With the admin token the body names the agent; an agent may ask
/// for its own with its JWT-SVID as the bearer token.
#[utoipa::path(post, path = "/api/v1/references", tag = "vault", request_body = ReferenceRequest,
    responses((status = 200, body = Object), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn reference(State(admin): State<Arc<Admin>>, req: Request) -> Reply {
    let bearer = bearer(&req);
    let scope = bearer.as_deref().and_then(|t| admin.auth.bearer(t));
    let caller = match (&bearer, &scope) {
        (_, Some(_)) => None,
        (Some(token), None) => match admin.identity.authenticate(token) {
            Ok(c) => Some(c),
            Err(e) => return unauthorized(&e.to_string()),
        },
        (None, None) => {
            return unauthorized("send an admin token or the agent's JWT-SVID as a bearer token");
        }
    };
    let body = match read_json_body(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let ask: ReferenceRequest = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return bad_request(&format!("expected {{\"agent\", \"service\"}}: {e}")),
    };
    let (who, tenant) = match (&caller, ask.agent) {
        (Some(c), None) => (Lookup::Id(c.spiffe_id.clone()), c.tenant.clone()),
        (Some(_), Some(_)) => {
            return bad_request("an agent asks for its own reference; leave \"agent\" out");
        }
        (None, Some(name)) => (Lookup::Name(name), None),
        (None, None) => return bad_request("name the agent: {\"agent\": NAME, \"service\": …}"),
    };
    let state = admin.state.clone();
    let found = tokio::task::spawn_blocking(move || who.find(&state)).await;
    let agent = match found {
        Ok(Ok(a)) => a,
        Ok(Err(RegistryError::UnknownAgent(n))) => {
            return error(
                StatusCode::NOT_FOUND,
                "unknown_agent",
                &format!("no registered agent {n}"),
            );
        }
        Ok(Err(e)) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "registry_failed",
                &e.to_string(),
            );
        }
        Err(_) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "registry_failed",
                "lookup failed",
            );
        }
    };
    // A tenant's admin gets references for its own agents only; others look unknown.
    if let Some(scope) = &scope
        && !scope.sees(agent.tenant.as_deref())
    {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_agent",
            &format!("no registered agent {}", agent.name),
        );
    }
    if agent.revoked.is_some() {
        return error(
            StatusCode::FORBIDDEN,
            "agent_revoked",
            "the agent is revoked",
        );
    }
    if !agent.reference_tokens {
        return error(
            StatusCode::FORBIDDEN,
            "reference_tokens_off",
            &format!(
                "agent {} is not in reference-token mode; register it with --reference-tokens",
                agent.name
            ),
        );
    }
    let tenant = tenant.or(agent.tenant).unwrap_or_default();
    let served = admin
        .vault
        .connections()
        .iter()
        .any(|c| c.service == ask.service && c.tenant == tenant && c.revoked.is_none());
    if !served {
        return error(
            StatusCode::NOT_FOUND,
            "no_connection",
            &format!(
                "no vault connection for service {}; add one with `agentgate vault set {}`",
                ask.service, ask.service
            ),
        );
    }
    match admin.vault.references.mint(&agent.spiffe_id, &ask.service) {
        Ok((reference, expires)) => {
            let body = serde_json::json!({
                "reference": reference,
                "expires_in": expires - crate::clock::now(),
                "agent": agent.spiffe_id,
                "service": ask.service,
            });
            json_bytes(StatusCode::OK, body.to_string().into())
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "mint_failed",
            &e.to_string(),
        ),
    }
}

enum Lookup {
    Name(String),
    Id(String),
}

impl Lookup {
    fn find(
        self,
        state: &crate::state::StateDir,
    ) -> Result<crate::identity::registry::Agent, RegistryError> {
        let registry = Registry::open(state)?;
        match self {
            Lookup::Name(n) => registry.agent(&n),
            Lookup::Id(id) => registry
                .agents(None, 0)?
                .into_iter()
                .find(|a| a.spiffe_id == id)
                .ok_or(RegistryError::UnknownAgent(id)),
        }
    }
}

/// PANIC: one agent, or all (of the caller's scope).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PanicRequest {
    /// Agent name or SPIFFE ID.
    pub agent: Option<String>,
    #[serde(default)]
    pub all: bool,
    pub reason: Option<String>,
}

/// PANIC: revoke an agent (or all) and every credential it received, at once.
#[utoipa::path(post, path = "/api/v1/panic", tag = "panic", request_body = PanicRequest,
    responses((status = 200, description = "the PANIC report", body = Object),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn panic(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    req: Request,
) -> Reply {
    let body = match read_json_body(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let ask: PanicRequest = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return bad_request(&format!(
                "expected {{\"agent\": NAME}} or {{\"all\": true}}: {e}"
            ));
        }
    };
    let target = match (ask.agent, ask.all, scope.tenant()) {
        (Some(a), false, None) if !a.is_empty() => Target::Agent(a),
        (Some(a), false, Some(t)) if !a.is_empty() => {
            // A tenant admin PANICs its own agents only; others look unknown.
            let state = admin.state.clone();
            let name = a.clone();
            let found = blocking("registry_failed", move || {
                Lookup::Name(name.clone()).find(&state).map(|a| a.tenant)
            })
            .await;
            let own = match (a.starts_with("spiffe://"), found) {
                (true, _) => crate::tenants::of_spiffe_id(&a) == Some(t),
                (false, Ok(Ok(tenant))) => tenant.as_deref() == Some(t),
                (false, Ok(Err(_))) => false,
                (false, Err(resp)) => return resp,
            };
            if !own {
                return error(
                    StatusCode::NOT_FOUND,
                    "unknown_agent",
                    &format!("no agent named {a} in tenant {t}"),
                );
            }
            Target::Agent(a)
        }
        (None, true, None) => Target::All,
        (None, true, Some(t)) => Target::Tenant(t.to_owned()),
        _ => return bad_request("give exactly one of \"agent\" and \"all\": true"),
    };
    let reason = ask
        .reason
        .unwrap_or_else(|| "PANIC from the admin API".into());
    match admin.panic.run(target, &reason).await {
        Ok(report) => json_bytes(
            StatusCode::OK,
            serde_json::to_string(&report).unwrap_or_default().into(),
        ),
        Err(PanicError::Registry(RegistryError::UnknownAgent(n))) => error(
            StatusCode::NOT_FOUND,
            "unknown_agent",
            &format!("no agent named {n}; give a registered name or a SPIFFE ID"),
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "panic_failed",
            &e.to_string(),
        ),
    }
}
