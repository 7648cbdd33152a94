//! The AuthZEN Access Request and Approval Profile (ARAP, draft 1) on the PDP: an
//! escalation is a *requestable* denial, a caller submits an access request for it, a
//! person answers it as a consent (dashboard, CLI, CIBA), and the approval makes the
//! identical evaluation `true` until its window closes.
//!
//! Binding is by `evaluation_id` (the profile's lookup pattern): this process remembers
//! each requestable denial's tuple for [`BINDING_WINDOW`] and checks a submission against
//! it. Nothing is signed, so discovery publishes no `jwks_uri`.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Map, Value, json};

use crate::clock::{now, rfc3339};
use crate::consent::access::{KEY_PREFIX, is_access_request};
use crate::consent::{Consent, Consents, NewConsent, Refused, Status};

/// Seconds a requestable denial can be submitted for.
pub const BINDING_WINDOW: i64 = 600;
/// Requestable denials remembered at once; beyond, denials are not requestable.
const MAX_BINDINGS: usize = 10_000;
/// Idempotency keys remembered at once, and for how long.
const MAX_KEYS: usize = 10_000;
const KEY_RETENTION: i64 = 24 * 3600;
/// The capability discovery announces.
pub const CAPABILITY: &str = "urn:openid:authzen:capability:access-request";
/// The profile's problem types.
const PROBLEM: &str = "urn:openid:authzen:access-request:error:";

/// One evaluation's tuple, as it binds a denial and an approval: subject, action and
/// resource whole, and the context without `approval` (the profile's exact-match scope).
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    pub subject: Value,
    pub action: Value,
    pub resource: Value,
    pub context: Map<String, Value>,
}

impl Bound {
    /// The bound part of a policy input.
    pub fn of(input: &Value) -> Bound {
        let mut context = input["context"].as_object().cloned().unwrap_or_default();
        context.remove("approval");
        Bound {
            subject: input["subject"].clone(),
            action: input["action"].clone(),
            resource: input["resource"].clone(),
            context,
        }
    }

    /// What approvals are filed under: a digest of the canonical JSON (keys sorted).
    pub fn key(&self) -> String {
        let canonical = json!({
            "subject": self.subject,
            "action": self.action,
            "resource": self.resource,
            "context": self.context,
        })
        .to_string();
        format!(
            "{KEY_PREFIX}{}",
            crate::digest::hex(&crate::digest::sha256(canonical.as_bytes()))
        )
    }

    /// The subject's id: whose access request it is (an agent's SPIFFE ID when the subject
    /// is an agent, so PANIC ends its approvals too).
    pub fn agent(&self) -> &str {
        self.subject["id"].as_str().unwrap_or_default()
    }
}

/// A requestable denial, remembered until it expires.
struct Binding {
    tenant: Option<String>,
    bound: Bound,
    expires: i64,
    expires_at: String,
}

/// Requestable denials and idempotency keys of this process.
#[derive(Default)]
pub struct AccessRequests {
    bindings: Mutex<HashMap<String, Binding>>,
    keys: Mutex<HashMap<KeyOf, Keyed>>,
}

/// An idempotency key: the caller's tenant and its `Idempotency-Key`.
type KeyOf = (Option<String>, String);

/// What a key was used for: the body's digest, the task, and until when it is kept.
struct Keyed {
    body: String,
    task: String,
    until: i64,
}

/// A refused submission: status, problem type (or a plain error code) and why.
#[derive(Debug)]
pub struct Problem {
    pub status: u16,
    /// `not_requestable`, `invalid_denial_binding`, … (the profile's) or a plain code.
    pub kind: &'static str,
    pub detail: String,
}

impl Problem {
    fn new(status: u16, kind: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            kind,
            detail: detail.into(),
        }
    }

    /// The problem type URI, for the profile's own kinds.
    pub fn type_uri(&self) -> Option<String> {
        matches!(
            self.kind,
            "not_requestable"
                | "expired_denial"
                | "invalid_denial_binding"
                | "duplicate_request"
                | "unknown_task"
                | "task_expired"
                | "invalid_task_state"
        )
        .then(|| format!("{PROBLEM}{}", self.kind))
    }
}

