//! What segments cost and what they buy, on a real disk:
//!
//! - the cost of a seal on commit latency: one writer (an allowed request at concurrency 1)
//!   and 16 writers committing with `durability = "fsync"` for a few seconds, once with
//!   segments small enough to seal every few hundred milliseconds and once with segments
//!   that never seal (same run, same directory): p50/p99/max of the commit wait, and how
//!   many seals happened;
//! - bytes per record: the records' own bytes (canonical JSON and hex hash), the active
//!   file's bytes, and the sealed files' bytes, per record;
//! - `verify` across history: a log of `AGENTGATE_BENCH_RECORDS` records (default
//!   10,000,000) written by 64 writers with `commit` durability into 64 MiB segments, every
//!   sealed segment archived and removed from the state dir by retention, then verified
//!   from the archive with its signed checkpoints and public key.
//!
//! Run: `cargo bench --bench segments` (release profile). Works under `target/` (a real
//! disk; `/tmp` may be tmpfs) or `$AGENTGATE_BENCH_DIR`, and needs about 600 bytes of disk
//! per record for the verify phase (removed at the end).
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agentgate::audit::record::{Decision, Verdict};
use agentgate::audit::segment;
use agentgate::audit::verify::{Sources, verify_all, verify_visiting};
use agentgate::audit::{Audit, AuditConfig, Durability, Record};
use agentgate::state::StateDir;
use anyhow::{Context, Result, bail};

const AGENT: &str = "spiffe://agentgate.local/agent/bot";

