//! Gate 3 — Policy: may it. Evaluates the tuple with the Rego policy in force and turns the
//! decision into the pipeline's next step: go on (allow), ask a human (escalate), or refuse.
//! In `observe` mode every decision is recorded but none is enforced.

use http::StatusCode;

use std::sync::Arc;

use crate::error::{Denial, Gate};
use crate::identity::Caller;
use crate::intent::Tuple;
use crate::policy::{Decision, Effect, Mode, Policies, Policy};

/// What the pipeline does after policy.
#[derive(Debug)]
pub enum Verdict {
    /// Go on to the next gate.
    Proceed,
    /// A human must approve first (the consent gate).
    Escalate,
}

/// The policy that decides for `caller`: its tenant's, or the instance's for an agent
/// without one. An agent of a tenant that is not configured (while others are) gets a
/// denial instead, enforced even in observe mode: an unknown tenant never passes.
pub fn select<'p>(policies: &'p Policies, caller: &Caller) -> Result<&'p Arc<Policy>, Decision> {
    policies
        .for_tenant(caller.tenant.as_deref())
        .ok_or_else(|| {
            Decision::deny(
                format!(
                    "tenant {} is not configured in [tenants]",
                    caller.tenant.as_deref().unwrap_or_default()
                ),
                Arc::from(""),
            )
        })
}

/// Decides on `tuple`; never fails (errors inside policy are denials with their reason).
pub fn decide(policy: &Policy, tuple: &Tuple) -> Decision {
    policy.evaluate(&tuple.json)
}

/// What the decision means for this request under `mode`.
pub fn enforce(decision: &Decision, mode: Mode) -> Result<Verdict, Denial> {
    if mode == Mode::Observe {
        return Ok(Verdict::Proceed);
    }
    match decision.effect {
        Effect::Allow => Ok(Verdict::Proceed),
        Effect::Escalate => Ok(Verdict::Escalate),
        Effect::Deny => Err(Denial::new(
            Gate::Policy,
            StatusCode::FORBIDDEN,
            "policy_denied",
            decision.reason_line(),
        )),
    }
}
