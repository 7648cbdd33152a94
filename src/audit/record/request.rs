//! What is written about a request: its `decision` (before anything is forwarded), its
//! `outcome` (when the response is done) and, for a protocol upgrade, the `upgrade` record
//! (when the upgraded connection ends).
//!
//! Sub-objects that are stored as they are (`Sent`, `CredentialNote`) declare their fields in
//! byte order of their names: that order is the canonical one.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// `decision`: one per request, allowed or refused.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Decision {
    pub request_id: String,
    /// The caller's SPIFFE ID; `None` (null) before identity knew it.
    pub agent: Option<String>,
    /// The caller's tenant; `None` (null) for none.
    pub tenant: Option<String>,
    /// The caller's token id; `None` (null) for none.
    pub jti: Option<String>,
    /// `None` (null) when the request never parsed that far.
    pub method: Option<String>,
    pub host: String,
    /// Never the query string: it carries secrets (Slack's `token=`).
    pub path: String,
    /// What leaves, for a forwarded request.
    #[serde(default)]
    pub sent: Option<Sent>,
    /// The AuthZEN tuple, once the intent gate has run.
    #[serde(flatten)]
    pub tuple: Option<Tuple>,
    /// What the policy said, once it has decided.
    #[serde(flatten)]
    pub policy: Option<PolicyNote>,
    /// The shadow policy's decision, stored only when its effect differs.
    #[serde(default)]
    pub shadow: Option<ShadowNote>,
    /// The budgets the policy attached, with their use once this request was counted.
    #[serde(default)]
    pub budgets: Vec<BudgetNote>,
    /// What the consent gate did, when policy escalated.
    #[serde(default)]
    pub consent: Option<ConsentNote>,
    /// The credential the token gate injected.
    #[serde(default)]
    pub credential: Option<CredentialNote>,
    /// An `agw_` reference was swapped for the credential.
    #[serde(default)]
    pub reference: bool,
    /// Allowed, or refused by which gate.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// The policy's reasons, then the refusal's (unless the policy refused).
    pub reasons: Vec<String>,
}

/// The AuthZEN tuple of a decision, as the intent gate derived it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Tuple {
    /// `{name, properties}`.
    pub action: Value,
    /// `{type, id, properties}`.
    pub resource: Value,
    /// Host, path, redacted query, selected body fields, `body_truncated`.
    pub context: Value,
}

/// What the policy said about a request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PolicyNote {
    /// `allow`, `escalate` or `deny`.
    pub policy_effect: Cow<'static, str>,
    pub policy_hash: String,
    /// `enforce` or `observe`.
    pub mode: Cow<'static, str>,
    /// Stored only when the policy named any.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// What a shadow policy would have decided, where it differs from the active one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowNote {
    /// `allow`, `escalate` or `deny`.
    pub effect: Cow<'static, str>,
    pub policy_hash: String,
    pub reasons: Vec<String>,
}

/// One budget of a decision: its key, limit and window, and its use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetNote {
    /// The limit was already reached: the budget's `over` effect applied.
    pub exceeded: bool,
    pub key: Vec<String>,
    pub limit: u64,
    /// Requests counted in the window, this one included when it was counted.
    pub used: u64,
    /// As the policy wrote it, e.g. `1h`.
    pub window: String,
}

/// Allowed, or refused (by which gate, with which status and error code).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawVerdict")]
pub enum Verdict {
    /// `effect: allow`, `gate: null`.
    Allow,
    /// `effect: deny` with the gate that refused, the HTTP status and the error code.
    Deny {
        /// `ingress`, `identity`, `intent`, `policy`, `consent`, `token`, `audit`, …
        gate: Cow<'static, str>,
        /// The HTTP status the agent got.
        status: u16,
        /// The stable error code, e.g. `port_not_allowed`.
        error: Cow<'static, str>,
    },
}

/// A verdict's stored fields, before they are checked to fit together.
#[derive(Deserialize)]
struct RawVerdict {
    effect: String,
    gate: Option<String>,
    status: Option<u16>,
    error: Option<String>,
}

