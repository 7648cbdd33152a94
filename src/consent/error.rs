//! What goes wrong with consents: the store or setup ([`ConsentError`]), an answer not
//! taken ([`AnswerError`]), and why a request is not let through ([`Refused`], which the
//! consent gate turns into the agent's refusal).

use std::time::Duration;

/// A consent problem.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConsentError {
    #[error("consent store: {0}")]
    Store(String),
    #[error("[consent.ciba]: {0}")]
    Setup(String),
    /// A tenant's consent scope could not start (its directory, its webhooks).
    #[error("{0}")]
    Tenant(String),
}

/// Why an answer was not taken.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AnswerError {
    #[error("no consent {0}; see `agentgate consent list`")]
    NotFound(String),
    #[error("consent {id} was already {status} ({how})")]
    AlreadyAnswered {
        id: String,
        status: &'static str,
        how: String,
    },
    #[error(
        "consent {0} expired before this answer; the request was refused (the late answer is recorded)"
    )]
    Expired(String),
    #[error("approval window {0:?} is longer than consent.max_window")]
    WindowTooLong(Duration),
    #[error(transparent)]
    Store(#[from] ConsentError),
}

/// Why the consent engine does not let a request through. The consent gate maps each to
/// the agent's refusal (status, error code, fields); the text is its reason.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refused {
    /// As many identical requests as may wait on one consent already do.
    #[error("{waiters} identical requests already wait on consent {id}; wait for its answer")]
    TooManyWaiters { id: String, waiters: usize },
    /// The agent asked for too many consents in the last minute.
    #[error(
        "this agent asked for {recent} consents in the last minute (limit {per_minute} × consent.max_pending_per_agent {per_agent}); wait before asking again"
    )]
    AskedTooOften {
        recent: usize,
        per_minute: usize,
        per_agent: usize,
        /// Seconds until the minute is over.
        retry_after: u64,
    },
    /// Too many consents pending, in all or of this agent.
    #[error(
        "{total} consents are pending ({mine} of this agent; limits consent.max_pending {max_pending} and max_pending_per_agent {per_agent}); wait for answers"
    )]
    TooManyPending {
        total: usize,
        mine: usize,
        max_pending: usize,
        per_agent: usize,
    },
    /// A person (or PANIC, or the CIBA provider) denied it.
    #[error(
        "consent {id} was denied by {} ({}){}",
        .by.as_deref().unwrap_or("?"),
        .how.as_deref().unwrap_or("?"),
        .reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
    )]
    Denied {
        id: String,
        by: Option<String>,
        how: Option<String>,
        reason: Option<String>,
    },
    /// Async mode: asked, not answered yet; the identical retry passes once approved.
    #[error(
        "{why}: a person must approve this request (consent {id}, code {binding_code}); retry the identical request after approval"
    )]
    Pending {
        id: String,
        binding_code: String,
        expires: i64,
        /// Why policy escalated.
        why: String,
        /// `consent.retry_after`.
        retry_after: Duration,
    },
    /// Nobody answered in time.
    #[error(
        "consent timed out after {}s with no answer (consent {id}, code {binding_code})",
        .timeout.as_secs()
    )]
    TimedOut {
        id: String,
        binding_code: String,
        timeout: Duration,
    },
    /// Closed without an answer (its held agents went away).
    #[error("consent {id} was cancelled")]
    Cancelled { id: String },
    /// Its one-time approval was taken by an identical request.
    #[error(
        "the one-time approval of consent {id} was used by an identical request; retry to ask again"
    )]
    Used { id: String },
    /// The store failed: nothing can be asked or found.
    #[error("consent could not be asked: {0}")]
    Unavailable(String),
}

impl From<ConsentError> for Refused {
    fn from(e: ConsentError) -> Self {
        Refused::Unavailable(e.to_string())
    }
}
