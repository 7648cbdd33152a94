//! What the audit log costs, end to end through `Audit::commit` (queue → writer thread →
//! SQLite group commit → the waiting task is woken), on a real disk:
//!
//! - throughput: 64 tokio tasks committing decision records in a loop for 3 s, with
//!   `durability = "fsync"` and `"commit"`; the commit waits they saw (p99, max, stalls
//!   above 10 ms), the group-commit sizes (from the `ts` each batch shares), the writer
//!   thread's CPU and the WAL size at the end;
//! - latency: one task committing one record at a time (an allowed request at
//!   concurrency 1) for 2 s per durability level;
//! - `verify`: a log of 1,000,000 records (built with `commit` and 64 writers), verified
//!   with its signed checkpoints and public key;
//! - baseline, same run and directory: a 4 KiB `write` + `fdatasync`, appended and
//!   overwritten in place (and overwritten + `fsync`, what bundled SQLite calls: it is
//!   built without `HAVE_FDATASYNC`), so every number can be quoted as a ratio;
//! - where the time goes: SQLite alone (same pragmas and statements, prebuilt rows),
//!   the queue + wake-up round trip alone, the writer's and `verify`'s CPU per record, and
//!   the whole box's CPU during each phase (other processes skew a 2-core machine).
//!
//! Run: `cargo bench --bench audit` (release profile). Works in a temporary directory
//! under `target/` (a real disk; `/tmp` may be tmpfs), or under `$AGENTGATE_BENCH_DIR`.
#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agentgate::audit::record::{Decision, Head, Verdict};
use agentgate::audit::verify::verify;
use agentgate::audit::{Audit, AuditConfig, Durability, Record, chain};
use agentgate::state::StateDir;
use anyhow::{Context, Result, bail};
use tokio::sync::{mpsc, oneshot};

const WRITERS: usize = 64;
const LOAD: Duration = Duration::from_secs(3);
const SINGLE: Duration = Duration::from_secs(2);
const WARMUP: Duration = Duration::from_millis(300);
const VERIFY_RECORDS: u64 = 1_000_000;
const FSYNC_SAMPLES: usize = 500;
const STALL_US: u32 = 10_000;
const INSTANCE: &str = "5e1f0a2c";
const AGENT: &str = "spiffe://agentgate.local/agent/bot";
const JTI: &str = "9b2f4c1d7e3a48f6a0c5d2b1e8f7a6c3";
const AUDIT_THREADS: [&str; 3] = ["audit-writer", "audit-wal", "audit-tick"];
const TS: i64 = 1_760_000_000_000_000;

/// A decision record as the pipeline writes it for an allowed request.
fn decision(audit: &Audit, n: u64) -> Record {
    Record::from(Decision {
        request_id: format!("{}-{n:x}", audit.instance()),
        agent: Some(AGENT.into()),
        tenant: None,
        jti: Some(JTI.into()),
        method: Some("POST".into()),
        host: "api.github.com".into(),
        path: "/repos/acme/widgets/issues/1234/comments".into(),
        sent: None,
        tuple: None,
        policy: None,
        shadow: None,
        budgets: Vec::new(),
        consent: None,
        credential: None,
        reference: false,
        verdict: Verdict::Allow,
        reasons: Vec::new(),
    })
}

/// Sorted waits (µs) and counts of one load.
struct Load {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    lat: Vec<u32>,
}

impl Load {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> u32 {
        pct(&self.lat, p)
    }
    fn max(&self) -> u32 {
        self.lat.last().copied().unwrap_or(0)
    }
    fn stalls(&self) -> usize {
        self.lat.len() - self.lat.partition_point(|&us| us <= STALL_US)
    }
    fn p50_99_max(&self) -> String {
        format!(
            "{}/{}/{}",
            int(f64::from(self.pct(0.5))),
            int(f64::from(self.pct(0.99))),
            int(f64::from(self.max()))
        )
    }
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0)
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// `writers` tasks commit records one at a time until `budget` is over or `limit`
/// records were attempted.
async fn load(audit: &Arc<Audit>, writers: usize, budget: Duration, limit: u64) -> Load {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + budget;
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (audit, next) = (audit.clone(), next.clone());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(1 << 16);
                let (mut errors, mut first_error) = (0u64, None);
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= limit || Instant::now() >= deadline {
                        break;
                    }
                    let record = decision(&audit, n);
                    let t = Instant::now();
                    match audit.commit(record).await {
                        Ok(_) => lat.push(micros(t.elapsed())),
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                (lat, errors, first_error)
            })
        })
        .collect();
    let mut out = Load {
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        lat: Vec::new(),
    };
    for task in tasks {
        match task.await {
            Ok((lat, errors, first_error)) => {
                out.lat.extend(lat);
                out.errors += errors;
                if out.first_error.is_none() {
                    out.first_error = first_error;
                }
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| format!("task: {e}"));
            }
        }
    }
    out.elapsed = start.elapsed();
    out.ok = out.lat.len() as u64;
    out.lat.sort_unstable();
    out
}

