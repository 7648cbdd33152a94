//! Admin routes of gate 5: vault connections (metadata only), `agw_` references, PANIC.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::{
    Admin, bad_request, bearer, error, json_bytes, query_param, read_json_body, unauthorized,
};
use crate::body::ProxyBody;
use crate::identity::registry::{Registry, RegistryError};
use crate::panic::{PanicError, Target};

/// `GET /api/v1/vault`: every connection, never a secret.
pub fn list(admin: &Admin) -> Response<ProxyBody> {
    let body = serde_json::json!({ "connections": admin.vault.connections() });
    json_bytes(StatusCode::OK, body.to_string().into())
}

/// `POST /api/v1/vault/reload`: re-reads `vault.db` after a CLI change and records it.
pub async fn reload(admin: &Admin, req: &Request<Incoming>) -> Response<ProxyBody> {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferenceRequest {
    agent: Option<String>,
    service: String,
}

/// `POST /api/v1/references`: an `agw_` reference for an agent registered with
/// `--reference-tokens`. With the admin token the body names the agent; an agent may ask
/// for its own with its JWT-SVID as the bearer token.
pub async fn reference(admin: &Admin, req: Request<Incoming>) -> Response<ProxyBody> {
    let bearer = bearer(&req);
    let as_admin = super::authorized(admin, &req);
    let caller = match (&bearer, as_admin) {
        (_, true) => None,
        (Some(token), false) => match admin.identity.authenticate(token) {
            Ok(c) => Some(c),
            Err(e) => return unauthorized(&e.to_string()),
        },
        (None, false) => {
            return unauthorized("send the admin token or the agent's JWT-SVID as a bearer token");
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
                "expires_in": expires - crate::identity::now(),
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PanicRequest {
    agent: Option<String>,
    #[serde(default)]
    all: bool,
    reason: Option<String>,
}

/// `POST /api/v1/panic`: `{"agent": NAME}` or `{"all": true}`, optional `"reason"`.
pub async fn panic(admin: &Admin, req: Request<Incoming>) -> Response<ProxyBody> {
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
    let target = match (ask.agent, ask.all) {
        (Some(a), false) if !a.is_empty() => Target::Agent(a),
        (None, true) => Target::All,
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
