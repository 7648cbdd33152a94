//! The admin listener (`admin.listen`, loopback by default): health and readiness, the
//! built-in issuer's SPIFFE bundle, and the admin API (bearer admin token from the state
//! dir). The dashboard grows here.

pub mod client;

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
                async move { Ok::<_, Infallible>(route(&admin, &req).await) }
            });
            let conn = http1_builder(&limits)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            let _ = drive(conn, &activity, limits.idle_timeout, shutdown).await;
        });
    }
}

async fn route(admin: &Admin, req: &Request<Incoming>) -> Response<ProxyBody> {
    let ready = admin.health.ready.load(Ordering::Relaxed);
    let path = req.uri().path();
    if path.starts_with("/api/") && !authorized(admin, req) {
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
        (&Method::POST, "/api/v1/identity/reload") => reload(admin).await,
        (&Method::GET, "/healthz") => json(StatusCode::OK, r#"{"status":"ok"}"#),
        (&Method::GET, "/readyz") if ready => json(StatusCode::OK, r#"{"status":"ready"}"#),
        (&Method::GET, "/readyz") => {
            json(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"not ready"}"#)
        }
        _ => json(
            StatusCode::NOT_FOUND,
            r#"{"error":"not_found","reason":"no such admin route"}"#,
        ),
    }
}

/// Re-reads the agent registry and bundle files now, so a CLI change (revocation, key
/// rotation) is in force when the CLI returns.
async fn reload(admin: &Admin) -> Response<ProxyBody> {
    let identity = admin.identity.clone();
    match tokio::task::spawn_blocking(move || identity.refresh(true)).await {
        Ok(Ok(_)) => json(StatusCode::OK, r#"{"reloaded":true}"#),
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

fn authorized(admin: &Admin, req: &Request<Incoming>) -> bool {
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

fn json_bytes(status: StatusCode, body: bytes::Bytes) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
