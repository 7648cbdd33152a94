//! What the admin routes share: the [`Admin`] state every handler reaches, readiness and the
//! event-stream slots.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::auth::{self, Scope};
use crate::identity::Identity;

/// Event streams open at once, per scope (the instance admin, each tenant).
pub const MAX_STREAMS: usize = 16;

/// What admin routes reach.
pub struct Admin {
    pub health: Arc<Health>,
    pub identity: Arc<Identity>,
    pub intent: Arc<crate::intent::Intent>,
    /// The instance's policy and each tenant's.
    pub policies: Arc<crate::policy::Policies>,
    /// Gate 3's budget counter.
    pub budgets: Arc<dyn crate::policy::budget::Budgets>,
    pub audit: Arc<crate::audit::Audit>,
    /// The audit disk watchdog: `/readyz` warnings and the disk gauges.
    pub disk: crate::audit::disk::DiskWatch,
    /// The instance's counters, rendered at `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where `audit.pub` lives.
    pub state: crate::state::StateDir,
    pub config: Arc<crate::config::Config>,
    pub vault: Arc<crate::vault::Vault>,
    /// The instance's consents and each tenant's (with their CIBA clients).
    pub consents: Arc<crate::consent::TenantConsents>,
    pub panic: Arc<crate::panic::Panic>,
    /// Admin, tenant and dashboard tokens.
    pub auth: auth::Auth,
    /// This process's instance id.
    pub instance: String,
    /// The URL the dashboard is reached at (`http://127.0.0.1:8081`).
    pub base_url: String,
    /// Configured tenant names.
    pub tenants: Vec<String>,
    /// Live event-stream subscribers.
    pub streams: Streams,
    /// The proxy listener's connection slots (for the open-connections gauge).
    pub slots: Arc<Semaphore>,
    pub max_connections: usize,
    /// AuthZEN access requests: requestable denials and idempotency keys.
    pub access_requests: super::access_request::AccessRequests,
    /// The fleet's audit stream (`scope=fleet`), in fleet mode.
    pub fleet: Option<Arc<crate::fleet::view::View>>,
}

/// Readiness shared with the proxy: true once the proxy listener accepts, false when draining.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    /// Sets whether the instance is ready to take traffic.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether the instance takes traffic.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// The open event streams, bounded per scope so one tenant cannot take all of them.
pub struct Streams {
    slots: Mutex<HashMap<Scope, Arc<Semaphore>>>,
    pub(super) shutdown: watch::Receiver<bool>,
}

impl Streams {
    /// Streams end when `shutdown` flips.
    pub fn new(shutdown: watch::Receiver<bool>) -> Self {
        Self {
            slots: Default::default(),
            shutdown,
        }
    }

    /// A slot for one more stream of `scope`, if it has one left.
    pub(super) fn acquire(&self, scope: &Scope) -> Option<OwnedSemaphorePermit> {
        let slots = {
            let mut map = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(scope.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(MAX_STREAMS)))
                .clone()
        };
        slots.try_acquire_owned().ok()
    }
}
