//! Why a record could not be written.

use std::path::PathBuf;
use std::time::Duration;

/// Why a record could not be written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open audit log {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("audit log commit failed: {0}")]
    Commit(String),
    #[error("audit log did not commit within {0:?} (writer overloaded or disk stalled)")]
    Timeout(Duration),
    #[error("audit log is closed")]
    Closed,
}
