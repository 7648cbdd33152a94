//! Open tunnels by agent, so PANIC can close every connection of an agent at once.
//! Touched once per tunnel (open and close), never per request.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The open tunnels.
#[derive(Default)]
pub struct Sessions {
    next: AtomicU64,
    open: Mutex<HashMap<u64, (String, Arc<Notify>)>>,
}

/// One open tunnel; closing it (drop) removes it from [`Sessions`].
pub struct Session {
    id: u64,
    sessions: Arc<Sessions>,
    /// Notified when the tunnel must close now.
    pub killed: Arc<Notify>,
}

impl Sessions {
    /// Registers a tunnel of `agent` (SPIFFE ID).
    pub fn open(self: &Arc<Self>, agent: &str) -> Session {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let killed = Arc::new(Notify::new());
        self.lock().insert(id, (agent.to_owned(), killed.clone()));
        Session {
            id,
            sessions: self.clone(),
            killed,
        }
    }

    /// Closes every tunnel of `agents` (all when `None`); returns how many.
    pub fn kill(&self, agents: Option<&HashSet<String>>) -> usize {
        let open = self.lock();
        let mut n = 0;
        for (agent, killed) in open.values() {
            if agents.is_none_or(|a| a.contains(agent)) {
                // A stored permit: the tunnel sees it even if it is not waiting yet.
                killed.notify_one();
                n += 1;
            }
        }
        n
    }

    /// SPIFFE IDs with a tunnel open.
    pub fn agents(&self) -> HashSet<String> {
        self.lock().values().map(|(a, _)| a.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (String, Arc<Notify>)>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kills_only_the_named_agents_tunnels() {
        let sessions = Arc::new(Sessions::default());
        let a = sessions.open("spiffe://td/agent/a");
        let b = sessions.open("spiffe://td/agent/b");
        let set = HashSet::from(["spiffe://td/agent/a".to_owned()]);
        assert_eq!(sessions.kill(Some(&set)), 1);
        // The permit was stored before anyone waited.
        tokio::time::timeout(std::time::Duration::from_secs(1), a.killed.notified())
            .await
            .unwrap_or_else(|_| unreachable!("tunnel a was not told to close"));
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), b.killed.notified())
                .await
                .is_err()
        );
        drop(a);
        assert_eq!(sessions.agents().len(), 1);
    }
}
