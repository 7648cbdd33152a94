//! The admin router: every route in one table, its OpenAPI document generated from the
//! handlers' annotations (served at `/api/v1/openapi.json`), and the bearer-token check
//! in front of the protected ones.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::middleware::{self, Next};
use axum::routing::get;
use axum::{Extension, Router};
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{
    Admin, Reply, Scope, agents, bad_request, bearer, blocking, consent, dashboard, error, events,
    instance_only, internal, json_bytes, json_value, parse_json, query_param, token,
};

/// Every error: a code and what to do.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `unauthorized`.
    pub error: String,
    /// What went wrong and what to do.
    pub reason: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "AgentGate admin API",
        description = "The one interface the CLI, the dashboard and automation use. Send `Authorization: Bearer <token>`: the instance admin token (`admin.token` in the state dir) sees everything; a tenant token (`tenants/<t>/admin.token`) sees its tenant only. Errors are `{\"error\", \"reason\"}`.",
    ),
    modifiers(&Bearer),
    security(("bearer" = [])),
    tags(
        (name = "agents", description = "Registered agents"),
        (name = "consents", description = "Gate 4: escalations waiting for a person"),
        (name = "audit", description = "The hash-chained audit log"),
        (name = "events", description = "Live audit records (server-sent events)"),
        (name = "policy", description = "Gate 3: the Rego policy"),
        (name = "vault", description = "Gate 5: credential connections (metadata only)"),
        (name = "panic", description = "Revoke agents and their credentials at once"),
        (name = "dashboard", description = "Sign-in for the dashboard"),
        (name = "system", description = "Health, readiness and metrics"),
        (name = "authzen", description = "OpenID AuthZEN PDP on the same policy"),
    )
)]
struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The admin router with its state.
pub fn router(admin: Arc<Admin>) -> Router {
    let protected = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(dashboard::whoami))
        .routes(routes!(dashboard::link))
        .routes(routes!(dashboard::sign_out))
        .routes(routes!(events::ticket))
        .routes(routes!(agents::list, agents::register))
        .routes(routes!(agents::revoke))
        .routes(routes!(consent::list))
        .routes(routes!(consent::get))
        .routes(routes!(consent::approve))
        .routes(routes!(consent::deny))
        .routes(routes!(audit_page))
        .routes(routes!(audit_record))
        .routes(routes!(audit_verify))
        .routes(routes!(policy_status))
        .routes(routes!(explain))
        .routes(routes!(token::list))
        .routes(routes!(token::reload))
        .routes(routes!(token::panic))
        .routes(routes!(identity_reload))
        .routes(routes!(metrics))
        .routes(routes!(evaluation))
        .routes(routes!(evaluations))
        .route_layer(middleware::from_fn_with_state(admin.clone(), require_token));
    let public = OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(dashboard::exchange))
        .routes(routes!(events::stream))
        .routes(routes!(token::reference))
        .routes(routes!(consent::notify))
        .routes(routes!(consent::notify_tenant))
        .routes(routes!(spiffe_bundle))
        .routes(routes!(authzen_configuration));
    let (router, doc) = protected.merge(public).split_for_parts();
    let doc: Arc<str> = doc.to_json().unwrap_or_default().into();
    router
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { json_bytes(StatusCode::OK, bytes::Bytes::from(doc.to_string())) }
            }),
        )
        .route("/", get(dashboard::index))
        .route("/dashboard.js", get(dashboard::script))
        .route("/dashboard.css", get(dashboard::style))
        .fallback(not_found)
        .with_state(admin)
}

async fn not_found() -> Reply {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such admin route; see /api/v1/openapi.json",
    )
}

/// Resolves the bearer token to a [`Scope`] for the handler, or answers 401.
async fn require_token(State(admin): State<Arc<Admin>>, mut req: Request, next: Next) -> Reply {
    match bearer(&req).and_then(|t| admin.auth.bearer(&t)) {
        Some(scope) => {
            req.extensions_mut().insert(scope);
            next.run(req).await
        }
        None => super::unauthorized(
            "send Authorization: Bearer <token>: the admin.token file in the state dir, a tenant's admin.token, or a dashboard session",
        ),
    }
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "system", security(()),
    responses((status = 200, body = Object)))]
async fn healthz() -> Reply {
    json_bytes(
        StatusCode::OK,
        bytes::Bytes::from_static(br#"{"status":"ok"}"#),
    )
}

/// Readiness: the proxy accepts and identity has what it needs.
#[utoipa::path(get, path = "/readyz", tag = "system", security(()),
    responses((status = 200, body = Object), (status = 503, body = Object)))]
