//! The request flow, top to bottom. Ingress hands every request here, one at a time, with
//! the tunnel it arrived on; this module decides and forwards, and is the one place that
//! turns a refusal into a response and logs the request.
//!
//! Order, and why:
//! 1. **Ingress checks** — is the request well-formed for a proxy, does it agree with the
//!    tunnel it came through (CONNECT target = TLS SNI = Host), is it looping back to us.
//!    Nothing else is worth doing for a request we cannot even attribute to a destination.
//! 2. **The five gates** — identity → intent → policy → consent → token, each one's output
//!    the next one's input, then the decision record is committed to the audit log.
//!    Identity is checked once per tunnel at `CONNECT` (`pipeline/tunnel.rs`) and re-checked
//!    for revocation and expiry on every request inside it (and again after a request waited
//!    for consent); plain `http://` requests carry their credential each time. What is
//!    judged is what leaves: hop-by-hop headers go before intent reads anything, consent
//!    binds the whole request, and the decision record says exactly what is sent.
//! 3. **Egress** — the outbound request is prepared (the agent's credentials replaced by
//!    the granted one, `Via` added) and sent through the guarded, certificate-verifying
//!    upstream client; the response is streamed back with echoes of the credential masked
//!    (`pipeline/forward.rs`).
//!
//! Where a request goes lives in `pipeline/target.rs`; what is recorded about it in
//! `pipeline/record.rs`.

mod assembly;
mod forward;
mod inbound;
mod record;
mod refusal;
mod sent;
mod target;
mod trail;
mod tunnel;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::HeaderValue;
use http::request::Parts;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::{ProxyBody, SentBody};
use crate::error::{Denial, REQUEST_ID};
use crate::gates::identity::Claim;
use crate::gates::token::Injection;
use crate::identity::Caller;
use crate::{gates, headers};
pub use assembly::{Components, Pipeline};
use forward::Outbound;
use inbound::Inbound;
use record::log_request;
use refusal::{audit_unavailable, loop_detected};
use sent::Sent;
pub use target::Tunnel;
use target::{Target, target_of};
use trail::Trail;
pub use tunnel::Redirect;

impl Pipeline {
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

