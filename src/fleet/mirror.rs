//! A local SQLite store kept in step with a KV bucket, both ways: a watch with history
//! writes what other instances publish, and whatever another local connection (the API, the
//! CLI) changed is published. What the bucket holds, as last seen, is what publishing
//! compares against, so an entry written from the bus is never sent back. Every value is
//! tagged under the fleet key, and a deletion is a tagged tombstone (`entry.rs`); a key the
//! replica calls conditional is written only over the revision last seen, so a change
//! made elsewhere that the watch has not delivered yet is never overwritten.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_nats::jetstream::kv::{self, UpdateErrorKind};
use bytes::Bytes;

use super::bus::{FleetError, bus};
use super::entry::Sealer;
use crate::clock::now;
use crate::replica::{Applied, FleetEntryError, Replica};

/// A key as last seen in the bucket.
struct Seen {
    /// `None`: deleted.
    value: Option<Bytes>,
    revision: u64,
}

/// One bucket and its local replica.
pub struct Mirror<R> {
    pub name: String,
    kv: kv::Store,
    /// Tags what is written and checks what is read (see `entry.rs`).
    sealer: Arc<Sealer>,
    pub watch: kv::Watch,
    replica: Arc<Mutex<R>>,
    seen: HashMap<String, Seen>,
    /// Set once the watch has replayed what the bucket held.
    pub current: bool,
    published: Option<i64>,
}

impl<R: Replica> Mirror<R> {
    /// Opens the watch on `kv` (replaying its history first).
    pub async fn open(
        name: &str,
        kv: kv::Store,
        sealer: Arc<Sealer>,
        replica: R,
    ) -> Result<Self, FleetError> {
        let held = kv.status().await.map_err(bus)?.values();
        let watch = kv.watch_with_history(">").await.map_err(bus)?;
        Ok(Mirror {
            name: name.to_owned(),
            kv,
            sealer,
            watch,
            replica: Arc::new(Mutex::new(replica)),
            seen: HashMap::new(),
            current: held == 0,
            published: None,
        })
    }

    /// Applies one entry from the watch; a malformed one is reported and skipped.
    pub async fn on_entry(
        &mut self,
        entry: Option<Result<kv::Entry, kv::WatcherError>>,
    ) -> Result<Applied, FleetError> {
        let entry = entry
            .ok_or_else(|| bus(format!("{} watch ended", self.name)))?
            .map_err(bus)?;
        if !self.current && (entry.seen_current || entry.delta == 0) {
            self.current = true;
        }
        // A bare delete carries no tag, and an entry whose tag does not verify was not
        // written by the fleet: anyone on the bus could send either (to drop a revocation,
        // or to hide it from instances that join later). Neither is applied, and whatever
        // this instance holds under the key is published again at the next look.
        let opened = match entry.operation {
            kv::Operation::Put => self.sealer.open(&self.kv.name, &entry.key, &entry.value),
            kv::Operation::Delete | kv::Operation::Purge => Err(super::entry::Unsealed::Untagged),
        };
        let value = match opened {
            Ok(v) => v.map(Bytes::copy_from_slice),
            Err(e) => {
                tracing::error!(bucket = %self.name, key = %entry.key, reason = %e, "fleet: entry ignored; what is held here under its key is published again");
                let revision = entry.revision;
                self.seen.insert(
                    entry.key,
                    Seen {
                        value: None,
                        revision,
                    },
                );
                self.published = None;
                return Ok(Applied::default());
            }
        };
        let (replica, key, v) = (self.replica.clone(), entry.key.clone(), value.clone());
        let applied = tokio::task::spawn_blocking(move || {
            let mut replica = replica.lock().unwrap_or_else(|p| p.into_inner());
            replica.apply(&key, v.as_deref(), now())
        })
        .await
        .map_err(bus)?;
        let applied = match applied {
            Ok(a) => a,
            // One malformed entry must not stop the others: report it.
            Err(FleetEntryError::Bad { key, reason }) => {
                tracing::error!(bucket = %self.name, %key, %reason, "fleet: entry ignored");
                Applied::default()
            }
            Err(e) => return Err(e.into()),
        };
        let revision = entry.revision;
        self.seen.insert(entry.key, Seen { value, revision });
        Ok(applied)
    }

    /// Publishes what another local connection changed since the last look.
    pub async fn publish(&mut self) -> Result<(), FleetError> {
        let (replica, last) = (self.replica.clone(), self.published);
        let read = tokio::task::spawn_blocking(move || {
            let replica = replica.lock().unwrap_or_else(|p| p.into_inner());
            let version = replica.version()?;
            if Some(version) == last {
                return Ok((version, None));
            }
            replica.entries(now()).map(|e| (version, Some(e)))
        })
        .await
        .map_err(bus)??;
        let (version, Some(entries)) = read else {
            return Ok(());
        };
        let conditional: Vec<bool> = {
            let replica = self.replica.lock().unwrap_or_else(|p| p.into_inner());
            entries.keys().map(|k| replica.conditional(k)).collect()
        };
        // Set when a conditional write found the bucket ahead of the watch: look again
        // once the watch has caught up, even if nothing else changes here.
        let mut behind = false;
        for ((key, value), conditional) in entries.iter().zip(conditional) {
            let seen = self.seen.get(key);
            if seen.and_then(|s| s.value.as_deref()) == Some(&value[..]) {
                continue;
            }
            let value = Bytes::from(value.clone());
            let sealed = self.sealer.seal(&self.kv.name, key, Some(&value));
            let revision = if conditional {
                let last = seen.map_or(0, |s| s.revision);
                match self.kv.update(key, sealed, last).await {
                    Ok(r) => r,
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                        tracing::debug!(bucket = %self.name, %key, "fleet: changed elsewhere meanwhile; the watch brings it first");
                        behind = true;
                        continue;
                    }
                    Err(e) => return Err(bus(e)),
                }
            } else {
                self.kv.put(key, sealed).await.map_err(bus)?
            };
            let value = Some(value);
            self.seen.insert(key.clone(), Seen { value, revision });
        }
        let gone: Vec<String> = {
            let replica = self.replica.lock().unwrap_or_else(|p| p.into_inner());
            self.seen
                .iter()
                .filter(|(k, s)| s.value.is_some() && !entries.contains_key(*k))
                .map(|(k, _)| k)
                .filter(|k| replica.deletes(k))
                .cloned()
                .collect()
        };
        for key in gone {
            // A tagged tombstone, not a KV delete (see `entry.rs`).
            let tombstone = self.sealer.seal(&self.kv.name, &key, None);
            let revision = self.kv.put(&key, tombstone).await.map_err(bus)?;
            self.seen.insert(
                key,
                Seen {
                    value: None,
                    revision,
                },
            );
        }
        if behind {
            return Ok(());
        }
        self.published = Some(version);
        Ok(())
    }
}
