//! `agentgate audit verify | tail | export`: read the log without the proxy's help (a
//! read-only SQLite connection works while the proxy writes).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};
use rusqlite::{Connection, OpenFlags, params};

use agentgate::audit::checkpoint::{JSONL_FILE, PUB_FILE};
use agentgate::audit::verify::verify;
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
        /// Verify every instance's log as the fleet's audit stream holds it ([fleet]).
        #[arg(long, conflicts_with_all = ["db", "checkpoint", "pubkey"])]
        fleet: bool,
        #[arg(long, short, value_enum, default_value_t)]
        output: Output,
    },
    /// Print the last records, and with -f keep printing new ones.
    Tail {
        #[arg(long)]
        db: Option<PathBuf>,
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

fn open(db: &Path) -> Result<Connection> {
    if !db.exists() {
        bail!(
            "no audit log at {} (start the proxy once, or pass --db)",
            db.display()
        );
    }
    Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {}", db.display()))
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
            output,
            ..
        } => {
            let db = db_path(state, config, db);
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
            let report = verify(&db, checkpoint.as_deref(), Some(key.trim()))?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Output::Text => {
                    println!(
                        "{}: {} records, {} checkpoints checked in {} ms ({} records/s)",
                        db.display(),
                        report.records,
                        report.checkpoints,
                        report.elapsed_ms,
                        report.records_per_sec
                    );
                    match &report.problem {
                        None => println!("intact"),
                        Some(p) => println!("NOT INTACT at seq {}: {}", p.seq, p.why),
                    }
                }
            }
            Ok(report.problem.is_none())
        }
        AuditCommand::Tail {
            db,
            lines,
            follow,
            output,
        } => {
            let conn = open(&db_path(state, config, db))?;
            let last: i64 =
                conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM records", [], |r| {
                    r.get(0)
                })?;
            let mut after = (last - i64::from(lines)).max(0);
            loop {
                after = print_after(&conn, after, output)?;
                if !follow {
                    return Ok(true);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        AuditCommand::Export { db, format, since } => {
            let ExportFormat::Jsonl = format;
            let conn = open(&db_path(state, config, db))?;
            let mut stmt =
                conn.prepare("SELECT record, hash FROM records WHERE seq > ?1 ORDER BY seq")?;
            let mut rows = stmt.query(params![since as i64])?;
            use std::io::Write;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            while let Some(row) = rows.next()? {
                let record: String = row.get(0)?;
                let hash: String = row.get(1)?;
                writeln!(out, "{{\"hash\":\"{hash}\",\"record\":{record}}}")?;
            }
            out.flush()?;
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
        Output::Json => println!("{}", serde_json::to_string_pretty(&logs)?),
        Output::Text => {
            if logs.is_empty() {
                println!(
                    "fleet {}: the audit stream holds no records",
                    config.fleet.name
                );
            }
            for l in &logs {
                match &l.problem {
                    None => println!(
                        "log {}: {} records, {} checkpoints, intact",
                        l.log_id, l.records, l.checkpoints
                    ),
                    Some(p) => println!(
                        "log {}: {} records, {} checkpoints, NOT INTACT at {p}",
                        l.log_id, l.records, l.checkpoints
                    ),
                }
            }
        }
    }
    Ok(intact)
}

fn print_after(conn: &Connection, after: i64, output: Output) -> Result<i64> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, record FROM records WHERE seq > ?1 ORDER BY seq LIMIT 10000",
    )?;
    let mut rows = stmt.query(params![after])?;
    let mut last = after;
    while let Some(row) = rows.next()? {
        last = row.get(0)?;
        let text: String = row.get(1)?;
        match output {
            Output::Json => println!("{text}"),
            Output::Text => {
                let r: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                let s = |k: &str| r.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_owned();
                let ts = r.get("ts").and_then(|v| v.as_i64()).unwrap_or(0);
                let when = agentgate::clock::rfc3339(ts / 1_000_000);
                match s("kind").as_str() {
                    "decision" => println!(
                        "{last:>8} {when} {:<6} {:<8} {} {}{} {} {}",
                        s("effect"),
                        s("gate"),
                        s("method"),
                        s("host"),
                        s("path"),
                        s("agent"),
                        s("request_id")
                    ),
                    "outcome" => println!(
                        "{last:>8} {when} outcome  {} status={} up={} down={} {}us",
                        s("request_id"),
                        r["status"],
                        r["bytes_up"],
                        r["bytes_down"],
                        r["duration_us"]
                    ),
                    kind => println!(
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
