//! Why a request's meaning could not be worked out.

use super::extract::error::BodyError;
use super::path::PathError;

/// Why a request's meaning could not be worked out.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IntentError {
    /// The path is not one way of writing one path.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The body could not be read.
    #[error(transparent)]
    Body(#[from] BodyError),
    /// A method-override header (its name).
    #[error(
        "the request carries {0}, which asks the server to act as another method; send the real method instead"
    )]
    MethodOverride(&'static str),
    /// The request could mean more than one thing; the reason says why.
    #[error("{0}")]
    Ambiguous(String),
    /// An `Upgrade` where `intent.upgrades` lists none.
    #[error(
        "{host}{path} does not accept protocol upgrades (Upgrade: {protocol}); list it under intent.upgrades if the vendor documents one"
    )]
    UpgradeNotAllowed {
        /// The request's host.
        host: String,
        /// The request's path.
        path: String,
        /// The protocol asked for (cut short when long).
        protocol: String,
    },
}
