//! Gate 3 — Policy: may it. Evaluates the tuple with the Rego policy of the caller's tenant
//! and turns the decision into the next step: go on (allow), ask a human (escalate), or
//! refuse. In `observe` mode every decision is recorded but none is enforced.

use std::sync::Arc;

use http::StatusCode;

use crate::error::{Denial, Gate};
use crate::identity::Caller;
use crate::intent::Tuple;
use crate::policy::budget::{Budgets, Take, window_text};
use crate::policy::{Budget, Decision, Effect, Mode, Policies, shadow};

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

/// What a request's budgets came to: one note per budget for the record, and the uses to
/// give back if the request is refused after all. Uses still held when it is dropped (the
/// client went away while the request waited) are given back then.
#[derive(Default)]
pub struct Charged {
    pub notes: Vec<BudgetUse>,
    /// Keys and times of the uses taken and not yet spent.
    pub taken: Vec<(Vec<String>, i64)>,
    /// Why a budget changed the decision, for the record's reasons.
    pub reason: Option<String>,
    /// The counter the uses came from.
    counter: Option<Arc<dyn Budgets>>,
}

impl std::fmt::Debug for Charged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Charged")
            .field("notes", &self.notes)
            .field("taken", &self.taken)
            .finish()
    }
}

impl Drop for Charged {
    fn drop(&mut self) {
        if self.taken.is_empty() {
            return;
        }
        let (Some(counter), Ok(rt)) = (self.counter.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let taken = std::mem::take(&mut self.taken);
        rt.spawn(async move {
            for (key, at) in taken {
                counter.give_back(&key, at).await;
            }
        });
    }
}

/// One budget of a decision and its use.
#[derive(Debug, Clone)]
pub struct BudgetUse {
    pub budget: Budget,
    pub used: u64,
    pub exceeded: bool,
}

impl Charged {
    /// The uses are spent: the request's decision is recorded and it goes out.
    pub fn spend(&mut self) {
        self.taken.clear();
    }

    /// Gives back every use taken (the request did not go out).
    pub async fn give_back(&mut self, budgets: &dyn Budgets) {
        for (key, at) in self.taken.drain(..) {
            budgets.give_back(&key, at).await;
        }
    }
}

/// Counts the request against the budgets its decision carries. Within every budget it
/// goes on as decided (each use counted); over one, the budget's `over` effect applies
/// (the stronger of several) and nothing is counted. A counter that fails refuses the
/// request. In observe mode the outcome is recorded but not enforced.
pub async fn charge(
    budgets: &Arc<dyn Budgets>,
    caller: &Caller,
    verdict: Verdict,
    mode: Mode,
    charged: &mut Charged,
    now_ms: i64,
) -> Result<Verdict, Denial> {
    let decision = &verdict.decision;
    if decision.budgets.is_empty() || decision.effect == Effect::Deny {
        return Ok(verdict);
    }
    let mut over: Option<(Effect, String)> = None;
    for b in &decision.budgets {
        // A tenant's budgets are its own: its keys cannot reach another tenant's.
        let scoped;
        let b = match &caller.tenant {
            Some(t) => {
                let mut key = vec![format!("tenant:{t}")];
                key.extend(b.key.iter().cloned());
                scoped = Budget { key, ..b.clone() };
                &scoped
            }
            None => b,
        };
        match budgets.take(b, now_ms).await {
            Ok(Take::Taken { used, at }) => {
                charged.counter = Some(budgets.clone());
                charged.taken.push((b.key.clone(), at));
                charged.notes.push(BudgetUse {
                    budget: b.clone(),
                    used,
                    exceeded: false,
                });
            }
            Ok(Take::Exceeded { used }) => {
                let why = format!(
                    "budget {} is used up: {used} of {} in the last {}; over it the policy says {}",
                    b.key_line(),
                    b.limit,
                    window_text(b.window),
                    b.over.as_str()
                );
                charged.notes.push(BudgetUse {
                    budget: b.clone(),
                    used,
                    exceeded: true,
                });
                let stronger = over.as_ref().is_none_or(|(e, _)| *e == Effect::Escalate);
                if stronger {
                    over = Some((b.over, why));
                }
            }
            Err(e) => {
                charged.give_back(&**budgets).await;
                return Err(Denial::new(
                    Gate::Policy,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "budget_unavailable",
                    format!("{e}; the request is refused rather than let past its budget"),
                ));
            }
        }
    }
    let Some((effect, why)) = over else {
        return Ok(verdict);
    };
    // Over budget: nothing of this request counts against the others either.
    charged.give_back(&**budgets).await;
    charged.reason = Some(why.clone());
    if mode == Mode::Observe {
        return Ok(verdict);
    }
    match effect {
        Effect::Deny => Err(Denial::new(
            Gate::Policy,
            StatusCode::FORBIDDEN,
            "budget_exceeded",
            why,
        )),
        _ => {
            let mut reasons = decision.reasons.clone();
            reasons.push(why);
            let escalated = Decision {
                effect: Effect::Escalate,
                reasons,
                ..(**decision).clone()
            };
            Ok(Verdict {
                decision: Arc::new(escalated),
                escalate: true,
            })
        }
    }
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

    #[tokio::test]
    async fn uses_held_by_a_dropped_request_are_given_back() {
        use crate::policy::budget::{LocalBudgets, Take};
        let dir = tempfile::tempdir().unwrap();
        let local = Arc::new(LocalBudgets::open(&dir.path().join("b.db"), 0).unwrap());
        let counter: Arc<dyn Budgets> = local.clone();
        let b = Budget {
            key: vec!["k".into()],
            limit: 1,
            window: std::time::Duration::from_secs(60),
            over: Effect::Deny,
        };
        let Ok(Take::Taken { at, .. }) = local.take_now(&b, 1_000) else {
            panic!("not taken")
        };
        let mut spent = Charged::default();
        spent.counter = Some(counter.clone());
        spent.taken.push((b.key.clone(), at));
        spent.spend();
        drop(spent);
        tokio::task::yield_now().await;
        assert_eq!(
            local.usage_now(1_001, None)[0].used,
            1,
            "a spent use stays counted"
        );
        let Ok(Take::Exceeded { .. }) = local.take_now(&b, 1_002) else {
            panic!("over the limit of 1")
        };
        local.give_back_now(&b.key, at);
        let Ok(Take::Taken { at, .. }) = local.take_now(&b, 1_003) else {
            panic!("not taken")
        };
        let mut held = Charged::default();
        held.counter = Some(counter);
        held.taken.push((b.key.clone(), at));
        drop(held);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            local.usage_now(1_004, None).is_empty(),
            "the held use was given back"
        );
    }

    #[test]
    fn observe_mode_never_stops_a_request() {
        let d = Decision::deny("no", "h".into());
        assert!(escalates(&d, Mode::Enforce).is_err());
        assert!(matches!(escalates(&d, Mode::Observe), Ok(false)));
    }
}
