//! `[audit]`: where the log lives, how hard a commit tries to survive, how the writer batches
//! and when it signs checkpoints.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::StateDir;

/// How hard a commit tries to survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// `synchronous=FULL`: a committed record survives power loss.
    Fsync,
    /// `synchronous=NORMAL`: survives the process being killed, not the machine.
    Commit,
}

/// `[audit]` configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// "fsync" (default) or "commit".
    pub durability: Durability,
    /// Database file; empty means `audit.db` in the state dir.
    pub path: PathBuf,
    /// Records waiting for the writer; beyond it requests wait (up to `commit_timeout`).
    pub queue: usize,
    /// Most records in one group commit.
    pub batch_max: usize,
    /// Longest a request waits for its record to be durable before it is refused 503.
    #[serde(with = "humantime_serde")]
    pub commit_timeout: Duration,
    /// A signed checkpoint after this many records…
    pub checkpoint_every: u64,
    /// …or this much time with new records, and at shutdown.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
}

impl AuditConfig {
    /// The database file: `path`, or `audit.db` in the state dir.
    pub fn db_path(&self, state: &StateDir) -> PathBuf {
        if self.path.as_os_str().is_empty() {
            state.path("audit.db")
        } else {
            self.path.clone()
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Fsync,
            path: PathBuf::new(),
            queue: 65_536,
            batch_max: 512,
            commit_timeout: Duration::from_secs(2),
            checkpoint_every: 10_000,
            checkpoint_interval: Duration::from_secs(60),
        }
    }
}
