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
    let call = async {
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(method)
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
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok::<_, String>(Answer { addr, status, body })
    };
    // PANIC waits for upstream revocations, each bounded by vault.fetch_timeout.
    match tokio::time::timeout(Duration::from_secs(60), call).await {
        Ok(Ok(answer)) => Ok(Some(answer)),
        Ok(Err(reason)) => Err(fail(reason)),
        Err(_) => Err(fail("no answer within 60 s".into())),
    }
}
