//! `agentgate audit verify`: recomputes the chain from genesis across every segment (sealed
//! ones in the state dir and, when given, the archive; then the active one), checks that
//! `seq` has no gaps and that each segment links to the one before it, and checks every
//! signed checkpoint (in the segments and in an external `checkpoints.jsonl`) against the
//! chain: a truncated tail, a rollback to an older copy, a log rewritten with recomputed
//! hashes, a missing, reordered or foreign segment all disagree with something signed or
//! linked earlier.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use super::chain::{self, Hash};
use super::checkpoint::{Signed, verify_signature};
use super::record::Head;
use super::segment::{self, Sealed};

/// The first problem found, with the `seq` it concerns.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub seq: u64,
    pub why: String,
    /// The segment it is in (a sealed file's name, or `active`), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
}

/// What verification found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub log_id: String,
    /// The first `seq` verified: 1, unless earlier segments were neither in the state dir
    /// nor in the archive given (then a signed checkpoint vouches for where it starts).
    pub from_seq: u64,
    /// Records verified.
    pub records: u64,
    /// Sealed segments verified (the active one not counted).
    pub segments: usize,
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

/// Where the log's parts are and what to trust.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sources<'a> {
    /// `audit.archive_dir`: archived segments are verified too, and the chain must then be
    /// whole from the first record.
    pub archive: Option<&'a Path>,
    /// Checkpoints kept elsewhere (`checkpoints.jsonl`).
    pub checkpoint_file: Option<&'a Path>,
    /// The hex public key checkpoints must be signed with.
    pub public_hex: Option<&'a str>,
}

/// Verifies the log at `db` and its sealed segments in the state dir. Checkpoints come from
/// the log itself and from `checkpoint_file` (if given and present); signatures are
/// checked with `public_hex`.
pub fn verify(
    db: &Path,
    checkpoint_file: Option<&Path>,
    public_hex: Option<&str>,
) -> Result<Report, VerifyError> {
    let sources = Sources {
        archive: None,
        checkpoint_file,
        public_hex,
    };
    verify_all(db, &sources)
}

/// Verifies like [`verify`], with archived segments when `sources` names an archive, and
/// hands each record to `visit` (its `seq` and canonical bytes) once it is linked into the
/// chain. A reader that needs a verified log must still check the report: records after a
/// problem are never visited, but those before it were.
pub fn verify_visiting(
    db: &Path,
    sources: &Sources<'_>,
    mut visit: impl FnMut(u64, &[u8]),
) -> Result<Report, VerifyError> {
    run(db, sources, Some(&mut visit))
}

/// Verifies like [`verify_visiting`] without visiting records, so sealed segments are
/// hashed in parallel (each from the base its `meta` claims; the claims are then linked in
/// order, so the verdict and the problem named are those of the sequential walk).
pub fn verify_all(db: &Path, sources: &Sources<'_>) -> Result<Report, VerifyError> {
    run(db, sources, None)
}

/// What a visiting verify hands each linked record to.
type Visit<'a> = dyn FnMut(u64, &[u8]) + 'a;

