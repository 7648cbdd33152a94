//! What policy says about a request, and the contract a policy's answer must meet.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::ENTRYPOINT;

/// What policy says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// Limits on how often this may happen (`budget` / `budgets` in the decision).
    pub budgets: Vec<Budget>,
    /// Hash of the policy files that decided (empty when none was loaded).
    pub policy_hash: Arc<str>,
}

/// A limit a policy attaches to a decision: at most `limit` requests let through per `key`
/// in any `window`; beyond it the effect becomes `over`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// The counter's key, e.g. `["external-mail", "spiffe://…/agent/bot"]`; the first part
    /// names the budget.
    pub key: Vec<String>,
    pub limit: u64,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// `escalate` or `deny`.
    pub over: Effect,
}

/// The largest `limit` a budget may set (each use within the window is remembered).
pub const MAX_BUDGET_LIMIT: u64 = 100_000;
/// The longest `window` a budget may set.
pub const MAX_BUDGET_WINDOW: Duration = Duration::from_secs(31 * 24 * 3600);

impl Budget {
    /// The budget's name: its key's first part.
    pub fn name(&self) -> &str {
        self.key.first().map(String::as_str).unwrap_or_default()
    }

    /// The key as one line (`external-mail/spiffe://…`).
    pub fn key_line(&self) -> String {
        self.key.join("/")
    }

    /// Reads one budget object of a decision.
    fn parse(v: &Value) -> Result<Budget, String> {
        let Value::Object(o) = v else {
            return Err("a budget must be an object".into());
        };
        if let Some(k) = o
            .keys()
            .find(|k| !["key", "limit", "window", "over"].contains(&k.as_str()))
        {
            return Err(format!(
                "budget has an unknown field {k:?} (key, limit, window, over)"
            ));
        }
        let key: Vec<String> = match o.get("key") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(parts)) if !parts.is_empty() => parts
                .iter()
                .map(|p| match p {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    _ => Err("budget key parts must be strings".to_owned()),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err("budget key must be a non-empty list of strings".into()),
        };
        if key[0].is_empty() {
            return Err("budget key must start with the budget's name".into());
        }
        let limit = o
            .get("limit")
            .and_then(Value::as_u64)
            .filter(|l| *l <= MAX_BUDGET_LIMIT)
            .ok_or_else(|| {
                format!("budget limit must be a whole number from 0 to {MAX_BUDGET_LIMIT}")
            })?;
        let window = o
            .get("window")
            .and_then(Value::as_str)
            .and_then(|w| humantime::parse_duration(w).ok())
            .filter(|w| *w >= Duration::from_secs(1) && *w <= MAX_BUDGET_WINDOW)
            .ok_or("budget window must be a duration from 1s to 31d, e.g. \"1h\"")?;
        let over = match o.get("over").and_then(Value::as_str) {
            Some("escalate") => Effect::Escalate,
            Some("deny") | None => Effect::Deny,
            _ => return Err("budget over must be \"escalate\" or \"deny\"".into()),
        };
        Ok(Budget {
            key,
            limit,
            window,
            over,
        })
    }
}

impl Decision {
    /// A denial with one reason (no policy, or none that may decide).
    pub fn deny(reason: impl Into<String>, policy_hash: Arc<str>) -> Decision {
        Decision {
            effect: Effect::Deny,
            reasons: vec![reason.into()],
            scopes: Vec::new(),
            consent: None,
            budgets: Vec::new(),
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
    let budgets = match (obj.get("budget"), obj.get("budgets")) {
        (None | Some(Value::Null), None | Some(Value::Null)) => Ok(Vec::new()),
        (Some(one), None | Some(Value::Null)) => Budget::parse(one).map(|b| vec![b]),
        (None | Some(Value::Null), Some(Value::Array(many))) => {
            many.iter().map(Budget::parse).collect()
        }
        (None | Some(Value::Null), Some(_)) => Err("budgets must be a list".to_owned()),
        // Two places to look is one too many: which would count?
        (Some(_), Some(_)) => Err("a decision sets budget or budgets, not both".to_owned()),
    };
    let budgets = match budgets {
        Ok(b) => b,
        Err(why) => return malformed(&why),
    };
    Decision {
        effect,
        reasons,
        scopes,
        consent,
        budgets,
        policy_hash: hash,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(json: &str) -> Decision {
        let v: regorus::Value = regorus::Value::from_json_str(json).unwrap();
        parse_decision(&v, "h".into())
    }

    #[test]
    fn budgets_are_read_strictly() {
        let d = decide(
            r#"{"effect":"allow","budget":{"key":["external-mail","a"],"limit":20,"window":"1h","over":"escalate"}}"#,
        );
        assert_eq!(d.effect, Effect::Allow, "{:?}", d.reasons);
        assert_eq!(d.budgets.len(), 1);
        let b = &d.budgets[0];
        assert_eq!(
            (b.name(), b.limit, b.window, b.over),
            (
                "external-mail",
                20,
                Duration::from_secs(3600),
                Effect::Escalate
            )
        );
        assert_eq!(b.key_line(), "external-mail/a");
        let d =
            decide(r#"{"effect":"allow","budgets":[{"key":"posts","limit":0,"window":"30m"}]}"#);
        assert_eq!((d.budgets[0].over, d.budgets[0].limit), (Effect::Deny, 0));
        for bad in [
            r#"{"effect":"allow","budget":{"key":[],"limit":1,"window":"1h"}}"#,
            r#"{"effect":"allow","budget":{"key":["x"],"limit":-1,"window":"1h"}}"#,
            r#"{"effect":"allow","budget":{"key":["x"],"limit":1,"window":"forever"}}"#,
            r#"{"effect":"allow","budget":{"key":["x"],"limit":1,"window":"1h","over":"allow"}}"#,
            r#"{"effect":"allow","budget":{"key":["x"],"limit":1,"window":"1h","per":"agent"}}"#,
            r#"{"effect":"allow","budget":{"key":["x"],"limit":1,"window":"1h"},"budgets":[]}"#,
            r#"{"effect":"allow","budgets":{"key":["x"],"limit":1,"window":"1h"}}"#,
            r#"{"effect":"allow","budget":{"key":["x"],"limit":1,"window":"90d"}}"#,
        ] {
            let d = decide(bad);
            assert_eq!(d.effect, Effect::Deny, "{bad}");
            assert!(d.reasons[0].contains("malformed"), "{:?}", d.reasons);
        }
    }
}
