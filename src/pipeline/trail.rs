//! What the gates learned about one request, kept for its decision record and log line
//! whether it was forwarded or refused. The flow hands each gate's output to the next gate
//! directly; the trail only keeps a copy for the record.

use std::sync::Arc;
use std::time::Duration;

use super::sent::Sent;
use crate::consent::Granted;
use crate::gates::policy::{Charged, Decided};
use crate::gates::token::Injection;
use crate::identity::Caller;
use crate::intent::Tuple;

/// The record's view of one request.
#[derive(Default)]
pub(super) struct Trail {
    pub(super) caller: Option<Arc<Caller>>,
    pub(super) tuple: Option<Arc<Tuple>>,
    /// What the policy (and its shadow) said.
    pub(super) policy: Decided,
    /// What the decision's budgets came to.
    pub(super) budgets: Charged,
    /// The approval that let an escalated request through.
    pub(super) consent: Option<Granted>,
    pub(super) injection: Option<Injection>,
    /// How long after its start a forwarded request's decision record was committed.
    pub(super) decided: Option<Duration>,
    /// What a forwarded request sends upstream, as its decision record describes it.
    pub(super) sent: Option<Sent>,
    /// Where a kernel-redirected connection was headed, for its record's reasons.
    pub(super) redirected: Option<String>,
}
