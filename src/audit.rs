//! The audit log: every decision, allowed or refused, as a record in a SHA-256 hash chain in
//! SQLite, committed before an allowed request is forwarded. One writer thread group-commits
//! what a bounded queue brings (under `commit` durability a lone request commits its own
//! record instead, see `writer::lead`); a request that cannot get its record committed
//! within `audit.commit_timeout` is refused `503` — never forwarded unlogged.
//!
//! Layout: `record` (the typed records and their canonical encoding), `chain` (hashes),
//! `store` (SQLite), `writer` (the thread that group-commits and tells the waiting),
//! `checkpoint` (Ed25519-signed heads), `outbox` (committed records for shippers), `verify`
//! (recomputes everything, names the first bad `seq`), `config` and `error`.

pub mod activity;
pub mod chain;
pub mod checkpoint;
pub mod config;
pub mod disk;
pub mod error;
pub mod outbox;
pub mod record;
pub mod seal;
pub mod segment;
pub mod store;
pub mod verify;
pub mod view;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

pub use config::{AuditConfig, Durability};
pub use error::AuditError;
pub use record::Record;
pub use store::Committed;

use crate::metrics::Metrics;
use crate::state::StateDir;

/// The handle the pipeline and admin code append through.
#[derive(Debug)]
pub struct Audit {
    tx: mpsc::Sender<writer::Job>,
    /// The writer, for a request that leads its own commit.
    writer: writer::Shared,
    /// Under `commit` durability a request that is the only one waiting commits on its own
    /// thread (no sync to wait for, so two thread wake-ups would cost more); with others
    /// waiting, the writer thread's group commit is cheaper per record.
    lead: bool,
    /// Requests waiting for a commit right now.
    waiting: AtomicUsize,
    /// One bit per recent commit, newest lowest: another request was waiting too. Where
    /// requests overlap, the group commit batches them; a lone request leads only when
    /// the last eight were alone as well.
    overlapped: AtomicU8,
    /// Records nobody waits for: they never wake the writer.
    unawaited: mpsc::Sender<Record>,
    instance: String,
    commit_timeout: Duration,
    committed: Arc<AtomicU64>,
    /// Commit latency and failures, dropped outcomes (shared with `/metrics`).
    metrics: Arc<Metrics>,
    stop_checkpointer: Arc<AtomicBool>,
    checkpointer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The sealer thread (segments, archive, retention) and what it must wait for.
    sealer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    holds: Arc<std::sync::Mutex<Vec<PathBuf>>>,
    /// Wakes the sealer (at close, so it sees the stop at once).
    wake_sealer: std::sync::mpsc::SyncSender<()>,
    archive: Option<PathBuf>,
    db: PathBuf,
    log_id: String,
    events: tokio::sync::broadcast::Sender<Arc<Committed>>,
    /// Each agent's last committed decision, noted by the writer.
    last_seen: Arc<activity::LastSeen>,
}

/// One request waiting for a commit, counted in `Audit::waiting` while it lives.
struct Waiting<'a> {
    count: &'a AtomicUsize,
    /// No other request was waiting when this one came.
    alone: bool,
}

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        let alone = count.fetch_add(1, Ordering::AcqRel) == 0;
        Waiting { count, alone }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Committed records kept for live subscribers; one that falls further behind is dropped.
const EVENTS_BUFFER: usize = 4096;

