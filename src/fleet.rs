//! Fleet mode: instances that share one registry and one PANIC through NATS JetStream.
//!
//! Each instance keeps its own SQLite registry, which the identity gate reads as before, and
//! keeps it in step with a KV bucket (`<fleet>-registry`) in both directions: entries other
//! instances publish are written into it (a watch replays them all first, so an instance
//! that was away catches up before it is ready), and whatever changes here — an agent
//! registered, revoked, PANIC — is published (see [`crate::identity::registry::fleet`]).
//! A revocation that arrives from the bus triggers the local PANIC cut-off here: tunnels
//! closed, held requests refused, credentials dropped and revoked upstream by the instance
//! that handed them out. Each instance also heartbeats a record in `<fleet>-instances`, and
//! ships its committed audit records to the fleet's stream ([`stream`]). OAuth refreshes
//! take a per-connection lease and write rotated refresh tokens back with compare-and-set
//! ([`refresh`]).
//! When the bus stays unreachable for longer than `fleet.max_staleness`, every request is
//! refused (`503 fleet_unavailable`) until it is back; revocations already seen are kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;

pub mod bus;
pub mod mirror;
pub mod refresh;
pub mod stream;

use crate::audit::Audit;
use crate::clock::now;
use crate::config::FleetConfig;
use crate::config::fleet::REFRESH_LEASE;
use crate::consent::TenantConsents;
use crate::consent::fleet::ConsentReplica;
use crate::identity::Identity;
use crate::identity::registry::Registry;
use crate::identity::registry::fleet::RegistryReplica;
use crate::panic::Panic;
use crate::replica::FleetEntryError;
use crate::state::StateDir;
use crate::vault::Vault;
use crate::vault::fleet::VaultReplica;
use bus::{FleetError, bus, connect};
use mirror::Mirror;
use refresh::{Buckets, RefreshLeases};

/// How often local changes (registry, vault, consents) are looked for: a local read of each
/// store's change counter, published only when it moved.
const EXPORT_EVERY: Duration = Duration::from_millis(50);
/// How often the instance record is refreshed (it expires after three missed beats).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// What the fleet's background task needs.
pub struct Member {
    pub config: FleetConfig,
    pub instance: String,
    pub identity: Arc<Identity>,
    pub panic: Arc<Panic>,
    pub vault: Arc<Vault>,
    pub consents: Arc<TenantConsents>,
    pub audit: Arc<Audit>,
    pub state: StateDir,
    /// The vault's refresh leases, pointed at each session's buckets.
    pub leases: Arc<RefreshLeases>,
}

