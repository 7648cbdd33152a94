//! The audit disk-space watchdog. Once a second it reads (one `statvfs`) the file system
//! holding the audit log's directory, and the archive's when `audit.archive_dir` is set.
//! Below `audit.disk_free_warning` it says so — a `/readyz` warning, the
//! `agentgate_audit_disk_low` gauge, one log line — while there is still room: a full disk
//! makes audit commits fail, and then every request is refused `503`.
//!
//! It runs on a thread of its own, so a slow file system (a hung network mount) delays only
//! the next reading, never a request; readers take the latest reading from a short lock.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytesize::ByteSize;
use rustix::io::Errno;
use tokio::sync::watch;

use super::config::{AuditConfig, FreeSpace};
use crate::state::StateDir;

/// How often the file systems are read.
const INTERVAL: Duration = Duration::from_secs(1);

/// The watchdog's failures.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// `statvfs` failed: the free space is unknown, which is itself a warning.
    #[error("cannot read free space of {}: {source}", dir.display())]
    Unreadable {
        /// The directory asked about.
        dir: PathBuf,
        /// What the kernel answered.
        source: Errno,
    },
    /// The watchdog thread could not be started.
    #[error("cannot start the audit disk watchdog: {0}")]
    Spawn(#[source] std::io::Error),
}

/// The size of a file system and what of it an unprivileged writer may still use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes available to the proxy (`f_bavail`: without the blocks reserved for root).
    pub free: u64,
    /// The file system's size in bytes.
    pub total: u64,
}

/// One watched directory as last read.
#[derive(Debug, Clone)]
pub struct Reading {
    /// `log` (the audit database's directory) or `archive` (`audit.archive_dir`).
    pub label: &'static str,
    /// The directory.
    pub dir: PathBuf,
    /// Its file system's space, or why it could not be read.
    pub space: Result<Space, Errno>,
    /// The threshold in bytes on this file system (0 when unreadable).
    pub threshold: u64,
}

impl Reading {
    /// Free space is below the threshold, or unknown.
    pub fn low(&self) -> bool {
        match self.space {
            Ok(s) => s.free < self.threshold,
            Err(_) => true,
        }
    }
}

/// What the log last said about a directory; it speaks again only when this changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Fine,
    Low,
    Unreadable,
}

/// The level after a reading. Once low, the disk counts as recovered only when free space is
/// a twentieth of the threshold above it, so a level hovering there does not fill the log
/// (the gauge and `/readyz` follow the plain comparison).
fn next_level(was: Level, space: Result<Space, Errno>, threshold: u64) -> Level {
    match space {
        Err(_) => Level::Unreadable,
        Ok(s) if s.free < threshold => Level::Low,
        Ok(s) if was == Level::Low && s.free < threshold.saturating_add(threshold / 20) => {
            Level::Low
        }
        Ok(_) => Level::Fine,
    }
}

/// One watched directory.
#[derive(Debug)]
struct Watched {
    label: &'static str,
    dir: PathBuf,
    latest: Mutex<(Reading, Level)>,
}

#[derive(Debug)]
struct Inner {
    threshold: FreeSpace,
    watched: Vec<Watched>,
}

/// The watchdog's handle: the latest readings and the warnings they make. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DiskWatch {
    inner: Arc<Inner>,
}

impl DiskWatch {
    /// Watches the log's directory and the archive's (if set), read once now; nothing
    /// re-reads them until [`DiskWatch::check`] (see [`DiskWatch::start`]).
    pub fn new(config: &AuditConfig, state: &StateDir) -> DiskWatch {
        let db = config.db_path(state);
        let log_dir = match db.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let mut dirs = vec![("log", log_dir)];
        if let Some(archive) = config.archive() {
            dirs.push(("archive", archive.to_owned()));
        }
        let watch = DiskWatch::with_dirs(config.disk_free_warning, dirs);
        watch.check();
        watch
    }

    /// Watches `dirs` (label, directory) against `threshold`, before any reading.
    fn with_dirs(threshold: FreeSpace, dirs: Vec<(&'static str, PathBuf)>) -> DiskWatch {
        let watched = dirs
            .into_iter()
            .map(|(label, dir)| Watched {
                label,
                latest: Mutex::new((
                    Reading {
                        label,
                        dir: dir.clone(),
                        // Until the first reading (which `new` takes at once).
                        space: Err(Errno::AGAIN),
                        threshold: 0,
                    },
                    Level::Fine,
                )),
                dir,
            })
            .collect();
        DiskWatch {
            inner: Arc::new(Inner { threshold, watched }),
        }
    }

    /// [`DiskWatch::new`], then a reading every second on a thread of its own until
    /// `shutdown` turns true (or its sender goes).
    pub fn start(
        config: &AuditConfig,
        state: &StateDir,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<DiskWatch, DiskError> {
        let watch = DiskWatch::new(config, state);
        let ticking = watch.clone();
        std::thread::Builder::new()
            .name("agentgate-disk".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(INTERVAL);
                    if *shutdown.borrow_and_update() || shutdown.has_changed().is_err() {
                        return;
                    }
                    ticking.check();
                }
            })
            .map_err(DiskError::Spawn)?;
        Ok(watch)
    }

