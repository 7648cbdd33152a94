//! `[audit]`: where the log lives, how hard a commit tries to survive, how the writer batches
//! and when it signs checkpoints, when segments are sealed, where they are archived, how
//! long they stay, and when the disk is low.

use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::state::StateDir;

/// How hard a commit tries to survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// `synchronous=FULL`: a committed record survives power loss.
    Fsync,
    /// `synchronous=NORMAL`: survives the process being killed, not the machine.
    Commit,
}

/// `[audit]` configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// "fsync" (default) or "commit".
    pub durability: Durability,
    /// Database file; empty means `audit.db` in the state dir.
    pub path: PathBuf,
    /// Records waiting for the writer; beyond it requests wait (up to `commit_timeout`).
    pub queue: usize,
    /// Most records in one group commit.
    pub batch_max: usize,
    /// After a commit of two or more requests, how long the writer lets the next batch
    /// gather before it commits it (zero: never wait).
    #[serde(with = "humantime_serde")]
    pub group_commit_wait: Duration,
    /// Longest a request waits for its record to be durable before it is refused 503.
    #[serde(with = "humantime_serde")]
    pub commit_timeout: Duration,
    /// A signed checkpoint after this many records…
    pub checkpoint_every: u64,
    /// …or this much time with new records, and at shutdown.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// Seal the active segment once its records take this many bytes…
    pub segment_max_bytes: ByteSize,
    /// …or once its first record is this old.
    #[serde(with = "humantime_serde")]
    pub segment_max_age: Duration,
    /// Where sealed segments are copied (in Kubernetes, a volume); empty: not archived.
    pub archive_dir: PathBuf,
    /// How long sealed segments stay in the state dir once archived.
    pub retention: Retention,
    /// Free space on the log's disk below which the watchdog warns: "10%" or "512MiB".
    pub disk_free_warning: FreeSpace,
}

/// `[audit.retention]`: a sealed segment leaves the state dir once it is archived (and, in
/// a fleet, shipped) and either limit is passed; neither set keeps every segment.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Segments whose last record is older than this go.
    #[serde(with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// The oldest segments go while all sealed segments together take more than this.
    pub max_bytes: Option<ByteSize>,
}

impl Retention {
    /// Whether any limit is set.
    pub fn enabled(&self) -> bool {
        self.max_age.is_some() || self.max_bytes.is_some()
    }
}

/// A free-space threshold: a share of the file system or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeSpace {
    /// Percent of the file system's size (0–100).
    Percent(u8),
    Bytes(ByteSize),
}

impl FreeSpace {
    /// The threshold in bytes on a file system of `total` bytes.
    pub fn bytes_of(self, total: u64) -> u64 {
        match self {
            // In u128: `total / 100 * p` would drop up to 99 bytes, `total * p` overflow.
            FreeSpace::Percent(p) => {
                u64::try_from(u128::from(total) * u128::from(p) / 100).unwrap_or(total)
            }
            FreeSpace::Bytes(b) => b.as_u64(),
        }
    }
}

impl std::fmt::Display for FreeSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FreeSpace::Percent(p) => write!(f, "{p}%"),
            FreeSpace::Bytes(b) => write!(f, "{}", b.display().iec()),
        }
    }
}

impl std::str::FromStr for FreeSpace {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s.strip_suffix('%') {
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= 100 => Ok(FreeSpace::Percent(p)),
                _ => Err(format!("{s:?}: a percentage must be 0% to 100%")),
            },
            None => s
                .parse::<ByteSize>()
                .map(FreeSpace::Bytes)
                .map_err(|e| format!("{s:?}: want \"10%\" or a size like \"512MiB\" ({e})")),
        }
    }
}

impl<'de> Deserialize<'de> for FreeSpace {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let text = String::deserialize(de)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for FreeSpace {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(self)
    }
}

/// The longest `group_commit_wait`: beyond it the wait is latency, not batching.
pub const GROUP_COMMIT_WAIT_MAX: Duration = Duration::from_millis(10);

impl AuditConfig {
    /// The archive directory, when one is set.
    pub fn archive(&self) -> Option<&std::path::Path> {
        Some(self.archive_dir.as_path()).filter(|p| !p.as_os_str().is_empty())
    }

    /// The database file: `path`, or `audit.db` in the state dir.
    pub fn db_path(&self, state: &StateDir) -> PathBuf {
        if self.path.as_os_str().is_empty() {
            state.path("audit.db")
        } else {
            self.path.clone()
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Fsync,
            path: PathBuf::new(),
            queue: 65_536,
            batch_max: 512,
            group_commit_wait: Duration::ZERO,
            commit_timeout: Duration::from_secs(2),
            checkpoint_every: 10_000,
            checkpoint_interval: Duration::from_secs(60),
            segment_max_bytes: ByteSize::mib(64),
            segment_max_age: Duration::from_secs(24 * 3600),
            archive_dir: PathBuf::new(),
            retention: Retention::default(),
            disk_free_warning: FreeSpace::Percent(10),
        }
    }
}
