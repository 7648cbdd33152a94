//! The single writer thread: turns the queue of records into group commits (one
//! transaction, one sync, many records), tells each waiting request when its record is
//! durable, and signs checkpoints. Under `commit` durability a lone request may instead
//! lead its own commit on its thread (`lead`); both go through the same `Writer`.
//!
//! Two queues feed it. Records a request waits for (decisions, admin events) come through
//! `Job`s, and the first of them wakes the writer. Records nobody waits for (outcomes) go
//! into a queue the writer only drains: they never wake it, they ride along with the next
//! commit someone waits for, and the tick flushes them within `UNAWAITED_DELAY` when none
//! comes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

use super::activity::LastSeen;
use super::chain::{self, Hash};
use super::checkpoint::{Checkpoint, Signed, Signer};
use super::error::AuditError;
use super::record::Record;
use super::segment;

mod active;
use super::store::{self, Committed};
use crate::clock::now_micros;
pub(crate) use active::{SegmentState, copied_rows};

/// After this many records the writer checkpoints the WAL tail itself (see `housekeeping`).
const WAL_TAIL_EVERY: u64 = 4096;

/// Longest an unawaited record (an outcome) waits for a commit to join: the tick's period.
pub(crate) const UNAWAITED_DELAY: Duration = Duration::from_millis(10);

/// Who waits for a record: told its `seq`, or why it failed.
pub(crate) type Waiter = oneshot::Sender<Result<u64, AuditError>>;

/// A record waiting for its commit, and who to tell.
type Pending = (Record, Option<Waiter>);

/// One unit of work for the writer.
#[derive(Debug)]
pub(crate) enum Job {
    /// A record someone waits for.
    Append { record: Record, done: Waiter },
    /// Periodic wake-up: unawaited records, time-based checkpoints.
    Tick,
    /// Final checkpoint; answered when written.
    Close(oneshot::Sender<()>),
}

/// What the writer thread owns.
pub(crate) struct Writer {
    pub(crate) conn: Connection,
    pub(crate) log_id: String,
    /// This process's instance id, in every record it writes.
    pub(crate) instance: String,
    pub(crate) jsonl: PathBuf,
    pub(crate) signer: Signer,
    /// The last record committed.
    pub(crate) seq: u64,
    pub(crate) head: Hash,
    /// SQLite's `data_version` when `seq`/`head` were last known to match the file; it
    /// changes only when another connection commits (None: not read yet).
    pub(crate) data_version: Option<i64>,
    pub(crate) batch_max: usize,
    /// After a commit of two or more requests, how long the next batch gathers.
    pub(crate) group_commit_wait: Duration,
    pub(crate) checkpoint_every: u64,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) last_checkpoint: (u64, Instant),
    /// Records nobody waits for; drained, never waited on.
    pub(crate) unawaited: mpsc::Receiver<Record>,
    /// Committed records for live subscribers (the admin event stream).
    pub(crate) events: tokio::sync::broadcast::Sender<Arc<Committed>>,
    /// Each agent's last committed decision, for the admin API.
    pub(crate) last_seen: Arc<LastSeen>,
    /// Shared with the handle for `/metrics`-style reporting and tests.
    pub(crate) committed: Arc<AtomicU64>,
    /// Records committed since the writer last copied the WAL's tail.
    pub(crate) since_tail: u64,
    /// Set by the final commit: nothing is appended after it.
    pub(crate) closed: bool,
    /// When the active segment is sealed, and what it holds so far.
    pub(crate) segment: SegmentState,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("seq", &self.seq)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// The writer, shared by its thread and, under `commit` durability, by a request that finds
/// no commit under way and leads its own.
pub(crate) type Shared = Arc<Mutex<Writer>>;

