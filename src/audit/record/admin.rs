//! `admin` records: an `event` about the instance (configuration, agents, credentials, policy,
//! PANIC, consents) with its `detail`, and the `tenant` whose objects it concerns.
//!
//! The details AgentGate writes itself are typed; events posted through the admin API or
//! the CLI keep an open detail ([`Detail::Other`]). Every detail declares its fields in byte
//! order of their names: that order is the canonical one.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `admin`: one event.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "RawAdmin")]
pub struct Admin {
    /// `config_loaded`, `policy_reloaded`, `panic`, `consent_approved`, …
    pub event: Cow<'static, str>,
    /// Stored only for an event about one tenant's objects.
    pub tenant: Option<String>,
    pub detail: Detail,
}

/// An admin record's fields as stored, before the detail is typed by its event.
#[derive(Deserialize)]
struct RawAdmin {
    event: String,
    #[serde(default)]
    tenant: Option<String>,
    detail: Value,
}

impl From<RawAdmin> for Admin {
    fn from(raw: RawAdmin) -> Self {
        Admin {
            detail: Detail::decode(&raw.event, raw.detail),
            event: raw.event.into(),
            tenant: raw.tenant,
        }
    }
}

/// What an admin event says, by event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Detail {
    /// `consent_requested`, `consent_approved`, `consent_denied`, `consent_expired`,
    /// `consent_cancelled`.
    Consent(ConsentChange),
    /// `consent_late_answer`.
    LateAnswer(LateAnswer),
    /// `consent_approvals_ended`.
    ApprovalsEnded(ApprovalsEnded),
    /// `panic`, `credential_revoked`: one step of a PANIC.
    Panic(PanicStep),
    /// `credential_issued`.
    CredentialIssued(CredentialIssued),
    /// `policy_reloaded`.
    PolicyReloaded(PolicyReloaded),
    /// `policy_reload_failed`.
    PolicyReloadFailed(PolicyReloadFailed),
    /// Any other event (`config_loaded`, `agent_registered`, `vault_changed`, …).
    Other(Value),
}

impl Detail {
    /// Types a stored detail by its event; one of another shape (an event of that name
    /// posted through the admin API, a later version) stays as it is.
    fn decode(event: &str, detail: Value) -> Detail {
        fn typed<T: serde::de::DeserializeOwned>(detail: Value, wrap: fn(T) -> Detail) -> Detail {
            match T::deserialize(&detail) {
                Ok(t) => wrap(t),
                Err(_) => Detail::Other(detail),
            }
        }
        match event {
            "consent_requested" | "consent_approved" | "consent_denied" | "consent_expired"
            | "consent_cancelled" => typed(detail, Detail::Consent),
            "consent_late_answer" => typed(detail, Detail::LateAnswer),
            "consent_approvals_ended" => typed(detail, Detail::ApprovalsEnded),
            "panic" | "credential_revoked" => typed(detail, Detail::Panic),
            "credential_issued" => typed(detail, Detail::CredentialIssued),
            "policy_reloaded" => typed(detail, Detail::PolicyReloaded),
            "policy_reload_failed" => typed(detail, Detail::PolicyReloadFailed),
            _ => Detail::Other(detail),
        }
    }
}

/// A consent opened or closed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentChange {
    pub action: String,
    /// The agent's SPIFFE ID.
    pub agent: String,
    /// The CIBA request id.
    pub auth_req_id: Option<String>,
    /// `local` or `ciba`.
    pub backend: String,
    pub by: Option<String>,
    pub consent_id: String,
    /// Digest of the bound request.
    pub digest: String,
    /// `cli`, `api`, `ciba`, `timeout`, `disconnect`, `panic`.
    pub how: Option<String>,
    pub reason: Option<String>,
    pub resource: ResourceRef,
    pub status: String,
    /// An approval for a window: until when (Unix seconds).
    pub window_until: Option<i64>,
}

/// The resource a consent is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceRef {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// An answer that came after the consent expired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LateAnswer {
    pub agent: String,
    pub answer: String,
    pub by: String,
    pub consent_id: String,
    pub how: String,
}

/// PANIC ended approvals still in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalsEnded {
    /// The PANIC's agents, sorted (empty: every agent).
    pub agents: Vec<String>,
    pub count: u64,
    pub reason: String,
}

/// One step of a PANIC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PanicStep {
    /// The agents it reached, sorted.
    pub agents: Vec<String>,
    pub panic_id: String,
    pub reason: String,
    /// The step's own report (null if it could not be written).
    pub step: Value,
}

/// A credential obtained for injection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CredentialIssued {
    /// The vault connection id.
    pub connection: String,
    /// Unix expiry, when known.
    pub expires: Option<i64>,
    /// `hmac-sha256:` fingerprint of the token.
    pub fingerprint: String,
    pub kind: Cow<'static, str>,
    pub service: String,
}

/// A policy directory reloaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyReloaded {
    pub dir: String,
    pub hash: String,
    /// A shadow policy's directory (evaluated beside the active one, never enforced).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    /// The tenant it decides for (null: the instance's).
    pub tenant: Option<String>,
}

/// A policy directory that did not reload; the previous policy stays in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyReloadFailed {
    pub dir: String,
    pub error: String,
    /// Hash of the policy still in force.
    pub in_force: String,
    /// A shadow policy's directory (evaluated beside the active one, never enforced).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    /// The tenant it decides for (null: the instance's).
    pub tenant: Option<String>,
}
