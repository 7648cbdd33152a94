//! Shadow policies: a candidate evaluated beside the active policy on every request, never
//! deciding. What it would have done differently goes in the decision record; every
//! comparison is counted for `/metrics`.

use std::sync::Arc;

use super::decision::{Decision, Effect};
pub use crate::metrics::ShadowStats;

/// An effect's index in [`ShadowStats`] (the order of [`crate::metrics::EFFECTS`]).
fn slot(e: Effect) -> usize {
    match e {
        Effect::Allow => 0,
        Effect::Escalate => 1,
        Effect::Deny => 2,
    }
}

/// Counts one comparison in `stats`; returns the shadow's decision when its effect differs
/// (the only case the record carries it).
pub fn compare(
    stats: &ShadowStats,
    active: &Decision,
    shadow: Arc<Decision>,
) -> Option<Arc<Decision>> {
    stats.count(slot(active.effect), slot(shadow.effect));
    (active.effect != shadow.effect).then_some(shadow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_different_effect_is_kept() {
        let stats = ShadowStats::default();
        let allow = Decision {
            effect: Effect::Allow,
            ..Decision::deny("x", "h".into())
        };
        let deny = Arc::new(Decision::deny("no", "s".into()));
        assert!(compare(&stats, &allow, deny.clone()).is_some());
        assert!(compare(&stats, &deny, deny.clone()).is_none());
        let snap = stats.snapshot();
        assert!(snap.contains(&("allow", "deny", 1)));
        assert!(snap.contains(&("deny", "deny", 1)));
        assert_eq!(snap.iter().map(|(_, _, n)| n).sum::<u64>(), 2);
    }
}
