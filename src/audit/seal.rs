//! The sealer thread: the slow parts of segments, off the request path. The writer marks
//! the active segment `sealing` (one signed checkpoint, one commit); this thread copies that
//! range into a sealed file (read-only on the active file) and tells the writer, which
//! moves the base and deletes the copied rows in small steps between its commits (see
//! `writer::active`); then it archives sealed files and applies retention. Each step is
//! safe to repeat, so a crash anywhere leaves work that the next start finishes, and
//! readers never see a record twice or miss one (see `view`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, params};

use super::checkpoint::Signed;
use super::config::Retention;
use super::segment::{self, Sealed};
use crate::clock::now_micros;
use crate::metrics::{Metrics, SegmentEvent};

/// How often archive copies and retention are looked at without a seal to prompt it.
const ARCHIVE_EVERY: Duration = Duration::from_secs(30);

/// What the sealer needs.
pub(crate) struct Sealer {
    pub(crate) db: PathBuf,
    pub(crate) log_id: String,
    pub(crate) archive: Option<PathBuf>,
    pub(crate) retention: Retention,
    /// Set once the sealed file up to this `seq` is installed, for the writer.
    pub(crate) installed: Arc<AtomicU64>,
    pub(crate) wake: std::sync::mpsc::Receiver<()>,
    pub(crate) stop: Arc<AtomicBool>,
    /// Progress files (`<log id> <seq>`) of shippers a segment must wait for before it
    /// leaves the state dir.
    pub(crate) holds: Arc<Mutex<Vec<PathBuf>>>,
    pub(crate) metrics: Arc<Metrics>,
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("{0}")]
    Db(#[from] rusqlite::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("segment {name} came out wrong: {why}")]
    Copy { name: String, why: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SealError {
    let what = what.into();
    move |source| SealError::Io { what, source }
}

/// Bytes and first `ts` of the active segment's records after `base` (the writer's
/// starting point for its seal limits).
pub(crate) fn active_stats(conn: &Connection, base: u64) -> rusqlite::Result<(u64, i64)> {
    let (bytes, first): (i64, Option<String>) = conn.query_row(
        "SELECT COALESCE(SUM(length(record) + length(hash)), 0),
                (SELECT record FROM records WHERE seq > ?1 ORDER BY seq LIMIT 1)
         FROM records WHERE seq > ?1",
        [base as i64],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let ts = first
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["ts"].as_i64())
        .unwrap_or(0);
    Ok((bytes as u64, ts))
}

/// The `seq` a seal left pending in the active file (0: none).
pub(crate) fn pending(conn: &Connection) -> rusqlite::Result<u64> {
    Ok(segment::meta(conn, segment::SEALING)?
        .and_then(|s| s.parse().ok())
        .unwrap_or(0))
}

/// The thread: a round on every wake-up and every second until stopped.
pub(crate) fn run(sealer: Sealer) {
    let mut last_error = String::new();
    let mut pause = Duration::from_secs(1);
    // The archive and retention pass lists and stats every sealed file: after a seal,
    // while something fails, and every half minute (age limits), not every second.
    let mut woken = true;
    let mut last_pass = std::time::Instant::now();
    while !sealer.stop.load(Ordering::Relaxed) {
        let pass = woken || !last_error.is_empty() || last_pass.elapsed() >= ARCHIVE_EVERY;
        if pass {
            last_pass = std::time::Instant::now();
        }
        match sealer.round(pass) {
            Ok(()) => {
                last_error.clear();
                pause = Duration::from_secs(1);
            }
            Err(e) => {
                sealer.metrics.audit_segment(SegmentEvent::Failed);
                // Said once, not every round; a failing copy (a full disk) is not redone
                // every second either.
                let text = e.to_string();
                if text != last_error {
                    tracing::error!(error = %text, "audit segment housekeeping failed; retrying");
                    last_error = text;
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
        woken = sealer.wake.recv_timeout(pause).is_ok();
    }
}

impl Sealer {
    fn round(&self, archive_pass: bool) -> Result<(), SealError> {
        // One sealer at a time per log: a CLI that opened the log beside the proxy runs
        // one too, and two must not write the same file.
        let dir = segment::local_dir(&self.db);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let lock = std::fs::File::create(dir.join(".lock"))
            .map_err(io(format!("creating {}", dir.join(".lock").display())))?;
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return Ok(());
        }
        // Read only: what changes the active file is the writer's (see `writer::active`).
        let conn =
            Connection::open_with_flags(&self.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let upto = pending(&conn)?;
        if upto > 0 {
            self.seal(&conn, upto)?;
        }
        drop(conn);
        if let Some(archive) = self.archive.as_ref().filter(|_| archive_pass || upto > 0) {
            self.archive_all(archive)?;
            if self.retention.enabled() {
                self.retain(archive)?;
            }
        }
        Ok(())
    }

    /// Copies `base+1..=upto` into a sealed file and tells the writer, which moves the
    /// active file's base past it and deletes the copied rows.
    fn seal(&self, conn: &Connection, upto: u64) -> Result<(), SealError> {
        let (base, base_hash) = segment::base(conn, &self.log_id)?;
        if upto > base {
            let name = segment::file_name(base + 1, upto);
            let dir = segment::local_dir(&self.db);
            let done = Sealed {
                path: dir.join(&name),
                first: base + 1,
                last: upto,
            };
            if !is_sealed(&done) {
                segment::install(&dir, &name, |partial| {
                    copy_out(partial, &self.db, &self.log_id, (base, &base_hash), upto)
                        .map_err(std::io::Error::other)
                })
                .map_err(io(format!(
                    "writing sealed segment {}",
                    dir.join(&name).display()
                )))?;
                tracing::info!(segment = %name, records = upto - base, "audit segment sealed");
                self.metrics.audit_segment(SegmentEvent::Sealed);
            }
        }
        self.installed.store(upto, Ordering::Release);
        Ok(())
    }

    /// Copies every local sealed file the archive lacks.
    fn archive_all(&self, archive: &Path) -> Result<(), SealError> {
        let dir = segment::archive_dir(archive, &self.log_id);
        let local =
            segment::list(&segment::local_dir(&self.db)).map_err(io("listing sealed segments"))?;
        for s in local {
            if archived(&s, &dir) {
                continue;
            }
            let target = dir.join(s.name());
            segment::install(&dir, s.name(), |partial| {
                std::fs::copy(&s.path, partial)?;
                if sha256_file(&s.path)? != sha256_file(partial)? {
                    return Err(std::io::Error::other("the copy differs from the original"));
                }
                Ok(())
            })
            .map_err(io(format!(
                "archiving {} to {}",
                s.path.display(),
                target.display()
            )))?;
            tracing::info!(segment = %s.name(), to = %dir.display(), "audit segment archived");
            self.metrics.audit_segment(SegmentEvent::Archived);
        }
        Ok(())
    }

    /// Removes the oldest local sealed files past a retention limit, once archived and
    /// shipped.
    fn retain(&self, archive: &Path) -> Result<(), SealError> {
        let dir = segment::archive_dir(archive, &self.log_id);
        let local =
            segment::list(&segment::local_dir(&self.db)).map_err(io("listing sealed segments"))?;
        let len = |s: &Sealed| std::fs::metadata(&s.path).map_or(0, |m| m.len());
        let mut total: u64 = local.iter().map(len).sum();
        let shipped = self.shipped();
        let now = now_micros();
        for s in &local {
            let old = self.retention.max_age.is_some_and(|age| {
                sealed_at(s).is_some_and(|t| now.saturating_sub(t) >= age.as_micros() as i64)
            });
            let over = self
                .retention
                .max_bytes
                .is_some_and(|max| total > max.as_u64());
            if !old && !over {
                break;
            }
            // Oldest first: a segment that must stay keeps the newer ones too.
            if !archived(s, &dir) || shipped < s.last {
                break;
            }
            let size = len(s);
            std::fs::remove_file(&s.path).map_err(io(format!("removing {}", s.path.display())))?;
            total = total.saturating_sub(size);
            tracing::info!(segment = %s.name(), "audit segment removed from the state dir (archived)");
            self.metrics.audit_segment(SegmentEvent::Removed);
        }
        Ok(())
    }

    /// The lowest `seq` every registered shipper has shipped (all when none is).
    fn shipped(&self) -> u64 {
        let holds = self.holds.lock().map(|h| h.clone()).unwrap_or_default();
        holds
            .iter()
            .map(|path| {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                match text.split_whitespace().collect::<Vec<_>>()[..] {
                    [id, seq] if id == self.log_id => seq.parse().unwrap_or(0),
                    _ => 0,
                }
            })
            .min()
            .unwrap_or(u64::MAX)
    }
}

/// Whether `s` is already a complete sealed file (a crash after it was installed).
fn is_sealed(s: &Sealed) -> bool {
    s.open()
        .and_then(|c| segment::meta(&c, segment::LAST_SEQ))
        .ok()
        .flatten()
        .is_some_and(|last| last == s.last.to_string())
}

/// Whether the archive holds a copy of `s` of the same size (copies are checked byte for
/// byte when made).
fn archived(s: &Sealed, dir: &Path) -> bool {
    match (
        std::fs::metadata(&s.path),
        std::fs::metadata(dir.join(s.name())),
    ) {
        (Ok(a), Ok(b)) => a.len() == b.len(),
        _ => false,
    }
}

/// When `s` was sealed (its seal's time), from its `meta`.
fn sealed_at(s: &Sealed) -> Option<i64> {
    let conn = s.open().ok()?;
    let seal = segment::meta(&conn, segment::SEAL).ok()??;
    serde_json::from_str::<Signed>(&seal)
        .ok()
        .map(|s| s.checkpoint.time)
}

fn sha256_file(path: &Path) -> std::io::Result<[u8; 32]> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}

/// Writes the sealed file for `base+1..=upto` of the log at `db` into `path`.
fn copy_out(
    path: &Path,
    db: &Path,
    log_id: &str,
    (base, base_hash): (u64, &super::chain::Hash),
    upto: u64,
) -> Result<(), SealError> {
    let name = segment::file_name(base + 1, upto);
    let wrong = |why: String| SealError::Copy {
        name: name.clone(),
        why,
    };
    let out = Connection::open(path)?;
    // The file is synced whole before it is installed: no journal needed while it is built.
    out.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")?;
    out.execute_batch(super::store::SCHEMA)?;
    out.execute(
        "ATTACH DATABASE ?1 AS src",
        [db.to_str()
            .ok_or_else(|| wrong("the log's path is not UTF-8".into()))?],
    )?;
    let tx = out.unchecked_transaction()?;
    let copied = tx.execute(
        "INSERT INTO main.records (seq, record, hash)
         SELECT seq, record, hash FROM src.records WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
        params![base as i64, upto as i64],
    )?;
    tx.execute(
        "INSERT INTO main.checkpoints (size, signed)
         SELECT size, signed FROM src.checkpoints WHERE size >= ?1 AND size <= ?2",
        params![base as i64, upto as i64],
    )?;
    let (last_hash, seal): (String, Option<String>) = tx.query_row(
        "SELECT r.hash, c.signed FROM main.records r
         LEFT JOIN main.checkpoints c ON c.size = r.seq WHERE r.seq = ?1",
        [upto as i64],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if copied as u64 != upto - base {
        return Err(wrong(format!("{copied} records, {} expected", upto - base)));
    }
    let seal = seal.ok_or_else(|| wrong(format!("no signed checkpoint at {upto}")))?;
    for (key, value) in [
        ("log_id", log_id.to_owned()),
        (segment::BASE_SEQ, base.to_string()),
        (segment::BASE_HASH, super::chain::hex(base_hash)),
        (segment::LAST_SEQ, upto.to_string()),
        (segment::LAST_HASH, last_hash),
        (segment::SEAL, seal),
    ] {
        segment::set_meta(&tx, key, &value)?;
    }
    tx.commit()?;
    out.execute("DETACH DATABASE src", [])?;
    Ok(())
}

#[cfg(test)]
mod tests;
