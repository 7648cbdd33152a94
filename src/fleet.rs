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
//! ships its committed audit records to the fleet's stream ([`stream`]).
//! When the bus stays unreachable for longer than `fleet.max_staleness`, every request is
//! refused (`503 fleet_unavailable`) until it is back; revocations already seen are kept.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;

pub mod bus;
pub mod stream;

use crate::audit::Audit;
use crate::clock::now;
use crate::config::FleetConfig;
use crate::identity::Identity;
use crate::identity::registry::Registry;
use crate::identity::registry::fleet::{FleetEntryError, REVOKED};
use crate::panic::Panic;
use crate::state::StateDir;
use bus::{FleetError, bus, connect};

/// How often local registry changes are looked for, and the instance record refreshed.
const EXPORT_EVERY: Duration = Duration::from_millis(250);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// What the fleet's background task needs.
pub struct Member {
    pub config: FleetConfig,
    pub instance: String,
    pub identity: Arc<Identity>,
    pub panic: Arc<Panic>,
    pub audit: Arc<Audit>,
    pub state: StateDir,
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
    let registry_kv = bucket(&js, &format!("{name}-registry"), None).await?;
    let instances_kv = bucket(&js, &format!("{name}-instances"), Some(HEARTBEAT_EVERY * 3)).await?;
    let mut watch = registry_kv.watch_with_history(">").await.map_err(bus)?;
    // What the bucket holds, as last seen: publishing compares against it.
    let mut seen: HashMap<String, Bytes> = HashMap::new();
    // One connection for the session: its `data_version` moves only when another
    // connection (the admin API, the CLI, PANIC) writes, which is what must be published.
    let state = member.state.clone();
    let registry = tokio::task::spawn_blocking(move || Registry::open(&state))
        .await
        .map_err(bus)?
        .map_err(FleetEntryError::from)?;
    let registry = Arc::new(Mutex::new(registry));
    let initial = registry_kv.status().await.map_err(bus)?.values();
    let mut current = initial == 0;
    let mut exported_version = None;
    let mut export = tokio::time::interval(EXPORT_EVERY);
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    tracing::info!(fleet = %name, entries = initial, "fleet: joined");
    loop {
        if current && client.connection_state() == async_nats::connection::State::Connected {
            last_good.store(now(), Ordering::Release);
        }
        tokio::select! {
            entry = watch.next() => {
                let entry = entry.ok_or_else(|| bus("registry watch ended"))?.map_err(bus)?;
                let value = match entry.operation {
                    kv::Operation::Put => Some(entry.value.clone()),
                    kv::Operation::Delete | kv::Operation::Purge => None,
                };
                apply(member, &registry, &entry.key, value.clone()).await?;
                match value {
                    Some(v) => seen.insert(entry.key, v),
                    None => seen.remove(&entry.key),
                };
                if !current && (entry.seen_current || entry.delta == 0) {
                    current = true;
                }
            }
            _ = export.tick(), if current => {
                exported_version = publish(&registry, &registry_kv, &mut seen, exported_version).await?;
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
) -> Result<kv::Store, FleetError> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    js.create_key_value(kv::Config {
        bucket: name.to_owned(),
        history: 1,
        max_age: max_age.unwrap_or_default(),
        ..Default::default()
    })
    .await
    .map_err(|e| bus(format!("cannot create KV bucket {name}: {e}")))
}

/// Writes one entry from the bus into the registry; a new revocation cuts the agent off.
async fn apply(
    member: &Member,
    registry: &Shared,
    key: &str,
    value: Option<Bytes>,
) -> Result<(), FleetError> {
    let (registry, identity, key_owned) =
        (registry.clone(), member.identity.clone(), key.to_owned());
    let applied = tokio::task::spawn_blocking(move || {
        let mut registry = registry.lock().unwrap_or_else(|p| p.into_inner());
        let applied = registry.fleet_apply(&key_owned, value.as_deref(), now())?;
        if applied.changed
            && let Err(e) = identity.refresh(false)
        {
            tracing::warn!(error = %e, "identity reload after a fleet update failed");
        }
        Ok::<_, FleetEntryError>(applied)
    })
    .await
    .map_err(bus)?;
    let applied = match applied {
        Ok(a) => a,
        // One malformed entry must not stop the others (or the sync): report it.
        Err(FleetEntryError::Bad { key, reason }) => {
            tracing::error!(%key, %reason, "fleet: entry ignored");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    if !applied.newly_revoked.is_empty() {
        let report = member
            .panic
            .follow_fleet(applied.newly_revoked, "revoked elsewhere in the fleet")
            .await;
        tracing::warn!(agents = %report.agents.join(", "), "fleet: revocation applied here");
    }
    Ok(())
}

/// Publishes what changed here (by another connection) since the last look: every entry
/// that differs from what the bucket holds, and the deletion of revocations lifted here.
async fn publish(
    registry: &Shared,
    kv: &kv::Store,
    seen: &mut HashMap<String, Bytes>,
    last_version: Option<i64>,
) -> Result<Option<i64>, FleetError> {
    let registry = registry.clone();
    let read = tokio::task::spawn_blocking(move || {
        let registry = registry.lock().unwrap_or_else(|p| p.into_inner());
        let version = registry.data_version()?;
        if Some(version) == last_version {
            return Ok((version, None));
        }
        registry.fleet_entries(now()).map(|e| (version, Some(e)))
    })
    .await
    .map_err(bus)?
    .map_err(FleetEntryError::from)?;
    let (version, Some(entries)) = read else {
        return Ok(last_version);
    };
    for (key, value) in &entries {
        if seen.get(key).map(|v| &v[..]) != Some(&value[..]) {
            let value = Bytes::from(value.clone());
            kv.put(key, value.clone()).await.map_err(bus)?;
            seen.insert(key.clone(), value);
        }
    }
    // A revocation lifted here (re-registration, `panic --lift`) is deleted for all.
    let lifted: Vec<String> = seen
        .keys()
        .filter(|k| k.starts_with(REVOKED) && !entries.contains_key(*k))
        .cloned()
        .collect();
    for key in lifted {
        kv.delete(&key).await.map_err(bus)?;
        seen.remove(&key);
    }
    Ok(Some(version))
}

type Shared = Arc<Mutex<Registry>>;
