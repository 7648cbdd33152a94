//! Shadow policies: a candidate evaluated beside the active policy on every request, never
//! deciding. What it would have done differently goes in the decision record; every
//! comparison is counted for `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::decision::{Decision, Effect};

/// Comparisons of the active policy with its shadow: `counts[active][shadow]`.
#[derive(Debug, Default)]
pub struct ShadowStats {
    counts: [[AtomicU64; 3]; 3],
}

/// An effect's index in [`ShadowStats`].
fn slot(e: Effect) -> usize {
    match e {
        Effect::Allow => 0,
        Effect::Escalate => 1,
        Effect::Deny => 2,
    }
}

impl ShadowStats {
    /// Counts one comparison; returns the shadow's decision when its effect differs (the
    /// only case the record carries it).
    pub fn compare(&self, active: &Decision, shadow: Arc<Decision>) -> Option<Arc<Decision>> {
        self.counts[slot(active.effect)][slot(shadow.effect)].fetch_add(1, Relaxed);
        (active.effect != shadow.effect).then_some(shadow)
    }

    /// Every (active, shadow, count), agreements included.
    pub fn snapshot(&self) -> Vec<(Effect, Effect, u64)> {
        let effects = [Effect::Allow, Effect::Escalate, Effect::Deny];
        let mut out = Vec::with_capacity(9);
        for a in effects {
            for s in effects {
                out.push((a, s, self.counts[slot(a)][slot(s)].load(Relaxed)));
            }
        }
        out
    }
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
        assert!(stats.compare(&allow, deny.clone()).is_some());
        assert!(stats.compare(&deny, deny.clone()).is_none());
        let snap = stats.snapshot();
        assert!(snap.contains(&(Effect::Allow, Effect::Deny, 1)));
        assert!(snap.contains(&(Effect::Deny, Effect::Deny, 1)));
        assert_eq!(snap.iter().map(|(_, _, n)| n).sum::<u64>(), 2);
    }
}