/// Locks the writer; a panic while it was held left nothing half-done in SQLite (the
/// transaction rolls back), so the lock is taken over.
fn lock(shared: &Shared) -> MutexGuard<'_, Writer> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The writer thread: runs until every sender is gone or `Close` arrives.
pub(crate) fn run(shared: Shared, mut rx: mpsc::Receiver<Job>) {
    let (batch_max, group_commit_wait) = {
        let w = lock(&shared);
        (w.batch_max, w.group_commit_wait)
    };
    let mut batch = Vec::with_capacity(batch_max);
    let mut gather = Duration::ZERO;
    loop {
        // Requests overlapped in the last commit: let the next batch gather instead of
        // paying a sync (and a round of wake-ups) for each few. Requests queue meanwhile
        // without waking this thread; a request that comes after the wait pays nothing.
        if !gather.is_zero() {
            std::thread::sleep(gather);
        }
        let Some(first) = rx.blocking_recv() else {
            return;
        };
        let mut w = lock(&shared);
        let mut close = None;
        let mut tick = false;
        // Unawaited records come first: they were mostly submitted before the record that
        // woke the writer.
        w.take_unawaited(&mut batch, batch_max.saturating_sub(1));
        let mut job = Some(first);
        while let Some(next) = job.take() {
            match next {
                Job::Append { record, done } => batch.push((record, Some(done))),
                Job::Tick => tick = true,
                Job::Close(reply) => close = Some(reply),
            }
            if batch.len() < batch_max && close.is_none() {
                job = rx.try_recv().ok();
            }
        }
        // Unawaited records join a commit that happens anyway; a tick or the close commits
        // them on their own. Those beyond `batch_max` wait for the next one.
        w.take_unawaited(&mut batch, batch_max);
        let waiters = batch.iter().filter(|(_, done)| done.is_some()).count();
        let urgent = tick || close.is_some() || waiters > 0;
        gather = if urgent && !batch.is_empty() {
            w.commit(&mut batch);
            gather_after(group_commit_wait, waiters)
        } else {
            Duration::ZERO
        };
        if close.is_some() {
            // Unawaited records beyond that batch go in too, before the final checkpoint:
            // none is lost at a clean shutdown.
            for _ in 0..=w.unawaited.len() / batch_max {
                w.take_unawaited(&mut batch, batch_max);
                if batch.is_empty() {
                    break;
                }
                w.commit(&mut batch);
            }
        }
        w.housekeeping(close.is_some());
        if let Some(reply) = close {
            // Fold the WAL into audit.db so the file alone holds every record.
            if let Err(e) = w
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            {
                tracing::warn!(error = %e, "final WAL checkpoint of the audit log failed");
            }
            w.closed = true;
            drop(w);
            let _ = reply.send(());
            return;
        }
    }
}

/// How long the next batch gathers after a commit of `waiters` waiting requests: a lone
/// request never waits for company.
fn gather_after(group_commit_wait: Duration, waiters: usize) -> Duration {
    if waiters < 2 {
        Duration::ZERO
    } else {
        group_commit_wait
    }
}

/// What a request that tried to lead its own commit got.
pub(crate) enum Led {
    /// Committed (or refused) on the caller's thread. Checkpoints stay with the writer
    /// thread, whose tick finds them due.
    Done(Result<u64, AuditError>),
    /// A commit was under way: the record goes through the queue.
    Busy(Record),
}

/// Commits `record` on the caller's thread if no commit is under way, with the unawaited
/// records queued before it. Under `commit` durability a commit is a few WAL writes and no
/// sync, cheaper than the two thread wake-ups of a trip through the writer thread.
pub(crate) fn lead(shared: &Shared, record: Record) -> Led {
    let mut w = match shared.try_lock() {
        Ok(w) => w,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => return Led::Busy(record),
    };
    if w.closed {
        return Led::Done(Err(AuditError::Closed));
    }
    // Another process holding the file's write lock (the CLI appending an event) must not
    // make SQLite's busy handler sleep on an async worker: the leader takes the lock
    // without waiting, and if it cannot, the writer thread does the waiting.
    let _ = w.conn.busy_timeout(Duration::ZERO);
    let began = w
        .conn
        .prepare_cached("BEGIN IMMEDIATE")
        .and_then(|mut begin| begin.execute([]));
    let _ = w.conn.busy_timeout(crate::sqlite::BUSY_TIMEOUT);
    if began.is_err() {
        return Led::Busy(record);
    }
    let mut batch = Vec::with_capacity(4);
    let up_to = w.batch_max.saturating_sub(1);
    w.take_unawaited(&mut batch, up_to);
    let (done, mut answer) = oneshot::channel();
    batch.push((record, Some(done)));
    w.commit(&mut batch);
    drop(w);
    Led::Done(answer.try_recv().unwrap_or(Err(AuditError::Closed)))
}

