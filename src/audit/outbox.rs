//! Reading committed records for something that ships them elsewhere (the fleet's stream,
//! an OTLP collector), in order, from a saved position. The log is the outbox: shipping
//! never holds records in memory beyond one batch, and an outage only delays it. Progress
//! is a file in the state dir, `<log id> <seq>`; a file from another log starts over.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::params;

use super::Audit;
use crate::state::{StateDir, StateError, write_public};

/// One committed record as the outbox reads it.
#[derive(Debug, Clone)]
pub struct Row {
    pub seq: u64,
    /// Its chain link (hex).
    pub hash: String,
    /// Its canonical text.
    pub record: String,
    pub tenant: Option<String>,
}

/// A reader of one log from a saved position.
pub struct Outbox {
    audit: Arc<Audit>,
    progress: PathBuf,
    committed: tokio::sync::broadcast::Receiver<Arc<super::Committed>>,
    /// The last `seq` shipped.
    pub shipped: u64,
}

impl Outbox {
    /// The outbox of `audit`, from the position saved in `state`'s `progress_file`.
    pub fn open(audit: Arc<Audit>, state: &StateDir, progress_file: &str) -> Outbox {
        let progress = state.path(progress_file);
        let shipped = read_progress(&progress, audit.log_id());
        Outbox {
            committed: audit.subscribe(),
            audit,
            progress,
            shipped,
        }
    }

    /// The log's file.
    pub fn db_path(&self) -> PathBuf {
        self.audit.db_path().to_owned()
    }

    /// The archive directory of the log, when it has one.
    pub fn archive(&self) -> Option<PathBuf> {
        self.audit.archive().map(ToOwned::to_owned)
    }

    /// The log's id.
    pub fn log_id(&self) -> &str {
        self.audit.log_id()
    }

    /// Up to `limit` records after the last shipped; waits (a commit, or a second at most)
    /// while there are none.
    pub async fn next(&mut self, limit: usize) -> rusqlite::Result<Vec<Row>> {
        loop {
            let (db, after) = (self.audit.db_path().to_owned(), self.shipped);
            let archive = self.audit.archive().map(ToOwned::to_owned);
            let rows = tokio::task::spawn_blocking(move || {
                read_after(&db, archive.as_deref(), after, limit)
            })
            .await
            .unwrap_or_else(|e| Err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
            if !rows.is_empty() {
                return Ok(rows);
            }
            tokio::select! {
                _ = self.committed.recv() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Records that everything up to `seq` has been shipped.
    pub async fn shipped(&mut self, seq: u64) -> Result<(), StateError> {
        self.shipped = seq;
        let (path, line) = (self.progress.clone(), format!("{} {seq}\n", self.log_id()));
        tokio::task::spawn_blocking(move || write_public(&path, line.as_bytes()))
            .await
            .unwrap_or_else(|e| {
                Err(StateError::Io {
                    action: "write",
                    path: self.progress.clone(),
                    source: std::io::Error::other(e),
                })
            })
    }

    /// How many committed records are not shipped yet.
    pub fn behind(&self) -> u64 {
        self.audit.committed().saturating_sub(self.shipped)
    }
}

fn read_progress(path: &Path, log_id: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    match text.split_whitespace().collect::<Vec<_>>()[..] {
        [id, seq] if id == log_id => seq.parse().unwrap_or(0),
        // Another log (a new state dir's): ship this one from the start.
        _ => 0,
    }
}

fn read_after(
    db: &Path,
    archive: Option<&Path>,
    after: u64,
    limit: usize,
) -> rusqlite::Result<Vec<Row>> {
    // Across segments: a shipper that fell behind a seal reads the sealed file.
    let view = super::view::View::open(db, archive)?;
    view.page_after(after, limit, |part, left| {
        let mut stmt = part.conn.prepare_cached(
            "SELECT seq, hash, record, json_extract(record, '$.tenant') FROM records
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![part.lower.max(after) as i64, left as i64], |r| {
            Ok(Row {
                seq: r.get::<_, i64>(0)? as u64,
                hash: r.get(1)?,
                record: r.get(2)?,
                tenant: r.get(3)?,
            })
        })?;
        rows.collect()
    })
}
