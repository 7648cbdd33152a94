//! Gate 4 — Consent: when policy escalates, a person decides. The request is bound to its
//! consent by a digest of exactly what would be sent (method, URL, every forwarded
//! end-to-end header, the whole body, the tuple with what was read from the body), so an
//! approval never covers a different request — a request that joins another's consent is
//! byte for byte the same request; then the consent store either finds an approval that
//! covers it or asks (holding the request, or answering at once in async mode).

use std::sync::Arc;

use aws_lc_rs::digest::{Context, SHA256};
use http::Method;

use crate::consent::{Ask, Consents, Granted};
use crate::error::Denial;
use crate::identity::Caller;
use crate::intent::Tuple;
use crate::policy::Decision;

/// The exact request, as far as consent is concerned.
pub struct Request<'a> {
    pub method: &'a Method,
    /// `scheme://authority`.
    pub origin: &'a str,
    /// Path and query as sent.
    pub path_and_query: &'a str,
    /// [`crate::headers::forwarded_digest`] of the headers as forwarded.
    pub headers: [u8; 32],
    /// The whole body, `None` for no body (a longer one than intent reads is refused
    /// before consent: it could not be bound).
    pub body: Option<&'a [u8]>,
}

/// Asks for (or finds) the consent this escalated request needs.
pub async fn ask(
    consents: &Arc<Consents>,
    caller: &Caller,
    tuple: &Tuple,
    decision: &Decision,
    request: &Request<'_>,
) -> Result<Granted, Denial> {
    let message = decision
        .consent
        .as_ref()
        .and_then(|c| c["binding_message"].as_str());
    consents
        .ask(Ask {
            caller,
            tuple,
            digest: digest(request, tuple),
            message,
            why: decision.reason_line(),
        })
        .await
}

/// SHA-256 over method, URL, header digest, body digest and the tuple's action, resource
/// and body-derived context, each length-prefixed so no two requests share an encoding.
pub fn digest(r: &Request<'_>, t: &Tuple) -> String {
    let body = r.body.map_or([0u8; 32], crate::digest::sha256);
    // What intent read from the body (recipients, channels, GraphQL fields): the person
    // approved the request as described, so the description is bound too.
    let context = serde_json::to_vec(&t.json["context"]["body"]).unwrap_or_default();
    let mut ctx = Context::new(&SHA256);
    for part in [
        r.method.as_str().as_bytes(),
        r.origin.as_bytes(),
        r.path_and_query.as_bytes(),
        &r.headers,
        if r.body.is_some() { &body } else { b"none" },
        t.action.as_bytes(),
        t.resource_type.as_bytes(),
        t.resource_id.as_bytes(),
        &context,
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    crate::digest::hex(ctx.finish().as_ref())
}

/// What the consent gate found: no approval needed (policy allowed), or one that covers
/// this exact request.
pub enum Consent {
    NotNeeded,
    Granted(Granted),
}

/// Obtains the approval this escalated request needs (an existing one that covers it, or
/// a person's answer, held for).
pub async fn obtain(
    consents: &Arc<Consents>,
    caller: &Caller,
    tuple: &Tuple,
    verdict: &crate::gates::policy::Verdict,
    request: &Request<'_>,
) -> Result<Consent, Denial> {
    ask(consents, caller, tuple, &verdict.decision, request)
        .await
        .map(Consent::Granted)
}