    /// Reads every watched file system now, logging where a level changed.
    pub fn check(&self) {
        self.check_with(read_space);
    }

    /// [`DiskWatch::check`] with `read` instead of `statvfs`.
    fn check_with(&self, read: impl Fn(&Path) -> Result<Space, Errno>) {
        for w in &self.inner.watched {
            // Read outside the lock: a slow file system must not hold up `/readyz`.
            let space = read(&w.dir);
            let threshold = space.map_or(0, |s| self.inner.threshold.bytes_of(s.total));
            let reading = Reading {
                label: w.label,
                dir: w.dir.clone(),
                space,
                threshold,
            };
            let mut latest = w.latest.lock().unwrap_or_else(|p| p.into_inner());
            let was = latest.1;
            let now = next_level(was, space, threshold);
            *latest = (reading.clone(), now);
            drop(latest);
            if now != was {
                self.log(&reading, now);
            }
        }
    }

    /// The one log line of a level change.
    fn log(&self, r: &Reading, level: Level) {
        let dir = r.dir.display();
        match (level, r.space) {
            (Level::Unreadable, Err(e)) => tracing::warn!(
                %dir,
                error = %e,
                "{}; the audit log may run out of space unnoticed",
                DiskError::Unreadable { dir: r.dir.clone(), source: e }
            ),
            (Level::Low, Ok(s)) => tracing::warn!(
                %dir,
                free = s.free,
                total = s.total,
                threshold = %self.inner.threshold,
                "{}; once it is full every request is refused 503. {}",
                self.describe(r, s),
                advice(r.label)
            ),
            (Level::Fine, Ok(s)) => tracing::info!(
                %dir,
                free = s.free,
                total = s.total,
                threshold = %self.inner.threshold,
                "audit {}disk recovered: {} free of {}, above audit.disk_free_warning ({})",
                prefix(r.label),
                size(s.free),
                size(s.total),
                self.inner.threshold
            ),
            // A level always matches its reading (see `next_level`).
            _ => {}
        }
    }

    /// `audit disk: 1.9 MiB free of 4.0 MiB at DIR, below audit.disk_free_warning (50%)`.
    fn describe(&self, r: &Reading, s: Space) -> String {
        format!(
            "audit {}disk: {} free of {} at {}, below audit.disk_free_warning ({})",
            prefix(r.label),
            size(s.free),
            size(s.total),
            r.dir.display(),
            self.inner.threshold
        )
    }

    /// The latest reading of each watched directory: the log's first, then the archive's.
    pub fn readings(&self) -> Vec<Reading> {
        self.inner
            .watched
            .iter()
            .map(|w| w.latest.lock().unwrap_or_else(|p| p.into_inner()).0.clone())
            .collect()
    }

    /// One warning per file system below the threshold or unreadable; empty when fine.
    pub fn warnings(&self) -> Vec<String> {
        self.readings()
            .iter()
            .filter_map(|r| match r.space {
                Err(e) => Some(
                    DiskError::Unreadable {
                        dir: r.dir.clone(),
                        source: e,
                    }
                    .to_string(),
                ),
                Ok(s) if r.low() => Some(self.describe(r, s)),
                Ok(_) => None,
            })
            .collect()
    }

    /// The warnings in one line (`; ` between them), or `None` when every disk is fine.
    pub fn warning(&self) -> Option<String> {
        let all = self.warnings();
        (!all.is_empty()).then(|| all.join("; "))
    }
}

/// `archive ` for the archive's file system, nothing for the log's.
fn prefix(label: &str) -> &'static str {
    if label == "archive" { "archive " } else { "" }
}

/// What to do about a low disk.
fn advice(label: &str) -> &'static str {
    if label == "archive" {
        "Move old segments off the archive or grow its volume."
    } else {
        "Set audit.retention and audit.archive_dir so sealed segments leave this disk, or grow the volume."
    }
}

fn size(bytes: u64) -> String {
    ByteSize::b(bytes).display().iec().to_string()
}

/// The space of the file system holding `dir`. A directory not made yet (an archive before
/// its first segment) is read at its nearest existing ancestor, where it will be made.
fn read_space(dir: &Path) -> Result<Space, Errno> {
    let mut at = dir;
    let st = loop {
        match rustix::fs::statvfs(at) {
            Err(Errno::NOENT) => match at.parent() {
                Some(p) if !p.as_os_str().is_empty() => at = p,
                _ => return Err(Errno::NOENT),
            },
            other => break other?,
        }
    };
    Ok(Space {
        free: st.f_bavail.saturating_mul(st.f_frsize),
        total: st.f_blocks.saturating_mul(st.f_frsize),
    })
}

#[cfg(test)]
mod tests;