/// A submission taken: the task, and whether it is new.
pub struct Submitted {
    pub consent: Consent,
    pub created: bool,
}

impl AccessRequests {
    /// After the policy: an escalation becomes requestable (or, approved, `true`); a
    /// presented approval that does not apply says what to do next.
    pub fn settle(
        &self,
        consents: &Consents,
        tenant: Option<&str>,
        base: &str,
        input: &Value,
        result: &mut Value,
    ) {
        let effect = result["context"]["agentgate"]["effect"]
            .as_str()
            .unwrap_or("deny")
            .to_owned();
        let presented = input["context"]["approval"]["id"].as_str();
        let bound = Bound::of(input);
        let key = bound.key();
        match effect.as_str() {
            "escalate" => {
                let found = match presented {
                    // A presented approval is checked itself: it must be one of this
                    // tenant's access requests, approved, open, and for this very tuple.
                    Some(p) => match applicable(consents, p, &key) {
                        Ok(c) => Some(c),
                        Err((reason, next)) => {
                            result["context"]["reason"] = reason.into();
                            result["context"]["next_action"] = next.into();
                            if next == "request" {
                                self.requestable(tenant, base, bound, result);
                            }
                            return;
                        }
                    },
                    // A store failure finds no approval: the answer stays `false`.
                    None => consents.access_approval(bound.agent(), &key).ok().flatten(),
                };
                match found {
                    Some(c) => approved(result, &c),
                    None => self.requestable(tenant, base, bound, result),
                }
            }
            "deny" if presented.is_some() => {
                result["context"]["reason"] = "policy_denied".into();
                result["context"]["next_action"] = "none".into();
            }
            _ => {}
        }
    }

