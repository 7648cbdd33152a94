//! The pod as a caller. Traffic the kernel redirects to the transparent listener carries no
//! credential of its own, so AgentGate presents one on the pod's behalf: the JWT-SVID of a
//! registered agent (`pod.agent`, registered at start if missing and re-issued before it
//! expires) or, with SPIFFE, the workload's own JWT-SVID from the Workload API
//! (`FetchJWTSVID` for AgentGate's audience). Either token is then verified like any agent's,
//! so revocation and PANIC apply to the pod exactly as to an agent.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Identity;
use super::issuer::{self, Registration};
use super::registry::{Registry, RegistryError};
use crate::clock::now;
use crate::config::sections::IdentityConfig;
use crate::state::StateDir;

/// Where the pod's token comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A registered agent of the built-in issuer.
    Agent { name: String, owner: Option<String> },
    /// The workload's JWT-SVID from the Workload API at this endpoint.
    Workload { endpoint: String },
}

/// Why the pod's agent token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("pod.agent: {0}")]
    Registry(#[from] RegistryError),
    #[error("pod.agent: {0}")]
    Issuer(#[from] issuer::IssuerError),
    #[error(
        "pod.agent \"{0}\" is revoked (PANIC); the pod's traffic stays refused until someone lifts it: agentgate agents register {0}"
    )]
    Revoked(String),
}

/// Gets a first token before the listeners open (so a misconfigured `pod.agent` fails the
/// start), then refreshes it until `shutdown`.
pub fn first_token(
    identity: &Identity,
    source: &Source,
    state: &StateDir,
    config: &IdentityConfig,
) -> Result<(), PodError> {
    identity.expect_pod_token();
    if let Source::Agent { name, owner } = source {
        let (token, _) = agent_token(state, config, name, owner.as_deref(), now())?;
        identity.set_pod_token(token);
        // A registration made here must be known before the first request.
        if let Err(e) = identity.refresh(true) {
            tracing::warn!(error = %e, "identity reload after registering the pod's agent failed");
        }
    }
    Ok(())
}

/// Keeps the pod's token fresh until `shutdown` fires.
pub async fn keep_fresh(
    identity: Arc<Identity>,
    source: Source,
    state: StateDir,
    config: IdentityConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let next = match &source {
            Source::Agent { name, owner } => {
                let (state, config, name, owner) =
                    (state.clone(), config.clone(), name.clone(), owner.clone());
                let made = tokio::task::spawn_blocking(move || {
                    agent_token(&state, &config, &name, owner.as_deref(), now())
                })
                .await;
                match made {
                    Ok(Ok((token, expires))) => Ok((token, expires)),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            Source::Workload { endpoint } => workload_token(endpoint, &config.audience).await,
        };
        let wait = match next {
            Ok((token, expires)) => {
                let changed = identity.pod_token().is_none_or(|t| *t != token);
                identity.set_pod_token(token);
                if changed {
                    let id = identity.clone();
                    let _ = tokio::task::spawn_blocking(move || id.refresh(true)).await;
                    tracing::info!(expires, "the pod's identity token is fresh");
                }
                backoff = Duration::from_millis(200);
                // Again at half the remaining life, so an outage has time to pass.
                let left = (expires - now()).max(2) as u64;
                Duration::from_secs(left / 2)
                    .clamp(Duration::from_secs(1), Duration::from_secs(3600))
            }
            Err(reason) => {
                tracing::warn!(%reason, retry_in_ms = backoff.as_millis() as u64, "cannot refresh the pod's identity token; keeping the last one");
                let wait = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The agent's newest token, registering the agent (or issuing a new token) when it has
/// none with more than half its life left. A revoked agent is never re-registered here:
/// PANIC must stick.
fn agent_token(
    state: &StateDir,
    config: &IdentityConfig,
    name: &str,
    owner: Option<&str>,
    now: i64,
) -> Result<(String, i64), PodError> {
    let mut registry = Registry::open(state)?;
    let half_life = (config.token_ttl.as_secs() / 2) as i64;
    match registry.agent(name) {
        Ok(agent) => {
            let latest = registry.latest_token(name)?;
            match latest {
                Some(t) if agent.revoked.is_some() || t.expires - now > half_life => {
                    return Ok((t.token, t.expires));
                }
                None if agent.revoked.is_some() => return Err(PodError::Revoked(name.to_owned())),
                _ => {}
            }
        }
        Err(RegistryError::UnknownAgent(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let registered = issuer::register(
        state,
        &mut registry,
        config,
        &Registration {
            name,
            owner,
            tenant: None,
            ttl: config.token_ttl,
        },
        now,
    )?;
    tracing::info!(agent = name, spiffe_id = %registered.spiffe_id, "token issued for the pod's agent");
    Ok((registered.token, registered.expires))
}

async fn workload_token(endpoint: &str, audience: &str) -> Result<(String, i64), String> {
    let client = spiffe::WorkloadApiClient::connect_to(endpoint)
        .await
        .map_err(|e| format!("cannot connect to the Workload API at {endpoint}: {e}"))?;
    let svid = client
        .fetch_jwt_svid([audience], None)
        .await
        .map_err(|e| format!("FetchJWTSVID failed: {e}"))?;
    let expires = svid.expiry().unix_timestamp();
    Ok((svid.token().to_owned(), expires))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_once_reissues_near_expiry_and_never_lifts_a_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open_or_create(dir.path().join("h")).unwrap();
        let config = IdentityConfig {
            token_ttl: Duration::from_secs(3600),
            ..IdentityConfig::default()
        };
        let (first, exp) = agent_token(&state, &config, "app", Some("ops"), 1000).unwrap();
        assert_eq!(exp, 4600);
        // Fresh enough: the same token.
        let (again, _) = agent_token(&state, &config, "app", None, 2000).unwrap();
        assert_eq!(again, first);
        // Past half its life: a new one.
        let (renewed, exp) = agent_token(&state, &config, "app", None, 3000).unwrap();
        assert_ne!(renewed, first);
        assert_eq!(exp, 6600);
        // Revoked: no new registration (the refresher keeps presenting the revoked token,
        // which the identity gate refuses).
        let mut registry = Registry::open(&state).unwrap();
        registry.revoke_agent("app", "panic", 3100).unwrap();
        let err = agent_token(&state, &config, "app", None, 6000).unwrap_err();
        assert!(matches!(err, PodError::Revoked(_)), "{err}");
        assert!(registry.agent("app").unwrap().revoked.is_some());
        assert!(registry.latest_token("app").unwrap().is_none());
    }
}