/// Time a thread spent on a CPU and waiting for one (`/proc/…/schedstat`).
#[derive(Debug, Default, Clone, Copy)]
struct Sched {
    run: Duration,
    wait: Duration,
}

/// Summed over the live threads whose name starts with `prefix`; `None` if there are none.
fn thread_sched(prefix: &str) -> Option<Sched> {
    let mut found: Option<Sched> = None;
    for entry in fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(comm) = fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        if !comm.starts_with(prefix) {
            continue;
        }
        let Ok(text) = fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        let mut it = text.split_whitespace().map(|s| s.parse::<u64>().ok());
        let (Some(Some(run)), Some(Some(wait))) = (it.next(), it.next()) else {
            continue;
        };
        let sum = found.get_or_insert_with(Sched::default);
        sum.run += Duration::from_nanos(run);
        sum.wait += Duration::from_nanos(wait);
    }
    found
}

fn threads_alive(names: &[&str]) -> bool {
    let Ok(dir) = fs::read_dir("/proc/self/task") else {
        return false;
    };
    dir.flatten()
        .any(|e| fs::read_to_string(e.path().join("comm")).is_ok_and(|c| names.contains(&c.trim())))
}

/// CPU time of the calling thread so far.
fn this_thread_cpu() -> Option<Duration> {
    let text = fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = text.split_whitespace().next()?.parse::<u64>().ok()?;
    Some(Duration::from_nanos(ns))
}

