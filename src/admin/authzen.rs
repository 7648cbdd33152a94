//! AgentGate as an OpenID AuthZEN PDP: other gateways ask the same Rego policy the proxy
//! enforces. `decision` is a boolean, so escalate answers `false` with
//! `context.agentgate.effect = "escalate"` and makes the denial requestable (see
//! [`super::access_request`]): a person's approval turns the identical evaluation `true`.

use serde_json::{Map, Value, json};

use crate::policy::{Effect, Policy};

/// Most evaluations in one `/access/v1/evaluations` request.
pub const MAX_EVALUATIONS: usize = 1000;

/// A request that does not follow the AuthZEN shapes; becomes a `400`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// What runs on each decision before it is answered (access requests and approvals).
pub type Settle<'a> = &'a dyn Fn(&Value, &mut Value);

/// The discovery document; `base` is the URL the caller reached us at. No search APIs
/// are advertised: AgentGate has none.
pub fn configuration(base: &str) -> Value {
    json!({
        "policy_decision_point": base,
        "access_evaluation_endpoint": format!("{base}/access/v1/evaluation"),
        "access_evaluations_endpoint": format!("{base}/access/v1/evaluations"),
        "access_request_endpoint": format!("{base}/access/v1/requests"),
        "capabilities": [super::access_request::CAPABILITY],
    })
}

/// `POST /access/v1/evaluation`.
pub fn evaluation(policy: &Policy, body: &[u8], settle: Settle<'_>) -> Result<Value, BadRequest> {
    let request = parse(body)?;
    let input = tuple(&request, &Map::new())?;
    Ok(decide(policy, &input, settle))
}

/// `POST /access/v1/evaluations`: top-level subject/action/resource/context are defaults for
/// each item; `options.evaluations_semantic` picks execute_all, deny_on_first_deny or
/// permit_on_first_permit. Without items it is a single evaluation.
pub fn evaluations(policy: &Policy, body: &[u8], settle: Settle<'_>) -> Result<Value, BadRequest> {
    let request = parse(body)?;
    let items = match request.get("evaluations") {
        None | Some(Value::Null) => return evaluation(policy, body, settle),
        Some(Value::Array(items)) if items.is_empty() => return evaluation(policy, body, settle),
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
    // A top-level default that is present must be well-formed: that is the whole payload's
    // error. An item's own error is that item's answer: `false` with the reason in its
    // context, the others still evaluated (AuthZEN §errors; certification c-3-4-1).
    check_defaults(&request)?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let result = match item {
            Value::Object(item) => match tuple(&request, item) {
                Ok(input) => decide(policy, &input, settle),
                Err(e) => item_error(&format!("evaluations[{i}]: {e}")),
            },
            _ => item_error(&format!("evaluations[{i}] must be an object")),
        };
        let decision = result["decision"].as_bool().unwrap_or(false);
        out.push(result);
        if stop_on == Some(decision) {
            break;
        }
    }
    Ok(json!({ "evaluations": out }))
}

/// The top-level defaults of a batch: each must be an object when present. What an object
/// lacks is the error of the items that inherit it (an item may override every default,
/// as the Todo interop payloads do with `"resource": {}`).
fn check_defaults(request: &Map<String, Value>) -> Result<(), BadRequest> {
    for key in ["subject", "action", "resource", "context"] {
        if request
            .get(key)
            .is_some_and(|v| !v.is_object() && !v.is_null())
        {
            return Err(BadRequest(format!("{key} must be an object")));
        }
    }
    Ok(())
}

/// One batch item that could not be evaluated: denied, with why.
fn item_error(message: &str) -> Value {
    json!({
        "decision": false,
        "context": {"error": {"status": 400, "message": message}},
    })
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

fn decide(policy: &Policy, input: &Value, settle: Settle<'_>) -> Value {
    let d = policy.evaluate(input);
    let reason = d.reason_line();
    let mut result = json!({
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
    });
    settle(input, &mut result);
    result
}