fn run(
    db: &Path,
    sources: &Sources<'_>,
    mut visit: Option<&mut Visit<'_>>,
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
    let sealed = segment::all(db, sources.archive, &log_id).map_err(|e| VerifyError::Db {
        path: segment::local_dir(db),
        reason: e.to_string(),
    })?;
    let mut walk = Walk::new(log_id, started);

    // Every part's checkpoints, and the external file's, before any record.
    if let Err(problem) = walk.checkpoints_of(&conn, "active") {
        return Ok(walk.report(Some(problem)));
    }
    let mut parts = Vec::with_capacity(sealed.len());
    for s in &sealed {
        match Part::open(s, &walk.log_id) {
            Ok(part) => {
                if let Err(problem) = walk.checkpoints_of(&part.conn, s.name()) {
                    return Ok(walk.report(Some(problem)));
                }
                parts.push(part);
            }
            Err(problem) => return Ok(walk.report(Some(problem))),
        }
    }
    if let Some(path) = sources.checkpoint_file {
        if let Some(problem) = walk.checkpoint_file(path)? {
            return Ok(walk.report(Some(problem)));
        }
    }
    if let Some(problem) = walk.check_signatures(sources.public_hex) {
        return Ok(walk.report(Some(problem)));
    }

    let ahead = match visit {
        Some(_) => Vec::new(),
        None => speculate(&parts, &walk.expect),
    };
    for (i, part) in parts.iter().enumerate() {
        let name = part.sealed.name().to_owned();
        if let Some(problem) = walk.link(part.base, &name, sources.archive.is_some()) {
            return Ok(walk.report(Some(problem)));
        }
        // Linked: the chain so far ends exactly where this part was hashed from.
        let problem = match (ahead.get(i).cloned().flatten(), visit.as_mut()) {
            (Some(done), _) => {
                (walk.expected_seq, walk.prev) = (done.expected_seq, done.prev);
                done.problem
            }
            (None, Some(visit)) => {
                let rows = read_rows(part.sealed.path.clone(), walk.expected_seq - 1);
                walk.records(rows, &name, visit)
            }
            (None, None) => {
                let rows = read_rows(part.sealed.path.clone(), walk.expected_seq - 1);
                walk.records(rows, &name, &mut |_, _| {})
            }
        };
        if let Some(problem) = problem {
            return Ok(walk.report(Some(problem)));
        }
        if walk.expected_seq - 1 != part.sealed.last {
            let why = format!(
                "segment {name} ends at seq {} but is sealed at {}: it was truncated",
                walk.expected_seq - 1,
                part.sealed.last
            );
            return Ok(walk.report(Some(walk.problem(walk.expected_seq, why, &name))));
        }
        walk.segments += 1;
    }

    let base = segment::base(&conn, &walk.log_id).map_err(err)?;
    if walk.started && base.0 < walk.expected_seq - 1 {
        // A seal under way: the active file still holds rows a sealed file has too. The
        // chain goes on from the sealed file's last record.
    } else if let Some(problem) = walk.link(base, "active", sources.archive.is_some()) {
        return Ok(walk.report(Some(problem)));
    }
    drop(conn);
    let rows = read_rows(db.to_owned(), walk.expected_seq - 1);
    let problem = match visit {
        Some(visit) => walk.records(rows, "active", &mut &mut *visit),
        None => walk.records(rows, "active", &mut |_, _| {}),
    };
    if let Some(problem) = problem {
        return Ok(walk.report(Some(problem)));
    }
    let problem = walk.beyond_end();
    Ok(walk.report(problem))
}

/// A sealed segment hashed ahead of the walk, from the base its `meta` claims.
#[derive(Clone)]
struct Ahead {
    problem: Option<Problem>,
    expected_seq: u64,
    prev: Hash,
}

/// Hashes every part on as many threads as there are cores.
fn speculate(
    parts: &[Part<'_>],
    expect: &Arc<BTreeMap<u64, (String, String)>>,
) -> Vec<Option<Ahead>> {
    let work: Vec<(PathBuf, (u64, Hash), String)> = parts
        .iter()
        .map(|p| (p.sealed.path.clone(), p.base, p.sealed.name().to_owned()))
        .collect();
    let results: Vec<Mutex<Option<Ahead>>> = work.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(work.len());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let (Some((path, (seq, hash), name)), Some(slot)) =
                        (work.get(i), results.get(i))
                    else {
                        break;
                    };
                    let mut walk = Walk::new(String::new(), Instant::now());
                    (walk.started, walk.expected_seq, walk.prev) = (true, seq + 1, *hash);
                    walk.expect = expect.clone();
                    let rows = read_rows(path.clone(), *seq);
                    let problem = walk.records(rows, name, &mut |_, _| {});
                    if let Ok(mut slot) = slot.lock() {
                        *slot = Some(Ahead {
                            problem,
                            expected_seq: walk.expected_seq,
                            prev: walk.prev,
                        });
                    }
                }
            });
        }
    });
    results
        .into_iter()
        .map(|m| m.into_inner().ok().flatten())
        .collect()
}

