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

pub mod budgets;
pub mod bus;
pub mod entry;
pub mod mirror;
pub mod refresh;
pub mod stream;
pub mod view;

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
    /// The MCP tool pins, shared through `<fleet>-mcp-pins`.
    pub pins: Option<Arc<crate::intent::mcp::pins::Pins>>,
}

/// Joins the fleet and keeps this instance in step with it until `shutdown`.
pub async fn run(member: Member, mut shutdown: watch::Receiver<bool>) {
    member.identity.fleet().expect_sync();
    fleet_bus(&member, false);
    let last_good = Arc::new(AtomicI64::new(now()));
    let watchdog = tokio::spawn(staleness(
        member.identity.clone(),
        member.consents.clone(),
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
        fleet_bus(&member, false);
        // No refresh without the lease: until the next session, refreshes are refused.
        member.leases.attach(None);
        if let Err(e) = ended {
            tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "fleet: the sync session ended (bus lost, or a local store failed); serving on the registry as last synced and retrying");
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
    consents: Arc<TenantConsents>,
    max: Duration,
    last_good: Arc<AtomicI64>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let gone = now() - last_good.load(Ordering::Acquire);
        // A session stuck on a dead connection stops confirming within a second or two:
        // from then on no consent is opened that only this instance could answer.
        if gone >= 2 {
            for (_, store) in consents.all() {
                store.fleet_bus(false);
            }
        }
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
    // Entries are tagged under a key derived from the vault key, which only the fleet holds.
    let sealer = Arc::new(entry::Sealer::new(member.vault.fleet_key()));
    member.leases.attach(Some(Buckets {
        client: client.clone(),
        leases: leases_kv,
        vault: vault_kv.clone(),
        sealer: sealer.clone(),
    }));
    let mut registry = Mirror::open("registry", registry_kv, sealer.clone(), registry).await?;
    let mut vault = Mirror::open("vault", vault_kv, sealer.clone(), vault).await?;
    let consents_kv = bucket(&js, &format!("{name}-consents"), None, replicas).await?;
    let mut consents = Mirror::open("consents", consents_kv, sealer.clone(), consents).await?;
    // Each tenant's own consent store: a bucket of its own, followed by its own task.
    let mut tenant_sync: Vec<Following> = Vec::new();
    for (tenant, store) in member.consents.all() {
        let Some(tenant) = tenant else { continue };
        let home = crate::tenants::state_dir(&member.state, tenant)
            .map_err(|e| bus(format!("tenant {tenant}: {e}")))?;
        let replica = tokio::task::spawn_blocking(move || ConsentReplica::open(&home))
            .await
            .map_err(bus)??;
        let kv = bucket(&js, &tenant_bucket(name, tenant), None, replicas).await?;
        let name = format!("consents of tenant {tenant}");
        let mirror = Mirror::open(&name, kv, sealer.clone(), replica).await?;
        tenant_sync.push(Box::pin(follow_consents(mirror, store.clone())));
    }
    // The MCP tool pins: a rug pull seen by one instance is held on every instance.
    if let Some(pins) = &member.pins {
        let kv = bucket(&js, &format!("{name}-mcp-pins"), None, replicas).await?;
        let replica = crate::intent::mcp::pins::PinsReplica(pins.clone());
        let mirror = Mirror::open("mcp pins", kv, sealer.clone(), replica).await?;
        tenant_sync.push(Box::pin(follow(mirror)));
    }
    let has_tenants = !tenant_sync.is_empty();
    let tenant_sync = futures_util::future::try_join_all(tenant_sync);
    tokio::pin!(tenant_sync);
    let mut export = tokio::time::interval(EXPORT_EVERY);
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    tracing::info!(fleet = %name, "fleet: joined");
    loop {
        let current = registry.current && vault.current && consents.current;
        let up = current && client.connection_state() == async_nats::connection::State::Connected;
        if up {
            last_good.store(now(), Ordering::Release);
        }
        fleet_bus(member, up);
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
            ended = &mut tenant_sync, if has_tenants => {
                ended?;
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

/// Keeps one tenant's consent store in step with its bucket until the bus fails: answers
/// given elsewhere wake the requests held here; consents asked here are published.
async fn follow_consents(
    mut mirror: Mirror<ConsentReplica>,
    consents: Arc<crate::consent::approvals::Consents>,
) -> Result<(), FleetError> {
    let mut export = tokio::time::interval(EXPORT_EVERY);
    loop {
        tokio::select! {
            entry = mirror.watch.next() => {
                for id in mirror.on_entry(entry).await?.answered {
                    consents.answered_elsewhere(&id);
                }
            }
            _ = export.tick(), if mirror.current => mirror.publish().await?,
        }
    }
}

/// A store followed beside the main loop until the bus fails.
type Following =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), FleetError>> + Send>>;

/// Keeps a store that needs nothing done on an update (the MCP pins) in step with its
/// bucket until the bus fails.
async fn follow<R: crate::replica::Replica>(mut mirror: Mirror<R>) -> Result<(), FleetError> {
    let mut export = tokio::time::interval(EXPORT_EVERY);
    loop {
        tokio::select! {
            entry = mirror.watch.next() => {
                mirror.on_entry(entry).await?;
            }
            _ = export.tick(), if mirror.current => mirror.publish().await?,
        }
    }
}

/// `<fleet>-consents-t<hex of the tenant name>`: a tenant name may hold `.`, which bucket
/// names may not, and hex keeps two tenants' buckets apart.
fn tenant_bucket(fleet: &str, tenant: &str) -> String {
    format!(
        "{fleet}-consents-t{}",
        crate::digest::hex(tenant.as_bytes())
    )
}

/// Tells every consent store whether the bus is reachable (see [`Consents::fleet_bus`]).
///
/// [`Consents::fleet_bus`]: crate::consent::approvals::Consents::fleet_bus
fn fleet_bus(member: &Member, up: bool) {
    for (_, consents) in member.consents.all() {
        consents.fleet_bus(up);
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
