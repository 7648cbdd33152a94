//! Accepts agent connections on `proxy.listen` and serves the outer HTTP/1.1 proxy protocol:
//! `CONNECT` (then MITM) and absolute-form `http://` requests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::connect;
use super::framing::Framing;
use crate::error::{Denial, Gate};
use crate::pipeline::Pipeline;
use crate::server::{Activity, drive, http1_builder};

/// Accepts connections until `shutdown` flips; each connection holds one of `slots`.
pub async fn serve(
    listener: TcpListener,
    pipeline: Arc<Pipeline>,
    slots: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
) {
    accept_loop(listener, pipeline, slots, shutdown, serve_client).await;
}

/// Accepts connections until `shutdown` flips and serves each with `serve` in a task of
/// its own, holding one of `slots`; beyond them a connection gets a 503 and is closed.
pub(super) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    pipeline: Arc<Pipeline>,
    slots: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
    serve: F,
) where
    F: Fn(Arc<Pipeline>, TcpStream, SocketAddr, OwnedSemaphorePermit, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(serve(
                    pipeline.clone(),
                    stream,
                    peer,
                    permit,
                    shutdown.clone(),
                ));
            }
            Err(_) => {
                let id = pipeline.request_id();
                tokio::spawn(refuse_over_capacity(stream, id));
            }
        }
    }
}

async fn refuse_over_capacity(mut stream: TcpStream, request_id: String) {
    let denial = Denial::new(
        Gate::Limits,
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_connections",
        "the proxy is at proxy.max_connections; retry shortly",
    );
    tracing::warn!(%request_id, "connection refused: proxy.max_connections reached");
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        stream
            .write_all(&denial.to_http1_bytes(&request_id))
            .await?;
        stream.shutdown().await
    })
    .await;
}

async fn serve_client(
    pipeline: Arc<Pipeline>,
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    shutdown: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let permit = Arc::new(permit);
    let limits = pipeline.limits().clone();
    let svc = {
        let (pipeline, activity, shutdown) = (pipeline.clone(), activity.clone(), shutdown.clone());
        service_fn(move |req| {
            let (pipeline, activity) = (pipeline.clone(), activity.clone());
            let (permit, shutdown) = (permit.clone(), shutdown.clone());
            // Boxed, as in a tunnel: idle keep-alive connections do not hold a request's
            // future.
            Box::pin(async move {
                let _in_flight = activity.begin();
                let resp = if req.method() == Method::CONNECT {
                    connect::handle(pipeline, req, peer, permit, shutdown).await
                } else {
                    pipeline.handle(None, peer, req).await
                };
                Ok::<_, Infallible>(resp)
            })
        })
    };
    let io = Framing::new(stream, limits.max_header_bytes, limits.max_headers);
    // Boxed, as in a tunnel (see `mitm::serve_requests`): held once, at its own size.
    let conn = Box::pin(
        http1_builder(&limits)
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades(),
    );
    if let Err(e) = drive(conn, &activity, limits.idle_timeout, shutdown).await {
        tracing::debug!(client = %peer, error = %e, "client connection ended with an error");
        pipeline.record_parse_refusal(peer, "", &e).await;
    }
}
