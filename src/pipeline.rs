//! The request flow, top to bottom. Ingress hands every request here, one at a time, with
//! the tunnel it arrived on; this module decides and forwards, and is the one place that
//! turns a refusal into a response and logs the request.
//!
//! Order, and why:
//! 1. **Ingress checks** — is the request well-formed for a proxy, does it agree with the
//!    tunnel it came through (CONNECT target = TLS SNI = Host), is it looping back to us.
//!    Nothing else is worth doing for a request we cannot even attribute to a destination.
//! 2. **Gates** — identity → intent → policy → consent → token, then the decision record is
//!    committed to the audit log. Identity is checked once per tunnel at `CONNECT` (where
//!    clients send `Proxy-Authorization`) and re-checked for revocation and expiry on every
//!    request inside it; plain `http://` requests carry their credential each time.
//!    What is judged is what leaves: hop-by-hop headers go before intent reads anything,
//!    consent binds the whole request, and the decision record says exactly what is sent.
//! 3. **Egress** — the outbound request is prepared (the agent's credentials replaced by
//!    the granted one, `Via` added) and sent through the guarded, certificate-verifying
//!    upstream client; the response is streamed back with echoes of the credential masked.
//!
//! Where a request goes lives in `pipeline/target.rs`; what is recorded about it in
//! `pipeline/record.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::audit::{Audit, AuditError};
use crate::authority::{normalize_host, split_authority};
use crate::body::{BodyDone, BodyFault, Outcome, ProxyBody, RequestBody};
use crate::ca::Ca;
use crate::config::Config;
use crate::egress::guard::Guard;
use crate::egress::upstream::Upstream;
use crate::error::{Denial, Gate, REQUEST_ID};
use crate::gates;
use crate::headers;
use crate::identity::{Caller, Identity};
use crate::ingress::sessions::Sessions;
use crate::intent::{BodyPrefix, Intent, Subject, Tuple};
use crate::policy::{Decision, Policies};
use crate::vault::Vault;

mod record;
mod target;
use record::log_request;
use target::{Target, target_of, upstream_authority};

/// Everything the flow needs, shared by all connections.
pub struct Pipeline {
    pub(crate) guard: Arc<Guard>,
    pub(crate) upstream: Upstream,
    pub(crate) ca: Ca,
    pub(crate) config: Arc<Config>,
    pub(crate) identity: Arc<Identity>,
    pub(crate) intent: Arc<Intent>,
    /// The instance's policy and each tenant's.
    pub(crate) policies: Arc<Policies>,
    pub(crate) audit: Arc<Audit>,
    pub(crate) vault: Arc<Vault>,
    /// The instance's consents and each tenant's.
    pub(crate) consents: Arc<crate::consent::TenantConsents>,
    /// Open tunnels by agent (PANIC closes them).
    pub sessions: Arc<Sessions>,
    instance: String,
    via: HeaderValue,
    via_token: String,
    next_request: AtomicU64,
    /// Requests by effect and gate, decision latency (for `/metrics`).
    metrics: Arc<crate::metrics::Metrics>,
    /// Bounds how many large bodies are judged at once (one per core).
    heavy: tokio::sync::Semaphore,
}

/// The destination a client connection is bound to, fixed at CONNECT time.
#[derive(Debug, Clone)]
pub struct Tunnel {
    /// Lowercased CONNECT host (DNS name or IP literal).
    pub host: String,
    pub port: u16,
    /// `host[:port]` as sent upstream (port omitted when 443), built once per tunnel.
    pub authority: Authority,
    /// Set when the TLS SNI disagreed with the CONNECT target: every request is refused.
    pub misdirected: Option<String>,
    /// The agent's address.
    pub client: SocketAddr,
    /// Who opened the tunnel (verified at CONNECT).
    pub caller: Arc<Caller>,
}

/// Most bytes of a refused request's body read (and discarded) so the agent hears the answer.
const DRAIN_MAX: usize = 16 << 20;

/// What the gates learned about one request, kept for its decision record and log line
/// whether it was forwarded or refused.
#[derive(Default)]
struct Facts {
    caller: Option<Arc<Caller>>,
    tuple: Option<Tuple>,
    decision: Option<Decision>,
    injection: Option<gates::token::Injection>,
    /// The consent that let an escalated request through, or why none did.
    consent: Option<Result<crate::consent::Granted, Denial>>,
    /// How long after its start a forwarded request's decision record was committed.
    decided: Option<std::time::Duration>,
    /// What a forwarded request sends upstream, as its decision record describes it.
    sent: Option<record::Sent>,
}