    /// Makes a denial requestable: `evaluation_id`, `reason` and `access_request`, the
    /// binding remembered; left as a plain denial when no binding can be kept.
    fn requestable(&self, tenant: Option<&str>, base: &str, bound: Bound, result: &mut Value) {
        let now = now();
        let expires = now + BINDING_WINDOW;
        let id = format!("eval_{}", crate::digest::hex(&rand::random::<[u8; 16]>()));
        let expires_at = rfc3339(expires);
        {
            let mut bindings = self.bindings.lock().unwrap_or_else(|p| p.into_inner());
            if bindings.len() >= MAX_BINDINGS {
                bindings.retain(|_, b| b.expires > now);
            }
            if bindings.len() >= MAX_BINDINGS {
                return;
            }
            bindings.insert(
                id.clone(),
                Binding {
                    tenant: tenant.map(str::to_owned),
                    bound,
                    expires,
                    expires_at: expires_at.clone(),
                },
            );
        }
        let why = result["context"]["reason_admin"]["en"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let ctx = &mut result["context"];
        ctx["evaluation_id"] = id.into();
        ctx["evaluated_at"] = rfc3339(now).into();
        if ctx.get("reason").is_none() {
            ctx["reason"] = "approval_required".into();
        }
        ctx["access_request"] = json!({
            "endpoint": format!("{base}/access/v1/requests"),
            "template": "agentgate_consent",
            "expires_at": expires_at,
            "display": {
                "title": "Ask a person",
                "description": format!("Policy asks a person to approve this: {why}"),
            },
        });
    }

    /// Checks a submission against the denial it names and opens (or joins) its consent.
    pub fn submit(
        &self,
        consents: &std::sync::Arc<Consents>,
        tenant: Option<&str>,
        idempotency_key: Option<&str>,
        body: &[u8],
    ) -> Result<Submitted, Problem> {
        let bad = |detail: String| Problem::new(400, "bad_request", detail);
        let request: Map<String, Value> = match serde_json::from_slice(body) {
            Ok(Value::Object(o)) => o,
            Ok(_) => return Err(bad("the access request must be a JSON object".into())),
            Err(e) => return Err(bad(format!("the access request is not valid JSON: {e}"))),
        };
        if request.contains_key("items") {
            return Err(Problem::new(
                400,
                "not_requestable",
                "bundled access requests (items) are not supported: submit one access request per denial",
            ));
        }
        if request.get("callback").is_some_and(|c| !c.is_null()) {
            return Err(bad(
                "callback is not supported: poll the task's status_endpoint, or subscribe a [[webhooks]] endpoint to the consent.* events (their consent_id is the task id)".into(),
            ));
        }
        let denial = request
            .get("denial")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                Problem::new(
                    400,
                    "invalid_denial_binding",
                    "denial is required: echo context.evaluation_id and context.access_request.expires_at of the denied evaluation",
                )
            })?;
        let binding_err = |detail: &str| Problem::new(400, "invalid_denial_binding", detail);
        let eval_id = denial
            .get("evaluation_id")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                binding_err("denial.evaluation_id is required (AgentGate issues no binding_token)")
            })?;
        let now = now();
        let bound = {
            let bindings = self.bindings.lock().unwrap_or_else(|p| p.into_inner());
            let b = bindings
                .get(eval_id)
                .filter(|b| b.tenant.as_deref() == tenant)
                .ok_or_else(|| {
                    binding_err("denial.evaluation_id names no requestable denial of this PDP for this caller")
                })?;
            if b.expires <= now {
                return Err(Problem::new(
                    410,
                    "expired_denial",
                    format!(
                        "the requestable denial expired at {}; evaluate again",
                        b.expires_at
                    ),
                ));
            }
            if denial.get("expires_at").and_then(Value::as_str) != Some(b.expires_at.as_str()) {
                return Err(binding_err(
                    "denial.expires_at must echo context.access_request.expires_at unchanged",
                ));
            }
            b.bound.clone()
        };
        let submitted_context = match request.get("context") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(c)) => c.clone(),
            Some(_) => return Err(bad("context must be an object".into())),
        };
        let same = |k: &str, v: &Value| request.get(k) == Some(v);
        // The context may add submission-time members, never change or drop bound ones.
        let context_kept = bound
            .context
            .iter()
            .all(|(k, v)| submitted_context.get(k) == Some(v));
        if !(same("subject", &bound.subject)
            && same("action", &bound.action)
            && same("resource", &bound.resource)
            && context_kept)
        {
            return Err(binding_err(
                "subject, action, resource and context must be those of the denied evaluation (context may only add members)",
            ));
        }
        let requested = request.get("requested_access");
        let requested_until = match requested.and_then(|r| r.get("requested_until")) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(parse_rfc3339(s).ok_or_else(|| {
                bad("requested_access.requested_until must be an RFC 3339 time".into())
            })?),
            Some(_) => {
                return Err(bad(
                    "requested_access.requested_until must be an RFC 3339 string".into(),
                ));
            }
        };
        if requested_until.is_some_and(|u| u <= now) {
            return Err(bad("requested_access.requested_until is in the past".into()));
        }
        // The same key with the same body is the same task; with another body, refused.
        let body_digest = crate::digest::hex(&crate::digest::sha256(
            Value::Object(request.clone()).to_string().as_bytes(),
        ));
        let key = idempotency_key.map(|k| (tenant.map(str::to_owned), k.to_owned()));
        if let Some(k) = &key {
            let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(Keyed { body, task, .. }) = keys.get(k).filter(|e| e.until > now) {
                if *body != body_digest {
                    return Err(Problem::new(
                        409,
                        "duplicate_request",
                        "this Idempotency-Key was used with another access request",
                    ));
                }
                if let Ok(Some(c)) = consents.get(task) {
                    return Ok(Submitted {
                        consent: c,
                        created: false,
                    });
                }
            }
        }
        let justification = submitted_context
            .get("business_justification")
            .and_then(Value::as_str)
            .map(|s| s.chars().take(500).collect::<String>());
        let tuple = json!({
            "subject": bound.subject,
            "action": bound.action,
            "resource": bound.resource,
            "context": submitted_context,
            "access_request": {
                "evaluation_id": eval_id,
                "requested_until": requested_until,
                "justification": justification,
                "client": request.get("client"),
            },
        });
        let new = NewConsent {
            agent: bound.agent().to_owned(),
            owner: bound.subject["properties"]["owner"]
                .as_str()
                .map(str::to_owned),
            tenant: tenant.map(str::to_owned),
            action: bound.action["name"].as_str().unwrap_or_default().to_owned(),
            resource_type: bound.resource["type"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            resource_id: bound.resource["id"].as_str().unwrap_or_default().to_owned(),
            tuple,
            digest: bound.key(),
            tuple_key: bound.key(),
            message: None,
        };
        let consent = consents.request_access(new).map_err(|e| match e {
            Refused::AskedTooOften { .. } | Refused::TooManyPending { .. } => {
                Problem::new(429, "too_many", e.to_string())
            }
            _ => Problem::new(503, "consent_unavailable", e.to_string()),
        })?;
        if let Some(k) = key {
            let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            if keys.len() >= MAX_KEYS {
                keys.retain(|_, e| e.until > now);
            }
            if keys.len() < MAX_KEYS {
                let task = consent.id.clone();
                let until = now + KEY_RETENTION;
                keys.insert(
                    k,
                    Keyed {
                        body: body_digest,
                        task,
                        until,
                    },
                );
            }
        }
        Ok(Submitted {
            consent,
            created: true,
        })
    }
}

