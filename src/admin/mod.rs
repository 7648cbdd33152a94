//! The admin listener (`admin.listen`, loopback by default): health and readiness, the
//! built-in issuer's SPIFFE bundle, and the admin API (bearer admin token from the state
//! dir). The dashboard grows here.

pub mod authzen;
pub mod client;
pub mod consent;
pub mod token;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::ProxyBody;
use crate::config::LimitsConfig;
use crate::identity::Identity;
use crate::ingress::{Activity, drive, http1_builder};

/// What admin routes reach.
pub struct Admin {
    pub health: Arc<Health>,
    pub identity: Arc<Identity>,
    pub policy: Arc<crate::policy::Policy>,
    pub audit: Arc<crate::audit::Audit>,
    /// Where `audit.pub` lives.
    pub state: crate::state::StateDir,
    pub vault: Arc<crate::vault::Vault>,
    pub consents: Arc<crate::consent::Consents>,
    /// The CIBA client, whose pings arrive here.
    pub ciba: Option<Arc<crate::consent::ciba::Ciba>>,
    pub panic: Arc<crate::panic::Panic>,
    /// The bearer token `/api/` routes require.
    pub token: String,
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
}

/// Serves the admin listener until `shutdown` flips.
pub async fn serve(
    listener: TcpListener,
    admin: Arc<Admin>,
    limits: LimitsConfig,
    mut shutdown: watch::Receiver<bool>,
) {
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
        let (admin, limits, shutdown) = (admin.clone(), limits.clone(), shutdown.clone());
        tokio::spawn(async move {
            let activity = Activity::new();
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(route(&admin, req).await) }
            });
            let conn = http1_builder(&limits)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            let _ = drive(conn, &activity, limits.idle_timeout, shutdown).await;
        });
    }
}

/// Largest JSON body an admin route reads.
const MAX_ADMIN_BODY: usize = 1 << 20;

