//! Access requests (AuthZEN Access Request and Approval Profile): a PDP caller's request
//! for what policy escalated becomes a consent like a held proxy request's (same store,
//! approvers, CIBA, webhooks and audit), except that nobody is held. Approved, it is a
//! window: the identical evaluation is `true` until it closes.

use std::sync::Arc;
use std::time::Duration;

use super::approvals::Consents;
use super::ask::NewConsent;
use super::error::Refused;
use super::record::{Consent, Status};
use crate::clock::now;

/// Marks an access request's `tuple_key` (a proxy consent's key is bare hex).
pub const KEY_PREFIX: &str = "authzen:";

/// How long an approval lasts when neither the approver nor the request names a window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(600);

/// Whether `c` is an access request rather than a held proxy request.
pub fn is_access_request(c: &Consent) -> bool {
    c.tuple_key.starts_with(KEY_PREFIX)
}

impl Consents {
    /// Opens a consent for an access request, or joins the one still pending for the same
    /// binding (a retried submission asks nobody twice).
    pub fn request_access(self: &Arc<Self>, new: NewConsent) -> Result<Consent, Refused> {
        let now = now();
        let open = self.with_store(|s| s.for_request(&new.agent, &new.digest, now))?;
        if let Some(c) = open.filter(|c| c.status == Status::Pending && is_access_request(c)) {
            return Ok(c);
        }
        if !self.can_open() {
            return Err(Refused::Unavailable(
                "the fleet's bus is unreachable: an access request opened now could be seen and answered only here; retry when the bus is back".into(),
            ));
        }
        self.create(new, now)
    }

    /// The approval in force for an access request's binding (`tuple_key`) of `agent`.
    pub fn access_approval(
        &self,
        agent: &str,
        tuple_key: &str,
    ) -> Result<Option<Consent>, Refused> {
        self.with_store(|s| s.window(agent, tuple_key, now()))
    }

    /// Cancels a pending access request at its requester's wish; false when it was no
    /// longer pending.
    pub fn withdraw(&self, id: &str, reason: Option<&str>) -> bool {
        self.close(
            id,
            Status::Cancelled,
            "access_request",
            Some(reason.unwrap_or("withdrawn by the requester")),
        )
    }

    /// The window an approval without one gets: an access request's requested window (up
    /// to `consent.max_window`) or [`DEFAULT_WINDOW`]; a proxy consent none (approved once).
    pub(super) fn default_window(&self, id: &str) -> Option<Duration> {
        let c = self.get(id).ok().flatten().filter(is_access_request)?;
        let requested = c.tuple["access_request"]["requested_until"]
            .as_i64()
            .map(|until| Duration::from_secs(until.saturating_sub(now()).max(1) as u64));
        Some(
            requested
                .unwrap_or(DEFAULT_WINDOW)
                .min(self.config.max_window),
        )
    }
}
