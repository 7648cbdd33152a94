//! Gate 3 over the admin API: the policy in force, `explain` (tuple and decision for a
//! request, without sending it), and the AuthZEN PDP routes on the caller's policy.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Request, State};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::Scope;
use super::authzen;
use super::reply::{ErrorBody, Reply, bad_request, blocking, error, json_value};
use super::request::{parse_json, read_json_body};
use super::state::Admin;

/// AuthZEN PDP metadata.
#[utoipa::path(get, path = "/.well-known/authzen-configuration", tag = "authzen", security(()),
    responses((status = 200, body = Object)))]
pub async fn authzen_configuration(State(admin): State<Arc<Admin>>, req: Request) -> Reply {
    let body = authzen::configuration(&pdp_base(&admin, &req));
    json_value(StatusCode::OK, &body)
}

/// The PDP's base URL as the caller reached it: `admin.public_url` when set, else the
/// listener's scheme (https with `admin.tls`) and the caller's `Host` (a well-formed
/// authority only; otherwise the listener's own address).
pub(super) fn pdp_base(admin: &Admin, req: &Request) -> String {
    let config = &admin.config.admin;
    if let Some(url) = &config.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .filter(|a| a.as_str().bytes().all(|b| b != b'@'));
    match host {
        Some(host) => {
            let scheme = if config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{host}")
        }
        None => admin.base_url.clone(),
    }
}

/// AuthZEN access evaluation on the policy of the token's scope (a tenant's, or the
/// instance's).
#[utoipa::path(post, path = "/access/v1/evaluation", tag = "authzen",
    request_body(content = Object, description = "AuthZEN evaluation request"),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody)))]
pub async fn evaluation(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    req: Request,
) -> Reply {
    pdp(&admin, &scope, req, authzen::evaluation).await
}

/// AuthZEN batch evaluation on the policy of the token's scope.
#[utoipa::path(post, path = "/access/v1/evaluations", tag = "authzen",
    request_body(content = Object, description = "AuthZEN evaluations request"),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody)))]
pub async fn evaluations(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    req: Request,
) -> Reply {
    pdp(&admin, &scope, req, authzen::evaluations).await
}

async fn pdp(
    admin: &Admin,
    scope: &Scope,
    req: Request,
    handler: fn(&crate::policy::Policy, &[u8]) -> Result<serde_json::Value, authzen::BadRequest>,
) -> Reply {
    let body = match read_json_body(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    // A tenant's token asks its tenant's policy; the instance token the instance's.
    let Some(policy) = admin.policies.for_tenant(scope.tenant()).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no policy for this tenant",
        );
    };
    match blocking("evaluation_failed", move || handler(&policy, &body)).await {
        Ok(Ok(v)) => json_value(StatusCode::OK, &v),
        Ok(Err(e)) => bad_request(&e.to_string()),
        Err(resp) => resp,
    }
}

/// The policy in force for the caller: directory, files, hash, mode, last reload error.
#[utoipa::path(get, path = "/api/v1/policy", tag = "policy",
    responses((status = 200, body = Object), (status = 401, body = ErrorBody)))]
pub async fn policy_status(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
) -> Reply {
    match scope.tenant() {
        None => {
            let tenants: serde_json::Map<String, serde_json::Value> = admin
                .policies
                .tenants()
                .map(|(t, p)| {
                    (
                        t.to_owned(),
                        serde_json::to_value(p.status()).unwrap_or_default(),
                    )
                })
                .collect();
            let mut v =
                serde_json::to_value(admin.policies.instance().status()).unwrap_or_default();
            if !tenants.is_empty() {
                v["tenants"] = tenants.into();
            }
            json_value(StatusCode::OK, &v)
        }
        Some(t) => match admin.policies.for_tenant(Some(t)) {
            Some(p) => json_value(StatusCode::OK, &p.status()),
            None => error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no policy for this tenant",
            ),
        },
    }
}

/// `POST /api/v1/policy/explain`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ExplainBody {
    method: String,
    url: String,
    /// The request body as text.
    body: Option<String>,
    /// A registered agent to decide for (default: an anonymous `explain` agent).
    agent: Option<String>,
    /// Request headers, `{"content-type": "application/json"}`.
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

/// The AuthZEN tuple and the policy decision for a request, without sending it.
#[utoipa::path(post, path = "/api/v1/policy/explain", tag = "policy", request_body = ExplainBody,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody)))]
pub async fn explain(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    req: Request,
) -> Reply {
    let ask: ExplainBody =
        match parse_json(req, r#"{"method", "url", "body"?, "agent"?, "headers"?}"#).await {
            Ok(a) => a,
            Err(resp) => return resp,
        };
    let mut headers = http::HeaderMap::new();
    for (k, v) in &ask.headers {
        match (
            http::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(k), Ok(v)) => {
                headers.append(k, v);
            }
            _ => return bad_request(&format!("header {k:?} is not a valid HTTP header")),
        }
    }
    let admin2 = admin.clone();
    let done = blocking(
        "explain_failed",
        move || -> Result<serde_json::Value, Reply> {
            let trust_domain = &admin2.config.identity.trust_domain;
            let (id, name, owner, tenant) = match &ask.agent {
                Some(agent) => {
                    let a = crate::identity::registry::Registry::open(&admin2.state)
                        .and_then(|r| r.agent(agent))
                        .ok()
                        .filter(|a| scope.sees(a.tenant.as_deref()))
                        .ok_or_else(|| {
                            error(
                                StatusCode::NOT_FOUND,
                                "unknown_agent",
                                &format!("no agent named {agent}"),
                            )
                        })?;
                    (a.spiffe_id, a.name, a.owner, a.tenant)
                }
                None => {
                    let tenant = scope.tenant().map(str::to_owned);
                    let id = crate::identity::issuer::spiffe_id_for(
                        trust_domain,
                        tenant.as_deref(),
                        "explain",
                    );
                    (id, "explain".to_owned(), None, tenant)
                }
            };
            let subject = crate::intent::Subject {
                id: &id,
                name: &name,
                tenant: tenant.as_deref(),
                owner: owner.as_deref(),
                trust_domain,
            };
            let body = ask.body.unwrap_or_default();
            let tuple = crate::policy::runner::explain_tuple(
                &admin2.intent,
                &ask.method,
                &ask.url,
                &headers,
                body.as_bytes(),
                subject,
            )
            .map_err(|e| {
                error(
                    StatusCode::BAD_REQUEST,
                    "intent_refused",
                    &format!("the intent gate refuses this request: {e}"),
                )
            })?;
            let Some(policy) = admin2.policies.for_tenant(tenant.as_deref()) else {
                return Err(error(
                    StatusCode::NOT_FOUND,
                    "unknown_tenant",
                    "the agent's tenant is not configured in [tenants]",
                ));
            };
            let d = policy.evaluate(&tuple);
            Ok(serde_json::json!({
                "tuple": tuple,
                "decision": {
                    "effect": d.effect.as_str(),
                    "reasons": d.reasons,
                    "scopes": d.scopes,
                    "consent": d.consent,
                    "policy_hash": &*d.policy_hash,
                    "mode": policy.mode.as_str(),
                }
            }))
        },
    )
    .await;
    match done {
        Ok(Ok(v)) => json_value(StatusCode::OK, &v),
        Ok(Err(resp)) | Err(resp) => resp,
    }
}
