//! The fleet's side of OAuth refresh-token rotation (see `vault::coordinator`): a lease per
//! connection in the KV bucket `<fleet>-refresh`, taken with compare-and-set (`create`)
//! and expiring with the bucket's `max_age` if its holder stops; the connection's current
//! row read from `<fleet>-vault` under it, and the rotated row written back over that
//! revision only. The buckets belong to the current bus session: without one, a refresh
//! is refused rather than made without the lease.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use async_nats::connection::State;
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;

use super::entry::Sealer;
use crate::config::fleet::REFRESH_LEASE;
use crate::vault::coordinator::{BoxFuture, CoordinationError, RefreshCoordinator, RefreshLease};
use crate::vault::fleet::CONN;

/// First pause between tries for a held lease; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(20);
const MAX_PAUSE: Duration = Duration::from_millis(250);

/// The current session's connection and buckets.
pub struct Buckets {
    pub client: async_nats::Client,
    /// `<fleet>-refresh`: one entry per connection being refreshed, valued its holder.
    pub leases: kv::Store,
    /// `<fleet>-vault`.
    pub vault: kv::Store,
    /// Its entries' tags (see `entry.rs`).
    pub sealer: Arc<Sealer>,
}

/// Refresh leases on whatever bus session is current.
pub struct RefreshLeases {
    instance: String,
    current: ArcSwapOption<Buckets>,
}

impl RefreshLeases {
    /// Leases held in the name of `instance`; refused until a session attaches.
    pub fn new(instance: String) -> Arc<RefreshLeases> {
        Arc::new(RefreshLeases {
            instance,
            current: ArcSwapOption::empty(),
        })
    }

    /// Uses a new session's buckets (`None`: the session ended).
    pub fn attach(&self, buckets: Option<Buckets>) {
        self.current.store(buckets.map(Arc::new));
    }

    async fn take(
        &self,
        id: &str,
        wait: Duration,
    ) -> Result<Box<dyn RefreshLease>, CoordinationError> {
        let buckets = self
            .current
            .load_full()
            .ok_or_else(|| CoordinationError::Unreachable("not connected".into()))?;
        if buckets.client.connection_state() != State::Connected {
            return Err(CoordinationError::Unreachable("reconnecting".into()));
        }
        let started = Instant::now();
        let mut pause = FIRST_PAUSE;
        let holder = Bytes::from(self.instance.clone());
        let revision = loop {
            match buckets.leases.create(id, holder.clone()).await {
                Ok(revision) => break revision,
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(unreachable(e)),
            }
            if started.elapsed() >= wait {
                let holder = match buckets.leases.get(id).await {
                    Ok(Some(v)) => String::from_utf8_lossy(&v).into_owned(),
                    _ => "unknown".into(),
                };
                return Err(CoordinationError::Busy {
                    id: id.to_owned(),
                    holder,
                    waited: wait,
                    lease: REFRESH_LEASE,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        };
        // Held from here: every way out below gives it up (on drop).
        let mut lease = Lease {
            leases: buckets.leases.clone(),
            vault: buckets.vault.clone(),
            sealer: buckets.sealer.clone(),
            id: id.to_owned(),
            revision,
            row: None,
            row_revision: 0,
        };
        // The bus's row, not this instance's copy: the watch may not have brought the
        // rotation another instance just made.
        let entry = buckets
            .vault
            .entry(format!("{CONN}{id}"))
            .await
            .map_err(unreachable)?;
        if let Some(entry) = entry {
            lease.row_revision = entry.revision;
            if entry.operation == Operation::Put {
                // A row whose tag does not verify is no row: the refresh is refused.
                match buckets
                    .sealer
                    .open(&buckets.vault.name, &entry.key, &entry.value)
                {
                    Ok(row) => lease.row = row.map(Bytes::copy_from_slice),
                    Err(e) => {
                        tracing::error!(connection = %id, reason = %e, "fleet: the connection's row on the bus is not the fleet's; refresh refused")
                    }
                }
            }
        }
        Ok(Box::new(lease))
    }
}

impl RefreshCoordinator for RefreshLeases {
    fn lease<'a>(
        &'a self,
        id: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Box<dyn RefreshLease>, CoordinationError>> {
        Box::pin(self.take(id, wait))
    }
}

/// One held lease and the row read under it.
struct Lease {
    leases: kv::Store,
    vault: kv::Store,
    sealer: Arc<Sealer>,
    id: String,
    /// The lease entry's revision: only this lease is given up, never a later holder's.
    revision: u64,
    row: Option<Bytes>,
    row_revision: u64,
}

impl RefreshLease for Lease {
    fn row(&self) -> Option<&[u8]> {
        self.row.as_deref()
    }

    fn write_back(&mut self, row: Vec<u8>) -> BoxFuture<'_, Result<(), CoordinationError>> {
        Box::pin(async move {
            let key = format!("{CONN}{}", self.id);
            let sealed = self.sealer.seal(&self.vault.name, &key, Some(&row));
            match self.vault.update(key, sealed, self.row_revision).await {
                Ok(revision) => {
                    self.row_revision = revision;
                    Ok(())
                }
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                    Err(CoordinationError::Changed(self.id.clone()))
                }
                Err(e) => Err(unreachable(e)),
            }
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let (leases, id, revision) = (self.leases.clone(), self.id.clone(), self.revision);
        // Without a runtime (shutting down) the lease expires by itself.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = leases.delete_expect_revision(&id, Some(revision)).await {
                    tracing::debug!(connection = %id, error = %e, "fleet: a refresh lease was not given up; it expires by itself");
                }
            });
        }
    }
}

fn unreachable(e: impl std::fmt::Display) -> CoordinationError {
    CoordinationError::Unreachable(e.to_string())
}
