//! Gate 3 — Policy: may it. Evaluates the tuple with the Rego policy in force and turns the
//! decision into the pipeline's next step: go on (allow), ask a human (escalate), or refuse.
//! In `observe` mode every decision is recorded but none is enforced.

use http::StatusCode;

use crate::error::{Denial, Gate};
use crate::intent::Tuple;
use crate::policy::{Decision, Effect, Mode, Policy};

/// What the pipeline does after policy.
#[derive(Debug)]
pub enum Verdict {
    /// Go on to the next gate.
    Proceed,
    /// A human must approve first (the consent gate).
    Escalate,
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
