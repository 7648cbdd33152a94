//! Body types: what we send back to the agent and what we stream to the upstream.
//!
//! Both are enums or thin wrappers rather than boxed trait objects so the hot path does not
//! allocate per request, and both stream: no whole body is ever held in memory.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::oneshot;

/// Error type carried by streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body: either streamed from the upstream or a small one we produced.
#[derive(Debug)]
pub enum ProxyBody {
    /// Streamed from the upstream as it arrives.
    Upstream(Incoming),
    /// A complete body we generated (errors, health answers).
    Full(Option<Bytes>),
}

impl ProxyBody {
    /// A body with these bytes.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(bytes.into()))
    }

    /// An empty body.
    pub fn empty() -> Self {
        ProxyBody::Full(None)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(body) => body.is_end_stream(),
            ProxyBody::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(body) => body.size_hint(),
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
        }
    }
}

/// The request body as streamed to the upstream, cut off at the configured size limit.
/// It reports when the agent has sent all of it, which starts the upstream response timer.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    limit: Option<u64>,
    seen: u64,
    sent: Option<oneshot::Sender<()>>,
}

/// Resolves once the whole request body has been handed to the upstream connection
/// (or the body was dropped unfinished).
#[derive(Debug)]
pub struct BodySent(Option<oneshot::Receiver<()>>);

impl std::future::Future for BodySent {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.get_mut().0 {
            None => Poll::Ready(()),
            Some(rx) => Pin::new(rx).poll(cx).map(|_| ()),
        }
    }
}

/// The agent sent more body than `limits.max_request_body` allows.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {limit} bytes (limits.max_request_body)")]
pub struct BodyTooLarge {
    /// The configured limit.
    pub limit: u64,
}

impl RequestBody {
    /// Wraps an incoming body with an optional byte limit.
    pub fn new(inner: Incoming, limit: Option<u64>) -> (Self, BodySent) {
        // Most requests have no body: no channel then.
        let (sent, rx) = if inner.is_end_stream() {
            (None, None)
        } else {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        };
        let body = RequestBody {
            inner,
            limit,
            seen: 0,
            sent,
        };
        (body, BodySent(rx))
    }

    fn mark_sent(&mut self) {
        if let Some(tx) = self.sent.take() {
            let _ = tx.send(());
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if frame.is_none() || this.inner.is_end_stream() {
            this.mark_sent();
        }
        if let Some(Ok(frame)) = &frame {
            if let Some(data) = frame.data_ref() {
                this.seen += data.len() as u64;
                if let Some(limit) = this.limit {
                    if this.seen > limit {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit }))));
                    }
                }
            }
        }
        Poll::Ready(frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
