//! Gate 4 — Consent: when policy escalates, a person decides. The request is bound to its
//! consent by a digest of exactly what would be sent (method, URL, every forwarded
//! end-to-end header, the whole body, the tuple with what was read from the body), so an
//! approval never covers a different request — a request that joins another's consent is
//! byte for byte the same request; then the consent store either finds an approval that
//! covers it or asks (holding the request, or answering at once in async mode).
//!
//! Takes the caller, the tuple, the policy's escalating decision and the exact request;
//! returns [`Consent::Granted`], or a [`Denial`] mapped here from the engine's
//! [`Refused`] (or 413 when the body is too long to be bound).

use std::sync::Arc;

use aws_lc_rs::digest::{Context, SHA256};
use http::{Method, StatusCode};

use super::policy::Verdict;
use crate::consent::approvals::Consents;
use crate::consent::ask::{Ask, Granted};
use crate::consent::error::Refused;
use crate::error::{Denial, Gate};
use crate::identity::Caller;
use crate::intent::Tuple;

/// The error code of a request refused because its body is too long to be bound.
pub const BODY_TOO_LARGE: &str = "body_too_large_for_consent";

/// What gate 4 hands on: no consent was needed (policy allowed), or the one that lets
/// this request through.
#[derive(Debug, Clone)]
pub enum Consent {
    /// Policy allowed the request; nobody was asked.
    NotNeeded,
    /// A person approved it (once, or for a window).
    Granted(Granted),
}

/// The exact request, as far as consent is concerned.
pub struct Request<'a> {
    pub method: &'a Method,
    /// `scheme://authority`.
    pub origin: &'a str,
    /// Path and query as sent.
    pub path_and_query: &'a str,
    /// [`crate::headers::forwarded_digest`] of the headers as forwarded.
    pub headers: [u8; 32],
    /// The body as read (up to `max_body`), `None` for no body.
    pub body: Option<&'a [u8]>,
    /// The body goes on beyond what was read: it cannot be bound, so it is refused.
    pub body_truncated: bool,
    /// `intent.max_body`: how much of a body is read, named in the refusal.
    pub max_body: usize,
}

/// Gate 4: [`Consent::NotNeeded`] when policy did not escalate; otherwise finds the
/// approval that covers this exact request, or asks a person for it.
pub async fn obtain(
    consents: &Arc<Consents>,
    caller: &Caller,
    tuple: &Tuple,
    verdict: &Verdict,
    request: &Request<'_>,
) -> Result<Consent, Denial> {
    if !verdict.escalate {
        return Ok(Consent::NotNeeded);
    }
    let decision = &verdict.decision;
    // An approval binds the whole request; a body longer than what is read cannot be
    // bound, so it is refused rather than approved in part.
    if request.body_truncated {
        return Err(Denial::new(
            Gate::Consent,
            StatusCode::PAYLOAD_TOO_LARGE,
            BODY_TOO_LARGE,
            format!(
                "this request needs a person's approval, and an approval covers the whole request; its body is longer than intent.max_body ({} bytes)",
                request.max_body
            ),
        ));
    }
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
        .map(Consent::Granted)
        .map_err(refusal)
}

