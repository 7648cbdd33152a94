//! System routes: liveness, readiness, the SPIFFE bundle, Prometheus metrics and the
//! identity reload the CLI asks for after it changed the state dir.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Request, State};
use http::{HeaderValue, StatusCode, header};

use super::auth::Scope;
use super::reply::{
    ErrorBody, Reply, blocking, error, instance_only, internal, json_bytes, json_value,
};
use super::request::query_param;
use super::state::Admin;

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "system", security(()),
    responses((status = 200, body = Object)))]
pub async fn healthz() -> Reply {
    json_bytes(
        StatusCode::OK,
        bytes::Bytes::from_static(br#"{"status":"ok"}"#),
    )
}

/// Readiness: the proxy accepts and identity has what it needs. A low audit disk is a
/// warning, not a reason to stop serving: still 200, with `warnings`.
#[utoipa::path(get, path = "/readyz", tag = "system", security(()),
    responses((status = 200, body = Object), (status = 503, body = Object)))]
pub async fn readyz(State(admin): State<Arc<Admin>>) -> Reply {
    let warnings = admin.disk.warnings();
    let (status, mut body) = match (admin.health.is_ready(), admin.identity.not_ready()) {
        (true, None) if warnings.is_empty() => {
            return json_bytes(
                StatusCode::OK,
                bytes::Bytes::from_static(br#"{"status":"ready"}"#),
            );
        }
        (true, None) => (StatusCode::OK, serde_json::json!({"status": "ready"})),
        (true, Some(reason)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "not ready", "reason": reason}),
        ),
        (false, _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "not ready"}),
        ),
    };
    if !warnings.is_empty() {
        body["warnings"] = serde_json::json!(warnings);
    }
    json_value(status, &body)
}

/// The built-in issuer's SPIFFE JWT bundle (JWKS).
#[utoipa::path(get, path = "/.well-known/spiffe-bundle", tag = "system", security(()),
    responses((status = 200, body = Object)))]
pub async fn spiffe_bundle(State(admin): State<Arc<Admin>>) -> Reply {
    json_bytes(StatusCode::OK, admin.identity.bundle_jwks())
}

/// Prometheus metrics (text format 0.0.4); instance admin only.
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, content_type = "text/plain", description = "metrics"),
        (status = 403, body = ErrorBody)))]
pub async fn metrics(State(admin): State<Arc<Admin>>, Extension(scope): Extension<Scope>) -> Reply {
    if let Err(resp) = instance_only(&scope) {
        return resp;
    }
    let admin2 = admin.clone();
    let counted = blocking("metrics_failed", move || {
        let pending: usize = admin2
            .consents
            .all()
            .map(|(_, c)| c.pending_count().unwrap_or(0))
            .sum();
        let now = crate::clock::now();
        let agents = crate::identity::registry::Registry::open(&admin2.state)
            .and_then(|r| r.agents(None, now))
            .map_or(0, |a| {
                a.iter()
                    .filter(|a| a.revoked.is_none() && a.active_tokens > 0)
                    .count()
            });
        (pending, agents)
    })
    .await;
    let (pending, agents) = match counted {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let gauges = crate::metrics::Gauges {
        pending_consents: pending as u64,
        open_connections: admin
            .max_connections
            .saturating_sub(admin.slots.available_permits()) as u64,
        agents_active: agents as u64,
        audit_seq: admin.audit.committed(),
        audit_disk: admin
            .disk
            .readings()
            .iter()
            .map(|r| crate::metrics::DiskGauge {
                dir: r.label,
                space: r.space.ok().map(|s| (s.free, s.total)),
                low: r.low(),
            })
            .collect(),
    };
    let text = admin.metrics.render(&gauges);
    let mut resp = Reply::new(axum::body::Body::from(text));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// Re-read the agent registry and bundle files now (instance admin; the CLI calls it after
/// changes it made to the state dir), optionally recording `event` for `subject`.
#[utoipa::path(post, path = "/api/v1/identity/reload", tag = "agents",
    params(("event" = Option<String>, Query), ("subject" = Option<String>, Query)),
    responses((status = 200, body = Object), (status = 403, body = ErrorBody)))]
pub async fn identity_reload(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    req: Request,
) -> Reply {
    if let Err(resp) = instance_only(&scope) {
        return resp;
    }
    let identity = admin.identity.clone();
    match blocking("reload_failed", move || identity.refresh(true)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "identity reload failed");
            return internal("reload_failed", &e.to_string());
        }
        Err(resp) => return resp,
    }
    let query = req.uri().query();
    if let Some(event) = query_param(query, "event").filter(|e| is_event_name(e)) {
        let subject = query_param(query, "subject").unwrap_or_default();
        let detail = serde_json::json!({ "subject": subject });
        if let Err(e) = admin.audit.admin_event(&event, detail).await {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                &e.to_string(),
            );
        }
    }
    json_bytes(
        StatusCode::OK,
        bytes::Bytes::from_static(br#"{"reloaded":true}"#),
    )
}

/// Admin event names are short snake_case words.
fn is_event_name(e: &str) -> bool {
    !e.is_empty() && e.len() <= 40 && e.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}