impl Audit {
    /// Opens (creating) the log and starts its writer; commits are counted into `metrics`.
    pub fn open(
        config: &AuditConfig,
        state: &StateDir,
        instance: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Audit, AuditError> {
        let db = config.db_path(state);
        let (conn, log_id) = store::open(&db, config.durability)?;
        let (seq, head) = store::head(&conn, &log_id).map_err(|e| AuditError::Open {
            path: db.clone(),
            reason: e.to_string(),
        })?;
        let signer = checkpoint::Signer::ensure(state).map_err(|e| AuditError::Open {
            path: db.clone(),
            reason: e.to_string(),
        })?;
        let open_err = |e: rusqlite::Error| AuditError::Open {
            path: db.clone(),
            reason: e.to_string(),
        };
        let (base, _) = segment::base(&conn, &log_id).map_err(open_err)?;
        let (segment_bytes, first_ts) = seal::active_stats(&conn, base).map_err(open_err)?;
        let sealing = Arc::new(AtomicU64::new(seal::pending(&conn).map_err(open_err)?));
        let installed = Arc::new(AtomicU64::new(0));
        // Rows a seal copied out and a crash left behind are deleted in the first steps.
        let trim = writer::copied_rows(&conn, base).map_err(open_err)?;
        let (wake, woken) = std::sync::mpsc::sync_channel(1);
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let (unawaited, unawaited_rx) = mpsc::channel(config.queue.max(1));
        let committed = Arc::new(AtomicU64::new(seq));
        let (events, _) = tokio::sync::broadcast::channel(EVENTS_BUFFER);
        let last_seen = Arc::new(activity::LastSeen::default());
        let writer = writer::Writer {
            conn,
            log_id: log_id.clone(),
            instance: instance.to_owned(),
            jsonl: db.with_file_name(checkpoint::JSONL_FILE),
            signer,
            seq,
            head,
            data_version: None,
            batch_max: config.batch_max.max(1),
            group_commit_wait: config.group_commit_wait,
            checkpoint_every: config.checkpoint_every.max(1),
            checkpoint_interval: config.checkpoint_interval,
            last_checkpoint: (seq, Instant::now()),
            unawaited: unawaited_rx,
            events: events.clone(),
            last_seen: last_seen.clone(),
            committed: committed.clone(),
            since_tail: 0,
            closed: false,
            segment: writer::SegmentState {
                max_bytes: config.segment_max_bytes.as_u64(),
                max_age: config.segment_max_age,
                bytes: segment_bytes,
                first_ts,
                sealing,
                installed: installed.clone(),
                wake: wake.clone(),
                retry_at: None,
                trim,
            },
        };
        let writer = Arc::new(std::sync::Mutex::new(writer));
        let shared = writer.clone();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer::run(shared, rx))
            .map_err(|e| AuditError::Open {
                path: db.clone(),
                reason: e.to_string(),
            })?;
        let stop_checkpointer = Arc::new(AtomicBool::new(false));
        let checkpointer = {
            let (path, stop) = (db.clone(), stop_checkpointer.clone());
            std::thread::Builder::new()
                .name("audit-wal".into())
                .spawn(move || store::wal_checkpointer(path, stop))
                .ok()
        };
        let holds = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sealer = seal::Sealer {
            db: db.clone(),
            log_id: log_id.clone(),
            archive: config.archive().map(PathBuf::from),
            retention: config.retention.clone(),
            installed,
            wake: woken,
            stop: stop_checkpointer.clone(),
            holds: holds.clone(),
            metrics: metrics.clone(),
        };
        let sealer = std::thread::Builder::new()
            .name("audit-sealer".into())
            .spawn(move || seal::run(sealer))
            .ok();
        {
            // Wake-ups for time-based checkpoints and for flushing unawaited records.
            let tx = tx.clone();
            let _ = std::thread::Builder::new()
                .name("audit-tick".into())
                .spawn(move || {
                    while !matches!(
                        tx.try_send(writer::Job::Tick),
                        Err(mpsc::error::TrySendError::Closed(_))
                    ) {
                        std::thread::sleep(writer::UNAWAITED_DELAY);
                    }
                });
        }
        Ok(Audit {
            tx,
            writer,
            lead: config.durability == Durability::Commit,
            waiting: AtomicUsize::new(0),
            overlapped: AtomicU8::new(0),
            unawaited,
            instance: instance.to_owned(),
            commit_timeout: config.commit_timeout,
            committed,
            metrics,
            stop_checkpointer,
            checkpointer: std::sync::Mutex::new(checkpointer),
            sealer: std::sync::Mutex::new(sealer),
            holds,
            wake_sealer: wake,
            archive: config.archive().map(PathBuf::from),
            db,
            log_id,
            events,
            last_seen,
        })
    }

    /// This process's instance id (in every record).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The database file.
    pub fn db_path(&self) -> &std::path::Path {
        &self.db
    }

    /// The archive directory (`audit.archive_dir`), when set.
    pub fn archive(&self) -> Option<&std::path::Path> {
        self.archive.as_deref()
    }