        let mut trail = Trail::default();
        let flow = self
            .flow(tunnel, client, &mut trail, &request_id, started, req)
            .await;
        let (mut resp, denial) = match flow {
            Ok(resp) => (resp, None),
            Err(denial) => {
                let record = self.decision(
                    &request_id,
                    &trail,
                    Some(&method),
                    host,
                    path,
                    Some(&denial),
                );
                self.record_refusal(record).await;
                let mut resp = denial.clone().into_response(&request_id);
                // An MCP client reads a refusal of its request best as a JSON-RPC error.
                let rpc_id = trail.tuple.as_ref().and_then(|t| t.mcp_request_id.as_ref());
                if let Some(id) = rpc_id {
                    *resp.body_mut() = ProxyBody::from(denial.jsonrpc_body(&request_id, id));
                }
                (resp, Some(denial))
            }
        };
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert(REQUEST_ID, v);
        }
        // Once per request, by its final answer: an upstream failure after the allowed
        // decision counts as refused by `upstream`, with the latency of that decision.
        let latency = trail.decided.unwrap_or_else(|| started.elapsed());
        self.c
            .metrics
            .request(denial.as_ref().map(|d| d.gate), latency);
        let status = resp.status();
        log_request(
            &request_id,
            client,
            &trail,
            &method,
            host,
            path,
            status,
            denial.as_ref(),
            started,
        );
        resp
    }

    async fn flow(
        &self,
        tunnel: Option<&Tunnel>,
        client: SocketAddr,
        trail: &mut Trail,
        request_id: &str,
        started: Instant,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Denial> {
        // 1. Ingress checks.
        let target = target_of(tunnel, &req)?;
        if headers::has_looped(req.headers(), &self.via_token) {
            return Err(loop_detected());
        }
        self.check_body_size(&req)?;

        // 2. The five gates. Identity first: it reads `Proxy-Authorization`, which goes
        // with the other hop-by-hop headers before intent reads anything.
        let claim = match tunnel {
            Some(t) => Claim::Verified(&t.caller),
            None => Claim::of_request(
                req.headers(),
                client.ip().is_loopback(),
                self.c.loopback_is_pod,
            ),
        };
        let caller = gates::identity::verify(&self.c.identity, claim)?;
        trail.caller = Some(caller.clone());
        let (parts, mut inbound, upgrade) = self.as_sent(req, &target)?;
        let admitted = self.admit(&target, &parts, &mut inbound, &caller, trail);
        let injection = match admitted.await {
            Ok(injection) => injection,
            Err(denial) => {
                self.release_unsent(trail, &caller).await;
                if inbound.more() {
                    self.drain(&mut inbound).await;
                }
                return Err(denial);
            }
        };

        // Audit: the decision is durable before anything leaves, and says exactly what
        // leaves (method, target, headers and, when read whole, body digests).
        let whole_body = inbound.whole_digest();
        let read = inbound.prefix.as_ref().map(|(b, _)| b.len());
        let injected = injection.issued().is_some();
        trail.sent = Some(Sent::new(&parts, injected, whole_body, read));
        let (method, host, path) = (&parts.method, target.authority.host(), parts.uri.path());
        let record = self.decision(request_id, trail, Some(method), host, path, None);
        if let Err(e) = self.c.audit.commit(record).await {
            self.release_unsent(trail, &caller).await;
            return Err(audit_unavailable(e));
        }
        trail.budgets.spend();
        trail.decided = Some(started.elapsed());

        // 3. Egress.
        let out = Outbound {
            parts,
            inbound,
            target: &target,
            caller: &caller,
            injection: &injection,
            upgrade,
            request_id,
            started,
            sent: Arc::new(SentBody::default()),
            tap: self.listing_tap(trail, &caller),
        };
        self.forward(out, whole_body).await
    }

    /// A tap on the answer to an MCP `tools/list` (or on a server's stream), which pins the
    /// tools it lists.
    fn listing_tap(&self, trail: &Trail, caller: &Caller) -> Option<Box<dyn crate::body::Tap>> {
        let tuple = trail.tuple.as_ref()?;
        let mcp = &tuple.json["context"]["mcp"];
        let unknown = mcp["server"] == crate::intent::mcp::UNKNOWN_SERVER;
        // A listing's answer, or a server's stream (where the older HTTP+SSE transport
        // answers every message).
        let listing = mcp["method"] == "tools/list" && mcp.get("batch").is_none();
        let stream = mcp.get("method").is_none() && tuple.action.ends_with(".stream");
        if unknown || !(listing || stream) {
            return None;
        }
        let pins = self.c.intent.mcp_pins()?.clone();
        let server = mcp["server"].as_str()?.to_owned();
        Some(Box::new(crate::intent::mcp::listing::Listing::new(
            pins,
            self.c.audit.clone(),
            caller.tenant.clone(),
            server,
        )))
    }

    /// Gates 2 to 5, each one's output the next one's input; what each learns is also kept
    /// in `trail` for the record.
    async fn admit(
        &self,
        target: &Target,
        parts: &Parts,
        inbound: &mut Inbound,
        caller: &Arc<Caller>,
        trail: &mut Trail,
    ) -> Result<Injection, Denial> {
        let tuple = self.derive(target, parts, inbound, caller).await?;
        trail.tuple = Some(tuple.clone());
        let (policies, decided) = (&self.c.policies, &mut trail.policy);
        let verdict = (self.judge_cpu(inbound, || {
            gates::policy::evaluate(policies, caller, &tuple, decided)
        }))
        .await?;
        let mode = self.c.policies.mode();
        let now_ms = crate::clock::now_micros() / 1000;
        let budgets = &self.c.budgets;
        let charged = &mut trail.budgets;
        let verdict =
            gates::policy::charge(budgets, caller, verdict, mode, charged, now_ms).await?;
        let consent =
            (self.obtain_consent(target, parts, inbound, caller, &tuple, &verdict, trail)).await?;
        let origin = target.tls_origin();
        let injection = gates::token::issue(
            &self.c.vault,
            caller,
            origin,
            &tuple,
            &verdict,
            &consent,
            &parts.headers,
        )
        .await?;
        trail.injection = Some(injection.clone());
        Ok(injection)
    }

    /// Gives back what a refused request took but never used: its budget uses and a
    /// one-time approval (refused after consent: no credential, audit down).
    async fn release_unsent(&self, trail: &mut Trail, caller: &Caller) {
        trail.budgets.give_back(&*self.c.budgets).await;
        self.release_consent(trail, caller);
    }

    /// Gives back a one-time approval this request used but never spent: it was refused
    /// after consent (no credential, audit down), so nothing was sent on the approval.
    fn release_consent(&self, trail: &Trail, caller: &Caller) {
        if let Some(g) = trail.consent.as_ref().filter(|g| g.scope == "once") {
            let tenant = caller.tenant.as_deref();
            self.c.consents.for_tenant(tenant).release_once(&g.id);
        }
    }
}