/// A decision record as the pipeline writes it for an allowed request.
fn decision(n: u64) -> Record {
    Record::from(Decision {
        request_id: format!("bench-{n:x}"),
        agent: Some(AGENT.into()),
        tenant: None,
        jti: Some("9b2f4c1d7e3a48f6a0c5d2b1e8f7a6c3".into()),
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

/// Commits from `writers` tasks until `budget` passes or `limit` records are in; the
/// sorted commit waits (µs).
async fn load(
    audit: &Arc<Audit>,
    writers: usize,
    budget: Duration,
    limit: u64,
) -> Result<Vec<u32>> {
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + budget;
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (audit, next) = (audit.clone(), next.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= limit || Instant::now() >= deadline {
                        return Ok::<_, agentgate::audit::AuditError>(lat);
                    }
                    let t = Instant::now();
                    audit.commit(decision(n)).await?;
                    lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort_unstable();
    Ok(all)
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn open(root: &Path, name: &str, config: AuditConfig) -> Result<(Arc<Audit>, StateDir)> {
    let state = StateDir::open_or_create(root.join(name))?;
    let audit = Audit::open(&config, &state, "bench", Default::default())
        .with_context(|| format!("opening the log in {name}"))?;
    Ok((Arc::new(audit), state))
}

fn sealed(db: &Path) -> Vec<segment::Sealed> {
    segment::list(&segment::local_dir(db)).unwrap_or_default()
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Commit latency with and without seals, one writer and 16.
async fn seal_cost(root: &Path) -> Result<()> {
    println!("## The cost of a seal on commit latency (durability = \"fsync\")\n");
    println!("| writers | segments | records | seals | p50 µs | p99 µs | max µs |");
    println!("|---|---|---|---|---|---|---|");
    for writers in [1usize, 16] {
        for (label, max) in [
            ("never sealed", 1u64 << 40),
            ("sealed every ~512 KiB", 512 << 10),
        ] {
            let config = AuditConfig {
                durability: Durability::Fsync,
                segment_max_bytes: bytesize::ByteSize::b(max),
                ..AuditConfig::default()
            };
            let name = format!("seal-{writers}-{max}");
            let (audit, _state) = open(root, &name, config)?;
            let lat = load(&audit, writers, Duration::from_secs(6), u64::MAX).await?;
            let db = audit.db_path().to_owned();
            audit.close().await;
            println!(
                "| {writers} | {label} | {} | {} | {} | {} | {} |",
                lat.len(),
                sealed(&db).len(),
                pct(&lat, 0.5),
                pct(&lat, 0.99),
                lat.last().copied().unwrap_or(0)
            );
        }
    }
    println!();
    Ok(())
}

/// A log of `records` records in archived 64 MiB segments, verified from the archive.
async fn verify_history(root: &Path, records: u64) -> Result<()> {
    let archive = root.join("archive");
    let mut config = AuditConfig {
        durability: Durability::Commit,
        archive_dir: archive.clone(),
        ..AuditConfig::default()
    };
    config.retention.max_bytes = Some(bytesize::ByteSize::b(1));
    let (audit, state) = open(root, "history", config)?;
    let db = audit.db_path().to_owned();
    let log_id = audit.log_id().to_owned();
    let t = Instant::now();
    let lat = load(&audit, 64, Duration::from_secs(3600), records).await?;
    let wrote = t.elapsed();
    // The sealer archives and retention removes local copies off the request path: wait
    // for it before closing, so the verify below reads the archive.
    let t = Instant::now();
    while !sealed(&db).is_empty() && t.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    audit.close().await;
    let archived = segment::list(&segment::archive_dir(&archive, &log_id))?;
    let archived_bytes: u64 = archived.iter().map(|s| size(&s.path)).sum();
    let archived_records: u64 = archived.iter().map(|s| s.last - s.first + 1).sum();
    println!("## Verify across history\n");
    println!(
        "- built {} records in {:.1} s ({:.0}/s, 64 writers, commit p99 {} µs); {} sealed segments archived ({:.2} GiB), {:.1} s more for the sealer to finish",
        lat.len(),
        wrote.as_secs_f64(),
        lat.len() as f64 / wrote.as_secs_f64(),
        pct(&lat, 0.99),
        archived.len(),
        archived_bytes as f64 / f64::from(1 << 30),
        t.elapsed().as_secs_f64()
    );
    let public = std::fs::read_to_string(state.path("audit.pub"))?;
    let jsonl = state.path("checkpoints.jsonl");
    let sources = Sources {
        archive: Some(&archive),
        checkpoint_file: Some(&jsonl),
        public_hex: Some(public.trim()),
    };
    let t = Instant::now();
    let report = verify_all(&db, &sources)?;
    let took = t.elapsed();
    // Once more in order, handing each record to a visitor (what `policy replay` does).
    let mut text_bytes = 0u64;
    let t = Instant::now();
    let visited = verify_visiting(&db, &sources, |_, bytes| text_bytes += bytes.len() as u64)?;
    let took_in_order = t.elapsed();
    if visited.problem.is_some() || visited.records != report.records {
        bail!("the visiting verify disagrees: {:?}", visited.problem);
    }
    if let Some(p) = &report.problem {
        bail!(
            "verify found a problem in a sound log: seq {}: {}",
            p.seq,
            p.why
        );
    }
    if report.records != lat.len() as u64 || report.from_seq != 1 {
        bail!(
            "verify counted {} records from {}",
            report.records,
            report.from_seq
        );
    }
    println!(
        "- verify --archive: {} records in {} segments and the active one, {} checkpoints, in {:.2} s: **{:.0} records/s**",
        report.records,
        report.segments,
        report.checkpoints,
        took.as_secs_f64(),
        report.records as f64 / took.as_secs_f64()
    );
    println!(
        "- the same, one segment after another with a visitor (as `policy replay` reads): {:.2} s, {:.0} records/s",
        took_in_order.as_secs_f64(),
        report.records as f64 / took_in_order.as_secs_f64()
    );
    let active = db.clone();
    let active_records = report.records - archived_records;
    println!("\n## Bytes per record\n");
    println!("| what | bytes per record |\n|---|---|");
    println!(
        "| canonical JSON + hex hash (what is hashed and stored) | {:.0} |",
        (text_bytes + 64 * report.records) as f64 / report.records as f64
    );
    println!(
        "| sealed segment files (SQLite pages, no free space) | {:.0} |",
        archived_bytes as f64 / archived_records.max(1) as f64
    );
    println!(
        "| active file (`audit.db`; its pages are reused after a seal) | {:.0} ({} records in view, {:.1} MiB file) |",
        size(&active) as f64 / active_records.max(1) as f64,
        active_records,
        size(&active) as f64 / 1048576.0
    );
    Ok(())
}

fn main() -> Result<()> {
    let base = std::env::var_os("AGENTGATE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/bench-segments"));
    std::fs::create_dir_all(&base)?;
    let root = tempfile::tempdir_in(&base)?;
    let records = std::env::var("AGENTGATE_BENCH_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000_000u64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        seal_cost(root.path()).await?;
        verify_history(root.path(), records).await
    })
}
