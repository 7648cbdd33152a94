//! Reading the log across its segments: one consistent view of the active file and the
//! sealed ones (local, and archived when an archive is given), so a reader pages by `seq`
//! without knowing where a record lives.
//!
//! The active file is read inside one read transaction, and its base is read before the
//! directories are listed. The sealer installs a sealed file before it moves the base past
//! it and deletes rows only after that, so a view either sees the rows in the active file
//! or the sealed file that holds them — never neither — and the `floor` (the highest `seq`
//! any listed sealed file holds) keeps it from reading a row twice.

use std::ops::ControlFlow;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::segment::{self, Sealed};

/// A consistent view of the whole log.
pub struct View {
    active: Connection,
    /// Rows of the active file at or below this are in sealed files.
    floor: u64,
    /// The sealed segments in the state dir, oldest first.
    sealed: Vec<Sealed>,
    /// The log's directory in the archive, when there is one.
    archive: Option<std::path::PathBuf>,
    /// The `seq` before the state dir's oldest record.
    local_start: u64,
    older: std::cell::OnceCell<Vec<Sealed>>,
}

fn listing_error(e: std::io::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// One file of the view and the rows it contributes: `seq > lower`.
pub struct Part<'a> {
    pub conn: &'a Connection,
    pub lower: u64,
}

impl View {
    /// Opens the view of the log at `db` (and its archived segments under `archive`).
    pub fn open(db: &Path, archive: Option<&Path>) -> rusqlite::Result<View> {
        let active = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        // The snapshot starts at the first read and holds for every later one.
        active.execute_batch("BEGIN")?;
        let log_id: String =
            active.query_row("SELECT value FROM meta WHERE key = 'log_id'", [], |r| {
                r.get(0)
            })?;
        let (base, _) = segment::base(&active, &log_id)?;
        let sealed = segment::list(&segment::local_dir(db)).map_err(listing_error)?;
        let floor = sealed.last().map_or(0, |s| s.last).max(base);
        let local_start = sealed.first().map_or(base, |s| s.first - 1);
        Ok(View {
            active,
            floor,
            sealed,
            archive: archive.map(|a| segment::archive_dir(a, &log_id)),
            local_start,
            older: std::cell::OnceCell::new(),
        })
    }

    /// The archived segments below the state dir's oldest, listed on first need (a
    /// reader of recent records never reads the archive's directory). Archived files count
    /// only where they continue the chain down from the state dir's oldest: a stray file
    /// in a shared volume cannot hide newer records.
    fn older(&self) -> rusqlite::Result<&[Sealed]> {
        if let Some(older) = self.older.get() {
            return Ok(older);
        }
        let mut older = Vec::new();
        if let Some(dir) = &self.archive {
            let mut below = self.local_start;
            for s in segment::list(dir).map_err(listing_error)?.into_iter().rev() {
                if s.last == below {
                    below = s.first - 1;
                    older.push(s);
                }
            }
            older.reverse();
        }
        Ok(self.older.get_or_init(|| older))
    }

    /// The active file (inside the view's snapshot).
    pub fn active(&self) -> &Connection {
        &self.active
    }

    /// The highest `seq` in view (0 when empty).
    pub fn last_seq(&self) -> rusqlite::Result<u64> {
        let last: i64 =
            self.active
                .query_row("SELECT COALESCE(MAX(seq), 0) FROM records", [], |r| {
                    r.get(0)
                })?;
        Ok((last as u64).max(self.floor))
    }

    /// Calls `read` on every file that may hold rows with `seq > after`, oldest first,
    /// until it breaks.
    pub fn ascending(
        &self,
        after: u64,
        mut read: impl FnMut(Part<'_>) -> rusqlite::Result<ControlFlow<()>>,
    ) -> rusqlite::Result<()> {
        let older = if after < self.local_start {
            self.older()?
        } else {
            &[]
        };
        for s in older.iter().chain(&self.sealed).filter(|s| s.last > after) {
            let conn = s.open()?;
            let part = Part {
                conn: &conn,
                lower: after.max(s.first - 1),
            };
            if read(part)?.is_break() {
                return Ok(());
            }
        }
        let part = Part {
            conn: &self.active,
            lower: after.max(self.floor),
        };
        read(part).map(drop)
    }

    /// Calls `read` on every file that may hold rows with `seq < before`, newest first,
    /// until it breaks.
    pub fn descending(
        &self,
        before: u64,
        mut read: impl FnMut(Part<'_>) -> rusqlite::Result<ControlFlow<()>>,
    ) -> rusqlite::Result<()> {
        if before > self.floor + 1 {
            let part = Part {
                conn: &self.active,
                lower: self.floor,
            };
            if read(part)?.is_break() {
                return Ok(());
            }
        }
        for s in self.sealed.iter().rev().filter(|s| s.first < before) {
            if read_sealed(s, &mut read)?.is_break() {
                return Ok(());
            }
        }
        if self.local_start > 0 {
            for s in self.older()?.iter().rev().filter(|s| s.first < before) {
                if read_sealed(s, &mut read)?.is_break() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Up to `limit` items after `after`, oldest first: `page(part, limit left)` reads one
    /// file's rows `seq > part.lower` in order.
    pub fn page_after<T>(
        &self,
        after: u64,
        limit: usize,
        page: impl FnMut(&Part<'_>, usize) -> rusqlite::Result<Vec<T>>,
    ) -> rusqlite::Result<Vec<T>> {
        let mut out = Vec::new();
        self.ascending(after, filler(&mut out, limit, page))?;
        Ok(out)
    }

    /// Up to `limit` items before `before`, newest first: `page(part, limit left)` reads
    /// one file's rows `part.lower < seq < before` newest first.
    pub fn page_before<T>(
        &self,
        before: u64,
        limit: usize,
        page: impl FnMut(&Part<'_>, usize) -> rusqlite::Result<Vec<T>>,
    ) -> rusqlite::Result<Vec<T>> {
        let mut out = Vec::new();
        self.descending(before, filler(&mut out, limit, page))?;
        Ok(out)
    }
}

/// Collects what `page` reads from each part into `out` until it holds `limit`.
fn filler<'o, T>(
    out: &'o mut Vec<T>,
    limit: usize,
    mut page: impl FnMut(&Part<'_>, usize) -> rusqlite::Result<Vec<T>> + 'o,
) -> impl FnMut(Part<'_>) -> rusqlite::Result<ControlFlow<()>> + 'o {
    move |part| {
        out.extend(page(&part, limit - out.len())?);
        Ok(if out.len() >= limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    }
}

/// Reads a sealed file's rows (`seq` above its base).
fn read_sealed(
    s: &Sealed,
    read: &mut impl FnMut(Part<'_>) -> rusqlite::Result<ControlFlow<()>>,
) -> rusqlite::Result<ControlFlow<()>> {
    let conn = s.open()?;
    read(Part {
        conn: &conn,
        lower: s.first - 1,
    })
}
