//! Why a body could not be read, and the small helpers every reader words its reasons with.

/// Why a body could not be read; becomes the intent gate's refusal reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The body does not parse as what the API expects.
    #[error("{0}")]
    Invalid(String),
    /// The body parses, but another reader could take it to mean something else.
    #[error("{0}")]
    Ambiguous(String),
    /// The body needs more work to read than one request may cost.
    #[error("{0}")]
    TooComplex(String),
    /// A Slack `token` argument: credentials are AgentGate's job, never the agent's.
    #[error(
        "the request carries a Slack token argument ({0}); AgentGate injects credentials, remove the token"
    )]
    SlackToken(&'static str),
}

/// A body that does not parse as what the API expects.
pub(crate) fn invalid(reason: impl Into<String>) -> BodyError {
    BodyError::Invalid(reason.into())
}

/// A body another reader could take to mean something else.
pub(crate) fn ambiguous(reason: impl Into<String>) -> BodyError {
    BodyError::Ambiguous(reason.into())
}

/// A piece of the request for a reason: quoted, and cut short when long.
pub(crate) fn shown(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
        None => format!("{s:?}"),
    }
}
