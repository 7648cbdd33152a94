//! The stored form of each record: the canonical encoding is compact JSON with keys in byte
//! order, so each view below declares its fields in byte order of their names (the
//! writer's `seq`, `ts` and `instance` among them) and serializes straight to text, with no
//! intermediate map. Which fields are absent and which are null is decided here.

use serde::Serialize;
use serde_json::Value;

use super::admin::{Admin, Detail};
use super::request::{
    BudgetNote, ConsentNote, CredentialNote, Decision, Ended, Outcome, Sent, Sha256, ShadowNote,
    Upgrade, Verdict,
};

/// What the writer adds to every record.
#[derive(Clone, Copy)]
pub(super) struct Envelope<'a> {
    pub(super) instance: &'a str,
    pub(super) seq: u64,
    pub(super) ts: i64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A decision as stored. Keys in byte order.
#[derive(Serialize)]
struct DecisionWire<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'a Value>,
    agent: Option<&'a str>,
    #[serde(skip_serializing_if = "<[BudgetNote]>::is_empty")]
    budgets: &'a [BudgetNote],
    #[serde(skip_serializing_if = "Option::is_none")]
    consent: Option<ConsentWire<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential: Option<&'a CredentialNote>,
    effect: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    gate: Option<&'a str>,
    host: &'a str,
    instance: &'a str,
    jti: Option<&'a str>,
    kind: &'static str,
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<&'a str>,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy_effect: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy_hash: Option<&'a str>,
    reasons: &'a [String],
    #[serde(skip_serializing_if = "is_false")]
    reference: bool,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource: Option<&'a Value>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    scopes: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    sent: Option<&'a Sent>,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    shadow: Option<&'a ShadowNote>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    tenant: Option<&'a str>,
    ts: i64,
}

/// A decision's `consent`. Keys in byte order.
#[derive(Serialize)]
#[serde(untagged)]
enum ConsentWire<'a> {
    Approved {
        by: Option<&'a str>,
        how: Option<&'a str>,
        id: &'a str,
        scope: &'a str,
        status: &'static str,
    },
    Refused {
        error: &'a str,
        id: Option<&'a str>,
    },
}

impl<'a> From<&'a ConsentNote> for ConsentWire<'a> {
    fn from(c: &'a ConsentNote) -> Self {
        match c {
            ConsentNote::Approved { id, scope, by, how } => ConsentWire::Approved {
                by: by.as_deref(),
                how: how.as_deref(),
                id,
                scope,
                status: "approved",
            },
            ConsentNote::Refused { id, error } => ConsentWire::Refused {
                error,
                id: id.as_deref(),
            },
        }
    }
}

pub(super) fn decision(d: &Decision, e: Envelope<'_>) -> Result<String, serde_json::Error> {
    let (effect, gate, status, error) = match &d.verdict {
        Verdict::Allow => ("allow", None, None, None),
        Verdict::Deny {
            gate,
            status,
            error,
        } => ("deny", Some(&**gate), Some(*status), Some(&**error)),
    };
    let tuple = d.tuple.as_ref();
    let policy = d.policy.as_ref();
    serde_json::to_string(&DecisionWire {
        action: tuple.map(|t| &t.action),
        agent: d.agent.as_deref(),
        budgets: &d.budgets,
        consent: d.consent.as_ref().map(ConsentWire::from),
        context: tuple.map(|t| &t.context),
        credential: d.credential.as_ref(),
        effect,
        error,
        gate,
        host: &d.host,
        instance: e.instance,
        jti: d.jti.as_deref(),
        kind: "decision",
        method: d.method.as_deref(),
        mode: policy.map(|p| &*p.mode),
        path: &d.path,
        policy_effect: policy.map(|p| &*p.policy_effect),
        policy_hash: policy.map(|p| p.policy_hash.as_str()),
        reasons: &d.reasons,
        reference: d.reference,
        request_id: &d.request_id,
        resource: tuple.map(|t| &t.resource),
        scopes: policy.map_or(&[], |p| &p.scopes),
        sent: d.sent.as_ref(),
        seq: e.seq,
        shadow: d.shadow.as_ref(),
        status,
        tenant: d.tenant.as_deref(),
        ts: e.ts,
    })
}

/// An outcome as stored. Keys in byte order.
#[derive(Serialize)]
struct OutcomeWire<'a> {
    body_sha256: Option<Sha256>,
    bytes_down: u64,
    bytes_up: u64,
    complete: bool,
    duration_us: u64,
    instance: &'a str,
    kind: &'static str,
    #[serde(skip_serializing_if = "is_zero")]
    redacted: u64,
    request_id: &'a str,
    seq: u64,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    ts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    unscanned: Option<&'a str>,
}

pub(super) fn outcome(o: &Outcome, e: Envelope<'_>) -> Result<String, serde_json::Error> {
    serde_json::to_string(&OutcomeWire {
        body_sha256: o.body_sha256,
        bytes_down: o.bytes_down,
        bytes_up: o.bytes_up,
        complete: o.complete,
        duration_us: o.duration_us,
        instance: e.instance,
        kind: "outcome",
        redacted: o.redacted,
        request_id: &o.request_id,
        seq: e.seq,
        status: o.status,
        tenant: o.tenant.as_deref(),
        ts: e.ts,
        unscanned: o.unscanned.as_deref(),
    })
}

/// An upgrade as stored. Keys in byte order.
#[derive(Serialize)]
struct UpgradeWire<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_down: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_up: Option<u64>,
    ended: Ended,
    instance: &'a str,
    kind: &'static str,
    request_id: &'a str,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    ts: i64,
}

pub(super) fn upgrade(u: &Upgrade, e: Envelope<'_>) -> Result<String, serde_json::Error> {
    serde_json::to_string(&UpgradeWire {
        bytes_down: u.bytes_down,
        bytes_up: u.bytes_up,
        ended: u.ended,
        instance: e.instance,
        kind: "upgrade",
        request_id: &u.request_id,
        seq: e.seq,
        tenant: u.tenant.as_deref(),
        ts: e.ts,
    })
}

/// An admin event as stored. Keys in byte order.
#[derive(Serialize)]
struct AdminWire<'a> {
    detail: &'a Detail,
    event: &'a str,
    instance: &'a str,
    kind: &'static str,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    ts: i64,
}

pub(super) fn admin(a: &Admin, e: Envelope<'_>) -> Result<String, serde_json::Error> {
    serde_json::to_string(&AdminWire {
        detail: &a.detail,
        event: &a.event,
        instance: e.instance,
        kind: "admin",
        seq: e.seq,
        tenant: a.tenant.as_deref(),
        ts: e.ts,
    })
}
