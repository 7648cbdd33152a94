//! Each agent's last decision, noted by the writer as it commits them: the admin API's
//! "last seen" without a subscriber on the event stream, which would make the writer build an
//! event for every record and wake a task for every commit.

use std::collections::HashMap;
use std::sync::Mutex;

/// Most agents remembered (SPIFFE IDs from trusted bundles are not registered, so the set is
/// bounded here rather than by the registry).
const MAX_TRACKED: usize = 10_000;

/// When each agent (SPIFFE ID) last had a committed decision, in Unix seconds.
#[derive(Debug, Default)]
pub struct LastSeen(Mutex<HashMap<String, i64>>);

impl LastSeen {
    /// Notes that each of `agents` had a decision at `ts` (Unix seconds); an older `ts` than
    /// the one noted changes nothing.
    pub fn note<'a>(&self, agents: impl IntoIterator<Item = &'a str>, ts: i64) {
        let mut agents = agents.into_iter().peekable();
        if agents.peek().is_none() {
            return;
        }
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for agent in agents {
            if let Some(t) = map.get_mut(agent) {
                *t = (*t).max(ts);
            } else if map.len() < MAX_TRACKED {
                map.insert(agent.to_owned(), ts);
            }
        }
    }

    /// The agent's last decision, in Unix seconds.
    pub fn get(&self, agent: &str) -> Option<i64> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(agent).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_time_and_a_bounded_set() {
        let seen = LastSeen::default();
        seen.note(["a", "b"], 20);
        seen.note(["a"], 10);
        seen.note(std::iter::empty(), 30);
        assert_eq!(seen.get("a"), Some(20));
        assert_eq!(seen.get("b"), Some(20));
        let many: Vec<String> = (0..MAX_TRACKED + 5).map(|i| format!("x{i}")).collect();
        seen.note(many.iter().map(String::as_str), 40);
        seen.note(["a"], 50);
        assert_eq!(seen.get("a"), Some(50), "a known agent is still updated");
        assert_eq!(seen.get(&format!("x{}", MAX_TRACKED + 4)), None);
    }
}
