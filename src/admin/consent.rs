//! Admin routes of gate 4: the local approver (`/api/v1/consents…`) and the CIBA ping
//! endpoint (`/api/v1/ciba/notify`, authenticated by the request's own notification token).

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Request, State};
use axum::response::IntoResponse;
use http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::Scope;
use super::reply::{ErrorBody, Reply, bad_request, error, internal, json_bytes};
use super::request::{bearer, optional_json, query_param, read_json_body};
use super::state::Admin;
use crate::consent::{AnswerError, Consent};

/// List consents the caller may see: pending ones, or all with `?status=all`.
#[utoipa::path(get, path = "/api/v1/consents", tag = "consents",
    params(("status" = Option<String>, Query, description = "`all` for answered ones too")),
    responses((status = 200, description = "`{\"consents\": [...]}`", body = Object),
        (status = 401, body = ErrorBody)))]
pub async fn list(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    req: Request,
) -> Reply {
    let all = query_param(req.uri().query(), "status").as_deref() == Some("all");
    let mut visible = Vec::new();
    for (tenant, store) in admin.consents.all() {
        // A tenant's store holds only its agents; the instance store may hold agents
        // with an unconfigured tenant label, so each consent is checked too.
        if scope.tenant().is_some() && tenant != scope.tenant() {
            continue;
        }
        match store.list(!all) {
            Ok(list) => visible.extend(
                list.iter()
                    .filter(|c| scope.sees(c.tenant.as_deref()))
                    .map(listed),
            ),
            Err(e) => return internal("store_failed", &e.to_string()),
        }
    }
    let body = serde_json::json!({ "consents": visible });
    json_bytes(StatusCode::OK, body.to_string().into())
}

/// A consent the caller may see (with the store that holds it), or the 404 an unknown
/// one gets.
fn visible(
    admin: &Admin,
    scope: &Scope,
    id: &str,
) -> Result<(Arc<crate::consent::Consents>, Consent), Reply> {
    match admin.consents.find(id) {
        Ok(Some((_, store, c))) if scope.sees(c.tenant.as_deref()) => Ok((store.clone(), c)),
        Ok(_) => Err(not_found(id)),
        Err(e) => Err(internal("store_failed", &e.to_string())),
    }
}

/// One consent.
#[utoipa::path(get, path = "/api/v1/consents/{id}", tag = "consents",
    params(("id" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    Path(id): Path<String>,
) -> Reply {
    match visible(&admin, &scope, &id) {
        Ok((_, c)) => json_bytes(StatusCode::OK, listed(&c).to_string().into()),
        Err(resp) => resp,
    }
}

/// An answer to a consent.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerBody {
    /// Approve for a window, e.g. "10m": the same agent, action and resource pass until then.
    #[serde(rename = "for")]
    pub window: Option<String>,
    pub reason: Option<String>,
    /// Who answers (default "admin").
    pub by: Option<String>,
    /// How it was answered: "cli" or "api" (default).
    pub via: Option<String>,
}

/// Approve a pending consent (once, or for a window with `for`).
#[utoipa::path(post, path = "/api/v1/consents/{id}/approve", tag = "consents",
    params(("id" = String, Path)), request_body(content = AnswerBody, description = "optional"),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody),
        (status = 409, description = "already answered or expired", body = Object)))]
pub async fn approve(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    Path(id): Path<String>,
    req: Request,
) -> Reply {
    answer(&admin, &scope, req, &id, true).await
}

/// Deny a pending consent.
#[utoipa::path(post, path = "/api/v1/consents/{id}/deny", tag = "consents",
    params(("id" = String, Path)), request_body(content = AnswerBody, description = "optional"),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody),
        (status = 409, description = "already answered or expired", body = Object)))]
pub async fn deny(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    Path(id): Path<String>,
    req: Request,
) -> Reply {
    answer(&admin, &scope, req, &id, false).await
}

