//! Trust bundles from the SPIFFE Workload API (SPIRE agent socket): a `FetchJWTBundles`
//! stream, reconnected with backoff, each update replacing the Workload API's share of the
//! trust state without a restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use spiffe::WorkloadApiClient;
use spiffe::bundle::jwt::JwtBundleSet;
use tokio::sync::watch;

use super::Identity;
use super::bundle::Authorities;
use super::jwt::VerifyKey;

/// The socket to use: the configured one, else `SPIFFE_ENDPOINT_SOCKET`; `None` when the
/// Workload API is not enabled.
pub fn endpoint(configured_on: bool, configured_socket: &str) -> Result<Option<String>, String> {
    let from_env = std::env::var("SPIFFE_ENDPOINT_SOCKET")
        .ok()
        .filter(|s| !s.is_empty());
    let socket = (!configured_socket.is_empty())
        .then(|| configured_socket.to_owned())
        .or(from_env.clone());
    match (configured_on || from_env.is_some(), socket) {
        (false, _) => Ok(None),
        (true, Some(s)) => Ok(Some(s)),
        (true, None) => Err(
            "identity.workload_api is on but no socket is known: set identity.workload_api_socket or SPIFFE_ENDPOINT_SOCKET (e.g. unix:///run/spire/sockets/agent.sock)".into(),
        ),
    }
}

/// Follows the Workload API at `endpoint` until `shutdown` fires.
pub async fn follow(
    identity: Arc<Identity>,
    endpoint: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let ended = tokio::select! {
            r = stream_once(&identity, &endpoint, &mut backoff) => r,
            _ = shutdown.changed() => return,
        };
        tracing::warn!(endpoint, error = %ended, retry_in_ms = backoff.as_millis() as u64, "Workload API stream ended; keeping the last bundles");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// One connection's worth of updates; returns why it ended.
async fn stream_once(identity: &Identity, endpoint: &str, backoff: &mut Duration) -> String {
    let client = match WorkloadApiClient::connect_to(endpoint).await {
        Ok(c) => c,
        Err(e) => return format!("cannot connect: {e}"),
    };
    let mut stream = match client.stream_jwt_bundles().await {
        Ok(s) => s,
        Err(e) => return format!("FetchJWTBundles failed: {e}"),
    };
    while let Some(item) = stream.next().await {
        match item.map(|set| authorities(&set)) {
            Ok(bundles) => {
                let summary: Vec<String> = bundles
                    .iter()
                    .map(|(td, keys)| format!("{td}({})", keys.len()))
                    .collect();
                tracing::info!(bundles = %summary.join(" "), "Workload API bundles updated");
                identity.set_workload_bundles(bundles);
                *backoff = Duration::from_millis(200);
            }
            Err(e) => return format!("bad update: {e}"),
        }
    }
    "stream closed by the agent".into()
}

/// Converts the crate's bundle set into our verification keys; unusable keys are skipped
/// (and logged) so one odd key cannot take a whole trust domain away.
fn authorities(set: &JwtBundleSet) -> HashMap<String, Authorities> {
    let mut out = HashMap::new();
    for (td, bundle) in set.iter() {
        let mut keys = Authorities::new();
        for authority in bundle.jwt_authorities() {
            let parsed = serde_json::from_slice(authority.jwk_json())
                .map_err(|e| e.to_string())
                .and_then(|jwk| VerifyKey::from_jwk(&jwk).map_err(|e| e.0));
            match parsed {
                Ok(key) => {
                    keys.insert(authority.key_id().to_owned(), Arc::new(key));
                }
                Err(reason) => {
                    tracing::warn!(trust_domain = %td, kid = authority.key_id(), %reason, "Workload API key skipped")
                }
            }
        }
        out.insert(td.to_string(), keys);
    }
    out
}