/// The approval id of an approved access request (the task id is the consent id).
pub fn approval_id(c: &Consent) -> String {
    format!("apr_{}", c.id.trim_start_matches("cns_"))
}

/// The task handle (and, once approved, its result) of an access request.
pub fn task(base: &str, c: &Consent) -> Value {
    let endpoint = format!("{base}/access/v1/requests/{}", c.id);
    let mut task = json!({
        "id": c.id,
        "status": c.status.as_str(),
        "status_endpoint": endpoint,
    });
    match c.status {
        Status::Pending => {
            task["expires_at"] = rfc3339(c.expires).into();
            task["links"] = json!({"cancel": format!("{endpoint}/cancel")});
        }
        Status::Approved => {
            if let Some(until) = c.window_until {
                task["expires_at"] = rfc3339(until).into();
            }
        }
        _ => {}
    }
    let mut out = json!({ "task": task });
    if c.status == Status::Approved {
        out["result"] = json!({
            "mode": "reevaluate",
            "approval": approval(c),
        });
    }
    out
}

fn approval(c: &Consent) -> Value {
    json!({
        "id": approval_id(c),
        "approved_at": c.answered.map(rfc3339),
        "approved_until": c.window_until.map(rfc3339),
    })
}

/// An escalation a person approved: `true`, naming the approval.
fn approved(result: &mut Value, c: &Consent) {
    result["decision"] = true.into();
    let ctx = &mut result["context"];
    ctx["approval"] = approval(c);
    ctx["agentgate"]["approved_by"] = c.answered_by.clone().into();
    ctx["reason_admin"]["en"] = format!(
        "approved by {} until {}",
        c.answered_by.as_deref().unwrap_or("a person"),
        c.window_until.map(rfc3339).unwrap_or_default()
    )
    .into();
}

/// The approval `presented` names, if it applies to the tuple filed under `key` now;
/// otherwise why not and the next action the profile names.
fn applicable(
    consents: &Consents,
    presented: &str,
    key: &str,
) -> Result<Consent, (&'static str, &'static str)> {
    let id = format!("cns_{}", presented.strip_prefix("apr_").unwrap_or("-"));
    match consents.get(&id).ok().flatten() {
        Some(c) if is_access_request(&c) && c.status == Status::Approved => {
            if c.tuple_key != key {
                Err(("out_of_scope", "request"))
            } else if c.window_until.is_none_or(|until| until <= now()) {
                Err(("approval_expired", "request"))
            } else {
                Ok(c)
            }
        }
        _ => Err(("approval_unverifiable", "none")),
    }
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}
