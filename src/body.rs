//! Body types: what we send back to the agent and what we stream to the upstream.
//!
//! Both are enums or thin wrappers rather than boxed trait objects so the hot path does not
//! allocate per request, and both stream: no whole body is ever held in memory.

mod redact;

pub use redact::Redact;
use redact::Tally;

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::time::Duration;

use http::StatusCode;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use crate::error::{Denial, Gate};

/// Error type carried by streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body: either streamed from the upstream or a small one we produced.
#[derive(Debug)]
pub enum ProxyBody {
    /// Streamed from the upstream as it arrives, counted; its outcome record is written
    /// when it ends.
    Audited(Incoming, Outcome),
    /// Like `Audited`, with every echo of the injected credential masked on the way.
    Scanned(Incoming, Outcome, Box<Redact>),
    /// A complete body we generated (errors, health answers).
    Full(Option<Bytes>),
}

impl From<String> for ProxyBody {
    fn from(text: String) -> Self {
        ProxyBody::full(text)
    }
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
        let (frame, outcome) = match self.get_mut() {
            ProxyBody::Audited(body, outcome) => {
                let frame = ready!(Pin::new(body).poll_frame(cx));
                match &frame {
                    Some(Ok(f)) => {
                        if let Some(data) = f.data_ref() {
                            outcome.bytes_down += data.len() as u64;
                        }
                    }
                    Some(Err(_)) => outcome.aborted = true,
                    None => {}
                }
                (frame, outcome)
            }
            ProxyBody::Scanned(body, outcome, redact) => {
                let tally = Tally {
                    bytes_down: &mut outcome.bytes_down,
                    redacted: &mut outcome.redacted,
                    aborted: &mut outcome.aborted,
                };
                (ready!(redact.poll_frame(body, tally, cx)), outcome)
            }
            ProxyBody::Full(bytes) => {
                return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b))));
            }
        };
        if let (Some(tap), Some(Ok(f))) = (outcome.tap.as_mut(), &frame) {
            if let Some(data) = f.data_ref() {
                tap.feed(data);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Audited(body, _) => body.is_end_stream(),
            ProxyBody::Scanned(_, _, redact) => redact.done,
            ProxyBody::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            // Masking keeps every length.
            ProxyBody::Audited(body, _) | ProxyBody::Scanned(body, _, _) => body.size_hint(),
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
        }
    }
}

/// What the outcome record of a forwarded request says; written when the response body is
/// done (or dropped: the agent went away), so bytes and duration are the real ones.
#[derive(Debug)]
pub struct Outcome {
    pub audit: std::sync::Arc<crate::audit::Audit>,
    /// Counts the forwarded request's duration.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    pub request_id: String,
    /// The caller's tenant: outcome records belong to its audit view and event stream.
    pub tenant: Option<String>,
    pub status: u16,
    pub started: std::time::Instant,
    /// What of the request body went upstream (counted and hashed as it streamed).
    pub sent: std::sync::Arc<SentBody>,
    pub bytes_down: u64,
    pub aborted: bool,
    /// Echoes of the injected credential masked in the response.
    pub redacted: u64,
    /// Why the response could not be scanned for echoes (a compressed body).
    pub unscanned: Option<String>,
    /// Reads the response as it streams (MCP tool listings, for pinning).
    pub tap: Option<Box<dyn Tap>>,
}

/// Something that reads a response's bytes as they go to the agent, and is told at the end
/// whether the body arrived whole. It never holds the stream up.
pub trait Tap: Send + Sync + std::fmt::Debug {
    /// Bytes on their way to the agent.
    fn feed(&mut self, data: &[u8]);
    /// The body ended (`whole`: not cut off or aborted).
    fn done(self: Box<Self>, whole: bool);
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if let Some(tap) = self.tap.take() {
            tap.done(!self.aborted);
        }
        let duration = self.started.elapsed();
        self.metrics.forwarded(duration);
        self.audit.submit(
            crate::audit::record::Outcome {
                request_id: std::mem::take(&mut self.request_id),
                tenant: self.tenant.take(),
                status: self.status,
                bytes_up: self.sent.bytes(),
                // Only a body sent in full has a digest: the property checked is "what left
                // is what was judged", and a cut-off body is recorded as such by `complete`.
                body_sha256: self
                    .sent
                    .sha256
                    .get()
                    .copied()
                    .map(crate::audit::record::Sha256),
                bytes_down: self.bytes_down,
                duration_us: duration.as_micros() as u64,
                complete: !self.aborted,
                redacted: self.redacted,
                unscanned: self.unscanned.take(),
            }
            .into(),
        );
    }
}

/// The request body as it went upstream: bytes counted as they stream, and the SHA-256 of
/// the whole body once it ended (for the outcome record).
#[derive(Debug, Default)]
pub struct SentBody {
    bytes: std::sync::atomic::AtomicU64,
    /// Set when the body was sent in full.
    pub sha256: std::sync::OnceLock<[u8; 32]>,
}

impl SentBody {
    /// Bytes handed upstream so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A running SHA-256 (the digest context has no `Debug` of its own).
struct Hasher(aws_lc_rs::digest::Context);

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hasher(SHA-256)")
    }
}