async fn route(admin: &Admin, req: Request<Incoming>) -> Response<ProxyBody> {
    let ready = admin.health.ready.load(Ordering::Relaxed);
    let path = req.uri().path().to_owned();
    let path = path.as_str();
    // References authenticate in their route: an agent may use its own JWT-SVID there.
    let protected = (path.starts_with("/api/") || path.starts_with("/access/"))
        && path != "/api/v1/references"
        && path != "/api/v1/ciba/notify";
    if protected && !authorized(admin, &req) {
        let mut resp = json(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"unauthorized","reason":"send Authorization: Bearer <admin token> (the admin.token file in the state dir)"}"#,
        );
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    match (req.method(), path) {
        (&Method::GET, "/.well-known/spiffe-bundle") => {
            json_bytes(StatusCode::OK, admin.identity.bundle_jwks())
        }
        (&Method::GET, "/.well-known/authzen-configuration") => {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1");
            let body = authzen::configuration(&format!("http://{host}"));
            json_bytes(StatusCode::OK, body.to_string().into())
        }
        (&Method::POST, "/access/v1/evaluation") => pdp(admin, req, authzen::evaluation).await,
        (&Method::POST, "/access/v1/evaluations") => pdp(admin, req, authzen::evaluations).await,
        (&Method::GET, "/api/v1/policy") => {
            let body = serde_json::to_string(&admin.policy.status()).unwrap_or_default();
            json_bytes(StatusCode::OK, body.into())
        }
        (&Method::POST, "/api/v1/identity/reload") => reload(admin, &req).await,
        (&Method::GET, "/api/v1/vault") => token::list(admin),
        (&Method::POST, "/api/v1/vault/reload") => token::reload(admin, &req).await,
        (&Method::POST, "/api/v1/references") => token::reference(admin, req).await,
        (&Method::POST, "/api/v1/panic") => token::panic(admin, req).await,
        (&Method::POST, "/api/v1/ciba/notify") => consent::notify(admin, req).await,
        (_, p) if p == "/api/v1/consents" || p.starts_with("/api/v1/consents/") => {
            consent::route(admin, req).await
        }
        (&Method::GET, "/api/v1/audit") => audit_page(admin, req.uri().query()).await,
        (&Method::GET, "/api/v1/audit/verify") => audit_verify(admin).await,
        (&Method::GET, "/healthz") => json(StatusCode::OK, r#"{"status":"ok"}"#),
        (&Method::GET, "/readyz") => match (ready, admin.identity.not_ready()) {
            (true, None) => json(StatusCode::OK, r#"{"status":"ready"}"#),
            (true, Some(reason)) => {
                let body = serde_json::json!({"status": "not ready", "reason": reason});
                json_bytes(StatusCode::SERVICE_UNAVAILABLE, body.to_string().into())
            }
            (false, _) => json(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"not ready"}"#),
        },
        _ => json(
            StatusCode::NOT_FOUND,
            r#"{"error":"not_found","reason":"no such admin route"}"#,
        ),
    }
}

/// Runs an AuthZEN PDP route on the request's JSON body.
async fn pdp(
    admin: &Admin,
    req: Request<Incoming>,
    handler: fn(&crate::policy::Policy, &[u8]) -> Result<serde_json::Value, authzen::BadRequest>,
) -> Response<ProxyBody> {
    let body = match read_json_body(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let policy = admin.policy.clone();
    match tokio::task::spawn_blocking(move || handler(&policy, &body)).await {
        Ok(Ok(v)) => json_bytes(StatusCode::OK, v.to_string().into()),
        Ok(Err(e)) => bad_request(&e.to_string()),
        Err(_) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":"evaluation_failed","reason":"policy evaluation task failed; see the proxy log"}"#,
        ),
    }
}

/// Reads a JSON request body up to [`MAX_ADMIN_BODY`]; refusals come back as responses.
pub(crate) async fn read_json_body(
    req: Request<Incoming>,
) -> Result<bytes::Bytes, Response<ProxyBody>> {
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
    match http_body_util::Limited::new(req.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(json(
            StatusCode::PAYLOAD_TOO_LARGE,
            r#"{"error":"body_too_large","reason":"admin request bodies are limited to 1 MiB"}"#,
        )),
        Err(e) => Err(bad_request(&format!("reading the body failed: {e}"))),
    }
}

pub(crate) fn bad_request(reason: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({"error": "bad_request", "reason": reason});
    json_bytes(StatusCode::BAD_REQUEST, body.to_string().into())
}

/// Re-reads the agent registry and bundle files now, so a CLI change (revocation, key
/// rotation) is in force when the CLI returns. The CLI names the change in the query
/// (`?event=agent_revoked&subject=…`), and it becomes an admin record in the audit log.
async fn reload(admin: &Admin, req: &Request<Incoming>) -> Response<ProxyBody> {
    let identity = admin.identity.clone();
    match tokio::task::spawn_blocking(move || identity.refresh(true)).await {
        Ok(Ok(_)) => {
            let event = query_param(req.uri().query(), "event");
            if let Some(event) = event.filter(|e| is_event_name(e)) {
                let subject = query_param(req.uri().query(), "subject").unwrap_or_default();
                let detail = serde_json::json!({ "subject": subject });
                if let Err(e) = admin.audit.admin_event(&event, detail).await {
                    let body =
                        serde_json::json!({"error": "audit_unavailable", "reason": e.to_string()});
                    return json_bytes(StatusCode::SERVICE_UNAVAILABLE, body.to_string().into());
                }
            }
            json(StatusCode::OK, r#"{"reloaded":true}"#)
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "identity reload failed");
            let body = serde_json::json!({"error": "reload_failed", "reason": e.to_string()});
            json_bytes(StatusCode::INTERNAL_SERVER_ERROR, body.to_string().into())
        }
        Err(_) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":"reload_failed","reason":"reload task failed; see the proxy log"}"#,
        ),
    }
}

/// Records after `after` (default 0), at most `limit` (default 100, max 1000).
async fn audit_page(admin: &Admin, query: Option<&str>) -> Response<ProxyBody> {
    let after: i64 = query_param(query, "after")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let limit: i64 = query_param(query, "limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .clamp(1, 1000);
    let db = admin.audit.db_path().to_owned();
    let read = move || -> Result<String, rusqlite::Error> {
        let conn =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut stmt = conn.prepare(
            "SELECT seq, record, hash FROM records WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let mut rows = stmt.query(rusqlite::params![after, limit])?;
        let mut records = Vec::new();
        let mut last = after;
        while let Some(row) = rows.next()? {
            last = row.get(0)?;
            let record: String = row.get(1)?;
            let hash: String = row.get(2)?;
            // Canonical JSON re-serializes to the same bytes; a damaged row (the log was
            // tampered with) is passed on as a string rather than breaking the page.
            let record = serde_json::from_str(&record).unwrap_or(serde_json::Value::String(record));
            records.push(serde_json::json!({ "hash": hash, "record": record }));
        }
        Ok(serde_json::json!({ "records": records, "next_after": last }).to_string())
    };
    match tokio::task::spawn_blocking(read).await {
        Ok(Ok(body)) => json_bytes(StatusCode::OK, body.into()),
        Ok(Err(e)) => {
            let body = serde_json::json!({"error": "audit_read_failed", "reason": e.to_string()});
            json_bytes(StatusCode::INTERNAL_SERVER_ERROR, body.to_string().into())
        }
        Err(_) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":"audit_read_failed"}"#,
        ),
    }
}

/// Runs `audit verify` on the live log.
async fn audit_verify(admin: &Admin) -> Response<ProxyBody> {
    let db = admin.audit.db_path().to_owned();
    let jsonl = db.with_file_name(crate::audit::checkpoint::JSONL_FILE);
    let key = std::fs::read_to_string(admin.state.path(crate::audit::checkpoint::PUB_FILE))
        .unwrap_or_default();
    let run = move || {
        let jsonl = Some(jsonl.as_path()).filter(|p| p.exists());
        crate::audit::verify::verify(&db, jsonl, Some(key.trim()))
    };
    match tokio::task::spawn_blocking(run).await {
        Ok(Ok(report)) => {
            let mut body = serde_json::to_value(&report).unwrap_or_default();
            body["intact"] = report.problem.is_none().into();
            json_bytes(StatusCode::OK, body.to_string().into())
        }
        Ok(Err(e)) => {
            let body = serde_json::json!({"error": "verify_failed", "reason": e.to_string()});
            json_bytes(StatusCode::INTERNAL_SERVER_ERROR, body.to_string().into())
        }
        Err(_) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":"verify_failed"}"#,
        ),
    }
}

pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    // Form-decoded: the CLI encodes subjects (`set cred_… github` arrives as `set+cred_…+github`).
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Admin event names are short snake_case words.
fn is_event_name(e: &str) -> bool {
    !e.is_empty() && e.len() <= 40 && e.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// The bearer token of a request, if it sent one.
pub(crate) fn bearer(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
}

/// A JSON error answer.
pub(crate) fn error(status: StatusCode, code: &str, reason: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({"error": code, "reason": reason});
    json_bytes(status, body.to_string().into())
}

/// 401 with a `WWW-Authenticate: Bearer` challenge.
pub(crate) fn unauthorized(reason: &str) -> Response<ProxyBody> {
    let mut resp = error(StatusCode::UNAUTHORIZED, "unauthorized", reason);
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

pub(crate) fn authorized(admin: &Admin, req: &Request<Incoming>) -> bool {
    let Some(given) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    aws_lc_rs::constant_time::verify_slices_are_equal(
        given.trim().as_bytes(),
        admin.token.as_bytes(),
    )
    .is_ok()
}

fn json(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    json_bytes(status, bytes::Bytes::from_static(body.as_bytes()))
}

pub(crate) fn json_bytes(status: StatusCode, body: bytes::Bytes) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
