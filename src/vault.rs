//! Gate 5's store of credentials: connections per (tenant, service), the secrets behind them
//! (sealed at rest, see [`store`]), how a short-lived access token is obtained from each kind
//! ([`fetch`]), the credential cache with single-flight refresh (one refresh of a connection
//! at a time, across a fleet too: [`rotation`], [`coordinator`]), per-decision grants, the
//! ledger of what each agent received (for PANIC), and `agw_` references ([`references`]).

pub mod config;
pub mod connection;
pub mod coordinator;
pub mod credentials;
pub mod error;
pub mod fetch;
pub mod fleet;
pub mod grant;
pub mod references;
pub mod revoke;
pub mod rotation;
pub mod store;

pub use config::{ClientConfig, VaultConfig};
pub use connection::{Connection, Kind, Settings, origin_key};
pub use coordinator::{CoordinationError, RefreshCoordinator, RefreshLease};
pub use credentials::Vault;
pub use error::VaultError;
pub use grant::{Credential, Grant};
// What differs per vendor (default origins, origins one connection serves) is the vendor's.
pub use crate::vendors::{Form, default_origin, form_at, served_by};
