//! What the agent sends, as far as the gates read it: the request made into what will leave
//! (hop-by-hop headers gone before intent reads anything), its catalog route, the start of
//! its body for intent and the whole of it for consent, and the rest of a refused body
//! drained so the agent hears the answer.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{Request, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use super::assembly::Pipeline;
use super::refusal::bad_request;
use super::target::Target;
use super::trail::Trail;
use crate::body::BodyFault;
use crate::error::Denial;
use crate::gates;
use crate::gates::consent::Consent;
use crate::gates::identity::Claim;
use crate::gates::policy::Verdict;
use crate::headers;
use crate::identity::Caller;
use crate::intent::{BodyPrefix, IntentError, Tuple};

/// Most bytes of a refused request's body read (and discarded) so the agent hears the answer.
const DRAIN_MAX: usize = 16 << 20;

/// Bodies longer than this are judged off the async workers.
const HEAVY_BODY: usize = 64 << 10;

/// A request body, and what was read of it before deciding.
pub(super) struct Inbound {
    pub(super) body: Incoming,
    /// The bytes read (sent on first) and whether more follows.
    pub(super) prefix: Option<(Bytes, bool)>,
}

impl Inbound {
    /// More of the body follows what was read.
    pub(super) fn more(&self) -> bool {
        self.prefix.as_ref().is_some_and(|(_, more)| *more)
    }

    /// The digest of the whole body, when it was read whole (or there is none).
    pub(super) fn whole_digest(&self) -> Option<[u8; 32]> {
        match &self.prefix {
            Some((bytes, false)) => Some(crate::digest::sha256(bytes)),
            None if self.body.is_end_stream() => Some(crate::digest::EMPTY_SHA256),
            _ => None,
        }
    }

    /// What intent reads: the first `max` bytes.
    fn for_intent(&self, max: usize) -> Option<BodyPrefix<'_>> {
        self.prefix.as_ref().map(|(bytes, truncated)| BodyPrefix {
            bytes: &bytes[..bytes.len().min(max)],
            truncated: *truncated,
        })
    }
}

impl Pipeline {
    /// Refuses a body whose declared length (Content-Length) is already over the limit;
    /// undeclared bodies are counted while they stream (see `RequestBody`).
    pub(super) fn check_body_size(&self, req: &Request<Incoming>) -> Result<(), Denial> {
        match self.c.limits.max_request_body {
            Some(limit) if req.body().size_hint().lower() > limit => {
                Err(BodyFault::TooLarge(limit).denial())
            }
            _ => Ok(()),
        }
    }

    /// Makes the request what will leave before anything reads it: hop-by-hop headers (and
    /// every header `Connection` names) go, so no header is judged that is not sent. An
    /// upgrade (WebSocket) must be one the intent config allows; the agent's side of it is
    /// returned.
    pub(super) fn as_sent(
        &self,
        mut req: Request<Incoming>,
        target: &Target,
    ) -> Result<(Parts, Inbound, Option<OnUpgrade>), Denial> {
        let upgrade = req.version() == Version::HTTP_11 && headers::wants_upgrade(req.headers());
        if upgrade {
            (self.c.intent)
                .check_upgrade(target.host(), req.uri().path(), req.headers())
                .map_err(gates::intent::refusal)?;
        }
        headers::strip_hop_by_hop(req.headers_mut(), upgrade);
        let upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        Ok((parts, Inbound { body, prefix: None }, upgrade))
    }

