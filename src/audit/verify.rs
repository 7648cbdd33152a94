//! `agentgate audit verify`: recomputes the chain from genesis, checks that `seq` has no
//! gaps, and checks every signed checkpoint (in the log and in an external
//! `checkpoints.jsonl`) against the chain: a truncated tail, a rollback to an older copy,
//! or a log rewritten with recomputed hashes all disagree with a checkpoint signed earlier.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use super::chain;
use super::checkpoint::{Signed, verify_signature};
use super::record::Head;

/// The first problem found, with the `seq` it concerns.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub seq: u64,
    pub why: String,
}

/// What verification found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub log_id: String,
    pub records: u64,
    pub checkpoints: usize,
    pub elapsed_ms: u128,
    pub records_per_sec: u64,
    /// `None` when the log is intact.
    pub problem: Option<Problem>,
}

/// Why verification could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read audit log {path}: {reason}")]
    Db { path: PathBuf, reason: String },
    #[error("checkpoint file {path}: {reason}")]
    Checkpoints { path: PathBuf, reason: String },
}

/// Verifies the log at `db`. Checkpoints come from the log itself and from
/// `checkpoint_file` (if given and present); signatures are checked with `public_hex`.
pub fn verify(
    db: &Path,
    checkpoint_file: Option<&Path>,
    public_hex: Option<&str>,
) -> Result<Report, VerifyError> {
    verify_visiting(db, checkpoint_file, public_hex, |_, _| {})
}

/// Verifies like [`verify`], handing each record to `visit` (its `seq` and canonical
/// bytes) once it is linked into the chain. A reader that needs a verified log must still
/// check the report: records after a problem are never visited, but those before it were.
pub fn verify_visiting(
    db: &Path,
    checkpoint_file: Option<&Path>,
    public_hex: Option<&str>,
    mut visit: impl FnMut(u64, &[u8]),
) -> Result<Report, VerifyError> {
    let started = Instant::now();
    let err = |e: rusqlite::Error| VerifyError::Db {
        path: db.to_owned(),
        reason: e.to_string(),
    };
    if !db.exists() {
        return Err(VerifyError::Db {
            path: db.to_owned(),
            reason: "no such file".into(),
        });
    }
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(err)?;
    let log_id: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'log_id'", [], |r| {
            r.get(0)
        })
        .map_err(err)?;

    let mut checkpoints: Vec<(String, Signed)> = Vec::new();
    {
        let mut stmt = conn
            .prepare("SELECT signed FROM checkpoints")
            .map_err(err)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(err)?;
        for row in rows {
            let text = row.map_err(err)?;
            match serde_json::from_str::<Signed>(&text) {
                Ok(s) => checkpoints.push(("log".into(), s)),
                Err(e) => {
                    return Ok(report(
                        log_id,
                        0,
                        0,
                        started,
                        Some(Problem {
                            seq: 0,
                            why: format!("unreadable checkpoint in the log: {e}"),
                        }),
                    ));
                }
            }
        }
    }
    if let Some(path) = checkpoint_file {
        let text = std::fs::read_to_string(path).map_err(|e| VerifyError::Checkpoints {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        for (i, line) in text
            .split('\n')
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            match serde_json::from_str::<Signed>(line) {
                Ok(s) => checkpoints.push((format!("{}:{}", path.display(), i + 1), s)),
                // A line cut short by a crash mid-write: the writer starts a fresh line
                // after it, so it carries no claim to check.
                Err(e) if e.is_eof() => {
                    tracing::warn!(path = %path.display(), line = i + 1, "torn checkpoint line skipped");
                }
                Err(e) => {
                    let why = format!("{} line {} is not a checkpoint: {e}", path.display(), i + 1);
                    return Ok(report(
                        log_id,
                        0,
                        checkpoints.len(),
                        started,
                        Some(Problem { seq: 0, why }),
                    ));
                }
            }
        }
    }
    // Signatures first: a forged checkpoint is a problem whatever the chain says.
    for (origin, s) in &checkpoints {
        let Some(key) = public_hex else { break };
        if !s.key.eq_ignore_ascii_case(key) || !verify_signature(s, &key.to_ascii_lowercase()) {
            return Ok(report(
                log_id,
                0,
                checkpoints.len(),
                started,
                Some(Problem {
                    seq: s.checkpoint.size,
                    why: format!(
                        "checkpoint at size {} ({origin}) has an invalid signature for this log's key",
                        s.checkpoint.size
                    ),
                }),
            ));
        }
        if s.checkpoint.log_id != log_id {
            return Ok(report(
                log_id.clone(),
                0,
                checkpoints.len(),
                started,
                Some(Problem {
                    seq: s.checkpoint.size,
                    why: format!(
                        "checkpoint ({origin}) belongs to log {}, not {log_id}",
                        s.checkpoint.log_id
                    ),
                }),
            ));
        }
    }
    let mut expect: BTreeMap<u64, (String, String)> = BTreeMap::new();
    for (origin, s) in &checkpoints {
        if let Some((head, first)) = expect.get(&s.checkpoint.size) {
            if *head != s.checkpoint.head {
                return Ok(report(
                    log_id,
                    0,
                    checkpoints.len(),
                    started,
                    Some(Problem {
                        seq: s.checkpoint.size,
                        why: format!(
                            "two signed checkpoints disagree at size {} ({first} and {origin})",
                            s.checkpoint.size
                        ),
                    }),
                ));
            }
            continue;
        }
        expect.insert(
            s.checkpoint.size,
            (s.checkpoint.head.clone(), origin.clone()),
        );
    }

    let mut prev = chain::genesis(&log_id);
    let mut expected_seq = 1u64;
    // Rows are read on their own thread and hashed here: SQLite's share of the work
    // overlaps the hashing instead of adding to it.
    let rows = read_rows(db.to_owned());
    let mut problem = None;
    'rows: for batch in rows {
        for row in batch.map_err(|reason| VerifyError::Db {
            path: db.to_owned(),
            reason,
        })? {
            let (seq, record, stored) = (row.seq, row.record.as_slice(), row.hash.as_str());
            if seq != expected_seq {
                problem = Some(Problem {
                    seq: expected_seq,
                    why: format!("record {expected_seq} is missing (the next record is {seq})"),
                });
                break 'rows;
            }
            match serde_json::from_slice::<Head>(record) {
                Ok(r) if r.seq == seq => {}
                Ok(r) => {
                    problem = Some(Problem {
                        seq,
                        why: format!("record {seq} says it is seq {}", r.seq),
                    });
                    break 'rows;
                }
                Err(e) => {
                    problem = Some(Problem {
                        seq,
                        why: format!("record {seq} is not valid JSON: {e}"),
                    });
                    break 'rows;
                }
            }
            let hash = chain::link(&prev, record);
            if !chain::hex_matches(&hash, stored) {
                problem = Some(Problem {
                    seq,
                    why: format!(
                        "record {seq} does not hash to its stored hash (its content or an earlier record changed)"
                    ),
                });
                break 'rows;
            }
            if let Some((head, origin)) = expect.get(&seq) {
                if chain::parse_hash(head) != Some(hash) {
                    problem = Some(Problem {
                        seq,
                        why: format!(
                            "records up to {seq} differ from the signed checkpoint ({origin}): the log was rewritten or replaced"
                        ),
                    });
                    break 'rows;
                }
            }
            visit(seq, record);
            prev = hash;
            expected_seq += 1;
        }
    }
    let records = expected_seq - 1;
    if problem.is_none() {
        if let Some((&size, (_, origin))) = expect.range(records + 1..).next() {
            problem = Some(Problem {
                seq: records + 1,
                why: format!(
                    "the log ends at {records} but a signed checkpoint ({origin}) covers {size} records: truncated or rolled back"
                ),
            });
        }
    }
    Ok(report(log_id, records, checkpoints.len(), started, problem))
}

