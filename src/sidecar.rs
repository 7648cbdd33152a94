//! What an instance does beside an agent in a pod: the transparent listener the pod's
//! redirected traffic arrives on, the plain-HTTP probe listener, the pod's own identity for
//! traffic that carries none, and the CA bundle written where the agent's container reads it.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::agent_env;
use crate::config::Config;
use crate::identity::Identity;
use crate::identity::pod::{self, Source};
use crate::listen::{BindError, bind};
use crate::pipeline::Pipeline;
use crate::state::StateDir;

/// Why the pod's side of an instance could not start.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("ca.export_bundle {path}: {reason}")]
    ExportBundle { path: String, reason: String },
    #[error(
        "transparent.listen and pod.loopback_is_pod need to know who the pod is: set pod.agent to an agent name, or turn on identity.workload_api for the pod's SPIFFE ID"
    )]
    NoPodIdentity,
    #[error(transparent)]
    Pod(#[from] pod::PodError),
}

/// Bound listeners of the pod's own, opened before anything is served.
pub struct Listeners {
    pub transparent: Vec<(SocketAddr, TcpListener)>,
    pub probes: Option<(SocketAddr, TcpListener)>,
}

/// Binds `transparent.listen` and `health.listen`.
pub async fn bind_listeners(config: &Config) -> Result<Listeners, SidecarError> {
    let mut transparent = Vec::new();
    for addr in &config.transparent.listen {
        transparent.push(bind(*addr, "transparent.listen", "AGENTGATE_TRANSPARENT_LISTEN").await?);
    }
    let probes = match config.health.listen {
        Some(addr) => Some(bind(addr, "health.listen", "AGENTGATE_HEALTH_LISTEN").await?),
        None => None,
    };
    Ok(Listeners {
        transparent,
        probes,
    })
}

/// Writes `ca.export_bundle`, and gets the pod's first token when some traffic is the
/// pod's; returns where later tokens come from.
pub fn prepare(
    config: &Config,
    state: &StateDir,
    identity: &Identity,
    workload_endpoint: Option<&str>,
) -> Result<Option<Source>, SidecarError> {
    if let Some(path) = &config.ca.export_bundle {
        agent_env::export_ca_bundle(state, path).map_err(|e| SidecarError::ExportBundle {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    if !config.pod.in_use(&config.transparent) {
        return Ok(None);
    }
    let source = match (config.pod.agent.as_str(), workload_endpoint) {
        ("", Some(endpoint)) => Source::Workload {
            endpoint: endpoint.to_owned(),
        },
        ("", None) => return Err(SidecarError::NoPodIdentity),
        (name, _) => Source::Agent {
            name: name.to_owned(),
            owner: Some(config.pod.owner.clone()).filter(|o| !o.is_empty()),
        },
    };
    pod::first_token(identity, &source, state, &config.identity)?;
    Ok(Some(source))
}

/// Serves the transparent listeners and keeps the pod's token fresh.
pub fn spawn(
    listeners: Vec<(SocketAddr, TcpListener)>,
    source: Option<Source>,
    ctx: (&Arc<Pipeline>, &Arc<Semaphore>, &watch::Receiver<bool>),
    identity: &Arc<Identity>,
    state: &StateDir,
    config: &Config,
) -> Vec<JoinHandle<()>> {
    let (pipeline, slots, shutdown) = ctx;
    let mut tasks = Vec::new();
    for (addr, listener) in listeners {
        tracing::info!(%addr, "transparent listener: taking redirected connections");
        tasks.push(tokio::spawn(crate::ingress::transparent::serve(
            listener,
            pipeline.clone(),
            slots.clone(),
            shutdown.clone(),
        )));
    }
    if let Some(source) = source {
        tasks.push(tokio::spawn(pod::keep_fresh(
            identity.clone(),
            source,
            state.clone(),
            config.identity.clone(),
            shutdown.clone(),
        )));
    }
    tasks
}
