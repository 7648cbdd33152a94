//! Gate 2 — Intent: what the request means. Routes the request through the service catalog
//! (host, method, path template), reads the body where the API keeps its meaning there, and
//! returns the AuthZEN tuple; a request whose meaning is ambiguous or unreadable is refused
//! here, since policy cannot judge what it cannot see.

use std::sync::Arc;

use http::StatusCode;

use crate::error::{Denial, Gate};
use crate::identity::Caller;
use crate::intent::{BodyError, BodyPrefix, IntentError, Routed, Subject, Tuple};

/// The AuthZEN tuple of a routed request: who (`caller`), what (the catalog's operation and
/// what `body` says, when the API keeps its meaning there), on which resource.
pub fn derive(
    routed: &Routed<'_, '_>,
    caller: &Caller,
    body: Option<BodyPrefix<'_>>,
) -> Result<Arc<Tuple>, Denial> {
    routed
        .tuple(Subject::from(caller), body)
        .map(Arc::new)
        .map_err(refusal)
}

/// The refusal for a request whose meaning could not be worked out.
pub fn refusal(error: IntentError) -> Denial {
    let (status, code) = match &error {
        IntentError::Path(_) => (StatusCode::BAD_REQUEST, "ambiguous_path"),
        IntentError::MethodOverride(_) => (StatusCode::BAD_REQUEST, "ambiguous_method"),
        IntentError::Ambiguous(_) => (StatusCode::BAD_REQUEST, "ambiguous_request"),
        IntentError::UpgradeNotAllowed { .. } => (StatusCode::FORBIDDEN, "upgrade_not_allowed"),
        IntentError::Body(BodyError::Invalid(_)) => (StatusCode::BAD_REQUEST, "unreadable_body"),
        IntentError::Body(BodyError::Ambiguous(_)) => (StatusCode::BAD_REQUEST, "ambiguous_body"),
        IntentError::Body(BodyError::TooComplex(_)) => {
            (StatusCode::PAYLOAD_TOO_LARGE, "body_too_complex")
        }
        IntentError::Body(BodyError::SlackToken(_)) => {
            (StatusCode::FORBIDDEN, "credential_in_request")
        }
    };
    Denial::new(Gate::Intent, status, code, error.to_string())
}
