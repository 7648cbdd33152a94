//! What can go wrong in the vault, with what to do about it.

use std::path::PathBuf;

/// A vault problem, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("vault database {path}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(
        "the vault key {key} is missing, but {db} holds {secrets} sealed secret(s) it protects; restore the key file (or set vault.key_file), or move {db} away to start an empty vault"
    )]
    MissingKey {
        key: PathBuf,
        db: PathBuf,
        secrets: i64,
    },
    #[error(
        "the vault key {key} does not match {db} (it was sealed with another key); restore the right key file, or move {db} away to start an empty vault"
    )]
    WrongKey { key: PathBuf, db: PathBuf },
    #[error("the vault key {path} is unusable: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error(
        "vault connection {id} is damaged: {reason}; remove it with `agentgate vault rm {id}` and set it again"
    )]
    Corrupt { id: String, reason: String },
    #[error("vault connection {0} no longer exists; see `agentgate vault list`")]
    Gone(String),
    #[error("the system random generator or cipher failed")]
    Crypto,
    #[error("vault.{key}: {reason}")]
    Config { key: String, reason: String },
}
