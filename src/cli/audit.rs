//! `agentgate audit verify | tail | export`: read the log without the proxy's help (a
//! read-only SQLite connection works while the proxy writes).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};
use rusqlite::params;

use agentgate::audit::checkpoint::{JSONL_FILE, PUB_FILE};
use agentgate::audit::verify::{Sources, verify_all};
use agentgate::audit::view::View;
use agentgate::config::Config;
use agentgate::state::StateDir;

use super::Output;

/// `agentgate audit`.
#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Recompute the hash chain and every signed checkpoint; exit 0 only if intact.
    Verify {
        /// The log (default: audit.path, else audit.db in the state dir).
        #[arg(long)]
        db: Option<PathBuf>,
        /// Checkpoints kept elsewhere (default: checkpoints.jsonl beside the log).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Public key file (hex) the checkpoints must be signed with (default: audit.pub
        /// in the state dir). Keep a copy somewhere the log's host cannot change.
        #[arg(long)]
        pubkey: Option<PathBuf>,
        /// Verify the archived segments too (default: audit.archive_dir when set); the
        /// chain must then be whole from the first record.
        #[arg(long)]
        archive: Option<PathBuf>,
        /// Verify every instance's log as the fleet's audit stream holds it ([fleet]).
        #[arg(long, conflicts_with_all = ["db", "checkpoint", "pubkey", "archive"])]
        fleet: bool,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// Print the last records, and with -f keep printing new ones.
    Tail {
        #[arg(long)]
        db: Option<PathBuf>,
        /// Read archived segments from here too (default: audit.archive_dir).
        #[arg(long)]
        archive: Option<PathBuf>,
        /// How many records to start with.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u32,
        /// Follow new records.
        #[arg(short, long)]
        follow: bool,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// Write records as JSON lines: {"hash": …, "record": {…}} (record bytes as hashed).
    Export {
        #[arg(long)]
        db: Option<PathBuf>,
        /// Read archived segments from here too (default: audit.archive_dir).
        #[arg(long)]
        archive: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// Only records after this seq.
        #[arg(long, default_value_t = 0)]
        since: u64,
    },
}

/// Export formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ExportFormat {
    Jsonl,
}

fn db_path(state: &StateDir, config: &Config, db: Option<PathBuf>) -> PathBuf {
    db.unwrap_or_else(|| config.audit.db_path(state))
}

/// The archive to read: `--archive`, else `audit.archive_dir`; a named one must exist.
fn archive_path(config: &Config, archive: Option<PathBuf>) -> Result<Option<PathBuf>> {
    match archive {
        Some(dir) if !dir.is_dir() => bail!("archive directory {} does not exist", dir.display()),
        Some(dir) => Ok(Some(dir)),
        None => Ok(config.audit.archive().map(PathBuf::from)),
    }
}

/// A view of the whole log (every segment) at `db`.
fn open(db: &Path, archive: Option<&Path>) -> Result<View> {
    if !db.exists() {
        bail!(
            "no audit log at {} (start the proxy once, or pass --db)",
            db.display()
        );
    }
    View::open(db, archive).with_context(|| format!("opening {}", db.display()))
}