/// A sealed segment opened for verification, with where it says it starts.
struct Part<'a> {
    sealed: &'a Sealed,
    conn: Connection,
    base: (u64, Hash),
}

impl<'a> Part<'a> {
    /// Opens `sealed` and checks it names itself rightly: this log, the range in its name.
    fn open(sealed: &'a Sealed, log_id: &str) -> Result<Part<'a>, Problem> {
        let name = sealed.name();
        let bad = |why: String| Problem {
            seq: sealed.first,
            why,
            segment: Some(name.to_owned()),
        };
        let read = || -> rusqlite::Result<_> {
            let conn = sealed.open()?;
            let id = segment::meta(&conn, "log_id")?;
            let base = segment::meta(&conn, segment::BASE_SEQ)?;
            let base_hash = segment::meta(&conn, segment::BASE_HASH)?;
            let last = segment::meta(&conn, segment::LAST_SEQ)?;
            Ok((conn, id, base, base_hash, last))
        };
        let (conn, id, base, base_hash, last) =
            read().map_err(|e| bad(format!("segment {name} cannot be read: {e}")))?;
        if id.as_deref() != Some(log_id) {
            return Err(bad(format!(
                "segment {name} belongs to log {}, not {log_id}",
                id.as_deref().unwrap_or("(none)")
            )));
        }
        let base_seq = base.and_then(|b| b.parse::<u64>().ok());
        let last = last.and_then(|l| l.parse::<u64>().ok());
        let base_hash = if base_seq == Some(0) {
            Some(chain::genesis(log_id))
        } else {
            base_hash.as_deref().and_then(chain::parse_hash)
        };
        match (base_seq, last, base_hash) {
            (Some(b), Some(l), Some(h)) if b + 1 == sealed.first && l == sealed.last => Ok(Part {
                sealed,
                conn,
                base: (b, h),
            }),
            (Some(b), Some(l), Some(_)) => Err(bad(format!(
                "segment {name} holds records {}..={l}, not what its name says: it was renamed or reordered",
                b + 1
            ))),
            _ => Err(bad(format!(
                "segment {name} is not a sealed segment (its meta lacks base or last)"
            ))),
        }
    }
}

/// The verifier's state as it walks the chain from part to part.
struct Walk {
    log_id: String,
    started_at: Instant,
    /// The first record linked yet, and from which seq.
    started: bool,
    from_seq: u64,
    expected_seq: u64,
    prev: Hash,
    segments: usize,
    checkpoints: Vec<(String, Signed)>,
    /// Size → (head, where the checkpoint came from).
    expect: Arc<BTreeMap<u64, (String, String)>>,
}

impl Walk {
    fn new(log_id: String, started_at: Instant) -> Walk {
        Walk {
            prev: chain::genesis(&log_id),
            log_id,
            started_at,
            started: false,
            from_seq: 1,
            expected_seq: 1,
            segments: 0,
            checkpoints: Vec::new(),
            expect: Arc::default(),
        }
    }

    fn problem(&self, seq: u64, why: String, segment: &str) -> Problem {
        Problem {
            seq,
            why,
            segment: Some(segment.to_owned()),
        }
    }

    fn report(&self, problem: Option<Problem>) -> Report {
        let elapsed = self.started_at.elapsed().max(Duration::from_micros(1));
        let records = (self.expected_seq - self.from_seq).min(self.expected_seq - 1);
        Report {
            log_id: self.log_id.clone(),
            from_seq: self.from_seq,
            records,
            segments: self.segments,
            checkpoints: self.checkpoints.len(),
            elapsed_ms: elapsed.as_millis(),
            records_per_sec: (records as f64 / elapsed.as_secs_f64()) as u64,
            problem,
        }
    }

