//! Whether the registry a fleet shares is current enough to judge by: not yet synced (not
//! ready), or unreachable for longer than `fleet.max_staleness` (every request refused). A
//! leaf.

use std::sync::atomic::{AtomicBool, Ordering};

/// The fleet registry's freshness, as the identity gate reads it on every request.
#[derive(Default)]
pub struct Freshness {
    /// Set while a fleet is configured and its registry has not been synced once.
    waiting: AtomicBool,
    /// Set while the bus has been unreachable for longer than allowed.
    stale: AtomicBool,
}

impl Freshness {
    /// Marks that readiness waits for the first sync.
    pub fn expect_sync(&self) {
        self.waiting.store(true, Ordering::Release);
    }

    /// The registry has been synced with the fleet.
    pub fn synced(&self) {
        self.waiting.store(false, Ordering::Release);
    }

    /// Whether the first sync is still awaited.
    pub fn waiting(&self) -> bool {
        self.waiting.load(Ordering::Acquire)
    }

    /// Sets whether the registry is too stale to judge by.
    pub fn set_stale(&self, stale: bool) {
        self.stale.store(stale, Ordering::Release);
    }

    /// Whether requests must be refused for staleness.
    pub fn stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }
}
