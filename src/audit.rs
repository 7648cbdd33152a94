//! The audit log: every decision, allowed or refused, as a record in a SHA-256 hash chain in
//! SQLite, committed before an allowed request is forwarded. One writer thread group-commits
//! what a bounded queue brings; a request that cannot get its record committed within
//! `audit.commit_timeout` is refused `503` — never forwarded unlogged.
//!
//! Layout: `chain` (canonical bytes and hashes), `store` (SQLite and the writer thread),
//! `checkpoint` (Ed25519-signed heads), `verify` (recomputes everything, names the first
//! bad `seq`).

pub mod chain;
pub mod checkpoint;
pub mod record;
pub mod store;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

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

/// The handle the pipeline and admin code append through.
#[derive(Debug)]
pub struct Audit {
    tx: mpsc::Sender<store::Job>,
    instance: String,
    commit_timeout: Duration,
    committed: Arc<AtomicU64>,
    /// Commit latency and failures, dropped outcomes (shared with `/metrics`).
    metrics: Arc<crate::metrics::Metrics>,
    stop_checkpointer: Arc<AtomicBool>,
    checkpointer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    db: PathBuf,
    log_id: String,
    events: tokio::sync::broadcast::Sender<Arc<Committed>>,
}

/// Committed records kept for live subscribers; one that falls further behind is dropped.
const EVENTS_BUFFER: usize = 4096;

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

impl Audit {
    /// Opens (creating) the log and starts its writer.
    pub fn open(
        config: &AuditConfig,
        state: &StateDir,
        instance: &str,
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
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let committed = Arc::new(AtomicU64::new(seq));
        let (events, _) = tokio::sync::broadcast::channel(EVENTS_BUFFER);
        let writer = store::Writer {
            conn,
            log_id: log_id.clone(),
            jsonl: db.with_file_name(checkpoint::JSONL_FILE),
            signer,
            seq,
            head,
            batch_max: config.batch_max.max(1),
            checkpoint_every: config.checkpoint_every.max(1),
            checkpoint_interval: config.checkpoint_interval,
            last_checkpoint: (seq, Instant::now()),
            committed: committed.clone(),
            events: events.clone(),
        };
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
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
        {
            // Wake-ups for time-based checkpoints and for flushing unawaited records.
            let tx = tx.clone();
            let _ = std::thread::Builder::new()
                .name("audit-tick".into())
                .spawn(move || {
                    while !matches!(
                        tx.try_send(store::Job::Tick),
                        Err(mpsc::error::TrySendError::Closed(_))
                    ) {
                        std::thread::sleep(store::OUTCOME_DELAY / 2);
                    }
                });
        }
        Ok(Audit {
            tx,
            instance: instance.to_owned(),
            commit_timeout: config.commit_timeout,
            committed,
            metrics: Arc::default(),
            stop_checkpointer,
            checkpointer: std::sync::Mutex::new(checkpointer),
            db,
            log_id,
            events,
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

    /// The log id.
    pub fn log_id(&self) -> &str {
        &self.log_id
    }

    /// Committed records from now on (buffered; a lagging subscriber is told so).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Committed>> {
        self.events.subscribe()
    }

    /// Counts into `metrics` (the instance's) instead of a private set.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The metrics this log counts into; reachable by everything that holds the log.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// The highest committed `seq`.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Appends `record` and waits until it is durable; fails after `commit_timeout`.
    pub async fn commit(&self, record: Map<String, Value>) -> Result<u64, AuditError> {
        let submitted = Instant::now();
        let result = self.commit_inner(record).await;
        match &result {
            Ok(_) => self.metrics.audit_committed(submitted.elapsed()),
            Err(_) => self.metrics.audit_failed(),
        }
        result
    }

    async fn commit_inner(&self, record: Map<String, Value>) -> Result<u64, AuditError> {
        let (done, wait) = oneshot::channel();
        let job = store::Job::Append {
            record,
            done: Some(done),
        };
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

    /// Appends `record` without waiting (outcome records). A full queue drops it and says
    /// so in the log: the request it describes already has its committed decision.
    pub fn submit(&self, record: Map<String, Value>) {
        let job = store::Job::Append { record, done: None };
        if self.tx.try_send(job).is_err() {
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
        if let Some(t) = self.checkpointer.lock().ok().and_then(|mut t| t.take()) {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        let (reply, done) = oneshot::channel();
        if self.tx.send(store::Job::Close(reply)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), done).await;
        }
    }

    /// A record with the fields every record carries.
    pub fn record(&self, kind: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("kind".into(), kind.into());
        m.insert("instance".into(), self.instance.clone().into());
        m
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
        let mut m = self.record("admin");
        m.insert("event".into(), event.into());
        if let Some(t) = tenant {
            m.insert("tenant".into(), t.into());
        }
        m.insert("detail".into(), detail);
        self.commit(m).await
    }
}
