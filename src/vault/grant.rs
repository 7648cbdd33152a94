//! What the vault hands out: a usable credential, one decision's grant of it, what a request
//! asks for, and why none could be had.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderValue;

use super::connection::Connection;
use super::coordinator::CoordinationError;
use crate::outbound::FetchError;
use crate::secret::Secret;
use crate::vendors::Form;

/// A usable credential: the token, its header value, and who received it.
pub struct Credential {
    pub connection: Arc<Connection>,
    pub(super) token: Secret,
    pub(super) header: HeaderValue,
    /// Keyed fingerprint of the token (logged and audited instead of it).
    pub fingerprint: String,
    /// Unix expiry, when known.
    pub expires: Option<i64>,
    /// When the cache lets go of it (expiry minus skew).
    pub(super) renew_in: Option<Duration>,
    /// Set by PANIC: deny-listed until it expires.
    pub(super) revoked: AtomicBool,
    /// SPIFFE IDs of the agents it was injected for.
    pub(super) users: Mutex<HashSet<String>>,
}

impl Credential {
    /// The `Authorization` value to inject.
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }

    /// The `Authorization` value in `form`: [`Self::header`], or `Basic base64(user:token)`.
    pub fn header_in(&self, form: Form) -> Result<HeaderValue, TokenError> {
        let Form::Basic { user } = form else {
            return Ok(self.header.clone());
        };
        use base64::Engine;
        let pair = format!("{user}:{}", self.token.expose());
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        let mut value = HeaderValue::try_from(format!("Basic {encoded}")).map_err(|_| {
            TokenError::Fetch(FetchError::Setup(
                "the credential cannot be written as a Basic header".into(),
            ))
        })?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// The raw token, for redacting echoes of it from responses.
    pub fn token(&self) -> &str {
        self.token.expose()
    }

    /// Unrevoked and not about to expire.
    pub fn usable(&self, now: i64) -> bool {
        !self.revoked.load(Ordering::Relaxed) && self.expires.is_none_or(|e| e > now + 1)
    }
}

/// One decision's use of a credential, reused by retries of the same tuple.
pub struct Grant {
    pub credential: Arc<Credential>,
    /// Unix expiry.
    pub expires: i64,
}

/// Why no credential could be had. Never holds a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    Fetch(#[from] FetchError),
    #[error("the vault could not be read: {0}")]
    Store(String),
    #[error("the static credential of {0} expired; store a new one with `agentgate vault set`")]
    StaticExpired(String),
    #[error(
        "the token endpoint handed back a credential PANIC revoked ({0}); it stays refused until it expires"
    )]
    DenyListed(String),
    #[error(
        "connection {0} was revoked by PANIC; store a new credential with `agentgate vault set`"
    )]
    Revoked(String),
    #[error("{0}")]
    Reauthorize(String),
    #[error("{0}")]
    Fleet(#[from] CoordinationError),
}

/// What a request needs a credential for.
pub struct Want<'a> {
    /// The agent's SPIFFE ID.
    pub agent: &'a str,
    /// Scopes from the policy decision.
    pub scopes: &'a [String],
    /// A GitHub repository (`owner/repo`) to limit a GitHub App token to.
    pub repository: Option<&'a str>,
    /// Digest of (agent, tuple): retries of the same tuple reuse the grant.
    pub digest: [u8; 16],
}
