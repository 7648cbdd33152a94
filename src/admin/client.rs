//! The CLI's side of the admin API: tells a running instance about registry changes. It
//! speaks plain HTTP/1.1 to the loopback admin address and never uses proxy variables
//! (`HTTPS_PROXY` may point at this very proxy inside `agentgate exec`).

use std::net::SocketAddr;
use std::time::Duration;

use http::Method;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::instance;
use crate::state::StateDir;

/// Why a running instance could not be told.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(
        "the running proxy (admin {addr}) did not confirm the change: {reason}. The registry is updated; the proxy applies it within a few seconds, or restart it"
    )]
    Failed { addr: SocketAddr, reason: String },
}

/// Asks the instance running on `state` (if any) to reload identity state now, and to
/// record `event` (name, subject) as an admin record in its audit log. Returns the admin
/// address that confirmed, or `None` when no instance runs.
pub async fn reload_identity(
    state: &StateDir,
    event: Option<(&str, &str)>,
) -> Result<Option<SocketAddr>, NotifyError> {
    let path = match event {
        Some((name, subject)) => format!("/api/v1/identity/reload?event={name}&subject={subject}"),
        None => "/api/v1/identity/reload".to_owned(),
    };
    confirm(state, &path).await
}

/// Asks the running instance (if any) to reload `vault.db`; `subject` names the change in
/// its audit record.
pub async fn reload_vault(
    state: &StateDir,
    subject: &str,
) -> Result<Option<SocketAddr>, NotifyError> {
    let subject: String = form_urlencoded::byte_serialize(subject.as_bytes()).collect();
    confirm(state, &format!("/api/v1/vault/reload?subject={subject}")).await
}

async fn confirm(state: &StateDir, path: &str) -> Result<Option<SocketAddr>, NotifyError> {
    match call(state, Method::POST, path, None).await? {
        None => Ok(None),
        Some(answer) if answer.status.is_success() => Ok(Some(answer.addr)),
        Some(answer) => Err(NotifyError::Failed {
            addr: answer.addr,
            reason: format!(
                "{}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ),
        }),
    }
}

/// What a running instance answered.
pub struct Answer {
    pub addr: SocketAddr,
    pub status: http::StatusCode,
    pub body: bytes::Bytes,
}

/// Calls an admin route of the instance running on `state` with the admin token and an
/// optional JSON body. `None` when no instance runs.
pub async fn call(
    state: &StateDir,
    method: Method,
    path: &str,
    json: Option<&serde_json::Value>,
) -> Result<Option<Answer>, NotifyError> {
    let Some(info) = instance::read(state) else {
        return Ok(None);
    };
    let addr = info.admin;
    let fail = |reason: String| NotifyError::Failed { addr, reason };
    let token = instance::admin_token(state).map_err(|e| fail(e.to_string()))?;
    let stream = match TcpStream::connect(addr).await {
        Ok(s) => s,
        // A crashed instance leaves its file behind; a refused connection means none runs.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(None),
        Err(e) => return Err(fail(e.to_string())),
    };
    let request = || {
        let mut req = http::Request::builder()
            .method(method.clone())
            .uri(path)
            .header(http::header::HOST, addr.to_string())
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        let body = match json {
            Some(v) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                bytes::Bytes::from(v.to_string())
            }
            None => bytes::Bytes::new(),
        };
        req.body(Full::new(body)).map_err(|e| e.to_string())
    };
    let call = async {
        let req = request()?;
        match &info.admin_tls {
            None => exchange(TokioIo::new(stream), req, addr).await,
            Some(cert) => {
                let tls = tls_connect(stream, cert, addr).await?;
                exchange(TokioIo::new(tls), req, addr).await
            }
        }
    };
    // PANIC waits for upstream revocations, each bounded by vault.fetch_timeout.
    match tokio::time::timeout(Duration::from_secs(60), call).await {
        Ok(Ok(answer)) => Ok(Some(answer)),
        Ok(Err(reason)) => Err(fail(reason)),
        Err(_) => Err(fail("no answer within 60 s".into())),
    }
}

async fn exchange<I>(
    io: I,
    req: http::Request<Full<bytes::Bytes>>,
    addr: SocketAddr,
) -> Result<Answer, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake(io).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok(Answer { addr, status, body })
}

/// TLS to the admin listener, trusting only its configured certificate (or the CA in that
/// file). The listener's certificate must name the address the CLI dials (127.0.0.1 when
/// it listens on all addresses).
async fn tls_connect(
    stream: TcpStream,
    cert: &std::path::Path,
    addr: SocketAddr,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("admin TLS certificate {}: {e}", cert.display()))?
    {
        let c = c.map_err(|e| format!("admin TLS certificate {}: {e}", cert.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("admin TLS certificate {}: {e}", cert.display()))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let ip = match addr.ip() {
        ip if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
        ip => ip,
    };
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(rustls::pki_types::ServerName::IpAddress(ip.into()), stream)
        .await
        .map_err(|e| format!("TLS to the admin listener failed: {e}"))
}
