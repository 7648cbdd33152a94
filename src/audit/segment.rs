//! Segments: the log is a sequence of SQLite files. The active one (`audit.db`) takes new
//! records; a sealed one holds a closed range of `seq`, ends in a signed checkpoint and
//! never changes. Sealed files live in `<db stem>.segments/` beside the active one and, once
//! archived, in `<archive_dir>/<log id>/`, named `<first seq>-<last seq>.db` (20 digits
//! each, so names sort like their ranges).
//!
//! Every file's `meta` table says where it sits in the chain: `base_seq` and `base_hash` are
//! the record just before its first (`0` and the genesis for the first segment), so a
//! verifier links segments without reading the one before. A sealed file adds `last_seq`,
//! `last_hash` and `seal` (the signed checkpoint of its last record).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::chain::{self, Hash};

/// `meta` key: the `seq` before this file's first record.
pub const BASE_SEQ: &str = "base_seq";
/// `meta` key: the hash of that record (hex).
pub const BASE_HASH: &str = "base_hash";
/// `meta` key of the active file while a seal is under way: the last `seq` of the segment
/// being sealed.
pub const SEALING: &str = "sealing";
/// `meta` key of a sealed file: its last `seq`.
pub const LAST_SEQ: &str = "last_seq";
/// `meta` key of a sealed file: its last record's hash (hex).
pub const LAST_HASH: &str = "last_hash";
/// `meta` key of a sealed file: the signed checkpoint of its last record (JSON).
pub const SEAL: &str = "seal";

/// A sealed segment's file and the range its name gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub path: PathBuf,
    pub first: u64,
    pub last: u64,
}

impl Sealed {
    /// The file name, e.g. `00000000000000000001-00000000000000010000.db`.
    pub fn name(&self) -> &str {
        self.path.file_name().and_then(|n| n.to_str()).unwrap_or("")
    }

    /// Opens the file read-only.
    pub fn open(&self) -> rusqlite::Result<Connection> {
        Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY)
    }
}

/// The name of the sealed segment holding `first..=last`.
pub fn file_name(first: u64, last: u64) -> String {
    format!("{first:020}-{last:020}.db")
}

/// The range a sealed segment's file name gives.
pub fn parse_name(name: &str) -> Option<(u64, u64)> {
    let (first, last) = name.strip_suffix(".db")?.split_once('-')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(first) || !digits(last) {
        return None;
    }
    let (first, last) = (first.parse().ok()?, last.parse().ok()?);
    (first >= 1 && first <= last).then_some((first, last))
}

/// Where the sealed segments of the log at `db` stay until retention removes them.
pub fn local_dir(db: &Path) -> PathBuf {
    db.with_extension("segments")
}

/// Where the archived segments of log `log_id` go under `archive`.
pub fn archive_dir(archive: &Path, log_id: &str) -> PathBuf {
    archive.join(log_id)
}

/// The sealed segments in `dir` (none when it does not exist), ordered by range. Files
/// whose names are not segment names (a `.partial` copy) are left out.
pub fn list(dir: &Path) -> std::io::Result<Vec<Sealed>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if let Some((first, last)) = name.to_str().and_then(parse_name) {
            out.push(Sealed {
                path: entry.path(),
                first,
                last,
            });
        }
    }
    out.sort_by_key(|s| (s.first, s.last));
    Ok(out)
}

/// The sealed segments of the log at `db`: those in the state dir and, with `archive`,
/// those archived; a segment in both is read from the state dir.
pub fn all(db: &Path, archive: Option<&Path>, log_id: &str) -> std::io::Result<Vec<Sealed>> {
    let mut out = list(&local_dir(db))?;
    if let Some(archive) = archive {
        for s in list(&archive_dir(archive, log_id))? {
            if !out.iter().any(|l| l.name() == s.name()) {
                out.push(s);
            }
        }
        out.sort_by_key(|s| (s.first, s.last));
    }
    Ok(out)
}

/// A `meta` value, if set.
pub fn meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

/// Sets a `meta` value.
pub fn set_meta(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
        params![key, value],
    )
    .map(drop)
}

/// The record before this file's first: `(0, genesis)` for a log that was never sealed.
pub fn base(conn: &Connection, log_id: &str) -> rusqlite::Result<(u64, Hash)> {
    let seq = meta(conn, BASE_SEQ)?.and_then(|s| s.parse::<u64>().ok());
    let hash = meta(conn, BASE_HASH)?.and_then(|h| chain::parse_hash(&h));
    Ok(match (seq, hash) {
        (Some(seq), Some(hash)) if seq > 0 => (seq, hash),
        _ => (0, chain::genesis(log_id)),
    })
}

/// Writes `data` durably as `path`: a `.partial` copy synced, renamed, and the directory
/// synced, so a crash leaves either no file or the whole one.
pub fn install(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    let partial = dir.join(format!("{name}.partial"));
    let _ = std::fs::remove_file(&partial);
    write(&partial)?;
    std::fs::File::open(&partial)?.sync_all()?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o400))?;
    let path = dir.join(name);
    std::fs::rename(&partial, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_like_ranges() {
        let name = file_name(10_001, 20_000);
        assert_eq!(name, "00000000000000010001-00000000000000020000.db");
        assert_eq!(parse_name(&name), Some((10_001, 20_000)));
        assert!(file_name(9, 99) < file_name(100, 200));
        for bad in [
            "1-2.db",
            "00000000000000000002-00000000000000000001.db",
            "00000000000000000000-00000000000000000001.db",
            "00000000000000000001-00000000000000000002.db.partial",
            "0000000000000000000a-00000000000000000002.db",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn listing_orders_by_range_and_skips_other_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in [file_name(11, 20), file_name(1, 10), "x.partial".into()] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let found = list(dir.path()).unwrap();
        let ranges: Vec<_> = found.iter().map(|s| (s.first, s.last)).collect();
        assert_eq!(ranges, [(1, 10), (11, 20)]);
        assert!(list(&dir.path().join("missing")).unwrap().is_empty());
    }
}
