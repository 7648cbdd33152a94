//! A local SQLite store as one side of a fleet mirror (see `fleet/mirror.rs`): what it
//! publishes, how it takes what others published, and what applying changed. A leaf, so
//! the registry, the vault and the consent store can each implement it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::sqlite::{self, Durability};

/// What applying an entry changed here.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Whether the store changed.
    pub changed: bool,
    /// SPIFFE IDs revoked by it that were not revoked here before (`*`: every agent).
    pub newly_revoked: Vec<String>,
    /// Consents it answered that were pending here.
    pub answered: Vec<String>,
}

/// Why an entry could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum FleetEntryError {
    /// A malformed entry: reported and skipped.
    #[error("fleet entry {key}: {reason}")]
    Bad { key: String, reason: String },
    /// The local store failed: the sync starts over (and replays) rather than skip it.
    #[error("{0}")]
    Store(String),
}

/// The local side of a mirror.
pub trait Replica: Send + 'static {
    /// A counter that moves when another connection commits to the store.
    fn version(&self) -> Result<i64, FleetEntryError>;
    /// Everything this instance publishes, by key.
    fn entries(&self, now: i64) -> Result<BTreeMap<String, Vec<u8>>, FleetEntryError>;
    /// Writes an entry another instance published (`None`: deleted).
    fn apply(
        &mut self,
        key: &str,
        value: Option<&[u8]>,
        now: i64,
    ) -> Result<Applied, FleetEntryError>;
    /// Whether a key the bucket holds but this store lacks was deleted here (and so is
    /// deleted from the bucket), rather than never held.
    fn deletes(&self, key: &str) -> bool;
    /// Whether a change here to `key` is published only over the entry last seen
    /// (compare-and-set): one made elsewhere meanwhile wins and arrives through the watch,
    /// after which the change is looked at again. Otherwise the last writer wins.
    fn conditional(&self, _key: &str) -> bool {
        false
    }
}

/// A store's own connection for its mirror: its `data_version` moves only when another
/// connection (the admin API, the CLI) writes, which is what must be published.
pub struct StoreFile {
    pub db: Connection,
    path: PathBuf,
}

impl StoreFile {
    /// Opens the store at `path` (its schema is its owner's).
    pub fn open(path: &Path) -> Result<StoreFile, FleetEntryError> {
        let db = sqlite::open(path, Durability::Full)
            .map_err(|e| FleetEntryError::Store(format!("{}: {e}", path.display())))?;
        Ok(StoreFile {
            db,
            path: path.to_owned(),
        })
    }

    /// Maps a database error to a store failure naming the file.
    pub fn err(&self) -> impl Fn(rusqlite::Error) -> FleetEntryError + '_ {
        move |e| FleetEntryError::Store(format!("{}: {e}", self.path.display()))
    }

    /// The store's change counter as this connection sees it.
    pub fn version(&self) -> Result<i64, FleetEntryError> {
        self.db
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(self.err())
    }
}
