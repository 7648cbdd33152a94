//! The admin listener (`admin.listen`, loopback by default): the versioned JSON API under
//! `/api/v1` (documented at `/api/v1/openapi.json`), the live event stream, `/metrics`,
//! health, the AuthZEN PDP and the dashboard at `/`. The CLI, the dashboard and automation
//! all use this one API.

// Handlers return early with a ready response (`Result<_, Reply>`); boxing it would only
// add an allocation to every refusal.
#![allow(clippy::result_large_err)]

pub mod access_request;
pub mod access_routes;
pub mod agents;
pub mod api;
pub mod audit;
pub mod auth;
pub mod authzen;
pub mod client;
pub mod consent;
pub mod dashboard;
pub mod events;
pub mod fleet_audit;
pub mod mcp;
pub mod policy;
pub mod replay;
pub mod reply;
pub mod request;
pub mod state;
pub mod system;
pub mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::LimitsConfig;
use crate::server::{Activity, drive, http1_builder};
use state::Admin;

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
    shutdown: watch::Receiver<bool>,
) {
    serve_router(listener, api::router(admin), tls, limits, shutdown).await;
}

/// Serves only `/healthz` and `/readyz`, in plain HTTP, on `health.listen` (kubelet probes
/// reach the pod's address; the admin API stays on loopback).
pub async fn serve_probes(
    listener: TcpListener,
    admin: Arc<Admin>,
    limits: LimitsConfig,
    shutdown: watch::Receiver<bool>,
) {
    let router = axum::Router::new()
        .route("/healthz", axum::routing::get(system::healthz))
        .route("/readyz", axum::routing::get(system::readyz))
        .with_state(admin);
    serve_router(listener, router, None, limits, shutdown).await;
}

async fn serve_router(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: LimitsConfig,
    mut shutdown: watch::Receiver<bool>,
) {
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
