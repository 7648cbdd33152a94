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
//!   overwritten in place, so every number can be quoted as a ratio.
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

use agentgate::audit::verify::verify;
use agentgate::audit::{Audit, AuditConfig, Durability, chain};
use agentgate::state::StateDir;
use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

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
const WRITER_THREADS: [&str; 3] = ["audit-writer", "audit-wal", "audit-tick"];

/// A decision record as the pipeline writes it for an allowed request.
fn decision(audit: &Audit, n: u64) -> Map<String, Value> {
    let mut r = audit.record("decision");
    r.insert(
        "request_id".into(),
        format!("{}-{n:x}", audit.instance()).into(),
    );
    r.insert("agent".into(), AGENT.into());
    r.insert("tenant".into(), Value::Null);
    r.insert("jti".into(), JTI.into());
    r.insert("method".into(), "POST".into());
    r.insert("host".into(), "api.github.com".into());
    r.insert(
        "path".into(),
        "/repos/acme/widgets/issues/1234/comments".into(),
    );
    r.insert("effect".into(), "allow".into());
    r.insert("gate".into(), Value::Null);
    r.insert("reasons".into(), Value::Array(Vec::new()));
    r
}

/// Sorted commit waits (µs) and counts of one load.
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

fn thread_sched(name: &str) -> Option<Sched> {
    let mut found = None;
    for entry in fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(comm) = fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        if comm.trim() != name {
            continue;
        }
        let text = fs::read_to_string(entry.path().join("schedstat")).ok()?;
        let mut it = text.split_whitespace().map(|s| s.parse::<u64>().ok());
        let (Some(Some(run)), Some(Some(wait))) = (it.next(), it.next()) else {
            return None;
        };
        found = Some(Sched {
            run: Duration::from_nanos(run),
            wait: Duration::from_nanos(wait),
        });
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

/// User + system CPU of the whole process (`/proc/self/stat`, USER_HZ = 100).
fn process_cpu() -> Option<Duration> {
    let text = fs::read_to_string("/proc/self/stat").ok()?;
    let rest = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
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

/// A 4 KiB write + `fdatasync`, appended or overwriting the same block; sorted µs.
fn raw_fsync(dir: &Path, append: bool) -> Result<Vec<u32>> {
    let path = dir.join(if append {
        "fsync-append"
    } else {
        "fsync-overwrite"
    });
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let block = [0x5au8; 4096];
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
            .and_then(|()| f.sync_data())
            .with_context(|| format!("write + fdatasync on {}", path.display()))?;
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
    let state = StateDir::open_or_create(root.join(name))
        .with_context(|| format!("creating state dir {name}"))?;
    let config = AuditConfig {
        durability,
        ..AuditConfig::default()
    };
    let audit = Audit::open(&config, &state, INSTANCE)
        .with_context(|| format!("opening the audit log in {name}"))?;
    Ok((Arc::new(audit), state))
}

/// Closes the log and waits for its threads (the WAL checkpointer truncates the WAL after
/// `close`), so one phase's disk work does not land in the next phase's numbers.
async fn close(audit: Arc<Audit>) {
    audit.close().await;
    drop(audit);
    let start = Instant::now();
    while threads_alive(&WRITER_THREADS) {
        if start.elapsed() > Duration::from_secs(60) {
            eprintln!("  warning: audit threads still running 60 s after close");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
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
        .query_map(
            [
                i64::try_from(after).unwrap_or(i64::MAX),
                i64::try_from(upto).unwrap_or(i64::MAX),
            ],
            |r| r.get(0),
        )
        .context("querying batch sizes")?
        .collect::<Result<_, _>>()
        .context("reading batch sizes")?;
    let total: i64 = sizes.iter().sum();
    let avg = total as f64 / sizes.len().max(1) as f64;
    Ok((sizes.len(), avg, sizes.iter().copied().max().unwrap_or(0)))
}

/// One 64-writer phase.
struct Throughput {
    load: Load,
    batches: Option<(usize, f64, i64)>,
    writer: Option<Sched>,
    process_cpu: Option<Duration>,
    wal_mib: f64,
}

async fn throughput(root: &Path, durability: Durability, name: &str) -> Result<Throughput> {
    let (audit, _state) = open(root, name, durability)?;
    let db = audit.db_path().to_owned();
    let _ = load(&audit, WRITERS, WARMUP, u64::MAX).await;
    let (sched0, cpu0, seq0) = (
        thread_sched("audit-writer"),
        process_cpu(),
        audit.committed(),
    );
    let load = load(&audit, WRITERS, LOAD, u64::MAX).await;
    let (sched1, cpu1, seq1) = (
        thread_sched("audit-writer"),
        process_cpu(),
        audit.committed(),
    );
    let wal_mib = file_len(&wal_path(&db)) as f64 / 1048576.0;
    close(audit).await;
    let writer = sched0.zip(sched1).map(|(a, b)| Sched {
        run: b.run.saturating_sub(a.run),
        wait: b.wait.saturating_sub(a.wait),
    });
    let batches = match batches(&db, seq0, seq1) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("  warning: batch sizes unavailable: {e:#}");
            None
        }
    };
    Ok(Throughput {
        load,
        batches,
        writer,
        process_cpu: cpu0.zip(cpu1).map(|(a, b)| b.saturating_sub(a)),
        wal_mib,
    })
}

async fn single(root: &Path, durability: Durability, name: &str) -> Result<Load> {
    let (audit, _state) = open(root, name, durability)?;
    let _ = load(&audit, 1, WARMUP, u64::MAX).await;
    let load = load(&audit, 1, SINGLE, u64::MAX).await;
    close(audit).await;
    Ok(load)
}

struct Verified {
    build: Load,
    build_wal_mib: f64,
    records: u64,
    checkpoints: usize,
    elapsed: Duration,
    db_mib: f64,
}

async fn verify_phase(root: &Path) -> Result<Verified> {
    let (audit, state) = open(root, "verify", Durability::Commit)?;
    let db = audit.db_path().to_owned();
    let build = load(&audit, WRITERS, Duration::from_secs(3600), VERIFY_RECORDS).await;
    let build_wal_mib = file_len(&wal_path(&db)) as f64 / 1048576.0;
    close(audit).await;
    let public = fs::read_to_string(state.path("audit.pub")).context("reading audit.pub")?;
    let jsonl = state.path("checkpoints.jsonl");
    let db_mib = (file_len(&db) + file_len(&wal_path(&db))) as f64 / 1048576.0;
    let t = Instant::now();
    let report = verify(&db, Some(&jsonl), Some(public.trim()))
        .with_context(|| format!("verifying {}", db.display()))?;
    let elapsed = t.elapsed();
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
    Ok(Verified {
        build,
        build_wal_mib,
        records: report.records,
        checkpoints: report.checkpoints,
        elapsed,
        db_mib,
    })
}

/// CPU the writer spends per record outside SQLite: `seq`/`ts`, canonical JSON,
/// SHA-256 link, hex (what `store::Writer::commit` does before each INSERT).
fn chain_cost(audit_like: &Map<String, Value>) -> f64 {
    const N: usize = 200_000;
    let mut records: Vec<Map<String, Value>> = (0..N).map(|_| audit_like.clone()).collect();
    let mut head = chain::genesis("bench");
    let mut bytes = 0usize;
    let start = Instant::now();
    for (seq, record) in records.iter_mut().enumerate() {
        record.insert("seq".into(), (seq as u64 + 1).into());
        record.insert("ts".into(), 1_760_000_000_000_000i64.into());
        let text = chain::canonical(&Value::Object(std::mem::take(record)));
        head = chain::link(&head, text.as_bytes());
        bytes += chain::hex(&head).len();
    }
    std::hint::black_box(bytes);
    start.elapsed().as_nanos() as f64 / N as f64
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

fn row(out: &mut String, label: &str, fsync: &str, commit: &str, target: &str) {
    let _ = writeln!(out, "  {label:<34}{fsync:>24}{commit:>24}   {target}");
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
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let workers = tokio::runtime::Handle::current().metrics().num_workers();

    eprintln!("audit bench in {} …", root.display());
    eprintln!("  baseline fsync");
    let append = raw_fsync(root, true)?;
    let overwrite = raw_fsync(root, false)?;
    let fsync_p50 = f64::from(pct(&append, 0.5).max(1));

    eprintln!("  64 writers, fsync");
    let tp_fsync = throughput(root, Durability::Fsync, "tp-fsync").await?;
    eprintln!("  64 writers, commit");
    let tp_commit = throughput(root, Durability::Commit, "tp-commit").await?;
    eprintln!("  1 writer, fsync");
    let one_fsync = single(root, Durability::Fsync, "one-fsync").await?;
    eprintln!("  1 writer, commit");
    let one_commit = single(root, Durability::Commit, "one-commit").await?;
    eprintln!(
        "  building {} records, then verify",
        int(VERIFY_RECORDS as f64)
    );
    let verified = verify_phase(root).await?;

    // The record as the writer stores it (with seq and ts), and its CPU cost outside SQLite.
    let (sample, state) = open(root, "sample", Durability::Commit)?;
    let mut template = decision(&sample, 0x1_2345);
    close(sample).await;
    drop(state);
    let chain_ns = chain_cost(&template);
    template.insert("seq".into(), 123_456u64.into());
    template.insert("ts".into(), 1_760_000_000_000_000i64.into());
    let record_bytes = chain::canonical(&Value::Object(template)).len();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "audit log: Audit::commit end to end (queue → writer thread → SQLite WAL group commit)"
    );
    let _ = writeln!(
        out,
        "  dir {} on {}; /tmp is {}",
        root.display(),
        filesystem(root),
        filesystem(Path::new("/tmp"))
    );
    let _ = writeln!(
        out,
        "  {cpus} CPUs, {workers} tokio workers; record {record_bytes} bytes canonical (decision, allow)"
    );
    let _ = writeln!(
        out,
        "  baseline 4 KiB write + fdatasync (n={FSYNC_SAMPLES}): append p50 {} µs p99 {} µs; overwrite p50 {} µs p99 {} µs",
        pct(&append, 0.5),
        pct(&append, 0.99),
        pct(&overwrite, 0.5),
        pct(&overwrite, 0.99)
    );
    let _ = writeln!(out);
    row(&mut out, "", "fsync", "commit", "target");
    let _ = writeln!(out, "  {WRITERS} writers, {} s", LOAD.as_secs());
    let both = |f: &dyn Fn(&Throughput) -> String| (f(&tp_fsync), f(&tp_commit));
    let (a, b) = both(&|t| int(t.load.rate()));
    row(&mut out, "  durable records/s", &a, &b, "≥ 100,000 (fsync)");
    let (a, b) = both(&|t| format!("{:.2}×", t.load.rate() / 100_000.0));
    row(&mut out, "  vs 100,000/s", &a, &b, "");
    let (a, b) = both(&|t| format!("{:.1}", t.load.rate() * fsync_p50 / 1e6));
    row(&mut out, "  records per raw fsync p50", &a, &b, "");
    let (a, b) = both(&|t| {
        format!(
            "{}/{}/{}",
            int(f64::from(t.load.pct(0.5))),
            int(f64::from(t.load.pct(0.99))),
            int(f64::from(t.load.max()))
        )
    });
    row(
        &mut out,
        "  commit wait p50/p99/max µs",
        &a,
        &b,
        "p99 < 10,000",
    );
    let (a, b) = both(&|t| {
        format!(
            "{} ({:.3}%)",
            t.load.stalls(),
            100.0 * t.load.stalls() as f64 / t.load.lat.len().max(1) as f64
        )
    });
    row(&mut out, "  stalls > 10 ms", &a, &b, "");
    let (a, b) = both(&|t| {
        t.batches.map_or("n/a".into(), |(n, avg, max)| {
            format!("{} × {avg:.1} (max {max})", int(n as f64))
        })
    });
    row(&mut out, "  group commits × avg records", &a, &b, "");
    let (a, b) = both(&|t| {
        t.batches.map_or("n/a".into(), |(n, _, _)| {
            format!(
                "{:.0}",
                t.load.elapsed.as_secs_f64() * 1e6 / n.max(1) as f64
            )
        })
    });
    row(&mut out, "  µs per group commit", &a, &b, "");
    let (a, b) = both(&|t| {
        t.writer.map_or("n/a".into(), |s| {
            let secs = t.load.elapsed.as_secs_f64();
            format!(
                "{:.0}% / {:.0}%",
                100.0 * s.run.as_secs_f64() / secs,
                100.0 * s.wait.as_secs_f64() / secs
            )
        })
    });
    row(&mut out, "  writer thread on CPU / runnable", &a, &b, "");
    let (a, b) = both(&|t| {
        t.process_cpu.map_or("n/a".into(), |c| {
            format!(
                "{:.0}% of {}%",
                100.0 * c.as_secs_f64() / t.load.elapsed.as_secs_f64(),
                cpus * 100
            )
        })
    });
    row(&mut out, "  process CPU", &a, &b, "");
    let (a, b) = both(&|t| format!("{:.1}", t.wal_mib));
    row(&mut out, "  WAL at end of load MiB", &a, &b, "");
    let (a, b) = both(&|t| format!("{}", t.load.errors));
    row(&mut out, "  commit errors", &a, &b, "0");

    let _ = writeln!(
        out,
        "  1 writer, {} s (one commit at a time)",
        SINGLE.as_secs()
    );
    let one = [&one_fsync, &one_commit];
    let [a, b] = one.map(|l| int(l.rate()));
    row(&mut out, "  commits/s", &a, &b, "");
    let [a, b] = one.map(|l| {
        format!(
            "{}/{}/{}",
            int(f64::from(l.pct(0.5))),
            int(f64::from(l.pct(0.99))),
            int(f64::from(l.max()))
        )
    });
    row(
        &mut out,
        "  commit wait p50/p99/max µs",
        &a,
        &b,
        "p50 ≤ 250 (fsync), ≤ 60 (commit)",
    );
    let [a, b] = one.map(|l| format!("{:.2}×", f64::from(l.pct(0.5)) / fsync_p50));
    row(&mut out, "  p50 / raw fsync p50", &a, &b, "");
    let [a, b] = one.map(|l| format!("{}", l.errors));
    row(&mut out, "  commit errors", &a, &b, "0");

    let v = &verified;
    let _ = writeln!(out, "  verify, {} records", int(v.records as f64));
    let _ = writeln!(
        out,
        "    built with commit, {WRITERS} writers: {:.1} s, {}/s, commit wait p99 {} µs max {} µs, WAL {:.0} MiB at the end, {} errors",
        v.build.elapsed.as_secs_f64(),
        int(v.build.rate()),
        int(f64::from(v.build.pct(0.99))),
        int(f64::from(v.build.max())),
        v.build_wal_mib,
        v.build.errors
    );
    let _ = writeln!(
        out,
        "    verify: {:.2} s, {} records/s, {} checkpoints, db {:.0} MiB   (target < 2 s)",
        v.elapsed.as_secs_f64(),
        int(v.records as f64 / v.elapsed.as_secs_f64()),
        v.checkpoints,
        v.db_mib
    );
    let _ = writeln!(
        out,
        "  writer CPU per record outside SQLite (seq/ts, canonical JSON, SHA-256, hex): {:.2} µs",
        chain_ns / 1000.0
    );
    let first_errors: Vec<String> = [
        &tp_fsync.load,
        &tp_commit.load,
        &one_fsync,
        &one_commit,
        &v.build,
    ]
    .iter()
    .filter_map(|l| l.first_error.clone())
    .collect();
    if let Some(e) = first_errors.first() {
        let _ = writeln!(out, "  first commit error: {e}");
    }
    print!("{out}");
    Ok(())
}
