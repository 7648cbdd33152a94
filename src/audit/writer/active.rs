//! The writer's side of segments: when the active segment is due for sealing, and, once
//! the sealer has installed the sealed file, moving the active file's base past it and
//! deleting the copied rows. Both write to the active file, so both run on the writer's
//! thread, between group commits on its own connection: a request waits behind one small step at
//! most, never behind another connection's lock (SQLite's busy handler would sleep in
//! steps of up to 100 ms).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

use crate::audit::segment;

/// How long after a failed seal the writer tries again.
const SEAL_RETRY: Duration = Duration::from_secs(10);

/// Copied rows deleted per step (one step per group commit or tick): about a millisecond.
const TRIM_CHUNK: u64 = 500;

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
    /// Copied rows remain, from the first `seq` to the base (the second): deleted a chunk
    /// per step, each by its own bounded range.
    pub(crate) trim: Option<(u64, u64)>,
}

impl SegmentState {
    /// Whether the active segment is full or old enough, and no seal is under way.
    pub(crate) fn due(&self, now_us: i64) -> bool {
        let old = self.first_ts > 0
            && now_us.saturating_sub(self.first_ts) >= self.max_age.as_micros() as i64;
        self.bytes > 0
            && (self.bytes >= self.max_bytes || old)
            && self.sealing.load(Ordering::Acquire) == 0
            && self.retry_at.is_none_or(|t| Instant::now() >= t)
    }
}

impl SegmentState {
    /// The writer signed the seal's checkpoint at `seq`: the sealer takes it from here.
    pub(crate) fn sealed(&mut self, seq: u64) {
        self.bytes = 0;
        self.first_ts = 0;
        self.sealing.store(seq, Ordering::Release);
        let _ = self.wake.try_send(());
    }

    /// Signing the seal failed: try again later.
    pub(crate) fn seal_failed(&mut self, error: &dyn std::fmt::Display) {
        self.retry_at = Some(Instant::now() + SEAL_RETRY);
        tracing::error!(error = %error, "sealing the audit segment failed; retrying in 10 s");
    }

    /// One step after a commit when no seal is due: move the base once the sealer
    /// installed a file, or delete a chunk of copied rows.
    pub(crate) fn step(&mut self, conn: &Connection, log_id: &str) {
        let installed = self.installed.swap(0, Ordering::AcqRel);
        if installed > 0 {
            if let Err(e) = self.move_base(conn, log_id, installed) {
                // Tried again at the next step.
                self.installed.store(installed, Ordering::Release);
                tracing::warn!(error = %e, "moving the audit log's base past a sealed segment failed");
            }
            return;
        }
        if let Some((from, base)) = self.trim {
            let to = base.min(from.saturating_add(TRIM_CHUNK - 1));
            match trim_chunk(conn, from, to) {
                Ok(()) => self.trim = (to < base).then_some((to + 1, base)),
                Err(e) => tracing::debug!(error = %e, "deleting sealed rows skipped"),
            }
        }
    }

    /// The sealed file holding everything up to `upto` is installed: the active file's
    /// records now start after it, and no seal is under way.
    fn move_base(&mut self, conn: &Connection, log_id: &str, upto: u64) -> rusqlite::Result<()> {
        let tx = conn.unchecked_transaction()?;
        let (base, _) = segment::base(&tx, log_id)?;
        let trim = copied_rows(&tx, base.max(upto))?;
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
        self.sealing.store(0, Ordering::Release);
        self.trim = trim;
        Ok(())
    }
}

/// The copies of sealed rows left in the active file: from its first `seq` to `base`
/// (None: there are none).
pub(crate) fn copied_rows(conn: &Connection, base: u64) -> rusqlite::Result<Option<(u64, u64)>> {
    let first: Option<i64> = conn
        .prepare_cached("SELECT MIN(seq) FROM records")?
        .query_row([], |r| r.get(0))?;
    Ok(first
        .map(|first| first.max(1) as u64)
        .filter(|&first| base > 0 && first <= base)
        .map(|first| (first, base)))
}

/// Deletes the rows `from..=to`. Both ends are bound: the same chunk bounded only above
/// (`seq <= base`, the first rows) took five times as long.
fn trim_chunk(conn: &Connection, from: u64, to: u64) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM records WHERE seq >= ?1 AND seq <= ?2")?
        .execute(params![from as i64, to as i64])
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state that never seals, trimming what `copied_rows` finds below `base`.
    fn state(conn: &Connection, base: u64) -> SegmentState {
        let (wake, _) = std::sync::mpsc::sync_channel(1);
        SegmentState {
            max_bytes: u64::MAX,
            max_age: Duration::MAX,
            bytes: 0,
            first_ts: 0,
            sealing: Arc::default(),
            installed: Arc::default(),
            wake,
            retry_at: None,
            trim: copied_rows(conn, base).unwrap(),
        }
    }

    fn seqs(conn: &Connection) -> (i64, i64, i64) {
        conn.query_row(
            "SELECT MIN(seq), MAX(seq), COUNT(*) FROM records",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap()
    }

    #[test]
    fn trimming_deletes_exactly_the_copied_rows_a_chunk_per_step() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(crate::audit::store::SCHEMA).unwrap();
        // A crash after an earlier trim left rows 301..=2500; the base is 1800.
        for seq in 301..=2500 {
            conn.execute("INSERT INTO records VALUES (?1, '{}', 'h')", [seq])
                .unwrap();
        }
        let mut segment = state(&conn, 1800);
        assert_eq!(segment.trim, Some((301, 1800)));
        let mut steps = 0;
        while segment.trim.is_some() {
            segment.step(&conn, "log");
            steps += 1;
            assert!(steps <= 3, "1500 rows take three steps of {TRIM_CHUNK}");
            // Every step leaves a contiguous log whose last row is untouched.
            let (first, last, count) = seqs(&conn);
            assert_eq!((last, count), (2500, last - first + 1));
        }
        assert_eq!(seqs(&conn), (1801, 2500, 700));
        // Nothing is left to trim, and nothing at all when the file starts after the base.
        assert_eq!(copied_rows(&conn, 1800).unwrap(), None);
        assert_eq!(state(&conn, 0).trim, None);
    }
}