/// Joins the fleet and keeps this instance in step with it until `shutdown`.
pub async fn run(member: Member, mut shutdown: watch::Receiver<bool>) {
    member.identity.fleet().expect_sync();
    let last_good = Arc::new(AtomicI64::new(now()));
    let watchdog = tokio::spawn(staleness(
        member.identity.clone(),
        member.config.max_staleness,
        last_good.clone(),
        shutdown.clone(),
    ));
    let shipper = tokio::spawn(stream::ship(
        member.config.clone(),
        member.audit.clone(),
        member.state.clone(),
        shutdown.clone(),
    ));
    let mut backoff = Duration::from_millis(200);
    loop {
        let ended = tokio::select! {
            r = session(&member, &last_good) => r,
            _ = shutdown.changed() => break,
        };
        // No refresh without the lease: until the next session, refreshes are refused.
        member.leases.attach(None);
        if let Err(e) = ended {
            tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "fleet: lost the bus; serving on the registry as last synced");
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => break,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
    watchdog.abort();
    shipper.abort();
}

/// Refuses every request once the bus has been gone for longer than `max_staleness`.
async fn staleness(
    identity: Arc<Identity>,
    max: Duration,
    last_good: Arc<AtomicI64>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let gone = now() - last_good.load(Ordering::Acquire);
        let stale = gone > max.as_secs() as i64;
        if stale != identity.fleet().stale() {
            if stale {
                tracing::error!(
                    seconds = gone,
                    "fleet: bus unreachable for longer than fleet.max_staleness; refusing every request"
                );
            } else {
                tracing::info!("fleet: bus back; serving again");
            }
            identity.fleet().set_stale(stale);
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One connection's worth of syncing; returns why it ended.
async fn session(member: &Member, last_good: &AtomicI64) -> Result<(), FleetError> {
    let client = connect(&member.config).await?;
    let js = jetstream::new(client.clone());
    let name = &member.config.name;
    let replicas = member.config.replicas;
    let instances_kv = bucket(
        &js,
        &format!("{name}-instances"),
        Some(HEARTBEAT_EVERY * 3),
        replicas,
    )
    .await?;
    // One connection per store for the session: its `data_version` moves only when another
    // connection (the admin API, the CLI, PANIC) writes, which is what must be published.
    let state = member.state.clone();
    let (registry, vault, consents) = tokio::task::spawn_blocking(move || {
        let registry = Registry::open(&state).map_err(FleetEntryError::from)?;
        Ok::<_, FleetEntryError>((
            RegistryReplica(registry),
            VaultReplica::open(&state)?,
            ConsentReplica::open(&state)?,
        ))
    })
    .await
    .map_err(bus)??;
    let registry_kv = bucket(&js, &format!("{name}-registry"), None, replicas).await?;
    let vault_kv = bucket(&js, &format!("{name}-vault"), None, replicas).await?;
    let leases_kv = bucket(
        &js,
        &format!("{name}-refresh"),
        Some(REFRESH_LEASE),
        replicas,
    )
    .await?;
    member.leases.attach(Some(Buckets {
        client: client.clone(),
        leases: leases_kv,
        vault: vault_kv.clone(),
    }));
    let mut registry = Mirror::open("registry", registry_kv, registry).await?;
    let mut vault = Mirror::open("vault", vault_kv, vault).await?;
    let consents_kv = bucket(&js, &format!("{name}-consents"), None, replicas).await?;
    let mut consents = Mirror::open("consents", consents_kv, consents).await?;
    let mut export = tokio::time::interval(EXPORT_EVERY);
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    tracing::info!(fleet = %name, "fleet: joined");
    loop {
        let current = registry.current && vault.current && consents.current;
        if current && client.connection_state() == async_nats::connection::State::Connected {
            last_good.store(now(), Ordering::Release);
        }
        tokio::select! {
            entry = registry.watch.next() => {
                let applied = registry.on_entry(entry).await?;
                if applied.changed {
                    let identity = member.identity.clone();
                    let reloaded = tokio::task::spawn_blocking(move || identity.refresh(false)).await;
                    if let Ok(Err(e)) = reloaded {
                        tracing::warn!(error = %e, "identity reload after a fleet update failed");
                    }
                }
                if !applied.newly_revoked.is_empty() {
                    let report = member
                        .panic
                        .follow_fleet(applied.newly_revoked, "revoked elsewhere in the fleet")
                        .await;
                    tracing::warn!(agents = %report.agents.join(", "), "fleet: revocation applied here");
                }
            }
            entry = vault.watch.next() => {
                if vault.on_entry(entry).await?.changed {
                    let v = member.vault.clone();
                    let reloaded = tokio::task::spawn_blocking(move || v.reload_if_changed()).await;
                    if let Ok(Err(e)) = reloaded {
                        tracing::warn!(error = %e, "vault reload after a fleet update failed");
                    }
                }
            }
            entry = consents.watch.next() => {
                // An answer given on another instance wakes the request held here.
                for id in consents.on_entry(entry).await?.answered {
                    member.consents.instance().answered_elsewhere(&id);
                }
            }
            _ = export.tick(), if current => {
                registry.publish().await?;
                vault.publish().await?;
                consents.publish().await?;
                member.identity.fleet().synced();
            }
            _ = heartbeat.tick() => {
                let record = serde_json::json!({"instance": member.instance, "ts": now()});
                instances_kv
                    .put(&member.instance, Bytes::from(record.to_string()))
                    .await
                    .map_err(bus)?;
            }
        }
    }
}

/// The bucket `name`, created on first use (`max_age`: entries expire, for heartbeats).
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    max_age: Option<Duration>,
    replicas: usize,
) -> Result<kv::Store, FleetError> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    js.create_key_value(kv::Config {
        bucket: name.to_owned(),
        history: 1,
        max_age: max_age.unwrap_or_default(),
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| bus(format!("cannot create KV bucket {name}: {e}")))
}