impl Writer {
    /// After commits: copies the WAL's tail now and then, signs a checkpoint when due.
    fn housekeeping(&mut self, closing: bool) {
        // The WAL thread copies frames into the database, but under steady writes it never
        // catches the last ones, and the WAL only rewinds once every frame is copied: it
        // would grow without bound. Now and then the writer copies the small remaining
        // tail itself, so the next commit starts the WAL over.
        if self.since_tail >= WAL_TAIL_EVERY {
            self.since_tail = 0;
            if let Err(e) = self
                .conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            {
                tracing::debug!(error = %e, "WAL tail checkpoint skipped");
            }
        }
        if !closing {
            // One step of segment work: sign a seal when due, else move the base or trim.
            if self.segment.due(now_micros()) {
                match self.checkpoint(true) {
                    Ok(_) => self.segment.sealed(self.seq),
                    Err(e) => self.segment.seal_failed(&e),
                }
            } else {
                self.segment.step(&self.conn, &self.log_id);
            }
        }
        if self.checkpoint_due() || (closing && self.seq > self.last_checkpoint.0) {
            if let Err(e) = self.checkpoint(false) {
                tracing::error!(error = %e, "audit checkpoint failed");
            }
        }
    }

    /// Whether enough records or time passed since the last signed checkpoint.
    fn checkpoint_due(&self) -> bool {
        self.seq > self.last_checkpoint.0
            && (self.seq - self.last_checkpoint.0 >= self.checkpoint_every
                || self.last_checkpoint.1.elapsed() >= self.checkpoint_interval)
    }

    /// Moves unawaited records into `batch` until it holds `up_to`.
    fn take_unawaited(&mut self, batch: &mut Vec<Pending>, up_to: usize) {
        while batch.len() < up_to {
            match self.unawaited.try_recv() {
                Ok(record) => batch.push((record, None)),
                Err(_) => break,
            }
        }
    }

