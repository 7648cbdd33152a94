//! The dashboard: one page compiled into the binary. It holds no data and loads without a
//! token; it signs in with a pasted token or a one-time link (`agentgate dashboard`), keeps
//! the session token in the tab's `sessionStorage` and gets every datum from the API with
//! an `Authorization` header. No cookies, so no CSRF; a strict CSP allows only this origin.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{self, Scope};
use super::reply::{ErrorBody, Reply, error, forbidden, json_value, unauthorized};
use super::request::{bearer, optional_json, parse_json};
use super::state::Admin;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = Response::new(axum::body::Body::from(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `GET /`: the page.
pub async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

/// `GET /dashboard.js`.
pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /dashboard.css`.
pub async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

/// Who the token speaks for.
#[derive(Serialize, ToSchema)]
pub struct WhoAmI {
    /// `instance` or `tenant`.
    pub scope: &'static str,
    pub tenant: Option<String>,
    pub instance: String,
    pub version: &'static str,
    /// Configured tenants (instance scope only).
    pub tenants: Vec<String>,
    /// The fleet's name, in fleet mode (the views can then show the whole fleet).
    pub fleet: Option<String>,
}

/// Who the bearer token speaks for.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "dashboard",
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
pub async fn whoami(State(admin): State<Arc<Admin>>, Extension(scope): Extension<Scope>) -> Reply {
    let tenants = match scope {
        Scope::Instance => admin.tenants.clone(),
        Scope::Tenant(_) => Vec::new(),
    };
    json_value(
        StatusCode::OK,
        &WhoAmI {
            scope: scope.kind(),
            tenant: scope.tenant().map(str::to_owned),
            instance: admin.instance.clone(),
            version: env!("CARGO_PKG_VERSION"),
            tenants,
            fleet: admin
                .fleet
                .as_ref()
                .map(|_| admin.config.fleet.name.clone()),
        },
    )
}

/// A one-time sign-in link.
#[derive(Serialize, ToSchema)]
pub struct Link {
    pub code: String,
    /// Open it in a browser; the code is in the fragment, so it never reaches a server log.
    pub url: String,
    pub expires_in: u64,
}

/// `POST /api/v1/dashboard/link` (body optional).
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    /// A link for this tenant's view (instance admin only; default: the caller's scope).
    pub tenant: Option<String>,
}

/// A one-time dashboard link (what `agentgate dashboard` prints): valid 5 minutes, once.
#[utoipa::path(post, path = "/api/v1/dashboard/link", tag = "dashboard",
    request_body(content = LinkBody, description = "optional"),
    responses((status = 200, body = Link), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn link(
    State(admin): State<Arc<Admin>>,
    Extension(scope): Extension<Scope>,
    req: Request,
) -> Reply {
    let ask: LinkBody = match optional_json(req, r#"{"tenant"?}"#).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let scope = match (&scope, ask.tenant) {
        (_, None) => scope,
        (Scope::Instance, Some(t)) if admin.tenants.contains(&t) => Scope::Tenant(t.into()),
        (Scope::Instance, Some(t)) => {
            return error(
                StatusCode::NOT_FOUND,
                "unknown_tenant",
                &format!("tenant {t} is not configured"),
            );
        }
        (Scope::Tenant(own), Some(t)) if **own == *t => scope,
        (Scope::Tenant(_), Some(_)) => {
            return forbidden("a tenant token links to its own tenant only");
        }
    };
    match admin.auth.link_code(&scope) {
        Ok(code) => json_value(
            StatusCode::OK,
            &Link {
                url: format!("{}/#code={code}", admin.base_url),
                code,
                expires_in: auth::CODE_TTL.as_secs(),
            },
        ),
        Err(e) => e.into_response(),
    }
}

/// `POST /api/v1/dashboard/exchange`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExchangeBody {
    pub code: String,
}

/// A dashboard session.
#[derive(Serialize, ToSchema)]
pub struct Session {
    /// Send as `Authorization: Bearer`.
    pub token: String,
    pub expires_in: u64,
    pub scope: &'static str,
    pub tenant: Option<String>,
}

/// Swap a one-time link code for a 12-hour session token (no other token needed).
#[utoipa::path(post, path = "/api/v1/dashboard/exchange", tag = "dashboard",
    request_body = ExchangeBody,
    responses((status = 200, body = Session), (status = 401, body = ErrorBody)))]
pub async fn exchange(State(admin): State<Arc<Admin>>, req: Request) -> Reply {
    let ask: ExchangeBody = match parse_json(req, r#"{"code"}"#).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    match admin.auth.exchange(ask.code.trim()) {
        Some(Ok((token, scope))) => json_value(
            StatusCode::OK,
            &Session {
                token,
                expires_in: auth::SESSION_TTL.as_secs(),
                scope: scope.kind(),
                tenant: scope.tenant().map(str::to_owned),
            },
        ),
        Some(Err(e)) => e.into_response(),
        None => unauthorized(
            "this sign-in link was used already or has expired; run `agentgate dashboard` for a new one",
        ),
    }
}

/// Sign out: ends the dashboard session the request carries (other tokens are unaffected).
#[utoipa::path(delete, path = "/api/v1/dashboard/session", tag = "dashboard",
    responses((status = 204, description = "signed out"), (status = 401, body = ErrorBody)))]
pub async fn sign_out(State(admin): State<Arc<Admin>>, req: Request) -> Reply {
    if let Some(token) = bearer(&req) {
        admin.auth.end_session(&token);
    }
    StatusCode::NO_CONTENT.into_response()
}
