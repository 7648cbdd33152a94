//! Admin routes of gate 4: the local approver (`/api/v1/consents…`) and the CIBA ping
//! endpoint (`/api/v1/ciba/notify`, authenticated by the request's own notification token).

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde::Deserialize;

use super::{Admin, bad_request, bearer, error, json_bytes, query_param, read_json_body};
use crate::body::ProxyBody;
use crate::consent::AnswerError;

/// `GET /api/v1/consents[?status=all]`, `GET /api/v1/consents/{id}`,
/// `POST /api/v1/consents/{id}/approve|deny`.
pub async fn route(admin: &Admin, req: Request<Incoming>) -> Response<ProxyBody> {
    let path = req.uri().path().to_owned();
    let rest = path
        .strip_prefix("/api/v1/consents")
        .unwrap_or_default()
        .trim_start_matches('/');
    let mut segments = rest.split('/').filter(|s| !s.is_empty());
    match (
        req.method().clone(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) {
        (Method::GET, None, _, _) => {
            let all = query_param(req.uri().query(), "status").as_deref() == Some("all");
            match admin.consents.list(!all) {
                Ok(list) => {
                    let body = serde_json::json!({ "consents": list.iter().map(listed).collect::<Vec<_>>() });
                    json_bytes(StatusCode::OK, body.to_string().into())
                }
                Err(e) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store_failed",
                    &e.to_string(),
                ),
            }
        }
        (Method::GET, Some(id), None, _) => match admin.consents.get(id) {
            Ok(Some(c)) => json_bytes(StatusCode::OK, listed(&c).to_string().into()),
            Ok(None) => not_found(id),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_failed",
                &e.to_string(),
            ),
        },
        (Method::POST, Some(id), Some(verb @ ("approve" | "deny")), None) => {
            let id = id.to_owned();
            answer(admin, req, &id, verb == "approve").await
        }
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such consent route"),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AnswerBody {
    /// Approve for a window, e.g. "10m".
    #[serde(rename = "for")]
    window: Option<String>,
    reason: Option<String>,
    /// Who answers (default "admin").
    by: Option<String>,
    /// How it was answered: "cli" or "api" (default).
    via: Option<String>,
}

async fn answer(
    admin: &Admin,
    req: Request<Incoming>,
    id: &str,
    approve: bool,
) -> Response<ProxyBody> {
    let has_body = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v != "0")
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    let body: AnswerBody = if has_body {
        let bytes = match read_json_body(req).await {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        match serde_json::from_slice(&bytes) {
            Ok(b) => b,
            Err(e) => {
                return bad_request(&format!("expected {{\"for\"?, \"reason\"?, \"by\"?}}: {e}"));
            }
        }
    } else {
        AnswerBody::default()
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
        admin.consents.approve(id, by, how, window)
    } else {
        admin.consents.deny(id, by, how, body.reason.as_deref())
    };
    match result {
        Ok(c) => json_bytes(StatusCode::OK, listed(&c).to_string().into()),
        Err(AnswerError::NotFound(_)) => not_found(id),
        Err(e @ AnswerError::AlreadyAnswered { status, .. }) => {
            conflict("already_answered", status, &e)
        }
        Err(e @ AnswerError::Expired(_)) => conflict("expired", "expired", &e),
        Err(e @ AnswerError::WindowTooLong(_)) => bad_request(&e.to_string()),
        Err(e @ AnswerError::Store(_)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_failed",
            &e.to_string(),
        ),
    }
}

/// `POST /api/v1/ciba/notify`: the provider's ping. The bearer token must be the one sent
/// with that very request; anything else is refused without saying which part was wrong.
pub async fn notify(admin: &Admin, req: Request<Incoming>) -> Response<ProxyBody> {
    let bearer = bearer(&req);
    let Some(ciba) = &admin.ciba else {
        return error(StatusCode::NOT_FOUND, "not_found", "CIBA is not configured");
    };
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
    if ciba.notify(id, &bearer) {
        let mut resp = Response::new(ProxyBody::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        resp
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

fn not_found(id: &str) -> Response<ProxyBody> {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no consent {id}"),
    )
}

/// `409 {"error", "status", "reason"}`: the consent was answered (or expired) before.
fn conflict(code: &str, status: &str, e: &AnswerError) -> Response<ProxyBody> {
    let body = serde_json::json!({"error": code, "status": status, "reason": e.to_string()});
    json_bytes(StatusCode::CONFLICT, body.to_string().into())
}