    /// Appends a batch in one transaction; on failure nothing of it is kept and its
    /// waiters are refused.
    fn commit(&mut self, batch: &mut Vec<Pending>) {
        let start_seq = self.seq;
        let start_head = self.head;
        let mut events = Vec::new();
        let result = self.append(batch, &mut events);
        if result.is_err() && !self.conn.is_autocommit() {
            // Nothing of a failed batch is kept.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        match result {
            Ok(ts) => {
                self.committed.store(self.seq, Ordering::Release);
                let agents = batch.iter().filter_map(|(record, _)| record.decided_by());
                self.last_seen.note(agents, ts / 1_000_000);
                self.since_tail += batch.len() as u64;
                for event in events {
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
                self.data_version = None;
                tracing::error!(error = %e, records = batch.len(), "audit commit failed; requests waiting on it are refused");
                fail(batch, &e.to_string());
            }
        }
    }

    /// The transaction of `commit`, which returns the records' `ts`: statements are prepared
    /// once, and the head is re-read only when another connection wrote to the file since
    /// this one last looked.
    fn append(
        &mut self,
        batch: &[Pending],
        events: &mut Vec<Arc<Committed>>,
    ) -> Result<i64, rusqlite::Error> {
        // A leader has begun already (see `lead`).
        if self.conn.is_autocommit() {
            self.conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        }
        let version: i64 = self
            .conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        if self.data_version != Some(version) {
            // Another writer (the CLI while no proxy ran, or a second instance on the same
            // file) may have appended: chain onto what is really there.
            let (seq, head) = store::head(&self.conn, &self.log_id)?;
            if seq != self.seq {
                tracing::warn!(
                    ours = self.seq,
                    found = seq,
                    "audit log was appended by another writer; continuing its chain"
                );
                self.seq = seq;
                self.head = head;
            }
            self.data_version = Some(version);
        }
        let mut stmt = self
            .conn
            .prepare_cached("INSERT INTO records (seq, record, hash) VALUES (?1, ?2, ?3)")?;
        let ts = now_micros();
        let live = self.events.receiver_count() > 0;
        for (record, _) in batch {
            self.seq += 1;
            // Cannot fail for these types (string keys only); if it ever did, the batch
            // fails like a failed write: nothing is forwarded unlogged.
            let text = record
                .seal(&self.instance, self.seq, ts)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            self.head = chain::link(&self.head, text.as_bytes());
            let hash = chain::hex(&self.head);
            self.segment.bytes += (text.len() + hash.len()) as u64;
            if self.segment.first_ts == 0 {
                self.segment.first_ts = ts;
            }
            stmt.execute(params![self.seq as i64, text, hash])?;
            if live {
                events.push(Arc::new(Committed {
                    seq: self.seq,
                    hash,
                    record: text,
                    tenant: record.tenant().map(Arc::from),
                    ts,
                }));
            }
        }
        drop(stmt);
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(ts)
    }

    /// Signs the current head, stores it in the log and appends it to `checkpoints.jsonl`.
    /// With `seal`, the same transaction marks the active segment for sealing up to here:
    /// the sealer thread copies it out, so the seal costs a request one commit at most.
    fn checkpoint(&mut self, seal: bool) -> Result<Signed, AuditError> {
        let size = self.seq;
        let signed = self.signer.sign(Checkpoint {
            log_id: self.log_id.clone(),
            size,
            head: chain::hex(&self.head),
            time: now_micros(),
        });
        let line = serde_json::to_string(&signed).unwrap_or_default();
        let store = |conn: &Connection| -> rusqlite::Result<()> {
            let tx = conn.unchecked_transaction()?;
            tx.execute(
                "INSERT OR REPLACE INTO checkpoints (size, signed) VALUES (?1, ?2)",
                params![size as i64, line],
            )?;
            if seal {
                segment::set_meta(&tx, segment::SEALING, &size.to_string())?;
            }
            tx.commit()
        };
        store(&self.conn).map_err(|e| AuditError::Commit(e.to_string()))?;
        store::append_line(&self.jsonl, &line)
            .map_err(|e| AuditError::Commit(format!("{}: {e}", self.jsonl.display())))?;
        self.last_checkpoint = (size, Instant::now());
        Ok(signed)
    }
}

/// Refuses every waiter of `batch`, which is emptied.
fn fail(batch: &mut Vec<Pending>, reason: &str) {
    for (_, done) in batch.drain(..) {
        if let Some(done) = done {
            let _ = done.send(Err(AuditError::Commit(reason.to_owned())));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::audit::record::{Outcome, Stored};
    use crate::audit::{Audit, AuditConfig, Record};
    use crate::state::StateDir;

    fn outcome(id: &str) -> Record {
        Record::from(Outcome {
            request_id: id.into(),
            tenant: None,
            status: 200,
            bytes_up: 0,
            bytes_down: 2,
            duration_us: 10,
            complete: true,
            body_sha256: None,
            redacted: 0,
            unscanned: None,
        })
    }

    /// A log opened with `config` in a fresh directory (kept alive by the guard).
    fn open(config: AuditConfig) -> (tempfile::TempDir, Audit) {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open_or_create(dir.path().join("home")).unwrap();
        let audit = Audit::open(&config, &state, "test", Default::default()).unwrap();
        (dir, audit)
    }

    /// A log with `durability = "commit"`.
    fn open_commit_durability() -> (tempfile::TempDir, Audit) {
        open(AuditConfig {
            durability: crate::audit::Durability::Commit,
            ..AuditConfig::default()
        })
    }

    fn kinds(audit: &Audit) -> Vec<String> {
        let conn = rusqlite::Connection::open(audit.db_path()).unwrap();
        let mut stmt = conn
            .prepare("SELECT record FROM records ORDER BY seq")
            .unwrap();
        stmt.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(
                |text| match Stored::decode(&text.unwrap()).unwrap().record {
                    Record::Outcome(o) => format!("outcome {}", o.request_id),
                    Record::Admin(a) => format!("admin {}", a.event),
                    other => format!("{other:?}"),
                },
            )
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unawaited_record_is_committed_by_the_tick_alone() {
        let (_dir, audit) = open(AuditConfig::default());
        audit.submit(outcome("r-1"));
        // Nobody commits anything else: only the tick can bring it in.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while audit.committed() < 1 {
            assert!(std::time::Instant::now() < deadline, "never committed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(kinds(&audit), ["outcome r-1"]);
        audit.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unawaited_records_beyond_one_batch_are_all_committed_at_close() {
        let (_dir, audit) = open(AuditConfig {
            batch_max: 2,
            ..AuditConfig::default()
        });
        for i in 1..=7 {
            audit.submit(outcome(&format!("r-{i}")));
        }
        audit.close().await;
        let expected: Vec<String> = (1..=7).map(|i| format!("outcome r-{i}")).collect();
        assert_eq!(kinds(&audit), expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unawaited_records_join_the_next_waited_commit_and_none_is_lost_at_close() {
        let (_dir, audit) = open(AuditConfig::default());
        audit.submit(outcome("r-1"));
        audit.submit(outcome("r-2"));
        let seq = audit
            .admin_event("config_loaded", serde_json::json!({}))
            .await
            .unwrap();
        // The waited record and the two before it went in one commit.
        assert_eq!(seq, 3);
        audit.submit(outcome("r-3"));
        audit.close().await;
        assert_eq!(
            kinds(&audit),
            [
                "outcome r-1",
                "outcome r-2",
                "admin config_loaded",
                "outcome r-3"
            ]
        );
    }

    #[test]
    fn a_lone_request_never_waits_and_overlapping_ones_wait_the_setting() {
        let wait = Duration::from_micros(400);
        assert_eq!(super::gather_after(wait, 0), Duration::ZERO);
        assert_eq!(super::gather_after(wait, 1), Duration::ZERO);
        assert_eq!(super::gather_after(wait, 2), wait);
        let default = AuditConfig::default().group_commit_wait;
        assert_eq!(super::gather_after(default, 64), Duration::ZERO);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_a_group_wait_overlapping_commits_all_land_in_one_verified_chain() {
        let (_dir, audit) = open(AuditConfig {
            group_commit_wait: Duration::from_millis(5),
            ..AuditConfig::default()
        });
        let audit = std::sync::Arc::new(audit);
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let audit = audit.clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for _ in 0..5 {
                    let event = audit.admin_event("config_loaded", serde_json::json!({}));
                    seqs.push(event.await.unwrap());
                }
                seqs
            }));
        }
        let mut seqs: Vec<u64> = Vec::new();
        for task in tasks {
            seqs.extend(task.await.unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=80).collect::<Vec<u64>>());
        audit.close().await;
        let report = crate::audit::verify::verify(audit.db_path(), None, None).unwrap();
        assert_eq!(report.records, 80);
        assert!(report.problem.is_none(), "{:?}", report.problem);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_writer_on_the_same_file_is_chained_onto_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open_or_create(dir.path().join("home")).unwrap();
        let config = AuditConfig::default();
        let a = Audit::open(&config, &state, "a", Default::default()).unwrap();
        let b = Audit::open(&config, &state, "b", Default::default()).unwrap();
        // Each writer's cached head goes stale when the other one commits.
        let mut seqs = Vec::new();
        for i in 0..3 {
            let who = if i % 2 == 0 { &a } else { &b };
            seqs.push(
                who.admin_event("config_loaded", serde_json::json!({}))
                    .await
                    .unwrap(),
            );
            seqs.push(
                who.admin_event("config_loaded", serde_json::json!({}))
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
        a.close().await;
        b.close().await;
        let report = crate::audit::verify::verify(a.db_path(), None, None).unwrap();
        assert_eq!(report.records, 6);
        assert!(report.problem.is_none(), "{:?}", report.problem);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_commit_durability_a_lone_request_leads_in_order_and_nothing_follows_close() {
        let (_dir, audit) = open_commit_durability();
        audit.submit(outcome("r-1"));
        let seq = audit
            .admin_event("config_loaded", serde_json::json!({}))
            .await
            .unwrap();
        // The outcome queued before it went into the same commit, first.
        assert_eq!(seq, 2);
        audit.close().await;
        let late = audit
            .admin_event("config_loaded", serde_json::json!({}))
            .await;
        assert!(
            matches!(late, Err(crate::audit::AuditError::Closed)),
            "{late:?}"
        );
        assert_eq!(kinds(&audit), ["outcome r-1", "admin config_loaded"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_dropped_while_it_waits_is_no_longer_counted_as_waiting() {
        let (_dir, audit) = open(AuditConfig::default());
        // Polled once (queued, waiting for the writer), then dropped by the timeout.
        let commit = audit.admin_event("config_loaded", serde_json::json!({}));
        let _ = tokio::time::timeout(Duration::ZERO, commit).await;
        assert_eq!(audit.waiting.load(std::sync::atomic::Ordering::Acquire), 0);
        audit.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_leader_does_not_wait_on_an_async_worker_for_another_process_lock() {
        let (_dir, audit) = open_commit_durability();
        // Another process's write transaction, ended by a task on the only worker: if the
        // leader slept in SQLite's busy handler there, that task could not run for 5 s and
        // the commit would fail.
        let other = rusqlite::Connection::open(audit.db_path()).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            other.execute_batch("COMMIT").unwrap();
        });
        // On the worker too (the test's own body runs on another thread).
        let audit = std::sync::Arc::new(audit);
        let leader = audit.clone();
        let seq = tokio::spawn(async move {
            leader
                .admin_event("config_loaded", serde_json::json!({}))
                .await
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(seq, 1);
        release.await.unwrap();
        audit.close().await;
    }
}
