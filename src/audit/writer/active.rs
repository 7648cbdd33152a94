//! The writer's side of segments: when the active segment is due for sealing, and, once
//! the sealer has installed the sealed file, moving the active file's base past it and
//! deleting the copied rows. Both write to the active file, so both run here, between
//! group commits on the writer's own connection: a request waits behind one small step at
//! most, never behind another connection's lock (SQLite's busy handler would sleep in
//! steps of up to 100 ms).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::params;

use super::Writer;
use crate::audit::segment;
use crate::clock::now_micros;

/// How long after a failed seal the writer tries again.
const SEAL_RETRY: Duration = Duration::from_secs(10);

/// Copied rows deleted per step (one step per group commit or tick).
const TRIM_CHUNK: i64 = 1000;

/// The active segment as the writer sees it: when to seal it, and the sealer it hands to.
#[derive(Debug)]
pub(crate) struct SegmentState {
    pub(crate) max_bytes: u64,
    pub(crate) max_age: Duration,
    /// Bytes of the records appended since the last seal (text and hash).
    pub(crate) bytes: u64,
    /// `ts` of the first of them (0: none yet).
    pub(crate) first_ts: i64,
    /// The last `seq` of a segment being sealed, 0 when none (shared with the sealer).
    pub(crate) sealing: Arc<AtomicU64>,
    /// Set by the sealer once the sealed file up to this `seq` is installed (0: nothing).
    pub(crate) installed: Arc<AtomicU64>,
    /// Wakes the sealer.
    pub(crate) wake: std::sync::mpsc::SyncSender<()>,
    /// After a failed seal, not before this.
    pub(crate) retry_at: Option<Instant>,
    /// Rows at or below the base may remain: delete them, a chunk per step.
    pub(crate) trimming: bool,
}

impl SegmentState {
    /// Whether the active segment is full or old enough, and no seal is under way.
    fn due(&self, now_us: i64) -> bool {
        let old = self.first_ts > 0
            && now_us.saturating_sub(self.first_ts) >= self.max_age.as_micros() as i64;
        self.bytes > 0
            && (self.bytes >= self.max_bytes || old)
            && self.sealing.load(Ordering::Acquire) == 0
            && self.retry_at.is_none_or(|t| Instant::now() >= t)
    }
}

impl Writer {
    /// One step of segment work after a commit: seal when due, move the base once the
    /// sealer installed a file, or delete a chunk of copied rows.
    pub(super) fn segment_housekeeping(&mut self) {
        if self.segment.due(now_micros()) {
            match self.checkpoint(true) {
                Ok(_) => {
                    self.segment.bytes = 0;
                    self.segment.first_ts = 0;
                    self.segment.sealing.store(self.seq, Ordering::Release);
                    let _ = self.segment.wake.try_send(());
                }
                Err(e) => {
                    self.segment.retry_at = Some(Instant::now() + SEAL_RETRY);
                    tracing::error!(error = %e, "sealing the audit segment failed; retrying in 10 s");
                }
            }
            return;
        }
        let installed = self.segment.installed.swap(0, Ordering::AcqRel);
        if installed > 0 {
            if let Err(e) = self.move_base(installed) {
                // Tried again at the next step.
                self.segment.installed.store(installed, Ordering::Release);
                tracing::warn!(error = %e, "moving the audit log's base past a sealed segment failed");
            }
            return;
        }
        if self.segment.trimming {
            match self.trim_chunk() {
                Ok(done) => self.segment.trimming = !done,
                Err(e) => tracing::debug!(error = %e, "deleting sealed rows skipped"),
            }
        }
    }

    /// The sealed file holding everything up to `upto` is installed: this file's records
    /// now start after it, and no seal is under way.
    fn move_base(&mut self, upto: u64) -> rusqlite::Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        let (base, _) = segment::base(&tx, &self.log_id)?;
        if upto > base {
            let hash: String = tx.query_row(
                "SELECT hash FROM records WHERE seq = ?1",
                [upto as i64],
                |r| r.get(0),
            )?;
            segment::set_meta(&tx, segment::BASE_SEQ, &upto.to_string())?;
            segment::set_meta(&tx, segment::BASE_HASH, &hash)?;
            // The seal's own checkpoint stays: it vouches for where this file starts.
            tx.execute("DELETE FROM checkpoints WHERE size < ?1", [upto as i64])?;
        }
        tx.execute("DELETE FROM meta WHERE key = ?1", [segment::SEALING])?;
        tx.commit()?;
        self.segment.sealing.store(0, Ordering::Release);
        self.segment.trimming = true;
        Ok(())
    }

    /// Deletes up to `TRIM_CHUNK` rows at or below the base; true when none are left.
    fn trim_chunk(&mut self) -> rusqlite::Result<bool> {
        let (base, _) = segment::base(&self.conn, &self.log_id)?;
        let n = self
            .conn
            .prepare_cached(
                "DELETE FROM records WHERE seq <= ?1 AND seq <= (SELECT MIN(seq) FROM records) + ?2",
            )?
            .execute(params![base as i64, TRIM_CHUNK - 1])?;
        Ok(n == 0)
    }
}