async fn answer(admin: &Admin, scope: &Scope, req: Request, id: &str, approve: bool) -> Reply {
    let store = match visible(admin, scope, id) {
        Ok((store, _)) => store,
        Err(resp) => return resp,
    };
    let body: AnswerBody = match optional_json(req, r#"{"for"?, "reason"?, "by"?}"#).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let window = match body.window.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(d)) if !d.is_zero() => Some(d),
        Some(_) => return bad_request("\"for\" must be a duration such as \"10m\""),
    };
    let by = body.by.as_deref().unwrap_or("admin");
    let how = match body.via.as_deref() {
        Some("cli") => "cli",
        _ => "api",
    };
    let result = if approve {
        store.approve(id, by, how, window)
    } else {
        store.deny(id, by, how, body.reason.as_deref())
    };
    match result {
        Ok(c) => json_bytes(StatusCode::OK, listed(&c).to_string().into()),
        Err(AnswerError::NotFound(_)) => not_found(id),
        Err(e @ AnswerError::AlreadyAnswered { status, .. }) => {
            conflict("already_answered", status, &e)
        }
        Err(e @ AnswerError::Expired(_)) => conflict("expired", "expired", &e),
        Err(e @ AnswerError::WindowTooLong(_)) => bad_request(&e.to_string()),
        Err(e @ AnswerError::Store(_)) => internal("store_failed", &e.to_string()),
    }
}

/// `POST /api/v1/ciba/notify`: the provider's ping. The bearer token must be the one sent
/// with that very request; anything else is refused without saying which part was wrong.
#[utoipa::path(post, path = "/api/v1/ciba/notify", tag = "consents", security(()),
    responses((status = 204, description = "accepted"), (status = 401, body = ErrorBody)))]
pub async fn notify(State(admin): State<Arc<Admin>>, req: Request) -> Reply {
    ping(&admin, None, req).await
}

/// The CIBA ping for a tenant's own CIBA client.
#[utoipa::path(post, path = "/api/v1/ciba/notify/{tenant}", tag = "consents", security(()),
    params(("tenant" = String, Path)),
    responses((status = 204, description = "accepted"), (status = 401, body = ErrorBody)))]
pub async fn notify_tenant(
    State(admin): State<Arc<Admin>>,
    Path(tenant): Path<String>,
    req: Request,
) -> Reply {
    ping(&admin, Some(&tenant), req).await
}

async fn ping(admin: &Admin, tenant: Option<&str>, req: Request) -> Reply {
    let bearer = bearer(&req);
    // The instance URL also serves tenants whose CIBA settings (and so notification URL)
    // are inherited from the instance's; each client knows only its own auth_req_ids.
    let clients: Vec<_> = match tenant {
        Some(t) => admin
            .consents
            .ciba_for(Some(t))
            .cloned()
            .into_iter()
            .collect(),
        None => std::iter::once(None)
            .chain(admin.consents.tenants().map(Some))
            .filter_map(|t| admin.consents.ciba_for(t).cloned())
            .collect(),
    };
    if clients.is_empty() {
        return error(StatusCode::NOT_FOUND, "not_found", "CIBA is not configured");
    }
    let body = match read_json_body(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let (Some(id), Some(bearer)) = (v["auth_req_id"].as_str(), bearer) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the auth_req_id with its client_notification_token",
        );
    };
    if clients.iter().any(|ciba| ciba.notify(id, &bearer)) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown auth_req_id or wrong notification token",
        )
    }
}

/// A consent as the API shows it: everything but the request digest.
fn listed(c: &crate::consent::Consent) -> serde_json::Value {
    let mut v = crate::consent::approvals::public(c);
    if let Some(o) = v.as_object_mut() {
        o.insert("id".into(), c.id.clone().into());
        o.insert("tenant".into(), c.tenant.clone().into());
        o.insert("created".into(), c.created.into());
        o.insert("window_until".into(), c.window_until.into());
        o.insert("backend".into(), c.backend.clone().into());
        o.insert("used".into(), c.used.into());
        o.insert("context".into(), c.tuple["context"].clone());
    }
    v
}

fn not_found(id: &str) -> Reply {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no consent {id}"),
    )
}

/// `409 {"error", "status", "reason"}`: the consent was answered (or expired) before.
fn conflict(code: &str, status: &str, e: &AnswerError) -> Reply {
    let body = serde_json::json!({"error": code, "status": status, "reason": e.to_string()});
    json_bytes(StatusCode::CONFLICT, body.to_string().into())
}