    /// Collects the checkpoints a part holds (its table, and a sealed file's seal).
    fn checkpoints_of(&mut self, conn: &Connection, part: &str) -> Result<(), Problem> {
        let read = || -> rusqlite::Result<Vec<String>> {
            let mut stmt = conn.prepare("SELECT signed FROM checkpoints")?;
            let mut all: Vec<String> = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<_>>()?;
            all.extend(segment::meta(conn, segment::SEAL)?);
            Ok(all)
        };
        let texts = read().map_err(|e| Problem {
            seq: 0,
            why: format!("the checkpoints of {part} cannot be read: {e}"),
            segment: Some(part.to_owned()),
        })?;
        for text in texts {
            match serde_json::from_str::<Signed>(&text) {
                Ok(s) => self.checkpoints.push((part.to_owned(), s)),
                Err(e) => {
                    return Err(Problem {
                        seq: 0,
                        why: format!("unreadable checkpoint in {part}: {e}"),
                        segment: Some(part.to_owned()),
                    });
                }
            }
        }
        Ok(())
    }

    /// Collects an external checkpoint file's lines.
    fn checkpoint_file(&mut self, path: &Path) -> Result<Option<Problem>, VerifyError> {
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
                Ok(s) => self
                    .checkpoints
                    .push((format!("{}:{}", path.display(), i + 1), s)),
                // A line cut short by a crash mid-write: the writer starts a fresh line
                // after it, so it carries no claim to check.
                Err(e) if e.is_eof() => {
                    tracing::warn!(path = %path.display(), line = i + 1, "torn checkpoint line skipped");
                }
                Err(e) => {
                    let why = format!("{} line {} is not a checkpoint: {e}", path.display(), i + 1);
                    return Ok(Some(Problem {
                        seq: 0,
                        why,
                        segment: None,
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Signatures and log ids first (a forged checkpoint is a problem whatever the chain
    /// says), then one expected head per size.
    fn check_signatures(&mut self, public_hex: Option<&str>) -> Option<Problem> {
        for (origin, s) in &self.checkpoints {
            let size = s.checkpoint.size;
            let bad = |why: String| Problem {
                seq: size,
                why,
                segment: Some(origin.clone()).filter(|o| !o.contains(':')),
            };
            if let Some(key) = public_hex {
                if !s.key.eq_ignore_ascii_case(key)
                    || !verify_signature(s, &key.to_ascii_lowercase())
                {
                    return Some(bad(format!(
                        "checkpoint at size {size} ({origin}) has an invalid signature for this log's key"
                    )));
                }
            }
            if s.checkpoint.log_id != self.log_id {
                return Some(bad(format!(
                    "checkpoint ({origin}) belongs to log {}, not {}",
                    s.checkpoint.log_id, self.log_id
                )));
            }
            if let Some((head, first)) = self.expect.get(&size) {
                if *head != s.checkpoint.head {
                    return Some(bad(format!(
                        "two signed checkpoints disagree at size {size} ({first} and {origin})"
                    )));
                }
                continue;
            }
            Arc::make_mut(&mut self.expect)
                .insert(size, (s.checkpoint.head.clone(), origin.clone()));
        }
        None
    }

    /// Links a part that starts after `base` onto the chain so far. The first part may
    /// start past genesis only when its start is vouched for by a signed checkpoint and no
    /// archive was named (with one, the whole history must be there).
    fn link(&mut self, (seq, hash): (u64, Hash), part: &str, whole: bool) -> Option<Problem> {
        if !self.started {
            self.started = true;
            if seq == 0 {
                return None;
            }
            if whole {
                let why = format!(
                    "records 1..={seq} are in no segment in the state dir or the archive: the oldest segments are missing"
                );
                return Some(self.problem(1, why, part));
            }
            let vouched = self
                .expect
                .get(&seq)
                .is_some_and(|(head, _)| chain::parse_hash(head) == Some(hash));
            if !vouched {
                let why = format!(
                    "{part} starts after seq {seq} and no signed checkpoint vouches for that start"
                );
                return Some(self.problem(seq + 1, why, part));
            }
            (self.from_seq, self.expected_seq, self.prev) = (seq + 1, seq + 1, hash);
            return None;
        }
        let expected = self.expected_seq;
        if seq + 1 != expected {
            let why = if seq + 1 > expected {
                format!(
                    "{part} starts at seq {} but {expected} was expected: a segment is missing",
                    seq + 1
                )
            } else {
                format!(
                    "{part} starts at seq {} but the chain is already at {expected}: segments overlap or are out of order",
                    seq + 1
                )
            };
            return Some(self.problem(expected, why, part));
        }
        if hash != self.prev {
            let why = format!(
                "{part} does not link to the segment before it (its base hash differs): it comes from another copy or log"
            );
            return Some(self.problem(expected, why, part));
        }
        None
    }

    /// Links every row `rows` brings; the first problem ends the walk.
    fn records(
        &mut self,
        rows: std::sync::mpsc::Receiver<Result<Vec<Row>, String>>,
        part: &str,
        visit: &mut impl FnMut(u64, &[u8]),
    ) -> Option<Problem> {
        for batch in rows {
            let batch = match batch {
                Ok(batch) => batch,
                Err(reason) => {
                    let why = format!("{part} cannot be read: {reason}");
                    return Some(self.problem(self.expected_seq, why, part));
                }
            };
            for row in batch {
                if let Some(why) = self.record(&row) {
                    return Some(self.problem(row.seq.min(self.expected_seq), why, part));
                }
                visit(row.seq, &row.record);
            }
        }
        None
    }

    /// Links one row, or says why it does not link.
    fn record(&mut self, row: &Row) -> Option<String> {
        let (seq, record, stored) = (row.seq, row.record.as_slice(), row.hash.as_str());
        let expected = self.expected_seq;
        if seq != expected {
            return Some(format!(
                "record {expected} is missing (the next record is {seq})"
            ));
        }
        match serde_json::from_slice::<Head>(record) {
            Ok(r) if r.seq == seq => {}
            Ok(r) => return Some(format!("record {seq} says it is seq {}", r.seq)),
            Err(e) => return Some(format!("record {seq} is not valid JSON: {e}")),
        }
        let hash = chain::link(&self.prev, record);
        if !chain::hex_matches(&hash, stored) {
            return Some(format!(
                "record {seq} does not hash to its stored hash (its content or an earlier record changed)"
            ));
        }
        if let Some((head, origin)) = self.expect.get(&seq) {
            if chain::parse_hash(head) != Some(hash) {
                return Some(format!(
                    "records up to {seq} differ from the signed checkpoint ({origin}): the log was rewritten or replaced"
                ));
            }
        }
        self.prev = hash;
        self.expected_seq += 1;
        None
    }

    /// A signed checkpoint past the last record: the tail was cut off.
    fn beyond_end(&self) -> Option<Problem> {
        let records = self.expected_seq - 1;
        let (&size, (_, origin)) = self.expect.range(records + 1..).next()?;
        Some(Problem {
            seq: records + 1,
            why: format!(
                "the log ends at {records} but a signed checkpoint ({origin}) covers {size} records: truncated or rolled back"
            ),
            segment: None,
        })
    }
}

/// One row as read.
struct Row {
    seq: u64,
    record: Vec<u8>,
    hash: String,
}

/// Streams the records in `seq` order from a reader thread, in batches.
fn read_rows(db: PathBuf, after: u64) -> std::sync::mpsc::Receiver<Result<Vec<Row>, String>> {
    const BATCH: usize = 4096;
    let (tx, rx) = std::sync::mpsc::sync_channel(4);
    std::thread::spawn(move || {
        let read = || -> Result<(), rusqlite::Error> {
            let conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            let mut stmt =
                conn.prepare("SELECT seq, record, hash FROM records WHERE seq > ?1 ORDER BY seq")?;
            let mut rows = stmt.query([after as i64])?;
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
