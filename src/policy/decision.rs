//! What policy says about a request, and the contract a policy's answer must meet.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::ENTRYPOINT;

/// What policy says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Escalate,
    Deny,
}

impl Effect {
    /// The effect's name in records and responses.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Escalate => "escalate",
            Effect::Deny => "deny",
        }
    }
}

/// A decision with everything the audit record and the consent gate need.
#[derive(Debug, Clone)]
pub struct Decision {
    pub effect: Effect,
    pub reasons: Vec<String>,
    pub scopes: Vec<String>,
    pub consent: Option<Value>,
    /// Hash of the policy files that decided (empty when none was loaded).
    pub policy_hash: Arc<str>,
}

impl Decision {
    /// A denial with one reason (no policy, or none that may decide).
    pub fn deny(reason: impl Into<String>, policy_hash: Arc<str>) -> Decision {
        Decision {
            effect: Effect::Deny,
            reasons: vec![reason.into()],
            scopes: Vec::new(),
            consent: None,
            policy_hash,
        }
    }

    /// The reasons as one line.
    pub fn reason_line(&self) -> String {
        if self.reasons.is_empty() {
            format!("policy decided {}", self.effect.as_str())
        } else {
            self.reasons.join("; ")
        }
    }
}

/// Checks a policy's answer against the decision contract.
pub(super) fn parse_decision(v: &regorus::Value, hash: Arc<str>) -> Decision {
    if *v == regorus::Value::Undefined {
        return Decision::deny(
            format!("the policy did not decide: {ENTRYPOINT} is undefined for this request"),
            hash,
        );
    }
    let json: Value = match serde_json::to_value(v) {
        Ok(j) => j,
        Err(e) => return Decision::deny(format!("policy decision is not JSON: {e}"), hash),
    };
    let malformed = |why: &str| {
        Decision::deny(
            format!("the policy returned a malformed decision ({why}); denied"),
            hash.clone(),
        )
    };
    let Value::Object(obj) = &json else {
        return malformed("not an object");
    };
    let effect = match obj.get("effect").and_then(Value::as_str) {
        Some("allow") => Effect::Allow,
        Some("escalate") => Effect::Escalate,
        Some("deny") => Effect::Deny,
        _ => return malformed("effect must be \"allow\", \"escalate\" or \"deny\""),
    };
    let strings = |key: &str| -> Result<Vec<String>, ()> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned).ok_or(()))
                .collect(),
            // Rego sets come out as arrays; a lone string is accepted as one reason.
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            _ => Err(()),
        }
    };
    let Ok(reasons) = strings("reasons") else {
        return malformed("reasons must be a list of strings");
    };
    let Ok(scopes) = strings("scopes") else {
        return malformed("scopes must be a list of strings");
    };
    let consent = match obj.get("consent") {
        None | Some(Value::Null) => None,
        Some(c @ Value::Object(_)) => Some(c.clone()),
        Some(_) => return malformed("consent must be an object"),
    };
    Decision {
        effect,
        reasons,
        scopes,
        consent,
        policy_hash: hash,
    }
}