async fn readyz(State(admin): State<Arc<Admin>>) -> Reply {
    match (admin.health.is_ready(), admin.identity.not_ready()) {
        (true, None) => json_bytes(
            StatusCode::OK,
            bytes::Bytes::from_static(br#"{"status":"ready"}"#),
        ),
        (true, Some(reason)) => json_value(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"status": "not ready", "reason": reason}),
        ),
        (false, _) => json_bytes(
            StatusCode::SERVICE_UNAVAILABLE,
            bytes::Bytes::from_static(br#"{"status":"not ready"}"#),
        ),
    }
}

/// The built-in issuer's SPIFFE JWT bundle (JWKS).
#[utoipa::path(get, path = "/.well-known/spiffe-bundle", tag = "system", security(()),
    responses((status = 200, body = Object)))]
async fn spiffe_bundle(State(admin): State<Arc<Admin>>) -> Reply {
    json_bytes(StatusCode::OK, admin.identity.bundle_jwks())
}

/// AuthZEN PDP metadata.
#[utoipa::path(get, path = "/.well-known/authzen-configuration", tag = "authzen", security(()),
    responses((status = 200, body = Object)))]
async fn authzen_configuration(req: Request) -> Reply {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let body = super::authzen::configuration(&format!("http://{host}"));
    json_value(StatusCode::OK, &body)
}

/// AuthZEN access evaluation on the policy of the token's scope (a tenant's, or the
/// instance's).
#[utoipa::path(post, path = "/access/v1/evaluation", tag = "authzen",
    request_body(content = Object, description = "AuthZEN evaluation request"),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody)))]
async fn evaluation(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    req: Request,
) -> Reply {
    pdp(&admin, &scope, req, super::authzen::evaluation).await
}

/// AuthZEN batch evaluation on the policy of the token's scope.
#[utoipa::path(post, path = "/access/v1/evaluations", tag = "authzen",
    request_body(content = Object, description = "AuthZEN evaluations request"),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody)))]
async fn evaluations(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    req: Request,
) -> Reply {
    pdp(&admin, &scope, req, super::authzen::evaluations).await
}

async fn pdp(
    admin: &Admin,
    scope: &Scope,
    req: Request,
    handler: fn(
        &crate::policy::Policy,
        &[u8],
    ) -> Result<serde_json::Value, super::authzen::BadRequest>,
) -> Reply {
    let body = match super::read_json_body(req).await {
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

/// Prometheus metrics (text format 0.0.4); instance admin only.
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, content_type = "text/plain", description = "metrics"),
        (status = 403, body = ErrorBody)))]
async fn metrics(State(admin): State<Arc<Admin>>, Extension(scope): Extension<Scope>) -> Reply {
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
    };
    let text = admin.metrics.render(&gauges);
    let mut resp = Reply::new(axum::body::Body::from(text));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// The policy in force for the caller: directory, files, hash, mode, last reload error.
#[utoipa::path(get, path = "/api/v1/policy", tag = "policy",
    responses((status = 200, body = Object), (status = 401, body = ErrorBody)))]
async fn policy_status(
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
async fn explain(
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

/// Re-read the agent registry and bundle files now (instance admin; the CLI calls it after
/// changes it made to the state dir), optionally recording `event` for `subject`.
#[utoipa::path(post, path = "/api/v1/identity/reload", tag = "agents",
    params(("event" = Option<String>, Query), ("subject" = Option<String>, Query)),
    responses((status = 200, body = Object), (status = 403, body = ErrorBody)))]
async fn identity_reload(
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

/// A page of audit records the caller may see: after `after` (oldest first), or before
/// `before` (newest first).
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    params(("after" = Option<i64>, Query), ("before" = Option<i64>, Query),
        ("limit" = Option<i64>, Query, description = "1..1000, default 100")),
    responses((status = 200, description = "`{\"records\": [{\"hash\",\"record\"}], \"next_after\"}`", body = Object)))]
