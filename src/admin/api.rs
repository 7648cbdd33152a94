//! The admin router: every route in one table, its OpenAPI document generated from the
//! handlers' annotations (served at `/api/v1/openapi.json`), and the bearer-token check
//! in front of the protected ones.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::routing::get;
use http::StatusCode;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::reply::{Reply, error, json_bytes, unauthorized};
use super::request::bearer;
use super::state::Admin;
use super::{
    access_routes, agents, audit, consent, dashboard, events, mcp, policy, replay, system, token,
};

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
        .routes(routes!(audit::audit_page))
        .routes(routes!(audit::audit_record))
        .routes(routes!(audit::audit_verify))
        .routes(routes!(policy::policy_status))
        .routes(routes!(policy::explain))
        .routes(routes!(replay::replay))
        .routes(routes!(replay::budgets))
        .routes(routes!(token::list))
        .routes(routes!(token::reload))
        .routes(routes!(token::panic))
        .routes(routes!(system::identity_reload))
        .routes(routes!(system::metrics))
        .routes(routes!(policy::evaluation))
        .routes(routes!(policy::evaluations))
        .routes(routes!(mcp::tools))
        .routes(routes!(mcp::accept))
        .routes(routes!(access_routes::submit))
        .routes(routes!(access_routes::status))
        .routes(routes!(access_routes::cancel))
        .route(
            "/access/v1/requests/{id}/cancel",
            axum::routing::delete(access_routes::cancel),
        )
        .route_layer(middleware::from_fn_with_state(admin.clone(), require_token));
    let public = OpenApiRouter::new()
        .routes(routes!(system::healthz))
        .routes(routes!(system::readyz))
        .routes(routes!(dashboard::exchange))
        .routes(routes!(events::stream))
        .routes(routes!(token::reference))
        .routes(routes!(consent::notify))
        .routes(routes!(consent::notify_tenant))
        .routes(routes!(system::spiffe_bundle))
        .routes(routes!(policy::authzen_configuration));
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
        .layer(middleware::from_fn(echo_request_id))
}

/// Echoes the caller's `X-Request-ID` on every answer (AuthZEN requires it of the PDP;
/// it helps any caller correlate).
async fn echo_request_id(req: Request, next: Next) -> Reply {
    let id = req.headers().get("x-request-id").cloned();
    let mut resp = next.run(req).await;
    if let Some(id) = id {
        resp.headers_mut().insert("x-request-id", id);
    }
    resp
}

async fn not_found() -> Reply {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such admin route; see /api/v1/openapi.json",
    )
}

/// Resolves the bearer token to a [`Scope`](super::auth::Scope) for the handler, or answers 401.
async fn require_token(State(admin): State<Arc<Admin>>, mut req: Request, next: Next) -> Reply {
    match bearer(&req).and_then(|t| admin.auth.bearer(&t)) {
        Some(scope) => {
            req.extensions_mut().insert(scope);
            next.run(req).await
        }
        None => unauthorized(
            "send Authorization: Bearer <token>: the admin.token file in the state dir, a tenant's admin.token, or a dashboard session",
        ),
    }
}
