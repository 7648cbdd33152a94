//! The admin listener (`admin.listen`, loopback by default): the versioned JSON API under
//! `/api/v1` (documented at `/api/v1/openapi.json`), the live event stream, `/metrics`,
//! health, the AuthZEN PDP and the dashboard at `/`. The CLI, the dashboard and automation
//! all use this one API.

// Handlers return early with a ready response (`Result<_, Reply>`); boxing it would only
// add an allocation to every refusal.
#![allow(clippy::result_large_err)]

pub mod agents;
pub mod api;
pub mod auth;
pub mod authzen;
pub mod client;
pub mod consent;
pub mod dashboard;
pub mod events;
pub mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::LimitsConfig;
use crate::identity::Identity;
use crate::ingress::{Activity, drive, http1_builder};

pub use auth::Scope;

/// An admin route's answer.
pub type Reply = Response;

/// What admin routes reach.
pub struct Admin {
    pub health: Arc<Health>,
    pub identity: Arc<Identity>,
    pub intent: Arc<crate::intent::Intent>,
    /// The instance's policy and each tenant's.
    pub policies: Arc<crate::policy::Policies>,
    pub audit: Arc<crate::audit::Audit>,
    /// The instance's counters, rendered at `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where `audit.pub` lives.
    pub state: crate::state::StateDir,
    pub config: Arc<crate::config::Config>,
    pub vault: Arc<crate::vault::Vault>,
    /// The instance's consents and each tenant's (with their CIBA clients).
    pub consents: Arc<crate::consent::TenantConsents>,
    pub panic: Arc<crate::panic::Panic>,
    /// Admin, tenant and dashboard tokens.
    pub auth: auth::Auth,
    /// This process's instance id.
    pub instance: String,
    /// The URL the dashboard is reached at (`http://127.0.0.1:8081`).
    pub base_url: String,
    /// Configured tenant names.
    pub tenants: Vec<String>,
    /// When each agent (SPIFFE ID) last had a decision.
    pub last_seen: agents::LastSeen,
    /// Live event-stream subscribers.
    pub streams: events::Streams,
    /// The proxy listener's connection slots (for the open-connections gauge).
    pub slots: Arc<tokio::sync::Semaphore>,
    pub max_connections: usize,
}

/// Readiness shared with the proxy: true once the proxy listener accepts, false when draining.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    /// Sets whether the instance is ready to take traffic.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether the instance takes traffic.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// Why the admin listener cannot be set up as configured.
#[derive(Debug, thiserror::Error)]
pub enum AdminSetupError {
    #[error(
        "admin.listen = {0} is not a loopback address; the admin API can approve requests and revoke agents, so set admin.allow_remote = true and configure [admin.tls] (cert, key) to expose it"
    )]
    Remote(SocketAddr),
    #[error(
        "admin.allow_remote = true needs TLS: set admin.tls.cert and admin.tls.key (PEM files)"
    )]
    NoTls,
    #[error("admin TLS ({path}): {reason}")]
    Tls { path: PathBuf, reason: String },
    #[error(
        "{0} and {1} have the same admin token, so one would act as the other; give each tenant its own admin_token_file"
    )]
    SharedToken(String, String),
}

/// Refuses admin tokens that two scopes share (e.g. a tenant's `admin_token_file` pointing
/// at the instance's `admin.token`).
pub fn check_distinct(
    admin_token: &str,
    tenant_tokens: &[(String, String)],
) -> Result<(), AdminSetupError> {
    let mut seen: Vec<(&str, String)> = vec![(admin_token, "the instance".to_owned())];
    for (tenant, token) in tenant_tokens {
        if let Some((_, other)) = seen.iter().find(|(t, _)| *t == token.as_str()) {
            return Err(AdminSetupError::SharedToken(
                format!("tenant {tenant}"),
                other.clone(),
            ));
        }
        seen.push((token, format!("tenant {tenant}")));
    }
    Ok(())
}

/// The URL the dashboard link points at: `admin.public_url`, or the listener's own address
/// (loopback when it listens on every address).
pub fn base_url(config: &crate::config::AdminConfig, addr: SocketAddr) -> String {
    if let Some(url) = &config.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::IpAddr::from([127, 0, 0, 1]));
    }
    format!("{scheme}://{addr}")
}

/// Admin connections open at once; beyond it new ones are closed at once.
const MAX_ADMIN_CONNECTIONS: usize = 256;

/// Checks the listener settings and builds the TLS acceptor when TLS is configured.
pub fn tls_acceptor(
    config: &crate::config::AdminConfig,
) -> Result<Option<tokio_rustls::TlsAcceptor>, AdminSetupError> {
    if !config.listen.ip().is_loopback() && !config.allow_remote {
        return Err(AdminSetupError::Remote(config.listen));
    }
    let Some(tls) = &config.tls else {
        return match config.allow_remote {
            true => Err(AdminSetupError::NoTls),
            false => Ok(None),
        };
    };
    let fail = |path: &PathBuf, reason: String| AdminSetupError::Tls {
        path: path.clone(),
        reason,
    };
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| fail(&tls.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(fail(&tls.cert, "no certificate in the file".into()));
    }
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| fail(&tls.key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(&tls.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| fail(&tls.key, e.to_string()))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))))
}

