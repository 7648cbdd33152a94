//! The identity gate's caller as the subject of a tuple. Kept apart so that the rest of
//! intent needs nothing from identity.

use super::request::Subject;
use crate::identity::Caller;

impl<'a> From<&'a Caller> for Subject<'a> {
    fn from(c: &'a Caller) -> Self {
        Subject {
            id: &c.spiffe_id,
            name: &c.agent,
            tenant: c.tenant.as_deref(),
            owner: c.owner.as_deref(),
            trust_domain: &c.trust_domain,
        }
    }
}