    /// Keeps sealed segments in the state dir until the shipper whose progress file
    /// (`<log id> <seq>`) is `progress` has shipped them.
    pub fn hold_until_shipped(&self, progress: PathBuf) {
        if let Ok(mut holds) = self.holds.lock() {
            holds.push(progress);
        }
    }

    /// The log id.
    pub fn log_id(&self) -> &str {
        &self.log_id
    }

    /// When each agent last had a committed decision.
    pub fn last_seen(&self) -> &activity::LastSeen {
        &self.last_seen
    }

    /// Committed records from now on (buffered; a lagging subscriber is told so).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Committed>> {
        self.events.subscribe()
    }

    /// The highest committed `seq`.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Appends `record` and waits until it is durable; fails after `commit_timeout`.
    pub async fn commit(&self, record: Record) -> Result<u64, AuditError> {
        let submitted = Instant::now();
        // Counted down on drop too: a request dropped while it waits must not leave the
        // count up, or no request would ever be alone again.
        let waiting = Waiting::enter(&self.waiting);
        let lead = self.may_lead(&waiting);
        let result = self.commit_inner(record, lead).await;
        drop(waiting);
        match &result {
            Ok(_) => self.metrics.audit_committed(submitted.elapsed()),
            Err(_) => self.metrics.audit_failed(),
        }
        result
    }

    /// Whether this commit leads its own (see `lead`): alone now, and the last eight were.
    fn may_lead(&self, waiting: &Waiting<'_>) -> bool {
        if !self.lead {
            return false;
        }
        // A heuristic: racing updates may lose a bit, which costs a batch, never a record.
        let before = self.overlapped.load(Ordering::Relaxed);
        self.overlapped
            .store((before << 1) | u8::from(!waiting.alone), Ordering::Relaxed);
        waiting.alone && before == 0
    }

    async fn commit_inner(&self, record: Record, lead: bool) -> Result<u64, AuditError> {
        let record = if lead {
            match writer::lead(&self.writer, record) {
                writer::Led::Done(result) => return result,
                writer::Led::Busy(record) => record,
            }
        } else {
            record
        };
        let (done, wait) = oneshot::channel();
        let job = writer::Job::Append { record, done };
        let deadline = tokio::time::Instant::now() + self.commit_timeout;
        tokio::time::timeout_at(deadline, self.tx.send(job))
            .await
            .map_err(|_| AuditError::Timeout(self.commit_timeout))?
            .map_err(|_| AuditError::Closed)?;
        match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(AuditError::Closed),
            Err(_) => Err(AuditError::Timeout(self.commit_timeout)),
        }
    }

    /// Appends `record` without waiting (outcome records): it joins the next commit, or the
    /// tick's. A full queue drops it and says so in the log: the request it describes
    /// already has its committed decision.
    pub fn submit(&self, record: Record) {
        if self.unawaited.try_send(record).is_err() {
            let n = self.metrics.audit_dropped();
            tracing::error!(
                dropped_total = n,
                "audit queue full: an outcome record was dropped"
            );
        }
    }

    /// Writes the final checkpoint and stops the writer.
    pub async fn close(&self) {
        // The WAL thread first, so the writer's final TRUNCATE checkpoint has no reader
        // holding the WAL open.
        self.stop_checkpointer.store(true, Ordering::Relaxed);
        let _ = self.wake_sealer.try_send(());
        for thread in [&self.checkpointer, &self.sealer] {
            if let Some(t) = thread.lock().ok().and_then(|mut t| t.take()) {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
        }
        let (reply, done) = oneshot::channel();
        if self.tx.send(writer::Job::Close(reply)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), done).await;
        }
    }

    /// An admin event (agent registered/revoked, key rotated, config loaded…).
    pub async fn admin_event(&self, event: &str, detail: Value) -> Result<u64, AuditError> {
        self.tenant_event(None, event, detail).await
    }

    /// [`Audit::admin_event`] about one tenant's objects: the record carries `tenant`, so
    /// it shows in that tenant's audit view and event stream.
    pub async fn tenant_event(
        &self,
        tenant: Option<&str>,
        event: &str,
        detail: Value,
    ) -> Result<u64, AuditError> {
        let event = record::Admin {
            event: event.to_owned().into(),
            tenant: tenant.map(str::to_owned),
            detail: record::Detail::Other(detail),
        };
        self.commit(event.into()).await
    }
}
