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
    /// How long the writer lets overlapping requests gather before the next group commit.
    pub group_commit_wait: GroupWait,
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

/// How long the writer waits, after a commit that carried two or more waiting requests,
/// before it takes the next batch: more requests per commit (one sync, fewer wake-ups)
/// for a little latency. A lone request never waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupWait {
    /// As long as the last commit took (at most `GroupWait::AUTO_MAX`), and only while
    /// fewer than half of the requests lately seen waiting at once are waiting: the rest
    /// are elsewhere (in the gates, upstream, with the client) and come back soon. When
    /// most are waiting already, a wait would gather no one and only add latency.
    #[default]
    Auto,
    /// This long after every commit of two or more requests (`"0s"`: never wait).
    Fixed(Duration),
}

impl GroupWait {
    /// The longest `auto` wait.
    pub const AUTO_MAX: Duration = Duration::from_millis(1);
    /// The longest fixed wait accepted: beyond it the wait is latency, not batching.
    pub const MAX: Duration = Duration::from_millis(10);

    /// The wait before the next batch, after a commit of `waiters` waiting requests that
    /// took `took`, when `now` requests were waiting and at most `crowd` were lately.
    pub fn after(self, waiters: usize, took: Duration, now: usize, crowd: usize) -> Duration {
        if waiters < 2 {
            return Duration::ZERO;
        }
        match self {
            GroupWait::Auto if now * 2 < crowd => took.min(Self::AUTO_MAX),
            GroupWait::Auto => Duration::ZERO,
            GroupWait::Fixed(d) => d,
        }
    }
}

impl std::fmt::Display for GroupWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupWait::Auto => f.write_str("auto"),
            GroupWait::Fixed(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

impl std::str::FromStr for GroupWait {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "auto" {
            return Ok(GroupWait::Auto);
        }
        let d = humantime::parse_duration(s)
            .map_err(|e| format!("{s:?}: want \"auto\" or a duration like \"200us\" ({e})"))?;
        if d > Self::MAX {
            return Err(format!(
                "{s:?}: at most {} (a longer wait only adds latency)",
                humantime::format_duration(Self::MAX)
            ));
        }
        Ok(GroupWait::Fixed(d))
    }
}

impl<'de> Deserialize<'de> for GroupWait {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let text = String::deserialize(de)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for GroupWait {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(self)
    }
}

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
            group_commit_wait: GroupWait::Auto,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::GroupWait;

    #[test]
    fn a_lone_request_never_waits_and_auto_follows_the_last_commit_up_to_its_cap() {
        let took = Duration::from_micros(300);
        for wait in [GroupWait::Auto, GroupWait::Fixed(Duration::from_millis(2))] {
            assert_eq!(wait.after(0, took, 0, 16), Duration::ZERO);
            assert_eq!(wait.after(1, took, 1, 16), Duration::ZERO);
        }
        assert_eq!(GroupWait::Auto.after(2, took, 4, 16), took);
        let slow = Duration::from_millis(40);
        assert_eq!(GroupWait::Auto.after(4, slow, 4, 16), GroupWait::AUTO_MAX);
        let fixed = GroupWait::Fixed(Duration::from_micros(150));
        assert_eq!(fixed.after(5, slow, 60, 64), Duration::from_micros(150));
        let never = GroupWait::Fixed(Duration::ZERO);
        assert_eq!(never.after(5, took, 5, 64), Duration::ZERO);
    }

    #[test]
    fn auto_does_not_wait_when_half_the_crowd_is_waiting_already() {
        // 64 committers in a closed loop: all of them wait for every commit, so nobody
        // is left to gather.
        let took = Duration::from_micros(600);
        assert_eq!(GroupWait::Auto.after(33, took, 64, 64), Duration::ZERO);
        assert_eq!(GroupWait::Auto.after(8, took, 32, 64), Duration::ZERO);
        assert_eq!(GroupWait::Auto.after(8, took, 31, 64), took);
    }

    #[test]
    fn it_reads_back_what_it_writes() {
        for text in ["auto", "250us", "0s"] {
            let wait: GroupWait = text.parse().unwrap();
            assert_eq!(wait.to_string(), text);
        }
    }
}