async fn audit_page(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    req: Request,
) -> Reply {
    let query = req.uri().query();
    let number = |name| -> Result<Option<i64>, Reply> {
        match query_param(query, name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| bad_request(&format!("{name} must be a number"))),
        }
    };
    let (after, before, limit) = match (number("after"), number("before"), number("limit")) {
        (Ok(a), Ok(b), Ok(l)) => (a, b, l.unwrap_or(100).clamp(1, 1000)),
        (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r,
    };
    let tenant = scope.tenant().map(str::to_owned);
    let db = admin.audit.db_path().to_owned();
    let (page, from, next) = match before {
        Some(b) => (super::events::Page::Before(b, limit), b, "next_before"),
        None => {
            let a = after.unwrap_or(0);
            (super::events::Page::After(a, limit), a, "next_after")
        }
    };
    let read = move || -> Result<serde_json::Value, rusqlite::Error> {
        let rows = super::events::rows(&db, tenant.as_deref(), page)?;
        let last = rows.last().map_or(from, |r| r.0 as i64);
        let records: Vec<_> = rows
            .into_iter()
            .map(|(_, record, hash)| serde_json::json!({ "hash": hash, "record": parse_record(record) }))
            .collect();
        Ok(serde_json::json!({ "records": records, next: last }))
    };
    match blocking("audit_read_failed", read).await {
        Ok(Ok(v)) => json_value(StatusCode::OK, &v),
        Ok(Err(e)) => internal("audit_read_failed", &e.to_string()),
        Err(resp) => resp,
    }
}

/// Canonical JSON re-serializes to the same bytes; a damaged row (the log was tampered
/// with) is passed on as a string rather than breaking the page.
fn parse_record(record: String) -> serde_json::Value {
    serde_json::from_str(&record).unwrap_or(serde_json::Value::String(record))
}

/// One audit record with its hash and the previous record's hash.
#[utoipa::path(get, path = "/api/v1/audit/{seq}", tag = "audit",
    params(("seq" = i64, Path)),
    responses((status = 200, description = "`{\"seq\",\"hash\",\"prev_hash\",\"record\"}`", body = Object),
        (status = 404, body = ErrorBody)))]
async fn audit_record(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    Path(seq): Path<String>,
) -> Reply {
    let Ok(seq) = seq.parse::<i64>() else {
        return bad_request("seq must be a number");
    };
    let db = admin.audit.db_path().to_owned();
    let read = move || -> Result<Option<(String, String, Option<String>)>, rusqlite::Error> {
        use rusqlite::OptionalExtension;
        let conn =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.query_row(
            "SELECT r.record, r.hash, p.hash FROM records r LEFT JOIN records p ON p.seq = r.seq - 1 WHERE r.seq = ?1",
            [seq],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
    };
    match blocking("audit_read_failed", read).await {
        Ok(Ok(Some((record, hash, prev)))) => {
            let record = parse_record(record);
            if !scope.sees(record["tenant"].as_str()) {
                return error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    &format!("no audit record {seq}"),
                );
            }
            json_value(
                StatusCode::OK,
                &serde_json::json!({"seq": seq, "hash": hash, "prev_hash": prev, "record": record}),
            )
        }
        Ok(Ok(None)) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no audit record {seq}"),
        ),
        Ok(Err(e)) => internal("audit_read_failed", &e.to_string()),
        Err(resp) => resp,
    }
}

/// Verify the whole chain and the signed checkpoints (instance admin).
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, description = "the verification report with `intact`", body = Object),
        (status = 403, body = ErrorBody)))]
async fn audit_verify(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
) -> Reply {
    if let Err(resp) = instance_only(&scope) {
        return resp;
    }
    let db = admin.audit.db_path().to_owned();
    let jsonl = db.with_file_name(crate::audit::checkpoint::JSONL_FILE);
    let key = std::fs::read_to_string(admin.state.path(crate::audit::checkpoint::PUB_FILE))
        .unwrap_or_default();
    let run = move || {
        let jsonl_path = Some(jsonl.as_path()).filter(|p| p.exists());
        let report = crate::audit::verify::verify(&db, jsonl_path, Some(key.trim()));
        (report, last_checkpoint(&db))
    };
    match blocking("verify_failed", run).await {
        Ok((Ok(report), last)) => {
            let mut body = serde_json::to_value(&report).unwrap_or_default();
            body["intact"] = report.problem.is_none().into();
            // Every record before the first bad one was verified.
            body["verified_to"] = report
                .problem
                .as_ref()
                .map_or(report.records, |p| p.seq.saturating_sub(1))
                .into();
            body["last_checkpoint"] = last.unwrap_or_default();
            json_value(StatusCode::OK, &body)
        }
        Ok((Err(e), _)) => internal("verify_failed", &e.to_string()),
        Err(resp) => resp,
    }
}

/// `{size, time}` of the newest signed checkpoint in the log (time in Unix microseconds).
fn last_checkpoint(db: &std::path::Path) -> Option<serde_json::Value> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    let signed: String = conn
        .query_row(
            "SELECT signed FROM checkpoints ORDER BY size DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&signed).ok()?;
    let c = &v["checkpoint"];
    Some(serde_json::json!({ "size": c["size"], "time": c["time"] }))
}