/// Serves the admin listener until `shutdown` flips.
pub async fn serve(
    listener: TcpListener,
    admin: Arc<Admin>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: LimitsConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let router = api::router(admin.clone());
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                "admin listener at {MAX_ADMIN_CONNECTIONS} connections; closing a new one"
            );
            drop(stream);
            continue;
        };
        let (router, limits, shutdown, tls) = (
            router.clone(),
            limits.clone(),
            shutdown.clone(),
            tls.clone(),
        );
        tokio::spawn(async move {
            let _permit = permit;
            let activity = Activity::new();
            let svc = TowerToHyperService::new(router);
            match tls {
                None => {
                    let conn = http1_builder(&limits)
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades();
                    let _ = drive(conn, &activity, limits.idle_timeout, shutdown).await;
                }
                Some(acceptor) => {
                    let accepted =
                        tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(stream))
                            .await;
                    let Ok(Ok(stream)) = accepted else {
                        tracing::debug!("admin TLS handshake failed or timed out");
                        return;
                    };
                    let conn = http1_builder(&limits)
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades();
                    let _ = drive(conn, &activity, limits.idle_timeout, shutdown).await;
                }
            }
        });
    }
}

/// Largest JSON body an admin route reads.
pub(crate) const MAX_ADMIN_BODY: usize = 1 << 20;

/// Reads a JSON request body up to [`MAX_ADMIN_BODY`]; refusals come back as responses.
pub(crate) async fn read_json_body(req: Request) -> Result<bytes::Bytes, Reply> {
    use http_body_util::BodyExt;
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !is_json {
        return Err(bad_request(
            "send the body as Content-Type: application/json",
        ));
    }
    let mut body = req.into_body();
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| bad_request(&format!("reading the body failed: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen > MAX_ADMIN_BODY {
            // Read (bounded) what the client is still sending, so it gets the answer
            // rather than a reset connection.
            let drain = async { while let Some(Ok(_)) = body.frame().await {} };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
            return Err(bad_request_code(
                "body_too_large",
                "admin request bodies are limited to 1 MiB",
            ));
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// Parses an optional JSON body: none (no length, no chunks) is `T::default()`.
pub(crate) async fn optional_json<T: serde::de::DeserializeOwned + Default>(
    req: Request,
    expected: &str,
) -> Result<T, Reply> {
    let has_body = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v != "0")
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    if !has_body {
        return Ok(T::default());
    }
    parse_json(req, expected).await
}

/// Reads and parses a JSON body; `expected` describes the shape for the 400 reason.
pub(crate) async fn parse_json<T: serde::de::DeserializeOwned>(
    req: Request,
    expected: &str,
) -> Result<T, Reply> {
    let body = read_json_body(req).await?;
    serde_json::from_slice(&body).map_err(|e| bad_request(&format!("expected {expected}: {e}")))
}

/// A 400 with its reason.
pub(crate) fn bad_request(reason: &str) -> Reply {
    bad_request_code("bad_request", reason)
}

/// A 400 with a specific code.
pub(crate) fn bad_request_code(code: &str, reason: &str) -> Reply {
    error(StatusCode::BAD_REQUEST, code, reason)
}

/// A 403 for a route or object outside the caller's scope.
pub(crate) fn forbidden(reason: &str) -> Reply {
    error(StatusCode::FORBIDDEN, "forbidden", reason)
}

/// 403 unless the caller is the instance admin.
pub(crate) fn instance_only(scope: &Scope) -> Result<(), Reply> {
    match scope {
        Scope::Instance => Ok(()),
        Scope::Tenant(_) => Err(forbidden(
            "this route is for the instance admin token; a tenant token cannot use it",
        )),
    }
}

pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    // Form-decoded: the CLI encodes subjects (`set cred_… github` arrives as `set+cred_…+github`).
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The bearer token of a request, if it sent one.
pub(crate) fn bearer(req: &Request) -> Option<String> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_owned())
}

/// A JSON error answer: `{"error": code, "reason": reason}`.
pub(crate) fn error(status: StatusCode, code: &str, reason: &str) -> Reply {
    let body = serde_json::json!({"error": code, "reason": reason});
    json_bytes(status, body.to_string().into())
}

/// A 500 for a failed blocking task or store, with the reason (never a secret).
pub(crate) fn internal(code: &str, reason: &str) -> Reply {
    error(StatusCode::INTERNAL_SERVER_ERROR, code, reason)
}

/// 401 with a `WWW-Authenticate: Bearer` challenge.
pub(crate) fn unauthorized(reason: &str) -> Reply {
    let mut resp = error(StatusCode::UNAUTHORIZED, "unauthorized", reason);
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// A JSON answer from a serializable value.
pub(crate) fn json_value(status: StatusCode, value: &impl Serialize) -> Reply {
    match serde_json::to_vec(value) {
        Ok(body) => json_bytes(status, body.into()),
        Err(e) => internal("encode_failed", &e.to_string()),
    }
}

pub(crate) fn json_bytes(status: StatusCode, body: bytes::Bytes) -> Reply {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Runs blocking work (SQLite, policy evaluation) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    code: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Reply> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| internal(code, "the task failed; see the proxy log"))
}

impl IntoResponse for auth::Full {
    fn into_response(self) -> Response {
        error(StatusCode::TOO_MANY_REQUESTS, "too_many", &self.to_string())
    }
}
