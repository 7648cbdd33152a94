//! The admin listener (`admin.listen`, loopback by default): health and readiness today;
//! the admin API and dashboard grow here.

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
use crate::ingress::{Activity, drive, http1_builder};

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
    health: Arc<Health>,
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
        let (health, limits, shutdown) = (health.clone(), limits.clone(), shutdown.clone());
        tokio::spawn(async move {
            let activity = Activity::new();
            let svc = service_fn(move |req| {
                let health = health.clone();
                async move { Ok::<_, Infallible>(route(&health, &req)) }
            });
            let conn = http1_builder(&limits)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            let _ = drive(conn, &activity, limits.idle_timeout, shutdown).await;
        });
    }
}

fn route(health: &Health, req: &Request<Incoming>) -> Response<ProxyBody> {
    let ready = health.ready.load(Ordering::Relaxed);
    match (req.method(), req.uri().path()) {
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

fn json(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
