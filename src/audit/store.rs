//! The SQLite side: the schema, opening the log, its head, and the WAL checkpoints that run
//! beside the writer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::chain::{self, Hash};
use super::checkpoint::JSONL_FILE;
use super::config::Durability;
use super::error::AuditError;
use crate::sqlite;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    record TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY,
    signed TEXT NOT NULL
);
";

/// Opens a log database with the pragmas for `durability`, creating the schema and log id.
pub fn open(path: &Path, durability: Durability) -> Result<(Connection, String), AuditError> {
    let err = |e: rusqlite::Error| AuditError::Open {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let sync = match durability {
        Durability::Fsync => sqlite::Durability::Full,
        Durability::Commit => sqlite::Durability::Normal,
    };
    let conn = sqlite::open(path, sync).map_err(|e| AuditError::Open {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    // Checkpoints of the WAL run on their own thread, never in a request's commit.
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(err)?;
    conn.execute_batch(SCHEMA).map_err(err)?;
    let log_id: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'log_id'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(err)?;
    let log_id = match log_id {
        Some(id) => id,
        None => {
            let id = format!("{:032x}", rand::random::<u128>());
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('log_id', ?1)",
                params![id],
            )
            .map_err(err)?;
            id
        }
    };
    Ok((conn, log_id))
}

/// The last record: its seq and hash (the base when empty: genesis for a new log).
pub fn head(conn: &Connection, log_id: &str) -> Result<(u64, Hash), rusqlite::Error> {
    let last: Option<(i64, String)> = conn
        .query_row(
            "SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match last {
        Some((seq, hash)) => (seq as u64, chain::parse_hash(&hash).unwrap_or([0; 32])),
        // Empty: every record went to sealed segments; the chain goes on from the last.
        None => super::segment::base(conn, log_id)?,
    })
}

/// A record as committed, for live subscribers.
#[derive(Debug)]
pub struct Committed {
    pub seq: u64,
    /// Hex chain hash.
    pub hash: String,
    /// The canonical JSON text that was hashed.
    pub record: String,
    /// The record's tenant, for per-tenant streams.
    pub tenant: Option<Arc<str>>,
    /// Unix microseconds.
    pub ts: i64,
}

/// Appends one line and syncs it, so a shipped checkpoint is never half-written.
pub(crate) fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o644)
        .open(path)?;
    // A torn earlier write (power loss mid-line) must not swallow this checkpoint.
    let mut torn = false;
    if f.metadata()?.len() > 0 {
        let mut last = [0u8; 1];
        f.seek(SeekFrom::End(-1))?;
        f.read_exact(&mut last)?;
        torn = last[0] != b'\n';
    }
    let text = if torn {
        format!("\n{line}\n")
    } else {
        format!("{line}\n")
    };
    f.write_all(text.as_bytes())?;
    f.sync_data()
}

/// Runs passive WAL checkpoints off the request path until the log is closed.
pub(crate) fn wal_checkpointer(path: PathBuf, stop: Arc<std::sync::atomic::AtomicBool>) {
    let Ok(conn) = Connection::open(&path) else {
        return;
    };
    let _ = conn.busy_timeout(Duration::from_millis(100));
    let mut slept = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        // Short naps so close() never waits long for this thread.
        std::thread::sleep(Duration::from_millis(50));
        slept += Duration::from_millis(50);
        if slept < Duration::from_millis(500) {
            continue;
        }
        slept = Duration::ZERO;
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "WAL checkpoint skipped");
        }
    }
}

/// The default jsonl path next to the database.
pub fn jsonl_path(state_dir: &Path) -> PathBuf {
    state_dir.join(JSONL_FILE)
}
