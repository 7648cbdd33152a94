//! The audit record: one type per `kind` with typed fields, the one encoder that turns a
//! record into the canonical bytes the chain hashes, and the decoder readers use.
//! `docs/audit-format.md` is the outside reader's version of this module.
//!
//! Layout: `request` (what is written about a request: `decision`, `outcome`, `upgrade`),
//! `admin` (events about the instance: configuration, agents, credentials, policy, PANIC,
//! consents), `wire` (the stored field order, where the canonical form is made).

pub mod admin;
pub mod request;
mod wire;

use serde::Deserialize;

pub use admin::{
    Admin, ApprovalsEnded, ConsentChange, CredentialIssued, Detail, LateAnswer, PanicStep,
    PolicyReloadFailed, PolicyReloaded, ResourceRef,
};
pub use request::{
    BudgetNote, ConsentNote, CredentialNote, Decision, Ended, Outcome, PolicyNote, Sent, Sha256,
    ShadowNote, Tuple, Upgrade, Verdict,
};

/// One audit record, by `kind`. The writer adds `seq`, `ts` and `instance` when it commits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    /// One per request, allowed or refused (boxed: by far the largest).
    Decision(Box<Decision>),
    /// One per forwarded request, when its response is done.
    Outcome(Outcome),
    /// One per allowed protocol upgrade, when the upgraded connection ends.
    Upgrade(Upgrade),
    /// An event about the instance (boxed: rare, and large).
    Admin(Box<Admin>),
}

impl Record {
    /// The canonical bytes of this record as record `seq` of `instance`, committed at `ts`
    /// (Unix microseconds): compact JSON, keys in byte order.
    pub fn seal(&self, instance: &str, seq: u64, ts: i64) -> Result<String, serde_json::Error> {
        let envelope = wire::Envelope { instance, seq, ts };
        match self {
            Record::Decision(d) => wire::decision(d, envelope),
            Record::Outcome(o) => wire::outcome(o, envelope),
            Record::Upgrade(u) => wire::upgrade(u, envelope),
            Record::Admin(a) => wire::admin(a, envelope),
        }
    }

    /// The tenant the record belongs to (its audit view and event stream).
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Record::Decision(d) => d.tenant.as_deref(),
            Record::Outcome(o) => o.tenant.as_deref(),
            Record::Upgrade(u) => u.tenant.as_deref(),
            Record::Admin(a) => a.tenant.as_deref(),
        }
    }

    /// For a decision: the agent (SPIFFE ID) it was about.
    pub fn decided_by(&self) -> Option<&str> {
        match self {
            Record::Decision(d) => d.agent.as_deref(),
            _ => None,
        }
    }
}

impl From<Decision> for Record {
    fn from(d: Decision) -> Self {
        Record::Decision(Box::new(d))
    }
}

impl From<Outcome> for Record {
    fn from(o: Outcome) -> Self {
        Record::Outcome(o)
    }
}

impl From<Upgrade> for Record {
    fn from(u: Upgrade) -> Self {
        Record::Upgrade(u)
    }
}

impl From<Admin> for Record {
    fn from(a: Admin) -> Self {
        Record::Admin(Box::new(a))
    }
}

/// A record as stored, decoded: the fields the writer added and the record itself.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Stored {
    pub seq: u64,
    /// Unix microseconds.
    pub ts: i64,
    /// The AgentGate process that wrote it.
    pub instance: String,
    #[serde(flatten)]
    pub record: Record,
}

impl Stored {
    /// Decodes a stored record's text.
    pub fn decode(text: &str) -> Result<Stored, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// What a verifier reads of every stored record, whatever its kind or version: its place
/// in the chain. Nothing else is relied on, so records of later versions verify too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Head {
    pub seq: u64,
}

#[cfg(test)]
mod tests;
