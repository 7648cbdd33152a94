//! The work one request's body may cost, shared by every reader of that body.

use super::error::BodyError;

/// Units of work (form pairs, JSON keys, header lines, addresses, multipart parts, GraphQL
/// selections) one request's body may cost. Every extractor is linear in its input, and
/// this caps the constant: a legitimate request needs a few hundred at most.
pub const WORK_BUDGET: usize = 100_000;

/// The work left for one request's body.
#[derive(Debug)]
pub struct Budget {
    left: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget { left: WORK_BUDGET }
    }
}

impl Budget {
    /// Work spent so far.
    pub fn spent(&self) -> usize {
        WORK_BUDGET - self.left
    }

    /// Spends `n` units on `what` (named in the refusal), or refuses the body.
    pub(crate) fn spend(&mut self, n: usize, what: &str) -> Result<(), BodyError> {
        self.left = self.left.checked_sub(n).ok_or_else(|| {
            BodyError::TooComplex(format!(
                "the request body is too complex to inspect (more than {WORK_BUDGET} {what} and other items); split it into smaller requests"
            ))
        })?;
        Ok(())
    }
}
