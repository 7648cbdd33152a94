//! Egress: the decided request rewritten into the one sent upstream (the agent's credentials
//! replaced by the issued one, `Via` added), and the answer streamed back with echoes of the
//! credential masked and its outcome recorded; a WebSocket upgrade is spliced until either
//! side closes or PANIC ends it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::header;
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::assembly::Pipeline;
use super::inbound::Inbound;
use super::refusal::bad_request;
use super::target::Target;
use crate::audit::Audit;
use crate::audit::record::{Ended, Upgrade};
use crate::body::{Outcome, ProxyBody, RequestBody, SentBody};
use crate::error::Denial;
use crate::gates;
use crate::gates::token::Injection;
use crate::headers;
use crate::identity::Caller;
use crate::sessions::Session;
use crate::stream::Counted;

/// A decided request on its way out.
pub(super) struct Outbound<'a> {
    pub(super) parts: http::request::Parts,
    /// The body, and what was read of it before deciding.
    pub(super) inbound: Inbound,
    pub(super) target: &'a Target,
    pub(super) caller: &'a Caller,
    pub(super) injection: &'a Injection,
    /// The agent's side of a WebSocket upgrade, when it asked for one.
    pub(super) upgrade: Option<OnUpgrade>,
    pub(super) request_id: &'a str,
    pub(super) started: Instant,
    /// Filled while the body streams: its digest, for the outcome record.
    pub(super) sent: Arc<SentBody>,
    /// Reads the answer as it streams (an MCP tool listing, for pinning).
    pub(super) tap: Option<Box<dyn crate::body::Tap>>,
}

impl Pipeline {
    /// Sends the decided request upstream and streams the answer back.
    pub(super) async fn forward(
        &self,
        out: Outbound<'_>,
        whole_body: Option<[u8; 32]>,
    ) -> Result<Response<ProxyBody>, Denial> {
        let upgrade = out.upgrade.is_some();
        let replay = out.inbound.prefix.map(|(bytes, _)| bytes);
        let (mut outbound, body_sent) = self.outbound(
            out.parts,
            out.inbound.body,
            replay,
            whole_body,
            out.target,
            out.sent.clone(),
        )?;
        out.injection.apply(outbound.headers_mut());
        let mut resp = self.c.upstream.send(outbound, body_sent, upgrade).await?;

        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if let (true, Some(client)) = (switching, out.upgrade) {
            let upstream = hyper::upgrade::on(&mut resp);
            // Registered like a tunnel, so PANIC closes it too; audited when it ends.
            let session = self.sessions.open(&out.caller.spiffe_id);
            let ended = Upgrade {
                request_id: out.request_id.to_owned(),
                tenant: out.caller.tenant.clone(),
                bytes_up: None,
                bytes_down: None,
                ended: Ended::Failed,
            };
            tokio::spawn(splice_upgraded(
                client,
                upstream,
                session,
                (self.c.audit.clone(), ended),
            ));
        }
        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, switching);
        let mut outcome = Outcome {
            audit: self.c.audit.clone(),
            metrics: self.c.metrics.clone(),
            request_id: out.request_id.to_owned(),
            tenant: out.caller.tenant.clone(),
            status: parts.status.as_u16(),
            started: out.started,
            sent: out.sent,
            bytes_down: 0,
            aborted: false,
            redacted: 0,
            unscanned: None,
            tap: out.tap,
        };
        // Response hygiene: the agent never sees the credential, even if the upstream
        // echoes it (token introspection, debug endpoints).
        let body = match out.injection.issued() {
            None => ProxyBody::Audited(body, outcome),
            Some(issued) => {
                let redact = issued.redactor();
                outcome.redacted = gates::token::redact_headers(&mut parts.headers, &redact);
                outcome.unscanned = parts
                    .headers
                    .get(header::CONTENT_ENCODING)
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.eq_ignore_ascii_case("identity"))
                    .map(|v| format!("content-encoding {v}"));
                ProxyBody::Scanned(body, outcome, Box::new(redact))
            }
        };
        Ok(Response::from_parts(parts, body))
    }

    /// Rewrites the agent's request into the one sent upstream.
    fn outbound(
        &self,
        mut parts: http::request::Parts,
        body: Incoming,
        replay: Option<Bytes>,
        whole: Option<[u8; 32]>,
        target: &Target,
        sent: Arc<SentBody>,
    ) -> Result<(Request<RequestBody>, crate::body::BodyDone), Denial> {
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        parts.uri = Uri::builder()
            .scheme(target.scheme.clone())
            .authority(target.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| bad_request("invalid request target"))?;
        // The client derives Host / :authority from the URI, which the tunnel checks pinned.
        // Hop-by-hop headers went before intent.
        parts.headers.remove(header::HOST);
        parts.headers.append(header::VIA, self.via.clone());
        // The upstream connection picks its own HTTP version (ALPN); this one is the agent's.
        parts.version = Version::HTTP_11;
        let limits = &self.c.limits;
        let (body, done) = RequestBody::new(
            body,
            replay,
            whole,
            limits.max_request_body,
            limits.body_read_timeout,
            sent,
        );
        Ok((Request::from_parts(parts, body), done))
    }
}

/// Joins the agent's and the upstream's upgraded connections (WebSocket) until either
/// closes or PANIC ends it; then writes the `upgrade` record with what crossed each way.
async fn splice_upgraded(
    client: OnUpgrade,
    upstream: OnUpgrade,
    session: Session,
    (audit, mut record): (Arc<Audit>, Upgrade),
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            record.ended = Ended::Failed;
            audit.submit(record.into());
            return;
        }
    };
    let up = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicU64::new(0));
    let mut client = Counted::new(TokioIo::new(client), up.clone());
    let mut upstream = Counted::new(TokioIo::new(upstream), down.clone());
    let ended = tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = copied {
                tracing::debug!(error = %e, "upgraded connection ended");
            }
            Ended::Closed
        }
        () = session.killed.notified() => {
            tracing::info!("upgraded connection closed by PANIC");
            Ended::Panic
        }
    };
    record.bytes_up = Some(up.load(Ordering::Relaxed));
    record.bytes_down = Some(down.load(Ordering::Relaxed));
    record.ended = ended;
    audit.submit(record.into());
}
