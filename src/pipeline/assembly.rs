//! What the pipeline is made of: the engines behind each gate, the egress, and the few
//! things the flow keeps for itself (its `Via`, request ids, the heavy-body bound).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;
use tokio::sync::Semaphore;

use crate::audit::Audit;
use crate::ca::Ca;
use crate::config::sections::LimitsConfig;
use crate::consent::TenantConsents;
use crate::egress::guard::Guard;
use crate::egress::upstream::Upstream;
use crate::identity::Identity;
use crate::intent::Intent;
use crate::metrics::Metrics;
use crate::policy::Policies;
use crate::sessions::Sessions;
use crate::vault::Vault;

/// Everything the flow needs, built once at start.
pub struct Components {
    /// This process's instance id (in `Via` and request ids).
    pub instance: String,
    /// Header, body and timeout limits on what agents send.
    pub limits: LimitsConfig,
    /// Gate 1.
    pub identity: Arc<Identity>,
    /// Gate 2.
    pub intent: Arc<Intent>,
    /// Gate 3: the instance's policy and each tenant's.
    pub policies: Arc<Policies>,
    /// Gate 3's budget counter.
    pub budgets: Arc<dyn crate::policy::budget::Budgets>,
    /// Gate 4: the instance's consents and each tenant's.
    pub consents: Arc<TenantConsents>,
    /// Gate 5.
    pub vault: Arc<Vault>,
    /// Where every decision is committed before the request leaves.
    pub audit: Arc<Audit>,
    /// Requests by effect and gate, decision latency (for `/metrics`).
    pub metrics: Arc<Metrics>,
    /// Which destinations may be dialed.
    pub guard: Arc<Guard>,
    /// The certificate-verifying client to the real upstream.
    pub upstream: Upstream,
    /// Mints the leaf certificates agents see.
    pub ca: Ca,
    /// `pod.loopback_is_pod`: loopback requests without a credential are the pod's.
    pub loopback_is_pod: bool,
}

/// The request flow with everything it needs, shared by all connections.
pub struct Pipeline {
    pub(crate) c: Components,
    /// Open tunnels and upgraded connections by agent (PANIC closes them).
    pub sessions: Arc<Sessions>,
    pub(super) via: HeaderValue,
    pub(super) via_token: String,
    next_request: AtomicU64,
    /// Bounds how many large bodies are judged at once (one per core).
    pub(super) heavy: Semaphore,
}

impl Pipeline {
    /// Assembles the pipeline.
    pub fn new(c: Components) -> Self {
        let via = HeaderValue::from_str(&format!("1.1 agentgate-{}", c.instance))
            .unwrap_or_else(|_| HeaderValue::from_static("1.1 agentgate"));
        Pipeline {
            via_token: format!("agentgate-{}", c.instance),
            via,
            c,
            sessions: Arc::default(),
            next_request: AtomicU64::new(1),
            heavy: Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())),
        }
    }

    /// This process's instance id.
    pub fn instance(&self) -> &str {
        &self.c.instance
    }

    /// The proxy's limits on what agents send.
    pub fn limits(&self) -> &LimitsConfig {
        &self.c.limits
    }

    /// The CA that mints the certificates agents see.
    pub fn ca(&self) -> &Ca {
        &self.c.ca
    }

    /// A new request id, unique within this instance and distinct across instances.
    pub fn request_id(&self) -> String {
        let n = self.next_request.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:x}", self.c.instance)
    }
}