impl TryFrom<RawVerdict> for Verdict {
    type Error = String;

    fn try_from(v: RawVerdict) -> Result<Self, Self::Error> {
        match (v.effect.as_str(), v.gate, v.status, v.error) {
            ("allow", None, None, None) => Ok(Verdict::Allow),
            ("deny", Some(gate), Some(status), Some(error)) => Ok(Verdict::Deny {
                gate: gate.into(),
                status,
                error: error.into(),
            }),
            (effect, ..) => Err(format!("not a decision's verdict (effect {effect})")),
        }
    }
}

/// What the consent gate did: a person let the request through, or it was refused there.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ConsentNote {
    /// Stored with `status: "approved"`.
    Approved {
        /// The consent's id.
        id: String,
        /// `once` or `window`.
        scope: Cow<'static, str>,
        /// Who answered.
        by: Option<String>,
        /// How: `cli`, `api`, `ciba`.
        how: Option<String>,
    },
    /// Refused at the consent gate; `id` is null when no consent was opened.
    Refused {
        /// The consent's id.
        id: Option<String>,
        /// The denial's error code.
        error: Cow<'static, str>,
    },
}

/// The credential gate 5 injected: never the token, only its keyed fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CredentialNote {
    /// Unix expiry of the credential, when known.
    pub expires: Option<i64>,
    /// `hmac-sha256:` fingerprint of the token.
    pub fingerprint: String,
    /// Unix expiry of this grant.
    pub grant_expires: i64,
    /// The vault connection id.
    pub id: String,
    /// `static`, `oauth`, `github-app`, `auth0`.
    pub kind: Cow<'static, str>,
}

/// Exactly what a forwarded request sends upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sent {
    /// The whole body's length, when it was read before deciding.
    pub body_bytes: Option<u64>,
    /// The whole body's digest, when it was read before deciding.
    pub body_sha256: Option<Sha256>,
    /// The meaning-bearing headers, in clear.
    pub headers: Map<String, Value>,
    /// The forwarded headers' digest (`docs/audit-format.md` says how to recompute it).
    pub headers_sha256: Sha256,
    pub method: String,
    /// The path and query as sent.
    pub target_sha256: Sha256,
}

/// `outcome`: what came of a forwarded request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Outcome {
    pub request_id: String,
    /// Stored only when the agent has one.
    #[serde(default)]
    pub tenant: Option<String>,
    pub status: u16,
    pub bytes_up: u64,
    /// Of exactly the bytes sent upstream, when the body was sent in full; null otherwise.
    pub body_sha256: Option<Sha256>,
    pub bytes_down: u64,
    pub duration_us: u64,
    /// False if the response was cut short.
    pub complete: bool,
    /// Echoes of the injected credential masked in the response; stored when any.
    #[serde(default)]
    pub redacted: u64,
    /// Why a compressed response could not be scanned for echoes.
    #[serde(default)]
    pub unscanned: Option<String>,
}

/// `upgrade`: an allowed protocol upgrade, when its connection ends.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Upgrade {
    pub request_id: String,
    /// Stored only when the agent has one.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Bytes from the agent after `101`; not stored when the upgrade never completed.
    #[serde(default)]
    pub bytes_up: Option<u64>,
    /// Bytes to the agent after `101`; not stored when the upgrade never completed.
    #[serde(default)]
    pub bytes_down: Option<u64>,
    pub ended: Ended,
}

/// How an upgraded connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ended {
    /// Either side closed it.
    Closed,
    /// PANIC cut it.
    Panic,
    /// The upgrade never completed.
    Failed,
}

/// A SHA-256 digest, stored as lowercase hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sha256(pub [u8; 32]);

impl Serialize for Sha256 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::digest::hex(&self.0))
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(d)?;
        crate::audit::chain::parse_hash(&text)
            .map(Sha256)
            .ok_or_else(|| serde::de::Error::custom("not a hex SHA-256"))
    }
}
