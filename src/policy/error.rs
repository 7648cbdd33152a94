//! What can go wrong loading or evaluating a policy.

use std::path::PathBuf;

use super::config::ENTRYPOINT;

/// A policy directory that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy {file}: {reason}")]
    Compile { file: String, reason: String },
    #[error("policy data file {file}: {reason}")]
    Data { file: String, reason: String },
    #[error(
        "the policies in {0} do not define {ENTRYPOINT}; add `package agentgate` with a `decision` rule"
    )]
    NoEntrypoint(PathBuf),
}
