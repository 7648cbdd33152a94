//! `CONNECT host:port`: ask the pipeline whether a tunnel may open, answer `200`, and hand
//! the upgraded connection to the MITM layer. No raw tunnel is ever spliced.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, watch};

use super::mitm;
use crate::body::ProxyBody;
use crate::pipeline::Pipeline;

/// Answers a CONNECT request; on success the tunnel is served in its own task.
pub async fn handle(
    pipeline: Arc<Pipeline>,
    mut req: Request<Incoming>,
    client: SocketAddr,
    permit: Arc<OwnedSemaphorePermit>,
    shutdown: watch::Receiver<bool>,
) -> Response<ProxyBody> {
    let tunnel = match pipeline.open_tunnel(&req, client).await {
        Ok(tunnel) => tunnel,
        Err(refusal) => return refusal,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => mitm::serve(pipeline, upgraded, tunnel, shutdown).await,
            Err(e) => tracing::debug!(client = %client, error = %e, "CONNECT upgrade failed"),
        }
        // The connection slot is held until the tunnel ends.
        drop(permit);
    });
    Response::new(ProxyBody::empty())
}
