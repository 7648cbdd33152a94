//! MCP tool pins over the admin API: what is pinned per server, and re-pinning a tool a
//! server changed. A tenant's token sees and accepts its tenant's pins only.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use http::StatusCode;
use serde::Deserialize;

use super::auth::Scope;
use super::reply::{ErrorBody, Reply, error, forbidden, json_value};
use super::state::Admin;

/// `GET /api/v1/mcp/tools` parameters.
#[derive(Deserialize, Default)]
pub struct ToolsQuery {
    /// Only this server's pins.
    server: Option<String>,
    /// `POST …/accept`: whose pin (the instance admin only).
    tenant: Option<String>,
}

/// The pinned MCP tools per server (every tenant's for the instance token), with the
/// changes waiting for a person.
#[utoipa::path(get, path = "/api/v1/mcp/tools", tag = "policy",
    params(("server" = Option<String>, Query)),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody)))]
pub async fn tools(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    Query(q): Query<ToolsQuery>,
) -> Reply {
    let Some(pins) = admin.intent.mcp_pins() else {
        return json_value(StatusCode::OK, &serde_json::json!({"servers": []}));
    };
    let all = matches!(scope, Scope::Instance);
    json_value(
        StatusCode::OK,
        &pins.list(scope.tenant(), all, q.server.as_deref()),
    )
}

/// Pin the changed definition of a tool (calls to it are judged normally again).
#[utoipa::path(post, path = "/api/v1/mcp/tools/{server}/{tool}/accept", tag = "policy",
    params(("server" = String, Path), ("tool" = String, Path), ("tenant" = Option<String>, Query)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
pub async fn accept(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    Path((server, tool)): Path<(String, String)>,
    Query(q): Query<ToolsQuery>,
) -> Reply {
    let tenant = match (&scope, q.tenant.as_deref()) {
        (Scope::Instance, t) => t.map(str::to_owned),
        (Scope::Tenant(_), None) => scope.tenant().map(str::to_owned),
        (Scope::Tenant(_), Some(_)) => {
            return forbidden("a tenant token accepts its own tenant's pins; drop ?tenant=");
        }
    };
    let accepted = admin
        .intent
        .mcp_pins()
        .is_some_and(|p| p.accept(tenant.as_deref(), &server, &tool));
    if !accepted {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!(
                "{server} has no changed tool {tool} waiting to be accepted; see `agentgate mcp tools`"
            ),
        );
    }
    admin.audit.submit(
        crate::audit::record::Admin {
            event: "mcp_tool_accepted".into(),
            tenant: tenant.clone(),
            detail: crate::audit::record::Detail::Other(
                serde_json::json!({"server": server, "tool": tool}),
            ),
        }
        .into(),
    );
    json_value(
        StatusCode::OK,
        &serde_json::json!({"server": server, "tool": tool, "accepted": true}),
    )
}
