//! One consent as stored, listed and announced, where it stands, and an answer to it.

use serde::Serialize;

/// Where a consent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Approved,
    Denied,
    Expired,
    Cancelled,
}

impl Status {
    /// The name in the database, the API and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
        }
    }

    /// The status named `s`.
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "pending" => Status::Pending,
            "approved" => Status::Approved,
            "denied" => Status::Denied,
            "expired" => Status::Expired,
            "cancelled" => Status::Cancelled,
            _ => return None,
        })
    }
}

/// An answer to a pending consent: who gave it, how, why, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub status: Status,
    pub by: &'a str,
    /// `cli`, `api`, `ciba`, `timeout`, `disconnect`, `panic`.
    pub how: &'a str,
    pub reason: Option<&'a str>,
    /// Approvals for a window: until when.
    pub window_until: Option<i64>,
}

/// One consent, as stored and listed.
#[derive(Debug, Clone, Serialize)]
pub struct Consent {
    pub id: String,
    /// SPIFFE ID of the agent that asked.
    pub agent: String,
    pub owner: Option<String>,
    pub tenant: Option<String>,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    /// The AuthZEN tuple the policy saw.
    pub tuple: serde_json::Value,
    /// Binds the consent to one exact request (method, URL, body, tuple).
    pub digest: String,
    /// Agent + action + resource: what an approval window covers.
    pub tuple_key: String,
    /// Short code shown to the agent and the approver (and in the CIBA binding message).
    pub binding_code: String,
    /// `local` or `ciba`.
    pub backend: String,
    pub created: i64,
    pub expires: i64,
    pub status: Status,
    pub answered_by: Option<String>,
    /// `cli`, `api`, `ciba`, `timeout`, `panic`, `disconnect`.
    pub how: Option<String>,
    pub reason: Option<String>,
    pub answered: Option<i64>,
    /// An approval for a window: same agent, action and resource pass until then.
    pub window_until: Option<i64>,
    /// A once-approval was used by its request.
    pub used: bool,
    pub auth_req_id: Option<String>,
}
