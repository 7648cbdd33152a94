//! The access request endpoints of the AuthZEN Access Request and Approval Profile:
//! submit, poll and cancel (the logic is in [`super::access_request`]).

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};

use super::access_request::{Problem, task};
use super::auth::Scope;
use super::policy::pdp_base;
use super::reply::{ErrorBody, Reply, blocking, error, json_value};
use super::request::read_json_body;
use super::state::Admin;
use crate::consent::Status;
use crate::consent::access::is_access_request;

/// Longest `Idempotency-Key` taken.
const MAX_KEY_LEN: usize = 255;

/// Submit an access request for a requestable denial (`context.access_request` of a PDP
/// answer); a person answers it as a consent.
#[utoipa::path(post, path = "/access/v1/requests", tag = "authzen",
    request_body(content = Object, description = "ARAP access request: subject, action, resource, context, denial {evaluation_id, expires_at}, requested_access"),
    responses((status = 202, description = "task handle", body = Object),
        (status = 400, description = "application/problem+json", body = Object),
        (status = 409, description = "Idempotency-Key reused with another body", body = Object),
        (status = 410, description = "the requestable denial expired", body = Object)))]
pub async fn submit(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    req: Request,
) -> Reply {
    let base = pdp_base(&admin, &req);
    let key = match req.headers().get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(k)) if !k.is_empty() && k.len() <= MAX_KEY_LEN => Some(k.to_owned()),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "Idempotency-Key must be 1-255 visible ASCII characters",
            );
        }
    };
    let body = match read_json_body(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let consents = admin.consents.for_tenant(scope.tenant()).clone();
    let tenant = scope.tenant().map(str::to_owned);
    let admin2 = admin.clone();
    let submitted = blocking("access_request_failed", move || {
        admin2
            .access_requests
            .submit(&consents, tenant.as_deref(), key.as_deref(), &body)
    })
    .await;
    match submitted {
        Ok(Ok(s)) => {
            let status = if s.consent.status == Status::Pending {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            let mut resp = json_value(status, &task(&base, &s.consent));
            let location = format!("{base}/access/v1/requests/{}", s.consent.id);
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        Ok(Err(p)) => problem(&p),
        Err(resp) => resp,
    }
}

/// An access request's task: pending, or its outcome (approved: the approval to present).
#[utoipa::path(get, path = "/access/v1/requests/{id}", tag = "authzen",
    params(("id" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
pub async fn status(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    Path(id): Path<String>,
    req: Request,
) -> Reply {
    let base = pdp_base(&admin, &req);
    let consents = admin.consents.for_tenant(scope.tenant());
    match consents.get(&id) {
        Ok(Some(c)) if is_access_request(&c) => json_value(StatusCode::OK, &task(&base, &c)),
        Ok(_) => problem(&unknown(&id)),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_failed",
            &e.to_string(),
        ),
    }
}

/// Withdraw a pending access request (`POST` or `DELETE`).
#[utoipa::path(post, path = "/access/v1/requests/{id}/cancel", tag = "authzen",
    params(("id" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = Object),
        (status = 409, description = "no longer pending", body = Object)))]
pub async fn cancel(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    Path(id): Path<String>,
    req: Request,
) -> Reply {
    let base = pdp_base(&admin, &req);
    let consents = admin.consents.for_tenant(scope.tenant()).clone();
    let id2 = id.clone();
    let done = blocking("access_request_failed", move || {
        let c = consents
            .get(&id2)
            .ok()
            .flatten()
            .filter(is_access_request)?;
        let withdrawn = c.status == Status::Pending && consents.withdraw(&id2, None);
        Some((withdrawn, consents.get(&id2).ok().flatten().unwrap_or(c)))
    })
    .await;
    match done {
        Ok(Some((true, c))) => json_value(StatusCode::OK, &task(&base, &c)),
        Ok(Some((false, c))) => problem(&Problem {
            status: 409,
            kind: "invalid_task_state",
            detail: format!("access request {id} is already {}", c.status.as_str()),
        }),
        Ok(None) => problem(&unknown(&id)),
        Err(resp) => resp,
    }
}

fn unknown(id: &str) -> Problem {
    Problem {
        status: 404,
        kind: "unknown_task",
        detail: format!("no access request {id} for this caller"),
    }
}

/// The profile's problems as `application/problem+json`; other refusals in the admin
/// API's own error shape.
fn problem(p: &Problem) -> Reply {
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::BAD_REQUEST);
    let Some(kind) = p.type_uri() else {
        return error(status, p.kind, &p.detail);
    };
    let body = serde_json::json!({
        "type": kind,
        "title": status.canonical_reason().unwrap_or("error"),
        "status": p.status,
        "detail": p.detail,
    });
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp
}