/// One row as read.
struct Row {
    seq: u64,
    record: Vec<u8>,
    hash: String,
}

/// Streams the records in `seq` order from a reader thread, in batches.
fn read_rows(db: PathBuf) -> std::sync::mpsc::Receiver<Result<Vec<Row>, String>> {
    const BATCH: usize = 4096;
    let (tx, rx) = std::sync::mpsc::sync_channel(4);
    std::thread::spawn(move || {
        let read = || -> Result<(), rusqlite::Error> {
            let conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            let mut stmt = conn.prepare("SELECT seq, record, hash FROM records ORDER BY seq")?;
            let mut rows = stmt.query([])?;
            let mut batch = Vec::with_capacity(BATCH);
            while let Some(row) = rows.next()? {
                batch.push(Row {
                    seq: row.get::<_, i64>(0)? as u64,
                    record: row
                        .get_ref(1)?
                        .as_bytes()
                        .map(<[u8]>::to_vec)
                        .unwrap_or_default(),
                    hash: row.get(2)?,
                });
                if batch.len() == BATCH
                    && tx
                        .send(Ok(std::mem::replace(&mut batch, Vec::with_capacity(BATCH))))
                        .is_err()
                {
                    return Ok(()); // the verifier stopped early
                }
            }
            if !batch.is_empty() {
                let _ = tx.send(Ok(batch));
            }
            Ok(())
        };
        if let Err(e) = read() {
            let _ = tx.send(Err(e.to_string()));
        }
    });
    rx
}

fn report(
    log_id: String,
    records: u64,
    checkpoints: usize,
    started: Instant,
    problem: Option<Problem>,
) -> Report {
    let elapsed = started.elapsed().max(Duration::from_micros(1));
    Report {
        log_id,
        records,
        checkpoints,
        elapsed_ms: elapsed.as_millis(),
        records_per_sec: (records as f64 / elapsed.as_secs_f64()) as u64,
        problem,
    }
}
