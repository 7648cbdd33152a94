//! The SQLite side: schema, and the single writer thread that turns a bounded queue of
//! records into group commits (one transaction, one fsync, many records), signs
//! checkpoints, and tells each waiting request when its record is durable.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::chain::{self, Hash};
use super::checkpoint::{Checkpoint, JSONL_FILE, Signed, Signer};
use super::config::Durability;
use super::error::AuditError;
use super::record::Record;
use crate::clock::now_micros;
use crate::sqlite;

/// After this many records the writer checkpoints the WAL tail itself (see `run`).
const WAL_TAIL_EVERY: u64 = 4096;

/// Longest an unawaited record (an outcome) waits for a commit to join.
pub(crate) const OUTCOME_DELAY: Duration = Duration::from_millis(20);

/// A record waiting for its commit, and who to tell.
type Pending = (Record, Option<oneshot::Sender<Result<u64, AuditError>>>);

/// One unit of work for the writer.
#[derive(Debug)]
pub(crate) enum Job {
    Append {
        record: Record,
        done: Option<oneshot::Sender<Result<u64, AuditError>>>,
    },
    /// Periodic wake-up: time-based checkpoints.
    Tick,
    /// Final checkpoint; answered when written.
    Close(oneshot::Sender<()>),
}

const SCHEMA: &str = "
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

/// The last record: its seq and hash (genesis when empty).
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
        None => (0, chain::genesis(log_id)),
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
    /// For a decision record: the agent (SPIFFE ID) it was about.
    pub decided_by: Option<Arc<str>>,
    /// Unix microseconds.
    pub ts: i64,
}

/// What the writer thread owns.
pub(crate) struct Writer {
    pub conn: Connection,
    pub log_id: String,
    /// This process's instance id, in every record it writes.
    pub instance: String,
    pub jsonl: PathBuf,
    pub signer: Signer,
    pub seq: u64,
    pub head: Hash,
    pub batch_max: usize,
    pub checkpoint_every: u64,
    pub checkpoint_interval: Duration,
    pub last_checkpoint: (u64, Instant),
    /// Shared with the handle for `/metrics`-style reporting and tests.
    pub committed: Arc<AtomicU64>,
    /// Committed records for live subscribers (the admin event stream).
    pub events: tokio::sync::broadcast::Sender<Arc<Committed>>,
}

