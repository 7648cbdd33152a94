//! Refreshes of one OAuth connection across instances that share its row (a fleet): a
//! lease taken before the stored refresh token is read, and a compare-and-set write of the
//! rotated one. Providers that rotate refresh tokens treat a second use of one as theft and
//! revoke the grant, so two instances must never refresh a connection at once, and a
//! rotated token must never be written over a newer row. A leaf: the vault calls it, fleet
//! mode implements it on its bus.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future, so the traits stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Serializes the refreshes of each connection across the instances sharing it.
pub trait RefreshCoordinator: Send + Sync {
    /// Takes the lease on refreshing connection `id`, waiting up to `wait` while another
    /// instance holds it, then reads the connection's shared row under it.
    fn lease<'a>(
        &'a self,
        id: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Box<dyn RefreshLease>, CoordinationError>>;
}

/// A held lease: the shared row as read under it, and the write it allows. Dropping it
/// gives the lease up.
pub trait RefreshLease: Send {
    /// The connection's shared row (see `vault::fleet`), as read under the lease; `None`
    /// when the fleet does not hold it.
    fn row(&self) -> Option<&[u8]>;
    /// Writes `row` in place of the one read, unless that changed since (compare-and-set).
    fn write_back(&mut self, row: Vec<u8>) -> BoxFuture<'_, Result<(), CoordinationError>>;
}

/// Why a refresh could not be coordinated. Never holds a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CoordinationError {
    #[error(
        "the fleet bus is unreachable ({0}); refresh tokens are only rotated under the fleet's lease, so this refresh is refused until the bus is back (access tokens already cached keep working)"
    )]
    Unreachable(String),
    #[error(
        "another instance ({holder}) has been refreshing connection {id} for longer than {waited:?}; retry shortly (a lease left by a stopped instance expires after {lease:?})"
    )]
    Busy {
        id: String,
        holder: String,
        waited: Duration,
        lease: Duration,
    },
    #[error(
        "connection {0} is not in the fleet's vault bucket (removed on another instance, or not published yet); check `agentgate vault list` and retry"
    )]
    Missing(String),
    #[error(
        "connection {0} changed in the fleet while it was being refreshed (replaced, removed or revoked); the newer row was kept and this refresh refused: retry, and if it keeps failing store the connection again with `agentgate vault set`"
    )]
    Changed(String),
}
