//! What the registry holds: agents, their tokens, the issuer's keys, the snapshot a
//! running proxy reads; and what can go wrong.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use crate::state::StateError;

/// A registry problem, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("agent registry {path}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("no agent named \"{0}\"; see `agentgate agents list`")]
    UnknownAgent(String),
    #[error("agent \"{0}\" has no token for this jti; see `agentgate agents list -o json`")]
    UnknownToken(String),
}

/// The revocation entry `PANIC --all` writes: it refuses every caller, registered or not.
pub const ALL_AGENTS: &str = "*";

/// One registered agent, as `agents list` shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Agent {
    pub name: String,
    pub spiffe_id: String,
    pub owner: Option<String>,
    pub tenant: Option<String>,
    pub created: i64,
    /// When the agent was revoked, if it was.
    pub revoked: Option<i64>,
    /// Unexpired, unrevoked tokens.
    pub active_tokens: u32,
    /// Expiry of the newest token.
    pub token_expires: Option<i64>,
    /// Gets `agw_` reference tokens (`agents register --reference-tokens`).
    pub reference_tokens: bool,
}

/// A token as issued.
#[derive(Debug, Clone)]
pub struct Token {
    pub jti: String,
    pub kid: String,
    pub issued: i64,
    pub expires: i64,
    pub token: String,
}

/// A built-in issuer key.
#[derive(Debug, Clone)]
pub struct IssuerKey {
    pub kid: String,
    /// Public JWK (JSON text).
    pub public_jwk: String,
    pub created: i64,
    /// Set once rotated away: the key is kept in the bundle until `valid_until`.
    pub retired: Option<i64>,
    pub valid_until: Option<i64>,
}

/// What the proxy needs of the registry on every request, loaded in one go.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Registered agents by SPIFFE ID.
    pub agents: HashMap<String, AgentInfo>,
    /// SPIFFE IDs refused whatever their token says.
    pub revoked_ids: HashSet<String>,
    /// Token ids refused.
    pub revoked_jtis: HashSet<String>,
    /// `PANIC --all` is in force: every caller is refused until it is lifted.
    pub all_revoked: bool,
    /// The issuer keys still in the bundle.
    pub issuer_keys: Vec<IssuerKey>,
}

/// Registry facts about one agent.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    pub name: String,
    pub owner: Option<String>,
}
