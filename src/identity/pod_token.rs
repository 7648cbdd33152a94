//! The token presented for the pod's own traffic (see [`super::pod`]), as the identity gate
//! holds it. A leaf.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwapOption;

/// The pod's current token, kept fresh by [`super::pod::keep_fresh`].
#[derive(Default)]
pub struct PodToken {
    token: ArcSwapOption<String>,
    /// Set when some traffic is the pod's: readiness waits for the first token.
    expected: AtomicBool,
}

impl PodToken {
    /// The token to verify for the pod's traffic; `None` until the first one arrived.
    pub fn current(&self) -> Option<Arc<String>> {
        self.token.load_full()
    }

    /// Whether a token is expected and has not arrived yet.
    pub fn waiting(&self) -> bool {
        self.expected.load(Ordering::Acquire) && self.token.load().is_none()
    }

    /// Marks that readiness waits for the first token.
    pub fn expect(&self) {
        self.expected.store(true, Ordering::Release);
    }

    /// Replaces the token.
    pub fn set(&self, token: String) {
        self.token.store(Some(Arc::new(token)));
    }
}