    /// Gate 2: the tuple, from the catalog's route and, where the API keeps its meaning in
    /// the body, the first `intent.max_body` bytes of it (read here). A request intent
    /// refuses has the rest of its body drained first.
    pub(super) async fn derive(
        &self,
        target: &Target,
        parts: &Parts,
        inbound: &mut Inbound,
        caller: &Caller,
    ) -> Result<std::sync::Arc<Tuple>, Denial> {
        let routed = self.c.intent.route(crate::intent::Target {
            method: &parts.method,
            host: target.host(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
        });
        let routed = match routed {
            // An inspected operation sent as GET or HEAD is judged without its body: a body
            // would be one the vendor might read and intent did not.
            Ok(r) if r.judged_without_body() && !inbound.body.is_end_stream() => {
                Err(IntentError::Ambiguous(format!(
                    "{} requests to this operation are judged without a body, and this one has one; send it without",
                    parts.method
                )))
            }
            other => other,
        };
        let routed = match routed {
            Ok(routed) => routed,
            Err(e) => {
                // Read what the agent is still sending, so it hears the refusal.
                self.drain(inbound).await;
                return Err(gates::intent::refusal(e));
            }
        };
        if routed.needs_body() {
            self.read_prefix(inbound).await?;
        }
        let body = inbound.for_intent(self.c.intent.max_body);
        self.judge_cpu(inbound, || gates::intent::derive(&routed, caller, body))
            .await
    }

    /// Gate 4: the approval an escalated request needs, bound to this exact request, whose
    /// whole body is read first (the approval covers it). A request held for consent is
    /// checked again afterwards: its agent may have been revoked meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn obtain_consent(
        &self,
        target: &Target,
        parts: &Parts,
        inbound: &mut Inbound,
        caller: &std::sync::Arc<Caller>,
        tuple: &Tuple,
        verdict: &Verdict,
        trail: &mut Trail,
    ) -> Result<Consent, Denial> {
        if !verdict.escalate {
            return Ok(Consent::NotNeeded);
        }
        if inbound.prefix.is_none() && !inbound.body.is_end_stream() {
            self.read_prefix(inbound).await?;
        }
        let origin = target.origin();
        let request = gates::consent::Request {
            method: &parts.method,
            origin: &origin,
            path_and_query: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            headers: headers::forwarded_digest(&parts.headers, false),
            body: inbound.prefix.as_ref().map(|(b, _)| &b[..]),
            body_truncated: inbound.more(),
            max_body: self.c.intent.max_body,
        };
        let consents = self.c.consents.for_tenant(caller.tenant.as_deref());
        let consent = gates::consent::obtain(consents, caller, tuple, verdict, &request).await?;
        if let Consent::Granted(g) = &consent {
            trail.consent = Some(g.clone());
            gates::identity::verify(&self.c.identity, Claim::Verified(caller))?;
        }
        Ok(consent)
    }

    /// Reads the start of the body: up to `intent.max_body` bytes (plus the rest of the
    /// piece that crossed it).
    async fn read_prefix(&self, inbound: &mut Inbound) -> Result<(), Denial> {
        let max = self.c.intent.max_body;
        let stall = self.c.limits.body_read_timeout;
        let body = &mut inbound.body;
        let mut buf = BytesMut::new();
        while buf.len() <= max && !body.is_end_stream() {
            let frame = match tokio::time::timeout(stall, body.frame()).await {
                Err(_) => return Err(BodyFault::Stalled(stall).denial()),
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(bad_request(format!("reading the request body failed: {e}")));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
            }
            if let Some(limit) = self.c.limits.max_request_body {
                if buf.len() as u64 > limit {
                    return Err(BodyFault::TooLarge(limit).denial());
                }
            }
        }
        let more = buf.len() > max || !body.is_end_stream();
        inbound.prefix = Some((buf.freeze(), more));
        Ok(())
    }

    /// Discards the rest of a refused request's body, up to [`DRAIN_MAX`] bytes and while
    /// the agent keeps sending (`limits.body_read_timeout` per piece), so the agent hears
    /// the refusal (HTTP/2 clients treat a reset during their upload as an error).
    pub(super) async fn drain(&self, inbound: &mut Inbound) {
        let stall = self.c.limits.body_read_timeout.min(Duration::from_secs(5));
        let body = &mut inbound.body;
        let mut seen = 0usize;
        while seen <= DRAIN_MAX && !body.is_end_stream() {
            match tokio::time::timeout(stall, body.frame()).await {
                Ok(Some(Ok(frame))) => seen += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
    }

    /// Runs CPU work on a request's body (intent's extraction, policy on what it found):
    /// for a large body off the async workers, so one agent's upload cannot stall the
    /// others, a bounded number at a time.
    pub(super) async fn judge_cpu<R>(&self, inbound: &Inbound, f: impl FnOnce() -> R) -> R {
        if inbound
            .prefix
            .as_ref()
            .is_none_or(|(b, _)| b.len() <= HEAVY_BODY)
        {
            return f();
        }
        let _permit = self.heavy.acquire().await;
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            // On a multi-threaded runtime the worker hands its other tasks on first.
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
            _ => f(),
        }
    }
}
