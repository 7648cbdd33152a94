//! AgentGate as an OpenID AuthZEN PDP: other gateways ask the same Rego policy the proxy
//! enforces. `decision` is a boolean, so escalate answers `false` with
//! `context.agentgate.effect = "escalate"` (the caller must get a human's approval first).

use serde_json::{Map, Value, json};

use crate::policy::{Effect, Policy};

/// Most evaluations in one `/access/v1/evaluations` request.
pub const MAX_EVALUATIONS: usize = 1000;

/// A request that does not follow the AuthZEN shapes; becomes a `400`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// The discovery document; `base` is the URL the caller reached us at.
pub fn configuration(base: &str) -> Value {
    json!({
        "policy_decision_point": base,
        "access_evaluation_endpoint": format!("{base}/access/v1/evaluation"),
        "access_evaluations_endpoint": format!("{base}/access/v1/evaluations"),
    })
}

/// `POST /access/v1/evaluation`.
pub fn evaluation(policy: &Policy, body: &[u8]) -> Result<Value, BadRequest> {
    let request = parse(body)?;
    let input = tuple(&request, &Map::new())?;
    Ok(decide(policy, &input))
}

/// `POST /access/v1/evaluations`: top-level subject/action/resource/context are defaults for
/// each item; `options.evaluations_semantic` picks execute_all, deny_on_first_deny or
/// permit_on_first_permit. Without items it is a single evaluation.
pub fn evaluations(policy: &Policy, body: &[u8]) -> Result<Value, BadRequest> {
    let request = parse(body)?;
    let items = match request.get("evaluations") {
        None | Some(Value::Null) => return evaluation(policy, body),
        Some(Value::Array(items)) if items.is_empty() => return evaluation(policy, body),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(BadRequest("evaluations must be an array".into())),
    };
    if items.len() > MAX_EVALUATIONS {
        return Err(BadRequest(format!(
            "at most {MAX_EVALUATIONS} evaluations per request"
        )));
    }
    let semantic = request
        .get("options")
        .and_then(|o| o.get("evaluations_semantic"))
        .map(|s| s.as_str().unwrap_or("?"))
        .unwrap_or("execute_all");
    let stop_on: Option<bool> = match semantic {
        "execute_all" => None,
        "deny_on_first_deny" => Some(false),
        "permit_on_first_permit" => Some(true),
        other => {
            return Err(BadRequest(format!(
                "options.evaluations_semantic {other:?} must be execute_all, deny_on_first_deny or permit_on_first_permit"
            )));
        }
    };
    // Check every item before deciding any, so a bad item cannot leave half an answer.
    let inputs = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::Object(item) = item else {
                return Err(BadRequest(format!("evaluations[{i}] must be an object")));
            };
            tuple(&request, item).map_err(|e| BadRequest(format!("evaluations[{i}]: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(inputs.len());
    for input in &inputs {
        let result = decide(policy, input);
        let decision = result["decision"].as_bool().unwrap_or(false);
        out.push(result);
        if stop_on == Some(decision) {
            break;
        }
    }
    Ok(json!({ "evaluations": out }))
}

fn parse(body: &[u8]) -> Result<Map<String, Value>, BadRequest> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(BadRequest("the request body must be a JSON object".into())),
        Err(e) => Err(BadRequest(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

/// The policy input for one evaluation: the item's fields over the request's defaults.
fn tuple(defaults: &Map<String, Value>, item: &Map<String, Value>) -> Result<Value, BadRequest> {
    let pick = |key: &str| item.get(key).or_else(|| defaults.get(key));
    let subject = entity(pick("subject"), "subject", "type", "id")?;
    let action = entity(pick("action"), "action", "name", "name")?;
    let resource = entity(pick("resource"), "resource", "type", "id")?;
    let context = match pick("context") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(c @ Value::Object(_)) => c.clone(),
        Some(_) => return Err(BadRequest("context must be an object".into())),
    };
    Ok(json!({"subject": subject, "action": action, "resource": resource, "context": context}))
}

fn entity(v: Option<&Value>, what: &str, a: &str, b: &str) -> Result<Value, BadRequest> {
    let Some(Value::Object(o)) = v else {
        return Err(BadRequest(format!(
            "{what} is required and must be an object"
        )));
    };
    for key in [a, b] {
        if !o.get(key).is_some_and(Value::is_string) {
            return Err(BadRequest(format!(
                "{what}.{key} is required and must be a string"
            )));
        }
    }
    if o.get("properties")
        .is_some_and(|p| !p.is_object() && !p.is_null())
    {
        return Err(BadRequest(format!("{what}.properties must be an object")));
    }
    Ok(Value::Object(o.clone()))
}

fn decide(policy: &Policy, input: &Value) -> Value {
    let d = policy.evaluate(input);
    let reason = d.reason_line();
    json!({
        "decision": d.effect == Effect::Allow,
        "context": {
            "reason_admin": {"en": reason},
            "agentgate": {
                "effect": d.effect.as_str(),
                "reasons": d.reasons,
                "scopes": d.scopes,
                "policy_hash": &*d.policy_hash,
            },
        },
    })
}