/// User + system CPU of the whole process (`/proc/self/stat`, USER_HZ = 100).
fn process_cpu() -> Option<Duration> {
    let text = fs::read_to_string("/proc/self/stat").ok()?;
    let rest = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Busy and total ticks of the whole machine (`/proc/stat`, USER_HZ = 100).
fn system_cpu() -> Option<(u64, u64)> {
    let text = fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .map(|s| s.parse().unwrap_or(0))
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

/// CPU counters at one instant, to diff over a phase.
#[derive(Clone, Copy)]
struct Probe {
    at: Instant,
    writer: Option<Sched>,
    workers: Option<Sched>,
    wal: Option<Sched>,
    process: Option<Duration>,
    system: Option<(u64, u64)>,
}

impl Probe {
    fn take() -> Probe {
        Probe {
            at: Instant::now(),
            writer: thread_sched("audit-writer"),
            workers: thread_sched("tokio-"),
            wal: thread_sched("audit-wal"),
            process: process_cpu(),
            system: system_cpu(),
        }
    }
}

/// CPU use over a phase, as percent of one CPU.
#[derive(Default, Clone, Copy)]
struct Cpu {
    writer_run: Option<f64>,
    writer_wait: Option<f64>,
    /// The tokio worker threads (the committing tasks), on CPU.
    workers: Option<f64>,
    /// The WAL checkpointer thread, on CPU.
    wal: Option<f64>,
    process: Option<f64>,
    /// Every process on the machine.
    machine: Option<f64>,
}

fn cpu_between(a: Probe, b: Probe, cpus: usize) -> Cpu {
    let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    let pct = |d: Duration| 100.0 * d.as_secs_f64() / secs;
    let writer = a.writer.zip(b.writer);
    Cpu {
        writer_run: writer.map(|(a, b)| pct(b.run.saturating_sub(a.run))),
        writer_wait: writer.map(|(a, b)| pct(b.wait.saturating_sub(a.wait))),
        workers: a
            .workers
            .zip(b.workers)
            .map(|(a, b)| pct(b.run.saturating_sub(a.run))),
        wal: a
            .wal
            .zip(b.wal)
            .map(|(a, b)| pct(b.run.saturating_sub(a.run))),
        process: a
            .process
            .zip(b.process)
            .map(|(a, b)| pct(b.saturating_sub(a))),
        machine: a.system.zip(b.system).map(|((b0, t0), (b1, t1))| {
            100.0 * cpus as f64 * (b1 - b0) as f64 / (t1 - t0).max(1) as f64
        }),
    }
}

/// `type (device on mountpoint)` of the filesystem holding `path`, from `df`.
fn filesystem(path: &Path) -> String {
    let out = std::process::Command::new("df")
        .args(["-P", "-T"])
        .arg(path)
        .output();
    let Ok(out) = out else {
        return "unknown (df failed)".into();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = text
        .lines()
        .nth(1)
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    match (fields.first(), fields.get(1), fields.last()) {
        (Some(dev), Some(kind), Some(mount)) if fields.len() >= 7 => {
            format!("{kind} ({dev} on {mount})")
        }
        _ => "unknown".into(),
    }
}

/// How a baseline write reaches the disk.
#[derive(Clone, Copy)]
enum Raw {
    AppendFdatasync,
    OverwriteFdatasync,
    OverwriteFsync,
}

/// A 4 KiB write + sync, `FSYNC_SAMPLES` times; sorted µs.
fn raw_fsync(dir: &Path, how: Raw) -> Result<Vec<u32>> {
    let path = dir.join("fsync-baseline");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let block = [0x5au8; 4096];
    let append = matches!(how, Raw::AppendFdatasync);
    if !append {
        f.write_all(&block)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("preparing {}", path.display()))?;
    }
    let mut lat = Vec::with_capacity(FSYNC_SAMPLES);
    for i in 0..FSYNC_SAMPLES + 20 {
        if !append {
            f.seek(SeekFrom::Start(0))
                .with_context(|| format!("seeking {}", path.display()))?;
        }
        let t = Instant::now();
        f.write_all(&block)
            .and_then(|()| match how {
                Raw::OverwriteFsync => f.sync_all(),
                Raw::AppendFdatasync | Raw::OverwriteFdatasync => f.sync_data(),
            })
            .with_context(|| format!("write + sync on {}", path.display()))?;
        if i >= 20 {
            lat.push(micros(t.elapsed()));
        }
    }
    drop(f);
    let _ = fs::remove_file(&path);
    lat.sort_unstable();
    Ok(lat)
}

fn open(root: &Path, name: &str, durability: Durability) -> Result<(Arc<Audit>, StateDir)> {
    open_with(root, name, durability, Duration::ZERO)
}

fn open_with(
    root: &Path,
    name: &str,
    durability: Durability,
    group_commit_wait: Duration,
) -> Result<(Arc<Audit>, StateDir)> {
    let state = StateDir::open_or_create(root.join(name))
        .with_context(|| format!("creating state dir {name}"))?;
    // One file: the phases measure the writer and `verify` on a single segment
    // (`benches/segments.rs` measures sealing and verifying across segments).
    let config = AuditConfig {
        durability,
        group_commit_wait,
        segment_max_bytes: bytesize::ByteSize::gib(1024),
        ..AuditConfig::default()
    };
    let audit = Audit::open(&config, &state, INSTANCE, Default::default())
        .with_context(|| format!("opening the audit log in {name}"))?;
    Ok((Arc::new(audit), state))
}

/// Closes the log and waits for its threads (the WAL checkpointer truncates the WAL after
/// `close`), so one phase's disk work does not land in the next phase's numbers.
async fn close(audit: Arc<Audit>) {
    audit.close().await;
    drop(audit);
    let start = Instant::now();
    while threads_alive(&AUDIT_THREADS) {
        if start.elapsed() > Duration::from_secs(60) {
            eprintln!("  warning: audit threads still running 60 s after close");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn file_mib(path: &Path) -> f64 {
    fs::metadata(path).map_or(0.0, |m| m.len() as f64 / 1048576.0)
}

fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

fn sql_seq(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Group commits between two seqs: every record of a batch shares its `ts`.
/// Returns (batches, average records, largest).
fn batches(db: &Path, after: u64, upto: u64) -> Result<(usize, f64, i64)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("opening {}", db.display()))?;
    let mut stmt = conn
        .prepare(
            "SELECT COUNT(*) FROM records WHERE seq > ?1 AND seq <= ?2 \
             GROUP BY json_extract(record, '$.ts')",
        )
        .context("preparing the batch query")?;
    let sizes: Vec<i64> = stmt
        .query_map([sql_seq(after), sql_seq(upto)], |r| r.get(0))
        .context("querying batch sizes")?
        .collect::<Result<_, _>>()
        .context("reading batch sizes")?;
    let total: i64 = sizes.iter().sum();
    let avg = total as f64 / sizes.len().max(1) as f64;
    Ok((sizes.len(), avg, sizes.iter().copied().max().unwrap_or(0)))
}

/// One phase through `Audit::commit`.
struct Phase {
    load: Load,
    batches: Option<(usize, f64, i64)>,
    cpu: Cpu,
    wal_mib: f64,
}

async fn phase(
    root: &Path,
    name: &str,
    durability: Durability,
    writers: usize,
    budget: Duration,
    cpus: usize,
    wait: Duration,
) -> Result<Phase> {
    let (audit, _state) = open_with(root, name, durability, wait)?;
    let db = audit.db_path().to_owned();
    let _ = load(&audit, writers, WARMUP, u64::MAX).await;
    let (p0, seq0) = (Probe::take(), audit.committed());
    let load = load(&audit, writers, budget, u64::MAX).await;
    let (p1, seq1) = (Probe::take(), audit.committed());
    let wal_mib = file_mib(&wal_path(&db));
    close(audit).await;
    let batches = match batches(&db, seq0, seq1) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("  warning: batch sizes unavailable: {e:#}");
            None
        }
    };
    Ok(Phase {
        load,
        batches,
        cpu: cpu_between(p0, p1, cpus),
        wal_mib,
    })
}

struct Verified {
    build: Load,
    build_cpu: Cpu,
    build_wal_mib: f64,
    /// `close` until the writer and the WAL checkpointer (final TRUNCATE) are gone.
    close_time: Duration,
    /// Reading every row alone: default pragmas, then with `mmap_size` (wall, CPU).
    scans: [(Duration, Option<Duration>, u64); 2],
    records: u64,
    checkpoints: usize,
    elapsed: Duration,
    /// CPU time of the thread that ran `verify`.
    thread_cpu: Option<Duration>,
    cpu: Cpu,
    db_mib: f64,
}

async fn verify_phase(root: &Path, cpus: usize) -> Result<Verified> {
    let (audit, state) = open(root, "verify", Durability::Commit)?;
    let db = audit.db_path().to_owned();
    let p0 = Probe::take();
    let build = load(&audit, WRITERS, Duration::from_secs(3600), VERIFY_RECORDS).await;
    let build_cpu = cpu_between(p0, Probe::take(), cpus);
    let build_wal_mib = file_mib(&wal_path(&db));
    let t = Instant::now();
    close(audit).await;
    let close_time = t.elapsed();
    let public = fs::read_to_string(state.path("audit.pub")).context("reading audit.pub")?;
    let jsonl = state.path("checkpoints.jsonl");
    let db_mib = file_mib(&db) + file_mib(&wal_path(&db));
    let (p0, c0) = (Probe::take(), this_thread_cpu());
    let report = verify(&db, Some(&jsonl), Some(public.trim()))
        .with_context(|| format!("verifying {}", db.display()))?;
    let (p1, c1) = (Probe::take(), this_thread_cpu());
    if let Some(p) = &report.problem {
        bail!(
            "verify found a problem in a log it should accept: seq {}: {}",
            p.seq,
            p.why
        );
    }
    if report.records != build.ok {
        bail!(
            "verify counted {} records, {} were committed",
            report.records,
            build.ok
        );
    }
    let scans = [scan(&db, false)?, scan(&db, true)?];
    for (_, _, n) in &scans {
        if *n != report.records {
            bail!("scanned {n} records, verify counted {}", report.records);
        }
    }
    Ok(Verified {
        build,
        build_cpu,
        build_wal_mib,
        close_time,
        scans,
        records: report.records,
        checkpoints: report.checkpoints,
        elapsed: p1.at.duration_since(p0.at),
        thread_cpu: c0.zip(c1).map(|(a, b)| b.saturating_sub(a)),
        cpu: cpu_between(p0, p1, cpus),
        db_mib,
    })
}

/// Reads every record the way `verify` does (same query, row by row), doing nothing with
/// them: the SQLite share of `verify`. Returns (wall, this thread's CPU).
fn scan(db: &Path, mmap: bool) -> Result<(Duration, Option<Duration>, u64)> {
    let err = || format!("scanning {}", db.display());
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(err)?;
    if mmap {
        conn.pragma_update(None, "mmap_size", 1i64 << 31)
            .with_context(err)?;
    }
    let (t, c0) = (Instant::now(), this_thread_cpu());
    let mut stmt = conn
        .prepare("SELECT seq, record, hash FROM records ORDER BY seq")
        .with_context(err)?;
    let mut rows = stmt.query([]).with_context(err)?;
    let (mut n, mut bytes) = (0u64, 0usize);
    while let Some(row) = rows.next().with_context(err)? {
        let seq: i64 = row.get(0).with_context(err)?;
        let record = row
            .get_ref(1)
            .with_context(err)?
            .as_bytes()
            .map_or(0, <[u8]>::len);
        let hash = row
            .get_ref(2)
            .with_context(err)?
            .as_str()
            .map_or(0, str::len);
        bytes += record + hash + usize::from(seq > 0);
        n += 1;
    }
    std::hint::black_box(bytes);
    let cpu = c0.zip(this_thread_cpu()).map(|(a, b)| b.saturating_sub(a));
    Ok((t.elapsed(), cpu, n))
}

/// SQLite alone: `rows` prebuilt records per transaction on one connection with the audit
/// log's pragmas (WAL, no autocheckpoint) and statements (`BEGIN IMMEDIATE`, read the head,
/// INSERTs, COMMIT), no queue, threads or chain work. Sorted µs per transaction.
fn sqlite_only(dir: &Path, sync: &str, rows: usize, text: &str) -> Result<Load> {
    let path = dir.join(format!("sqlite-only-{sync}-{rows}.db"));
    let err = || format!("sqlite-only bench on {}", path.display());
    let mut conn = rusqlite::Connection::open(&path).with_context(err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .and_then(|()| conn.pragma_update(None, "synchronous", sync))
        .and_then(|()| conn.pragma_update(None, "wal_autocheckpoint", 0))
        .and_then(|()| {
            conn.execute_batch(
                "CREATE TABLE records (seq INTEGER PRIMARY KEY, record TEXT NOT NULL, \
                 hash TEXT NOT NULL);",
            )
        })
        .with_context(err)?;
    let hash = "ab".repeat(32);
    let mut seq = 0i64;
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed() < SINGLE {
        let t = Instant::now();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .with_context(err)?;
        let head: Option<(i64, String)> = tx
            .query_row(
                "SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .with_context(err)?;
        if head.as_ref().map_or(0, |(seq, _)| *seq) != seq {
            bail!("sqlite-only bench: head {head:?} is not {seq}");
        }
        {
            let mut stmt = tx
                .prepare_cached("INSERT INTO records (seq, record, hash) VALUES (?1, ?2, ?3)")
                .with_context(err)?;
            for _ in 0..rows {
                seq += 1;
                stmt.execute(rusqlite::params![seq, text, hash])
                    .with_context(err)?;
            }
        }
        tx.commit().with_context(err)?;
        lat.push(micros(t.elapsed()));
    }
    let elapsed = start.elapsed();
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(format!("{}{suffix}", path.display()));
    }
    lat.sort_unstable();
    Ok(Load {
        ok: u64::try_from(seq).unwrap_or(0),
        errors: 0,
        first_error: None,
        elapsed,
        lat,
    })
}

/// The queue + wake-up round trip alone: a task sends a record through a tokio `mpsc` to a
/// std thread in `blocking_recv` and awaits a `oneshot` reply (what `commit` does, minus
/// SQLite and the chain).
async fn wakeup_floor(template: &Record) -> Result<Load> {
    type Job = (Record, oneshot::Sender<u64>);
    let (tx, mut rx) = mpsc::channel::<Job>(1024);
    let thread = std::thread::Builder::new()
        .name("bench-echo".into())
        .spawn(move || {
            while let Some((record, done)) = rx.blocking_recv() {
                let _ = done.send(u64::from(record.tenant().is_none()));
            }
        })
        .context("spawning the echo thread")?;
    let template = template.clone();
    let task = tokio::spawn(async move {
        let mut lat = Vec::new();
        let start = Instant::now();
        while start.elapsed() < SINGLE {
            let (done, wait) = oneshot::channel();
            let record = template.clone();
            let t = Instant::now();
            if tx.send((record, done)).await.is_err() || wait.await.is_err() {
                break;
            }
            lat.push(micros(t.elapsed()));
        }
        (lat, start.elapsed())
    });
    let (mut lat, elapsed) = task.await.context("echo task")?;
    let _ = thread.join();
    lat.sort_unstable();
    Ok(Load {
        ok: lat.len() as u64,
        errors: 0,
        first_error: None,
        elapsed,
        lat,
    })
}

/// CPU nanoseconds per record (this thread's CPU time; wall time if unavailable) of the
/// work the writer does outside SQLite, as `store::Writer::commit` does it (the record's
/// canonical JSON with seq/ts and its drop, SHA-256 link, hex), and of `verify`'s
/// (parse for `seq`, SHA-256, parse the stored hex). Each loop runs record after record
/// over a working set that fits in cache, as the writer and `verify` do.
struct Steps {
    writer: f64,
    canonical: f64,
    link: f64,
    hex: f64,
    verify: f64,
    verify_parse: f64,
    verify_parse_hash: f64,
}

fn steps(template: &Record) -> Steps {
    const N: usize = 20_000;
    const ROUNDS: usize = 10;
    struct Clock(Instant, Option<Duration>);
    let now = || Clock(Instant::now(), this_thread_cpu());
    let spent = |t: Clock| match (t.1, this_thread_cpu()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => t.0.elapsed(),
    };
    let per = |d: Duration| d.as_nanos() as f64 / (N * ROUNDS) as f64;
    let fresh = |seq0: usize| -> Vec<(Record, u64)> {
        (0..N)
            .map(|i| (template.clone(), (seq0 + i) as u64 + 1))
            .collect()
    };
    let seal = |(record, seq): &(Record, u64)| record.seal(INSTANCE, *seq, TS).unwrap_or_default();
    let mut head = chain::genesis("bench");
    let (mut writer, mut canonical) = (Duration::ZERO, Duration::ZERO);
    let mut sink = 0usize;
    let mut texts = Vec::new();
    let mut hexes = Vec::new();
    for round in 0..ROUNDS {
        let records = fresh(round * N);
        let t = now();
        for record in &records {
            let text = seal(record);
            head = chain::link(&head, text.as_bytes());
            sink += chain::hex(&head).len() + text.len();
        }
        writer += spent(t);
        let records = fresh(round * N);
        let t = now();
        for record in &records {
            sink += seal(record).len();
        }
        canonical += spent(t);
        if round == 0 {
            let mut head = chain::genesis("bench");
            for record in &fresh(0) {
                let text = seal(record);
                head = chain::link(&head, text.as_bytes());
                hexes.push(chain::hex(&head));
                texts.push(text);
            }
        }
    }
    let text = texts.first().cloned().unwrap_or_default();
    let t = now();
    for _ in 0..N * ROUNDS {
        head = chain::link(&head, text.as_bytes());
    }
    let link = spent(t);
    let t = now();
    for _ in 0..N * ROUNDS {
        sink += chain::hex(std::hint::black_box(&head)).len();
    }
    let hex = spent(t);
    let parse =
        |text: &String| serde_json::from_slice::<Head>(text.as_bytes()).map_or(0, |r| r.seq);
    let (mut verify, mut verify_parse, mut verify_parse_hash) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for _ in 0..ROUNDS {
        let t = now();
        let mut prev = chain::genesis("bench");
        for (text, stored) in texts.iter().zip(&hexes) {
            let seq = parse(text);
            let hash = chain::link(&prev, text.as_bytes());
            if seq == 0 || chain::parse_hash(stored) != Some(hash) {
                sink += 1;
            }
            prev = hash;
        }
        verify += spent(t);
        let t = now();
        sink += texts.iter().map(parse).sum::<u64>() as usize;
        verify_parse += spent(t);
        let t = now();
        sink += hexes
            .iter()
            .filter(|h| chain::parse_hash(h).is_some())
            .count();
        verify_parse_hash += spent(t);
    }
    std::hint::black_box((sink, head));
    Steps {
        writer: per(writer),
        canonical: per(canonical),
        link: per(link),
        hex: per(hex),
        verify: per(verify),
        verify_parse: per(verify_parse),
        verify_parse_hash: per(verify_parse_hash),
    }
}

fn int(n: f64) -> String {
    let s = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn opt_pct(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.0}%"))
}

fn row(out: &mut String, label: &str, fsync: &str, commit: &str, target: &str) {
    let _ = writeln!(out, "  {label:<36}{fsync:>24}{commit:>24}   {target}");
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    rt.block_on(run())
}

async fn run() -> Result<()> {
    let base = match std::env::var_os("AGENTGATE_BENCH_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
    };
    fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("bench-audit-")
        .tempdir_in(&base)
        .with_context(|| format!("creating a temporary directory in {}", base.display()))?;
    let root = dir.path();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let (fs_root, fs_tmp) = (filesystem(root), filesystem(Path::new("/tmp")));
    let loadavg = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loadavg: Vec<&str> = loadavg.split_whitespace().take(3).collect();

    eprintln!("audit bench in {} ({fs_root}) …", root.display());
    // The record as the pipeline builds it, and as the writer stores it (with seq and ts).
    let (sample, state) = open(root, "sample", Durability::Commit)?;
    let template = decision(&sample, 0x1_2345);
    close(sample).await;
    drop(state);
    let stored = template
        .seal(INSTANCE, 123_456, TS)
        .context("encoding the sample record")?;

    eprintln!("  baseline fsync");
    let append = raw_fsync(root, Raw::AppendFdatasync)?;
    let overwrite = raw_fsync(root, Raw::OverwriteFdatasync)?;
    let overwrite_fsync = raw_fsync(root, Raw::OverwriteFsync)?;
    let fsync_p50 = f64::from(pct(&append, 0.5).max(1));

    eprintln!("  {WRITERS} writers, fsync");
    let tp_fsync = phase(
        root,
        "tp-fsync",
        Durability::Fsync,
        WRITERS,
        LOAD,
        cpus,
        Duration::ZERO,
    )
    .await?;
    eprintln!("  {WRITERS} writers, fsync, group_commit_wait = \"400us\"");
    let wait = Duration::from_micros(400);
    let tp_wait = phase(
        root,
        "tp-wait",
        Durability::Fsync,
        WRITERS,
        LOAD,
        cpus,
        wait,
    )
    .await?;
    eprintln!("  {WRITERS} writers, commit");
    let tp_commit = phase(
        root,
        "tp-commit",
        Durability::Commit,
        WRITERS,
        LOAD,
        cpus,
        Duration::ZERO,
    )
    .await?;
    eprintln!("  1 writer, fsync");
    let one_fsync = phase(
        root,
        "one-fsync",
        Durability::Fsync,
        1,
        SINGLE,
        cpus,
        Duration::ZERO,
    )
    .await?;
    eprintln!("  1 writer, commit");
    let one_commit = phase(
        root,
        "one-commit",
        Durability::Commit,
        1,
        SINGLE,
        cpus,
        Duration::ZERO,
    )
    .await?;
    eprintln!(
        "  building {} records, then verify",
        int(VERIFY_RECORDS as f64)
    );
    let verified = verify_phase(root, cpus).await?;
    eprintln!("  SQLite alone, queue round trip, CPU per record");
    let raw64 = [
        sqlite_only(root, "FULL", WRITERS, &stored)?,
        sqlite_only(root, "NORMAL", WRITERS, &stored)?,
    ];
    let raw1 = [
        sqlite_only(root, "FULL", 1, &stored)?,
        sqlite_only(root, "NORMAL", 1, &stored)?,
    ];
    let floor = wakeup_floor(&template).await?;
    let steps = steps(&template);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "audit log: Audit::commit end to end (queue → writer thread → SQLite WAL group commit)"
    );
    let _ = writeln!(
        out,
        "  dir {} on {fs_root}; /tmp is {fs_tmp}",
        root.display()
    );
    let _ = writeln!(
        out,
        "  {cpus} CPUs, {workers} tokio workers, load average at start {}; record {} bytes canonical (decision, allow)",
        loadavg.join(" "),
        stored.len()
    );
    let _ = writeln!(
        out,
        "  baseline 4 KiB write + sync, n={FSYNC_SAMPLES}, p50/p99 µs: append+fdatasync {}/{}  overwrite+fdatasync {}/{}  overwrite+fsync {}/{}",
        pct(&append, 0.5),
        pct(&append, 0.99),
        pct(&overwrite, 0.5),
        pct(&overwrite, 0.99),
        pct(&overwrite_fsync, 0.5),
        pct(&overwrite_fsync, 0.99),
    );
    let _ = writeln!(out);
    row(&mut out, "", "fsync", "commit", "target");

    let tp = [&tp_fsync, &tp_commit];
    let _ = writeln!(out, "  {WRITERS} writers, {} s", LOAD.as_secs());
    let [a, b] = tp.map(|t| int(t.load.rate()));
    row(&mut out, "  durable records/s", &a, &b, "≥ 100,000 (fsync)");
    // A closed loop: every writer waits for every commit, so a wait gathers no one more.
    let n = tp_wait.load.rate();
    let gathered = tp_wait
        .batches
        .map_or("n/a".into(), |(_, avg, _)| format!("{avg:.1}"));
    let _ = writeln!(
        out,
        "    fsync with group_commit_wait = \"400us\": {} records/s ({:.2}×), {gathered} per commit, process CPU {}",
        int(n),
        n / tp_fsync.load.rate().max(1.0),
        opt_pct(tp_wait.cpu.process),
    );
    let [a, b] = tp.map(|t| format!("{:.2}×", t.load.rate() / 100_000.0));
    row(&mut out, "  vs 100,000/s", &a, &b, "");
    let [a, b] = tp.map(|t| format!("{:.1}", t.load.rate() * fsync_p50 / 1e6));
    row(&mut out, "  records per append+fdatasync p50", &a, &b, "");
    let [a, b] = tp.map(|t| t.load.p50_99_max());
    row(
        &mut out,
        "  commit wait p50/p99/max µs",
        &a,
        &b,
        "p99 < 10,000",
    );
    let [a, b] = tp.map(|t| {
        let n = t.load.stalls();
        format!(
            "{n} ({:.3}%)",
            100.0 * n as f64 / t.load.lat.len().max(1) as f64
        )
    });
    row(&mut out, "  stalls > 10 ms", &a, &b, "");
    let [a, b] = tp.map(|t| {
        t.batches.map_or("n/a".into(), |(n, avg, max)| {
            format!("{} × {avg:.1} (max {max})", int(n as f64))
        })
    });
    row(&mut out, "  group commits × avg records", &a, &b, "");
    let [a, b] = tp.map(|t| {
        t.batches.map_or("n/a".into(), |(n, _, _)| {
            int(t.load.elapsed.as_secs_f64() * 1e6 / n.max(1) as f64)
        })
    });
    row(&mut out, "  µs per group commit", &a, &b, "");
    let [a, b] = tp.map(|t| {
        format!(
            "{} / {}",
            opt_pct(t.cpu.writer_run),
            opt_pct(t.cpu.writer_wait)
        )
    });
    row(&mut out, "  writer thread on CPU / runnable", &a, &b, "");
    let [a, b] = tp.map(|t| format!("{} / {}", opt_pct(t.cpu.workers), opt_pct(t.cpu.wal)));
    row(
        &mut out,
        "  tokio workers / WAL ckpt thread CPU",
        &a,
        &b,
        "",
    );
    let [a, b] = tp.map(|t| format!("{} / {}", opt_pct(t.cpu.process), opt_pct(t.cpu.machine)));
    row(
        &mut out,
        "  CPU this process / whole machine",
        &a,
        &b,
        &format!("(of {}%)", cpus * 100),
    );
    let [a, b] = tp.map(|t| format!("{:.1}", t.wal_mib));
    row(&mut out, "  WAL at end of load MiB", &a, &b, "");
    let [a, b] = tp.map(|t| t.load.errors.to_string());
    row(&mut out, "  commit errors", &a, &b, "0");
    let [a, b] = raw64.each_ref().map(|l| int(l.rate()));
    row(&mut out, "  SQLite alone, 64 rows/txn: rows/s", &a, &b, "");
    let [a, b] = raw64.each_ref().map(|l| l.p50_99_max());
    row(&mut out, "    µs per txn p50/p99/max", &a, &b, "");

    let one = [&one_fsync, &one_commit];
    let _ = writeln!(
        out,
        "  1 writer, {} s (one commit at a time)",
        SINGLE.as_secs()
    );
    let [a, b] = one.map(|l| int(l.load.rate()));
    row(&mut out, "  commits/s", &a, &b, "");
    let [a, b] = one.map(|l| l.load.p50_99_max());
    row(
        &mut out,
        "  commit wait p50/p99/max µs",
        &a,
        &b,
        "p50 ≤ 250 (fsync), ≤ 60 (commit)",
    );
    let [a, b] = one.map(|l| format!("{:.2}×", f64::from(l.load.pct(0.5)) / fsync_p50));
    row(&mut out, "  p50 / append+fdatasync p50", &a, &b, "");
    let [a, b] = one.map(|l| {
        format!(
            "{} / {}",
            opt_pct(l.cpu.writer_run),
            opt_pct(l.cpu.writer_wait)
        )
    });
    row(&mut out, "  writer thread on CPU / runnable", &a, &b, "");
    let [a, b] = one.map(|l| format!("{} / {}", opt_pct(l.cpu.workers), opt_pct(l.cpu.wal)));
    row(
        &mut out,
        "  tokio workers / WAL ckpt thread CPU",
        &a,
        &b,
        "",
    );
    let [a, b] = one.map(|l| {
        let cpu_us = l.cpu.process.unwrap_or(0.0) / 100.0 * l.load.elapsed.as_secs_f64() * 1e6;
        format!("{:.0}", cpu_us / l.load.ok.max(1) as f64)
    });
    row(&mut out, "  process CPU µs per commit", &a, &b, "");
    let [a, b] = one.map(|l| format!("{} / {}", opt_pct(l.cpu.process), opt_pct(l.cpu.machine)));
    row(
        &mut out,
        "  CPU this process / whole machine",
        &a,
        &b,
        &format!("(of {}%)", cpus * 100),
    );
    let [a, b] = one.map(|l| format!("{:.1}", l.wal_mib));
    row(&mut out, "  WAL at end MiB", &a, &b, "");
    let [a, b] = one.map(|l| l.load.errors.to_string());
    row(&mut out, "  commit errors", &a, &b, "0");
    let [a, b] = raw1.each_ref().map(|l| l.p50_99_max());
    row(
        &mut out,
        "  SQLite alone, 1 row/txn: µs p50/p99/max",
        &a,
        &b,
        "",
    );
    row(
        &mut out,
        "  queue + wake-up round trip alone",
        &floor.p50_99_max(),
        "(same)",
        "",
    );

    let v = &verified;
    let _ = writeln!(out, "  verify, {} records", int(v.records as f64));
    let _ = writeln!(
        out,
        "    build (commit, {WRITERS} writers): {:.1} s, {}/s, wait p99 {} µs max {} µs, WAL {:.0} MiB at the end, CPU {} / machine {}, {} errors",
        v.build.elapsed.as_secs_f64(),
        int(v.build.rate()),
        int(f64::from(v.build.pct(0.99))),
        int(f64::from(v.build.max())),
        v.build_wal_mib,
        opt_pct(v.build_cpu.process),
        opt_pct(v.build_cpu.machine),
        v.build.errors
    );
    let _ = writeln!(
        out,
        "    close (final checkpoint + WAL TRUNCATE): {:.2} s",
        v.close_time.as_secs_f64()
    );
    let secs = |d: Option<Duration>| d.map_or("n/a".into(), |d| format!("{:.2}", d.as_secs_f64()));
    let [(w0, c0, _), (w1, c1, _)] = v.scans;
    let _ = writeln!(
        out,
        "    SQLite scan alone (verify's query, rows untouched): {:.2} s ({} s CPU); with mmap_size: {:.2} s ({} s CPU)",
        w0.as_secs_f64(),
        secs(c0),
        w1.as_secs_f64(),
        secs(c1)
    );
    let _ = writeln!(
        out,
        "    verify: {:.2} s ({} s CPU), {} records/s, {} checkpoints, db {:.0} MiB ({:.0} B/record), CPU {} / machine {}   target < 2 s",
        v.elapsed.as_secs_f64(),
        v.thread_cpu
            .map_or("n/a".into(), |c| format!("{:.2}", c.as_secs_f64())),
        int(v.records as f64 / v.elapsed.as_secs_f64()),
        v.checkpoints,
        v.db_mib,
        v.db_mib * 1048576.0 / v.records.max(1) as f64,
        opt_pct(v.cpu.process),
        opt_pct(v.cpu.machine),
    );
    let _ = writeln!(
        out,
        "  CPU time per record, µs: writer outside SQLite {:.2} (canonical JSON + drop {:.2}, SHA-256 {:.2}, hex {:.2}); verify outside SQLite {:.2} (JSON parse {:.2}, SHA-256 {:.2}, parse hex {:.2})",
        steps.writer / 1000.0,
        steps.canonical / 1000.0,
        steps.link / 1000.0,
        steps.hex / 1000.0,
        steps.verify / 1000.0,
        steps.verify_parse / 1000.0,
        steps.link / 1000.0,
        steps.verify_parse_hash / 1000.0,
    );
    let first_error = [
        &tp_fsync.load,
        &tp_commit.load,
        &one_fsync.load,
        &one_commit.load,
        &v.build,
    ]
    .iter()
    .find_map(|l| l.first_error.clone());
    if let Some(e) = first_error {
        let _ = writeln!(out, "  first commit error: {e}");
    }
    print!("{out}");
    Ok(())
}
