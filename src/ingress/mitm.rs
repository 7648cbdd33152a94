//! TLS termination inside a CONNECT tunnel: read the ClientHello, present a leaf for the
//! requested name minted by our CA, then serve HTTP/1.1 or HTTP/2 (by ALPN) and hand every
//! request to the pipeline with the tunnel it belongs to.
//!
//! An SNI that disagrees with the CONNECT target still completes the handshake (with a leaf
//! for the SNI), so the agent gets a readable `421` instead of an opaque TLS failure.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::StatusCode;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio_rustls::LazyConfigAcceptor;

use super::framing::Framing;
use crate::authority::normalize_host;
use crate::error::{Denial, Gate};
use crate::pipeline::{Pipeline, Tunnel};
use crate::server::{Activity, GracefulConn, drive, http1_builder, http2_builder};

/// TLS record type of a handshake message; every ClientHello starts with it.
pub(super) const TLS_HANDSHAKE: u8 = 0x16;
/// Concurrent HTTP/2 streams per agent connection.
const MAX_H2_STREAMS: u32 = 256;

/// Serves one intercepted tunnel until the agent closes it.
pub async fn serve(
    pipeline: Arc<Pipeline>,
    upgraded: Upgraded,
    mut tunnel: Tunnel,
    shutdown: watch::Receiver<bool>,
) {
    let limits = pipeline.limits().clone();
    let client = tunnel.client;
    // Boxed, and never held unboxed in a variable: the handshake's state (acceptor,
    // ClientHello, a connection being built) is freed once it ends instead of staying
    // reserved in the tunnel's future for the tunnel's life.
    let handshake = Box::pin(async {
        let mut io = TokioIo::new(upgraded);
        let mut first = vec![0u8; 1024];
        let n = io.read(&mut first).await?;
        if n == 0 {
            return Ok(None);
        }
        first.truncate(n);
        if first[0] != TLS_HANDSHAKE {
            refuse_plaintext(&pipeline, &mut io, &first).await;
            return Ok(None);
        }
        let io = Prefixed {
            prefix: Bytes::from(first),
            inner: io,
        };
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await?;
        let sni = start.client_hello().server_name().and_then(normalize_host);
        let cert_host = match sni {
            Some(sni) if sni != tunnel.host => {
                tunnel.misdirected = Some(format!(
                    "TLS server name {sni} does not match the CONNECT target {}",
                    tunnel.host
                ));
                sni
            }
            _ => tunnel.host.clone(),
        };
        let config = pipeline
            .ca()
            .server_config(&cert_host)
            .map_err(|e| io::Error::other(e.to_string()))?;
        start.into_stream(config).await.map(Some)
    });
    let tls = match tokio::time::timeout(limits.tls_handshake_timeout, handshake).await {
        // Boxed at once: held unboxed in a variable, the stream's size would stay reserved
        // in this future beside the box for the tunnel's life.
        Ok(Ok(Some(tls))) => Box::new(tls),
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::info!(client = %client, host = %tunnel.host, error = %e, "TLS handshake with agent failed");
            return;
        }
        Err(_) => {
            tracing::info!(client = %client, host = %tunnel.host, "TLS handshake with agent timed out (limits.tls_handshake_timeout)");
            return;
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    serve_requests(pipeline, tls, h2, tunnel, shutdown).await;
}

/// Serves the HTTP requests of one intercepted connection (HTTP/2 when `h2`) until it
/// ends, each handed to the pipeline with the tunnel it belongs to.
///
/// The transport comes boxed and the connection is boxed here: an async fn keeps its
/// arguments for its whole life, and its locals beside them, so a transport passed by value
/// would sit in an idle tunnel's task twice (and the HTTP/2 connection's size would be
/// reserved in every HTTP/1.1 one). Boxed, a tunnel holds each piece once, at its own size.
pub(super) async fn serve_requests<IO>(
    pipeline: Arc<Pipeline>,
    io: Box<IO>,
    h2: bool,
    tunnel: Tunnel,
    shutdown: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = pipeline.limits().clone();
    let client = tunnel.client;
    let activity = Arc::new(Activity::new());
    let tunnel = Arc::new(tunnel);
    let (target, recorder) = (tunnel.clone(), pipeline.clone());
    let svc = {
        let activity = activity.clone();
        service_fn(move |req| {
            let (pipeline, tunnel, activity) = (pipeline.clone(), tunnel.clone(), activity.clone());
            // Boxed: a request's flow is a ~7 KiB future, which inline would sit in every
            // idle tunnel's connection.
            Box::pin(async move {
                let _in_flight = activity.begin();
                let resp = pipeline.handle(Some(&tunnel), tunnel.client, req).await;
                Ok::<_, Infallible>(resp)
            })
        })
    };
    // PANIC closes the tunnel at once, in-flight requests and all.
    let session = recorder.sessions.open(&target.caller.spiffe_id);
    // Built straight into its box (a named value would keep its size reserved here too).
    let conn: Pin<Box<dyn GracefulConn + Send>> = if h2 {
        Box::pin(http2_builder(&limits, MAX_H2_STREAMS).serve_connection(TokioIo::new(io), svc))
    } else {
        let io = Framing::new(io, limits.max_header_bytes, limits.max_headers);
        Box::pin(
            http1_builder(&limits)
                .serve_connection(TokioIo::new(io), svc)
                .with_upgrades(),
        )
    };
    let served = drive(conn, &activity, limits.idle_timeout, shutdown);
    let result = tokio::select! {
        r = served => r,
        () = session.killed.notified() => {
            tracing::info!(client = %client, agent = %target.caller.spiffe_id, "tunnel closed by PANIC");
            return;
        }
    };
    if let Err(e) = result {
        tracing::debug!(client = %client, error = %e, "tunnel ended with an error");
        // Boxed: a rare path whose record would otherwise be reserved in every tunnel.
        Box::pin(recorder.record_parse_refusal(client, &target.host, &e)).await;
    }
}

/// Plain bytes where a ClientHello belongs: answer in HTTP if it looks like HTTP, then close.
pub(super) async fn refuse_plaintext<W: AsyncWrite + Unpin>(
    pipeline: &Pipeline,
    io: &mut W,
    first: &[u8],
) {
    let request_id = pipeline.request_id();
    tracing::info!(%request_id, "agent sent non-TLS bytes inside a CONNECT tunnel");
    if first.first().is_some_and(u8::is_ascii_uppercase) {
        let denial = Denial::new(
            Gate::Ingress,
            StatusCode::BAD_REQUEST,
            "tls_expected",
            "AgentGate intercepts every tunnel: after CONNECT, start TLS (use https://)",
        );
        let _ = io.write_all(&denial.to_http1_bytes(&request_id)).await;
        let _ = io.shutdown().await;
    }
}

/// A stream whose first bytes were already read (to peek at the ClientHello).
pub(super) struct Prefixed<T> {
    pub(super) prefix: Bytes,
    pub(super) inner: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if !this.prefix.has_remaining() {
                // An emptied `Bytes` still holds its allocation for the tunnel's life.
                this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

delegate_async_write!(Prefixed);
