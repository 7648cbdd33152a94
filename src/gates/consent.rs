//! Gate 4 — Consent: when policy escalates, a person decides. The request is bound to its
//! consent by a digest of exactly what would be sent (method, URL, body, tuple), so an
//! approval never covers a different request; then the consent store either finds an
//! approval that covers it or asks (holding the request, or answering at once in async
//! mode).

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
    /// The body as read (at most `intent.max_body` bytes), `None` for no body.
    pub body: Option<&'a [u8]>,
    /// More body follows what is bound (that tail is not covered by the approval).
    pub truncated: bool,
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

/// SHA-256 over method, URL, body digest and the tuple's action and resource, each
/// length-prefixed so no two requests share an encoding.
pub fn digest(r: &Request<'_>, t: &Tuple) -> String {
    let body = r
        .body
        .map(|b| aws_lc_rs::digest::digest(&SHA256, b))
        .map_or_else(Vec::new, |d| d.as_ref().to_vec());
    let mut ctx = Context::new(&SHA256);
    for part in [
        r.method.as_str().as_bytes(),
        r.origin.as_bytes(),
        r.path_and_query.as_bytes(),
        &body,
        if r.truncated { b"more" } else { b"whole" },
        t.action.as_bytes(),
        t.resource_type.as_bytes(),
        t.resource_id.as_bytes(),
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    crate::vault::store::hex(ctx.finish().as_ref())
}