impl Pipeline {
    /// Assembles the pipeline; `instance` is this process's id (in `Via` and request ids).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<Config>,
        instance: String,
        identity: Arc<Identity>,
        intent: Arc<Intent>,
        policies: Arc<Policies>,
        audit: Arc<Audit>,
        vault: Arc<Vault>,
        consents: Arc<crate::consent::TenantConsents>,
        guard: Arc<Guard>,
        upstream: Upstream,
        ca: Ca,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        let via = HeaderValue::from_str(&format!("1.1 agentgate-{instance}"))
            .unwrap_or_else(|_| HeaderValue::from_static("1.1 agentgate"));
        Pipeline {
            guard,
            upstream,
            ca,
            config,
            identity,
            intent,
            policies,
            audit,
            vault,
            consents,
            sessions: Arc::default(),
            via_token: format!("agentgate-{instance}"),
            instance,
            via,
            next_request: AtomicU64::new(1),
            metrics,
            heavy: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
        }
    }

    /// This process's instance id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// A new request id, unique within this instance and distinct across instances.
    pub fn request_id(&self) -> String {
        let n = self.next_request.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:x}", self.instance)
    }

    /// Handles one request: never fails; every refusal becomes its JSON response here.
    /// `tunnel` is `None` for plain `http://` requests sent in absolute form.
    pub async fn handle(
        &self,
        tunnel: Option<&Tunnel>,
        client: SocketAddr,
        req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let request_id = self.request_id();
        let method = req.method().clone();
        // Cheap: a Uri clone shares its bytes.
        let uri = req.uri().clone();
        let host = tunnel.map_or_else(|| uri.host().unwrap_or(""), |t| t.host.as_str());
        // Only the path is logged: query strings carry tokens (Slack's `token=`).
        let path = uri.path();

        let mut facts = Facts {
            caller: tunnel.map(|t| t.caller.clone()),
            ..Facts::default()
        };
        let (mut resp, denial) = match self
            .flow(tunnel, &mut facts, &request_id, started, req)
            .await
        {
            Ok(resp) => (resp, None),
            Err(denial) => {
                let record = self.decision(
                    &request_id,
                    &facts,
                    Some(&method),
                    host,
                    path,
                    Some(&denial),
                );
                self.record_refusal(record).await;
                (denial.clone().into_response(&request_id), Some(denial))
            }
        };
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert(REQUEST_ID, v);
        }
        // Once per request, by its final answer: an upstream failure after the allowed
        // decision counts as refused by `upstream`, with the latency of that decision.
        self.metrics.request(
            denial.as_ref().map(|d| d.gate),
            facts.decided.unwrap_or_else(|| started.elapsed()),
        );
        log_request(
            &request_id,
            client,
            &facts,
            &method,
            host,
            path,
            resp.status(),
            denial.as_ref(),
            started,
        );
        resp
    }

    /// Decides whether a `CONNECT` may open a tunnel to its target; refusals come back as
    /// the response to send. Logged like every other request.
    pub async fn open_tunnel(
        &self,
        req: &Request<Incoming>,
        client: SocketAddr,
    ) -> Result<Tunnel, Response<ProxyBody>> {
        let started = Instant::now();
        let request_id = self.request_id();
        let target = req.uri().authority().map(|a| a.as_str()).unwrap_or("");
        let mut facts = Facts::default();
        let mut result = self.tunnel_flow(req, client, &mut facts.caller).await;
        let record = self.decision(
            &request_id,
            &facts,
            Some(&Method::CONNECT),
            target,
            "",
            result.as_ref().err(),
        );
        if result.is_ok() {
            // The tunnel is a decision too: committed before the agent hears 200.
            if let Err(e) = self.audit.commit(record).await {
                result = Err(audit_unavailable(e));
            }
        } else {
            self.record_refusal(record).await;
        }
        let (status, denied) = match &result {
            Ok(_) => (StatusCode::OK, None),
            Err(d) => (d.status, Some(d)),
        };
        self.metrics
            .tunnel(denied.map(|d| d.gate), started.elapsed());
        log_request(
            &request_id,
            client,
            &facts,
            &Method::CONNECT,
            target,
            "",
            status,
            denied,
            started,
        );
        result.map_err(|d| d.into_response(&request_id))
    }

    async fn tunnel_flow(
        &self,
        req: &Request<Incoming>,
        client: SocketAddr,
        caller_out: &mut Option<Arc<Caller>>,
    ) -> Result<Tunnel, Denial> {
        let authority = req
            .uri()
            .authority()
            .ok_or_else(|| bad_request("CONNECT needs a host:port target"))?;
        let (host, port) = match split_authority(authority.as_str()) {
            Some((host, Some(port))) if port != 0 => (host, port),
            _ => return Err(bad_request("CONNECT target must be host:port")),
        };
        let host = normalize_host(host).ok_or_else(|| {
            bad_request(format!("CONNECT target {authority} is not a valid host"))
        })?;
        if headers::has_looped(req.headers(), &self.via_token) {
            return Err(loop_detected());
        }
        // Identity before the guard: an anonymous CONNECT costs no DNS lookup.
        let caller = gates::identity::authenticate(&self.identity, req.headers())?;
        *caller_out = Some(caller.clone());
        self.guard.check(&host, port).await?;
        Ok(Tunnel {
            authority: upstream_authority(&host, port, 443)?,
            host,
            port,
            misdirected: None,
            client,
            caller,
        })
    }

    async fn flow(
        &self,
        tunnel: Option<&Tunnel>,
        facts: &mut Facts,
        request_id: &str,
        started: Instant,
        mut req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Denial> {
        // 1. Ingress checks.
        let target = target_of(tunnel, &req)?;
        if headers::has_looped(req.headers(), &self.via_token) {
            return Err(loop_detected());
        }
        self.check_body_size(&req)?;

        // 2. Gates.
        // Identity: the tunnel's caller, still live; or this request's own credential.
        let who = match facts.caller.clone() {
            Some(c) => {
                gates::identity::recheck(&self.identity, &c)?;
                c
            }
            None => {
                let c = gates::identity::authenticate(&self.identity, req.headers())?;
                facts.caller = Some(c.clone());
                c
            }
        };
        // What is judged is what leaves: hop-by-hop headers (and every header `Connection`
        // names) go before intent reads anything, so no header is read that is not sent.
        let upgrade = req.version() == Version::HTTP_11 && headers::wants_upgrade(req.headers());
        if upgrade {
            self.intent
                .check_upgrade(target.host(), req.uri().path(), req.headers())
                .map_err(gates::intent::refusal)?;
        }
        headers::strip_hop_by_hop(req.headers_mut(), upgrade);
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (parts, mut body) = req.into_parts();

        // Intent: the AuthZEN tuple, from the catalog and, where the API keeps its meaning
        // there, the first `intent.max_body` bytes of the body.
        let routed = match self.intent.route(crate::intent::Target {
            method: &parts.method,
            host: target.host(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
        }) {
            Ok(routed) => routed,
            Err(e) => {
                // Read what the agent is still sending, so it hears the refusal.
                self.drain(&mut body).await;
                return Err(gates::intent::refusal(e));
            }
        };
        let mut prefix = if routed.needs_body() {
            Some(self.read_prefix(&mut body).await?)
        } else {
            None
        };
        // An inspected operation sent as GET or HEAD is judged without its body: a body
        // would be one the vendor might read and intent did not.
        if routed.body_kind().is_some()
            && prefix.is_none()
            && !http_body::Body::is_end_stream(&body)
        {
            self.drain(&mut body).await;
            return Err(gates::intent::refusal(
                crate::intent::IntentError::Ambiguous(format!(
                    "{} requests to this operation are judged without a body, and this one has one; send it without",
                    parts.method
                )),
            ));
        }
        // A large body's extraction is CPU work: it leaves the async workers (so one agent's
        // upload cannot stall the others), a bounded number at a time.
        let judged = if prefix.as_ref().is_some_and(|(b, _)| b.len() > HEAVY_BODY) {
            let _permit = self.heavy.acquire().await;
            off_worker(|| self.judge(&routed, &who, prefix.as_ref(), facts))
        } else {
            self.judge(&routed, &who, prefix.as_ref(), facts)
        };
        drop(routed);

        // Consent: a person approves what policy escalated, bound to this exact request.
        let approved = match judged {
            Ok(gates::policy::Verdict::Proceed) => Ok(()),
            Ok(gates::policy::Verdict::Escalate) => {
                self.consent(&who, &target, &parts, &mut body, &mut prefix, facts)
                    .await
            }
            Err(denial) => Err(denial),
        };
        // Token: the credential for this exact origin, granted to this decision. A request
        // held for consent is checked again: its agent may have been revoked meanwhile.
        let granted = match approved {
            Ok(()) if facts.consent.is_some() => {
                match gates::identity::recheck(&self.identity, &who) {
                    Ok(()) => self.token(&who, &target, facts, &parts.headers).await,
                    Err(denial) => Err(denial),
                }
            }
            Ok(()) => self.token(&who, &target, facts, &parts.headers).await,
            Err(denial) => Err(denial),
        };
        if let Err(denial) = granted {
            self.release_consent(facts);
            // Read what the agent is still sending, so it hears the refusal (HTTP/2 clients
            // treat a reset during their upload as an error and lose the answer).
            if prefix.as_ref().is_some_and(|(_, more)| *more) {
                self.drain(&mut body).await;
            }
            return Err(denial);
        }

        // Audit: the decision is durable before anything leaves, and says exactly what
        // leaves (method, target, headers and, when read whole, body digests).
        let whole_body = match &prefix {
            Some((bytes, false)) => Some(crate::digest::sha256(bytes)),
            None if http_body::Body::is_end_stream(&body) => Some(crate::digest::EMPTY_SHA256),
            _ => None,
        };
        facts.sent = Some(record::Sent::new(
            &parts,
            facts.injection.is_some(),
            whole_body,
            prefix.as_ref().map(|(b, _)| b.len()),
        ));
        let record = self.decision(
            request_id,
            facts,
            Some(&parts.method),
            target.authority.host(),
            parts.uri.path(),
            None,
        );
        if let Err(e) = self.audit.commit(record).await {
            self.release_consent(facts);
            return Err(audit_unavailable(e));
        }
        facts.decided = Some(started.elapsed());

        // 3. Egress.
        let sent = Arc::new(crate::body::SentBody::default());
        let replay = prefix.map(|(bytes, _)| bytes);
        let (mut outbound, body_sent) =
            self.outbound(parts, body, replay, whole_body, &target, sent.clone())?;
        // After hop-by-hop removal: `Connection: authorization` cannot strip the credential.
        gates::token::inject(outbound.headers_mut(), facts.injection.as_ref());
        let mut resp = self.upstream.send(outbound, body_sent, upgrade).await?;

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let upstream_upgrade = hyper::upgrade::on(&mut resp);
                // Registered like a tunnel, so PANIC closes it too; audited when it ends.
                let session = self.sessions.open(&who.spiffe_id);
                let ended = crate::audit::record::Upgrade {
                    request_id: request_id.to_owned(),
                    tenant: who.tenant.clone(),
                    bytes_up: None,
                    bytes_down: None,
                    ended: crate::audit::record::Ended::Failed,
                };
                tokio::spawn(splice_upgraded(
                    client_upgrade,
                    upstream_upgrade,
                    session,
                    (self.audit.clone(), ended),
                ));
            }
        }
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, switching);
        let mut outcome = Outcome {
            audit: self.audit.clone(),
            metrics: self.metrics.clone(),
            request_id: request_id.to_owned(),
            tenant: who.tenant.clone(),
            status: parts.status.as_u16(),
            started,
            sent,
            bytes_down: 0,
            aborted: false,
            redacted: 0,
            unscanned: None,
        };
        // Response hygiene: the agent never sees the credential, even if the upstream
        // echoes it (token introspection, debug endpoints).
        let body = match &facts.injection {
            None => ProxyBody::Audited(body, outcome),
            Some(injection) => {
                let redact = injection.redactor();
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

    /// Gives back a one-time approval this request used but never spent: it was refused
    /// after consent (no credential, audit down), so nothing was sent on the approval.
    fn release_consent(&self, facts: &Facts) {
        if let Some(Ok(g)) = &facts.consent {
            if g.scope == "once" {
                let tenant = facts.caller.as_ref().and_then(|c| c.tenant.as_deref());
                self.consents.for_tenant(tenant).release_once(&g.id);
            }
        }
    }

    /// Gate 5: the credential to inject, if a vault connection serves the origin. Only
    /// `https` origins get one.
    async fn token(
        &self,
        who: &Caller,
        target: &Target,
        facts: &mut Facts,
        headers: &http::HeaderMap,
    ) -> Result<(), Denial> {
        let Some(tuple) = facts.tuple.as_ref() else {
            return Err(internal("the token gate ran without a tuple"));
        };
        let scopes = facts.decision.as_ref().map_or(&[][..], |d| &d.scopes[..]);
        let origin = (target.scheme == Scheme::HTTPS).then(|| target.authority.as_str());
        facts.injection =
            gates::token::obtain(&self.vault, who, origin, tuple, scopes, headers).await?;
        Ok(())
    }

    /// Gates 2 and 3: the tuple, then the policy's decision, both kept in `facts` for the
    /// record; `Ok` when the request may go on.
    fn judge(
        &self,
        routed: &crate::intent::Routed<'_, '_>,
        who: &Caller,
        prefix: Option<&(bytes::Bytes, bool)>,
        facts: &mut Facts,
    ) -> Result<gates::policy::Verdict, Denial> {
        let body = prefix.map(|(bytes, truncated)| BodyPrefix {
            bytes: &bytes[..bytes.len().min(self.intent.max_body)],
            truncated: *truncated,
        });
        let tuple = routed
            .tuple(Subject::from(who), body)
            .map_err(gates::intent::refusal)?;
        let tuple = facts.tuple.insert(tuple);

        // Policy: the caller's tenant's (an unknown tenant is refused whatever the mode),
        // then allow, escalate or deny (observe mode records but never stops).
        let policy = match gates::policy::select(&self.policies, who) {
            Ok(p) => p,
            Err(refusal) => {
                let refusal = facts.decision.insert(refusal);
                return gates::policy::enforce(refusal, crate::policy::Mode::Enforce);
            }
        };
        let decision = facts.decision.insert(gates::policy::decide(policy, tuple));
        gates::policy::enforce(decision, policy.mode)
    }

    /// Gate 4: the consent for an escalated request. The body is read (up to
    /// `intent.max_body`) if intent did not already, because the approval binds it.
    async fn consent(
        &self,
        who: &Caller,
        target: &Target,
        parts: &http::request::Parts,
        body: &mut Incoming,
        prefix: &mut Option<(bytes::Bytes, bool)>,
        facts: &mut Facts,
    ) -> Result<(), Denial> {
        if prefix.is_none() && !http_body::Body::is_end_stream(body) {
            *prefix = Some(self.read_prefix(body).await?);
        }
        // An approval binds the whole request; a body longer than what is read cannot be
        // bound, so it is refused rather than approved in part.
        if prefix.as_ref().is_some_and(|(_, more)| *more) {
            return Err(Denial::new(
                Gate::Consent,
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large_for_consent",
                format!(
                    "this request needs a person's approval, and an approval covers the whole request; its body is longer than intent.max_body ({} bytes)",
                    self.intent.max_body
                ),
            ));
        }
        let (Some(tuple), Some(decision)) = (facts.tuple.as_ref(), facts.decision.as_ref()) else {
            return Err(internal(
                "the consent gate ran without a tuple and decision",
            ));
        };
        let origin = format!("{}://{}", target.scheme, target.authority);
        let request = gates::consent::Request {
            method: &parts.method,
            origin: &origin,
            path_and_query: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            headers: headers::forwarded_digest(&parts.headers, false),
            body: prefix.as_ref().map(|(b, _)| &b[..]),
        };
        let consents = self.consents.for_tenant(who.tenant.as_deref());
        let granted = gates::consent::ask(consents, who, tuple, decision, &request).await;
        facts.consent = Some(granted.clone());
        granted.map(drop)
    }

    /// Discards the rest of a refused request's body, up to [`DRAIN_MAX`] bytes and while
    /// the agent keeps sending (`limits.body_read_timeout` per piece).
    async fn drain(&self, body: &mut Incoming) {
        use http_body_util::BodyExt;
        let stall = self
            .config
            .limits
            .body_read_timeout
            .min(std::time::Duration::from_secs(5));
        let mut seen = 0usize;
        while seen <= DRAIN_MAX && !http_body::Body::is_end_stream(body) {
            match tokio::time::timeout(stall, body.frame()).await {
                Ok(Some(Ok(frame))) => seen += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
    }

    /// Reads the start of a request body for intent: up to `intent.max_body` bytes (plus
    /// the rest of the piece that crossed it). Returns the bytes, to be sent on first, and
    /// whether more follows.
    async fn read_prefix(&self, body: &mut Incoming) -> Result<(bytes::Bytes, bool), Denial> {
        use http_body_util::BodyExt;
        let max = self.intent.max_body;
        let stall = self.config.limits.body_read_timeout;
        let mut buf = bytes::BytesMut::new();
        while buf.len() <= max && !http_body::Body::is_end_stream(body) {
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
            if let Some(limit) = self.config.limits.max_request_body {
                if buf.len() as u64 > limit {
                    return Err(BodyFault::TooLarge(limit).denial());
                }
            }
        }
        let more = buf.len() > max || !http_body::Body::is_end_stream(body);
        Ok((buf.freeze(), more))
    }

    /// Refuses a body whose declared length (Content-Length) is already over the limit;
    /// undeclared bodies are counted while they stream (see `RequestBody`).
    fn check_body_size(&self, req: &Request<Incoming>) -> Result<(), Denial> {
        match self.config.limits.max_request_body {
            Some(limit) if http_body::Body::size_hint(req.body()).lower() > limit => {
                Err(BodyFault::TooLarge(limit).denial())
            }
            _ => Ok(()),
        }
    }

    /// Rewrites the agent's request into the one sent upstream.
    fn outbound(
        &self,
        mut parts: http::request::Parts,
        body: Incoming,
        replay: Option<bytes::Bytes>,
        whole: Option<[u8; 32]>,
        target: &Target,
        sent: Arc<crate::body::SentBody>,
    ) -> Result<(Request<RequestBody>, BodyDone), Denial> {
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
        let limit = self.config.limits.max_request_body;
        let (body, done) = RequestBody::new(
            body,
            replay,
            whole,
            limit,
            self.config.limits.body_read_timeout,
            sent,
        );
        Ok((Request::from_parts(parts, body), done))
    }
}

fn audit_unavailable(e: AuditError) -> Denial {
    Denial::new(
        Gate::Audit,
        StatusCode::SERVICE_UNAVAILABLE,
        "audit_unavailable",
        format!("{e}; the request was not forwarded"),
    )
}

/// A broken invariant inside the flow: refused, never let through.
fn internal(reason: &'static str) -> Denial {
    tracing::error!(
        reason,
        "internal error in the request flow; request refused"
    );
    Denial::new(
        Gate::Ingress,
        StatusCode::SERVICE_UNAVAILABLE,
        "internal_error",
        reason,
    )
}

fn loop_detected() -> Denial {
    Denial::new(
        Gate::Ingress,
        StatusCode::LOOP_DETECTED,
        "loop_detected",
        "this request already passed through this AgentGate instance (Via); check HTTPS_PROXY and NO_PROXY",
    )
}

fn bad_request(reason: impl Into<std::borrow::Cow<'static, str>>) -> Denial {
    Denial::new(
        Gate::Ingress,
        StatusCode::BAD_REQUEST,
        "bad_request",
        reason,
    )
}

fn misdirected(reason: String) -> Denial {
    Denial::new(
        Gate::Ingress,
        StatusCode::MISDIRECTED_REQUEST,
        "misdirected_request",
        reason,
    )
}

/// Joins the agent's and the upstream's upgraded connections (WebSocket) until either
/// closes or PANIC ends it; then writes the `upgrade` record with what crossed each way.
async fn splice_upgraded(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    session: crate::ingress::sessions::Session,
    (audit, mut record): (Arc<Audit>, crate::audit::record::Upgrade),
) {
    use crate::audit::record::Ended;
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
    let mut client = crate::ingress::counted::Counted::new(TokioIo::new(client), up.clone());
    let mut upstream = crate::ingress::counted::Counted::new(TokioIo::new(upstream), down.clone());
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

/// Bodies longer than this are judged off the async workers.
const HEAVY_BODY: usize = 64 << 10;

/// Runs CPU-heavy work where it cannot stall other requests: on a multi-threaded runtime
/// the worker hands its other tasks on first.
fn off_worker<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
