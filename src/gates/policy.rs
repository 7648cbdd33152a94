//! Gate 3 — Policy: may it. Evaluates the tuple with the Rego policy of the caller's tenant
//! and turns the decision into the next step: go on (allow), ask a human (escalate), or
//! refuse. In `observe` mode every decision is recorded but none is enforced.

use std::sync::Arc;

use http::StatusCode;

use crate::error::{Denial, Gate};
use crate::identity::Caller;
use crate::intent::Tuple;
use crate::policy::{Decision, Effect, Mode, Policies, shadow};

/// What policy lets happen next.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The policy's decision (scopes for the token gate, the message for consent).
    pub decision: Arc<Decision>,
    /// A person must approve first (the consent gate).
    pub escalate: bool,
}

/// What policy said about one request, kept for its record whatever happens next.
#[derive(Debug, Default)]
pub struct Decided {
    /// The active policy's decision.
    pub active: Option<Arc<Decision>>,
    /// The shadow policy's decision, when it has one and its effect differs.
    pub shadow: Option<Arc<Decision>>,
}

/// Decides on `tuple` for `caller`. The decision is also left in `decided`, for the record,
/// whether it lets the request on or refuses it, with a shadow policy's when it differs.
/// An agent of a tenant that is not configured (while others are) is refused even in
/// observe mode: an unknown tenant never passes. Never fails inside: an error in the policy
/// is a denial with its reason.
pub fn evaluate(
    policies: &Policies,
    caller: &Caller,
    tuple: &Tuple,
    decided: &mut Decided,
) -> Result<Verdict, Denial> {
    let (decision, mode) = match policies.for_tenant(caller.tenant.as_deref()) {
        Some(policy) => {
            let decision = policy.decide(&tuple.json);
            if let Some(shadow) = policy.shadow() {
                let theirs = shadow.decide(&tuple.json);
                decided.shadow = shadow::compare(policies.shadow_stats(), &decision, theirs);
            }
            (decision, policy.mode)
        }
        None => {
            let reason = format!(
                "tenant {} is not configured in [tenants]",
                caller.tenant.as_deref().unwrap_or_default()
            );
            (
                Arc::new(Decision::deny(reason, Arc::from(""))),
                Mode::Enforce,
            )
        }
    };
    let decision = decided.active.insert(decision).clone();
    let escalate = escalates(&decision, mode)?;
    Ok(Verdict { decision, escalate })
}

/// What `decision` means under `mode`: go on (`false`), ask a person first (`true`), or
/// the refusal.
fn escalates(decision: &Decision, mode: Mode) -> Result<bool, Denial> {
    match (mode, decision.effect) {
        (Mode::Observe, _) | (_, Effect::Allow) => Ok(false),
        (_, Effect::Escalate) => Ok(true),
        (_, Effect::Deny) => Err(Denial::new(
            Gate::Policy,
            StatusCode::FORBIDDEN,
            "policy_denied",
            decision.reason_line(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observe_mode_never_stops_a_request() {
        let d = Decision::deny("no", "h".into());
        assert!(escalates(&d, Mode::Enforce).is_err());
        assert!(matches!(escalates(&d, Mode::Observe), Ok(false)));
    }
}
