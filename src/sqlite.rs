//! One way to open AgentGate's SQLite databases (audit log, agent registry, vault, consents):
//! created private (0600) before SQLite touches them, so the `-wal`/`-shm` files copy the
//! mode; write-ahead logging, so readers (the admin API, the CLI) never block the writer;
//! a busy timeout for the moments another process holds the lock.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::state::{StateError, write_private};

/// How long a statement waits for another connection's lock before failing.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How hard a commit waits for the disk (SQLite's `synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is on disk before it returns (`FULL`).
    Full,
    /// Commits survive a process crash; the last ones may not survive a power loss
    /// (`NORMAL`).
    Normal,
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Create(#[from] StateError),
    #[error("{0}")]
    Db(#[from] rusqlite::Error),
}

/// Opens (creating it 0600 if missing) the database at `path`, in WAL mode.
pub fn open(path: &Path, durability: Durability) -> Result<Connection, OpenError> {
    if !path.exists() {
        write_private(path, b"")?;
    }
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn creates_a_private_wal_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let conn = open(&path, Durability::Full).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let perms = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(perms & 0o777, 0o600);
    }
}
