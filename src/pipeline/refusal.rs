//! The refusals the flow itself makes (before or around the gates), each with its code.

use std::borrow::Cow;

use http::StatusCode;

use crate::audit::AuditError;
use crate::error::{Denial, Gate};

/// A request a proxy cannot read as one.
pub(super) fn bad_request(reason: impl Into<Cow<'static, str>>) -> Denial {
    Denial::new(
        Gate::Ingress,
        StatusCode::BAD_REQUEST,
        "bad_request",
        reason,
    )
}

/// A request that disagrees with the tunnel it came through.
pub(super) fn misdirected(reason: String) -> Denial {
    Denial::new(
        Gate::Ingress,
        StatusCode::MISDIRECTED_REQUEST,
        "misdirected_request",
        reason,
    )
}

/// A request that already passed through this instance.
pub(super) fn loop_detected() -> Denial {
    Denial::new(
        Gate::Ingress,
        StatusCode::LOOP_DETECTED,
        "loop_detected",
        "this request already passed through this AgentGate instance (Via); check HTTPS_PROXY and NO_PROXY",
    )
}

/// The decision could not be made durable: nothing is forwarded.
pub(super) fn audit_unavailable(e: AuditError) -> Denial {
    Denial::new(
        Gate::Audit,
        StatusCode::SERVICE_UNAVAILABLE,
        "audit_unavailable",
        format!("{e}; the request was not forwarded"),
    )
}