/// The request body as streamed to the upstream, cut off at the configured size limit and
/// when the agent stalls between two pieces for longer than the read timeout. It reports how
/// the body ended, which starts the upstream response timer (or explains a failure).
#[derive(Debug)]
pub struct RequestBody {
    /// Bytes already read from `inner` (for intent), sent first.
    replay: Option<Bytes>,
    inner: Incoming,
    limit: Option<u64>,
    seen: u64,
    /// Bytes handed upstream so far and the body's digest, shared with the outcome record.
    sent: std::sync::Arc<SentBody>,
    /// Hashes what streams; `None` when the digest is already known (the whole body was
    /// read for intent) or set.
    hash: Option<Hasher>,
    done: Option<oneshot::Sender<Result<(), BodyFault>>>,
    read_timeout: Duration,
    /// Armed while waiting for the agent; boxed only for requests that have a body.
    stall: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

/// Why AgentGate cut an agent's request body off.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BodyFault {
    #[error("request body exceeds the limit of {0} bytes (limits.max_request_body)")]
    TooLarge(u64),
    #[error("the request body stalled for {0:?} (limits.body_read_timeout)")]
    Stalled(Duration),
}

impl BodyFault {
    /// The refusal the agent sees for this fault.
    pub fn denial(&self) -> Denial {
        let (status, error) = match self {
            BodyFault::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            BodyFault::Stalled(_) => (StatusCode::REQUEST_TIMEOUT, "request_body_timeout"),
        };
        Denial::new(Gate::Limits, status, error, self.to_string())
    }
}

/// Resolves when the agent's body has been handed over in full (`Ok`), was cut off by
/// AgentGate (`Err`), or was dropped unfinished (`Ok`: nothing more will come).
#[derive(Debug)]
pub struct BodyDone(Option<oneshot::Receiver<Result<(), BodyFault>>>);

impl Future for BodyDone {
    type Output = Result<(), BodyFault>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            None => Poll::Ready(Ok(())),
            Some(rx) => Pin::new(rx).poll(cx).map(|r| r.unwrap_or(Ok(()))),
        }
    }
}

impl RequestBody {
    /// Wraps an incoming body, after `replay` (its start, already read), with an optional
    /// byte limit and a per-piece read timeout. `whole` is the digest of `replay` when it
    /// is the whole body, so nothing is hashed twice.
    pub fn new(
        inner: Incoming,
        replay: Option<Bytes>,
        whole: Option<[u8; 32]>,
        limit: Option<u64>,
        read_timeout: Duration,
        sent: std::sync::Arc<SentBody>,
    ) -> (Self, BodyDone) {
        // Most requests have no body: no channel then.
        let (done, rx) = if inner.is_end_stream() {
            (None, None)
        } else {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        };
        let replay = replay.filter(|b| !b.is_empty());
        let hash = match whole {
            Some(d) => {
                let _ = sent.sha256.set(d);
                None
            }
            None if done.is_none() && replay.is_none() => {
                let _ = sent.sha256.set(crate::digest::EMPTY_SHA256);
                None
            }
            None => Some(Hasher(aws_lc_rs::digest::Context::new(
                &aws_lc_rs::digest::SHA256,
            ))),
        };
        let body = RequestBody {
            replay,
            inner,
            limit,
            seen: 0,
            sent,
            hash,
            done,
            read_timeout,
            stall: None,
            waiting: false,
        };
        (body, BodyDone(rx))
    }

    fn finish(&mut self, outcome: Result<(), BodyFault>) {
        if outcome.is_ok() {
            if let Some(hash) = self.hash.take() {
                let mut d = [0u8; 32];
                d.copy_from_slice(hash.0.finish().as_ref());
                let _ = self.sent.sha256.set(d);
            }
        }
        if let Some(tx) = self.done.take() {
            let _ = tx.send(outcome);
        }
    }

    /// Counts (and hashes) bytes handed upstream.
    fn count(&mut self, data: &[u8]) {
        self.seen += data.len() as u64;
        self.sent
            .bytes
            .store(self.seen, std::sync::atomic::Ordering::Relaxed);
        if let Some(hash) = &mut self.hash {
            hash.0.update(data);
        }
    }

    fn fail(&mut self, fault: BodyFault) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.finish(Err(fault.clone()));
        Poll::Ready(Some(Err(Box::new(fault))))
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
        if let Some(bytes) = this.replay.take() {
            this.count(&bytes);
            if this.inner.is_end_stream() {
                this.finish(Ok(()));
            }
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                frame
            }
            Poll::Pending => {
                // The clock starts when we begin waiting on the agent, not when the upstream
                // last asked for data (it may have been applying backpressure meanwhile).
                if !this.waiting {
                    let deadline = Instant::now() + this.read_timeout;
                    match &mut this.stall {
                        Some(stall) => stall.as_mut().reset(deadline),
                        None => this.stall = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                    this.waiting = true;
                }
                if let Some(stall) = &mut this.stall {
                    ready!(stall.as_mut().poll(cx));
                }
                return this.fail(BodyFault::Stalled(this.read_timeout));
            }
        };
        if let Some(Ok(f)) = &frame {
            // Trailers would be headers that arrive after the decision: never forwarded.
            if f.is_trailers() {
                this.finish(Ok(()));
                return Poll::Ready(None);
            }
        }
        if let Some(Ok(frame)) = &frame {
            if let Some(data) = frame.data_ref() {
                this.count(data);
                if let Some(limit) = this.limit.filter(|limit| this.seen > *limit) {
                    return this.fail(BodyFault::TooLarge(limit));
                }
            }
        }
        if frame.is_none() || this.inner.is_end_stream() {
            this.finish(Ok(()));
        }
        Poll::Ready(frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.replay.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let ahead = self.replay.as_ref().map_or(0, |b| b.len() as u64);
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + ahead);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + ahead);
        }
        hint
    }
}