/// Runs an `audit` subcommand; `Ok(false)` means verification found a problem.
pub(crate) fn run(state: &StateDir, config: &Config, cmd: AuditCommand) -> Result<bool> {
    match cmd {
        AuditCommand::Verify {
            fleet: true,
            output,
            ..
        } => verify_fleet(config, output),
        AuditCommand::Verify {
            db,
            checkpoint,
            pubkey,
            archive,
            output,
            ..
        } => {
            let db = db_path(state, config, db);
            let archive = archive_path(config, archive)?;
            // The default file may not exist yet (no checkpoint written); a named one must.
            let checkpoint = match checkpoint {
                Some(path) if !path.exists() => {
                    bail!("checkpoint file {} does not exist", path.display())
                }
                Some(path) => Some(path),
                None => Some(db.with_file_name(JSONL_FILE)).filter(|p| p.exists()),
            };
            let pubkey_path = pubkey.unwrap_or_else(|| state.path(PUB_FILE));
            let key = std::fs::read_to_string(&pubkey_path).with_context(|| {
                format!(
                    "reading the checkpoint public key {}",
                    pubkey_path.display()
                )
            })?;
            let sources = Sources {
                archive: archive.as_deref(),
                checkpoint_file: checkpoint.as_deref(),
                public_hex: Some(key.trim()),
            };
            let report = verify_all(&db, &sources)?;
            match output {
                Output::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
                Output::Text => {
                    outln!(
                        "{}: {} records in {} sealed segments and the active one, {} checkpoints checked in {} ms ({} records/s)",
                        db.display(),
                        report.records,
                        report.segments,
                        report.checkpoints,
                        report.elapsed_ms,
                        report.records_per_sec
                    );
                    if report.from_seq > 1 {
                        outln!(
                            "from seq {}: earlier segments are archived (pass --archive DIR to verify them)",
                            report.from_seq
                        );
                    }
                    match &report.problem {
                        None => outln!("intact"),
                        Some(p) => match p.segment.as_deref().filter(|s| *s != "active") {
                            Some(segment) => outln!(
                                "NOT INTACT at seq {} in segment {segment}: {}",
                                p.seq,
                                p.why
                            ),
                            None => outln!("NOT INTACT at seq {}: {}", p.seq, p.why),
                        },
                    }
                }
            }
            Ok(report.problem.is_none())
        }
        AuditCommand::Tail {
            db,
            archive,
            lines,
            follow,
            output,
        } => {
            let (db, archive) = (db_path(state, config, db), archive_path(config, archive)?);
            let last = open(&db, archive.as_deref())?.last_seq()?;
            let mut after = last.saturating_sub(u64::from(lines));
            loop {
                // A fresh view each time: a seal moves records between files.
                after = print_after(&open(&db, archive.as_deref())?, after, output)?;
                if !follow {
                    return Ok(true);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        AuditCommand::Export {
            db,
            archive,
            format,
            since,
        } => {
            let ExportFormat::Jsonl = format;
            let (db, archive) = (db_path(state, config, db), archive_path(config, archive)?);
            let view = open(&db, archive.as_deref())?;
            use std::io::Write;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut failed = None;
            view.ascending(since, |part| {
                let mut stmt = part
                    .conn
                    .prepare("SELECT record, hash FROM records WHERE seq > ?1 ORDER BY seq")?;
                let mut rows = stmt.query(params![part.lower as i64])?;
                while let Some(row) = rows.next()? {
                    let record: String = row.get(0)?;
                    let hash: String = row.get(1)?;
                    if let Err(e) = writeln!(out, "{{\"hash\":\"{hash}\",\"record\":{record}}}") {
                        failed = Some(e);
                        return Ok(ControlFlow::Break(()));
                    }
                }
                Ok(ControlFlow::Continue(()))
            })?;
            crate::cli::stdout_written(failed.map_or_else(|| out.flush(), Err))?;
            Ok(true)
        }
    }
}

/// `audit verify --fleet`: every log in the fleet's stream, intact only if all are.
fn verify_fleet(config: &Config, output: Output) -> Result<bool> {
    if !config.fleet.enabled() {
        bail!("--fleet reads the fleet's audit stream: set [fleet] url (and name) in the config");
    }
    let logs = crate::cli::block_on(agentgate::fleet::stream::verify(&config.fleet))??;
    let intact = !logs.is_empty() && logs.iter().all(|l| l.problem.is_none());
    match output {
        Output::Json => outln!("{}", serde_json::to_string_pretty(&logs)?),
        Output::Text => {
            if logs.is_empty() {
                outln!(
                    "fleet {}: the audit stream holds no records",
                    config.fleet.name
                );
            }
            for l in &logs {
                match &l.problem {
                    None => outln!(
                        "log {}: {} records, {} checkpoints, intact",
                        l.log_id,
                        l.records,
                        l.checkpoints
                    ),
                    Some(p) => outln!(
                        "log {}: {} records, {} checkpoints, NOT INTACT at {p}",
                        l.log_id,
                        l.records,
                        l.checkpoints
                    ),
                }
            }
        }
    }
    Ok(intact)
}

fn print_after(view: &View, after: u64, output: Output) -> Result<u64> {
    let rows = view.page_after(after, 10_000, |part, left| {
        let mut stmt = part.conn.prepare_cached(
            "SELECT seq, record FROM records WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![part.lower as i64, left as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
        })?;
        rows.collect()
    })?;
    let mut last = after;
    for (seq, text) in rows {
        last = seq;
        match output {
            Output::Json => outln!("{text}"),
            Output::Text => {
                let r: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                let s = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_owned();
                let ts = r.get("ts").and_then(|v| v.as_i64()).unwrap_or(0);
                let when = agentgate::clock::rfc3339(ts / 1_000_000);
                match s("kind").as_str() {
                    "decision" => outln!(
                        "{last:>8} {when} {:<6} {:<8} {} {}{} {} {}",
                        s("effect"),
                        s("gate"),
                        s("method"),
                        s("host"),
                        s("path"),
                        s("agent"),
                        s("request_id")
                    ),
                    "outcome" => outln!(
                        "{last:>8} {when} outcome  {} status={} up={} down={} {}us",
                        s("request_id"),
                        r["status"],
                        r["bytes_up"],
                        r["bytes_down"],
                        r["duration_us"]
                    ),
                    kind => outln!(
                        "{last:>8} {when} {kind:<8} {} {}",
                        s("event"),
                        r.get("detail").map(|d| d.to_string()).unwrap_or_default()
                    ),
                }
            }
        }
    }
    Ok(last)
}