/// The agent's refusal for what the consent engine refused: status, error code, the
/// engine's text as reason, the consent named in the body, and a `Retry-After` where
/// retrying helps.
fn refusal(r: Refused) -> Denial {
    let (status, error) = match &r {
        Refused::TooManyWaiters { .. }
        | Refused::AskedTooOften { .. }
        | Refused::TooManyPending { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_pending"),
        Refused::Denied { .. } => (StatusCode::FORBIDDEN, "consent_denied"),
        Refused::Pending { .. } => (StatusCode::FORBIDDEN, "consent_pending"),
        Refused::TimedOut { .. } => (StatusCode::FORBIDDEN, "consent_timeout"),
        Refused::Cancelled { .. } => (StatusCode::FORBIDDEN, "consent_cancelled"),
        Refused::Used { .. } => (StatusCode::FORBIDDEN, "consent_used"),
        Refused::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "consent_unavailable"),
    };
    let denial = Denial::new(Gate::Consent, status, error, r.to_string());
    match r {
        Refused::AskedTooOften { retry_after, .. } => {
            denial.with_extra(serde_json::Map::new(), Some(retry_after))
        }
        Refused::Pending {
            id,
            binding_code,
            expires,
            retry_after,
            ..
        } => {
            let mut fields = serde_json::Map::new();
            fields.insert("consent_id".into(), id.into());
            fields.insert("status".into(), "pending".into());
            fields.insert("binding_code".into(), binding_code.into());
            fields.insert("expires".into(), expires.into());
            denial.with_extra(fields, Some(retry_after.as_secs().max(1)))
        }
        // Names the consent in the refusal's body (and so in its decision record).
        Refused::Denied { id, .. }
        | Refused::TimedOut { id, .. }
        | Refused::Cancelled { id }
        | Refused::Used { id } => {
            let mut fields = serde_json::Map::new();
            fields.insert("consent_id".into(), id.into());
            denial.with_extra(fields, None)
        }
        Refused::TooManyWaiters { .. }
        | Refused::TooManyPending { .. }
        | Refused::Unavailable(_) => denial,
    }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Status, code, body fields and `Retry-After` of the refusal for `r`.
    fn parts(r: Refused) -> (u16, &'static str, String, serde_json::Value, Option<u64>) {
        let d = refusal(r);
        let body: serde_json::Value = serde_json::from_str(&d.body("req")).unwrap();
        let fields = d.extra.as_ref().map(|e| e.fields.clone().into());
        let retry = d.extra.as_ref().and_then(|e| e.retry_after);
        assert_eq!(body["reason"], d.reason.as_ref());
        assert_eq!(d.gate.as_str(), Gate::Consent.as_str());
        (
            d.status.as_u16(),
            d.error,
            d.reason.into_owned(),
            fields.unwrap_or_default(),
            retry,
        )
    }

    #[test]
    fn refusals_keep_their_status_code_reason_and_fields() {
        let id = || "cns_0123456789abcdef".to_owned();
        let (s, e, r, f, ra) = parts(Refused::Pending {
            id: id(),
            binding_code: "K7Q2XZ".into(),
            expires: 1_700_000_300,
            why: "writes need approval".into(),
            retry_after: Duration::from_millis(200),
        });
        assert_eq!((s, e, ra), (403, "consent_pending", Some(1)));
        assert_eq!(
            r,
            "writes need approval: a person must approve this request (consent cns_0123456789abcdef, code K7Q2XZ); retry the identical request after approval"
        );
        // The body's fields in the order they were always added.
        let mut order = serde_json::Map::new();
        for k in ["consent_id", "status", "binding_code", "expires"] {
            order.insert(k.into(), serde_json::Value::Null);
        }
        let keys =
            |m: &serde_json::Map<String, serde_json::Value>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(f.as_object().unwrap()), keys(&order));
        assert_eq!(
            f,
            serde_json::json!({"consent_id": id(), "status": "pending", "binding_code": "K7Q2XZ", "expires": 1_700_000_300})
        );

        let (s, e, r, f, ra) = parts(Refused::Denied {
            id: id(),
            by: Some("alice".into()),
            how: Some("cli".into()),
            reason: Some("not today".into()),
        });
        assert_eq!((s, e, ra), (403, "consent_denied", None));
        assert_eq!(
            r,
            "consent cns_0123456789abcdef was denied by alice (cli): not today"
        );
        assert_eq!(f, serde_json::json!({"consent_id": id()}));
        let (_, _, r, _, _) = parts(Refused::Denied {
            id: id(),
            by: None,
            how: None,
            reason: None,
        });
        assert_eq!(r, "consent cns_0123456789abcdef was denied by ? (?)");

        let (s, e, r, f, _) = parts(Refused::TimedOut {
            id: id(),
            binding_code: "K7Q2XZ".into(),
            timeout: Duration::from_secs(300),
        });
        assert_eq!((s, e), (403, "consent_timeout"));
        assert_eq!(
            r,
            "consent timed out after 300s with no answer (consent cns_0123456789abcdef, code K7Q2XZ)"
        );
        assert_eq!(f, serde_json::json!({"consent_id": id()}));

        let (s, e, r, f, _) = parts(Refused::Cancelled { id: id() });
        assert_eq!((s, e), (403, "consent_cancelled"));
        assert_eq!(r, "consent cns_0123456789abcdef was cancelled");
        assert_eq!(f, serde_json::json!({"consent_id": id()}));

        let (s, e, r, f, _) = parts(Refused::Used { id: id() });
        assert_eq!((s, e), (403, "consent_used"));
        assert_eq!(
            r,
            "the one-time approval of consent cns_0123456789abcdef was used by an identical request; retry to ask again"
        );
        assert_eq!(f, serde_json::json!({"consent_id": id()}));

        let (s, e, r, f, ra) = parts(Refused::AskedTooOften {
            recent: 60,
            per_minute: 3,
            per_agent: 20,
            retry_after: 60,
        });
        assert_eq!((s, e, ra), (429, "too_many_pending", Some(60)));
        assert_eq!(
            r,
            "this agent asked for 60 consents in the last minute (limit 3 × consent.max_pending_per_agent 20); wait before asking again"
        );
        assert_eq!(f, serde_json::json!({}));

        let d = refusal(Refused::TooManyPending {
            total: 1000,
            mine: 3,
            max_pending: 1000,
            per_agent: 20,
        });
        assert_eq!((d.status.as_u16(), d.error), (429, "too_many_pending"));
        assert_eq!(
            d.reason,
            "1000 consents are pending (3 of this agent; limits consent.max_pending 1000 and max_pending_per_agent 20); wait for answers"
        );
        assert!(d.extra.is_none());

        let d = refusal(Refused::TooManyWaiters {
            id: id(),
            waiters: 8,
        });
        assert_eq!((d.status.as_u16(), d.error), (429, "too_many_pending"));
        assert_eq!(
            d.reason,
            "8 identical requests already wait on consent cns_0123456789abcdef; wait for its answer"
        );
        assert!(d.extra.is_none());

        let d = refusal(Refused::from(crate::consent::ConsentError::Store(
            "disk full".into(),
        )));
        assert_eq!((d.status.as_u16(), d.error), (503, "consent_unavailable"));
        assert_eq!(
            d.reason,
            "consent could not be asked: consent store: disk full"
        );
        assert!(d.extra.is_none());
    }
}
