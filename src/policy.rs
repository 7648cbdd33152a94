//! Gate 3's machinery: Rego policies evaluated in-process by regorus.
//!
//! A policy directory (`*.rego` plus `*.json` data files) is compiled once per load into a
//! [`regorus::CompiledPolicy`] for the entry point `data.agentgate.decision`, then shared by
//! every request through an `ArcSwap` (no lock on the request path). Evaluation has a time
//! bound. Anything but a well-formed decision denies: undefined, malformed, timed out,
//! erroring. A reload that fails keeps the last good policy and says why.

pub mod assistant;
pub mod budget;
mod cache;
mod clockless;
pub mod config;
pub mod decision;
pub mod draft;
mod embedded;
pub mod engine;
pub mod error;
pub mod replay;
pub mod runner;
pub mod shadow;
pub mod sources;
mod tenants;

pub use config::{ENTRYPOINT, Mode, PolicyConfig};
pub use decision::{Budget, Decision, Effect, MAX_BUDGET_LIMIT, MAX_BUDGET_WINDOW};
pub use embedded::{DEFAULT_FILES, default_sources, seed};
pub use engine::{Policy, Reload, Status, resolve_dir};
pub use error::PolicyError;
pub use shadow::ShadowStats;
pub use sources::{Loaded, Sources};
pub use tenants::{Policies, resolve_tenant_dir};

#[cfg(test)]
mod tests;