impl Writer {
    /// Runs until every sender is gone or `Close` arrives.
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(self.batch_max);
        let mut pending_since: Option<Instant> = None;
        let mut since_tail: u64 = 0;
        while let Some(first) = rx.blocking_recv() {
            let mut close = None;
            match first {
                Job::Append { record, done } => batch.push((record, done)),
                Job::Tick => {}
                Job::Close(reply) => close = Some(reply),
            }
            while batch.len() < self.batch_max && close.is_none() {
                match rx.try_recv() {
                    Ok(Job::Append { record, done }) => batch.push((record, done)),
                    Ok(Job::Tick) => {}
                    Ok(Job::Close(reply)) => close = Some(reply),
                    Err(_) => break,
                }
            }
            // Records nobody waits for (outcomes) ride along with the next commit that
            // someone does wait for, instead of paying a sync of their own; a tick flushes
            // them within OUTCOME_DELAY when no such commit comes.
            if batch.is_empty() {
                pending_since = None;
            } else {
                let since = *pending_since.get_or_insert_with(Instant::now);
                let urgent = close.is_some()
                    || batch.len() >= self.batch_max
                    || batch.iter().any(|(_, done)| done.is_some())
                    || since.elapsed() >= OUTCOME_DELAY;
                if urgent {
                    let n = batch.len() as u64;
                    self.commit(&mut batch);
                    pending_since = None;
                    // The WAL thread copies frames into the database, but under steady
                    // writes it never catches the last ones, and the WAL only rewinds
                    // once every frame is copied: it would grow without bound. Now and
                    // then the writer copies the small remaining tail itself, so the
                    // next commit starts the WAL over.
                    since_tail += n;
                    if since_tail >= WAL_TAIL_EVERY {
                        since_tail = 0;
                        if let Err(e) =
                            self.conn
                                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                        {
                            tracing::debug!(error = %e, "WAL tail checkpoint skipped");
                        }
                    }
                }
            }
            let due = self.seq > self.last_checkpoint.0
                && (self.seq - self.last_checkpoint.0 >= self.checkpoint_every
                    || self.last_checkpoint.1.elapsed() >= self.checkpoint_interval
                    || close.is_some());
            if due {
                if let Err(e) = self.checkpoint() {
                    tracing::error!(error = %e, "audit checkpoint failed");
                }
            }
            if let Some(reply) = close {
                // Fold the WAL into audit.db so the file alone holds every record.
                if let Err(e) = self
                    .conn
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                {
                    tracing::warn!(error = %e, "final WAL checkpoint of the audit log failed");
                }
                drop(self.conn);
                let _ = reply.send(());
                return;
            }
        }
    }

    /// Appends a batch in one transaction; on failure nothing of it is kept.
    fn commit(&mut self, batch: &mut Vec<Pending>) {
        let start_seq = self.seq;
        let start_head = self.head;
        let mut published = Vec::new();
        let result = (|| -> Result<(), rusqlite::Error> {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            // Another writer (the CLI while no proxy ran, or a second instance on the same
            // file) may have appended: chain onto what is really there.
            let (seq, head) = head(&tx, &self.log_id)?;
            if seq != self.seq {
                tracing::warn!(
                    ours = self.seq,
                    found = seq,
                    "audit log was appended by another writer; continuing its chain"
                );
                self.seq = seq;
                self.head = head;
            }
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO records (seq, record, hash) VALUES (?1, ?2, ?3)",
                )?;
                let ts = now_micros();
                let live = self.events.receiver_count() > 0;
                for (record, _) in batch.iter() {
                    self.seq += 1;
                    let (tenant, agent) = match live {
                        false => (None, None),
                        true => (
                            record.tenant().map(Arc::from),
                            record.decided_by().map(Arc::from),
                        ),
                    };
                    // Cannot fail for these types (string keys only); if it ever did, the
                    // batch fails like a failed write: nothing is forwarded unlogged.
                    let text = record
                        .seal(&self.instance, self.seq, ts)
                        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                    self.head = chain::link(&self.head, text.as_bytes());
                    let hash = chain::hex(&self.head);
                    stmt.execute(params![self.seq as i64, text, hash])?;
                    if live {
                        published.push(Arc::new(Committed {
                            seq: self.seq,
                            hash,
                            record: text,
                            tenant,
                            decided_by: agent,
                            ts,
                        }));
                    }
                }
            }
            tx.commit()
        })();
        match result {
            Ok(()) => {
                self.committed.store(self.seq, Ordering::Release);
                for event in published {
                    // No subscriber left is fine: the stream is best effort, the log is not.
                    let _ = self.events.send(event);
                }
                let mut seq = self.seq - batch.len() as u64;
                for (_, done) in batch.drain(..) {
                    seq += 1;
                    if let Some(done) = done {
                        let _ = done.send(Ok(seq));
                    }
                }
            }
            Err(e) => {
                self.seq = start_seq;
                self.head = start_head;
                tracing::error!(error = %e, records = batch.len(), "audit commit failed; requests waiting on it are refused");
                let reason = e.to_string();
                for (_, done) in batch.drain(..) {
                    if let Some(done) = done {
                        let _ = done.send(Err(AuditError::Commit(reason.clone())));
                    }
                }
            }
        }
    }

    /// Signs the current head, stores it in the log and appends it to `checkpoints.jsonl`.
    fn checkpoint(&mut self) -> Result<Signed, AuditError> {
        let signed = self.signer.sign(Checkpoint {
            log_id: self.log_id.clone(),
            size: self.seq,
            head: chain::hex(&self.head),
            time: now_micros(),
        });
        let line = serde_json::to_string(&signed).unwrap_or_default();
        self.conn
            .execute(
                "INSERT OR REPLACE INTO checkpoints (size, signed) VALUES (?1, ?2)",
                params![self.seq as i64, line],
            )
            .map_err(|e| AuditError::Commit(e.to_string()))?;
        append_line(&self.jsonl, &line)
            .map_err(|e| AuditError::Commit(format!("{}: {e}", self.jsonl.display())))?;
        self.last_checkpoint = (self.seq, Instant::now());
        Ok(signed)
    }
}

/// Appends one line and syncs it, so a shipped checkpoint is never half-written.
fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
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
